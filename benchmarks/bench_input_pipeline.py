"""Pretraining input pipeline vs pure compute: how much of a training step is not the model.

    nice python benchmarks/bench_input_pipeline.py [--quick] [--out FILE] [--threads N]
        [--device cpu|cuda] [--bf16] [--no-channels-last] [--full-width] [--skip-full-res]
        [--skip-cpu-profile] [--methods anatcl_global simclr] [--repeats N] [--full-res-batch B]
        [--full-res-steps N] [--data OPENBHB_ROOT]

Per case (each in a fresh subprocess, so its peak memory is its own), the median time of one
optimiser step after warm-up steps:

- ``pure``: forward + loss + backward + Adam step on one batch tensor made beforehand and already on
  the device in the training memory format; the same batch every step.
- ``memory``: what :func:`anatcl_core.train.loop.pretrain` does per step (:func:`~anatcl_core.train.loop.batch_loss`, mirrored here
  with the trainer's own ``_build`` and ``_views``): batch indices from the epoch permutation,
  selection from the in-memory ``(N, 1, X, Y, Z)`` array of :func:`~anatcl_core.train.data.load_train_data`,
  ``.float()``, two views (augmented unless the method's views are identical), channels-last
  copy, then the compute. On CUDA the batch is moved to the device after that CPU work (the
  trainer itself has no device handling).
- ``disk``: as ``memory`` but each image read per step through the lazy
  :class:`~anatcl_core.data.openbhb.OpenBHB` item (memory-mapped ``.npy``, cropped, float32).

Each pipeline case alternates its steps with pure-compute steps on the same model (order flipped
every pair) so both see the same load on a shared machine; ``ratio`` = median over pairs of pure
time / pipeline time = pipeline throughput / pure-compute throughput (goal >= 0.9). The ``pure``
case alone gives pure compute's own peak memory. Two profiles: ``cpu_profile``
(params.yaml ``pretrain``: 4.5 mm cohort in ``data/openbhb``, crop (41, 43, 41), ResNet-18
base_width 16, 32 subjects x 2 views, float32 in memory) and ``full_res`` (121x128x121: a
temporary random cohort at 1.5 mm, a few subjects, float16 in memory as profiles/paper.yaml).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "input_pipeline"
METHODS = ("anatcl_global", "simclr")  # identical views (the paper's) / augmented views (crop+cutout)


def run_child(case: dict) -> dict:
    """Time one case in this process (the child side)."""
    import numpy as np
    import torch

    from anatcl_core.config import load_section
    from anatcl_core.contrastive.kernels import DescriptorNormalizer
    from anatcl_core.data import arrays, stacking
    from anatcl_core.data.augment import make_augmentation
    from anatcl_core.data.openbhb import OpenBHB
    from anatcl_core.train import loop as train
    from anatcl_core.train.data import load_train_data
    from anatcl_core.train.recipe import PretrainConfig

    common.set_threads(case["threads"])
    device = torch.device(case["device"])
    config = load_section(common.REPO / "params.yaml", "pretrain", PretrainConfig)
    config = dataclasses.replace(config, base_width=case["base_width"], batch_size=case["batch_size"],
                                 image_dtype=case["image_dtype"], num_threads=torch.get_num_threads())
    method = config.methods[case["method"]]
    bs, mode = config.batch_size, case["mode"]
    fmt = torch.contiguous_format if case["no_channels_last"] else torch.channels_last_3d

    run = config.resolve(case["method"], seed=0)
    model, objective = train.build(run)
    model.to(device=device, memory_format=fmt)
    objective.to(device)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    augment = make_augmentation(list(method.augmentation))
    model.train()

    if mode == "memory":
        with tempfile.TemporaryDirectory() as arrays_dir:  # the cohort stage's arrays of the root
            arrays.write_cohort(arrays_dir, "openbhb", stacking.read_openbhb(case["root"], progress=False))
            data = load_train_data(arrays_dir, run.data, progress=False)
        images, age_all, desc_all = data.images, data.age, data.descriptors
        dataset = None
    else:  # pure / disk: images read lazily, only descriptors and ages in memory
        dataset = OpenBHB(case["root"], split="train", crop=config.crop, channels=config.channels)
        normalizer = DescriptorNormalizer().fit(dataset.descriptor_tables(), config.channels)
        age_all = torch.from_numpy(dataset.participants["age"].to_numpy(np.float32))
        desc_all = torch.as_tensor(normalizer.transform(dataset.descriptor_tables()), dtype=torch.float32)
        images = None
    n = len(age_all)
    if n < bs:
        raise ValueError(f"{case['root']}: {n} train subjects, fewer than batch_size {bs}")
    age_mean, age_std = float(age_all.mean()), float(age_all.std())
    generator = torch.Generator().manual_seed(0)

    def compute(x: torch.Tensor, age: torch.Tensor, desc: torch.Tensor) -> float:
        """x: (B, 1, X, Y, Z) identical views or (2B, 1, X, Y, Z) augmented ones, on the device."""
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=case["bf16"]):
            feats, proj = model(x)  # (B or 2B, F), (B or 2B, d)
        feats, proj = feats.float(), proj.float()
        if method.identical_views:
            feats, proj = feats[:, None].expand(-1, 2, -1), proj[:, None].expand(-1, 2, -1)
        else:
            feats, proj = feats.view(bs, 2, -1), proj.view(bs, 2, -1)  # (B, 2, F), (B, 2, d)
        loss, _ = objective(feats, proj, age, (age - age_mean) / age_std, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # the trainer logs it every step: a device sync

    def batch_views(idx: torch.Tensor) -> torch.Tensor:
        """The trainer's CPU work for one batch: (B,) indices -> model input on the device."""
        if images is not None:
            x = images[idx].float()  # (B, 1, X, Y, Z)
        else:
            x = torch.stack([dataset[int(i)]["image"] for i in idx])  # mmap read, crop, float32
        if not method.identical_views:
            x = train._views(x, augment, generator).flatten(0, 1)  # (2B, 1, X, Y, Z)
        return x.to(device, non_blocking=True).contiguous(memory_format=fmt)

    state = {"step": 0, "order": torch.randperm(n, generator=generator)}

    def pipeline_step() -> float:
        step = state["step"] % (n // bs)
        if step == 0 and state["step"]:
            state["order"] = torch.randperm(n, generator=generator)  # next epoch
        state["step"] += 1
        idx = state["order"][step * bs:(step + 1) * bs]
        return compute(batch_views(idx), age_all[idx].to(device), desc_all[idx].to(device))

    idx = torch.arange(bs)
    fixed = (batch_views(idx), age_all[idx].to(device), desc_all[idx].to(device))
    pure_step = lambda: compute(*fixed)  # noqa: E731
    if mode == "pure":
        seconds = common.time_repeats(pure_step, case["warmup"], case["repeats"], case["device"])
        return {**case, "input_shape": list(fixed[0].shape), **common.summary(seconds, bs),
                **common.peak_memory(case["device"])}
    # pipeline and pure steps alternate, so both see the same load on a shared machine
    pipe, pure = common.time_interleaved(pipeline_step, pure_step, case["warmup"], case["repeats"],
                                         case["device"])
    pairs = [p / q for p, q in zip(pure, pipe)]  # per pair: pure time / pipeline time
    return {**case, "input_shape": list(fixed[0].shape), **common.summary(pipe, bs),
            "pure_interleaved": common.summary(pure, bs), "ratio_paired": statistics.median(pairs),
            **common.peak_memory(case["device"])}


def make_cases(args, tmp: Path) -> list[dict]:
    base = {"device": args.device, "threads": args.threads, "bf16": args.bf16,
            "no_channels_last": args.no_channels_last}
    cases = []
    if args.quick:
        root = common.write_random_openbhb(tmp / "quick", 8, voxel_mm=9.0)
        cpu = dict(base, profile="cpu_profile", root=str(root), base_width=4, batch_size=4,
                   image_dtype="float32", warmup=1, repeats=2)
    else:
        cpu = dict(base, profile="cpu_profile", root=str(args.data), base_width=16, batch_size=32,
                   image_dtype="float32", warmup=2, repeats=args.repeats)
    # quick: one method per profile (the augmented views here, the disk reads below)
    methods = [m for m in args.methods if not args.quick or m == "simclr"] or list(args.methods)
    if not args.skip_cpu_profile:
        cases += [dict(cpu, method=m, mode=mode) for m in methods for mode in ("pure", "memory")]
    if args.skip_full_res:
        return cases
    if args.quick:  # a coarse grid stands in for 1.5 mm: the same code path, seconds not minutes
        root = common.write_random_openbhb(tmp / "full", 4, voxel_mm=6.0)
        full = dict(base, profile="full_res", root=str(root), base_width=4, batch_size=2,
                    image_dtype="float16", warmup=1, repeats=1, voxel_mm=6.0)
    else:
        n = max(2 * args.full_res_batch, 4)
        root = common.write_random_openbhb(tmp / "full", n, voxel_mm=1.5)
        full = dict(base, profile="full_res", root=str(root), base_width=64 if args.full_width else 16,
                    batch_size=args.full_res_batch, image_dtype="float16", warmup=1,
                    repeats=args.full_res_steps, voxel_mm=1.5)
    for method in args.methods:
        if args.quick and method != "anatcl_global":
            continue
        modes = ("pure", "memory", "disk") if method == "anatcl_global" else ("pure", "memory")
        cases += [dict(full, method=method, mode=mode) for mode in modes]
    return cases


def ratios(results: list[dict]) -> list[dict]:
    """Pipeline / pure throughput of every pipeline case, from its interleaved steps.

    ``ratio``: median over pairs of (pure step time / pipeline step time); ``ratio_medians``: the
    ratio of the two medians; ``ratio_separate``: against the separate pure-only run (exposed to
    the machine's load changing between the two processes).
    """
    out = []
    for r in results:
        if r["mode"] == "pure":
            continue
        alone = next((p for p in results if p["mode"] == "pure" and p["profile"] == r["profile"]
                      and p["method"] == r["method"]), None)
        out.append({"profile": r["profile"], "method": r["method"], "pipeline": r["mode"],
                    "ratio": r["ratio_paired"], "ratio_medians": r["per_s"] / r["pure_interleaved"]["per_s"],
                    "ratio_separate": r["per_s"] / alone["per_s"] if alone else None,
                    "pipeline_per_s": r["per_s"], "pure_per_s": r["pure_interleaved"]["per_s"]})
    return out


def main(argv=None) -> int:
    p = common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=common.REPO / "data" / "openbhb",
                   help="OpenBHB-layout cohort of the CPU profile")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per CPU-profile case")
    p.add_argument("--full-res-batch", type=int, default=2, help="subjects per batch at 121x128x121")
    p.add_argument("--full-res-steps", type=int, default=3, help="timed steps per 121x128x121 case")
    p.add_argument("--full-width", action="store_true", help="base_width 64 at 121x128x121 (paper)")
    p.add_argument("--skip-full-res", action="store_true")
    p.add_argument("--skip-cpu-profile", action="store_true")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="params.yaml pretrain methods to time (identical / augmented views)")
    args = p.parse_args(argv)
    if args.case:
        common.report_case(run_child(json.loads(args.case)))
        return 0
    common.set_threads(args.threads)
    info = common.machine(args.device)
    common.print_machine(info)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for case in make_cases(args, Path(tmp)):
            result = common.run_case(Path(__file__), case)
            results.append(result)
            print(f"  {case['profile']:<11} {case['method']:<13} {case['mode']:<6} "
                  f"{result['per_s']:8.2f} subjects/s  (median {result['median_s']:.3f} s/step, "
                  f"peak RSS {result['max_rss_mib']:.0f} MiB)", flush=True)
    summary = ratios(results)
    print("\nsubjects/s per optimiser step (median of repeats); ratio = pipeline / pure (goal >= 0.9)")
    common.print_table(results, ["profile", "method", "mode", "input_shape", "per_s", "median_s", "max_rss_mib"])
    print()
    common.print_table(summary, ["profile", "method", "pipeline", "pipeline_per_s", "pure_per_s", "ratio",
                                "ratio_medians", "ratio_separate"])
    payload = {"benchmark": NAME, "machine": info, "quick": args.quick, "goal_ratio": 0.9,
               "cases": results, "ratios": summary}
    print(f"\nwrote {common.write_json(payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
