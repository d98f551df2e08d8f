"""Data-parallel training equals one process on the global batch (2 CPU processes, gloo, float64).

One spawn of two ranks runs every case; each rank holds half of a global batch, gathers the
projections with gradients and the kernel inputs without, evaluates the loss on the global batch
and back-propagates through DDP. The parent compares loss and (DDP-averaged) parameter gradients
with a single process on the whole batch. The encoder is a narrow 3D ResNet-18 with
``norm="none"``: BatchNorm uses per-rank statistics, which breaks the equivalence by design.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from anatcl_core.contrastive.kernels import age_kernel, label_kernel
from anatcl_core.contrastive.losses import METHODS, AnatCLLoss, weighted_infonce
from anatcl_core.model.network import build_model
from anatcl_core.train import distributed

WORLD = 2
GLOBAL_B = 8  # subjects; 4 per rank
TOL = 1e-5
CASES = [f"anatcl-{m}" for m in METHODS] + ["supcon", "naive"]


def _batch() -> dict[str, torch.Tensor]:
    """A global batch: two distinct views of 8 subjects, ages with ties, descriptors, labels."""
    g = torch.Generator().manual_seed(0)
    return {
        "views": torch.rand(GLOBAL_B, 2, 1, 16, 16, 16, generator=g, dtype=torch.float64),
        "age": torch.tensor([20.0, 22.0, 20.0, 35.0, 22.0, 60.0, 36.0, 20.0], dtype=torch.float64),
        "desc": torch.randn(GLOBAL_B, 3, 68, generator=g, dtype=torch.float64),
        "label": torch.tensor([0, 1, 0, 2, 1, 1, 2, 0]),
    }


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(base_width=4, norm="none", projection_dim=8).double()


def _embed(model: torch.nn.Module, views: torch.Tensor) -> torch.Tensor:
    """``(b, 2, 1, X, Y, Z)`` -> ``(b, 2, d)`` projections."""
    _, proj = model(views.flatten(0, 1))  # (2b, d)
    return proj.view(views.shape[0], 2, -1)


def _naive_gather(z: torch.Tensor) -> torch.Tensor:
    """all_gather whose backward keeps only the local gradient (no all-reduce): the common bug."""
    others = distributed.gather_no_grad(z)  # (W*b, ...)
    b, r = z.shape[0], torch.distributed.get_rank()
    return torch.cat([others[:r * b], z, others[(r + 1) * b:]])


def _loss(case: str, z: torch.Tensor, batch: dict, gather: bool) -> torch.Tensor:
    """The case's loss on embeddings ``z`` and this process's part of ``batch``."""
    if case.startswith("anatcl-"):
        loss_fn = AnatCLLoss(method=case.split("-")[1], sigma_years=5.0)
        inputs = (z, batch["age"], batch["desc"])
        total, _ = distributed.global_batch_loss(loss_fn, *inputs) if gather else loss_fn(*inputs)
        return total
    if case == "supcon":
        def supcon(z, label):
            return weighted_infonce(z, label_kernel(label, z.dtype), 0.5, "threshold")
        return distributed.global_batch_loss(supcon, z, batch["label"]) if gather else supcon(z, batch["label"])
    assert case == "naive"
    z_all = _naive_gather(z) if gather else z
    age = distributed.gather_no_grad(batch["age"]) if gather else batch["age"]
    return weighted_infonce(z_all, age_kernel(age, 5.0))


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def _run_case(case: str, batch: dict, ctx: distributed.DistContext | None) -> dict:
    """Loss and gradients of one case: sharded + gathered under ``ctx``, else whole batch."""
    model = _model()
    if ctx is not None:
        model = distributed.wrap_model(model, ctx)
        idx = distributed.shard_batch(torch.arange(GLOBAL_B), ctx)
        batch = {key: value[idx] for key, value in batch.items()}
    loss = _loss(case, _embed(model, batch["views"]), batch, gather=ctx is not None)
    loss.backward()
    return {"loss": loss.detach(), "grads": _grads(model)}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    ctx = distributed.init_from_env(backend="gloo", device="cpu", timeout_s=60)
    try:
        batch = _batch()
        results = {case: _run_case(case, batch, ctx) for case in CASES}
        # closed form of the backward: rank r's loss sum(c_r * Z) with rank-dependent c_r
        x = torch.full((3, 2), float(rank + 1), dtype=torch.float64, requires_grad=True)
        z_all = distributed.gather_with_grad(x)  # (6, 2)
        coef = torch.arange(12, dtype=torch.float64).view(6, 2) * (rank + 1)
        (coef * z_all).sum().backward()
        results["closed_form"] = {"gathered": z_all.detach(), "grad": x.grad}
        results["ctx"] = (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed)
        ctx.barrier()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        ctx.cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Results of both ranks (mp.spawn terminates the other rank if one raises)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict:
    batch = _batch()
    return {case: _run_case(case, batch, None) for case in CASES}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", [c for c in CASES if c != "naive"])
def test_loss_and_gradients_equal_single_process(ranks, single, case):
    reference = single[case]
    assert abs(float(reference["loss"])) > 1e-3  # ExpW may be negative
    assert max(float(g.abs().max()) for g in reference["grads"].values()) > 1e-3  # not vacuous
    for result in ranks:
        assert abs(float(result[case]["loss"] - reference["loss"])) <= TOL
        assert _max_diff(result[case]["grads"], reference["grads"]) <= TOL


def test_gather_without_gradient_sum_is_off_by_world_size(ranks, single):
    """Sensitivity: a gather that keeps only the local gradient yields 1/W of the true gradient."""
    reference = single["naive"]["grads"]
    for result in ranks:
        assert abs(float(result["naive"]["loss"] - single["naive"]["loss"])) <= TOL
        scaled = {k: v * WORLD for k, v in result["naive"]["grads"].items()}
        assert _max_diff(scaled, reference) <= TOL
        assert _max_diff(result["naive"]["grads"], reference) > 1e-3


def test_gather_backward_closed_form(ranks):
    """Rank r's loss is sum(c_r * Z) with c_r = (r+1) c, so dx_r = sum_r' c_r'[slice r] = 3 c[slice r]."""
    coef = torch.arange(12, dtype=torch.float64).view(6, 2)
    gathered = torch.cat([torch.full((3, 2), 1.0), torch.full((3, 2), 2.0)]).double()
    for rank, result in enumerate(ranks):
        assert torch.equal(result["closed_form"]["gathered"], gathered)
        assert torch.equal(result["closed_form"]["grad"], 3 * coef[3 * rank:3 * rank + 3])


