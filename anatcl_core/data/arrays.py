"""The cohort stage's arrays: every cohort's images, table and FreeSurfer tables, written once.

The one road from ``data/`` to a tensor: the cohort stage validates ``data/`` and then stacks each
cohort once (:func:`anatcl_core.data.stacking.write_arrays`); pretraining, evaluation, the
reference rows and the report read only these files (:func:`load_cohort`, :func:`load_arrays`),
so validation gates every later stage and no later stage re-reads ``data/``. Reading ~2,500
compressed NIfTI maps costs ~10 s, more than encoding them; the images are memory-mapped. Per cohort (``openbhb``, ``downstream``, ``travelling``)::

    <cohort>.npy          (N, 1, X, Y, Z) float32 images, uncropped
    <cohort>.tsv          one row per image, same order: ids, age, sex, site, split or dx_/score_ columns
                          (participants.tsv / the manifest, less the manifest's file paths)
    <cohort>_columns.json the table's column dtypes, so it reads back exactly as it was written
    <cohort>_roi.npy      (N, 7, R) float32 FreeSurfer tables in canonical order (NaN: no ``roi``)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.atomic import atomic_open, atomic_write, write_text
from anatcl_core.data import io, layout
from anatcl_core.data.files import PANDAS_ERRORS, one_line, read_csv, read_json, read_npy


#: dtype names (as ``str(dtype)`` spells them) of text columns: read as text, never parsed as numbers.
TEXT_DTYPES: tuple[str, ...] = ("object", "str", "string")
#: What the cohort stage writes, as the errors name it.
EXPECTED = "the cohort stage's arrays (rerun the cohort stage)"


class ArraysError(ValueError):
    """A file of the cohort stage's arrays that cannot be read back (damaged, or not what it wrote)."""


@dataclass
class Cohort:
    """Images ``(N, 1, X, Y, Z)``, one table row and one ``(7, R)`` FreeSurfer table per subject (same order)."""

    images: np.ndarray
    table: pd.DataFrame
    descriptors: np.ndarray

    def has_descriptors(self) -> np.ndarray:
        """``(N,)`` bool: subjects with a FreeSurfer table (a manifest row without ``roi`` has none)."""
        return ~np.isnan(self.descriptors).all(axis=(1, 2))


def files(arrays_dir: str | Path, name: str) -> dict[str, Path]:
    """The four files of cohort ``name`` under ``arrays_dir`` (module docstring)."""
    arrays_dir = Path(arrays_dir)
    return {"images": arrays_dir / f"{name}.npy", "table": arrays_dir / f"{name}.tsv",
            "columns": arrays_dir / f"{name}_columns.json", "descriptors": arrays_dir / f"{name}_roi.npy"}


def write_cohort(arrays_dir: str | Path, name: str, cohort: Cohort) -> tuple[int, ...]:
    """Write ``cohort`` as ``name``'s files under ``arrays_dir``, each atomically; returns the images' shape."""
    paths = files(arrays_dir, name)
    for key, array in (("images", cohort.images), ("descriptors", cohort.descriptors)):
        with atomic_open(paths[key]) as handle:  # a handle: np.save would add ".npy" to the temp name
            np.save(handle, array.astype(np.float32, copy=False))
    with atomic_write(paths["table"]) as tmp:
        cohort.table.to_csv(tmp, sep="\t", index=False)
    dtypes = {str(column): str(dtype) for column, dtype in cohort.table.dtypes.items()}
    write_text(paths["columns"], json.dumps(dtypes, indent=1) + "\n")
    return tuple(cohort.images.shape)


def load_table(arrays_dir: str | Path, name: str) -> pd.DataFrame:
    """Cohort ``name``'s table, with the dtypes it was written with.

    Raises:
        FileNotFoundError: naming the missing file (the cohort stage has not run, or failed validation).
        ArraysError: naming a file that is damaged or does not hold what the cohort stage wrote.
    """
    paths = files(arrays_dir, name)
    for key in ("table", "columns"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"{paths[key]}: not found; expected the cohort stage's arrays "
                                    "(run the cohort stage; it writes them once validation passes)")
    dtypes = read_json(paths["columns"], f"{{column: dtype}} of {EXPECTED}", ArraysError)
    if not isinstance(dtypes, dict) or not all(isinstance(d, str) for d in dtypes.values()):
        raise ArraysError(f"{paths['columns']}: {type(dtypes).__name__}; expected {{column: dtype}} of {EXPECTED}")
    text = {c: str for c, d in dtypes.items() if d in TEXT_DTYPES}  # "0012" stays "0012"
    table = read_csv(paths["table"], f"a table of {EXPECTED}", ArraysError,
                     sep="\t", dtype=text, keep_default_na=False, na_values=[""])
    try:
        return table.astype(dtypes)
    except (*PANDAS_ERRORS, KeyError) as err:  # KeyError: a column of the JSON not in the table
        raise ArraysError(f"{paths['table']}: columns do not match {paths['columns'].name} "
                          f"({one_line(err)}); expected {EXPECTED}") from None


def load_cohort(arrays_dir: str | Path, name: str, crop=None) -> Cohort:
    """Memory-map cohort ``name``'s images, centre-cropped to ``crop``, with its tables.

    Raises:
        FileNotFoundError: a file is missing (see :func:`load_table`).
        ArraysError: a damaged file, or the files disagree on the number of subjects (rerun the cohort stage).
    """
    paths = files(arrays_dir, name)
    table = load_table(arrays_dir, name)
    for key in ("images", "descriptors"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"{paths[key]}: not found; expected the cohort stage's arrays")
    images = read_npy(paths["images"], f"(N, 1, X, Y, Z) images of {EXPECTED}", ArraysError, mmap_mode="r")
    descriptors = read_npy(paths["descriptors"], f"(N, 7, R) ROI tables of {EXPECTED}", ArraysError)
    for key, array, ndim in (("images", images, 5), ("descriptors", descriptors, 3)):
        if array.ndim != ndim:
            raise ArraysError(f"{paths[key]}: shape {array.shape}; expected {ndim} axes ({EXPECTED})")
    if not len(images) == len(descriptors) == len(table):
        raise ArraysError(f"{paths['images']}: {len(images)} images, {len(descriptors)} ROI tables and "
                         f"{len(table)} table rows; expected one each per subject (rerun the cohort stage)")
    return Cohort(io.center_crop(images, io.resolve_crop(crop, images.shape[-3:])), table, descriptors)


def cohort_names(arrays_dir: str | Path) -> list[str]:
    """The cohorts of ``arrays_dir``: the required ones always (loading says if missing), the others if written."""
    return [name for name in layout.COHORT_DIRS
            if name in layout.REQUIRED_COHORTS or files(arrays_dir, name)["table"].is_file()]


def load_arrays(arrays_dir: str | Path, crop=None) -> dict[str, Cohort]:
    """Every cohort of ``arrays_dir`` (:func:`cohort_names`, :func:`load_cohort`)."""
    return {name: load_cohort(arrays_dir, name, crop) for name in cohort_names(arrays_dir)}
