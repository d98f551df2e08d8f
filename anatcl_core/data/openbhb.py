"""OpenBHB reader for both published layouts (a local OpenBHB copy or the synthetic cohort).

Layout and file kinds: :mod:`anatcl_core.data.layout`. FreeSurfer tables come from the per-split
CSVs when the root holds them (the current release), else from per-subject ``.npy`` files (older
copies); channel and region names come from ``resource/`` when present
(:mod:`anatcl_core.data.resources`), so CT/GMV/SA are selected by the names the root declares. Images are memory-mapped
(``np.load(mmap_mode="r")``) and read lazily in ``__getitem__`` (torchio's pattern), or stacked once
into a compact in-memory array with :meth:`OpenBHB.images` for fast CPU training. Images are raw
modulated GM values (upstream applies no intensity rescaling), centre-cropped along the second
axis to upstream's ``(121, 128, 121)`` (at the grid's voxel size) by default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from anatcl_core.data import io, layout, resources
from anatcl_core.data.freesurfer import CHANNELS, DEFAULT_CHANNELS, select_channels
from anatcl_core.data.resources import read_roi_csv  # noqa: F401  (public here since the first release)
from anatcl_core.data.tables import check_tsv

log = logging.getLogger(__name__)

#: Columns the readers need from ``participants.tsv`` (the others are kept, not required).
REQUIRED_PARTICIPANT_COLUMNS: tuple[str, ...] = ("participant_id", "age", "sex", "site", "split")
#: Text sex labels -> code. Numeric 0/1 columns are used as they are.
#: The project's one sex coding, as the synthetic cohort writes it: 1 male, 0 female.
SEX_CODES: dict[str, int] = {"0": 0, "1": 1, "m": 1, "male": 1, "f": 0, "female": 0}


def encode_sex(values: pd.Series, where: str) -> np.ndarray:
    """Sex as int codes, 1 male and 0 female (text: m/male -> 1, f/female -> 0; numbers 0/1 kept).

    Raises:
        ValueError: naming ``where`` and the first unknown value.
    """
    text = values.astype(str).str.strip().str.lower().str.replace(r"\.0$", "", regex=True)
    codes = text.map(SEX_CODES)
    bad = codes.isna()
    if bad.any():
        raise ValueError(f"{where}: unknown sex value {values[bad].iloc[0]!r}; expected 0/1, M/F")
    return codes.to_numpy(dtype=np.int64)


def read_participants(root: str | Path) -> pd.DataFrame:
    """``<root>/participants.tsv`` with ``participant_id`` as str (leading zeros kept).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if a required column is missing or a split value is unknown.
    """
    path = Path(root) / layout.PARTICIPANTS_FILE
    if not path.exists():  # a FIFO or a device is refused by check_tsv, never opened
        raise FileNotFoundError(f"{path}: participants.tsv not found (expected an OpenBHB root)")
    check_tsv(path)  # header plus rows of its width (TableError names the line)
    frame = pd.read_csv(path, sep="\t", dtype={"participant_id": str, "split": str})
    if "participant_id" in frame.columns:  # ids as written: pandas would read an id "NA" or "null" as missing
        frame["participant_id"] = pd.read_csv(path, sep="\t", usecols=["participant_id"], dtype=str,
                                              keep_default_na=False)["participant_id"]
    missing = [c for c in REQUIRED_PARTICIPANT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {layout.PARTICIPANTS_COLUMNS}")
    unknown = sorted(set(frame["split"].dropna()) - set(layout.SPLITS))
    if unknown or frame["split"].isna().any():
        raise ValueError(f"{path}: unknown split value(s) {unknown or ['<empty>']}; expected {layout.SPLITS}")
    return frame


class OpenBHB(Dataset):
    """OpenBHB (per-subject layout) as a PyTorch dataset.

    Args:
        root: folder holding ``participants.tsv`` and ``train/`` / ``val/``.
        split: ``"train"``, ``"internal_test"``, ``"external_test"`` or a sequence of them.
        crop: ``"upstream"`` (:func:`io.resolve_crop`), an explicit ``(x, y, z)`` or None.
        channels: FreeSurfer descriptors returned per item, by name (``("CT", "GMV", "SA")``).
        in_memory: stack every image once (:meth:`images`) instead of reading lazily.
        roi_csv: ROI CSV(s) to use instead of what the root holds (default: the root's per-split
            CSVs when it has them for every selected split, else the per-subject ``.npy`` tables).
        dtype: in-memory dtype (``np.float32`` or ``np.float16``); items are always float32.

    An item is ``dict(image (1, X, Y, Z) float32, age float, sex int, site, descriptors (C, 68)
    float32 raw, participant_id str)``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] = "train",
        crop: str | Sequence[int] | None = "upstream",
        channels: Sequence[str] = DEFAULT_CHANNELS,
        in_memory: bool = False,
        roi_csv: str | Path | Sequence[str | Path] | None = None,
        dtype: type = np.float32,
    ) -> None:
        self.root = Path(root)
        splits = (split,) if isinstance(split, str) else tuple(split)
        if not splits or any(s not in layout.SPLITS for s in splits):
            raise ValueError(f"split must be one or more of {layout.SPLITS}, got {split!r}")
        frame = read_participants(self.root)
        self.participants = frame[frame["split"].isin(splits)].reset_index(drop=True)
        if self.participants.empty:
            raise ValueError(f"{self.root}: no participant in split(s) {splits}")
        self.splits = splits
        self.crop = crop
        self.channels = tuple(channels)
        select_channels(np.zeros((len(CHANNELS), 1)), self.channels)  # fail early on a bad name
        self.sex = encode_sex(self.participants["sex"], f"{self.root / layout.PARTICIPANTS_FILE}")
        self._rows, self._cols = resources.table_order(self.root)  # file order -> canonical (7, 68)
        self._roi_csv = self._read_roi_csvs(roi_csv) if roi_csv is not None else self._root_csvs()
        self._images = self.images(dtype=dtype) if in_memory else None

    def __len__(self) -> int:
        return len(self.participants)

    def path(self, index: int, kind: str = layout.VBM_KIND) -> Path:
        """File of subject ``index`` for a derivative ``kind``."""
        row = self.participants.iloc[index]
        return layout.subject_file(self.root, row["split"], row["participant_id"], kind)

    def _volume(self, index: int) -> np.ndarray:
        volume, _ = io.load_volume(self.path(index), mmap=True)  # (X, Y, Z) memory map
        return io.center_crop(volume, io.resolve_crop(self.crop, volume.shape))

    def descriptor_table(self, index: int) -> np.ndarray:
        """Full ``(7, 68)`` FreeSurfer table of subject ``index`` (float32, raw)."""
        if self._roi_csv is not None:
            pid = self.participants["participant_id"].iloc[index]
            if pid not in self._roi_csv:
                raise KeyError(f"participant {pid} not in the ROI CSV(s)")
            return self._roi_csv[pid]
        table = resources.read_roi_table(self.path(index, layout.DESIKAN_KIND))  # (7, R) float32
        if table.shape[1] == len(self._cols):
            table = table[self._rows][:, self._cols]  # the root's names -> canonical order
        return table

    def descriptor_tables(self) -> np.ndarray:
        """``(N, 7, 68)`` tables of the selected split(s), for fitting the descriptor normaliser."""
        return resources.stack_roi_tables((self.descriptor_table(i) for i in range(len(self))), self._roi_source)

    def _roi_source(self, index: int) -> str:
        """Where subject ``index``'s ROI table comes from (messages)."""
        if self._roi_csv is not None:
            return f"participant {self.participants['participant_id'].iloc[index]} of the ROI CSV(s)"
        return str(self.path(index, layout.DESIKAN_KIND))

    def images(self, dtype: type = np.float32, progress: bool = True, workers: int | None = None) -> np.ndarray:
        """Every selected image, cropped, stacked: ``(N, 1, X, Y, Z)`` of ``dtype``.

        ``workers``: decoding threads (None: the usable cores); the same bytes for any count.
        """
        return io.stack_volumes(len(self), self._volume, dtype, workers, progress, where=self.path)

    def __getitem__(self, index: int) -> dict:
        row = self.participants.iloc[index]
        if self._images is not None:
            image = torch.from_numpy(self._images[index].astype(np.float32))
        else:
            image = torch.from_numpy(np.array(self._volume(index), dtype=np.float32)[None])
        site = row["site"]
        return {
            "image": image,  # (1, X, Y, Z)
            "age": float(row["age"]),
            "sex": int(self.sex[index]),
            "site": site.item() if hasattr(site, "item") else site,
            "descriptors": torch.from_numpy(select_channels(self.descriptor_table(index), self.channels)),
            "participant_id": str(row["participant_id"]),
        }

    def _read_roi_csvs(self, paths: str | Path | Sequence[str | Path]) -> dict[str, np.ndarray]:
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        tables: dict[str, np.ndarray] = {}
        for path in paths:
            ids, values = read_roi_csv(path)
            if values.shape[2] == len(self._cols):
                values = values[:, self._rows][:, :, self._cols]  # canonical order
            tables.update(zip(ids, values))
        return tables

    def _root_csvs(self) -> dict[str, np.ndarray] | None:
        """The root's per-split CSV tables keyed by this reader's ids, or None (per-subject files)."""
        folders = resources.csv_folders(self.root, self.splits)
        if folders is None:
            return None
        tables: dict[str, np.ndarray] = {}
        for folder in folders:
            tables.update(resources.read_tables(self.root, folder))
        # nidl and the release store ids as integers: "0012" in participants.tsv is 12 in a CSV
        by_number = {int(k): v for k, v in tables.items() if k.isdigit()}
        found: dict[str, np.ndarray] = {}
        for pid in self.participants["participant_id"]:
            table = tables.get(pid, by_number.get(int(pid)) if pid.isdigit() else None)
            if table is not None:
                found[pid] = table
        return found
