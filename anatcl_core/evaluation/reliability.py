"""Cross-scanner reliability of embeddings: between-site ICC and site variance share (the probes with
whole sites held out: :mod:`anatcl_core.evaluation.site_held_out`).

On a travelling-heads set every subject is scanned at every site, so each embedding dimension is a
``(n subjects) x (k sites)`` two-way table. From its ANOVA mean squares (Shrout & Fleiss 1979;
McGraw & Wong 1996, cases 2A and 3A), with row = subject, column = site::

    MSR = k * sum_i (mean_i. - mean..)^2 / (n - 1)                          between subjects
    MSC = n * sum_j (mean_.j - mean..)^2 / (k - 1)                          between sites
    MSE = sum_ij (x_ij - mean_i. - mean_.j + mean..)^2 / ((n - 1)(k - 1))   residual

    ICC(2,1) = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)   absolute agreement
    ICC(3,1) = (MSR - MSE) / (MSR + (k - 1) MSE)                        consistency

Headline = ICC(2,1). The question is whether a subject gets the *same* embedding on another scanner.
A systematic per-site offset (the thing harmonisation is about, and what a downstream probe trained
at one site and applied at another suffers from) is a rater bias: ICC(2,1) counts it as
disagreement, ICC(3,1) removes it before comparing, so an encoder that shifts every scan of a site
by a large constant would still score ICC(3,1) = 1. Sites are also a sample of possible scanners
(random raters, case 2). ICC(3,1) is reported beside it; the gap between the two is the share lost to
site offsets. (REFERENCE §1.5 quotes a travelling-heads study without saying which form it used.)

Degenerate dimensions: a dimension whose n*k values are all identical (a dead ReLU unit, a constant
descriptor) has no variance to apportion, so both ICCs are 0/0 and are returned as NaN; ICC(3,1) is
also NaN where only the site varies (MSR + (k-1) MSE = 0 up to rounding). Summaries drop NaNs and
report how many dimensions were dropped (``n_degenerate``). ICCs are not clipped: estimates below 0
(MSR < MSE) are kept, as they are in the literature, so medians stay unbiased near 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: relative tolerance (of the total mean square) under which an ICC denominator counts as zero
_ZERO_RTOL = 1e-12


# ------------------------------------------------------------------------------------- ICC
def _check_design(ratings: np.ndarray, name: str = "ratings") -> np.ndarray:
    ratings = np.asarray(ratings, float)
    if ratings.ndim == 2:
        ratings = ratings[..., None]
    if ratings.ndim != 3 or ratings.shape[0] < 2 or ratings.shape[1] < 2:
        raise ValueError(f"{name}: expected (n_subjects >= 2, k_sites >= 2, d) or (n, k), got shape "
                         f"{ratings.shape}")
    if not np.isfinite(ratings).all():
        raise ValueError(f"{name}: contains NaN or inf; impute or drop those subjects first")
    return ratings


def anova_mean_squares(ratings: np.ndarray) -> dict[str, np.ndarray]:
    """Two-way ANOVA (subject x site, one scan per cell) mean squares of every dimension.

    Args:
        ratings: ``(n, k, d)`` (or ``(n, k)``) measurements: n subjects, k sites, d dimensions.

    Returns:
        ``msr`` (subjects), ``msc`` (sites), ``mse`` (residual), ``mst`` (total, ``SST / (nk - 1)``)
        and ``ss_total``, ``ss_site``, each ``(d,)``; ``degenerate`` ``(d,)`` bool, True where all
        n*k values of the dimension are identical.
    """
    x = _check_design(ratings)
    n, k, _ = x.shape
    grand = x.mean(axis=(0, 1))  # d
    subject_mean = x.mean(axis=1)  # n x d
    site_mean = x.mean(axis=0)  # k x d
    ss_subject = k * ((subject_mean - grand) ** 2).sum(0)  # d
    ss_site = n * ((site_mean - grand) ** 2).sum(0)  # d
    resid = x - subject_mean[:, None] - site_mean[None] + grand  # n x k x d
    ss_error = (resid**2).sum(axis=(0, 1))  # d
    ss_total = ((x - grand) ** 2).sum(axis=(0, 1))  # d
    return {
        "msr": ss_subject / (n - 1),
        "msc": ss_site / (k - 1),
        "mse": ss_error / ((n - 1) * (k - 1)),
        "mst": ss_total / (n * k - 1),
        "ss_total": ss_total,
        "ss_site": ss_site,
        "degenerate": x.max(axis=(0, 1)) == x.min(axis=(0, 1)),
    }


def _safe_ratio(num: np.ndarray, den: np.ndarray, ms: dict) -> np.ndarray:
    bad = ms["degenerate"] | (np.abs(den) <= _ZERO_RTOL * ms["mst"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad, np.nan, num / np.where(bad, 1.0, den))


def icc(ratings: np.ndarray, kind: str = "2,1") -> np.ndarray:
    """Single-measurement intraclass correlation of every dimension (see the module docstring).

    Args:
        ratings: ``(n_subjects, k_sites, d)`` (or ``(n, k)``), one measurement per subject and site.
        kind: ``"2,1"`` (two-way random, absolute agreement; the headline) or ``"3,1"`` (two-way
            mixed, consistency).

    Returns:
        ``(d,)`` ICCs (``(1,)`` for a 2-D input); NaN on degenerate dimensions.

    Raises:
        ValueError: on a bad shape, non-finite values or an unknown ``kind``.
    """
    if kind not in ("2,1", "3,1"):
        raise ValueError(f"kind: expected '2,1' or '3,1', got {kind!r}")
    x = _check_design(ratings)
    n, k, _ = x.shape
    ms = anova_mean_squares(x)
    msr, msc, mse = ms["msr"], ms["msc"], ms["mse"]
    den = msr + (k - 1) * mse
    if kind == "2,1":
        den = den + k * (msc - mse) / n
    return _safe_ratio(msr - mse, den, ms)


# ------------------------------------------------------------------------- site variance
def site_variance_per_dimension(features: np.ndarray, site: np.ndarray) -> np.ndarray:
    """Share of each dimension's variance explained by the site means (eta^2 of a one-way ANOVA).

    ``share_d = sum_s N_s (mean_sd - mean_d)^2 / sum_i (x_id - mean_d)^2``; works on unbalanced sites.

    Args:
        features: ``(N, d)`` (or ``(N, ...)``, flattened) one row per scan.
        site: ``(N,)`` site labels.

    Returns:
        ``(d,)`` shares in [0, 1]; NaN where the dimension is constant.
    """
    x, site = _check_long(features, site, "site")
    between, total = _site_sums_of_squares(x, site)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, between / np.where(total > 0, total, 1.0), np.nan)


def site_variance_share(features: np.ndarray, site: np.ndarray) -> float:
    """Pooled share of embedding variance explained by site: ``sum_d SS_site,d / sum_d SS_total,d``.

    The trace ratio ``tr(S_between) / tr(S_total)``, i.e. the share of the total (Euclidean)
    embedding variance that site means account for; it equals the variance-weighted mean of
    :func:`site_variance_per_dimension`. Constant dimensions add 0 to both sums.

    Args:
        features: ``(N, d)`` one row per scan; site: ``(N,)`` site labels.

    Returns:
        The share in [0, 1] (NaN if every dimension is constant).
    """
    x, site = _check_long(features, site, "site")
    between, total = _site_sums_of_squares(x, site)
    return float(between.sum() / total.sum()) if total.sum() > 0 else float("nan")


def _site_sums_of_squares(x: np.ndarray, site: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.unique(site, return_inverse=True)[1]  # N, site index of every scan
    counts = np.bincount(codes)  # S
    grand = x.mean(0)  # d
    site_mean = np.zeros((len(counts), x.shape[1]))
    np.add.at(site_mean, codes, x)
    site_mean /= counts[:, None]  # S x d
    between = (counts[:, None] * (site_mean - grand) ** 2).sum(0)  # d
    total = ((x - grand) ** 2).sum(0)  # d
    return between, total


def _check_long(features, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, float)
    x = x.reshape(len(x), -1) if x.ndim >= 2 else x
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"features and {name}: expected (N, d) and (N,), got {x.shape} and {labels.shape}")
    return x, labels


# ------------------------------------------------------------------------- arrangement
def arrange_by_site(
    features: np.ndarray,
    subject: Sequence,
    site: Sequence,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrange long-format scans into the balanced ``(n_subjects, k_sites, d)`` ICC array.

    Args:
        features: ``(N, d)`` (or ``(N, ...)``, e.g. ROI tables ``(N, C, 68)``, flattened to d) one
            row per scan, e.g. in the order of the travelling manifest's rows.
        subject: ``(N,)`` subject id of every scan (manifest column ``subject``).
        site: ``(N,)`` site of every scan (manifest column ``site``).

    Returns:
        ``(array (n, k, d), subjects (n,), sites (k,))`` with subjects and sites sorted.

    Raises:
        ValueError: if a (subject, site) pair occurs twice or is missing (unbalanced design), naming
            the pairs.
    """
    x, subject = _check_long(features, subject, "subject")
    site = np.asarray(site)
    if site.shape != subject.shape:
        raise ValueError(f"site: expected shape {subject.shape} like subject, got {site.shape}")
    subjects, row = np.unique(subject, return_inverse=True)
    sites, col = np.unique(site, return_inverse=True)
    count = np.zeros((len(subjects), len(sites)), int)
    np.add.at(count, (row, col), 1)
    if (count > 1).any():
        dup = [(subjects[i], sites[j]) for i, j in zip(*np.nonzero(count > 1))]
        raise ValueError(f"arrange_by_site: {len(dup)} (subject, site) pairs scanned more than once, "
                         f"e.g. {dup[:5]}")
    if (count == 0).any():
        missing = [(subjects[i], sites[j]) for i, j in zip(*np.nonzero(count == 0))]
        raise ValueError(f"arrange_by_site: unbalanced design, {len(missing)} (subject, site) pairs "
                         f"have no scan, e.g. {missing[:5]}; drop those subjects or sites first")
    out = np.empty((len(subjects), len(sites), x.shape[1]))
    out[row, col] = x  # n x k x d
    return out, subjects, sites


