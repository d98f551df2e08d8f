"""Bad-input corpus, part 1: images, manifests, OpenBHB tables and command-line arguments.

Each case builds its bad input in a fresh folder, runs ``anatcl validate`` or ``anatcl embed``
in-process (``anatcl_core.cli.main.main``) and asserts a clean refusal (:mod:`refusal`): non-zero
status, one line naming the input and the problem, no traceback, the folder unchanged. A few
cases at the end run a real subprocess (exit codes, signals, stderr without a traceback).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import brain_volume, roi_table, write_manifest, write_openbhb
from refusal import assert_read_refused, assert_refused, run_cli, snapshot
from test_weights import small_checkpoint

from anatcl_core.data import layout

REPO = Path(__file__).resolve().parent.parent
VOXEL = 9.0
SHAPE = layout.grid_shape(VOXEL)  # (21, 25, 21)
AFFINE = layout.grid_affine(VOXEL)


def good_volume(seed: int = 0) -> np.ndarray:
    return brain_volume(SHAPE, np.random.default_rng(seed))


def nifti_bytes(array: np.ndarray, affine: np.ndarray = AFFINE, slope: float | None = None) -> bytes:
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    return image.to_bytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def stored_gzip(raw: bytes) -> bytes:
    """gzip with stored (uncompressed) deflate blocks: a flipped data bit still inflates."""
    return gzip.compress(raw, compresslevel=0, mtime=0)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def npy(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def validate(path: Path, *extra) -> list:
    return ["validate", path, "--no-progress", *extra]


# ------------------------------------------------------------------------------------ images
def _crc_flip(t):  # the deflate stream inflates; only gzip's CRC shows the changed voxel
    raw = nifti_bytes(good_volume())
    data = stored_gzip(raw)
    return validate(write(t / "crc.nii.gz", flip(data, len(data) - 8 - 200))), "crc.nii.gz", "CRC"


def _crc_trailer(t):
    data = stored_gzip(nifti_bytes(good_volume()))
    return validate(write(t / "trailer.nii.gz", flip(data, len(data) - 6))), "trailer.nii.gz", "CRC"


def _isize_trailer(t):
    data = stored_gzip(nifti_bytes(good_volume()))
    return validate(write(t / "isize.nii.gz", flip(data, len(data) - 2))), "isize.nii.gz", "length"


def _gz_truncated(t):
    data = gzip.compress(nifti_bytes(good_volume()))
    return validate(write(t / "cut.nii.gz", data[: len(data) // 2])), "cut.nii.gz", "cannot read"


def _gz_garbage(t):
    return validate(write(t / "junk.nii.gz", b"\x1f\x8b not really gzip")), "junk.nii.gz", "cannot read"


def _nii_truncated(t):
    raw = nifti_bytes(good_volume())
    return validate(write(t / "cut.nii", raw[: len(raw) // 2])), "cut.nii", "cannot read"


def _nii_header_garbage(t):
    return validate(write(t / "hdr.nii", b"\x00\x01" + os.urandom(398))), "hdr.nii", "not a NIfTI file"


def _nii_empty(t):
    return validate(write(t / "empty.nii", b"")), "empty.nii", "not a NIfTI file"


def _complex_nifti(t):
    volume = good_volume().astype(np.complex64)
    return validate(write(t / "cplx.nii.gz", gzip.compress(nifti_bytes(volume)))), "cplx.nii.gz", "complex"


def _complex128_nifti(t):
    volume = good_volume().astype(np.complex128)
    return validate(write(t / "c128.nii", nifti_bytes(volume))), "c128.nii", "complex"


def _int_nifti_unscaled(t):
    volume = (good_volume() * 100).astype(np.int16)
    return validate(write(t / "int.nii", nifti_bytes(volume))), "int.nii", "without a scale"


def _bool_npy(t):
    return validate(npy(t / "mask.npy", good_volume() > 0.3)), "mask.npy", "boolean"


def _complex_npy(t):
    return validate(npy(t / "cplx.npy", good_volume().astype(np.complex64))), "cplx.npy", "complex"


def _int_npy(t):
    return validate(npy(t / "int.npy", (good_volume() * 100).astype(np.int32))), "int.npy", "integer"


def _uint8_npy(t):
    return validate(npy(t / "u8.npy", (good_volume() * 255).astype(np.uint8))), "u8.npy", "integer"


def _object_npy(t):
    path = t / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return validate(path), "obj.npy", "cannot read"


def _npy_truncated(t):
    path = npy(t / "cut.npy", good_volume())
    path.write_bytes(path.read_bytes()[:1000])
    return validate(path), "cut.npy", "cannot read"


def _npy_bad_magic(t):
    return validate(write(t / "magic.npy", b"NOTNUMPY" + bytes(100))), "magic.npy", "cannot read"


def _npy_empty(t):
    return validate(write(t / "e.npy", b"")), "e.npy", "cannot read"


def _nan_voxels(t):
    volume = good_volume()
    volume[3, 3, 3] = np.nan
    return validate(npy(t / "nan.npy", volume)), "nan.npy", "NaN/Inf"


def _inf_voxels(t):
    volume = good_volume()
    volume[5, 5, 5] = np.inf
    return validate(write(t / "inf.nii.gz", gzip.compress(nifti_bytes(volume)))), "inf.nii.gz", "NaN/Inf"


def _all_zero(t):
    return validate(npy(t / "zero.npy", np.zeros(SHAPE, np.float32))), "zero.npy", "all voxels are zero"


def _t1_range(t):
    return validate(npy(t / "t1.npy", good_volume() * 1000)), "t1.npy", "intensity range"


def _negative(t):
    return validate(npy(t / "neg.npy", good_volume() - 1.0)), "neg.npy", "intensity range"


def _low_coverage(t):
    volume = np.zeros(SHAPE, np.float32)
    volume[10, 10, 10] = 0.5
    return validate(npy(t / "dot.npy", volume)), "dot.npy", "only"


def _series_4d(t):
    return validate(npy(t / "series.npy", np.stack([good_volume()] * 3, -1))), "series.npy", "one 3D volume"


def _plane_2d(t):
    return validate(npy(t / "plane.npy", good_volume()[0])), "plane.npy", "expected (7, 68)"


def _no_cat12_grid(t):
    return validate(npy(t / "odd.npy", np.ones((20, 20, 20), np.float32) * 0.5)), "odd.npy", "no CAT12 grid"


def _flipped(t):
    affine = AFFINE.copy()
    affine[0, 0] *= -1
    return validate(write(t / "flip.nii", nifti_bytes(good_volume(), affine))), "flip.nii", "orientation"


def _anisotropic(t):
    affine = AFFINE.copy()
    affine[2, 2] = 4.5
    return validate(write(t / "aniso.nii", nifti_bytes(good_volume(), affine))), "aniso.nii", "anisotropic"


def _origin(t):
    affine = AFFINE.copy()
    affine[:3, 3] += 30
    return validate(write(t / "origin.nii", nifti_bytes(good_volume(), affine))), "origin.nii", "origin"


def _qform_sform(t):  # issue 23: the qform flipped in x and shifted 40 mm, the sform CAT12's
    image = nib.Nifti1Image(good_volume(), AFFINE)
    image.set_sform(AFFINE, code=2)
    qform = AFFINE.copy()
    qform[0, 0] *= -1
    qform[:3, 3] += (40, 0, 0)
    image.set_qform(qform, code=1)
    path = write(t / "forms.nii.gz", gzip.compress(image.to_bytes()))
    return validate(path), "forms.nii.gz", "qform (code 1) and sform (code 2) disagree"


def _series_4d_nifti(t):  # the header alone refuses it (memory: test_a_4d_map_is_refused_from_its_header)
    return validate(write(t / "series.nii", nifti_bytes(np.stack([good_volume()] * 3, -1)))), "series.nii", \
        "got shape (21, 25, 21, 3)"


def _too_many_voxels(t):
    path = t / "huge.nii"
    header = nib.Nifti1Header()
    header.set_data_shape((300, 300, 300))
    header.set_data_dtype(np.float32)
    write(path, header.binaryblock + bytes(4))  # the header is all there is: nothing else is read
    return validate(path), "huge.nii", "27000000 voxels"


def _special_file(make, name: str, problem: str):
    """A map name that is a link to a FIFO or a device: refused from ``stat``, never opened."""
    def case(t):
        target = make(t.parent / f"{t.name}-special")
        (t / name).symlink_to(target)  # snapshot() skips links: it never opens the target either
        return validate(t / name), name, problem
    return case


def _fifo(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    os.mkfifo(folder / "pipe")
    return folder / "pipe"


def _voxel_mismatch(t):
    return validate(npy(t / "g.npy", good_volume()), "--voxel-mm", "4.5"), "g.npy", "expected (41, 49, 41)"


def _missing_file(t):
    return validate(t / "absent.nii.gz"), "absent.nii.gz", "missing file"


def _unknown_suffix(t):
    return validate(write(t / "notes.txt", b"hello")), "notes.txt", "unknown file type"


def _empty_folder(t):
    (t / "scans").mkdir()
    return validate(t / "scans"), "scans", "holds no .nii"


def _folder_with_a_bad_map(t):  # validate takes a plain folder of maps, as embed does
    npy(t / "scans" / "good.npy", good_volume())
    npy(t / "scans" / "bad.npy", good_volume() > 0.5)
    return validate(t / "scans"), "bad.npy", "boolean"


# --------------------------------------------------------------------------------- manifests
def manifest(t: Path, n: int = 3, **kwargs) -> Path:
    return write_manifest(t / "cohort", voxel_mm=VOXEL, n=n, **kwargs)


def edit_lines(path: Path, edit) -> Path:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


def edit_frame(path: Path, edit) -> Path:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, sep="\t", index=False)
    return path


def _manifest_header_only(t):
    path = edit_lines(manifest(t), lambda lines: lines[:1])
    return validate(path), "manifest.tsv", "header only"


def _manifest_extra_field(t):
    path = edit_lines(manifest(t), lambda lines: lines[:2] + [lines[2] + "\t65.0"] + lines[3:])
    return validate(path), "manifest.tsv", "line 3: 9 field(s); the header has 8"


def _manifest_missing_field(t):
    path = edit_lines(manifest(t), lambda lines: lines[:3] + ["\t".join(lines[3].split("\t")[:-1])])
    return validate(path), "manifest.tsv", "line 4"


def _manifest_empty_file(t):
    path = manifest(t)
    path.write_text("")
    return validate(path), "manifest.tsv", "empty file"


def _manifest_not_utf8(t):
    path = manifest(t)
    path.write_bytes(path.read_bytes().replace(b"S0", b"\xe9S"))
    return validate(path), "manifest.tsv", "not UTF-8"


def _manifest_missing_column(t):
    path = edit_frame(manifest(t), lambda f: f.pop("image"))
    return validate(path), "manifest.tsv", "missing column(s) ['image']"


def _manifest_duplicate_id(t):
    def dup(f):
        f.loc[1, "participant_id"] = f.loc[0, "participant_id"]
    return validate(edit_frame(manifest(t), dup)), "sub-m0001", "duplicate participant_id"


def _manifest_empty_id(t):
    def empty(f):
        f.loc[1, "participant_id"] = ""
    return validate(edit_frame(manifest(t), empty)), "manifest.tsv", "line 3: empty participant_id"


def _manifest_cell(column: str, value: str, where: str = "sub-m0001", what: str | None = None):
    """A case: the first subject's ``column`` set to ``value``; refused naming ``where`` and ``what``."""
    def case(t):
        def edit(f):
            f.loc[0, column] = value
        return validate(edit_frame(manifest(t), edit)), where, what or f"{column} {value!r}"
    return case


