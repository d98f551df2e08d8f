"""Every stage's outputs as tidy pandas tables, for ``notebooks/explore.py``.

Read-only: nothing here writes a file, so exploring leaves ``dvc status`` clean. The runs are those
of ``params.yaml`` (``pretrain.run`` x ``pretrain.seeds``) read by :func:`anatcl_core.report.results.collect`;
each table is long ("tidy"): one row per (method, seed, ...) observation, ready for
``groupby``/``pivot_table`` and for seaborn.

- :func:`metrics_table`: every scalar of every run's ``probes.json`` (probe, task, metric, value).
- :func:`headline_table`: the report's headline metrics per method, mean and std over seeds.
- :func:`runs_table`: one row per run with its checkpoint and training summary.
- :func:`features`: the frozen-encoder features of one run and one cohort, beside its covariates.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core import live
from anatcl_core.data.arrays import load_table
from anatcl_core.evaluation.evaluate import FEATURES_FILE
from anatcl_core.report.results import Results
from anatcl_core.train.checkpointing import CHECKPOINT_FILE

METRIC_COLUMNS = ["method", "seed", "probe", "task", "metric", "value"]

#: Headline metrics: (display name, probe, metric); the diagnosis one is averaged over its tasks.
HEADLINE = [
    ("diagnosis BAcc (mean over tasks)", "diagnosis", "balanced_accuracy"),
    ("unseen-site BAcc (leave-one-site-out, mean over tasks)", "loso", "balanced_accuracy"),
    ("descriptor R² (top PCs)", "representation", "descriptor_r2"),
    ("brain-age MAE external", "brain_age", "mae_external"),
    ("brain-age MAE internal", "brain_age", "mae_internal"),
    ("site BAcc", "brain_age", "site_bacc_internal"),
    ("challenge score", "brain_age", "challenge_score"),
    ("travelling ICC(2,1) median", "reliability", "median_icc_2_1"),
    ("leave-sites-out MAE", "site_held_out", "mae"),
]


def _scalars(entry: dict) -> dict[str, float]:
    """The numeric (non-boolean) top-level entries of a probe result."""
    return {k: float(v) for k, v in entry.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def metrics_table(results: Results) -> pd.DataFrame:
    """Every scalar of every run's ``probes.json`` (reference rows as seed 0), one row each.

    Diagnosis, leave-one-site-out and score probes have one ``task`` per ``dx_``/``score_`` column;
    brain age is task ``openbhb``, reliability ``travelling``, the leave-sites-out probe ``sites
    held out``, the representation read-outs ``downstream``.

    Returns:
        Columns ``method, seed, probe, task, metric, value``, in run order.
    """
    rows = []
    runs = [*results.probes.items(), *(((name, 0), p) for name, p in results.references.items())]
    for (method, seed), probes in runs:
        parts = [("diagnosis", task, r) for task, r in probes.get("diagnosis", {}).items()]
        parts += [("loso", task, r) for task, r in probes.get("loso", {}).items()]
        parts += [("scores", name, r) for name, r in probes.get("scores", {}).items()]
        parts += [("brain_age", "openbhb", probes.get("brain_age", {})),
                  ("reliability", "travelling", probes.get("reliability", {})),
                  ("site_held_out", "sites held out", probes.get("site_held_out", {})),
                  ("representation", "downstream", probes.get("representation", {}))]
        rows += [(method, seed, probe, task, metric, value)
                 for probe, task, entry in parts for metric, value in _scalars(entry).items()]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def headline_long(metrics: pd.DataFrame) -> pd.DataFrame:
    """The :data:`HEADLINE` metrics per run: columns ``method, seed, metric, value``."""
    frames = []
    for name, probe, metric in HEADLINE:
        part = metrics[(metrics["probe"] == probe) & (metrics["metric"] == metric)]
        if len(part):  # several diagnosis tasks: their mean per run
            value = part.groupby(["method", "seed"], sort=False)["value"].mean()
            frames.append(value.reset_index().assign(metric=name))
    columns = ["method", "seed", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def headline_table(metrics: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Methods x headline metrics, ``mean`` and ``std`` (over seeds, ddof 1; 0 with one seed).

    Args:
        metrics: :func:`metrics_table`. labels: display names of the methods.

    Returns:
        Index: methods (display names, run order); columns: (metric, ``mean``/``std``).
    """
    long = headline_long(metrics)
    grouped = long.groupby(["method", "metric"], sort=False)["value"]
    table = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0)}, axis=1).unstack("metric")
    methods = list(dict.fromkeys(long["method"]))
    names = [n for n, _, _ in HEADLINE if n in set(long["metric"])]
    table = table.reindex(index=methods).swaplevel(axis=1).reindex(
        columns=pd.MultiIndex.from_product([names, ["mean", "std"]]))
    table.index = [(labels or {}).get(m, m) for m in methods]
    return table


def runs_table(results: Results, pretrain_dir: str | Path) -> pd.DataFrame:
    """One row per run: ``method, seed, checkpoint`` path and its training summary (``dvclive/metrics.json``)."""
    rows = []
    for method, seed in results.probes:
        folder = Path(pretrain_dir) / f"{method}-s{seed}"
        summary = folder / live.LIVE_DIR / live.METRICS_FILE
        rows.append({"method": method, "seed": seed, "checkpoint": str(folder / CHECKPOINT_FILE),
                     **(json.loads(summary.read_text()) if summary.exists() else {})})
    return pd.DataFrame(rows)


def features(evaluate_dir: str | Path, method: str, seed: int, arrays_dir: str | Path,
             cohort: str = "downstream") -> pd.DataFrame:
    """The frozen-encoder features of one run on one cohort, joined with the cohort's table.

    Args:
        evaluate_dir: the evaluate stage's folder. cohort: ``openbhb``, ``downstream`` or ``travelling``.
        arrays_dir: the cohort stage's arrays, for the covariates (age, sex, site, ``dx_``/``score_``...).

    Returns:
        Index ``participant_id``; the cohort table's columns, then ``f0 … f{F-1}``.

    Raises:
        FileNotFoundError: the run has no ``features.npz``. KeyError: it has no such cohort.
        ValueError: its ids are not the cohort table's (stale features).
    """
    path = Path(evaluate_dir) / f"{method}-s{seed}" / FEATURES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the evaluate stage of {method} seed {seed}")
    with np.load(path, allow_pickle=False) as saved:
        if f"{cohort}_features" not in saved:
            raise KeyError(f"{path}: no cohort {cohort!r} (has {sorted(k[:-9] for k in saved if k.endswith('_features'))})")
        x, ids = saved[f"{cohort}_features"], saved[f"{cohort}_ids"].tolist()
    table = load_table(arrays_dir, cohort)
    if table["participant_id"].astype(str).tolist() != ids:
        raise ValueError(f"{path}: {cohort} features are not those of {arrays_dir} (rerun evaluate)")
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])], index=pd.Index(ids, name="participant_id"))
    return pd.concat([table.set_index(frame.index), frame], axis=1)
