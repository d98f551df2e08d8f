"""Volume I/O: orientation is preserved exactly; only singleton channel axes are dropped.

REFERENCE §4: a public loader transposed then reshaped every volume. A volume with a distinct marker
on each axis must come back identical, axis by axis, through NIfTI, npy, the OpenBHB layout and a
manifest, and upstream's crop must remove exactly the expected, centred slices of the second axis.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from anatcl_core.data import io, layout
from anatcl_core.data.manifest import ManifestDataset
from anatcl_core.data.openbhb import OpenBHB
from conftest import VOXEL_MM, write_manifest, write_openbhb

SHAPE = layout.grid_shape(VOXEL_MM)  # (21, 25, 21)


def marked_volume(shape=SHAPE) -> np.ndarray:
    """Unique value per voxel: v[i, j, k] = 10000 i + 100 j + k (scaled), so any transpose,
    reshape or flip changes it; plus a marker at the low end of each axis."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volume = (10000 * i + 100 * j + k).astype(np.float32) / 1e6
    volume[0, :, :] += 0.1  # marker on axis 0
    volume[:, 0, :] += 0.2  # marker on axis 1
    volume[:, :, 0] += 0.4  # marker on axis 2
    return volume


def assert_axes(volume: np.ndarray, expected: np.ndarray) -> None:
    assert volume.shape == expected.shape
    for axis in range(3):  # profile along each axis: the markers sit at index 0
        others = tuple(a for a in range(3) if a != axis)
        np.testing.assert_allclose(volume.sum(axis=others, dtype=np.float64),
                                   expected.sum(axis=others, dtype=np.float64), rtol=1e-12)  # fmt: skip
    np.testing.assert_array_equal(volume, expected)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".npy"])
def test_round_trip_is_identical(tmp_path, suffix):
    volume = marked_volume()
    path = tmp_path / f"v{suffix}"
    if suffix == ".npy":
        np.save(path, volume)
    else:
        io.save_nifti(volume, layout.grid_affine(VOXEL_MM), path)
    loaded, affine = io.load_volume(path)
    assert loaded.dtype == np.float32
    assert_axes(loaded, volume)
    if suffix == ".npy":
        assert affine is None
    else:
        np.testing.assert_allclose(affine, layout.grid_affine(VOXEL_MM))
        assert nib.aff2axcodes(affine) == ("L", "A", "S")


@pytest.mark.parametrize("shape", [(1, *SHAPE), (1, 1, *SHAPE), (*SHAPE, 1)])
def test_singleton_axes_are_squeezed(tmp_path, shape):
    volume = marked_volume()
    np.save(tmp_path / "v.npy", volume.reshape(shape))  # only adds singleton axes
    assert_axes(io.load_volume(tmp_path / "v.npy")[0], volume)


def test_nifti_with_singleton_fourth_axis(tmp_path):
    volume = marked_volume()
    nib.save(nib.Nifti1Image(volume[..., None], layout.grid_affine(VOXEL_MM)), tmp_path / "v.nii.gz")
    assert_axes(io.load_volume(tmp_path / "v.nii.gz")[0], volume)


def test_true_4d_is_an_error(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(io.VolumeError, match=r"v\.nii\.gz.*expected one 3D volume.*\(21, 25, 21, 3\)"):
        io.load_volume(tmp_path / "v.nii.gz")


def test_corrupt_and_unknown_files(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(io.VolumeError, match="bad.nii.gz: cannot read"):
        io.load_volume(tmp_path / "bad.nii.gz")
    (tmp_path / "v.mgz").write_bytes(b"")
    with pytest.raises(io.VolumeError, match="unknown volume format"):
        io.load_volume(tmp_path / "v.mgz")


def test_infer_voxel_and_upstream_crop():
    assert io.infer_voxel_mm(layout.CAT12_SHAPE) == 1.5
    assert io.infer_voxel_mm((41, 49, 41)) == 4.5
    assert io.infer_voxel_mm(SHAPE) == 9.0
    assert io.infer_voxel_mm((20, 25, 21)) is None
    assert io.resolve_crop("upstream", layout.CAT12_SHAPE) == layout.UPSTREAM_INPUT_SHAPE
    assert io.resolve_crop("upstream", SHAPE) == layout.crop_shape(VOXEL_MM) == (21, 22, 21)
    assert io.resolve_crop(None, SHAPE) is None
    with pytest.raises(ValueError, match="CAT12 grid"):
        io.resolve_crop("upstream", (20, 20, 20))
    with pytest.raises(ValueError, match="does not fit"):
        io.resolve_crop((21, 30, 21), SHAPE)
    # 145 -> 128 keeps slices 8..135 of the second axis (NeuroSpin's centre crop)
    assert io.crop_slices(layout.CAT12_SHAPE, layout.UPSTREAM_INPUT_SHAPE)[1] == slice(8, 136)


def expected_crop(volume: np.ndarray) -> np.ndarray:
    """Upstream crop at 9 mm written out by hand: 25 -> 22 on axis 1 drops slice 0 and 23, 24."""
    assert volume.shape == (21, 25, 21)
    return volume[:, 1:23, :]


def test_orientation_through_openbhb_layout(tmp_path):
    root = write_openbhb(tmp_path / "ob", split_sizes=(1, 0, 0))
    volume = marked_volume()
    np.save(layout.subject_file(root, "train", "0001", layout.VBM_KIND), volume[None])
    item = OpenBHB(root, crop=None)[0]
    assert_axes(item["image"][0].numpy(), volume)
    cropped = OpenBHB(root)[0]["image"][0].numpy()
    assert_axes(cropped, expected_crop(volume))
    # the marker on axis 1 (slice 0) is exactly what the centred crop removed
    assert not np.isclose(cropped[:, 0, :] - volume[:, 1, :], 0.2).any()


@pytest.mark.parametrize("fmt", ["nii.gz", "npy"])
def test_orientation_through_manifest(tmp_path, fmt):
    path = write_manifest(tmp_path / "dn", n=1, fmt=fmt)
    image = path.parent / pd.read_csv(path, sep="\t")["image"][0]
    volume = marked_volume()
    if fmt == "npy":
        np.save(image, volume)
    else:
        io.save_nifti(volume, layout.grid_affine(VOXEL_MM), image)
    assert_axes(ManifestDataset(path, crop=None)[0]["image"][0].numpy(), volume)
    assert_axes(ManifestDataset(path)[0]["image"][0].numpy(), expected_crop(volume))


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_stacked_volumes_are_the_same_bytes_for_any_number_of_decoding_threads(tmp_path, workers):
    paths = []
    for i in range(7):
        paths.append(io.save_nifti(np.full(SHAPE, i, np.float32) + marked_volume(), np.eye(4), tmp_path / f"{i}.nii.gz"))
    read = lambda i: io.load_volume(paths[i])[0]  # noqa: E731
    serial = np.stack([read(i) for i in range(7)])[:, None]
    stacked = io.stack_volumes(7, read, workers=workers, progress=False)
    assert stacked.dtype == np.float32 and stacked.tobytes() == serial.tobytes()


def test_a_volume_of_another_shape_is_named_whatever_thread_read_it(tmp_path):
    shapes = [SHAPE] * 4 + [(SHAPE[0] + 1, *SHAPE[1:])] + [SHAPE] * 2
    with pytest.raises(ValueError, match=r"^subject-4: shape .*; expected "):
        io.stack_volumes(7, lambda i: np.zeros(shapes[i], np.float32), workers=3, progress=False,
                         where=lambda i: f"subject-{i}")