def _manifest_duplicate_column(t):  # pandas would read the second as "age.1"
    path = edit_lines(manifest(t), lambda lines: [line + ("\tage" if i == 0 else "\t99") for i, line in enumerate(lines)])
    return validate(path), "manifest.tsv", "duplicate column name(s) ['age']"


def _manifest_id_control(pid: str):
    def case(t):
        def edit(f):
            f.loc[0, "participant_id"] = pid
        return validate(edit_frame(manifest(t), edit)), "manifest.tsv: line 2", "control character"
    return case


def _manifest_quoted_id(t):  # a quoted carriage return: one field for csv and pandas alike
    path = manifest(t)
    path.write_bytes(path.read_bytes().replace(b"sub-m0002", b'"sub-m0002\r"', 1))
    return validate(path), "manifest.tsv: line 3", "'sub-m0002\\r' holds the control character"


def _manifest_too_large(t):
    path = manifest(t)
    with path.open("r+b") as handle:  # sparse: no disk, and nothing is read
        handle.truncate(64 * 2**20 + 1)
    return validate(path), "manifest.tsv", "expected at most 67108864"


def _manifest_long_line(t):
    path = edit_lines(manifest(t), lambda lines: lines + ["x\t" * 600_000])
    return validate(path), "manifest.tsv: line 5", "longer than 1048576 characters"


