"""On-disk layout: OpenBHB paths and CAT12 grids at any resolution."""

import numpy as np
import pytest

from anatcl_core.data import layout


def test_subject_file_follows_openbhb():
    path = layout.subject_file("/d", "external_test", "42", layout.VBM_KIND)
    assert str(path) == "/d/val/derivatives/sub-42/ses-1/sub-42_preproc-cat12vbm_desc-gm_T1w.npy"
    assert layout.subject_dir("/d", "train", "7").parts[-4:] == ("train", "derivatives", "sub-7", "ses-1")
    with pytest.raises(ValueError, match="unknown split"):
        layout.subject_dir("/d", "test", "7")


@pytest.mark.parametrize("voxel_mm", [1.5, 3.0, 4.5, 6.0, 9.0])
def test_grids_share_cat12_field_of_view(voxel_mm):
    shape, affine = layout.grid_shape(voxel_mm), layout.grid_affine(voxel_mm)
    # first and last voxel centres land on CAT12's, within half a voxel
    ref_last = layout.CAT12_AFFINE @ np.array([*(n - 1 for n in layout.CAT12_SHAPE), 1])
    last = affine @ np.array([*(n - 1 for n in shape), 1])
    np.testing.assert_allclose(affine[:3, 3], layout.CAT12_AFFINE[:3, 3])
    assert np.all(np.abs(last - ref_last) <= voxel_mm / 2)
    crop = layout.crop_shape(voxel_mm)
    assert crop[0] == shape[0] and crop[2] == shape[2] and crop[1] < shape[1]


def test_native_grid_is_cat12():
    assert layout.grid_shape(1.5) == (121, 145, 121)
    assert layout.crop_shape(1.5) == (121, 128, 121)
    np.testing.assert_array_equal(layout.grid_affine(1.5), layout.CAT12_AFFINE)
