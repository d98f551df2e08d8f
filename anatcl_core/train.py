"""Pretraining of one (method, seed): params.yaml ``pretrain``, checkpoints, resume, curves.

Recipe (REFERENCE §1.4): Adam (``learning_rate``, ``weight_decay``), ``batch_size`` subjects x 2
views, lr x ``lr_gamma`` every ``lr_step_epochs`` epochs, tau = ``temperature``, age RBF
``sigma_years``. The whole train split is loaded into memory once. FreeSurfer descriptors are
z-scored by a :class:`~anatcl_core.kernels.DescriptorNormalizer` fitted on the train split only and
saved in the checkpoint.

Determinism: the model is initialised from ``seed``; the batch order of epoch ``e`` and every
augmentation are drawn from generators seeded by ``(seed, e)``, so no random state has to survive
an interruption. The checkpoint is written atomically after every epoch and holds model,
optimiser, scheduler and epoch; a rerun with the same settings and data resumes from it and ends
with the same weights as an uninterrupted run. When the two views are identical (no augmentation)
the encoder runs once per subject and its output is used for both views: with batch statistics
``[x; x]`` and ``x`` are normalised identically, so this is the same loss at half the cost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from anatcl_core.checkpoint import load_state_dict_checked, model_config, safe_load, save_checkpoint
from anatcl_core.data.augment import make_augmentation
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.kernels import DescriptorNormalizer
from anatcl_core.models import build_model
from anatcl_core.objectives import MethodConfig, Objective

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CURVES_FILE = "curves.tsv"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class PretrainConfig:
    """params.yaml ``pretrain`` (field = yaml key = keyword argument).

    ``run`` x ``seeds`` are the stage instances; ``methods`` defines every method, run or not
    (the ablation set stays defined). Every other key is the recipe shared by all methods.
    """

    methods: dict[str, MethodConfig]
    run: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    depth: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    base_width: int = 64
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    projection_dim: int = 128
    hidden_dim: int | None = None
    crop: str | tuple[int, ...] | None = "upstream"
    channels: tuple[str, ...] = ("CT", "GMV", "SA")
    mapping: Literal["affine", "relu"] = "affine"
    temperature: float = 0.1
    sigma_years: float = 2.0
    epochs: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 5e-5
    lr_step_epochs: int = 10
    lr_gamma: float = 0.9
    image_dtype: Literal["float32", "float16"] = "float32"
    num_threads: int = 2

    def __post_init__(self) -> None:
        missing = [m for m in self.run if m not in self.methods]
        if missing:
            raise ValueError(f"run lists {missing}, not defined under methods ({sorted(self.methods)})")
        if self.batch_size < 2 or self.epochs < 0 or self.learning_rate <= 0:
            raise ValueError("need batch_size >= 2, epochs >= 0 and learning_rate > 0")

    def recipe(self, method: str, seed: int) -> dict:
        """Plain dict of everything that determines a run (saved in the checkpoint)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("methods", "run", "seeds")}
        out.update(method=method, seed=int(seed), method_config=asdict(self.methods[method]))
        return json.loads(json.dumps(out))  # tuples -> lists, plain types only


@dataclass
class TrainData:
    """The train split in memory: images ``(N, 1, X, Y, Z)``, ages ``(N,)``, descriptors ``(N, C, R)``."""

    images: torch.Tensor
    age: torch.Tensor
    descriptors: torch.Tensor
    normalizer: DescriptorNormalizer
    fingerprint: str
    participant_ids: list[str] = field(default_factory=list)