def _manifest_fifo(t):
    (t / "cohort").mkdir()
    (t / "cohort" / "manifest.tsv").symlink_to(_fifo(t.parent / f"{t.name}-special"))
    return validate(t / "cohort" / "manifest.tsv"), "manifest.tsv", "not a regular file (a FIFO)"


def _manifest_corrupt_image(t):
    path = manifest(t)
    image = path.parent / "images" / "sub-m0002_mwp1.nii.gz"
    data = stored_gzip(gzip.decompress(image.read_bytes()))
    image.write_bytes(flip(data, len(data) - 300))
    return validate(path), "sub-m0002_mwp1.nii.gz", "CRC"


def _manifest_bool_image(t):
    path = manifest(t, fmt="npy")
    npy(path.parent / "images" / "sub-m0001_mwp1.npy", good_volume() > 0.4)
    return validate(path), "sub-m0001_mwp1.npy", "boolean"


def _manifest_bad_roi(t):
    path = manifest(t)
    np.save(path.parent / "roi" / "sub-m0001_desikan.npy", np.ones((7, 10), np.float32))
    return validate(path), "sub-m0001_desikan.npy", "(7, 68)"


# ------------------------------------------------------------------------ OpenBHB tables
def openbhb(t: Path) -> Path:
    return write_openbhb(t / "openbhb", voxel_mm=VOXEL, split_sizes=(2, 1, 1))


def participants(root: Path) -> Path:
    return root / layout.PARTICIPANTS_FILE


def _bhb_edit(t, edit):
    root = openbhb(t)
    edit_frame(participants(root), edit)
    return root


def _bhb_header_only(t):
    root = openbhb(t)
    edit_lines(participants(root), lambda lines: lines[:1])
    return validate(root), "participants.tsv", "header only"


def _bhb_extra_field(t):
    root = openbhb(t)
    edit_lines(participants(root), lambda lines: lines[:2] + [lines[2] + "\t65.0"] + lines[3:])
    return validate(root), "participants.tsv", "line 3: 15 field(s); the header has 14"


def _bhb_not_utf8(t):
    root = openbhb(t)
    participants(root).write_bytes(participants(root).read_bytes().replace(b"SYNTH", b"SYNT\xff"))
    return validate(root), "participants.tsv", "not UTF-8"


def _bhb_id(pid: str):
    def case(t):
        def evil(f):
            f.loc[0, "participant_id"] = pid
        return validate(_bhb_edit(t, evil)), "participants.tsv", f"participant_id {pid!r}"
    return case


def _bhb_duplicate_column(t):
    root = openbhb(t)
    edit_lines(participants(root), lambda lines: [line + ("\tsite" if i == 0 else "\tX") for i, line in enumerate(lines)])
    return validate(root), "participants.tsv", "duplicate column name(s) ['site']"


def _bhb_id_nul(t):
    def nul(f):
        f.loc[1, "participant_id"] = "0002\x00"
    return validate(_bhb_edit(t, nul)), "participants.tsv: line 3", "control character '\\x00'"


def _bhb_missing_column(t):
    return validate(_bhb_edit(t, lambda f: f.pop("split"))), "participants.tsv", "split"


def _bhb_unknown_split(t):
    def split(f):
        f.loc[0, "split"] = "validation"
    return validate(_bhb_edit(t, split)), "participants.tsv", "unknown split 'validation'"


def _bhb_duplicate(t):
    def dup(f):
        f.loc[1, "participant_id"] = f.loc[0, "participant_id"]
    return validate(_bhb_edit(t, dup)), "0001", "duplicate participant_id"


def _bhb_age(t):
    def age(f):
        f.loc[0, "age"] = "-1"
    return validate(_bhb_edit(t, age)), "0001", "age '-1'"


def _bhb_missing_map(t):
    root = openbhb(t)
    layout.subject_file(root, "train", "0001", layout.VBM_KIND).unlink()
    return validate(root), "0001", "missing file"


