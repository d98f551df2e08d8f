"""The report's embedding maps: each method's frozen features of the downstream cohort in 2-D.

One pretraining seed (``report.embedding_seed``) per method, projected by PCA or t-SNE
(``report.embedding``), coloured by age and by condition (:func:`anatcl_core.report.plots.embedding_maps`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from anatcl_core.data.arrays import load_table
from anatcl_core.data.manifest import task_columns
from anatcl_core.report import plots


def _conditions(frame: pd.DataFrame) -> np.ndarray:
    """Group of each downstream subject: the task whose case it is, else ``control``."""
    condition = np.full(len(frame), "control", dtype=object)
    for column in task_columns(frame):
        condition[(frame[column] == 1).to_numpy()] = column.removeprefix("dx_")
    return condition


def embedding_coordinates(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """``(N, F)`` standardised features -> ``(N, 2)`` by PCA or t-SNE (PCA-initialised)."""
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if kind == "tsne":
        return TSNE(2, init="pca", random_state=seed, perplexity=30.0).fit_transform(x)
    return PCA(2, random_state=seed).fit_transform(x)



def embedding_figure(methods: list[str], arrays_dir: str | Path, evaluate_dir: str | Path, seed: int,
                     kind: str, labels: dict[str, str], dpi: int) -> Figure | None:
    """The maps of every method whose ``<evaluate_dir>/<method>-s<seed>/features.npz`` exists (None if none).

    Raises:
        ValueError: a features file holds other subjects than the downstream table of ``arrays_dir``
            (the cohort stage's arrays).
    """
    manifest = load_table(arrays_dir, "downstream")
    maps = {}
    for method in methods:
        path = Path(evaluate_dir) / f"{method}-s{seed}" / "features.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as saved:
                if list(saved["downstream_ids"]) != manifest["participant_id"].astype(str).tolist():
                    raise ValueError(f"{path}: features are not those of {arrays_dir}'s downstream cohort")
                maps[method] = embedding_coordinates(saved["downstream_features"], kind, 0)
    if not maps:
        return None
    return plots.embedding_maps(maps, manifest["age"].to_numpy(float), _conditions(manifest),
                                labels, dpi=dpi, kind=kind.upper())
