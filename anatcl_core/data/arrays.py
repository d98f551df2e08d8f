"""The cohort stage's arrays: every cohort stacked once into uncropped float32 ``.npy`` arrays.

Reading ~2,500 compressed NIfTI maps costs ~10 s, more than encoding them, so the cohort stage
stacks every cohort once (:func:`write_arrays`) and every evaluation memory-maps them
(:func:`load_arrays`); each array comes with the ids of its rows, checked against the cohort's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data import io, layout
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB

OPENBHB_DIR = "openbhb"


DOWNSTREAM_MANIFEST = "downstream/manifest.tsv"


TRAVELLING_MANIFEST = "travelling/manifest.tsv"


@dataclass
class Cohort:
    """Images ``(N, 1, X, Y, Z)`` and one table row per subject (same order)."""

    images: np.ndarray
    table: pd.DataFrame


def load_openbhb(data_dir: str | Path, crop, progress: bool = True) -> Cohort:
    """Every split of the pretraining cohort (``participants`` has a ``split`` column)."""
    dataset = OpenBHB(Path(data_dir) / OPENBHB_DIR, split=layout.SPLITS, crop=crop)
    return Cohort(dataset.images(progress=progress), dataset.participants.copy())


def load_manifest_cohort(manifest: str | Path, crop, progress: bool = True) -> Cohort:
    """A downstream-style cohort from its ``manifest.tsv``."""
    dataset = ManifestDataset(manifest, crop=crop)
    return Cohort(dataset.images(progress=progress), dataset.frame.copy())


ARRAY_COHORTS = ("openbhb", "downstream", "travelling")


def cohort_tables(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The table of every cohort present under ``data_dir`` (participants / manifests)."""
    data_dir = Path(data_dir)
    tables = {"openbhb": OpenBHB(data_dir / OPENBHB_DIR, split=layout.SPLITS).participants.copy(),
              "downstream": ManifestDataset(data_dir / DOWNSTREAM_MANIFEST).frame.copy()}
    if (data_dir / TRAVELLING_MANIFEST).exists():
        tables["travelling"] = ManifestDataset(data_dir / TRAVELLING_MANIFEST).frame.copy()
    return tables


def write_arrays(data_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict[str, tuple]:
    """Stack every cohort's images, uncropped, into ``out_dir/<cohort>.npy`` (+ ``<cohort>_ids.txt``).

    Returns:
        ``{cohort: array shape}``.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaders = {"openbhb": lambda: load_openbhb(data_dir, None, progress),
               "downstream": lambda: load_manifest_cohort(data_dir / DOWNSTREAM_MANIFEST, None, progress)}
    if (data_dir / TRAVELLING_MANIFEST).exists():
        loaders["travelling"] = lambda: load_manifest_cohort(data_dir / TRAVELLING_MANIFEST, None, progress)
    shapes = {}
    for name, load in loaders.items():
        cohort = load()
        np.save(out_dir / f"{name}.npy", cohort.images.astype(np.float32, copy=False))
        (out_dir / f"{name}_ids.txt").write_text("".join(f"{i}\n" for i in cohort.table["participant_id"]))
        shapes[name] = tuple(cohort.images.shape)
    return shapes


def load_arrays(arrays_dir: str | Path, data_dir: str | Path, crop) -> dict[str, Cohort]:
    """Memory-map the arrays of :func:`write_arrays`, centre-cropped, with their cohort tables.

    Raises:
        ValueError: if an array's ids are not its table's ids in order (stale arrays).
    """
    arrays_dir = Path(arrays_dir)
    out = {}
    for name, table in cohort_tables(data_dir).items():
        ids = (arrays_dir / f"{name}_ids.txt").read_text().split()
        if ids != table["participant_id"].astype(str).tolist():
            raise ValueError(f"{arrays_dir / name}.npy does not hold the subjects of {data_dir} "
                             "in order; rerun the cohort stage")
        images = np.load(arrays_dir / f"{name}.npy", mmap_mode="r")  # (N, 1, X, Y, Z)
        out[name] = Cohort(io.center_crop(images, io.resolve_crop(crop, images.shape[-3:])), table)
    return out