def _bhb_roi_shape(t):
    root = openbhb(t)
    np.save(layout.subject_file(root, "train", "0002", layout.DESIKAN_KIND), np.ones((68, 7), np.float32))
    return validate(root), "0002", "(7, 68)"


def _bhb_roi_nan(t):
    root = openbhb(t)
    table = roi_table(np.random.default_rng(0))
    table[2, 5] = np.nan
    np.save(layout.subject_file(root, "train", "0001", layout.DESIKAN_KIND), table)
    return validate(root), "0001", "NaN"


def _bhb_roi_negative(t):
    root = openbhb(t)
    table = roi_table(np.random.default_rng(0))
    table[0, 5] = -3.0
    np.save(layout.subject_file(root, "train", "0001", layout.DESIKAN_KIND), table)
    return validate(root), "0001", "negative"


def _bhb_bool_map(t):
    root = openbhb(t)
    np.save(layout.subject_file(root, "train", "0001", layout.VBM_KIND), (good_volume() > 0.4)[None])
    return validate(root), "0001", "boolean"


# --------------------------------------------------------------------------------- CLI args
@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("weights") / "model.pth", seed=3)


def embed_kit(t: Path, weights: Path) -> tuple[Path, Path]:
    """A folder with one valid map and a copy of the small checkpoint."""
    npy(t / "scans" / "s01.npy", good_volume())
    copy = t / "model.pth"
    shutil.copyfile(weights, copy)
    return t / "scans", copy


def _embed_args(*options, out: str = "features.csv"):
    def case(t, weights):
        scans, copy = embed_kit(t, weights)
        return ["embed", scans, "--weights", copy, "--out", t / out, "--no-progress", *options]
    return case


def _validate_voxel(value: str):
    def case(t):
        return validate(npy(t / "g.npy", good_volume()), "--voxel-mm", value), "--voxel-mm", value
    return case


def _out_is_weights(t, weights):
    scans, copy = embed_kit(t, weights)
    return ["embed", scans, "--weights", copy, "--out", t / "model.pth"]


def _out_is_input(t, weights):
    scans, copy = embed_kit(t, weights)
    csv = t / "listing.csv"
    csv.write_text("a,b\n")
    return ["embed", scans / "s01.npy", csv, "--weights", copy, "--out", csv]


def _out_is_manifest_image(t, weights):
    path = manifest(t, n=2, fmt="npy")
    copy = t / "model.pth"
    shutil.copyfile(weights, copy)
    image = path.parent / "images" / "sub-m0001_mwp1.npy"
    target = image.with_suffix(".csv")
    image.rename(target)  # the manifest now names a .csv "image": embed must not write over it
    edit_frame(path, lambda f: f.__setitem__("image", f["image"].str.replace(".npy", ".csv", regex=False)))
    return ["embed", path, "--weights", copy, "--out", target]


def _out_is_folder(t, weights):
    scans, copy = embed_kit(t, weights)
    (t / "results.csv").mkdir()
    return ["embed", scans, "--weights", copy, "--out", t / "results.csv"]


def _out_parent_is_file(t, weights):
    scans, copy = embed_kit(t, weights)
    (t / "notes").write_text("a file, not a folder")
    return ["embed", scans, "--weights", copy, "--out", t / "notes" / "features.csv"]


def _out_suffix(t, weights):
    scans, copy = embed_kit(t, weights)
    return ["embed", scans, "--weights", copy, "--out", t / "features.xlsx"]


def _embed_invalid_image(t, weights):
    scans, copy = embed_kit(t, weights)
    data = stored_gzip(nifti_bytes(good_volume()))
    write(scans / "flipped.nii.gz", flip(data, len(data) - 500))
    return ["embed", scans, "--weights", copy, "--out", t / "f.csv", "--no-progress"]


def _embed_header_only_manifest(t, weights):
    path = edit_lines(manifest(t), lambda lines: lines[:1])
    copy = t / "model.pth"
    shutil.copyfile(weights, copy)
    return ["embed", path, "--weights", copy, "--out", t / "f.csv"]


def _embed_extra_field_manifest(t, weights):
    path = edit_lines(manifest(t), lambda lines: lines[:2] + [lines[2] + "\t65.0"] + lines[3:])
    copy = t / "model.pth"
    shutil.copyfile(weights, copy)
    return ["embed", path, "--weights", copy, "--out", t / "f.csv"]


def _embed_qform_sform(t, weights):
    scans, copy = embed_kit(t, weights)
    argv, _, _ = _qform_sform(scans)
    return ["embed", argv[1], scans / "s01.npy", "--weights", copy, "--out", t / "f.csv", "--no-progress"]


def _embed_manifest(edit):
    def case(t, weights):
        path = edit(manifest(t))
        copy = t / "model.pth"
        shutil.copyfile(weights, copy)
        return ["embed", path, "--weights", copy, "--out", t / "f.csv", "--no-progress"]
    return case


def _nul_id(path: Path) -> Path:
    return edit_frame(path, lambda f: f.loc.__setitem__((0, "participant_id"), "sub-m0001\x00"))


def _second_age(path: Path) -> Path:
    return edit_lines(path, lambda lines: [line + ("\tage" if i == 0 else "\t99") for i, line in enumerate(lines)])


def _embed_missing_input(t, weights):
    _, copy = embed_kit(t, weights)
    return ["embed", t / "nowhere", "--weights", copy, "--out", t / "f.csv"]


