"""What a map's header (or a ``.npy`` shape) says, checked before any voxel is read.

A 4D series or an oversized grid is refused from its header, so memory never grows with what a
file holds (a 1,000-volume series once reached 1.08 GB before it was refused); a qform and an
sform that disagree are refused because readers differ on which one wins. :mod:`anatcl_core.data.io`
calls these on every map it reads.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from anatcl_core.data.files import check_regular, one_line

#: Most voxels one map may hold (2**24, 64 MiB as float32): over twice CAT12's grid at 1 mm, far
#: above the model's 1.5 mm input; checked from the header (or ``.npy`` shape) before any voxel is read.
MAX_VOXELS = 2**24

#: Largest difference (mm, any affine entry) between a qform and an sform that are both set: the
#: qform's float32 quaternion rounds the sform by ~1e-5 mm; a real disagreement is a voxel or more.
QFORM_SFORM_TOLERANCE_MM = 0.01


class VolumeError(ValueError):
    """A volume file cannot be read, or its array is not a single 3D volume."""


def singleton_axes(shape: Sequence[int], where: str | Path) -> tuple[int, ...]:
    """The singleton channel axes of ``shape`` that :func:`anatcl_core.data.io.as_spatial` drops (:mod:`anatcl_core.data.io` docstring)."""
    shape, ndim = tuple(shape), len(shape)
    lead = 0
    while ndim - lead > 3 and shape[lead] == 1:
        lead += 1
    trail = ndim
    while trail - lead > 3 and shape[trail - 1] == 1:
        trail -= 1
    if trail - lead != 3 or lead > 2 or ndim - trail > 2:
        raise VolumeError(
            f"{where}: expected one 3D volume (X, Y, Z), optionally with singleton channel axes "
            f"such as (1, X, Y, Z); got shape {shape}"
        )
    return tuple(range(lead)) + tuple(range(trail, ndim))


def spatial_shape(shape: Sequence[int], where: str | Path = "array") -> tuple[int, ...]:
    """``(X, Y, Z)`` of a stored ``shape`` (a header's), checked against :data:`MAX_VOXELS`.

    Raises:
        VolumeError: not one 3D volume (a 4D series), or more voxels than :data:`MAX_VOXELS`.
    """
    dropped = singleton_axes(shape, where)
    spatial = tuple(int(n) for i, n in enumerate(shape) if i not in dropped)
    voxels = int(np.prod(spatial, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise VolumeError(f"{where}: shape {tuple(shape)} holds {voxels} voxels; expected at most {MAX_VOXELS} "
                          "(CAT12's grid at 1 mm has 7,109,137)")
    return spatial


def check_header(header: nib.Nifti1Header, path: Path) -> None:
    """Shape and geometry from the header alone, before any voxel is read.

    A 4D series or an oversized grid is refused here, so memory never grows with what a file
    holds; a qform and an sform that both claim to be valid (code > 0) but place the voxels
    differently are refused because readers disagree on which one wins (nibabel and SPM take the
    sform, others the qform): the map's geometry would depend on the reader.
    """
    spatial_shape(header.get_data_shape(), path)
    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    if qform_code > 0 and sform_code > 0:
        gap_mm = float(np.abs(qform - sform).max())
        if gap_mm > QFORM_SFORM_TOLERANCE_MM:
            raise VolumeError(f"{path}: qform (code {int(qform_code)}) and sform (code {int(sform_code)}) disagree "
                              f"by up to {gap_mm:.3g} mm; expected one geometry (equal affines, or one code 0)")


def read_header(path: Path) -> nib.Nifti1Header:
    """The NIfTI-1 or -2 header of ``path``: its first 540 bytes only (inflated from ``.gz``).

    Raises:
        VolumeError: no regular file, a damaged gzip stream, or no NIfTI header.
    """
    check_regular(path, "a NIfTI map (.nii or .nii.gz)", VolumeError)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(540)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise VolumeError(f"{path}: cannot read the NIfTI header ({one_line(err)}); expected a NIfTI map") from None
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    if not sizes & {348, 540}:  # NIfTI-1 / NIfTI-2 header size, either byte order
        raise VolumeError(f"{path}: not a NIfTI file (header size field {head[:4].hex() or 'missing'}; "
                          "expected 348 or 540)")
    klass = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
    size = klass.template_dtype.itemsize
    if len(head) < size:
        raise VolumeError(f"{path}: NIfTI header truncated ({len(head)} of {size} bytes)")
    return klass(head[:size], check=False)
