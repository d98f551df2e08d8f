"""Weighted InfoNCE (y-Aware, ExpW, threshold) and the AnatCL objective (REFERENCE §1.1).

Notation (paper symbols as locals): a batch of B subjects seen in V views gives n = V*B embeddings
``z_a`` (L2-normalised), ``s_ab = z_a . z_b / tau``; a subject kernel ``w`` in [0, 1] is tiled over
views, the self-pair a = b is excluded everywhere, and weights are row-normalised,
``w~_ab = w_ab / sum_{c != a} w_ac``. Then

    L_w = (1/n) sum_a sum_{b != a} -w~_ab * log( exp(s_ab) / D_ab )

    y-Aware    D_ab = sum_{c != a} exp(s_ac)                        (Dufumier et al., MICCAI 2021)
    ExpW       D_ab = sum_{c != a} exp(s_ac * (1 - w_ac))           (Barbano et al., ISBI 2023)
    threshold  D_ab = exp(s_ab) + sum_{c != a, w_ac < w_ab} exp(s_ac)  (same paper; per pair)

SimCLR is y-Aware with :func:`~anatcl_core.contrastive.kernels.delta_kernel`, SupCon with
:func:`~anatcl_core.contrastive.kernels.label_kernel`. Deliberate differences from public code
(REFERENCE §1.1): weights are normalised by row (not by column), there is no ``tau / 0.07``
factor, ExpW applies no row-max shift before the ``(1 - w)`` factor, and the threshold
denominator is per (anchor, positive) pair, not per anchor. Log-sum-exps are evaluated stably
(a shift that leaves the value unchanged).

Anchors whose weights are all zero (``sum_{c != a} w_ac = 0``, possible with V = 1 or a ``relu``
kernel) have no positive: they contribute 0 and are left out of the mean (which is over the
remaining anchors). If no anchor has a positive the loss is a graph-connected 0 and a warning is
logged.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from anatcl_core.contrastive.kernels import MAPPINGS, MODES, age_kernel, anatomical_kernel

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("yaware", "expw", "threshold")


def _check_args(z: torch.Tensor, w: torch.Tensor, temperature: float, method: str) -> None:
    _check_hparams(temperature, method)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (B, V, d), got {tuple(z.shape)}")
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"w must have shape (B, B), got {tuple(w.shape)}")
    if w.shape[0] != z.shape[0]:
        raise ValueError(f"w is {tuple(w.shape)} but z has B = {z.shape[0]} subjects")
    if z.shape[0] * z.shape[1] < 2:
        raise ValueError(f"need at least 2 embeddings (B * V >= 2), got z {tuple(z.shape)}")
    if not torch.isfinite(w).all() or w.min() < 0 or w.max() > 1:
        raise ValueError("w must be finite with values in [0, 1]")


def _is_positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_hparams(temperature: float, method: str) -> None:
    if not _is_positive(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _threshold_log_denominator(
    s: torch.Tensor, w: torch.Tensor, self_mask: torch.Tensor
) -> torch.Tensor:
    """``log D_ab = log(exp(s_ab) + sum_{c != a, w_ac < w_ab} exp(s_ac))`` in O(n^2) memory.

    Each row is sorted by weight (the self-pair pushed past every real weight), an exclusive
    running log-sum-exp of the sorted logits gives the sum over the k lightest columns, and
    ``k_ab = #{c != a : w_ac < w_ab}`` is found by a left binary search -- so ties (equal weights)
    are never counted in each other's denominators, whatever their order after sorting.
    """
    n = s.shape[0]
    w_sort_key = w.masked_fill(self_mask, 2.0)  # (n, n): self sorts last, never "lighter"
    w_sorted, order = torch.sort(w_sort_key, dim=1)  # (n, n), (n, n)
    s_sorted = s.gather(1, order)  # (n, n): logits in weight order
    csum = torch.logcumsumexp(s_sorted, dim=1)  # (n, n): log sum of the first k+1
    empty = torch.full((n, 1), float("-inf"), dtype=s.dtype, device=s.device)
    lighter = torch.cat([empty, csum[:, :-1]], dim=1)  # (n, n): exclusive prefix, k = 0..n-1
    k = torch.searchsorted(w_sorted.contiguous(), w_sort_key.contiguous(), side="left")  # (n, n)
    log_lighter = lighter.gather(1, k.clamp(max=n - 1))  # (n, n): log sum_{w_ac < w_ab} exp(s_ac)
    has_lighter = k > 0  # (n, n)
    # logaddexp(s, -inf) is s, but its backward can give NaN: branch instead
    safe = torch.where(has_lighter, log_lighter, s)  # (n, n)
    return torch.where(has_lighter, torch.logaddexp(s, safe), s)  # (n, n)


def weighted_infonce(
    z: torch.Tensor, w: torch.Tensor, temperature: float = 0.1, method: str = "yaware"
) -> torch.Tensor:
    """Weighted InfoNCE over all views of a batch (module docstring, REFERENCE §1.1).

    ``L_w = (1/n) sum_a sum_{b != a} -w~_ab log(exp(s_ab) / D_ab)``, n = V*B anchors, with
    ``D_ab`` of the chosen ``method``.

    Args:
        z: ``(B, V, d)`` embeddings (V views of B subjects); L2-normalised here.
        w: ``(B, B)`` subject kernel in [0, 1]; ``w[i, i]`` weighs the other views of subject i
            (1 for every kernel of :mod:`anatcl_core.contrastive.kernels`). Symmetry is not required.
        temperature: tau > 0.
        method: ``"yaware"``, ``"expw"`` or ``"threshold"``.

    Returns:
        Scalar loss in the dtype/device of ``z``. Anchors without positive weight are excluded
        (module docstring).

    Raises:
        ValueError: on wrong shapes, a mismatched B, w outside [0, 1], tau <= 0 or unknown method.
    """
    _check_args(z, w, temperature, method)
    B, V, _ = z.shape
    n = V * B
    z = F.normalize(z, dim=-1)  # (B, V, d)
    anchors = z.transpose(0, 1).reshape(n, -1)  # (n, d): a = v*B + i, view-major
    s = anchors @ anchors.T / temperature  # (n, n)
    w_full = w.to(s.dtype).repeat(V, V)  # (n, n): w_full[a, b] = w[a % B, b % B]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)  # (n, n)
    w_full = w_full.masked_fill(self_mask, 0.0)  # (n, n): self-pair excluded
    row_sum = w_full.sum(dim=1, keepdim=True)  # (n, 1)
    valid = row_sum.squeeze(1) > 0  # (n,)
    w_tilde = w_full / row_sum.clamp(min=torch.finfo(s.dtype).tiny)  # (n, n), rows sum to 1 or 0

    if method == "yaware":
        masked = s.masked_fill(self_mask, float("-inf"))  # (n, n)
        log_d = torch.logsumexp(masked, dim=1, keepdim=True)  # (n, 1)
    elif method == "expw":
        scaled = (s * (1.0 - w_full)).masked_fill(self_mask, float("-inf"))  # (n, n)
        log_d = torch.logsumexp(scaled, dim=1, keepdim=True)  # (n, 1)
    else:
        log_d = _threshold_log_denominator(s, w_full, self_mask)  # (n, n): one per pair
    # -log(exp(s_ab)/D_ab) = log D_ab - s_ab; w_tilde is 0 on the diagonal and on non-positives
    per_pair = (log_d - s).masked_fill(self_mask, 0.0)  # (n, n)
    per_anchor = (w_tilde * per_pair).sum(dim=1)  # (n,)
    n_valid = int(valid.sum())
    if n_valid == 0:
        logger.warning("weighted_infonce: no anchor has a positive weight; returning 0")
        return (s * 0.0).sum()
    return per_anchor[valid].sum() / n_valid


class WeightedInfoNCE(nn.Module):
    """:func:`weighted_infonce` as a module; arguments are validated at construction.

    Args:
        temperature: tau > 0.
        method: ``"yaware"``, ``"expw"`` or ``"threshold"``.
    """

    def __init__(self, temperature: float = 0.1, method: str = "yaware") -> None:
        super().__init__()
        _check_hparams(temperature, method)
        self.temperature = float(temperature)
        self.method = method

    def forward(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``z`` (B, V, d), ``w`` (B, B) -> scalar loss."""
        return weighted_infonce(z, w, self.temperature, self.method)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, method={self.method!r}"


