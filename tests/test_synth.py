"""Synthetic benchmark: layout, determinism, atomic writing, orientation and the CLI (tiny cohorts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import params_mapping, params_section

from anatcl_core.config import ConfigError, from_mapping, load_section
from anatcl_core.data import layout
from anatcl_core.data.freesurfer import DESIKAN_COLUMNS, DESIKAN_SHAPE
from anatcl_core.synth import SynthConfig, synthesize
from anatcl_core.synth import __main__ as cli
from anatcl_core.synth import cohorts
from anatcl_core.synth.anatomy import make_population, sample_anatomy
from anatcl_core.synth.base import CLASSES, load_base
from anatcl_core.synth.generate import write_nifti_gz
from anatcl_core.synth.render import render

TINY = params_section("synth", voxel_mm=12.0, n_pretrain=16, n_sites=3, n_external_sites=1, downstream_scale=0.02,
                      n_downstream_sites=2, n_travelling=2)  # fmt: skip


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize(TINY, out, progress=False)
    return out


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = tmp_path / "again"
    synthesize(TINY, again, progress=False)
    assert _hashes(tiny) == _hashes(again)
    other = tmp_path / "other"
    synthesize(SynthConfig(**{**TINY.__dict__, "seed": 1}), other, progress=False)
    first, second = _hashes(tiny), _hashes(other)
    # splits (hence folders) may differ with the seed; resource/ names the channels and regions only
    shared = {k for k in first.keys() & second.keys() if not k.startswith("openbhb/resource/")}
    assert len(shared) > 0.5 * len(first)
    assert all(first[k] != second[k] for k in shared)


def test_same_bytes_with_any_number_of_workers(tiny, tmp_path):
    serial = tmp_path / "serial"
    synthesize(TINY, serial, progress=False, workers=1)
    three = tmp_path / "three"
    synthesize(TINY, three, progress=False, workers=3)  # the fixture used the usable cores
    assert _hashes(serial) == _hashes(tiny) == _hashes(three)


def test_openbhb_layout(tiny):
    root = tiny / "openbhb"
    table = pd.read_csv(root / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
    assert tuple(table.columns) == layout.PARTICIPANTS_COLUMNS
    assert len(table) == TINY.n_pretrain and table["participant_id"].is_unique
    assert set(table["split"]) <= set(layout.SPLITS) and set(table["diagnosis"]) == {"control"}
    assert table["participant_id"].str.fullmatch(r"\d+").all()
    train_sites = set(table.loc[table["split"] == "train", "site"])
    assert set(table.loc[table["split"] == "internal_test", "site"]) <= train_sites
    assert not set(table.loc[table["split"] == "external_test", "site"]) & train_sites
    assert (table["tiv"] > table["gmv"] + table["wmv"]).all() and table["csfv"].gt(0).all()
    shape = layout.grid_shape(TINY.voxel_mm)
    for split, pid in zip(table["split"], table["participant_id"]):
        vbm = np.load(layout.subject_file(root, split, pid, layout.VBM_KIND))
        roi = np.load(layout.subject_file(root, split, pid, layout.DESIKAN_KIND))
        assert vbm.shape == (1, *shape) and vbm.dtype == np.float32
        assert roi.shape == DESIKAN_SHAPE and roi.dtype == np.float32 and (roi > 0).all()
        assert 0.0 <= vbm.min() and 0.3 < vbm.max() < 1.6


def test_manifests(tiny):
    pre = pd.read_csv(tiny / "openbhb" / layout.PARTICIPANTS_FILE, sep="\t", dtype={"participant_id": str})
    down = pd.read_csv(tiny / "downstream" / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str})
    trav = pd.read_csv(tiny / "travelling" / layout.MANIFEST_FILE, sep="\t", dtype={"participant_id": str, "subject": str})
    assert not set(pre["participant_id"]) & set(down["participant_id"])
    assert set(layout.MANIFEST_COLUMNS) <= set(down.columns) and set(layout.MANIFEST_COLUMNS) <= set(trav.columns)
    assert [c for c in down.columns if c.startswith("dx_")] == [f"dx_{t}" for t in cohorts.TASKS]
    for study, spec in cohorts.STUDIES.items():
        counts = cohorts.group_counts(TINY, study).sum()  # per group, over the study's sites
        for task, cases in spec["tasks"].items():
            labels = down[f"dx_{task}"].dropna()
            assert labels.sum() == counts[list(cases)].sum() and (labels == 0).sum() == counts["control"], task
    assert len(down) == cohorts.n_downstream(TINY)
    in_ad_study = down["dx_ad"].notna() | down["dx_mci"].notna()
    assert down["score_mmse"].notna().sum() == in_ad_study.sum()  # the whole AD study
    assert down["score_panss"].notna().sum() == down["dx_scz_a"].sum() + down["dx_scz_b"].sum()
    assert down["score_ads"].notna().sum() == down["dx_asd"].sum()
    assert trav["participant_id"].is_unique and len(trav) == TINY.n_travelling * TINY.n_sites
    assert (trav.groupby("subject")["site"].nunique() == TINY.n_sites).all()
    assert (trav.groupby("subject")[["age", "sex"]].nunique() == 1).all().all()
    for root, manifest in ((tiny / "downstream", down), (tiny / "travelling", trav)):
        for image, roi in zip(manifest["image"], manifest["roi"]):
            nifti = nib.load(root / image)
            assert nifti.shape == layout.grid_shape(TINY.voxel_mm) and nifti.get_data_dtype() == np.float32
            np.testing.assert_allclose(nifti.affine, layout.grid_affine(TINY.voxel_mm))
            assert np.load(root / roi).shape == DESIKAN_SHAPE


def test_existing_output_refused_and_crash_leaves_nothing(tiny, tmp_path, monkeypatch):
    with pytest.raises(FileExistsError, match="already exists"):
        synthesize(TINY, tiny, progress=False)
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk full")
        return render(*args, **kwargs)

    monkeypatch.setattr("anatcl_core.synth.generate.render", failing_render)
    with pytest.raises(RuntimeError, match="disk full"):  # one process: the patch reaches render
        synthesize(TINY, tmp_path / "crashed", progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_a_worker_failure_reaches_the_caller():
    from anatcl_core.synth.generate import _Writer

    site = cohorts.pretraining_sites(TINY)[0]
    good = (("pretrain", 1, 0), ("render", 1, 0), site, 30.0, 1, None, 0.0)
    bad = (("pretrain", 1, 1), ("render", 1, 1), None, 30.0, 1, None, 0.0)  # no site: fails in the worker
    writer = _Writer(TINY, total=2, progress=False, workers=2)
    try:
        with pytest.raises(AttributeError, match="fs_ct"):
            list(writer.subjects([good, bad]))
    finally:
        writer.close()


def test_orientation_left_anterior_superior(tmp_path):
    """Enlarging left frontal regions brightens the map at negative x, positive y, read back from NIfTI."""
    config = params_section("synth", voxel_mm=4.5, site_noise_max=0.0, deformation_mm=0.0)
    base = load_base(config.voxel_mm)
    population = make_population(cohorts.generator(0, "population", 0))
    site = cohorts.make_site(config, 0, (20.0, 40.0), cohorts.generator(0, "site", 0))
    anatomy = sample_anatomy(config, population, np.random.default_rng(0), 30.0, 1)
    boosted = anatomy.log_modulation.copy()
    boosted[[CLASSES.index("lh-superiorfrontal"), CLASSES.index("lh-rostralmiddlefrontal")]] += 0.7
    maps = []
    for log_mod in (anatomy.log_modulation, boosted):
        image = render(base, anatomy.__class__(**{**anatomy.__dict__, "log_modulation": log_mod}), site,
                       np.random.default_rng(1), config)  # fmt: skip
        write_nifti_gz(image, base.affine, tmp_path / "map.nii.gz")
        nifti = nib.load(tmp_path / "map.nii.gz")
        maps.append(np.asarray(nifti.dataobj))
    diff = np.clip(maps[1] - maps[0], 0, None)
    centre = np.argwhere(diff > 0).T.astype(float)
    weights = diff[diff > 0]
    mm = nifti.affine[:3, :3] @ (centre * weights).sum(1) / weights.sum() + nifti.affine[:3, 3]
    assert mm[0] < -10 and mm[1] > 10 and mm[2] > 10  # left, anterior, superior
    # the atlas through the affine: every lh region lies left of the midline
    classes = base.classes
    lh = np.argwhere((classes >= 0) & (classes < len(DESIKAN_COLUMNS) // 2)).T
    rh = np.argwhere((classes >= len(DESIKAN_COLUMNS) // 2) & (classes < len(DESIKAN_COLUMNS))).T
    assert (base.affine[0, :3] @ lh + base.affine[0, 3]).max() < 5
    assert (base.affine[0, :3] @ rh + base.affine[0, 3]).min() > -5
    cerebellum = np.argwhere(classes == CLASSES.index("Left-Cerebellum-Cortex")).mean(0)
    assert (base.affine[:3, :3] @ cerebellum + base.affine[:3, 3])[1:].max() < -20  # posterior, inferior


def test_nifti_gzip_is_reproducible(tmp_path):
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    write_nifti_gz(array, np.eye(4), tmp_path / "a.nii.gz")
    write_nifti_gz(array, np.eye(4), tmp_path / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj), array)


def test_config_is_strict_and_params_section_loads():
    with pytest.raises(ConfigError, match=r"^synth: unknown key\(s\) \['voxel_size'\]$"):
        from_mapping(SynthConfig, params_mapping("synth", voxel_size=3.0), "synth")
    with pytest.raises(ConfigError, match="n_external_sites"):
        from_mapping(SynthConfig, params_mapping("synth", n_sites=3, n_external_sites=3), "synth")
    without = {k: v for k, v in params_mapping("synth").items() if k not in ("seed", "deformation_mm")}
    with pytest.raises(ConfigError, match=r"^synth: missing key\(s\) \['seed', 'deformation_mm'\]$"):
        from_mapping(SynthConfig, without, "synth")  # no default falls in for a key params.yaml lacks
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    assert isinstance(load_section(params, "synth", SynthConfig), SynthConfig)


def test_cli_writes_and_refuses_existing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synth": params_mapping(
        "synth", voxel_mm=12.0, n_pretrain=6, n_sites=2, n_external_sites=1, downstream_scale=0.01,
        n_downstream_sites=2, n_travelling=1)}))
    assert cli.main(["--params", str(params), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out" / "openbhb" / layout.PARTICIPANTS_FILE).is_file()
    assert cli.main(["--params", str(params), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    params.write_text("synth:\n  voxel: 12.0\n")
    assert cli.main(["--params", str(params), "--out", str(tmp_path / "x")]) == 2


def test_cohort_passes_the_project_validator(tiny):
    from anatcl_core.data import validate

    paths = [tiny / "openbhb", tiny / "downstream" / layout.MANIFEST_FILE, tiny / "travelling" / layout.MANIFEST_FILE]
    problems = validate.validate_paths(paths, progress=False)
    assert problems == [], "\n".join(map(str, problems[:5]))


def test_config_rejects_a_non_positive_downstream_scale():
    with pytest.raises(ConfigError, match="downstream_scale"):
        from_mapping(SynthConfig, params_mapping("synth", downstream_scale=0.0), "synth")


def test_studies_spread_groups_over_sites_with_different_case_shares():
    config = params_section("synth")
    for study, spec in cohorts.STUDIES.items():
        counts = cohorts.group_counts(config, study)  # (sites, groups)
        assert counts.shape[0] == config.n_downstream_sites >= 5 and (counts > 0).all().all(), study
        assert counts.sum().to_dict() == spec["groups"], study
        share = counts.drop(columns="control").sum(axis=1) / counts.sum(axis=1)
        assert share.between(0.3, 0.7).all() and share.max() - share.min() > 0.1, (study, share)
    table = cohorts.downstream_table(config, cohorts.downstream_sites(config))
    for site, members in table.groupby("site"):  # frequency matching within each site
        case = members["condition"] != ""
        assert abs(members.loc[case, "age"].mean() - members.loc[~case, "age"].mean()) < 4.0, site
        assert abs(members.loc[case, "sex"].mean() - members.loc[~case, "sex"].mean()) < 0.05, site


def test_external_sites_recruit_inside_the_training_sites_age_range():
    config = params_section("synth")
    sites = cohorts.pretraining_sites(config)
    train = sites[: config.n_sites - config.n_external_sites]
    low, high = min(s.ages[0] for s in train), max(s.ages[1] for s in train)
    for site in sites[len(train):]:
        assert low <= site.ages[0] and site.ages[1] <= high, site.code
        assert sum(min(s.ages[1], site.ages[1]) > max(s.ages[0], site.ages[0]) for s in train) >= 3  # overlaps


def test_condition_signatures_name_desikan_regions_and_groups_name_conditions():
    from anatcl_core.data.freesurfer import DESIKAN_REGIONS
    from anatcl_core.synth.anatomy import CONDITIONS, PATTERN_NAMES

    for name, spec in CONDITIONS.items():
        assert set(spec["signature"]) <= set(DESIKAN_REGIONS) and spec["pattern"] in PATTERN_NAMES, name
    assert {c for c, _ in cohorts.GROUPS.values() if c} == set(CONDITIONS)
    assert all(set(spec["groups"]) <= set(cohorts.GROUPS) for spec in cohorts.STUDIES.values())