VALIDATE_CASES = {
    "gzip-bit-flip-crc": _crc_flip, "gzip-crc-trailer": _crc_trailer, "gzip-length-trailer": _isize_trailer,
    "gzip-truncated": _gz_truncated, "gzip-garbage": _gz_garbage, "nii-truncated": _nii_truncated,
    "nii-header-garbage": _nii_header_garbage, "nii-empty": _nii_empty, "nifti-complex64": _complex_nifti,
    "nifti-complex128": _complex128_nifti, "nifti-int-unscaled": _int_nifti_unscaled, "npy-bool": _bool_npy,
    "npy-complex": _complex_npy, "npy-int32": _int_npy, "npy-uint8": _uint8_npy, "npy-object": _object_npy,
    "npy-truncated": _npy_truncated, "npy-bad-magic": _npy_bad_magic, "npy-empty": _npy_empty,
    "nan-voxel": _nan_voxels, "inf-voxel": _inf_voxels, "all-zero": _all_zero, "t1-range": _t1_range,
    "negative": _negative, "low-coverage": _low_coverage, "4d-series": _series_4d, "2d-plane": _plane_2d,
    "no-cat12-grid": _no_cat12_grid, "flipped-axis": _flipped, "anisotropic": _anisotropic,
    "wrong-origin": _origin, "voxel-mismatch": _voxel_mismatch, "missing-file": _missing_file,
    "unknown-suffix": _unknown_suffix, "empty-folder": _empty_folder, "folder-bad-map": _folder_with_a_bad_map,
    "manifest-header-only": _manifest_header_only, "manifest-extra-field": _manifest_extra_field,
    "manifest-missing-field": _manifest_missing_field, "manifest-empty-file": _manifest_empty_file,
    "manifest-not-utf8": _manifest_not_utf8, "manifest-missing-column": _manifest_missing_column,
    "manifest-duplicate-id": _manifest_duplicate_id, "manifest-empty-id": _manifest_empty_id,
    "manifest-empty-image": _manifest_cell("image", "", what="empty image path"),
    "manifest-image-missing": _manifest_cell("image", "images/nowhere.nii.gz", "nowhere.nii.gz", "missing file"),
    "manifest-age-text": _manifest_cell("age", "old"), "manifest-age-range": _manifest_cell("age", "200"),
    "manifest-sex": _manifest_cell("sex", "X"), "manifest-dx": _manifest_cell("dx_ad", "2"),
    "manifest-score": _manifest_cell("score_mmse", "high"),
    "manifest-site": _manifest_cell("site", "", what="empty site"), "manifest-corrupt-image": _manifest_corrupt_image,
    "manifest-bool-image": _manifest_bool_image, "manifest-bad-roi": _manifest_bad_roi,
    "openbhb-header-only": _bhb_header_only, "openbhb-extra-field": _bhb_extra_field,
    "openbhb-not-utf8": _bhb_not_utf8, "openbhb-id-dotdot": _bhb_id("../../../../tmp/evil"),
    "openbhb-id-slash": _bhb_id("a/b"), "openbhb-id-backslash": _bhb_id("a\\b"), "openbhb-id-dots": _bhb_id(".."),
    "openbhb-id-space": _bhb_id("a b"), "openbhb-id-leading-dash": _bhb_id("-rf"),
    "openbhb-missing-column": _bhb_missing_column, "openbhb-unknown-split": _bhb_unknown_split,
    "openbhb-duplicate-id": _bhb_duplicate, "openbhb-age": _bhb_age, "openbhb-missing-map": _bhb_missing_map,
    "openbhb-roi-shape": _bhb_roi_shape, "openbhb-roi-nan": _bhb_roi_nan, "openbhb-roi-negative": _bhb_roi_negative,
    "openbhb-bool-map": _bhb_bool_map, "voxel-mm-zero": _validate_voxel("0"),
    "voxel-mm-negative": _validate_voxel("-4.5"), "voxel-mm-nan": _validate_voxel("nan"),
    "voxel-mm-inf": _validate_voxel("inf"),
    # issue 23
    "qform-sform-disagree": _qform_sform, "4d-series-nifti": _series_4d_nifti, "too-many-voxels": _too_many_voxels,
    "map-is-fifo": _special_file(_fifo, "pipe.nii.gz", "not a regular file (a FIFO)"),
    "map-is-dev-zero": _special_file(lambda _: Path("/dev/zero"), "zero.npy", "not a regular file (a character device)"),
    "manifest-duplicate-column": _manifest_duplicate_column,
    "manifest-id-nul": _manifest_id_control("sub-m0001\x00"), "manifest-id-newline": _manifest_id_control("sub-\nm0001"),
    "manifest-id-escape": _manifest_id_control("\x1b[31msub-m0001"), "manifest-id-carriage": _manifest_quoted_id,
    "manifest-id-line-separator": _manifest_id_control("sub-\u2028m0001"),
    "manifest-too-large": _manifest_too_large, "manifest-long-line": _manifest_long_line, "manifest-fifo": _manifest_fifo,
    "openbhb-duplicate-column": _bhb_duplicate_column, "openbhb-id-nul": _bhb_id_nul,
}

