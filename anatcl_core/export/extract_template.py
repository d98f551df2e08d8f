"""BrainFMBench feature extractor of a 3D ResNet encoder trained with the AnatCL compendium.

This file is the template of a submission's ``extract.py`` (:mod:`anatcl_core.export.brainfmbench`
copies it and fills :data:`CONFIG`). It is self-contained: it imports only torch, numpy and
nibabel (the submission's ``requirements.txt``) and the standard library, never ``anatcl_core``, so
the leaderboard's machines run it without the compendium installed.

``extract(input_dir, output_csv, weights_dir)`` reads ``<input_dir>/<subject_id>/normalized.nii.gz``,
resamples each map onto the grid the encoder was trained on (trilinear, through the two affines;
a map already on that grid is used as it is), centre-crops it as the run did, stores it at the
run's image dtype (raw grey-matter values, no intensity rescaling, as in training) and writes the
encoder's frozen ``feature_dim`` features as ``subject_id,f0,...,f{D-1}``. With several weight
files (upstream's five folds) the features are their mean. The weights' sha256 is checked before
they are loaded; an empty ``weights_dir`` gives a warning and the features of an untrained network
of a fixed seed (the right width, meaningless values: the validator's case).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import warnings

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Filled at export: network, grid, crop, dtype, weight files and their sha256, seed.
CONFIG: dict = {}

INPUT_FILE = "normalized.nii.gz"
_BLOCKS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
           "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _norm(kind: str, channels: int) -> nn.Module:
    """The normalisation layer the run trained with (same parameter names as its checkpoint)."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, max(1, channels // 4)), channels)
    return nn.Identity()


class _Block(nn.Module):
    """A residual block: two 3^3 convolutions (basic) or 1-3-1 with expansion 4 (bottleneck)."""

    def __init__(self, kind: str, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.expansion = 4 if kind == "bottleneck" else 1
        out_planes = planes * self.expansion
        if kind == "bottleneck":
            self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv3 = nn.Conv3d(planes, out_planes, 1, bias=False)
            self.bn3 = _norm(norm, out_planes)
        else:
            self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn1, self.bn2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False),
                                            _norm(norm, out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.expansion == 4:
            out = self.bn3(self.conv3(F.relu(out)))
        return F.relu(out + shortcut)


class Encoder(nn.Module):
    """The 3D ResNet encoder: (B, C, X, Y, Z) -> (B, feature_dim), global average pooled."""

    def __init__(self, depth: str, base_width: int, norm: str, in_channels: int = 1):
        super().__init__()
        kind, layers = _BLOCKS[depth]
        self.conv1 = nn.Conv3d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(norm, base_width)
        in_planes = base_width
        for stage, n_blocks in enumerate(layers):
            blocks = []
            for i in range(n_blocks):
                blocks.append(_Block(kind, in_planes, base_width * 2**stage, 2 if stage and not i else 1, norm))
                in_planes = base_width * 2**stage * blocks[-1].expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.feature_dim = in_planes
        for module in self.modules():  # the untrained network of the validator's case
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)  # (B, w, X/4, Y/4, Z/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, F, X/32, Y/32, Z/32)
        return torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)  # (B, F)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _encoder_state(path: str) -> dict:
    """The encoder's tensors of a weights file (``{"model": ...}`` or a bare state dict), prefixes dropped."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no pickled code runs
    state = loaded["model"] if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) else loaded
    out = {}
    for key, value in state.items():
        key = str(key).removeprefix("module.")
        if key.startswith("encoder."):
            out[key.removeprefix("encoder.")] = value
    return out


def load_encoders(weights_dir: str) -> list[Encoder]:
    """One encoder per weight file of :data:`CONFIG` (sha256 checked), or an untrained one if none is there.

    Raises:
        ValueError: a file whose sha256 is not the exported one, or only some of the files present.
    """
    spec = CONFIG["model"]
    files = [os.path.join(weights_dir, entry["file"]) for entry in CONFIG["weights"]]
    present = [path for path in files if os.path.isfile(path)]
    if not present:
        warnings.warn(f"{weights_dir}: none of the weight files {[e['file'] for e in CONFIG['weights']]} "
                      f"is there; writing the features of an UNTRAINED network (seed {CONFIG['seed']}): "
                      "right width, meaningless values", RuntimeWarning, stacklevel=3)
        with torch.random.fork_rng():
            torch.manual_seed(CONFIG["seed"])
            return [Encoder(**spec).eval()]
    if len(present) != len(files):
        raise ValueError(f"{weights_dir}: weight files {sorted(set(files) - set(present))} are missing")
    encoders = []
    for path, entry in zip(files, CONFIG["weights"]):
        found = sha256_file(path)
        if found != entry["sha256"]:
            raise ValueError(f"{path}: sha256 {found} differs from the exported {entry['sha256']}; refused")
        encoder = Encoder(**spec)
        encoder.load_state_dict(_encoder_state(path), strict=True)
        encoders.append(encoder.eval())
    return encoders


def _resample(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``volume`` trilinearly resampled onto the model's grid (zeros outside the map's field of view)."""
    shape = tuple(CONFIG["grid"]["shape"])
    target = np.asarray(CONFIG["grid"]["affine"], dtype=np.float64)
    if volume.shape == shape and np.allclose(affine, target, atol=1e-4):
        return volume  # already on the grid: no interpolation
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)  # (X, Y, Z, 3)
    to_source = np.linalg.inv(affine) @ target  # model voxel -> map voxel
    source = index @ to_source[:3, :3].T + to_source[:3, 3]  # (X, Y, Z, 3) map voxel coordinates
    sizes = np.array(volume.shape, dtype=np.float64)
    normalised = 2.0 * source / np.maximum(sizes - 1.0, 1.0) - 1.0  # align_corners=True convention
    grid = torch.from_numpy(normalised[..., ::-1].copy())[None]  # (1, X, Y, Z, 3), (z, y, x) order
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float64))[None, None]  # (1, 1, x, y, z)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0, 0].numpy()


