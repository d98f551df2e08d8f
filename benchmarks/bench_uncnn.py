"""Seconds per volume of the un-CNN reference row at several widths, beside the encoders' forward.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_uncnn.py [--arrays outputs/cohort/arrays]
        [--widths 8,16,32,64 16,32,64,128 64,128,256,512] [--n 32] [--synthetic-mm MM] [--quick] [--out FILE]

On the first ``--n`` downstream maps of the cohort stage's arrays (the project's grid, uncropped, as
the reference stage reads them): the input channels alone, then the whole feature extraction
(:func:`anatcl_core.evaluation.uncnn.uncnn_features`: channels + forward, one thread) per width;
and, as the yardstick measured under the same load, the frozen ResNet-18 (params.yaml
``pretrain.base_width``, random init) forward of the evaluate stage on the same maps cropped, one
thread. Process CPU seconds and wall seconds per volume, each the median of ``--repeats``;
``x encoder`` = un-CNN CPU time / encoder CPU time (shared cores inflate both alike), and the whole
default cohort's un-CNN seconds at that ratio. ``--synthetic-mm MM``: ``--n`` random brain-like maps on
the MM grid instead of the cohort's (no cohort stage needed; the cohort size is then the default
run's 2,910 maps); ``--quick``: 4 of them on the 9 mm grid, one repeat.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, parser, write_json  # noqa: E402

#: Maps of the default run's cohorts (pretraining, downstream, travelling), for --synthetic-mm.
DEFAULT_COHORT_MAPS = 2910


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``repeats`` calls after one warm-up call."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def main(argv=None) -> dict:
    import torch

    from anatcl_core.config import load_section
    from anatcl_core.data import arrays, layout
    from anatcl_core.evaluation import features as feat
    from anatcl_core.evaluation import uncnn
    from anatcl_core.model.network import build_model
    from anatcl_core.train.recipe import PretrainConfig

    p = parser("uncnn", __doc__.splitlines()[0])
    p.add_argument("--arrays", default="outputs/cohort/arrays")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--widths", nargs="+", default=["8,16,32,64", "16,32,64,128", "64,128,256,512"])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-mm", type=float, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base_width = load_section(args.params, "pretrain", PretrainConfig).base_width
    if args.quick or args.synthetic_mm:
        n, shape = (4, layout.grid_shape(9.0)) if args.quick else (args.n, layout.grid_shape(args.synthetic_mm))
        images = np.clip(np.random.default_rng(0).random((n, 1, *shape)) - 0.3, 0, None).astype(np.float32)
        cropped, n_cohort, repeats = images, DEFAULT_COHORT_MAPS, 1 if args.quick else args.repeats
    else:
        cohort = arrays.load_cohort(args.arrays, "downstream")
        images = np.asarray(cohort.images[:args.n], np.float32)
        cropped = np.asarray(arrays.load_cohort(args.arrays, "downstream", "upstream").images[:args.n], np.float32)
        n_cohort = sum(len(arrays.load_table(args.arrays, name)) for name in arrays.cohort_names(args.arrays))
        repeats = args.repeats
    n = len(images)
    encoder = build_model(depth="resnet18", base_width=base_width).encoder.eval()
    enc_cpu, enc_wall = timed(lambda: feat.extract_features(encoder, cropped, 64, False), repeats)
    rows = [{"case": f"encoder ResNet-18 w{base_width} (evaluate stage)", "features": 8 * base_width * 4,
             "cpu_s_per_volume": enc_cpu / n, "wall_s_per_volume": enc_wall / n}]
    ch_cpu, ch_wall = timed(lambda: [uncnn.input_channels(v[0]) for v in images], repeats)
    rows.append({"case": "un-CNN input channels only", "features": None,
                 "cpu_s_per_volume": ch_cpu / n, "wall_s_per_volume": ch_wall / n})
    for text in args.widths:
        widths = tuple(int(w) for w in text.split(","))
        count = len(images) if widths[0] < 64 or args.quick else min(len(images), 8)
        cpu, wall = timed(lambda: uncnn.uncnn_features(images[:count], widths, 0, progress=False),
                          1 if widths[0] >= 64 else repeats)
        rows.append({"case": f"un-CNN {'/'.join(map(str, widths))}", "features": uncnn.feature_count(widths),
                     "cpu_s_per_volume": cpu / count, "wall_s_per_volume": wall / count})
    for row in rows:
        row["x_encoder"] = row["cpu_s_per_volume"] / rows[0]["cpu_s_per_volume"]
        row["cohort_cpu_s"] = row["cpu_s_per_volume"] * n_cohort
        print(f"{row['case']:40s} features {str(row['features']):>6s}  cpu {1000 * row['cpu_s_per_volume']:8.1f} ms/vol"
              f"  wall {1000 * row['wall_s_per_volume']:8.1f} ms/vol  x encoder {row['x_encoder']:6.2f}"
              f"  cohort ({n_cohort} maps) {row['cohort_cpu_s']:7.1f} cpu s")
    result = {"benchmark": "uncnn", "quick": bool(args.quick), "machine": machine(), "n_volumes": n,
              "cohort_volumes": n_cohort, "grid": list(images.shape[2:]), "cases": rows}
    print(f"wrote {write_json(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