# ----------------------------------------------------------------------------- summaries
def icc_per_dimension(features_by_method: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long table of per-dimension reliability (for distribution plots).

    Args:
        features_by_method: method name -> ``(n_subjects, k_sites, d)`` array (:func:`arrange_by_site`).

    Returns:
        DataFrame with columns ``method``, ``dimension``, ``icc_2_1``, ``icc_3_1``, ``site_share``
        (per-dimension share of variance explained by site), ``degenerate``.
    """
    frames = []
    for method, ratings in features_by_method.items():
        x = _check_design(ratings, name=f"features_by_method[{method!r}]")
        ms = anova_mean_squares(x)
        total = np.where(ms["degenerate"], 1.0, ms["ss_total"])  # d, no 0/0 on constant dims
        share = np.where(ms["degenerate"], np.nan, ms["ss_site"] / total)
        frames.append(pd.DataFrame({
            "method": method, "dimension": np.arange(x.shape[2]), "icc_2_1": icc(x, "2,1"),
            "icc_3_1": icc(x, "3,1"), "site_share": share, "degenerate": ms["degenerate"],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def icc_table(features_by_method: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per-method summary of between-site reliability; include the descriptors as a reference row.

    Args:
        features_by_method: method name -> ``(n_subjects, k_sites, d)`` array, e.g.
            ``{"AnatCL": ..., "SimCLR": ..., "descriptors": ...}``.

    Returns:
        DataFrame indexed by ``method`` with ``n_subjects``, ``n_sites``, ``n_dims``,
        ``n_degenerate`` (dimensions excluded, NaN ICC), for each of ``icc_2_1`` and ``icc_3_1`` the
        ``_median``, ``_q1``, ``_q3``, ``_iqr`` (q3 - q1) and ``_mean`` over the other dimensions,
        and ``site_share`` (pooled trace ratio, :func:`site_variance_share`).
    """
    per_dim = icc_per_dimension(features_by_method)
    rows = []
    for method, ratings in features_by_method.items():
        n, k = np.shape(ratings)[:2]
        dims = per_dim[per_dim["method"] == method]
        row = {"method": method, "n_subjects": n, "n_sites": k, "n_dims": len(dims),
               "n_degenerate": int(dims["degenerate"].sum())}
        for kind in ("icc_2_1", "icc_3_1"):
            values = dims[kind].dropna().to_numpy()
            q1, median, q3 = np.percentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
            row.update({f"{kind}_median": median, f"{kind}_q1": q1, f"{kind}_q3": q3,
                        f"{kind}_iqr": q3 - q1, f"{kind}_mean": values.mean() if len(values) else np.nan})
        x = np.asarray(ratings, float)
        row["site_share"] = site_variance_share(x.reshape(n * k, -1), np.tile(np.arange(k), n))
        if row["n_degenerate"]:
            logger.info("%s: %d of %d dimensions are constant; excluded from the ICC summary",
                        method, row["n_degenerate"], row["n_dims"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
