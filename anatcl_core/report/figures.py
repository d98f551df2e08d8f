"""Figures without pyplot: a blank matplotlib Figure, and the one way the report saves them as PNG.

Every drawing function of the report builds a plain :class:`matplotlib.figure.Figure`, so no global
backend is chosen at import time and no pyplot state is kept: saving as PNG renders with Agg whatever
the session's backend, and a notebook displays a Figure returned as a cell's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure

from anatcl_core.atomic import atomic_open


def save_figures(figures: Mapping[str, Figure], folder: str | Path, dpi: int) -> dict[str, Path]:
    """Save each figure as ``folder/<name>.png`` (without matplotlib's version tag, so the bytes
    depend only on the drawing), each atomically, and return name -> path."""
    paths = {}
    for name, fig in figures.items():
        paths[name] = Path(folder) / f"{name}.png"
        with atomic_open(paths[name]) as handle:  # format given: the temp name's suffix is no image type
            fig.savefig(handle, format="png", dpi=dpi, metadata={"Software": None})
    return paths
