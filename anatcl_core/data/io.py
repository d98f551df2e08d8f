"""Reading and writing single volumes without ever reshaping spatial data.

A public loader once transposed and then *reshaped* every volume, shearing each slice
(REFERENCE §4). Here the spatial axes ``(X, Y, Z)`` of a file are returned in the file's own order:
only singleton channel axes are dropped (``np.squeeze`` on named axes) and crops are slices.

Also here, because the OpenBHB reader, the manifest reader and the validator share them: the
CAT12 grids a shape can belong to (:func:`infer_voxel_mm`) and the crop to upstream's input
(:func:`resolve_crop`, :func:`center_crop`).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from anatcl_core.atomic import atomic_write
from anatcl_core.data import layout
from anatcl_core.data.files import not_regular
from anatcl_core.data.volume_header import (  # noqa: F401  (VolumeError, MAX_VOXELS: public here too)
    MAX_VOXELS,
    VolumeError,
    check_header,
    read_header,
    singleton_axes,
    spatial_shape,
)

log = logging.getLogger(__name__)

#: Voxel sizes (mm) whose CAT12 grid a bare ``.npy`` shape is matched against.
KNOWN_VOXEL_MM: tuple[float, ...] = (1.5, 2.0, 2.25, 2.5, 3.0, 3.75, 4.0, 4.5, 5.0, 6.0, 7.5, 9.0)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

def is_volume_file(path: str | Path) -> bool:
    """True for ``.nii``, ``.nii.gz`` and ``.npy`` names."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES) or name.endswith(".npy")


def as_spatial(array: np.ndarray, where: str | Path = "array") -> np.ndarray:
    """View of ``array`` with its singleton channel axes dropped: ``(X, Y, Z)``.

    Accepted: ``(X, Y, Z)``, ``(1, X, Y, Z)`` (OpenBHB), ``(1, 1, X, Y, Z)``, ``(X, Y, Z, 1)`` and
    ``(X, Y, Z, 1, 1)`` (NIfTI's time / vector axes). Nothing is transposed or reshaped.

    Raises:
        VolumeError: for any other shape, e.g. a true 4D ``(X, Y, Z, 3)`` series.
    """
    axes = singleton_axes(array.shape, where)
    return np.squeeze(array, axis=axes) if axes else array


def _read_nifti(path: Path) -> nib.Nifti1Image:
    """A NIfTI image: its header checked first (:func:`~anatcl_core.data.volume_header.check_header`), then the file read whole.

    ``nib.load`` inflates only as far as the voxels go, so gzip's CRC (at the stream's end) is
    never checked and a flipped bit inside the stream gives changed voxels without an error.
    Here ``gzip.decompress`` reads the whole stream in one pass and checks CRC and length.
    """
    check_header(read_header(path), path)
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.decompress(data)  # BadGzipFile / zlib.error / EOFError on corruption
    sizes = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
    return (nib.Nifti2Image if 540 in sizes else nib.Nifti1Image).from_bytes(data)