class AnatCLLoss(nn.Module):
    """AnatCL objective ``L = lambda_anat * L_w(W_anat) + lambda_age * L_w(W_age)`` (REFERENCE §1).

    ``W_anat`` is :func:`~anatcl_core.contrastive.kernels.anatomical_kernel` of the normalised descriptors
    (``mode``, ``mapping``); ``W_age`` is the age RBF with ``sigma_years``. Both terms use the same
    ``temperature`` and ``method``. A term whose lambda is 0 is not computed (its part is 0).

    Args (keyword-only):
        lambda_anat: weight of the anatomical term, >= 0.
        lambda_age: weight of the age term, >= 0 (not both 0).
        sigma_years: age RBF bandwidth in years (upstream 2.0).
        temperature: tau > 0 (upstream 0.1).
        method: ``"yaware"``, ``"expw"`` or ``"threshold"``.
        mode: ``"global"`` or ``"local"`` anatomical kernel.
        mapping: cosine -> weight mapping, ``"affine"`` or ``"relu"``.
        anat_method: denominator of the anatomical term alone (``None``: ``method``), for the
            ablation that varies only the anatomical term's denominator.
    """

    def __init__(
        self,
        *,
        lambda_anat: float = 1.0,
        lambda_age: float = 1.0,
        sigma_years: float = 2.0,
        temperature: float = 0.1,
        method: str = "yaware",
        mode: str = "global",
        mapping: str = "affine",
        anat_method: str | None = None,
    ) -> None:
        super().__init__()
        _check_hparams(temperature, method)
        anat_method = method if anat_method is None else anat_method
        _check_hparams(temperature, anat_method)
        for name, lam in (("lambda_anat", lambda_anat), ("lambda_age", lambda_age)):
            if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {lam!r}")
        if lambda_anat == 0 and lambda_age == 0:
            raise ValueError("lambda_anat and lambda_age are both 0: the loss would be constant")
        if not _is_positive(sigma_years):
            raise ValueError(f"sigma_years must be a positive finite number, got {sigma_years!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
        self.lambda_anat, self.lambda_age = float(lambda_anat), float(lambda_age)
        self.sigma_years, self.temperature = float(sigma_years), float(temperature)
        self.method, self.mode, self.mapping = method, mode, mapping
        self.anat_method = anat_method

    def forward(
        self, z: torch.Tensor, age: torch.Tensor | None, descriptors: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its unweighted parts.

        Args:
            z: ``(B, V, d)`` projections.
            age: ``(B,)`` ages in years (may be None if ``lambda_age == 0``).
            descriptors: ``(B, C, R)`` normalised descriptors (may be None if ``lambda_anat == 0``).

        Returns:
            ``(total, {"anat": L_w(W_anat), "age": L_w(W_age)})``; the parts are detached copies
            for logging (0 for a skipped term).
        """
        zero = z.new_zeros(())
        total, parts = zero, {"anat": zero.detach().clone(), "age": zero.detach().clone()}
        if self.lambda_anat > 0:
            if descriptors is None:
                raise ValueError("descriptors are required when lambda_anat > 0")
            w_anat = anatomical_kernel(descriptors.to(z.device), self.mode, self.mapping)  # (B, B)
            term = weighted_infonce(z, w_anat, self.temperature, self.anat_method)
            total = total + self.lambda_anat * term
            parts["anat"] = term.detach().clone()
        if self.lambda_age > 0:
            if age is None:
                raise ValueError("age is required when lambda_age > 0")
            w_age = age_kernel(age.to(z.device), self.sigma_years)  # (B, B)
            term = weighted_infonce(z, w_age, self.temperature, self.method)
            total = total + self.lambda_age * term
            parts["age"] = term.detach().clone()
        return total, parts

    def extra_repr(self) -> str:
        return (f"lambda_anat={self.lambda_anat}, lambda_age={self.lambda_age}, "
                f"sigma_years={self.sigma_years}, temperature={self.temperature}, "
                f"method={self.method!r}, anat_method={self.anat_method!r}, mode={self.mode!r}, "
                f"mapping={self.mapping!r}")