def model_input(path: str) -> np.ndarray:
    """The encoder's ``(1, X, Y, Z)`` float32 input of one map: resampled, centre-cropped, run's dtype."""
    image = nib.load(path)
    volume = np.asarray(image.get_fdata(dtype=np.float32))
    while volume.ndim > 3 and volume.shape[-1] == 1:  # NIfTI's singleton time / vector axes
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected one 3D volume, got shape {volume.shape}")
    volume = _resample(volume, np.asarray(image.affine, dtype=np.float64))
    crop = CONFIG["crop"]
    if crop is not None:
        starts = [(n - t) // 2 for n, t in zip(volume.shape, crop)]
        volume = volume[tuple(slice(s, s + t) for s, t in zip(starts, crop))]
    # stored as the run stored its training images (float16 rounds), computed in float32
    return np.asarray(volume, dtype=CONFIG["image_dtype"]).astype(np.float32)[None]


def subjects(input_dir: str) -> list[tuple[str, str]]:
    """``(subject_id, map path)`` of every subject folder holding ``normalized.nii.gz``, sorted by id.

    Raises:
        FileNotFoundError: no subject folder holds one.
    """
    found = []
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name, INPUT_FILE)
        if os.path.isfile(path):
            found.append((name, path))
        elif os.path.isdir(os.path.join(input_dir, name)):
            warnings.warn(f"{os.path.join(input_dir, name)}: no {INPUT_FILE}; subject skipped", RuntimeWarning)
    if not found:
        raise FileNotFoundError(f"{input_dir}: no <subject_id>/{INPUT_FILE} inside")
    return found


def extract(input_dir, output_csv, weights_dir):
    """Write the frozen encoder features of every subject of ``input_dir`` to ``output_csv``.

    Args:
        input_dir: ``<subject_id>/normalized.nii.gz`` folders.
        output_csv: the CSV written: ``subject_id,f0,...,f{D-1}``, one row per subject.
        weights_dir: the files of ``weights.txt`` (empty: an untrained network, with a warning).
    """
    encoders = load_encoders(weights_dir)
    rows = []
    with torch.inference_mode():
        for subject_id, path in subjects(input_dir):
            x = torch.from_numpy(model_input(path))[None]  # (1, 1, X, Y, Z)
            features = torch.stack([encoder(x)[0] for encoder in encoders]).mean(0)  # (F,) mean of folds
            rows.append([subject_id, *(format(float(v), ".9g") for v in features.numpy())])  # float32 exact
    os.makedirs(os.path.dirname(os.path.abspath(output_csv)), exist_ok=True)
    with open(output_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["subject_id", *(f"f{j}" for j in range(CONFIG["feature_dim"]))])
        writer.writerows(rows)