def check_dtype(dtype: np.dtype, where: str | Path, scaled: bool = False) -> None:
    """Refuse arrays that are no GM map: boolean, complex, object, or integer without a scale.

    Args:
        dtype: the stored dtype.
        scaled: the file carries a scale factor (NIfTI ``scl_slope``), as CAT12's integer maps do.

    Raises:
        VolumeError: naming the file and the dtype.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or (dtype.kind in "iu" and scaled):
        return
    kind = {"b": "boolean", "c": "complex", "i": "integer", "u": "integer"}.get(dtype.kind, dtype.kind)
    extra = " without a scale factor" if dtype.kind in "iu" else ""
    raise VolumeError(f"{where}: {kind} voxels ({dtype}){extra}; expected real floating-point GM values "
                      "(or integers with a NIfTI scl_slope)")


def load_volume(path: str | Path, mmap: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one volume from ``.nii``, ``.nii.gz`` or ``.npy``.

    Args:
        path: the file.
        mmap: for ``.npy``, return a read-only memory map (its stored dtype) instead of a float32
            copy; NIfTI is always read into memory as float32.

    Returns:
        ``(array (X, Y, Z), affine (4, 4) or None)`` - the affine is None for ``.npy``.

    Raises:
        VolumeError: no regular file, unknown suffix, unreadable / truncated file, not a single
            3D volume, more than :data:`MAX_VOXELS` voxels, or a qform and sform that disagree.
    """
    path = Path(path)
    name = path.name.lower()
    reason = not_regular(path)
    if reason:  # never opened: a FIFO would block, /dev/zero would never end
        raise VolumeError(f"{path}: {'file not found' if reason == 'missing file' else reason}")
    try:
        if name.endswith(".npy"):
            raw = np.load(path, mmap_mode="r", allow_pickle=False)
            check_dtype(raw.dtype, path)
            spatial_shape(raw.shape, path)  # before the (memory-mapped) voxels are copied
            array = as_spatial(raw, path)
            return (array if mmap else np.asarray(array, dtype=np.float32)), None
        if name.endswith(NIFTI_SUFFIXES):
            image = _read_nifti(path)
            slope = image.dataobj.slope
            check_dtype(image.get_data_dtype(), path, scaled=np.isfinite(slope) and slope not in (0, 1))
            array = as_spatial(np.asanyarray(image.dataobj), path)
            return np.asarray(array, dtype=np.float32), np.asarray(image.affine, dtype=np.float64)
    except VolumeError:
        raise
    except FileNotFoundError:
        raise VolumeError(f"{path}: file not found") from None
    except Exception as err:  # nibabel / numpy raise many types for corrupt files
        reason = " ".join(str(err).split())  # one line, whatever the library wrote
        raise VolumeError(f"{path}: cannot read volume ({type(err).__name__}: {reason})") from None
    raise VolumeError(f"{path}: unknown volume format; expected .nii, .nii.gz or .npy")


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write a float32 ``(X, Y, Z)`` volume with ``affine`` as its sform and qform (code 1).

    Raises:
        VolumeError: if ``array`` is not 3D or ``affine`` is not ``(4, 4)``.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise VolumeError(f"{path}: save_nifti expects a 3D array, got shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise VolumeError(f"{path}: affine must be (4, 4), got {affine.shape}")
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise VolumeError(f"{path}: save_nifti writes .nii or .nii.gz files")
    data = image.to_bytes()  # bytes, then one atomic write: nib.save would guess the format from the temp name
    with atomic_write(path) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def infer_voxel_mm(shape: Sequence[int]) -> float | None:
    """Voxel size whose CAT12 grid (:func:`layout.grid_shape`) is ``shape``, or None."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or shape[0] < 2:
        return None
    candidates = list(KNOWN_VOXEL_MM) + [
        round((layout.CAT12_SHAPE[0] - 1) * layout.CAT12_VOXEL_MM / (shape[0] - 1), 6)
    ]
    for voxel_mm in candidates:
        if layout.grid_shape(voxel_mm) == shape:
            return float(voxel_mm)
    return None


def resolve_crop(
    crop: str | Sequence[int] | None, shape: Sequence[int]
) -> tuple[int, int, int] | None:
    """The ``(x, y, z)`` a volume of ``shape`` is centre-cropped to, or None for no crop.

    Args:
        crop: ``"upstream"`` (upstream AnatCL's 121x128x121 input at the grid's voxel size,
            :func:`layout.crop_shape`, the grid inferred from ``shape``), an explicit ``(x, y, z)``,
            or None.
        shape: spatial shape ``(X, Y, Z)`` of the volume.

    Raises:
        ValueError: unknown crop, ``"upstream"`` on a shape that is no CAT12 grid (nor already its
            crop), or a crop larger than the volume.
    """
    shape = tuple(int(n) for n in shape)
    if crop is None:
        return None
    if isinstance(crop, str):
        if crop != "upstream":
            raise ValueError(f"crop must be 'upstream', None or (x, y, z), got {crop!r}")
        voxel_mm = infer_voxel_mm(shape)
        if voxel_mm is None:
            if any(layout.crop_shape(v) == shape for v in KNOWN_VOXEL_MM):
                return shape  # already at upstream's crop
            raise ValueError(
                f"crop='upstream' needs a CAT12 grid shape (e.g. {layout.CAT12_SHAPE} at 1.5 mm, "
                f"{layout.grid_shape(4.5)} at 4.5 mm); got {shape}"
            )
        return layout.crop_shape(voxel_mm)
    target = tuple(int(n) for n in crop)
    if len(target) != 3 or any(t < 1 or t > s for t, s in zip(target, shape)):
        raise ValueError(f"crop {tuple(crop)} does not fit in a volume of shape {shape}")
    return target  # type: ignore[return-value]


def crop_slices(shape: Sequence[int], target: Sequence[int]) -> tuple[slice, slice, slice]:
    """Centre-crop slices: start ``(n - t) // 2`` on each axis (145 -> 128 keeps 8..135)."""
    starts = [(int(n) - int(t)) // 2 for n, t in zip(shape, target)]
    return tuple(slice(s, s + int(t)) for s, t in zip(starts, target))  # type: ignore[return-value]


def center_crop(array: np.ndarray, target: Sequence[int] | None) -> np.ndarray:
    """Centre-crop the last three axes of ``(..., X, Y, Z)`` to ``target`` (a view; None: as is)."""
    if target is None:
        return array
    return array[(Ellipsis, *crop_slices(array.shape[-3:], target))]


def stack_volumes(count: int, read: Callable[[int], np.ndarray], dtype: type = np.float32,
                  workers: int | None = None, progress: bool = True, where: Callable[[int], object] = str,
                  desc: str = "load images") -> np.ndarray:
    """``read(i)`` for ``i < count`` stacked as ``(count, 1, X, Y, Z)`` of ``dtype``, decoded by threads.

    gzip's inflate and file reads release the GIL, so ``workers`` threads decode files side by side
    (measured in ``benchmarks/bench_cohort_read.py``); each volume lands in its own slot, so the
    stack is the same bytes for any ``workers``.

    Args:
        count: number of volumes.
        read: volume ``i`` as an ``(X, Y, Z)`` array.
        dtype: float32 or float16.
        workers: decoding threads (None: the usable cores, at most 8).
        progress: show a progress bar.
        where: names volume ``i`` in the error when its shape differs from the first's.
        desc: the progress bar's label.

    Raises:
        ValueError: a dtype other than float32/float16, or a volume whose shape differs from the first.
    """
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"images dtype must be float32 or float16, got {dtype}")
    if workers is None:
        from anatcl_core.cores import usable_cores  # noqa: PLC0415 (cores imports nothing of data)

        workers = min(8, usable_cores())
    first = read(0)
    out = np.empty((count, 1, *first.shape), dtype=dtype)
    out[0, 0] = first

    def fill(i: int) -> None:
        volume = read(i)
        if volume.shape != first.shape:
            raise ValueError(f"{where(i)}: shape {volume.shape}; expected {first.shape}")
        out[i, 0] = volume

    with tqdm(total=count, initial=1, desc=desc, disable=not progress, leave=False) as bar:
        if workers <= 1:
            for i in range(1, count):
                fill(i)
                bar.update()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(fill, range(1, count)):  # in order: the first failure is raised
                    bar.update()
    return out