def test_context_of_every_rank(ranks):
    for rank, result in enumerate(ranks):
        assert result["ctx"] == (rank, WORLD, rank == 0, True)


def test_single_process_context_is_a_no_op(monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.init_from_env(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed, ctx.backend) == (0, 1, True, False, None)
    ctx.barrier()
    ctx.cleanup()
    x = torch.randn(4, 2, 3, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert torch.equal(distributed.gather_no_grad(x), x)
    model = torch.nn.Linear(3, 2)
    assert distributed.wrap_model(model, ctx) is model
    indices = torch.arange(6)
    assert torch.equal(distributed.shard_batch(indices, ctx), indices)
    z, age = distributed.gather_batch(x, torch.arange(4.0))
    assert z is x and torch.equal(age, torch.arange(4.0))


def test_torchrun_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        distributed.init_from_env()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK"):
        distributed.init_from_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.init_from_env()


def test_shard_batch_splits_in_order_and_rejects_uneven_batches():
    contexts = [distributed.DistContext(rank=r, world_size=2) for r in range(2)]
    indices = torch.tensor([7, 3, 5, 1, 0, 2])
    shards = [distributed.shard_batch(indices, ctx) for ctx in contexts]
    assert torch.equal(torch.cat(shards), indices)
    with pytest.raises(ValueError, match="divisible"):
        distributed.shard_batch(indices[:5], contexts[0])


def test_wrap_model_refuses_sync_batchnorm_on_cpu():
    ctx = distributed.DistContext(rank=0, world_size=2)
    with pytest.raises(ValueError, match="CUDA"):
        distributed.wrap_model(torch.nn.Linear(2, 2), ctx, sync_batchnorm=True)
