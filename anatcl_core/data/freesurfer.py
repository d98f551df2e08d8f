"""FreeSurfer ROI tables as OpenBHB stores them: names of channels and Desikan-Killiany regions.

OpenBHB's ``*_preproc-freesurfer_desc-desikan_ROI.npy`` holds a (7, 68) table: one row per
FreeSurfer measure (below), one column per region, the 34 left-hemisphere regions in FreeSurfer's
aparc order followed by the same 34 on the right (REFERENCE §3). Rows are always selected by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

#: Row order of OpenBHB's FreeSurfer ROI tables. Row 5 is the *Gaussian* curvature (REFERENCE §4).
CHANNELS: tuple[str, ...] = (
    "surface_area",
    "grey_matter_volume",
    "average_thickness",
    "thickness_std",
    "integrated_rectified_mean_curvature",
    "integrated_rectified_gaussian_curvature",
    "intrinsic_curvature_index",
)

#: The same channels as OpenBHB's ``resource/freesurfer_channels.txt`` names them (FreeSurfer's
#: aparcstats measure names), in :data:`CHANNELS` order.
PUBLISHED_CHANNELS: tuple[str, ...] = (
    "surface_area_mm^2",
    "gray_matter_volume_mm^3",
    "average_thickness_mm",
    "thickness_stddev_mm",
    "integrated_rectified_mean_curvature_mm^-1",
    "integrated_rectified_gaussian_curvature_mm^-2",
    "intrinsic_curvature_index",
)

#: Short names used in params.yaml and in the paper (CT, GMV, SA).
CHANNEL_ALIASES: dict[str, str] = {
    "SA": "surface_area",
    "GMV": "grey_matter_volume",
    "CT": "average_thickness",
    "CT_std": "thickness_std",
    "MeanCurv": "integrated_rectified_mean_curvature",
    "GausCurv": "integrated_rectified_gaussian_curvature",
    "CurvInd": "intrinsic_curvature_index",
}

#: Every name a params.yaml channel list may use: the aliases, then the full names.
CHANNEL_NAMES: tuple[str, ...] = tuple(CHANNEL_ALIASES) + CHANNELS
#: A params.yaml list of descriptors: non-empty, each a name of :data:`CHANNEL_NAMES`.
Channels = Annotated[tuple[Literal[CHANNEL_NAMES], ...], Field(min_length=1)]

#: The anatomical kernel's default descriptors.
DEFAULT_CHANNELS: tuple[str, ...] = ("CT", "GMV", "SA")

#: Desikan-Killiany cortical regions, FreeSurfer aparc order (one hemisphere).
DESIKAN_REGIONS: tuple[str, ...] = (
    "bankssts", "caudalanteriorcingulate", "caudalmiddlefrontal", "cuneus", "entorhinal",
    "fusiform", "inferiorparietal", "inferiortemporal", "isthmuscingulate", "lateraloccipital",
    "lateralorbitofrontal", "lingual", "medialorbitofrontal", "middletemporal", "parahippocampal",
    "paracentral", "parsopercularis", "parsorbitalis", "parstriangularis", "pericalcarine",
    "postcentral", "posteriorcingulate", "precentral", "precuneus", "rostralanteriorcingulate",
    "rostralmiddlefrontal", "superiorfrontal", "superiorparietal", "superiortemporal",
    "supramarginal", "frontalpole", "temporalpole", "transversetemporal", "insula",
)  # fmt: skip

#: Column names of a Desikan ROI table: ``lh-<region>`` x 34, then ``rh-<region>`` x 34.
DESIKAN_COLUMNS: tuple[str, ...] = tuple(
    f"{hemi}-{region}" for hemi in ("lh", "rh") for region in DESIKAN_REGIONS
)

DESIKAN_SHAPE: tuple[int, int] = (len(CHANNELS), len(DESIKAN_COLUMNS))  # (7, 68)


def channel_index(name: str) -> int:
    """Row of a FreeSurfer ROI table holding ``name`` (full name or alias such as ``"CT"``).

    Raises:
        KeyError: if the name is neither a channel nor an alias; the message lists the valid names.
    """
    full = CHANNEL_ALIASES.get(name, name)
    if full not in CHANNELS:
        valid = ", ".join(list(CHANNEL_ALIASES) + list(CHANNELS))
        raise KeyError(f"unknown FreeSurfer channel {name!r}; expected one of: {valid}")
    return CHANNELS.index(full)


def canonical_channel(name: str) -> str:
    """:data:`CHANNELS` name of a channel given by its published name, full name or alias.

    Raises:
        KeyError: for any other name; the message names it and the published names.
    """
    if name in PUBLISHED_CHANNELS:
        return CHANNELS[PUBLISHED_CHANNELS.index(name)]
    full = CHANNEL_ALIASES.get(name, name)
    if full not in CHANNELS:
        raise KeyError(f"unknown FreeSurfer channel {name!r}; expected one of: {', '.join(PUBLISHED_CHANNELS)}")
    return full


def select_channels(table: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Rows of ROI table(s) picked by channel name, in the order asked.

    Args:
        table: ``(7, R)`` or ``(N, 7, R)`` in OpenBHB's channel order.
        names: channel names or aliases, e.g. ``("CT", "GMV", "SA")``.

    Returns:
        ``(len(names), R)`` or ``(N, len(names), R)``.

    Raises:
        ValueError: if the table does not have 7 channels on its second-to-last axis, or names
            is empty or repeats a channel.
    """
    if table.ndim not in (2, 3) or table.shape[-2] != len(CHANNELS):
        raise ValueError(f"expected a ROI table of shape (7, R) or (N, 7, R), got {table.shape}")
    rows = [channel_index(n) for n in names]
    if not rows or len(set(rows)) != len(rows):
        raise ValueError(f"channel selection must be non-empty without repeats, got {list(names)}")
    return table[..., rows, :]