#: embed cases: builder, then (the input the message must name, the problem it must state).
EMBED_CASES = {
    "device-tpu": (_embed_args("--device", "tpu"), "--device", "not a device"),
    "device-empty": (_embed_args("--device", ""), "--device", "not a device"),
    "device-meta": (_embed_args("--device", "meta"), "--device", "cannot run the model"),
    "device-cpu7": (_embed_args("--device", "cpu:7"), "--device", "one CPU device"),
    "device-cuda99": (_embed_args("--device", "cuda:99"), "--device", "cuda"),
    "device-garbage": (_embed_args("--device", "gpu please"), "--device", "not a device"),
    "batch-size-zero": (_embed_args("--batch-size", "0"), "--batch-size", ">= 1"),
    "batch-size-negative": (_embed_args("--batch-size", "-4"), "--batch-size", ">= 1"),
    "out-is-weights": (_out_is_weights, "model.pth", "is also an input"),
    "out-is-input": (_out_is_input, "listing.csv", "is also an input"),
    "out-is-manifest-image": (_out_is_manifest_image, "sub-m0001_mwp1.csv", "is also an input"),
    "out-is-folder": (_out_is_folder, "results.csv", "is a folder"),
    "out-parent-is-file": (_out_parent_is_file, "notes", "not a folder"),
    "out-unknown-suffix": (_out_suffix, "features.xlsx", "unknown output format"),
    "embed-crc-flipped-image": (_embed_invalid_image, "flipped.nii.gz", "CRC"),
    "embed-header-only-manifest": (_embed_header_only_manifest, "manifest.tsv", "header only"),
    "embed-extra-field-manifest": (_embed_extra_field_manifest, "manifest.tsv", "line 3"),
    "embed-missing-input": (_embed_missing_input, "nowhere", "no such file"),
    # issue 23
    "embed-qform-sform": (_embed_qform_sform, "forms.nii.gz", "qform (code 1) and sform (code 2) disagree"),
    "embed-manifest-id-nul": (_embed_manifest(_nul_id), "manifest.tsv: line 2", "control character '\\x00'"),
    "embed-manifest-second-age": (_embed_manifest(_second_age), "manifest.tsv", "duplicate column name(s) ['age']"),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_refuses(case, tmp_path, capsys, caplog):
    argv, names, problem = VALIDATE_CASES[case](tmp_path)
    before = snapshot(tmp_path)
    status, lines = run_cli(argv, capsys, caplog)
    assert_refused(status, lines, names, problem)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", sorted(EMBED_CASES))
def test_embed_refuses(case, tmp_path, checkpoint_file, capsys, caplog, monkeypatch):
    build, names, problem = EMBED_CASES[case]
    argv = build(tmp_path, checkpoint_file)
    before = snapshot(tmp_path)
    loaded = []
    monkeypatch.setattr("anatcl_core.evaluation.embed.load_encoder", lambda *a, **k: loaded.append(a) or 1 / 0)
    status, lines = run_cli(argv, capsys, caplog)
    assert_refused(status, lines, names, problem)
    assert not loaded, "the model was loaded before the inputs were refused"
    assert snapshot(tmp_path) == before


def test_openbhb_reader_refuses_an_id_that_leaves_the_root(tmp_path):
    """The API too: an id never becomes a path outside the cohort root."""
    from anatcl_core.data.openbhb import OpenBHB

    root = openbhb(tmp_path)
    edit_frame(participants(root), lambda f: f.__setitem__("participant_id", ["../../../../tmp/evil"] + list(f["participant_id"][1:])))
    with pytest.raises(ValueError, match=r"participant_id '../../../../tmp/evil' is not a valid id"):
        OpenBHB(root, split="train").path(0)
    with pytest.raises(ValueError, match="no path separators"):
        layout.subject_file(root, "train", "a/b", layout.VBM_KIND)


def test_gzip_is_inflated_once_and_to_its_end(tmp_path, monkeypatch):
    """One decompression pass per .nii.gz (the CRC at the end is reached), same voxels as nibabel."""
    from anatcl_core.data import io

    path = write(tmp_path / "ok.nii.gz", gzip.compress(nifti_bytes(good_volume())))
    calls = []
    real = gzip.decompress
    monkeypatch.setattr(io.gzip, "decompress", lambda data: calls.append(len(data)) or real(data))
    volume, _ = io.load_volume(path)
    assert calls == [path.stat().st_size]  # the whole file, once
    np.testing.assert_array_equal(volume, np.asarray(nib.load(path).dataobj, dtype=np.float32))


@pytest.mark.parametrize("fails, code", [("pandas.DataFrame.to_csv", errno.ENOSPC),
                                         ("anatcl_core.atomic.os.fsync", errno.EIO)])
def test_a_failed_write_names_the_output(fails, code, tmp_path, checkpoint_file, capsys, caplog, monkeypatch):
    """Issue 23: a full disk (while pandas writes) or an I/O error (at fsync) names the output file;
    the previous output stays, no temp file is left."""
    scans, copy = embed_kit(tmp_path, checkpoint_file)
    out = tmp_path / "features.csv"
    out.write_text("the previous run's table\n")
    before = snapshot(tmp_path)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))  # as the kernel reports it: no file name

    monkeypatch.setattr(fails, fail)
    status, lines = run_cli(["embed", scans, "--weights", copy, "--out", out, "--no-progress"], capsys, caplog)
    lines = [line for line in lines if "loaded" not in line]  # the model's info line, not a message
    assert_refused(status, lines, str(out), f"cannot write ({os.strerror(code)}, {errno.errorcode[code]})")
    assert snapshot(tmp_path) == before


def test_an_input_error_inside_a_write_is_not_blamed_on_the_output(tmp_path):
    from anatcl_core.atomic import WriteError, atomic_write

    with pytest.raises(FileNotFoundError) as caught, atomic_write(tmp_path / "out.csv"):
        (tmp_path / "input.tsv").read_text()
    assert not isinstance(caught.value, WriteError) and "input.tsv" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def _peak_bytes(run) -> int:
    """Peak of the memory Python and numpy allocate while ``run()`` runs (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_4d_map_is_refused_from_its_header(tmp_path, capsys, caplog):
    """Issue 23: 1,000 volumes (177 MB) are refused from the header's 348 bytes, not after loading them."""
    path = tmp_path / "series.nii"
    header = nib.Nifti1Header()
    header.set_data_shape((*SHAPE, 1000))
    header.set_data_dtype(np.float32)
    path.write_bytes(header.binaryblock + bytes(4))
    with path.open("r+b") as handle:  # sparse: the full size on paper, no disk
        handle.truncate(352 + int(np.prod(SHAPE)) * 4 * 1000)
    result = {}
    peak = _peak_bytes(lambda: result.update(out=run_cli(validate(path), capsys, caplog)))
    assert_refused(*result["out"], "series.nii", "got shape (21, 25, 21, 1000)")
    assert peak < 8 * 2**20, f"{peak} bytes allocated to refuse it"


