"""Each cohort of a ``data/`` folder read once and written as the cohort stage's arrays.

The only reader of ``data/`` in the pipeline besides the validator and the QC figures: the
cohort stage calls :func:`write_arrays` once validation passed; every later stage reads the
files it writes (:mod:`anatcl_core.data.arrays`).
"""

from __future__ import annotations

from pathlib import Path

from anatcl_core.data import layout
from anatcl_core.data.arrays import Cohort, write_cohort
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB

#: Manifest columns naming files under ``data/``: not carried into the arrays' tables.
PATH_COLUMNS: tuple[str, ...] = ("image", "roi")


def read_openbhb(root: str | Path, progress: bool = True) -> Cohort:
    """Every split of an OpenBHB root, uncropped float32 images (``table`` has a ``split`` column)."""
    dataset = OpenBHB(root, split=layout.SPLITS, crop=None)
    return Cohort(dataset.images(progress=progress), dataset.participants.copy(), dataset.descriptor_tables())


def read_manifest_cohort(manifest: str | Path, progress: bool = True) -> Cohort:
    """A downstream-style cohort from its ``manifest.tsv`` (or folder), uncropped float32 images."""
    dataset = ManifestDataset(manifest, crop=None)
    table = dataset.frame.drop(columns=list(PATH_COLUMNS))
    return Cohort(dataset.images(progress=progress), table, dataset.descriptor_tables())


def read_cohort(data_dir: str | Path, name: str, progress: bool = True) -> Cohort:
    """Cohort ``name`` of a ``data/`` folder, where :func:`layout.cohort_path` puts it."""
    path = layout.cohort_path(data_dir, name)
    return read_openbhb(path, progress) if name == "openbhb" else read_manifest_cohort(path, progress)


def write_arrays(data_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict[str, tuple]:
    """Stack every cohort present under ``data_dir`` into its files under ``out_dir``.

    Returns:
        ``{cohort: images shape}``.
    """
    return {name: write_cohort(out_dir, name, read_cohort(data_dir, name, progress))
            for name in layout.cohort_paths(data_dir)}
