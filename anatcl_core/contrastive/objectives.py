"""Pretraining methods: params.yaml ``pretrain.methods.<name>`` and the loss each one minimises.

A method is an *objective* plus its settings:

- ``anatcl``: ``lambda_anat * L_w(W_anat) + lambda_age * L_w(W_age)`` (:class:`~anatcl_core.contrastive.losses.AnatCLLoss`).
  AnatCL-global/local (both lambdas 1), y-Aware (``lambda_anat = 0``), anatomy only
  (``lambda_age = 0``), ExpW and threshold (``denominator``) are all this objective.
- ``simclr``: NT-Xent, i.e. y-Aware with the delta kernel; needs augmentations (two identical
  views give a constant loss and it learns nothing).
- ``supervised``: L1 brain-age regression through a linear head (ages z-scored on the train split).
- ``random``: no training; the seeded initialisation is the floor of every probe.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

import torch
import torch.nn.functional as F
from torch import nn

from anatcl_core.config import NonNegative, NonNegativeInt, Positive, PositiveInt, section
from anatcl_core.contrastive.kernels import delta_kernel
from anatcl_core.contrastive.losses import AnatCLLoss, WeightedInfoNCE
from anatcl_core.data.augment import AUGMENTATIONS
from anatcl_core.data.freesurfer import Channels

OBJECTIVES: tuple[str, ...] = ("anatcl", "simclr", "supervised", "random")
#: ``pretrain`` recipe keys a method may override (ablation variants).
RECIPE_OVERRIDES: tuple[str, ...] = ("channels", "sigma_years", "temperature", "mapping", "depth", "base_width",
                                     "epochs")
Augmentations = Annotated[tuple[Literal[tuple(AUGMENTATIONS)], ...], Field(min_length=1)]
Depth = Literal["resnet18", "resnet34", "resnet50"]


@section
class MethodConfig:
    """One pretraining method (``pretrain.methods.<name>``; field = yaml key = keyword argument).

    Unlike the params sections, its fields keep their defaults: they are the one home of a method's
    unset keys, and params.yaml's method entries do not repeat them (``yaware`` sets neither
    ``mode`` nor ``denominator``: ``global`` and ``yaware`` come from here).

    Attributes:
        objective: ``anatcl``, ``simclr``, ``supervised`` or ``random`` (module docstring).
        lambda_anat: weight of the anatomical term (``anatcl`` only).
        lambda_age: weight of the age term (``anatcl`` only).
        mode: anatomical kernel, ``global`` (per measure across regions) or ``local`` (per region).
        denominator: the weighted-InfoNCE denominator, ``yaware``, ``expw`` or ``threshold``
            (REFERENCE §1.1).
        anat_denominator: the anatomical term's own denominator (``None``: ``denominator``), for
            the ablation of the anatomical term's denominator alone.
        augmentation: names from :mod:`anatcl_core.data.augment` applied to each view; ``[none]``
            gives two identical views (upstream AnatCL, REFERENCE §1.4).
        channels, sigma_years, temperature, mapping, depth, base_width, epochs: per-method overrides of
            the shared ``pretrain`` recipe key of the same name (``None``: the shared value), so an
            ablation variant changes one thing (:meth:`~anatcl_core.train.recipe.PretrainConfig.for_method`).
    """

    objective: Literal["anatcl", "simclr", "supervised", "random"]
    lambda_anat: NonNegative = 0.0
    lambda_age: NonNegative = 0.0
    mode: Literal["global", "local"] = "global"
    denominator: Literal["yaware", "expw", "threshold"] = "yaware"
    anat_denominator: Literal["yaware", "expw", "threshold"] | None = None
    augmentation: Augmentations = ("none",)
    channels: Channels | None = None
    sigma_years: Positive | None = None
    temperature: Positive | None = None
    mapping: Literal["affine", "relu"] | None = None
    depth: Depth | None = None
    base_width: PositiveInt | None = None
    epochs: NonNegativeInt | None = None  # training-budget variants (e.g. anatcl_global_e45)

    def overrides(self) -> dict:
        """The shared-recipe keys this method sets itself."""
        return {k: getattr(self, k) for k in RECIPE_OVERRIDES if getattr(self, k) is not None}

    def __post_init__(self) -> None:
        if self.objective == "anatcl" and not (self.lambda_anat > 0 or self.lambda_age > 0):
            raise ValueError("objective anatcl needs lambda_anat > 0 or lambda_age > 0")
        if self.objective != "anatcl" and (self.lambda_anat or self.lambda_age):
            raise ValueError(f"lambda_anat/lambda_age only apply to objective anatcl, not {self.objective}")
        if self.objective == "simclr" and tuple(self.augmentation) in ((), ("none",)):
            raise ValueError("objective simclr needs an augmentation: with identical views it learns nothing")

    @property
    def contrastive(self) -> bool:
        return self.objective in ("anatcl", "simclr")

    @property
    def identical_views(self) -> bool:
        return tuple(self.augmentation) in ((), ("none",))


class Objective(nn.Module):
    """The loss of one method on a batch.

    Args:
        method: the method's settings.
        temperature: tau of the contrastive objectives (keyword-only, as the rest).
        sigma_years: age RBF bandwidth.
        mapping: cosine -> weight mapping of the anatomical kernel.
        feature_dim: encoder output size (for the supervised head).
    """

    def __init__(self, method: MethodConfig, *, temperature: float, sigma_years: float,
                 mapping: str, feature_dim: int) -> None:
        super().__init__()
        self.config = method
        self.regression_head: nn.Module | None = None
        if method.objective == "anatcl":
            self.loss = AnatCLLoss(lambda_anat=method.lambda_anat, lambda_age=method.lambda_age,
                                   sigma_years=sigma_years, temperature=temperature,
                                   method=method.denominator, mode=method.mode, mapping=mapping,
                                   anat_method=method.anat_denominator)
        elif method.objective == "simclr":
            self.loss = WeightedInfoNCE(temperature, "yaware")
        elif method.objective == "supervised":
            self.regression_head = nn.Linear(feature_dim, 1)

    def forward(self, features: torch.Tensor, projections: torch.Tensor, age_years: torch.Tensor,
                age_z: torch.Tensor, descriptors: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of a batch.

        Args:
            features: ``(B, V, F)`` encoder outputs of V views.
            projections: ``(B, V, d)`` unit-norm head outputs.
            age_years: ``(B,)`` ages; age_z: ``(B,)`` z-scored ages (supervised target).
            descriptors: ``(B, C, R)`` normalised FreeSurfer descriptors.

        Returns:
            ``(loss, parts)``: ``parts`` are detached scalar tensors on the inputs' device (the
            trainer sums them there and reads them once per epoch: no host sync per step).
        """
        objective = self.config.objective
        if objective == "anatcl":
            loss, parts = self.loss(projections, age_years, descriptors)
            return loss, {k: v.detach() for k, v in parts.items()}
        if objective == "simclr":
            w = delta_kernel(projections.shape[0], device=projections.device, dtype=projections.dtype)
            return self.loss(projections, w), {}
        if objective == "supervised":
            assert self.regression_head is not None
            pred = self.regression_head(features[:, 0]).squeeze(1)  # (B,) z-scored age
            loss = F.l1_loss(pred, age_z)
            return loss, {}
        raise RuntimeError("the random encoder has no objective")
