"""The probes' logistic C path: scikit-learn's LogisticRegression against the lean BinaryLogistic.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_logistic.py [--features outputs/evaluate/random-s0]
        [--arrays outputs/cohort/arrays] [--repeats 3] [--quick] [--out FILE]

For every diagnosis of the downstream cohort, on a run's features (``features.npz`` of an evaluate or
reference stage) standardised as the probes do: the warm-started class-balanced C path over
params.yaml ``evaluate.c_grid``, fitted (a) by ``LogisticRegression(class_weight="balanced",
warm_start=True)`` under the stage's ``lean_fits`` switches (the probes' code until this benchmark)
and (b) by :func:`anatcl_core.evaluation.linear.logistic_path` (the same objective, solver and
stopping rule; wide features in their row space). Seconds per path (median of ``--repeats``), the
ratio (a) / (b), the largest difference of decision values and the share of equal predictions.
``--quick``: Gaussian features for two generated tasks.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, parser, write_json  # noqa: E402


def tasks(args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task: (features, labels)}`` of the subjects in each task."""
    if args.quick:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 16))
        return {"dx_a": (x, (x[:, 0] + rng.normal(size=200) > 0.5).astype(int)),
                "dx_b": (x, (x[:, 1] + rng.normal(size=200) > -0.3).astype(int))}
    from anatcl_core.data import arrays

    table = arrays.load_table(args.arrays, "downstream")
    with np.load(Path(args.features) / "features.npz") as saved:
        x = saved["downstream_features"].astype(float)
    out = {}
    for column in [c for c in table.columns if c.startswith("dx_")]:
        labels = table[column].to_numpy(float)
        keep = np.isfinite(labels)
        out[column] = (x[keep], labels[keep].astype(int))
    return out


def main(argv=None) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from anatcl_core.config import load_section
    from anatcl_core.evaluation import linear, protocol

    p = parser("logistic", __doc__.splitlines()[0])
    p.add_argument("--features", default="outputs/evaluate/random-s0")
    p.add_argument("--arrays", default="outputs/cohort/arrays")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    grid = sorted(load_section(args.params, "evaluate", protocol.EvaluateConfig).c_grid)
    repeats = 1 if args.quick else args.repeats

    def sklearn_path(x, y):
        xs = linear.standardise(x)[0]
        model, out = LogisticRegression(max_iter=5000, warm_start=True, class_weight="balanced"), []
        for c in grid:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                out.append(model.set_params(C=c).fit(xs, y).decision_function(xs))
        return out

    def lean_path(x, y):
        return [model.decision_function(xs) for _, model, xs in linear.logistic_path(x, y, x, grid, True)]

    rows = []
    with linear.lean_fits():
        for task, (x, y) in tasks(args).items():
            row = {"task": task, "subjects": len(y), "features": x.shape[1]}
            for name, fn in (("sklearn_s", sklearn_path), ("lean_s", lean_path)):
                fn(x, y)  # warm-up
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    decisions = fn(x, y)
                    times.append(time.perf_counter() - start)
                row[name], row[name[:-2]] = statistics.median(times), decisions
            a, b = np.array(row.pop("sklearn")), np.array(row.pop("lean"))
            row.update(ratio=row["sklearn_s"] / row["lean_s"], max_abs_diff=float(np.abs(a - b).max()),
                       same_predictions=float(np.mean((a > 0) == (b > 0))))
            rows.append(row)
            print(f"{task:14s} {row['subjects']:5d} x {row['features']:5d}  sklearn {row['sklearn_s']:.3f} s  "
                  f"lean {row['lean_s']:.3f} s  ratio {row['ratio']:.2f}  max |diff| {row['max_abs_diff']:.1e}  "
                  f"same predictions {row['same_predictions']:.4f}")
    total = sum(r["sklearn_s"] for r in rows) / sum(r["lean_s"] for r in rows)
    print(f"all tasks: ratio sklearn / lean {total:.2f}")
    result = {"benchmark": "logistic", "quick": bool(args.quick), "machine": machine(), "features": args.features,
              "c_grid": grid, "rows": rows, "ratio": total}
    print(f"wrote {write_json(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
