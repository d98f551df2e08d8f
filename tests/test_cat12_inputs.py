"""CAT12 inputs as users have them (issue 10, item 3): upstream's crop, smoothed maps reported by name."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import params_section
from scipy.ndimage import gaussian_filter

from anatcl_core.data import io, layout, qc
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.data.validate_volume import check_volume
from anatcl_core.evaluation.embed import cropped_volume
from anatcl_core.synth import cohorts
from anatcl_core.synth.anatomy import make_population, sample_anatomy
from anatcl_core.synth.base import load_base
from anatcl_core.synth.render import render

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _marked(shape):
    """A volume whose value is its index on the second axis: a crop shows which slices it kept."""
    return np.broadcast_to(np.arange(shape[1], dtype=np.float32)[None, :, None], shape).copy()


def test_upstream_crop_is_8_to_136_at_1_5_mm_in_every_reader(tmp_path):
    volume = _marked(layout.CAT12_SHAPE)  # (121, 145, 121)
    expected = volume[:, 8:136, :]  # what users of the released weights feed: 121 x 128 x 121
    assert expected.shape == layout.UPSTREAM_INPUT_SHAPE
    assert layout.upstream_crop(1.5) == (slice(None), slice(8, 136), slice(None))
    np.testing.assert_array_equal(io.center_crop(volume, io.resolve_crop("upstream", volume.shape)), expected)
    root = tmp_path / "openbhb"
    layout.subject_dir(root, "train", "1").mkdir(parents=True)
    np.save(layout.subject_file(root, "train", "1", layout.VBM_KIND), volume[None])
    pd.DataFrame([dict(participant_id="1", age=30.0, sex=0, site=1, split="train")]).to_csv(
        root / layout.PARTICIPANTS_FILE, sep="\t", index=False)
    np.testing.assert_array_equal(OpenBHB(root)._volume(0), expected)
    nifti = io.save_nifti(volume, layout.CAT12_AFFINE, tmp_path / "mwp1sub-1.nii")
    np.testing.assert_array_equal(cropped_volume(nifti), expected)
    pd.DataFrame([dict(participant_id="1", image=nifti.name, age=30.0, sex=0, site="A", roi="")]).to_csv(
        tmp_path / "manifest.tsv", sep="\t", index=False)
    np.testing.assert_array_equal(ManifestDataset(tmp_path / "manifest.tsv")[0]["image"][0].numpy(), expected)


@pytest.mark.parametrize("voxel_mm", io.KNOWN_VOXEL_MM)
def test_crop_keeps_the_same_stretch_of_brain_at_every_voxel_size(voxel_mm):
    """At 1.5 mm the first and last kept slice centres lie 12 mm and 202.5 mm past the grid's first one."""
    kept = layout.upstream_crop(voxel_mm)[1]
    assert abs(kept.start * voxel_mm - 8 * 1.5) <= voxel_mm / 2
    assert abs((kept.stop - 1) * voxel_mm - 135 * 1.5) <= voxel_mm / 2
    full = layout.grid_shape(voxel_mm)
    assert io.crop_slices(full, layout.crop_shape(voxel_mm))[1] == kept


def _synthetic_maps(voxel_mm, n=3):
    config = params_section("synth", voxel_mm=voxel_mm, n_sites=3, n_external_sites=1)
    base, population = load_base(voxel_mm), make_population(cohorts.generator(0, "population", 0))
    sites = cohorts.pretraining_sites(config)
    for i in range(n):
        site = sites[i % len(sites)]
        anatomy = sample_anatomy(config, population, cohorts.generator(7, "pretrain", 1, i), 25.0 + 15 * i, i % 2)
        yield render(base, anatomy, site, cohorts.generator(7, "render", 1, i), config)


@pytest.fixture(scope="module")
def maps():
    """Unsmoothed synthetic GM maps (what CAT12's mwp1 stands for here) at 1.5 and 2 mm."""
    return {voxel_mm: list(_synthetic_maps(voxel_mm)) for voxel_mm in (1.5, 2.0)}


@pytest.mark.parametrize("voxel_mm", [1.5, 2.0])
def test_smoothing_criterion_separates_mwp1_from_s6mwp1(maps, voxel_mm):
    raw, smoothed = [], []
    for image in maps[voxel_mm]:
        raw.append(qc.high_frequency_fraction(image, voxel_mm))
        s6 = gaussian_filter(image.astype(np.float64), 6.0 * FWHM_TO_SIGMA / voxel_mm)  # CAT12's s6
        smoothed.append(qc.high_frequency_fraction(s6, voxel_mm))
    # the threshold lies well inside the gap (calibration in anatcl_core/data/qc.py)
    assert min(raw) > 5 * qc.HF_THRESHOLD and max(smoothed) < qc.HF_THRESHOLD / 3, (raw, smoothed)


def test_smoothed_map_is_reported_with_its_file_name(maps, tmp_path, caplog):
    image = maps[1.5][0]
    plain = io.save_nifti(image, layout.CAT12_AFFINE, tmp_path / "mwp1sub-01.nii")
    s6 = gaussian_filter(image, 6.0 * FWHM_TO_SIGMA / 1.5)
    smoothed = io.save_nifti(s6, layout.CAT12_AFFINE, tmp_path / "s6mwp1sub-01.nii")
    with caplog.at_level(logging.WARNING, logger="anatcl_core.data.validate"):
        assert check_volume(plain, "01")[0] == []
        assert not caplog.records
        problems, voxel_mm = check_volume(smoothed, "01")
    assert problems == [] and voxel_mm == 1.5  # a warning, not a failure: the map is valid otherwise
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert str(smoothed) in record.getMessage() and "looks smoothed" in record.getMessage()
    assert "s6mwp1" in record.getMessage() and "\n" not in record.getMessage()
    # coarse grids cannot tell: nothing is said there
    assert qc.smoothing_warning(s6[::3, ::3, ::3], 4.5, "x") is None
