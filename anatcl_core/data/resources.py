"""OpenBHB's FreeSurfer tables as NeuroSpin publishes them: per-split CSVs named by ``resource/``.

The current release (the Hugging Face dataset that ``nidl.datasets.OpenBHB`` streams) holds::

    <root>/resource/freesurfer_channels.txt                 one channel name a line
    <root>/resource/freesurfer_atlas-desikan_labels.txt      one region name a line (lh-..., rh-...)
    <root>/resource/freesurfer_atlas-destrieux_labels.txt    the same for the Destrieux atlas
    <root>/resource/resources.json                           {"desikan_roi": {"channels", "features"}, ...}
    <root>/resource/cat12vbm_space-MNI152_desc-gm_TPM.nii.gz the GM template of the VBM maps' grid
    <root>/resource/neuromorphometrics.{nii,csv}             CAT12's ROI atlas and its labels (';', ROIabbr)
    <root>/{train,val}/derivatives/freesurfer_roi/desikan_roi_features.csv

Each CSV row is ``participant_id, session`` then the ``(7, 68)`` table flattened channel-major
(``row.reshape(7, 68)``, channel and region order as ``resource/`` names them). Older copies hold
per-subject ``.npy`` tables instead (:data:`layout.DESIKAN_KIND`), without ``resource/``: their
order is OpenBHB's documented one (:data:`anatcl_core.data.freesurfer.CHANNELS`, ``DESIKAN_COLUMNS``).
The release's ``resources.json`` (NeuroSpin's ``compile_resources``) has one entry per modality
(``vbm``, ``quasiraw``, ``vbm_roi``, ``desikan_roi``, ``destrieux_roi``, ``xhemi``), each with
``shape``, ``features`` and ``channels``; only ``desikan_roi`` is read here.

:func:`table_order` turns whatever names a root declares into the permutation to that canonical
order, so every reader gets CT/GMV/SA by name and a root that names a channel or region we do not
know, or leaves one out, is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.atomic import atomic_write, write_text
from anatcl_core.data import layout
from anatcl_core.data.files import PANDAS_ERRORS, one_line, read_csv, read_json, read_npy, read_text
from anatcl_core.data.freesurfer import CHANNELS, DESIKAN_COLUMNS, PUBLISHED_CHANNELS, canonical_channel

RESOURCE_DIR = "resource"
CHANNELS_FILE = "freesurfer_channels.txt"
DESIKAN_LABELS_FILE = "freesurfer_atlas-desikan_labels.txt"
DESTRIEUX_LABELS_FILE = "freesurfer_atlas-destrieux_labels.txt"
RESOURCES_JSON = "resources.json"
#: The grey-matter template of the VBM maps, as nidl's ``OpenBHB.get_cat12_template`` reads it.
CAT12_TEMPLATE_FILE = "cat12vbm_space-MNI152_desc-gm_TPM.nii.gz"
#: The Neuromorphometrics atlas and its label table (``;``-separated, ``ROIabbr`` column), as nidl's
#: ``OpenBHB.get_neuromorphometrics_atlas`` reads them.
NEUROMORPHOMETRICS_ATLAS_FILE = "neuromorphometrics.nii"
NEUROMORPHOMETRICS_LABELS_FILE = "neuromorphometrics.csv"
#: Per-split Desikan table, relative to ``<root>/{train,val}``.
DESIKAN_CSV = Path("derivatives") / "freesurfer_roi" / "desikan_roi_features.csv"


class ResourceError(ValueError):
    """A root's ``resource/`` names or ROI tables are missing, unknown or inconsistent."""


def roi_csv_path(root: str | Path, folder: str) -> Path:
    """``<root>/<folder>/derivatives/freesurfer_roi/desikan_roi_features.csv`` (folder: train or val)."""
    return Path(root) / folder / DESIKAN_CSV


