"""The benchmark's power: the smallest paired difference this run can resolve.

A paired difference is resolved when its 95% CI excludes zero; with a CI of half-width ``h``
around the difference (percentile intervals of paired differences are close to symmetric), a
difference resolves from about ``h`` up. So the smallest resolvable difference of a comparison is
read from the CI half-widths of the run's own paired differences
(:func:`anatcl_core.report.claims.paired_against`): per probe point (``loso_mean``, one task's LOSO
``loso/<task>``, ``le_n<size>``) the median over every row paired against random init and against
the un-CNN, with the range. A design with more subjects, repeats or draws narrows them; an
effect size never enters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["pairs", "median half-width", "min half-width", "max half-width"]


def half_widths(pairs: dict[str, dict[str, dict]]) -> dict[str, list[float]]:
    """Probe point -> the 95% CI half-widths of every row's paired difference there.

    Args:
        pairs: ``{row: {point: {"difference", "ci": [low, high], ...}}}`` (one floor's pairs).
    """
    out: dict[str, list[float]] = {}
    for entry in pairs.values():
        for point, summary in entry.items():
            low, high = summary["ci"]
            if np.isfinite(low) and np.isfinite(high):
                out.setdefault(point, []).append((high - low) / 2)
    return out


def resolution_table(*floors: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """Per probe point, over every pair of ``floors`` (e.g. against random init, against the un-CNN):
    pairs, median / min / max CI half-width. Per-task LOSO points are pooled as ``loso (one task)``."""
    pooled: dict[str, list[float]] = {}
    for pairs in floors:
        for point, widths in half_widths(pairs).items():
            name = "loso (one task)" if point.startswith("loso/") else point
            pooled.setdefault(name, []).extend(widths)
    rows = {point: [len(w), float(np.median(w)), float(np.min(w)), float(np.max(w))]
            for point, w in pooled.items()}
    order = sorted(rows, key=lambda p: (p != "loso_mean", p != "loso (one task)", p))
    return pd.DataFrame([rows[p] for p in order], index=order, columns=COLUMNS)


def resolution_sentence(table: pd.DataFrame) -> str | None:
    """The report's statement of power, from :func:`resolution_table`; None without LOSO pairs."""
    if "loso_mean" not in table.index:
        return None
    mean = table.loc["loso_mean"]
    said = (f"Power: the smallest paired difference in balanced accuracy this run resolves (95% CI clear of "
            f"zero) is about {mean['median half-width']:.3f} across unseen sites, mean over tasks (median CI "
            f"half-width over {int(mean['pairs'])} paired comparisons, {mean['min half-width']:.3f}-"
            f"{mean['max half-width']:.3f})")
    if "loso (one task)" in table.index:
        said += f"; about {table.loc['loso (one task)', 'median half-width']:.3f} for a single task"
    few = [p for p in table.index if p.startswith("le_n")]
    if few:
        first = min(few, key=lambda p: int(p[4:]))
        said += f"; about {table.loc[first, 'median half-width']:.3f} with {first[4:]} labels per task"
    return said + ". Smaller differences are reported as inconclusive, not as ties."


def power_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``dvc metrics`` entries: the median CI half-width (smallest resolvable difference) per point."""
    return {f"{point.replace(' (one task)', '_one_task')}_resolvable": float(row["median half-width"])
            for point, row in table.iterrows()}
