"""The one road from ``data/`` to a tensor: the cohort stage's arrays and the stages that read them.

The arrays' tables round-trip exactly; the arrays carry every table a later stage needs, so they
serve with ``data/`` gone; a cohort that fails validation writes no arrays and pretraining refuses
to start; in the DVC graph only the cohort stage reads ``data/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from anatcl_core.data import arrays, layout, stacking
from anatcl_core.data.cohort import CohortProblems, validate_cohorts
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.train.data import load_train_data
from conftest import params_section, write_manifest, write_openbhb

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny ``data/``: pretraining cohort, downstream and travelling manifests (one without ROI)."""
    root = tmp_path_factory.mktemp("one_road") / "data"
    write_openbhb(layout.cohort_path(root, "openbhb"), split_sizes=(6, 2, 2))
    write_manifest(layout.cohort_path(root, "downstream"), n=6)
    path = write_manifest(layout.cohort_path(root, "travelling"), n=4, seed=3, ids=["t1", "t2", "t3", "t4"])
    manifest = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    manifest.loc[1, "roi"] = ""  # a scan without FreeSurfer table
    manifest.to_csv(path, sep="\t", index=False)
    return root


def test_table_round_trips_exactly(tmp_path):
    table = pd.DataFrame({
        "participant_id": ["0012", "0003", "sub-7"], "age": [1 / 3, 71.123456789012345, 8.0],
        "sex": [1, 0, 1], "site": ["07", "NA", "3"], "dx_ad": [np.nan, 1.0, 0.0],
        "diagnosis": ["control", np.nan, "AD"], "flag": [True, False, True],
    })  # fmt: skip
    images = np.random.default_rng(0).random((3, 1, 2, 3, 2), dtype=np.float32)
    descriptors = np.random.default_rng(1).random((3, 7, 68), dtype=np.float32)
    descriptors[2] = np.nan
    assert arrays.write_cohort(tmp_path, "downstream", arrays.Cohort(images, table, descriptors)) == images.shape
    back = arrays.load_cohort(tmp_path, "downstream")
    pd.testing.assert_frame_equal(back.table, table, check_exact=True)  # "0012" stays "0012", "NA" stays "NA"
    np.testing.assert_array_equal(back.images, images)
    np.testing.assert_array_equal(back.descriptors, descriptors)
    assert back.has_descriptors().tolist() == [True, True, False]


def test_arrays_carry_the_readers_tables_and_serve_without_data(data_dir, tmp_path):
    shutil.copytree(data_dir, tmp_path / "data")
    shapes = stacking.write_arrays(tmp_path / "data", tmp_path / "arrays", progress=False)
    assert list(shapes) == ["openbhb", "downstream", "travelling"]
    bhb = OpenBHB(data_dir / "openbhb", split=layout.SPLITS, crop=None)
    down = ManifestDataset(data_dir / "downstream", crop=None)
    travelling = ManifestDataset(data_dir / "travelling", crop=None)
    shutil.rmtree(tmp_path / "data")  # no later stage reads data/
    cohorts = arrays.load_arrays(tmp_path / "arrays")
    pd.testing.assert_frame_equal(cohorts["openbhb"].table, bhb.participants, check_exact=True)
    for name, dataset in (("downstream", down), ("travelling", travelling)):
        expected = dataset.frame.drop(columns=list(stacking.PATH_COLUMNS))
        pd.testing.assert_frame_equal(cohorts[name].table, expected, check_exact=True)
    for name, dataset in (("openbhb", bhb), ("downstream", down), ("travelling", travelling)):
        np.testing.assert_array_equal(cohorts[name].descriptors, dataset.descriptor_tables())
        np.testing.assert_array_equal(cohorts[name].images, dataset.images(progress=False))
    assert cohorts["travelling"].has_descriptors().tolist() == [True, False, True, True]
    cropped = arrays.load_arrays(tmp_path / "arrays", crop=(5, 6, 5))["downstream"].images
    assert cropped.shape[-3:] == (5, 6, 5)


def test_train_split_comes_from_the_arrays(data_dir, tmp_path):
    stacking.write_arrays(data_dir, tmp_path / "arrays", progress=False)
    config = params_section("pretrain", crop=None, image_dtype="float16", num_threads=1)
    data = load_train_data(tmp_path / "arrays", config.resolve("anatcl_global", 0).data, progress=False)
    train = OpenBHB(data_dir / "openbhb", split="train", crop=None)
    assert data.participant_ids == train.participants["participant_id"].tolist()
    np.testing.assert_array_equal(data.images.numpy(), train.images(dtype=np.float16, progress=False))
    np.testing.assert_array_equal(data.age.numpy(), train.participants["age"].to_numpy(np.float32))


def test_missing_or_inconsistent_arrays_are_refused(data_dir, tmp_path):
    config = params_section("pretrain", num_threads=1)
    with pytest.raises(FileNotFoundError, match=r"openbhb.tsv: not found; expected the cohort stage's arrays"):
        load_train_data(tmp_path / "arrays", config.resolve("anatcl_global", 0).data, progress=False)
    stacking.write_arrays(data_dir, tmp_path / "arrays", progress=False)
    np.save(tmp_path / "arrays" / "downstream_roi.npy", np.zeros((2, 7, 68), np.float32))
    with pytest.raises(ValueError, match=r"downstream.npy: 6 images, 2 ROI tables and 6 table rows"):
        arrays.load_arrays(tmp_path / "arrays")


def test_a_cohort_that_fails_validation_writes_no_arrays_and_trains_nothing(data_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    participants = broken / "openbhb" / layout.PARTICIPANTS_FILE
    table = pd.read_csv(participants, sep="\t", dtype={"participant_id": str})
    table.loc[0, "age"] = -3.0  # an impossible age
    table.to_csv(participants, sep="\t", index=False)
    out = tmp_path / "cohort"
    with pytest.raises(CohortProblems, match="1 problem"):
        validate_cohorts(params_section("cohort"), broken, out, progress=False)
    assert "age" in (out / "validation.txt").read_text() and not (out / "arrays").exists()
    with pytest.raises(FileNotFoundError, match="cohort stage"):
        load_train_data(out / "arrays", params_section("pretrain").resolve("anatcl_global", 0).data, progress=False)


def test_the_cohort_notebook_validates_before_it_writes_the_arrays():
    source = (REPO / "notebooks" / "cohort.py").read_text()
    assert source.index("cohort.validate_cohorts(") < source.index("stacking.write_arrays(")


def test_only_the_cohort_stage_reads_data_and_every_later_stage_reads_its_arrays():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = {name: [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
            for name, stage in stages.items()}
    readers = {name for name, d in deps.items() if any(p == "data" or p.startswith("data/") for p in d)}
    assert readers == {"cohort"}
    assert "outputs/cohort/arrays" in [o if isinstance(o, str) else next(iter(o)) for o in stages["cohort"]["outs"]]
    for name in ("pretrain", "evaluate", "reference", "report"):
        assert "outputs/cohort/arrays" in deps[name], name
        assert "-p data_dir" not in stages[name]["cmd"], name
