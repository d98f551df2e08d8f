"""Upstream's ``AnatCL`` model class, as a drop-in that never downloads, and the released files' names.

Upstream (Barbano et al.) released ResNet-18 weights trained with the global (``g3``) or local
(``l3``) anatomical kernel on five folds; :class:`AnatCL` takes the same arguments as upstream's
class and reads a local copy through :func:`anatcl_core.model.trained.load_trained`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from anatcl_core.model.network import RESNET_SPECS, build_model
from anatcl_core.model.trained import load_trained

logger = logging.getLogger(__name__)

DESCRIPTOR_TAGS = {"global": "g3", "local": "l3"}
N_FOLDS = 5


def upstream_weight_name(model: str, descriptor: str, fold: int) -> str:
    """Relative name of the released file, e.g. ``resnet18-anatcl-g3/fold0.pth``."""
    return f"{model}-anatcl-{DESCRIPTOR_TAGS[descriptor]}/fold{fold}.pth"


class AnatCL(nn.Module):
    """Drop-in for upstream's ``AnatCL`` model that never downloads.

    Same arguments and outputs as the upstream class; the released weights are read from a local
    file with ``safe_load`` (no pickled code runs). Parameter names are ``encoder.*`` / ``head.*``
    as in the released checkpoints.

    Args:
        model: encoder depth, a key of ``RESNET_SPECS``.
        descriptor: "global" (files ``*-g3``) or "local" (``*-l3``) anatomical kernel.
        fold: 0..4, which of the five released pretraining folds.
        use_head: if True ``forward`` returns the normalised projection (B, 128), otherwise the
            512-d encoder features (B, 512) used for downstream probes.
        weights: path to a local copy of the released file (``upstream_weight_name``); None keeps
            a random initialisation and logs a warning.

    Raises:
        ValueError: an argument outside the values above.
        UnsafeCheckpointError, KeyError: see ``safe_load`` / ``load_state_dict_checked``.
    """

    def __init__(self, model: str = "resnet18", descriptor: str = "global", fold: int = 0,
                 use_head: bool = False, weights: str | Path | None = None):
        super().__init__()
        if model not in RESNET_SPECS:
            raise ValueError(f"AnatCL: model must be one of {sorted(RESNET_SPECS)}, got {model!r}")
        if descriptor not in DESCRIPTOR_TAGS:
            raise ValueError(f"AnatCL: descriptor must be 'global' or 'local', got {descriptor!r}")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < N_FOLDS:
            raise ValueError(f"AnatCL: fold must be an int in 0..{N_FOLDS - 1}, got {fold!r}")
        self.model_name, self.descriptor, self.fold = model, descriptor, fold
        self.use_head = bool(use_head)
        net = build_model(model)
        self.encoder, self.head = net.encoder, net.head
        if weights is None:
            logger.warning("AnatCL(%s, %s, fold=%d): no weights given, the network is randomly "
                           "initialised; pass weights=<local copy of %s>", model, descriptor, fold,
                           upstream_weight_name(model, descriptor, fold))
        else:
            self.load_weights(weights)

    def load_weights(self, path: str | Path) -> None:
        """Load an upstream-format file ({"model": state_dict, ...}) into this network.

        Raises:
            KeyError: no ``"model"`` state dict. CheckpointMismatchError: it does not fit.
        """
        load_trained(path, into=self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)  # (B, 512)
        return self.head(features) if self.use_head else features  # (B, 128) or (B, 512)
