"""The measures of the findings table (:mod:`anatcl_core.report.findings`), from the run's files.

Each measure gives, for one row of the results (a method, its pretraining seeds stacked, or a
reference row), ``(point, replicates (B,))``: subjects are put in one order (sorted ids) before
resampling, and the resamples depend only on the number of subjects and the seed
(:func:`anatcl_core.evaluation.paired.resample_counts`), so two rows' replicates are paired; seeds are
averaged inside every replicate, as in the point estimate.

- ``loso_mean`` / ``loso:<family>``: leave-one-site-out balanced accuracy (``predictions.npz``
  ``loso/<task>/*``), mean over every task / the family's tasks, replicate by replicate;
- ``age_mae`` / ``sex_bacc``: ``lifespan/*`` of ``predictions.npz`` (:mod:`anatcl_core.evaluation.lifespan`);
- ``icc``: the travelling-heads features of ``features.npz`` arranged ``(subjects, sites, d)``,
  subjects resampled, the median over dimensions of ICC(2,1) per replicate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anatcl_core.data import arrays
from anatcl_core.evaluation import paired, reliability
from anatcl_core.report import claims
from anatcl_core.report.findings import FAMILIES

FEATURES_FILE = "features.npz"
#: ``anatcl_core.evaluation.lifespan.PREFIX`` (not imported: the report stage would then depend on the
#: probes' modules; tests/test_findings.py checks the two agree).
LIFESPAN = "lifespan"
#: Bootstrap replicates of the ICC computed at once (memory: chunk x subjects x sites x d floats).
ICC_CHUNK = 50


def travelling_ratings(folders: dict[str, list[Path]], arrays_dir: str | Path) -> dict[str, list[np.ndarray]]:
    """Per row, the ``(n_subjects, k_sites, d)`` travelling-heads features of each of its runs.

    Rows without saved travelling features, or a cohort without ``subject``/``site``, give none.
    """
    if "travelling" not in arrays.cohort_names(arrays_dir):
        return {}
    table = arrays.load_table(arrays_dir, "travelling")
    if not {"subject", "site"} <= set(table.columns):
        return {}
    where = {str(p): i for i, p in enumerate(table["participant_id"].astype(str))}
    out: dict[str, list[np.ndarray]] = {}
    for row, paths in folders.items():
        for folder in paths:
            path = Path(folder) / FEATURES_FILE
            if not path.exists():
                continue
            with np.load(path, allow_pickle=False) as saved:
                if "travelling_features" not in saved.files:
                    continue
                x, ids = saved["travelling_features"], saved["travelling_ids"]
            rows = table.iloc[[where[str(i)] for i in ids]]
            ratings, _, _ = reliability.arrange_by_site(x, rows["subject"].astype(str).to_numpy(),
                                                        rows["site"].astype(str).to_numpy())
            out.setdefault(row, []).append(ratings)
    return out


def median_icc_replicates(ratings: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, np.ndarray]:
    """Median over dimensions of ICC(2,1), and its subject-bootstrap replicates.

    Args:
        ratings: ``(n, k, d)`` one run's features by subject and site.

    Returns:
        ``(point, replicates (n_bootstrap,))``; resamples depend only on ``n`` and ``seed``.
    """
    n, k, d = ratings.shape
    point = float(np.nanmedian(reliability.icc(ratings, "2,1")))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))  # (B, n)
    reps = []
    for start in range(0, n_bootstrap, ICC_CHUNK):
        part = ratings[idx[start:start + ICC_CHUNK]]  # (b, n, k, d)
        stacked = part.transpose(1, 2, 0, 3).reshape(n, k, -1)  # (n, k, b * d): one ICC call
        with np.errstate(invalid="ignore", divide="ignore"):
            values = reliability.icc(stacked, "2,1").reshape(len(part), d)  # (b, d)
        reps.append(np.nanmedian(values, axis=1))
    return point, np.concatenate(reps) if reps else np.zeros(0)


class RunMeasures:
    """``measure(name, row) -> (point, replicates) | None`` over a run's predictions and ratings.

    Args:
        predictions: row -> its runs' ``predictions.npz`` (:func:`anatcl_core.report.claims.load_predictions`).
        ratings: row -> its runs' travelling ratings (:func:`travelling_ratings`).
        n_bootstrap: replicates; seed: the resamples' seed (one for every row).
    """

    def __init__(self, predictions: dict[str, list[dict]], ratings: dict[str, list[np.ndarray]],
                 n_bootstrap: int, seed: int = 0):
        self.predictions, self.ratings = predictions, ratings
        self.n_bootstrap, self.seed = n_bootstrap, seed
        self._cache: dict[tuple[str, str], tuple[float, np.ndarray] | None] = {}

    def __call__(self, measure: str, row: str) -> tuple[float, np.ndarray] | None:
        if (measure, row) not in self._cache:
            self._cache[(measure, row)] = self._compute(measure, row)
        return self._cache[(measure, row)]

    def _compute(self, measure: str, row: str) -> tuple[float, np.ndarray] | None:
        if measure == "icc":
            runs = self.ratings.get(row)
            if not runs:
                return None
            got = [median_icc_replicates(r, self.n_bootstrap, self.seed) for r in runs]
            return float(np.mean([p for p, _ in got])), np.mean([r for _, r in got], axis=0)
        runs = self.predictions.get(row)
        if not runs:
            return None
        if measure in ("age_mae", "sex_bacc"):
            return self._lifespan(runs, measure)
        tasks = sorted({k.split("/")[1] for k in runs[0] if k.startswith("loso/") and k.endswith("/pred")})
        if measure.startswith("loso:"):
            tasks = [t for t in tasks if t in FAMILIES[measure[5:]]]
        elif measure != "loso_mean":
            raise ValueError(f"unknown finding measure {measure!r}")
        if not tasks:
            return None
        per_task = []
        for task in tasks:
            ids, y, pred = claims.probe_rows(runs, "loso", task, None)
            order = np.argsort(ids.astype(str), kind="stable")
            per_task.append(paired.bootstrap_bacc(y[order], pred[:, order], self.n_bootstrap, self.seed))
        return float(np.mean([p for p, _ in per_task])), np.mean([r for _, r in per_task], axis=0)

    def _lifespan(self, runs: list[dict], measure: str) -> tuple[float, np.ndarray] | None:
        if f"{LIFESPAN}/ids" not in runs[0]:
            return None
        if any(not np.array_equal(r[f"{LIFESPAN}/ids"], runs[0][f"{LIFESPAN}/ids"]) for r in runs):
            raise ValueError("lifespan predictions: the runs of one row predicted different subjects")
        order = np.argsort(runs[0][f"{LIFESPAN}/ids"].astype(str), kind="stable")
        target = "age" if measure == "age_mae" else "sex"
        y = runs[0][f"{LIFESPAN}/{target}"][order]
        pred = np.stack([r[f"{LIFESPAN}/{target}_pred"][order] for r in runs])  # (R, n)
        fn = paired.bootstrap_mae if measure == "age_mae" else paired.bootstrap_bacc
        return fn(y, pred, self.n_bootstrap, self.seed)
