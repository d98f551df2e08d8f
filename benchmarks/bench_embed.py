"""Feature extraction: the ``anatcl embed`` path on files vs an eager forward on tensors in memory.

    nice python benchmarks/bench_embed.py [--quick] [--out FILE] [--threads N] [--device cpu|cuda]
        [--bf16] [--inputs MANIFEST_OR_FOLDER] [--n 128] [--batch-size 4] [--weights FILE]
        [--full-res] [--workers N]

Cases (each in a fresh subprocess, so its peak memory is its own), volumes/s at the median of
repeats after a warm-up call:

- ``files``: :func:`anatcl_core.evaluation.embed.embed_subjects` on the files (read, crop, batch, forward),
  the work of ``anatcl embed`` after validation, with the module of :func:`~anatcl_core.evaluation.embed.load_encoder`.
- ``memory``: the same module, a plain eager ``module(x)`` under ``torch.no_grad`` on the same
  batches of cropped images stacked beforehand (on the device). Its features must equal ``files``'
  (max abs difference printed; > 1e-6 fails the run).
- ``memory_channels_last``: :func:`anatcl_core.evaluation.features.extract_features` (inference mode,
  channels-last) on the same tensors: what the library's fast path gives (features may differ in
  the last bits: other convolution kernels).
- ``read``: the file reading alone (load + crop per volume, no model): the part of ``files`` that
  ``memory`` does not do.
- ``files_workers`` (``--workers N``): ``embed_subjects(..., workers=N)``: the files decoded by N
  DataLoader processes (``anatcl embed --workers``, pinned memory on CUDA); features must equal ``files``'.
- ``files_bf16`` (``--bf16``): ``embed_subjects(..., bf16=True)``; its speed-up over ``files`` and
  the maximum feature deviation, absolute and relative to the features' scale.

Inputs: the first ``--n`` subjects of ``data/downstream/manifest.tsv`` (4.5 mm NIfTI), or
``--full-res`` random 1.5 mm ``.npy`` maps (121x145x121, cropped to 121x128x121). Weights: a
seeded quarter-width ResNet-18 in our checkpoint format (random batch-norm statistics, so eval mode
is not the identity), or ``--weights``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "embed"
TOLERANCE = 1e-6


def _subjects(case: dict) -> list:
    from anatcl_core.evaluation.embed import gather_inputs

    return gather_inputs([case["inputs"]])[: case["n"]]


def run_child(case: dict) -> dict:
    """Time one case in this process (the child side); features go to ``case["features_out"]``."""
    import torch

    from anatcl_core.evaluation.embed import cropped_volume, embed_subjects, load_encoder
    from anatcl_core.evaluation.features import extract_features

    common.set_threads(case["threads"])
    device = torch.device(case["device"])
    subjects = _subjects(case)
    module, _ = load_encoder(case["weights"])
    module.to(device)
    bs, kind = case["batch_size"], case["kind"]
    warm = subjects[:bs]
    if kind == "read":  # the file reading alone: load + crop, no model
        run = lambda items: [cropped_volume(p) for _, p in items]  # noqa: E731
    elif kind.startswith("files"):
        bf16, workers = kind == "files_bf16", case["workers"] if kind == "files_workers" else 0
        run = lambda items: embed_subjects(module, items, bs, device, bf16=bf16, progress=False,  # noqa: E731
                                           workers=workers)
    else:
        images = torch.from_numpy(np.stack([cropped_volume(p) for _, p in subjects])[:, None])
        if kind == "memory":  # extract_features takes host arrays and moves each batch itself
            images = images.to(device)  # (N, 1, X, Y, Z), already in (device) memory

        if kind == "memory":
            @torch.no_grad()
            def run(items):
                x = images[: len(items)]
                return torch.cat([module(x[i:i + bs]) for i in range(0, len(x), bs)]).cpu().numpy()
        else:  # memory_channels_last: the library's fast path
            def run(items):
                return extract_features(module, images[: len(items)], bs, progress=False)
    state = {}

    def full() -> None:
        state["features"] = run(subjects)

    run(warm)  # warm-up: one batch (allocator, convolution kernels chosen)
    seconds = common.time_repeats(full, 0, case["repeats"], case["device"])
    if kind == "read":
        return {**case, "n_volumes": len(subjects), **common.summary(seconds, len(subjects)),
                **common.peak_memory(case["device"])}
    features = np.asarray(state["features"], dtype=np.float32)
    np.save(case["features_out"], features)
    return {**case, "n_volumes": len(subjects), "feature_shape": list(features.shape),
            **common.summary(seconds, len(subjects)), **common.peak_memory(case["device"])}


def make_weights(path: Path, base_width: int, seed: int = 0) -> Path:
    """A seeded ResNet-18 checkpoint in our format, batch-norm statistics randomised."""
    import torch

    from anatcl_core.model.checkpoint import save_checkpoint
    from anatcl_core.model.network import build_model
    from anatcl_core.model.trained import model_config

    torch.manual_seed(seed)
    model = build_model(base_width=base_width)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    save_checkpoint({"model": model.state_dict(), "config": model_config(model), "epoch": 0}, path)
    return path


def write_random_maps(folder: Path, n: int, voxel_mm: float, seed: int = 0) -> Path:
    """``n`` random ``.npy`` maps on the CAT12 grid at ``voxel_mm`` (a folder ``embed`` accepts)."""
    from anatcl_core.data import layout

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        array = np.abs(rng.normal(0.3, 0.2, size=layout.grid_shape(voxel_mm))).astype(np.float32)
        np.save(folder / f"sub-{i:04d}.npy", array)  # (X, Y, Z)
    return folder


def deviations(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max abs difference, and relative to the largest |feature| and to the features' SD."""
    diff = float(np.abs(reference - other).max())
    return {"max_abs_diff": diff, "max_abs_diff_rel_max": diff / float(np.abs(reference).max()),
            "max_abs_diff_rel_sd": diff / float(reference.std())}


