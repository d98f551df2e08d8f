"""Downstream cohorts described by a ``manifest.tsv`` (what a CAT12 user has).

Columns (:data:`layout.MANIFEST_COLUMNS`): ``participant_id, image, age, sex, site, roi`` then any
``dx_<task>`` (1 case, 0 control, empty = not in the task) and ``score_<name>`` (numeric, empty =
missing). ``image`` (``.nii``, ``.nii.gz`` or ``.npy``) and ``roi`` (``(7, 68)`` ``.npy``, may be
empty) are relative to the manifest's folder or absolute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from anatcl_core.data import io, layout
from anatcl_core.data.freesurfer import CHANNELS, DEFAULT_CHANNELS, select_channels
from anatcl_core.data.openbhb import encode_sex
from anatcl_core.data.resources import read_roi_table, stack_roi_tables
from anatcl_core.data.tables import check_tsv


class ManifestError(ValueError):
    """A manifest misses a column, repeats an id or has an empty image entry."""


def manifest_file(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/manifest.tsv``."""
    path = Path(path)
    return path / layout.MANIFEST_FILE if path.is_dir() else path


def task_columns(frame: pd.DataFrame) -> list[str]:
    """The ``dx_<task>`` columns, in file order."""
    return [c for c in frame.columns if str(c).startswith(layout.DX_PREFIX)]


def score_columns(frame: pd.DataFrame) -> list[str]:
    """The ``score_<name>`` columns, in file order."""
    return [c for c in frame.columns if str(c).startswith(layout.SCORE_PREFIX)]


def _resolve(value: object, folder: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        return ""
    path = Path(value.strip())
    return str(path if path.is_absolute() else folder / path)


def read_manifest_raw(path: str | Path) -> pd.DataFrame:
    """The manifest as written (ids and paths as str, empty cells ``""``), columns unchecked."""
    path = manifest_file(path)
    if not path.exists():  # a FIFO or a device is refused by check_tsv, never opened
        raise FileNotFoundError(f"{path}: manifest not found")
    check_tsv(path)  # header plus rows of its width (TableError names the line)
    text_columns = {"participant_id": str, "image": str, "roi": str, "site": str}
    frame = pd.read_csv(path, sep="\t", dtype=text_columns, keep_default_na=False, na_values={})
    return frame


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and check a manifest; ``image`` / ``roi`` become absolute paths (``""`` if empty).

    ``dx_*`` and ``score_*`` become float (NaN where empty); ``sex`` int codes (0/1).

    Raises:
        FileNotFoundError: no manifest.
        ManifestError: missing column, duplicate or empty id, empty image, non-numeric label.
    """
    path = manifest_file(path)
    frame = read_manifest_raw(path)
    missing = [c for c in layout.MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; expected {layout.MANIFEST_COLUMNS}")
    ids = frame["participant_id"].str.strip()
    if (ids == "").any():
        raise ManifestError(f"{path}: empty participant_id in row(s) {list(np.flatnonzero(ids == '') + 1)}")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise ManifestError(f"{path}: duplicate participant_id {duplicated}")
    frame["participant_id"] = ids
    folder = path.parent.resolve()
    frame["image"] = [_resolve(v, folder) for v in frame["image"]]
    frame["roi"] = [_resolve(v, folder) for v in frame["roi"]]
    empty = frame.loc[frame["image"] == "", "participant_id"].tolist()
    if empty:
        raise ManifestError(f"{path}: empty image path for participant(s) {empty}")
    for column in ["age", *task_columns(frame), *score_columns(frame)]:
        values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
        bad = values.isna() & (frame[column].astype(str).str.strip() != "")
        if bad.any():
            raise ManifestError(f"{path}: non-numeric {column} {frame.loc[bad, column].iloc[0]!r}")
        frame[column] = values.astype(float)
    frame["sex"] = encode_sex(frame["sex"], f"{path} column sex")
    return frame


class ManifestDataset(Dataset):
    """A downstream cohort as a PyTorch dataset (images read lazily in ``__getitem__``).

    Args:
        path: ``manifest.tsv`` or its folder.
        crop: as :class:`anatcl_core.data.openbhb.OpenBHB` (``"upstream"``, ``(x, y, z)`` or None).
        channels: descriptors returned when ``roi`` is set (``descriptors`` (C, 68); NaN if empty).

    Item: ``dict(image (1, X, Y, Z) float32, participant_id, age, sex, site, descriptors, and one
    float per dx_/score_ column (NaN where empty))``.
    """

    def __init__(
        self,
        path: str | Path,
        crop: str | Sequence[int] | None = "upstream",
        channels: Sequence[str] = DEFAULT_CHANNELS,
    ) -> None:
        self.path = manifest_file(path)
        self.frame = read_manifest(self.path)
        self.crop = crop
        self.channels = tuple(channels)
        self.labels = task_columns(self.frame) + score_columns(self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    def volume(self, index: int) -> np.ndarray:
        """Cropped float32 ``(X, Y, Z)`` image of subject ``index``."""
        volume, _ = io.load_volume(self.frame["image"].iloc[index], mmap=True)
        return np.array(io.center_crop(volume, io.resolve_crop(self.crop, volume.shape)), dtype=np.float32)

    def descriptor_table(self, index: int) -> np.ndarray:
        """``(7, 68)`` raw ROI table, NaN-filled when the manifest gives no ``roi``."""
        roi = self.frame["roi"].iloc[index]
        if not roi:
            return np.full((len(CHANNELS), 68), np.nan, dtype=np.float32)
        return read_roi_table(roi)

    def descriptor_tables(self) -> np.ndarray:
        """``(N, 7, R)`` raw ROI tables of every subject (NaN rows where the manifest gives no ``roi``)."""
        return stack_roi_tables((self.descriptor_table(i) for i in range(len(self))),
                                lambda i: self.frame["roi"].iloc[i] or f"row {i + 1} (no roi: NaN)")

    def images(self, dtype: type = np.float32, progress: bool = True, workers: int | None = None) -> np.ndarray:
        """Every image, cropped, stacked ``(N, 1, X, Y, Z)``.

        ``workers``: decoding threads (None: the usable cores); the same bytes for any count.
        """
        return io.stack_volumes(len(self), self.volume, dtype, workers, progress,
                                where=lambda i: self.frame["image"].iloc[i])

    def __getitem__(self, index: int) -> dict:
        row = self.frame.iloc[index]
        item = {
            "image": torch.from_numpy(self.volume(index)[None]),  # (1, X, Y, Z)
            "participant_id": str(row["participant_id"]),
            "age": float(row["age"]),
            "sex": int(row["sex"]),
            "site": str(row["site"]),
            "descriptors": torch.from_numpy(select_channels(self.descriptor_table(index), self.channels)),
        }
        item.update({column: float(row[column]) for column in self.labels})
        return item