def test_a_huge_manifest_is_refused_before_pandas_reads_it(tmp_path, capsys, caplog):
    """Issue 23: a 1 GiB single-line manifest is refused from its size, read by nothing."""
    path = tmp_path / "manifest.tsv"
    with path.open("wb") as handle:  # sparse, and one line: no newline anywhere
        handle.write(b"participant_id\t")
        handle.truncate(2**30)
    result = {}
    peak = _peak_bytes(lambda: result.update(out=run_cli(validate(path), capsys, caplog)))
    assert_refused(*result["out"], "manifest.tsv", "1073741824 bytes; expected at most 67108864")
    assert peak < 8 * 2**20, f"{peak} bytes allocated to refuse it"


def test_a_table_row_is_numbered_from_its_first_line(tmp_path):
    """A quoted newline makes a record two lines long: the next record's line is still right."""
    from anatcl_core.data.tables import TableError, check_tsv

    path = tmp_path / "t.tsv"
    path.write_text('participant_id\tage\n"a"\t1\nb\t2\t3\n')
    with pytest.raises(TableError, match="line 3: 3 field"):
        check_tsv(path)
    path.write_text('participant_id\tnote\n"a"\t"two\nlines"\nb\t2\t3\n')
    with pytest.raises(TableError, match=r"line 2: note 'two\\nlines' holds the control character"):
        check_tsv(path)


# ------------------------------------------------------------------------ real subprocesses
def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored: give
    # the CLI the disposition it has in a terminal, whatever started the test run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _anatcl(*args, env=None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "anatcl_core.cli.main", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kwargs)


def test_subprocess_refusals_have_exit_codes_and_no_traceback(tmp_path, checkpoint_file):
    argv, names, _ = _crc_flip(tmp_path)
    proc = _anatcl(*argv)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out + err
    assert names in out and "CRC" in out
    argv = _embed_args("--device", "tpu")(tmp_path / "e", checkpoint_file)
    proc = _anatcl(*argv)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out + err and "--device" in err
    assert not (tmp_path / "e" / "features.csv").exists()


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_embed_with_one_line_and_leaves_nothing(tmp_path, checkpoint_file, signum, status):
    scans, copy = embed_kit(tmp_path, checkpoint_file)
    for i in range(2, 400):
        npy(scans / f"s{i:03d}.npy", good_volume(i % 7))
    out = tmp_path / "features.csv"
    proc = _anatcl("embed", scans, "--weights", copy, "--out", out, "--no-progress", "--batch-size", "1")
    seen = []
    for line in proc.stderr:  # the model is loaded: embedding starts now
        seen.append(line)
        if "loaded" in line:
            break
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    stderr = "".join(seen) + stderr
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and ("SIGINT" if signum == signal.SIGINT else "SIGTERM") in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".features.csv.*"))


# ------------------------------------------------------------------ readers called directly (issue 23)
# Found by tests/test_fuzz_readers.py: each reader let numpy's, pandas' or the decoders' exception out.
# Now each raises its module's own error, one line naming the file and what was expected.
def _cohort_arrays(t: Path) -> Path:
    from anatcl_core.data.arrays import Cohort, write_cohort

    table = pd.DataFrame({"participant_id": ["sub-1", "sub-2"], "age": [20.0, 30.0]})
    write_cohort(t / "arrays", "openbhb", Cohort(np.zeros((2, 1, 2, 2, 2), np.float32), table,
                                                 np.zeros((2, 7, 3), np.float32)))
    return t / "arrays"


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _npy_shape_overflow(path: Path) -> Path:
    """A ``.npy`` whose header shape multiplies past int64 (found by the fuzzer: numpy's memmap then
    raised ``OverflowError: memory mapped length must be positive``)."""
    data = path.read_bytes()
    size = int.from_bytes(data[8:10], "little")
    header = data[10:10 + size].decode("latin1")
    start, end = header.index("'shape': (") + len("'shape': ("), header.index(")", header.index("'shape': ("))
    shape = f"{2**31 - 1}, {2**31 - 1}, 32767, 1, 1"
    header = (header[:start] + shape + header[end:]).rstrip()
    header = header + " " * (size - 1 - len(header)) + "\n"
    assert len(header) == size, "the test's header no longer fits"
    return write(path, data[:10] + header.encode("latin1") + data[10 + size:])


def _roi_npy(t: Path) -> Path:
    return npy(t / "roi.npy", np.ones((7, 68), np.float32))


def _resource_root(t: Path) -> Path:
    from anatcl_core.data import resources

    resources.write_resources(t)
    resources.write_tables(resources.roi_csv_path(t, "train"), ["sub-1"], np.ones((1, 7, 68), np.float32))
    return t


def _manifest_roi_folder(t: Path) -> Path:
    write_manifest(layout.cohort_path(t, "downstream"), voxel_mm=VOXEL, n=2, fmt="npy")
    roi = next((layout.cohort_path(t, "downstream") / "roi").glob("*.npy"))
    roi.unlink()
    roi.mkdir()
    return roi


def _openbhb_truncated_roi(t: Path) -> Path:
    write_openbhb(t / "openbhb", voxel_mm=VOXEL, split_sizes=(1, 1, 1))
    return _truncate(next(p for p in sorted((t / "openbhb").rglob("*.npy")) if layout.DESIKAN_KIND in p.name), 100)


