"""``anatcl embed``'s inputs: files, folders and manifests gathered into (participant id, image) pairs,
validated before any model is loaded, and read as the model's cropped input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from anatcl_core.data import io, layout
from anatcl_core.data.manifest import manifest_file, read_manifest
from anatcl_core.data.problem import Problem
from anatcl_core.data.validate_volume import check_volume, volume_files


class EmbedError(ValueError):
    """Inputs, weights or output that ``embed`` cannot use; the message names the culprit."""


def file_id(path: str | Path) -> str:
    """``sub-01_mwp1.nii.gz`` -> ``sub-01_mwp1``: the name without .nii / .nii.gz / .npy."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def gather_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(participant_id, image path)`` for every input, in order.

    A manifest (``.tsv`` or a folder with ``manifest.tsv``) gives its rows; any other folder gives
    its volume files (sorted, not recursive); a file is itself.

    Raises:
        EmbedError: a missing input, a folder without volumes, or one id twice.
    """
    subjects: list[tuple[str, Path]] = []
    for item in map(Path, inputs):
        if item.suffix == ".tsv" or (item.is_dir() and manifest_file(item).exists()):
            frame = read_manifest(item)  # FileNotFoundError / ManifestError name the file
            subjects += [(pid, Path(p)) for pid, p in zip(frame["participant_id"], frame["image"])]
        elif item.is_dir():
            files = volume_files(item)
            if not files:
                raise EmbedError(f"{item}: folder holds no .nii/.nii.gz/.npy files and no {layout.MANIFEST_FILE}")
            subjects += [(file_id(p), p) for p in files]
        elif item.exists() or io.is_volume_file(item):
            subjects.append((file_id(item), item))  # a missing volume is reported by the validator
        else:
            raise EmbedError(f"{item}: no such file or folder")
    repeated = sorted(pid for pid, n in Counter(pid for pid, _ in subjects).items() if n > 1)
    if repeated:
        raise EmbedError(f"participant id(s) {repeated} appear more than once among the inputs")
    return subjects


def cropped_volume(path: str | Path) -> np.ndarray:
    """The float32 ``(X, Y, Z)`` model input: the volume centre-cropped as the readers do."""
    volume, _ = io.load_volume(path, mmap=True)
    return np.array(io.center_crop(volume, io.resolve_crop("upstream", volume.shape)), dtype=np.float32)


def check_inputs(subjects: Sequence[tuple[str, Path]], progress: bool = True) -> list[Problem]:
    """Validator problems of every image, plus images whose model input shape differs from the rest."""
    problems: list[Problem] = []
    shapes: dict[int, tuple[int, ...]] = {}
    for index, (pid, path) in enumerate(tqdm(subjects, desc="validate", disable=not progress, leave=False)):
        found, voxel_mm = check_volume(path, pid)
        problems += found
        if not found and voxel_mm is not None:  # a valid map is on a CAT12 grid
            shapes[index] = io.resolve_crop("upstream", layout.grid_shape(voxel_mm))
    majority = Counter(shapes.values()).most_common(1)
    for index, shape in shapes.items():
        if shape != majority[0][0]:
            pid, path = subjects[index]
            problems.append(Problem(str(path), pid, f"model input shape {shape}; the other inputs give "
                                    f"{majority[0][0]} (one grid per run)"))
    return problems
