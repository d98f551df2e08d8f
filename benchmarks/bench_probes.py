"""Probe time per evaluate stage: today's probes vs the added ones (LOSO, label efficiency, representation).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_probes.py [--checkpoint CKPT]
        [--arrays outputs/cohort/arrays] [--params params.yaml] [--quick] [--out FILE]

With a checkpoint, its encoder's features of every cohort are extracted first (timed: part of
today's evaluate stage); without one, seeded Gaussian features of ``--dim`` columns stand in (probe
cost depends on the sizes, not the values, up to solver iterations). Phases, seconds each (one
run, single-threaded BLAS as in the stage):

- today: feature extraction, brain age + site leakage, diagnosis (stratified nested CV), scores,
  travelling-heads reliability, leave-sites-out brain age;
- added: leave-one-site-out diagnosis, label-efficiency curve, representation read-outs.

Prints a table and ``added / today`` (the evaluate stage's extra time). ``--quick``: a tiny
generated cohort (no data needed), for the test suite's smoke run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, parser, write_json  # noqa: E402


def tiny_cohorts(rng: np.random.Generator, dim: int):
    """A generated cohort with the evaluate stage's table columns (two tasks, four sites; task a's
    sites each hold a single class)."""
    from anatcl_core.data.arrays import Cohort

    n_pre, n_down = 120, 160
    pre = pd.DataFrame({"participant_id": [f"p{i}" for i in range(n_pre)], "age": rng.uniform(20, 80, n_pre),
                        "sex": rng.integers(0, 2, n_pre), "site": [str(i % 4) for i in range(n_pre)],
                        "split": np.where(np.arange(n_pre) % 5 == 0, "internal_test",
                                          np.where(np.arange(n_pre) % 7 == 0, "external_test", "train"))})
    down = pd.DataFrame({"participant_id": [f"d{i}" for i in range(n_down)], "age": rng.uniform(20, 80, n_down),
                         "sex": rng.integers(0, 2, n_down), "site": [str(10 + i % 4) for i in range(n_down)],
                         "dx_a": np.where(np.arange(n_down) < 80, np.arange(n_down) % 2, np.nan),
                         "dx_b": np.where(np.arange(n_down) >= 80, rng.integers(0, 2, n_down), np.nan),
                         "score_s": rng.normal(size=n_down)})
    cohorts = {"openbhb": Cohort(None, pre, None), "downstream": Cohort(None, down, None)}
    x = {k: rng.normal(size=(len(c.table), dim)) for k, c in cohorts.items()}
    return cohorts, x, rng.normal(size=(n_down, 24))


def main(argv=None) -> dict:
    from anatcl_core.config import load_section
    from anatcl_core.data import arrays
    from anatcl_core.evaluation import evaluate, probes, protocol, representation, task_probes, transfer
    from anatcl_core.evaluation import features as feat

    p = parser("probes", __doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--arrays", default="outputs/cohort/arrays")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--dim", type=int, default=128)
    args = p.parse_args(argv)
    config = load_section(args.params, "evaluate", protocol.EvaluateConfig)
    rng = np.random.default_rng(0)
    times: dict[str, float] = {}

    def timed(part, fn, *a, **k):
        start = time.perf_counter()
        value = fn(*a, **k)
        times[part] = times.get(part, 0.0) + time.perf_counter() - start
        return value

    if args.quick:
        config = dataclasses.replace(config, n_splits=3, n_repeats=1, inner_splits=2, n_bootstrap=50,
                                     brain_age_cv_splits=3, label_sizes=(20, 40), label_draws=1,
                                     label_splits=3, label_inner_splits=2, representation_splits=3,
                                     num_threads=1)
        cohorts, x, descriptors = tiny_cohorts(rng, 16)
    else:
        import torch

        from anatcl_core.cores import resolve_threads

        torch.set_num_threads(resolve_threads(config.num_threads))
        crop = "upstream"
        if args.checkpoint:
            encoder, run = feat.load_encoder(args.checkpoint)
            crop = run.data.crop
        cohorts = arrays.load_arrays(args.arrays, crop)
        if args.checkpoint:
            x = {k: timed("today: features", feat.extract_features, encoder, c.images, config.batch_size, False)
                 for k, c in cohorts.items()}
        else:
            x = {k: rng.normal(size=(len(c.table), args.dim)) for k, c in cohorts.items()}
        descriptors = timed("added: read descriptors", task_probes.downstream_descriptors, cohorts["downstream"],
                            config.descriptor_channels)
    down = cohorts["downstream"].table
    kw = dict(n_splits=config.n_splits, n_repeats=config.n_repeats, inner_splits=config.inner_splits,
              n_bootstrap=config.n_bootstrap, seed=config.seed)
    timed("today: brain age + site", evaluate._brain_age, config, x["openbhb"], cohorts["openbhb"].table)
    for col in [c for c in down.columns if c.startswith("dx_")]:
        timed("today: diagnosis", probes.diagnosis_probe, x["downstream"], down[col].to_numpy(float),
              c_grid=config.c_grid, **kw)
    for col in [c for c in down.columns if c.startswith("score_")]:
        timed("today: scores", probes.score_probe, x["downstream"], down[col].to_numpy(float),
              alpha_grid=config.alpha_grid, **kw)
    timed("today: reliability", evaluate.travelling_reliability, x.get("travelling"), cohorts.get("travelling"))
    table = cohorts["openbhb"].table
    timed("today: sites held out", evaluate.site_held_out_brain_age, config, x["openbhb"],
          table["age"].to_numpy(float), table["site"].astype(str).to_numpy())
    site, ids = down["site"].astype(str).to_numpy(), down["participant_id"].astype(str).to_numpy()
    for col in [c for c in down.columns if c.startswith("dx_")]:  # what task_probes adds per task
        labels = down[col].to_numpy(float)
        timed("added: leave-one-site-out", transfer.loso_probe, x["downstream"], labels, site, c_grid=config.c_grid,
              inner_splits=config.loso_inner_splits, n_bootstrap=config.n_bootstrap, seed=config.seed, name=col)
        timed("added: label efficiency", transfer.label_efficiency_probe, x["downstream"], labels, ids,
              sizes=config.label_sizes, n_draws=config.label_draws, n_splits=config.label_splits,
              inner_splits=config.label_inner_splits, c_grid=config.c_grid, n_bootstrap=config.n_bootstrap,
              seed=config.seed, name=col)
    timed("added: representation", representation.representation_probe, x["downstream"], descriptors,
          down["age"].to_numpy(float), down["site"].astype(str).to_numpy(),
          n_components=config.representation_components, alpha_grid=config.alpha_grid,
          n_splits=config.representation_splits, seed=config.seed)
    today = sum(v for k, v in times.items() if k.startswith("today"))
    added = sum(v for k, v in times.items() if k.startswith("added"))

    for name, seconds in times.items():
        print(f"{name:32s} {seconds:8.2f} s")
    print(f"{'today (evaluate stage probes)':32s} {today:8.2f} s\n{'added':32s} {added:8.2f} s\n"
          f"ratio added / today: {added / today:.2f}")
    result = {"benchmark": "probes", "quick": bool(args.quick), "machine": machine(),
              "seconds": times, "today_s": today, "added_s": added, "ratio": added / today,
              "checkpoint": args.checkpoint}
    print(f"wrote {write_json(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