def main(argv=None) -> int:
    p = common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--inputs", type=Path, default=common.REPO / "data" / "downstream" / "manifest.tsv",
                   help="manifest, folder or file of CAT12 maps")
    p.add_argument("--n", type=int, default=128, help="subjects embedded per repeat")
    p.add_argument("--batch-size", type=int, default=4, help="as `anatcl embed --batch-size`")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: seeded random)")
    p.add_argument("--base-width", type=int, default=16, help="width of the seeded random model")
    p.add_argument("--full-res", action="store_true", help="random 1.5 mm maps instead of --inputs")
    p.add_argument("--workers", type=int, default=0, help="also time embed_subjects with N decoding processes")
    args = p.parse_args(argv)
    if args.case:
        common.report_case(run_child(json.loads(args.case)))
        return 0
    common.set_threads(args.threads)
    info = common.machine(args.device)
    common.print_machine(info)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        tmp = Path(tmp)
        base_width, n, repeats, inputs = args.base_width, args.n, args.repeats, args.inputs
        if args.quick:
            base_width, n, repeats = 4, 6, 1
            inputs = write_random_maps(tmp / "maps", n, voxel_mm=9.0)
        elif args.full_res:
            inputs = write_random_maps(tmp / "maps", n, voxel_mm=1.5)
        weights = args.weights or make_weights(tmp / "weights.pth", base_width)
        kinds = ["files", "memory", "memory_channels_last"] + (["files_bf16"] if args.bf16 else [])
        kinds += ["files_workers"] if args.workers > 0 else []
        kinds.append("read")
        results = {}
        for kind in kinds:
            case = {"kind": kind, "inputs": str(inputs), "n": n, "batch_size": args.batch_size,
                    "weights": str(weights), "threads": args.threads, "device": args.device,
                    "repeats": repeats, "workers": args.workers, "features_out": str(tmp / f"{kind}.npy")}
            results[kind] = common.run_case(Path(__file__), case)
            print(f"  {kind:<21} {results[kind]['per_s']:8.2f} volumes/s  (median {results[kind]['median_s']:.3f} s"
                  f" for {results[kind]['n_volumes']}, peak RSS {results[kind]['max_rss_mib']:.0f} MiB)", flush=True)
        kinds.remove("read")
        features = {kind: np.load(tmp / f"{kind}.npy") for kind in kinds}
    reference = features["files"]
    comparison = {kind: {"speed_vs_memory": results[kind]["per_s"] / results["memory"]["per_s"],
                         "speed_vs_files": results[kind]["per_s"] / results["files"]["per_s"],
                         **deviations(reference, features[kind])} for kind in kinds}
    identical = comparison["memory"]["max_abs_diff"] <= TOLERANCE
    if "files_workers" in comparison:  # the same batches, the same module: the same bits
        identical = identical and comparison["files_workers"]["max_abs_diff"] == 0.0
    rows = [{"case": kind, **results[kind], **comparison.get(kind, {})} for kind in [*kinds, "read"]]
    print(f"\nvolumes/s (median of {repeats}); ratio goal: files / memory >= 1.0; features vs `files`")
    common.print_table(rows, ["case", "per_s", "median_s", "speed_vs_memory", "speed_vs_files",
                              "max_abs_diff", "max_abs_diff_rel_max", "max_rss_mib"])
    if "files_workers" in comparison:
        print(f"embed --workers {args.workers} (files) vs eager (memory): ratio "
              f"{comparison['files_workers']['speed_vs_memory']:.3f}, features equal to the serial path's: "
              f"{comparison['files_workers']['max_abs_diff'] == 0.0}")
    print(f"\nembed (files) vs eager (memory): ratio {comparison['files']['speed_vs_memory']:.3f}, "
          f"max abs feature difference {comparison['memory']['max_abs_diff']:.3g} "
          f"({'identical' if identical else f'ABOVE {TOLERANCE}'})")
    if "files_bf16" in comparison:
        c = comparison["files_bf16"]
        print(f"bf16: speed-up {c['speed_vs_files']:.3f}x, max abs deviation {c['max_abs_diff']:.3g} "
              f"({100 * c['max_abs_diff_rel_max']:.2f} % of the largest |feature|, "
              f"{c['max_abs_diff_rel_sd']:.3g} feature SDs)")
    payload = {"benchmark": NAME, "machine": info, "quick": args.quick, "goal_ratio": 1.0,
               "tolerance": TOLERANCE, "features_identical": identical,
               "ratio_files_vs_memory": comparison["files"]["speed_vs_memory"],
               "cases": results, "comparison": comparison}
    print(f"wrote {common.write_json(payload, args.out)}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
