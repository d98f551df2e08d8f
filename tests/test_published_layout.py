"""OpenBHB's published layout both ways (issue 10, item 1).

NeuroSpin's own reader (``nidl.datasets.OpenBHB``, test-only, installed from requirements-test.txt)
reads the synthetic cohort with downloading disabled, and our reader reads a root that holds only
the per-split CSVs and ``resource/`` names, in a permuted channel and region order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import params_section
from nidl.datasets import OpenBHB as NidlOpenBHB

from anatcl_core.data import layout, resources
from anatcl_core.data.freesurfer import CHANNELS, DEFAULT_CHANNELS, DESIKAN_COLUMNS, PUBLISHED_CHANNELS, select_channels
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.data.validate import validate_openbhb
from anatcl_core.synth import synthesize

TINY = params_section("synth", voxel_mm=12.0, n_pretrain=16, n_sites=3, n_external_sites=1, downstream_scale=0.01,
                      n_downstream_sites=2, n_travelling=1)  # fmt: skip
#: nidl's split names -> ours.
NIDL_SPLITS = {"train": ("train",), "val": ("internal_test", "external_test"),
               "internal_val": ("internal_test",), "external_val": ("external_test",)}  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("published") / "cohort"
    synthesize(TINY, out, progress=False)
    return out / "openbhb"


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"nidl tried to download {args[1:] or kwargs}")

    monkeypatch.setattr(NidlOpenBHB, "download_file", refuse)
    monkeypatch.setattr(NidlOpenBHB, "download_dataset_split", refuse)


@pytest.mark.parametrize("nidl_split", list(NIDL_SPLITS))
def test_nidl_reads_the_synthetic_cohort(cohort, no_download, nidl_split):
    theirs = NidlOpenBHB(str(cohort), modality=("vbm", "fs_desikan_roi"), target="age", split=nidl_split,
                         streaming=True)  # fmt: skip
    ours = OpenBHB(cohort, split=NIDL_SPLITS[nidl_split], crop=None, channels=CHANNELS)
    assert len(theirs) == len(ours) > 0
    for i in range(len(ours)):
        data, age = theirs[i]
        mine = ours[i]
        np.testing.assert_array_equal(data["vbm"], mine["image"].numpy()[0])  # (X, Y, Z), uncropped
        np.testing.assert_array_equal(data["fs_desikan_roi"], ours.descriptor_table(i))  # (7, 68)
        np.testing.assert_array_equal(data["fs_desikan_roi"], mine["descriptors"].numpy())
        assert age == mine["age"]
    assert theirs.get_fs_labels(atlas="desikan") == list(DESIKAN_COLUMNS)


def test_csv_tables_equal_the_per_subject_tables(cohort):
    for folder in ("train", "val"):
        tables = resources.read_tables(cohort, folder)
        assert tables
        split = pd.read_csv(cohort / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
        splits = dict(zip(split["participant_id"], split["split"]))
        for pid, table in tables.items():
            assert layout.SPLIT_FOLDER[splits[pid]] == folder
            np.testing.assert_array_equal(table, np.load(layout.subject_file(cohort, splits[pid], pid, layout.DESIKAN_KIND)))


def _tables_only_root(cohort: Path, root: Path, channel_perm, region_perm, names=PUBLISHED_CHANNELS) -> Path:
    """participants.tsv + permuted resource/ names + CSVs written in that permuted order; no .npy."""
    root.mkdir()
    shutil.copy(cohort / layout.PARTICIPANTS_FILE, root / layout.PARTICIPANTS_FILE)
    channels = [names[i] for i in channel_perm]
    regions = [DESIKAN_COLUMNS[i] for i in region_perm]
    resources.write_resources(root, channels, regions)
    for folder in ("train", "val"):
        tables = resources.read_tables(cohort, folder)  # canonical order
        stacked = np.stack(list(tables.values()))[:, channel_perm][:, :, region_perm]
        resources.write_tables(resources.roi_csv_path(root, folder), list(tables), stacked, channels, regions)
    return root


def test_tables_only_root_in_permuted_order_gives_the_same_descriptors(cohort, tmp_path):
    channel_perm = [6, 2, 4, 0, 5, 1, 3]  # file row r holds canonical channel channel_perm[r]
    region_perm = np.random.default_rng(0).permutation(len(DESIKAN_COLUMNS))
    root = _tables_only_root(cohort, tmp_path / "tables", channel_perm, region_perm)
    assert not list(root.rglob("*.npy"))
    for split in layout.SPLITS:
        reference = OpenBHB(cohort, split=split).descriptor_tables()
        permuted = OpenBHB(root, split=split).descriptor_tables()
        np.testing.assert_array_equal(permuted, reference)
        np.testing.assert_array_equal(select_channels(permuted, DEFAULT_CHANNELS),
                                      select_channels(reference, DEFAULT_CHANNELS))  # fmt: skip
    # a naive reader that trusts the canonical row order would get other CT values
    naive = resources.read_roi_csv(resources.roi_csv_path(root, "train"))[1]  # (N, 7, 68) file order
    thickness = OpenBHB(cohort, split="train").descriptor_tables()[:, CHANNELS.index("average_thickness")]
    assert not np.allclose(np.sort(naive[:, 2], axis=None), np.sort(thickness, axis=None))
    assert [p.message for p in validate_openbhb(root, progress=False) if "ROI" in p.message or "channel" in p.message] == []


def test_per_subject_tables_follow_the_resource_names(cohort, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(cohort, root)
    for csv in root.rglob("desikan_roi_features.csv"):
        csv.unlink()  # an older copy: per-subject .npy only, but with resource/
    perm = [2, 0, 1, 3, 4, 5, 6]
    resources.write_resources(root, [PUBLISHED_CHANNELS[i] for i in perm])
    frame = pd.read_csv(root / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
    for pid, split in zip(frame["participant_id"], frame["split"]):
        path = layout.subject_file(root, split, pid, layout.DESIKAN_KIND)
        np.save(path, np.load(path)[perm])
    np.testing.assert_array_equal(OpenBHB(root).descriptor_tables(), OpenBHB(cohort).descriptor_tables())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: resources.write_resources(r.parent, ("area", *PUBLISHED_CHANNELS[1:])),
         "unknown FreeSurfer channel 'area'"),
        (lambda r: resources.write_resources(r.parent, PUBLISHED_CHANNELS[:6]),
         r"missing \['intrinsic_curvature_index'\]"),
        (lambda r: resources.write_resources(r.parent, regions=DESIKAN_COLUMNS[1:]),
         r"region names .* missing \['lh-bankssts'\]"),
        (lambda r: (r / "freesurfer_atlas-desikan_labels.txt").write_text("\n".join(DESIKAN_COLUMNS[::-1]) + "\n"),
         "resources.json desikan_roi.features name different Desikan features"),
        (lambda r: ((r / "freesurfer_channels.txt").unlink(),
                    (r / "resources.json").write_text(json.dumps({"desikan_roi": {"features": list(DESIKAN_COLUMNS)}}))),
         "no Desikan channels names"),
    ],
)  # fmt: skip
def test_unknown_or_missing_names_are_refused(cohort, tmp_path, edit, message):
    root = tmp_path / "bad"
    shutil.copytree(cohort, root)
    edit(root / resources.RESOURCE_DIR)
    with pytest.raises(resources.ResourceError, match=message) as caught:
        OpenBHB(root)
    assert str(root / resources.RESOURCE_DIR) in str(caught.value) and "\n" not in str(caught.value)
    assert any(message.split()[0].strip("\\") in p.message for p in validate_openbhb(root, progress=False))


def test_library_code_never_imports_the_test_clients():
    package = Path(__file__).parents[1] / "anatcl_core"
    for source in package.rglob("*.py"):
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in ("nidl", "anatcl"), f"{source}: {line.strip()}"