def _openbhb_roi_shapes_differ(t: Path) -> Path:
    write_openbhb(t / "openbhb", voxel_mm=VOXEL, split_sizes=(1, 1, 1))
    roi = sorted(p for p in (t / "openbhb").rglob("*.npy") if layout.DESIKAN_KIND in p.name)[-1]
    return npy(roi, np.ones((7, 60), np.float32))  # make fuzz at 1,500 examples: numpy's stacking error


def _manifest_roi_shapes_differ(t: Path) -> Path:
    write_manifest(layout.cohort_path(t, "downstream"), voxel_mm=VOXEL, n=3, fmt="npy")
    roi = sorted((layout.cohort_path(t, "downstream") / "roi").glob("*.npy"))[-1]
    return npy(roi, np.ones((7, 60), np.float32))


def _reader(name: str):
    from anatcl_core.data import arrays, resources, stacking, volume_header

    return {
        "arrays-truncated-images": (lambda t: _truncate(_cohort_arrays(t) / "openbhb.npy", 150),
                                    lambda t: arrays.load_cohort(t / "arrays", "openbhb"), arrays.ArraysError, "cannot read"),
        "arrays-images-shape-overflow": (lambda t: _npy_shape_overflow(_cohort_arrays(t) / "openbhb.npy"),
                                         lambda t: arrays.load_cohort(t / "arrays", "openbhb"), arrays.ArraysError,
                                         "OverflowError"),
        "arrays-latin1-table": (lambda t: write(_cohort_arrays(t) / "openbhb.tsv", "participant_id\tage\nJos\xe9\t1\n"
                                                .encode("latin-1")),
                                lambda t: arrays.load_table(t / "arrays", "openbhb"), arrays.ArraysError, "UnicodeDecodeError"),
        "arrays-empty-table": (lambda t: write(_cohort_arrays(t) / "openbhb.tsv", b""),
                               lambda t: arrays.load_arrays(t / "arrays"), arrays.ArraysError, "EmptyDataError"),
        "arrays-columns-not-json": (lambda t: write(_cohort_arrays(t) / "openbhb_columns.json", b"{oops"),
                                    lambda t: arrays.load_table(t / "arrays", "openbhb"), arrays.ArraysError, "not valid JSON"),
        "roi-npy-truncated": (lambda t: _truncate(_roi_npy(t), 200), lambda t: resources.read_roi_table(t / "roi.npy"),
                              resources.ResourceError, "cannot read"),
        "roi-npy-folder": (lambda t: (t / "roi.npy").mkdir() or t / "roi.npy",
                           lambda t: resources.load_roi_file(t / "roi.npy"), resources.ResourceError, "a folder"),
        "roi-csv-ragged": (lambda t: write(t / "roi.csv", b"participant_id,session,a\n\"x,1\n"),
                           lambda t: resources.read_roi_csv(t / "roi.csv"), resources.ResourceError, "cannot read"),
        "roi-csv-latin1": (lambda t: write(resources.roi_csv_path(_resource_root(t), "train"),
                                           "participant_id,session,a\nJos\xe9,1,2\n".encode("latin-1")),
                           lambda t: resources.read_tables(t, "train"), resources.ResourceError, "UnicodeDecodeError"),
        "resource-txt-latin1": (lambda t: write(_resource_root(t) / "resource" / resources.CHANNELS_FILE, b"CT\xe9\n"),
                                lambda t: resources.declared_names(t), resources.ResourceError, "not UTF-8 text"),
        "resources-json-deep": (lambda t: write(_resource_root(t) / "resource" / resources.RESOURCES_JSON,
                                                b"[" * 100_000 + b"]" * 100_000),
                                lambda t: resources.table_order(t), resources.ResourceError, "nested too deeply"),
        "manifest-roi-folder": (_manifest_roi_folder, lambda t: stacking.read_cohort(t, "downstream", progress=False),
                                resources.ResourceError, "a folder"),
        "manifest-roi-folder-direct": (_manifest_roi_folder,
                                       lambda t: stacking.read_manifest_cohort(layout.cohort_path(t, "downstream"),
                                                                               progress=False),
                                       resources.ResourceError, "a folder"),
        "openbhb-roi-truncated": (_openbhb_truncated_roi, lambda t: stacking.read_openbhb(t / "openbhb", progress=False),
                                  resources.ResourceError, "cannot read"),
        "openbhb-roi-shapes-differ": (_openbhb_roi_shapes_differ,
                                      lambda t: stacking.read_openbhb(t / "openbhb", progress=False),
                                      resources.ResourceError, "ROI table of shape (7, 60)"),
        "manifest-roi-shapes-differ": (_manifest_roi_shapes_differ,
                                       lambda t: stacking.read_cohort(t, "downstream", progress=False),
                                       resources.ResourceError, "ROI table of shape (7, 60)"),
        "header-gz-garbage": (lambda t: write(t / "map.nii.gz", b"\x1f\x8b\x08\x00" + b"garbage" * 20),
                              lambda t: volume_header.read_header(t / "map.nii.gz"), volume_header.VolumeError,
                              "cannot read the NIfTI header"),
    }[name]


READER_CASES = ("arrays-truncated-images", "arrays-images-shape-overflow", "arrays-latin1-table",
                "arrays-empty-table", "arrays-columns-not-json", "roi-npy-truncated", "roi-npy-folder",
                "roi-csv-ragged", "roi-csv-latin1", "resource-txt-latin1", "resources-json-deep",
                "manifest-roi-folder", "manifest-roi-folder-direct", "openbhb-roi-truncated", "openbhb-roi-shapes-differ",
                "manifest-roi-shapes-differ", "header-gz-garbage")


@pytest.mark.parametrize("case", READER_CASES)
def test_reader_refuses_a_damaged_file_in_one_line_naming_it(case, tmp_path: Path) -> None:
    assert_read_refused(*_reader(case), tmp_path)
