"""Validator: good cohorts pass; each bad input gives one clear line naming file, subject, problem."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from anatcl_core.data import io, layout
from anatcl_core.data import validate
from conftest import VOXEL_MM, brain_volume, params_section, write_manifest, write_openbhb

SHAPE = layout.grid_shape(VOXEL_MM)
PID = "0002"  # the subject each OpenBHB case breaks (train split)
MID = "sub-m0002"  # the subject each manifest case breaks


def vbm(root: Path) -> Path:
    return layout.subject_file(root, "train", PID, layout.VBM_KIND)


def roi(root: Path) -> Path:
    return layout.subject_file(root, "train", PID, layout.DESIKAN_KIND)


def image(manifest: Path) -> Path:
    return manifest.parent / "images" / f"{MID}_mwp1.nii.gz"


def save_table(path: Path, edit) -> None:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, sep="\t", index=False)


def set_cell(path: Path, pid: str, column: str, value: str) -> None:
    def edit(frame):
        frame.loc[frame["participant_id"] == pid, column] = value
        return frame

    save_table(path, edit)


def brain() -> np.ndarray:
    return brain_volume(SHAPE, np.random.default_rng(5))


def save_image(manifest: Path, volume: np.ndarray, affine=None) -> Path:
    affine = layout.grid_affine(VOXEL_MM) if affine is None else affine
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), image(manifest))
    return image(manifest)


def flipped_x() -> np.ndarray:
    affine = layout.grid_affine(VOXEL_MM)
    affine[0, 0] *= -1  # +x: RAS instead of CAT12's LAS
    return affine


def permuted() -> np.ndarray:
    return layout.grid_affine(VOXEL_MM)[:, [1, 0, 2, 3]]


def scaled_voxels(voxel_mm: float) -> np.ndarray:
    affine = layout.grid_affine(VOXEL_MM)
    affine[:3, :3] *= voxel_mm / VOXEL_MM
    return affine


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])
    return path


def corrupt(path: Path) -> Path:
    path.write_bytes(b"\x00" * 400)
    return path


def with_roi(path: Path, edit) -> Path:
    table = np.load(path)
    np.save(path, edit(table))
    return path


def nan_at(table, row):
    table[row, 7] = np.nan
    return table


def row_to(table, row, value):
    table[row] = value
    return table


def one_voxel(volume):
    out = np.zeros_like(volume)
    out[10, 12, 10] = 0.8
    return out


# (description, mutate(root or manifest) -> file named in the problem, pattern in the message)
OPENBHB_CASES = [
    ("NaN voxels", lambda r: np.save(vbm(r), np.where(brain() > 0.5, np.nan, brain())[None]) or vbm(r),
     r"\d+ NaN/Inf voxel\(s\)"),
    ("Inf voxel", lambda r: np.save(vbm(r), np.where(brain() > 0.8, np.inf, brain())[None]) or vbm(r),
     r"NaN/Inf voxel"),
    ("wrong npy shape", lambda r: np.save(vbm(r), brain()[:, :24][None]) or vbm(r),
     r"shape \(21, 24, 21\) is no CAT12 grid"),
    ("true 4D npy", lambda r: np.save(vbm(r), np.stack([brain()] * 2, -1)) or vbm(r),
     r"expected one 3D volume.*\(21, 25, 21, 2\)"),
    ("empty mask", lambda r: np.save(vbm(r), np.zeros((1, *SHAPE), np.float32)) or vbm(r),
     r"all voxels are zero: empty GM map"),
    ("too little brain", lambda r: np.save(vbm(r), one_voxel(brain())[None]) or vbm(r),
     r"only 0\.\d+% of voxels > 0\.1"),
    ("raw T1 intensities", lambda r: np.save(vbm(r), 1000 * brain()[None]) or vbm(r),
     r"intensity range \[0, 9\d\d\]; expected a modulated GM map"),
    ("z-scored map", lambda r: np.save(vbm(r), (brain()[None] - 0.3) / 0.2) or vbm(r),
     r"intensity range \[-1\.5, .*expected a modulated GM map"),
    ("ROI wrong shape", lambda r: with_roi(roi(r), lambda t: np.zeros((7, 148), np.float32)),
     r"ROI table of shape \(7, 148\); expected \(7, 68\)"),
    ("ROI transposed", lambda r: with_roi(roi(r), lambda t: t.T), r"ROI table of shape \(68, 7\)"),
    ("ROI NaN", lambda r: with_roi(roi(r), lambda t: nan_at(t, 2)),
     r"channel average_thickness: 1 NaN/Inf value\(s\)"),
    ("ROI missing channel", lambda r: with_roi(roi(r), lambda t: row_to(t, 0, 0.0)),
     r"channel surface_area is all zero: missing channel"),
    ("ROI implausible thickness", lambda r: with_roi(roi(r), lambda t: row_to(t, 2, 12.0)),
     r"channel average_thickness max 12 > 5"),
    ("ROI negative volume", lambda r: with_roi(roi(r), lambda t: row_to(t, 1, -3.0)),
     r"channel grey_matter_volume has negative values"),
    ("missing VBM file", lambda r: vbm(r).unlink() or vbm(r), r"missing file \(expected a CAT12 GM map\)"),
    ("missing ROI file", lambda r: roi(r).unlink() or roi(r), r"missing file \(expected a \(7, 68\)"),
    ("duplicate id", lambda r: set_cell(r / "participants.tsv", "0003", "participant_id", PID)
     or r / "participants.tsv", r"duplicate participant_id \(lines \[3, 4\]\)"),
    ("unknown split", lambda r: set_cell(r / "participants.tsv", PID, "split", "val") or r / "participants.tsv",
     r"unknown split 'val'; expected one of \['train', 'internal_test', 'external_test'\]"),
    ("implausible age", lambda r: set_cell(r / "participants.tsv", PID, "age", "250") or r / "participants.tsv",
     r"age '250'; expected a number in \[0, 120\]"),
    ("unknown sex", lambda r: set_cell(r / "participants.tsv", PID, "sex", "3") or r / "participants.tsv",
     r"sex '3'; expected 0/1 or M/F"),
]  # fmt: skip

MANIFEST_CASES = [
    ("truncated NIfTI", lambda m: truncate(image(m)), r"cannot read (volume|the NIfTI header)"),
    ("corrupt NIfTI", lambda m: corrupt(image(m)), r"cannot read (volume|the NIfTI header)"),
    ("4D NIfTI", lambda m: save_image(m, np.stack([brain()] * 3, -1)),
     r"expected one 3D volume.*\(21, 25, 21, 3\)"),
    ("NaN in NIfTI", lambda m: save_image(m, np.where(brain() > 0.7, np.nan, brain())), r"NaN/Inf voxel"),
    ("wrong NIfTI shape", lambda m: save_image(m, brain()[:20]),
     r"shape \(20, 25, 21\) with 9 mm voxels; expected \(21, 25, 21\)"),
    ("wrong voxel size", lambda m: save_image(m, brain(), scaled_voxels(8.0)),
     r"with 8 mm voxels; expected \(23, 28, 23\).*that shape is CAT12's grid at 9 mm"),
    ("coarser grid than the cohort", lambda m: save_image(m, brain_volume(layout.grid_shape(4.5),
     np.random.default_rng(0)), layout.grid_affine(4.5)), r"voxel size 4.5 mm; the rest of the cohort is at 9 mm"),
    ("flipped axis", lambda m: save_image(m, brain(), flipped_x()),
     r"orientation RAS; expected LAS as CAT12's MNI grid"),
    ("permuted axes", lambda m: save_image(m, brain(), permuted()), r"orientation ALS; expected LAS"),
    ("shifted origin", lambda m: save_image(m, brain(), layout.grid_affine(VOXEL_MM) + np.diag([0, 0, 0, 0.0])
     + np.pad(np.array([[0, 0, 0, 30.0]]), ((0, 3), (0, 0)))), r"affine origin \(120\.0, -126\.0, -72\.0\)"),
    ("empty mask", lambda m: save_image(m, np.zeros(SHAPE)), r"all voxels are zero"),
    ("implausible range", lambda m: save_image(m, 4 * brain()), r"intensity range \[0, 3\.\d+\]"),
    ("missing image", lambda m: image(m).unlink() or image(m), r"missing file \(expected a CAT12 GM map\)"),
    ("duplicate id", lambda m: set_cell(m, "sub-m0003", "participant_id", MID) or m,
     r"duplicate participant_id \(lines \[3, 4\]\)"),
    ("bad dx value", lambda m: set_cell(m, MID, "dx_ad", "2") or m, r"dx_ad '2'; expected 1 \(case\), 0"),
    ("bad score", lambda m: set_cell(m, MID, "score_mmse", "n/a") or m, r"score_mmse 'n/a'; expected a number"),
    ("ROI NaN", lambda m: with_roi(m.parent / "roi" / f"{MID}_desikan.npy", lambda t: nan_at(t, 1)),
     r"channel grey_matter_volume: 1 NaN"),
]  # fmt: skip


def assert_single_subject_problem(problems, path: Path, pid: str, pattern: str) -> None:
    text = "\n".join(map(str, problems))
    matching = [p for p in problems if re.search(pattern, p.message)]
    assert matching, f"no problem matching {pattern!r}; got:\n{text}"
    assert any(Path(p.path) == path and p.participant_id == pid for p in matching), text
    assert str(path) in str(matching[0]) and pid in str(matching[0])  # one line names file and subject
    assert {p.participant_id for p in problems} == {pid}, f"other subjects flagged:\n{text}"


def test_good_cohorts_pass(openbhb_root, manifest_path, manifest_npy_path):
    assert validate.validate_openbhb(openbhb_root, progress=False) == []
    assert validate.validate_manifest(manifest_path, progress=False) == []
    assert validate.validate_manifest(manifest_npy_path, progress=False) == []
    assert validate.validate_paths([openbhb_root, manifest_path.parent, manifest_npy_path], progress=False) == []
    assert validate.validate_paths([image(manifest_path), vbm(openbhb_root), roi(openbhb_root)], progress=False) == []
    assert validate.validate_openbhb(openbhb_root, voxel_mm=VOXEL_MM, progress=False) == []


@pytest.mark.parametrize("case", OPENBHB_CASES, ids=[c[0] for c in OPENBHB_CASES])
def test_bad_openbhb_input(openbhb_root, case):
    _, mutate, pattern = case
    path = mutate(openbhb_root)
    assert_single_subject_problem(validate.validate_paths([openbhb_root], progress=False), path, PID, pattern)


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_bad_manifest_input(manifest_path, case):
    _, mutate, pattern = case
    path = mutate(manifest_path)
    assert_single_subject_problem(validate.validate_paths([manifest_path], progress=False), path, MID, pattern)


def test_missing_columns(openbhb_root, manifest_path):
    save_table(openbhb_root / "participants.tsv", lambda f: f.drop(columns=["age"]))
    problems = validate.validate_openbhb(openbhb_root, progress=False)
    assert [str(p) for p in problems] == [
        f"{openbhb_root / 'participants.tsv'}: missing column(s) ['age']; expected {list(layout.PARTICIPANTS_COLUMNS)}"
    ]
    save_table(manifest_path, lambda f: f.drop(columns=["image"]))
    problems = validate.validate_manifest(manifest_path, progress=False)
    assert len(problems) == 1 and re.search(r"manifest.tsv: missing column\(s\) \['image'\]", str(problems[0]))


def test_expected_voxel_size(openbhb_root):
    problems = validate.validate_openbhb(openbhb_root, voxel_mm=4.5, progress=False)
    assert len(problems) == 12 and all("expected (41, 49, 41), CAT12's grid at 4.5 mm" in p.message for p in problems)
    assert "that shape is CAT12's grid at 9 mm" in problems[0].message


def test_pretraining_downstream_overlap(openbhb_root, tmp_path):
    manifest = write_manifest(tmp_path / "leaky", n=3, ids=["sub-0003", "sub-x1", "0011"])
    assert validate.validate_manifest(manifest, progress=False) == []  # fine on its own
    problems = validate.validate_paths([openbhb_root, manifest], progress=False)
    assert [(p.participant_id, Path(p.path)) for p in problems] == [("sub-0003", manifest), ("0011", manifest)]
    assert all("pretraining/downstream overlap" in p.message and str(openbhb_root) in p.message for p in problems)


def test_paths_that_are_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    problems = validate.validate_paths([tmp_path / "empty", tmp_path / "nope.nii.gz"], progress=False)
    assert [p.message for p in problems] == [
        "folder holds no .nii/.nii.gz/.npy files, no participants.tsv and no manifest.tsv",
        "missing file (expected a CAT12 GM map)",
    ]


def snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_cli_exit_status_and_reads_only(openbhb_root, manifest_path, capsys):
    before = snapshot(openbhb_root.parent)
    assert validate.main([str(openbhb_root), str(manifest_path), "--no-progress"]) == 0
    assert capsys.readouterr().out == ""
    np.save(vbm(openbhb_root), np.zeros((1, *SHAPE), np.float32))
    set_cell(manifest_path, MID, "dx_ad", "yes")
    before = snapshot(openbhb_root.parent)
    assert validate.main([str(openbhb_root), str(manifest_path.parent), "--no-progress"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{vbm(openbhb_root)} [{PID}]: all voxels are zero: empty GM map",
        f"{manifest_path} [{MID}]: dx_ad 'yes'; expected 1 (case), 0 (control) or empty",
    ]
    assert snapshot(openbhb_root.parent) == before  # nothing written, on success or failure
    with pytest.raises(SystemExit):
        validate.main([])


@pytest.mark.slow
def test_synthetic_cohort_passes(tmp_path):
    """The embedded generator's three cohorts meet the contract, and do not overlap."""
    from anatcl_core.synth.generate import synthesize

    config = params_section("synth", voxel_mm=VOXEL_MM, n_pretrain=30, downstream_scale=0.02, n_travelling=2)
    synthesize(config, tmp_path / "data", progress=False)
    cohorts = [tmp_path / "data" / name for name in ("openbhb", "downstream", "travelling")]
    assert validate.validate_paths(cohorts, progress=False) == []
