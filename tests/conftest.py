"""Shared fixtures: tiny cohorts *written to disk* in both layouts (OpenBHB per-subject, manifest).

The writers are plain functions so other test modules can call them with their own arguments
(``from conftest import write_openbhb``); the fixtures are their defaults. ``tiny_pipeline`` runs
``dvc repro`` once per session on the tiny profile in a temporary copy of the repo; the end-to-end
test and the notebook/browser tests share it. Grids are CAT12's field of
view at 9 mm, ``layout.grid_shape(9.0) == (21, 25, 21)``; volumes are brain-like blobs of modulated
GM values (0..~0.9) so the validator passes on them, ROI tables hold plausible FreeSurfer values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import yaml

from anatcl_core.config import load_params
from anatcl_core.data import io, layout
from anatcl_core.data.freesurfer import DESIKAN_SHAPE

VOXEL_MM = 9.0
#: (train, internal_test, external_test) subjects of the default OpenBHB fixture.
SPLIT_SIZES = (6, 3, 3)


def brain_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A GM-like blob: a bright shell inside an ellipsoid filling ~60 % of the box, zero outside."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radius = np.sqrt((x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.8) ** 2)
    shell = 0.85 * np.exp(-(((radius - 0.7) / 0.25) ** 2))
    volume = (shell + 0.05 * rng.standard_normal(shape)) * (radius < 1.0)
    return (np.clip(volume, 0.0, 1.0) + 0.0).astype(np.float32)  # + 0.0: no negative zeros


def roi_table(rng: np.random.Generator) -> np.ndarray:
    """A (7, 68) Desikan table in OpenBHB's channel order with plausible FreeSurfer magnitudes."""
    low = np.array([300.0, 1000.0, 1.8, 0.4, 5.0, 1.0, 0.5])[:, None]
    high = np.array([5000.0, 15000.0, 3.5, 0.9, 40.0, 8.0, 5.0])[:, None]
    return (low + (high - low) * rng.random(DESIKAN_SHAPE)).astype(np.float32)


def participant_ids(n: int, prefix: str = "") -> list[str]:
    """Ids with leading zeros, so a reader that parses them as integers is caught."""
    return [f"{prefix}{i:04d}" for i in range(1, n + 1)]


def write_openbhb(
    root: Path,
    voxel_mm: float = VOXEL_MM,
    split_sizes: tuple[int, int, int] = SPLIT_SIZES,
    seed: int = 0,
    first_id: int = 1,
) -> Path:
    """Write a tiny OpenBHB-layout cohort under ``root`` and return ``root``."""
    rng = np.random.default_rng(seed)
    shape = layout.grid_shape(voxel_mm)
    rows = []
    number = first_id
    for split, size in zip(layout.SPLITS, split_sizes):
        for _ in range(size):
            pid = f"{number:04d}"
            number += 1
            site = int(rng.integers(1, 4)) if split != "external_test" else int(rng.integers(4, 6))
            folder = layout.subject_dir(root, split, pid)
            folder.mkdir(parents=True, exist_ok=True)
            vbm = brain_volume(shape, rng)[None]  # (1, X, Y, Z) as OpenBHB stores it
            np.save(layout.subject_file(root, split, pid, layout.VBM_KIND), vbm)
            np.save(layout.subject_file(root, split, pid, layout.DESIKAN_KIND), roi_table(rng))
            age = float(rng.uniform(8, 85))
            rows.append(
                dict(
                    participant_id=pid, study="SYNTH", sex=int(rng.integers(0, 2)), age=age,
                    site=site, siteXacq=site, diagnosis="control", tiv=1500.0, csfv=300.0,
                    gmv=700.0, wmv=500.0, magnetic_field_strength=3.0, acquisition_setting=1,
                    split=split,
                )
            )  # fmt: skip
    pd.DataFrame(rows, columns=list(layout.PARTICIPANTS_COLUMNS)).to_csv(
        Path(root) / layout.PARTICIPANTS_FILE, sep="\t", index=False
    )
    return Path(root)


def write_openbhb_arrays(root: Path) -> Path:
    """The cohort stage's arrays of the OpenBHB root ``root`` (``<data>/openbhb``), in ``<data>/arrays``."""
    from anatcl_core.data import arrays, stacking

    out = Path(root).parent / "arrays"
    arrays.write_cohort(out, "openbhb", stacking.read_openbhb(root, progress=False))
    return out