def csv_folders(root: str | Path, splits: Sequence[str] = layout.SPLITS) -> list[str] | None:
    """The split folders whose CSVs hold ``splits``' tables, or None when any of them is missing.

    None means the root holds per-subject ``.npy`` tables (an older copy) for those splits.
    """
    folders = sorted({layout.SPLIT_FOLDER[s] for s in splits})
    return folders if all(roi_csv_path(root, f).is_file() for f in folders) else None


def _read_lines(path: Path) -> tuple[str, ...]:
    text = read_text(path, "one Desikan name a line (UTF-8 text)", ResourceError)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def declared_names(root: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(channel names, region names)`` a root's ``resource/`` declares, or None without ``resource/``.

    The text files and ``resources.json`` must agree where both are present.

    Raises:
        ResourceError: ``resource/`` exists but names no channels or regions, or its files disagree.
    """
    folder = Path(root) / RESOURCE_DIR
    if not folder.is_dir():
        return None
    files = {"channels": CHANNELS_FILE, "features": DESIKAN_LABELS_FILE}
    found: dict[str, dict[str, tuple[str, ...]]] = {"channels": {}, "features": {}}
    for key, name in files.items():
        if (folder / name).is_file():
            found[key][name] = _read_lines(folder / name)
    if (folder / RESOURCES_JSON).is_file():
        content = read_json(folder / RESOURCES_JSON, "a JSON object with desikan_roi", ResourceError)
        desikan = content.get("desikan_roi", {}) if isinstance(content, dict) else None
        if not isinstance(desikan, dict):
            raise ResourceError(f"{folder / RESOURCES_JSON}: not a JSON object with a desikan_roi object")
        for key in found:
            if desikan.get(key) and not isinstance(desikan[key], list):
                raise ResourceError(f"{folder / RESOURCES_JSON}: desikan_roi.{key} is no list; expected a list of names")
            if desikan.get(key):
                found[key][f"{RESOURCES_JSON} desikan_roi.{key}"] = tuple(str(n) for n in desikan[key])
    names = []
    for key, sources in found.items():
        if not sources:
            expected = f"{files[key]} or {RESOURCES_JSON} desikan_roi.{key}"
            raise ResourceError(f"{folder}: no Desikan {key} names (expected {expected})")
        (first, values), *others = sources.items()
        for other, other_values in others:
            if other_values != values:
                raise ResourceError(f"{folder}: {first} and {other} name different Desikan {key}")
        names.append(values)
    return names[0], names[1]


def table_order(root: str | Path) -> tuple[list[int], list[int]]:
    """Row and column permutations from a root's tables to the canonical (7, 68) order.

    ``table[..., rows, :][..., cols]`` puts :data:`CHANNELS` rows and :data:`DESIKAN_COLUMNS`
    columns in order. Identity for a root without ``resource/``.

    Raises:
        ResourceError: a name is unknown, a canonical channel or region is missing, or repeated.
    """
    declared = declared_names(root)
    if declared is None:
        return list(range(len(CHANNELS))), list(range(len(DESIKAN_COLUMNS)))
    where = Path(root) / RESOURCE_DIR
    channels, regions = declared
    try:
        canonical = [canonical_channel(n) for n in channels]
    except KeyError as err:
        raise ResourceError(f"{where}: {err.args[0]}") from None
    published = dict(zip(CHANNELS, PUBLISHED_CHANNELS))
    rows = _order(canonical, CHANNELS, where, "channel", shown=published)
    return rows, _order(list(regions), DESIKAN_COLUMNS, where, "region")


def _order(names: list[str], expected: Sequence[str], where: Path, what: str,
           shown: dict[str, str] | None = None) -> list[int]:  # fmt: skip
    """Index in ``names`` of each ``expected`` name; ``shown`` renames names in the message."""
    unknown = [n for n in names if n not in expected]
    missing = [(shown or {}).get(n, n) for n in expected if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ResourceError(
            f"{where}: Desikan {what} names do not match the expected {len(expected)} "
            f"(unknown {unknown[:3]}, missing {missing[:3]}, {len(names) - len(set(names))} repeated)"
        )
    return [names.index(n) for n in expected]


def load_roi_file(path: str | Path) -> np.ndarray:
    """A per-subject ROI ``.npy`` as stored, a leading singleton axis dropped (``(1, 7, R)`` -> ``(7, R)``).

    Unchecked, for the validator to report what is wrong; readers use :func:`read_roi_table`.

    Raises:
        ResourceError: naming the file, if it is no regular file or numpy cannot read it.
    """
    table = read_npy(path, "a (7, R) FreeSurfer ROI table in .npy", ResourceError)
    return table[0] if table.ndim == 3 and table.shape[0] == 1 else table


def read_roi_table(path: str | Path) -> np.ndarray:
    """A per-subject FreeSurfer ROI ``.npy`` as a ``(7, R)`` float32 table, in the file's order.

    The one reader of an ROI table file: OpenBHB's per-subject tables and a manifest's ``roi``.

    Raises:
        ValueError: naming the file, if it is not one ``(7, R)`` table.
    """
    table = load_roi_file(path)
    if table.ndim != 2 or table.shape[0] != len(CHANNELS):
        raise ValueError(f"{path}: ROI table of shape {table.shape}; expected (7, R)")
    if table.dtype.kind not in "biuf":  # strings, voids, dates: numpy's own refusal would not name the file
        raise ResourceError(f"{path}: ROI table of dtype {table.dtype}; expected numbers")
    return np.asarray(table, dtype=np.float32)


def stack_roi_tables(tables, where) -> np.ndarray:
    """``(N, 7, R)``: per-subject tables stacked, every one the shape most of them have.

    Args:
        tables: the subjects' ``(7, R)`` tables, in order.
        where: subject index -> the file (or id) a table came from, for the message.

    Raises:
        ResourceError: naming the first table whose shape differs from the most common one
            (numpy's own error names no file).
    """
    tables = list(tables)
    shapes = [t.shape for t in tables]
    usual = max(dict.fromkeys(shapes), key=shapes.count) if shapes else None  # ties: the first seen
    for i, shape in enumerate(shapes):
        if shape != usual:
            raise ResourceError(f"{where(i)}: ROI table of shape {shape}; the cohort's other tables are "
                                f"{usual} ({shapes.count(usual)} of {len(shapes)})")
    return np.stack(tables) if tables else np.zeros((0, len(CHANNELS), len(DESIKAN_COLUMNS)), np.float32)


def read_roi_csv(path: str | Path, n_channels: int = len(CHANNELS)) -> tuple[list[str], np.ndarray]:
    """One ROI CSV as ``(participant_ids, tables (N, n_channels, R))`` in the file's own order.

    Every column other than ``participant_id`` / ``session`` (and an unnamed index) is a value, in
    file order; each row is the **channel-major** flattening of the ``(7, R)`` table, i.e.
    ``row.reshape(7, R)`` in C order (all regions of channel 0, then channel 1, ...), as nidl reads it.

    Raises:
        ValueError: no ``participant_id`` column, a value count not divisible by ``n_channels``,
            or duplicate ids.
    """
    sniff = not str(path).endswith(".csv")  # the release's .csv are comma-separated; sniff anything else
    frame = read_csv(path, "an OpenBHB ROI CSV (participant_id, session, values)", ResourceError,
                     sep=None if sniff else ",", engine="python" if sniff else "c", dtype={"participant_id": str})
    if "participant_id" not in frame.columns:
        raise ValueError(f"{path}: expected a 'participant_id' column, got {list(frame.columns)[:5]}")
    # ids as written: pandas would read an id "NULL" or "NA" as missing (the values keep its NA rules)
    frame["participant_id"] = read_csv(path, "an OpenBHB ROI CSV (participant_id, session, values)", ResourceError,
                                       sep=None if sniff else ",", engine="python" if sniff else "c",
                                       usecols=["participant_id"], dtype=str, keep_default_na=False)["participant_id"]
    if frame.empty:
        raise ResourceError(f"{path}: header only, no rows; expected one row per participant")
    meta = {"participant_id", "session"} | {c for c in frame.columns if str(c).startswith("Unnamed")}
    try:
        values = frame[[c for c in frame.columns if c not in meta]].to_numpy(dtype=np.float32)
    except PANDAS_ERRORS as err:
        raise ResourceError(f"{path}: values that are not numbers ({one_line(err)}); expected an OpenBHB ROI CSV") from None
    if values.shape[1] == 0 or values.shape[1] % n_channels:
        raise ValueError(f"{path}: {values.shape[1]} value columns; expected a multiple of {n_channels}")
    ids = frame["participant_id"].str.strip().tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate participant_id values")
    return ids, values.reshape(len(ids), n_channels, -1)  # (N, 7, R), C order = channel-major


def read_tables(root: str | Path, folder: str) -> dict[str, np.ndarray]:
    """A split folder's CSV as ``{participant_id: (7, 68) float32}`` in canonical order.

    Raises:
        ResourceError: names (see :func:`table_order`), or a row that is not 7 x 68 values.
    """
    rows, cols = table_order(root)
    path = roi_csv_path(root, folder)
    ids, tables = read_roi_csv(path)
    if tables.shape[1:] != (len(CHANNELS), len(DESIKAN_COLUMNS)):
        raise ResourceError(f"{path}: tables of shape {tables.shape[1:]}; expected (7, 68)")
    tables = tables[:, rows][:, :, cols]  # (N, 7, 68), canonical order
    return dict(zip(ids, tables))


def write_resources(
    root: str | Path,
    channels: Sequence[str] = PUBLISHED_CHANNELS,
    regions: Sequence[str] = DESIKAN_COLUMNS,
    destrieux: Sequence[str] | None = None,
) -> None:
    """Write ``resource/``'s names (text files and ``resources.json``): ``channels`` and Desikan ``regions``.

    ``destrieux``: also name the Destrieux regions (``freesurfer_atlas-destrieux_labels.txt`` and a
    ``destrieux_roi`` entry with those regions and the same ``channels``), the names nidl's
    ``get_fs_labels("destrieux")`` and ``get_fs_roi_feature_names`` read. That entry has no
    ``shape``: it names the atlas and the measures, it declares no table (a root that writes no
    ``destrieux_roi_features.csv`` must not say it holds ``(7, 148)`` tables). The other modalities'
    entries of the release (``vbm``, ``quasiraw``, ``vbm_roi``, ``xhemi``) are not written.
    """
    folder = Path(root) / RESOURCE_DIR
    write_text(folder / CHANNELS_FILE, "".join(f"{n}\n" for n in channels))
    write_text(folder / DESIKAN_LABELS_FILE, "".join(f"{n}\n" for n in regions))
    content = {"desikan_roi": {"shape": [-1, len(channels), len(regions)], "features": list(regions),
                               "channels": list(channels)}}  # fmt: skip
    if destrieux is not None:
        write_text(folder / DESTRIEUX_LABELS_FILE, "".join(f"{n}\n" for n in destrieux))
        content["destrieux_roi"] = {"features": list(destrieux), "channels": list(channels)}
    write_text(folder / RESOURCES_JSON, json.dumps(content, indent=2) + "\n")


def write_tables(
    path: str | Path,
    ids: Sequence[str],
    tables: np.ndarray,
    channels: Sequence[str] = PUBLISHED_CHANNELS,
    regions: Sequence[str] = DESIKAN_COLUMNS,
) -> None:
    """Write ``(N, 7, R)`` tables (rows in ``channels`` order) as one OpenBHB ROI CSV, channel-major."""
    tables = np.asarray(tables, dtype=np.float32)
    columns = [f"{c}_{r}" for c in channels for r in regions]  # channel-major, like the values
    frame = pd.DataFrame(tables.reshape(len(ids), -1), columns=columns)
    frame.insert(0, "session", 1)
    frame.insert(0, "participant_id", list(ids))
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False)