def code_fingerprint() -> str:
    """SHA-1 of the source of this module and of every library module it imports.

    Part of a run's fingerprint: a checkpoint written by other training code is not resumed.
    """
    from anatcl_core.runner import library_closure

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha1()
    for path in [Path(__file__).resolve().relative_to(root).as_posix(), *library_closure(__file__)]:
        digest.update(path.encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def load_train_data(openbhb_root: str | Path, config: PretrainConfig, progress: bool = True) -> TrainData:
    """Read the pretraining train split once and fit the descriptor normaliser on it.

    The returned fingerprint hashes the images, tables and ages read, and the training code.
    """
    dataset = OpenBHB(openbhb_root, split="train", crop=config.crop, channels=config.channels)
    images = dataset.images(dtype=np.dtype(config.image_dtype).type, progress=progress)
    tables = dataset.descriptor_tables()  # (N, 7, R)
    normalizer = DescriptorNormalizer().fit(tables, config.channels)
    age = dataset.participants["age"].to_numpy(np.float32)
    digest = hashlib.sha1(images.tobytes())
    digest.update(tables.tobytes())
    digest.update(age.tobytes())
    digest.update(code_fingerprint().encode())
    return TrainData(
        images=torch.from_numpy(images),
        age=torch.from_numpy(age),
        descriptors=torch.as_tensor(normalizer.transform(tables), dtype=torch.float32),
        normalizer=normalizer,
        fingerprint=digest.hexdigest(),
        participant_ids=dataset.participants["participant_id"].astype(str).tolist(),
    )


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % 2**63


def _views(images: torch.Tensor, augment, generator: torch.Generator) -> torch.Tensor:
    """``(B, 1, X, Y, Z)`` -> ``(B, 2, 1, X, Y, Z)`` of independently augmented views."""
    return torch.stack([torch.stack([augment(x, generator) for _ in range(2)]) for x in images])


def _build(config: PretrainConfig, method: str, seed: int):
    torch.manual_seed(seed)
    model = build_model(config.depth, config.base_width, config.norm, config.projection_dim,
                        config.hidden_dim)
    model.to(memory_format=torch.channels_last_3d)  # ~1.2-1.5x faster 3D convolutions on CPU
    objective = Objective(config.methods[method], config.temperature, config.sigma_years,
                          config.mapping, model.encoder.feature_dim)
    return model, objective


def pretrain(
    config: PretrainConfig,
    method: str,
    seed: int,
    data: TrainData,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train (or resume) one method with one seed; write checkpoint, curves and summary.

    Args:
        config: the ``pretrain`` section; method: a key of ``config.methods``; seed: run seed.
        data: :func:`load_train_data` output.
        out_dir: ``outputs/pretrain/<method>-s<seed>``; holds ``checkpoint.pt``, ``curves.tsv``
            and ``summary.json``.
        progress: show a tqdm bar over epochs.
        on_epoch_end: called with ``(epoch, row)`` after each saved epoch (tests interrupt here).

    Returns:
        The training curve: one dict per epoch (epoch, loss, parts, lr, seconds; seconds are NaN
        for epochs restored from a checkpoint).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the message says where).
    """
    if method not in config.methods:
        raise KeyError(f"unknown method {method!r}; defined: {sorted(config.methods)}")
    torch.set_num_threads(config.num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    method_cfg = config.methods[method]
    recipe = config.recipe(method, seed)
    model, objective = _build(config, method, seed)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_gamma)
    age_mean, age_std = float(data.age.mean()), float(data.age.std())
    epochs = config.epochs if method_cfg.objective != "random" else 0
    history: list[dict] = []
    start = _resume(out_dir / CHECKPOINT_FILE, recipe, data.fingerprint, model, objective,
                    optimizer, scheduler, history)
    augment = make_augmentation(list(method_cfg.augmentation))
    n, bs = len(data.age), config.batch_size
    n_batches = n // bs  # drop_last: batch norm and the kernels want full batches
    if epochs and n_batches == 0:
        raise ValueError(f"train split has {n} subjects, fewer than batch_size {bs}")

    def save(epoch: int) -> None:
        save_checkpoint(_fresh({
            "model": model.state_dict(),
            "config": {**model_config(model), **recipe},
            "normalizer": data.normalizer.to_dict(),
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "objective": objective.state_dict(),
            "age_scale": [age_mean, age_std],
            # wall-clock times stay out: a rerun must write the same bytes (DVC then skips
            # everything downstream of an unchanged checkpoint)
            "history": [{k: v for k, v in row.items() if k != "seconds"} for row in history],
            "fingerprint": data.fingerprint,
            "complete": epoch >= epochs,
        }), out_dir / CHECKPOINT_FILE)

    if start == 0 and epochs == 0:
        save(0)
    bar = tqdm(range(start, epochs), desc=f"pretrain {method} s{seed}", initial=start, total=epochs,
               disable=not progress)
    for epoch in bar:
        model.train()
        tic = time.perf_counter()
        generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator)
        sums: dict[str, float] = {}
        for step in range(n_batches):
            idx = order[step * bs:(step + 1) * bs]
            x = data.images[idx].float()  # (B, 1, X, Y, Z)
            if method_cfg.identical_views:
                feats, proj = model(x.contiguous(memory_format=torch.channels_last_3d))  # (B, F), (B, d)
                feats, proj = feats[:, None].expand(-1, 2, -1), proj[:, None].expand(-1, 2, -1)
            else:
                views = _views(x, augment, generator)  # (B, 2, 1, X, Y, Z)
                views = views.flatten(0, 1).contiguous(memory_format=torch.channels_last_3d)
                feats, proj = model(views)  # (2B, F), (2B, d)
                feats, proj = feats.view(len(idx), 2, -1), proj.view(len(idx), 2, -1)
            age = data.age[idx]
            loss, parts = objective(feats, proj, age, (age - age_mean) / age_std, data.descriptors[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"pretrain {method} seed {seed}: loss is {loss.item()} at epoch {epoch + 1}, "
                    f"step {step + 1}; lower pretrain.learning_rate or check the inputs")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
        row = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()},
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic}
        if method_cfg.objective == "supervised":
            row["train_mae_years"] = row["loss"] * age_std
        scheduler.step()
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        history.append(row)
        save(epoch + 1)
        logger.info("%s s%d epoch %d/%d loss %.4f (%.1fs)", method, seed, epoch + 1, epochs,
                    row["loss"], row["seconds"])
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    write_curves(history, out_dir)
    return history


def _fresh(obj):
    """A copy whose plain values are new objects shared with nothing (tensors kept as they are).

    Pickle writes an object seen twice as a back-reference, so which floats the optimiser and
    the scheduler happen to share would change the bytes of a checkpoint; after a resume they share
    different ones. Rebuilding every scalar (tuples become lists, as JSON would make them) makes
    an interrupted-and-resumed run write the same bytes as an uninterrupted one.
    """
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {_fresh(k): _fresh(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_fresh(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return json.loads(json.dumps(obj))
    raise TypeError(f"unexpected {type(obj).__name__} in a checkpoint")


def _resume(path: Path, recipe: dict, fingerprint: str, model, objective, optimizer, scheduler,
            history: list[dict]) -> int:
    """Restore a checkpoint of the same run; return the epoch to start from (0: fresh)."""
    if not path.exists():
        return 0
    state = safe_load(path)
    same = {k: v for k, v in state.get("config", {}).items() if k in recipe} == recipe
    if not same or state.get("fingerprint") != fingerprint:
        logger.warning("%s: from another configuration or data; training from scratch", path)
        return 0
    load_state_dict_checked(model, state["model"], str(path))
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history.extend({**row, "seconds": math.nan} for row in state.get("history", []))  # not stored
    logger.info("%s: resuming after epoch %d", path, state["epoch"])
    return int(state["epoch"])


def write_curves(history: list[dict], out_dir: str | Path) -> None:
    """``curves.tsv`` (one row per epoch, for ``dvc plots``) and ``summary.json`` (last epoch)."""
    out_dir = Path(out_dir)
    columns = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(out_dir / CURVES_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns or ["epoch", "loss"], delimiter="\t")
        writer.writeheader()
        writer.writerows(history)
    last = history[-1] if history else {}
    seconds = [r["seconds"] for r in history if math.isfinite(r.get("seconds", math.nan))]
    summary = {"epochs": len(history), "final_loss": last.get("loss", math.nan),
               "train_seconds": sum(seconds), "timed_epochs": len(seconds)}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
