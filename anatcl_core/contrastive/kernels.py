"""Subject kernels for weighted contrastive learning: age RBF, anatomy, SimCLR delta, SupCon labels.

Every kernel maps a batch of ``B`` subjects to a ``(B, B)`` matrix of weights in ``[0, 1]`` with
ones on the diagonal (two views of one subject are maximally positive), to be tiled over views by
:func:`anatcl_core.contrastive.losses.weighted_infonce` (REFERENCE §1.1-1.2).

The anatomical kernels compare FreeSurfer descriptors ``M_n`` of shape ``(C, R)`` (C measures, e.g.
CT, GMV, SA, on R Desikan regions), z-scored per region and measure with a
:class:`DescriptorNormalizer` fitted on the pretraining training split. The paper's equations could
not be retrieved; the local/global definitions follow REFERENCE §1.2 (a reconstruction).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anatcl_core.data.freesurfer import CHANNELS, channel_index, select_channels

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("global", "local")
MAPPINGS: tuple[str, ...] = ("affine", "relu")


def rbf_kernel(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian (RBF) kernel on a scalar label, as in y-Aware (Dufumier et al., MICCAI 2021).

    ``w_ab = exp(-(y_a - y_b)^2 / (2 sigma^2))``.

    Args:
        y: ``(B,)`` labels (e.g. age in years), any float dtype and device.
        sigma: bandwidth in the units of ``y``; must be > 0.

    Returns:
        ``(B, B)`` weights in ``(0, 1]``, exactly 1 on the diagonal; dtype/device of ``y``.

    Raises:
        ValueError: if ``y`` is not 1-D or ``sigma`` is not a positive finite number.
    """
    if not (isinstance(sigma, (int, float)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if y.ndim != 1:
        raise ValueError(f"y must have shape (B,), got {tuple(y.shape)}")
    y = y if y.is_floating_point() else y.double()
    diff = y[:, None] - y[None, :]  # (B, B)
    return torch.exp(-(diff**2) / (2.0 * sigma**2))  # (B, B); diff = 0 on the diagonal -> 1


def age_kernel(age: torch.Tensor, sigma_years: float) -> torch.Tensor:
    """Age kernel of AnatCL: :func:`rbf_kernel` on ages in years (upstream sigma = 2 years).

    Args:
        age: ``(B,)`` ages in years.
        sigma_years: RBF bandwidth in years.

    Returns:
        ``(B, B)`` weights in ``(0, 1]``.
    """
    return rbf_kernel(age, sigma_years)


def delta_kernel(
    batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """SimCLR kernel: ``w_ab = 1`` iff a and b are the same subject, i.e. the ``(B, B)`` identity.

    Tiled over views, the only positives of an anchor are the other views of its subject (NT-Xent).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return torch.eye(batch_size, device=device, dtype=dtype or torch.get_default_dtype())


def label_kernel(labels: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """SupCon kernel (Khosla et al., 2020): ``w_ab = 1`` iff ``labels[a] == labels[b]``, else 0.

    Args:
        labels: ``(B,)`` discrete labels (int or float with exact values).
        dtype: floating dtype of the result (default: torch's default dtype).

    Returns:
        ``(B, B)`` 0/1 weights on the device of ``labels``.
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]  # (B, B) bool
    return same.to(dtype or torch.get_default_dtype())


def _cosine_to_weight(cos: torch.Tensor, mapping: str) -> torch.Tensor:
    if mapping == "affine":
        w = (1.0 + cos) / 2.0
    elif mapping == "relu":
        w = cos.clamp(min=0.0)
    else:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    return w.clamp(0.0, 1.0)  # rounding can push a cosine a hair past +-1


def anatomical_kernel(
    descriptors: torch.Tensor, mode: str, mapping: str, eps: float = 1e-8
) -> torch.Tensor:
    """Anatomical similarity of subjects from normalised FreeSurfer descriptors (REFERENCE §1.2).

    With ``M_n`` the ``(C, R)`` descriptor table of subject n (C measures x R regions):

    - ``mode="local"``:  ``alpha_nm = (1/R) sum_r cos(M_n[:, r], M_m[:, r])`` -- the C measures of
      each region compared region by region. With a single channel (C = 1) the cosine of two
      scalars is their sign agreement (+1, -1, or 0 if either is 0): the kernel then counts the
      regions that lie on the same side of the population mean.
    - ``mode="global"``: ``beta_nm = (1/C) sum_j cos(M_n[j, :], M_m[j, :])`` -- each measure compared
      across the whole brain.

    The cosine in ``[-1, 1]`` is mapped to a weight by ``mapping``: ``"affine"`` ``(1 + cos) / 2`` or
    ``"relu"`` ``max(cos, 0)``. A zero vector (all-mean descriptors) has cosine 0 with everything
    (``eps`` guards the division). The diagonal is set to exactly 1, the kernel's maximum.

    Args:
        descriptors: ``(B, C, R)`` z-scored descriptors (see :class:`DescriptorNormalizer`).
        mode: ``"global"`` or ``"local"``.
        mapping: ``"affine"`` or ``"relu"``.
        eps: lower bound on vector norms.

    Returns:
        ``(B, B)`` symmetric weights in ``[0, 1]``, ones on the diagonal; dtype/device of the input.

    Raises:
        ValueError: on a wrong shape, mode or mapping.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    if descriptors.ndim != 3:
        raise ValueError(f"descriptors must have shape (B, C, R), got {tuple(descriptors.shape)}")
    m = descriptors if descriptors.is_floating_point() else descriptors.double()
    if mode == "local":
        u = F.normalize(m, dim=1, eps=eps)  # (B, C, R): each region's C-vector at unit norm
        cos = torch.einsum("ncr,mcr->nm", u, u) / m.shape[2]  # (B, B): mean over regions
    else:
        u = F.normalize(m, dim=2, eps=eps)  # (B, C, R): each measure's R-vector at unit norm
        cos = torch.einsum("ncr,mcr->nm", u, u) / m.shape[1]  # (B, B): mean over measures
    w = _cosine_to_weight(cos, mapping)  # (B, B)
    w = (w + w.T) / 2.0  # exact symmetry despite summation order
    return w.fill_diagonal_(1.0)


class DescriptorNormalizer:
    """Per-region, per-measure z-scoring of FreeSurfer ROI tables, fitted once on training data.

    ``x'[j, r] = (x[j, r] - mean[j, r]) / std[j, r]`` for the fitted channels ``j`` (selected by
    name from OpenBHB's 7-row tables) and regions ``r``. ``std`` is the population standard
    deviation (ddof = 0); a region with zero spread gets std 1 (logged) so it maps to 0.

    The statistics round-trip through a plain dict (:meth:`to_dict` / :meth:`from_dict`) saved in
    the checkpoint, so embeddings are reproducible without the training data.
    """

    def __init__(self) -> None:
        self.channels: tuple[str, ...] | None = None
        self.mean: np.ndarray | None = None  # (C, R) float64
        self.std: np.ndarray | None = None  # (C, R) float64
        self.n_subjects: int = 0

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, tables: np.ndarray | torch.Tensor, channels: Sequence[str]) -> DescriptorNormalizer:
        """Fit mean/std on ``(N, 7, R)`` full ROI tables (OpenBHB row order) for ``channels``."""
        arr = _as_numpy(tables, "tables")
        if arr.ndim != 3 or arr.shape[1] != len(CHANNELS):
            raise ValueError(f"fit expects ROI tables of shape (N, 7, R), got {arr.shape}")
        if arr.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 subjects, got {arr.shape[0]}")
        if not np.isfinite(arr).all():
            raise ValueError("fit: tables contain NaN or inf")
        sel = select_channels(arr, list(channels))  # (N, C, R)
        self.channels = tuple(channels)
        self.mean = sel.mean(axis=0)  # (C, R)
        std = sel.std(axis=0)  # (C, R)
        flat = std <= 1e-12 * np.maximum(np.abs(self.mean), 1.0)
        if flat.any():
            logger.warning("DescriptorNormalizer: %d (channel, region) cells have zero spread; "
                           "using std 1 for them", int(flat.sum()))
        self.std = np.where(flat, 1.0, std)
        self.n_subjects = int(arr.shape[0])
        return self

    def transform(self, tables: np.ndarray | torch.Tensor, selected: bool | None = None):
        """Z-score tables: ``(B, 7, R)``/``(7, R)`` full tables, or already-selected ``(B, C, R)``.

        Args:
            tables: numpy array or tensor; the result has the same type (a tensor keeps its
                device and float dtype; a numpy float32/float64 array keeps its dtype).
            selected: True if the rows are already the fitted channels in the fitted order; False
                if they are OpenBHB's 7 rows; None infers it from the row count (an error if
                ambiguous, i.e. all 7 channels fitted in a non-canonical order).

        Returns:
            ``(B, C, R)`` (or ``(C, R)``) z-scored descriptors.

        Raises:
            RuntimeError: if not fitted.
            ValueError: if the channel or region count does not match the fitted statistics.
        """
        if not self.fitted:
            raise RuntimeError("DescriptorNormalizer.transform called before fit/from_dict")
        assert self.channels is not None and self.mean is not None and self.std is not None
        n_ch, n_reg = self.mean.shape
        shape = tuple(tables.shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"tables must have shape (B, C, R) or (C, R), got {shape}")
        if shape[-1] != n_reg:
            raise ValueError(f"tables have {shape[-1]} regions, normaliser was fitted on {n_reg}")
        if selected is None:
            if shape[-2] == len(CHANNELS) and n_ch == len(CHANNELS):
                canonical = [channel_index(c) for c in self.channels] == list(range(len(CHANNELS)))
                if not canonical:
                    raise ValueError("ambiguous 7-row tables (all 7 channels fitted in a "
                                     "non-canonical order): pass selected=True or False")
            selected = shape[-2] != len(CHANNELS) or n_ch == len(CHANNELS)
        if not selected:
            if shape[-2] != len(CHANNELS):
                raise ValueError(f"tables have {shape[-2]} channels; expected 7 (full OpenBHB "
                                 f"tables) or {n_ch} (the fitted channels {list(self.channels)})")
            tables = select_channels(tables, list(self.channels))  # (..., C, R)
        elif shape[-2] != n_ch:
            raise ValueError(f"tables have {shape[-2]} channels, normaliser was fitted on "
                             f"{n_ch} ({list(self.channels)})")
        if isinstance(tables, torch.Tensor):
            out_dtype = tables.dtype if tables.is_floating_point() else torch.float64
            # float64 arithmetic where the device has it: raw volumes (~1e4 mm^3) minus their
            # mean lose digits in float32
            work = torch.float32 if tables.device.type == "mps" else torch.float64
            mean = torch.as_tensor(self.mean, dtype=work, device=tables.device)  # (C, R)
            std = torch.as_tensor(self.std, dtype=work, device=tables.device)  # (C, R)
            return ((tables.to(work) - mean) / std).to(out_dtype)  # (..., C, R)
        x = np.asarray(tables)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        return ((x - self.mean) / self.std).astype(dtype)  # (..., C, R)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python state (lists, floats, ints, str) for a checkpoint."""
        if not self.fitted:
            raise RuntimeError("DescriptorNormalizer.to_dict called before fit")
        assert self.mean is not None and self.std is not None and self.channels is not None
        return {"channels": list(self.channels), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "n_subjects": self.n_subjects}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> DescriptorNormalizer:
        """Rebuild from :meth:`to_dict` output; validates keys and shapes."""
        missing = {"channels", "mean", "std"} - set(state)
        if missing:
            raise ValueError(f"normalizer state lacks keys {sorted(missing)}")
        channels = tuple(str(c) for c in state["channels"])
        for c in channels:
            channel_index(c)  # KeyError on an unknown name
        mean = np.asarray(state["mean"], dtype=np.float64)
        std = np.asarray(state["std"], dtype=np.float64)
        if mean.ndim != 2 or mean.shape != std.shape or mean.shape[0] != len(channels):
            raise ValueError(f"normalizer state: mean {mean.shape} / std {std.shape} do not match "
                             f"{len(channels)} channels x R regions")
        if not (std > 0).all():
            raise ValueError("normalizer state: std must be > 0 everywhere")
        obj = cls()
        obj.channels, obj.mean, obj.std = channels, mean, std
        obj.n_subjects = int(state.get("n_subjects", 0))
        return obj


def _as_numpy(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)