def write_manifest(
    root: Path,
    voxel_mm: float = VOXEL_MM,
    n: int = 6,
    fmt: str = "nii.gz",
    seed: int = 1,
    ids: list[str] | None = None,
) -> Path:
    """Write a tiny downstream cohort (images + ROI tables + manifest.tsv); return the manifest."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "roi").mkdir(exist_ok=True)
    shape = layout.grid_shape(voxel_mm)
    ids = ids or participant_ids(n, prefix="sub-m")
    rows = []
    for i, pid in enumerate(ids):
        image = Path("images") / f"{pid}_mwp1.{fmt}"
        volume = brain_volume(shape, rng)
        if fmt == "npy":
            np.save(root / image, volume)
        else:
            io.save_nifti(volume, layout.grid_affine(voxel_mm), root / image)
        roi = Path("roi") / f"{pid}_desikan.npy"
        np.save(root / roi, roi_table(rng))
        rows.append(
            dict(
                participant_id=pid, image=str(image), age=float(rng.uniform(50, 90)),
                sex=i % 2, site=f"S{i % 2}", roi=str(roi),
                dx_ad=(i % 2 if i < 4 else None), score_mmse=float(rng.integers(15, 31)),
            )
        )  # fmt: skip
    path = root / layout.MANIFEST_FILE
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def openbhb_root(tmp_path: Path) -> Path:
    """A 12-subject OpenBHB-layout cohort (6 train, 3 internal_test, 3 external_test) at 9 mm."""
    return write_openbhb(tmp_path / "openbhb")


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    """A 6-subject downstream cohort with NIfTI images; the path of its manifest.tsv."""
    return write_manifest(tmp_path / "downstream")


@pytest.fixture
def manifest_npy_path(tmp_path: Path) -> Path:
    """The same cohort with ``.npy`` images (no affine)."""
    return write_manifest(tmp_path / "downstream_npy", fmt="npy")


REPO = Path(__file__).resolve().parent.parent

def params_mapping(name: str, **overrides) -> dict:
    """Section ``name`` of the repository's params.yaml as a plain mapping, ``overrides`` applied."""
    return {**load_params(REPO / "params.yaml")[name], **overrides}


def params_section(name: str, **overrides):
    """The dataclass of params.yaml section ``name`` with ``overrides`` (keyword = yaml key), validated.

    The one way tests build a section: the values are the pipeline's own (params.yaml is their one
    home), e.g. ``params_section("synth", voxel_mm=9.0)``.
    """
    from anatcl_core.config import from_mapping
    from anatcl_core.sections import section_class

    return from_mapping(section_class(name), params_mapping(name, **overrides),
                        f"params.yaml: {name} (test overrides {sorted(overrides)})")


#: Tiny profile, merged over params.yaml in the temporary copy.
TINY = load_params(REPO / "profiles" / "tiny.yaml")  # the strict reader every params file goes through


def make_workspace(root: Path, overrides: dict = TINY) -> tuple[Path, dict]:
    """Copy the pipeline's files to ``root``, write tiny params and a tiny cohort; return (root, env)."""
    from anatcl_core.cli.profile import merge
    from anatcl_core.config import from_mapping
    from anatcl_core.synth.config import SynthConfig
    from anatcl_core.synth.generate import synthesize

    for name in ("dvc.yaml", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, root / name)
    for folder in ("anatcl_core", "notebooks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = merge(load_params(REPO / "params.yaml"), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    synthesize(from_mapping(SynthConfig, params["synth"], "tiny:synth"), root / "data", progress=False)
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(root / ".dvc_site"), "PYTHONHASHSEED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc(root, env, "init", "--no-scm", "-q")
    dvc(root, env, "config", "core.analytics", "false")
    return root, env


def dvc(root: Path, env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


class TinyPipeline(NamedTuple):
    """A workspace after ``dvc repro`` on the tiny profile."""

    root: Path
    env: dict
    repro_output: str


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> TinyPipeline:
    """The tiny pipeline, run once per session as ``make repro`` runs it (about a minute on 2 cores).

    That is :mod:`anatcl_core.cli.pipeline` (stages side by side, two at a time, so that independent
    stages do overlap even on one core); ``repro_output`` is its output followed by every stage's
    log, so :func:`ran` reads it like a ``dvc repro`` output.
    """
    root, env = make_workspace(tmp_path_factory.mktemp("tiny_pipeline"))
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", "--jobs", "2"], cwd=root, env=env,
                          text=True, capture_output=True, timeout=900)
    logs = "".join(p.read_text() for p in sorted((root / "outputs" / "logs").glob("*.log")))
    assert done.returncode == 0, f"pipeline failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return TinyPipeline(root, env, done.stdout + logs)
