"""3D ResNet encoders and the projection head (upstream's ``AnatCL`` class: :mod:`anatcl_core.model.upstream`).

The encoder is the 3D ResNet of AnatCL (Barbano et al., "Anatomical Foundation Models for Brain
MRIs"), itself the volumetric version of He et al. (2016): conv1 7x7x7 stride 2 -> norm -> ReLU ->
max-pool 3/2 -> four stages of residual blocks (stages 2-4 stride 2) -> global average pool. The
projection head maps the representation to the unit sphere, 512 -> 512 -> 128 at full width.
Parameter names follow the released checkpoints (``encoder.layer1.0.conv1.weight``, ``head.0.weight``)
so upstream weights load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", "none")
GROUP_NORM_GROUPS = 32  # upper bound; reduced to a divisor of the channel count for narrow nets


def make_norm(norm: str, channels: int) -> nn.Module:
    """Return the normalisation layer named ``norm`` for ``channels`` feature maps.

    "batch" = BatchNorm3d, "instance" = InstanceNorm3d (affine), "group" = GroupNorm with up to
    32 groups of at least 4 channels (narrow nets), "none" = identity. Instance and group norm
    need more than one voxel per map at the last stage (inputs of ~40^3 voxels or more).
    """
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, max(1, channels // 4)), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _downsample(in_planes: int, out_planes: int, stride: int, norm: str) -> nn.Module | None:
    """1x1x1 conv + norm on the shortcut where the block changes shape, else None."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        make_norm(norm, out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with an identity (or projected) shortcut; keeps the width."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1x1 reduce -> 3x3x3 (carries the stride) -> 1x1x1 expand by 4, with a shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv3d(in_planes, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv3d(planes, out_planes, 1, bias=False)
        self.bn3 = make_norm(norm, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, out_planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


# depth -> (block, blocks per stage); He et al. (2016), Table 1.
RESNET_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet3d(nn.Module):
    """3D ResNet encoder: (B, in_channels, D, H, W) -> (B, feature_dim).

    Args:
        depth: key of ``RESNET_SPECS`` ("resnet18", "resnet34", "resnet50").
        in_channels: channels of the input volume (1 for a grey-matter map).
        base_width: channels of the stem and first stage; stages use 1x, 2x, 4x, 8x. 64 is the
            paper's network; smaller widths give a cheaper net of the same topology.
        norm: normalisation used in the stem, in every block and on every shortcut (see
            ``make_norm``).

    Attributes:
        feature_dim: 8 * base_width * block expansion (512 for resnet18 at width 64).
    """

    def __init__(self, depth: str = "resnet18", in_channels: int = 1, base_width: int = 64,
                 norm: str = "batch"):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        for name, value in (("in_channels", in_channels), ("base_width", base_width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        block, layers = RESNET_SPECS[depth]
        self.depth, self.norm, self.base_width = depth, norm, base_width
        self.conv1 = nn.Conv3d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = base_width
        for stage, n_blocks in enumerate(layers):
            planes = base_width * 2**stage
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(block(in_planes, planes, stride, norm))
                in_planes = planes * block.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.feature_dim = in_planes
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"ResNet3d expects input (B, C, D, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, D/4, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, F, D/32, H/32, W/32)
        return torch.flatten(self.avgpool(x), 1)  # (B, F)


class ProjectionHead(nn.Sequential):
    """Linear -> ReLU -> Linear, L2-normalised: (B, in_dim) -> (B, out_dim) on the unit sphere.

    Indices 0 and 2 hold the linear layers, matching upstream keys ``head.0.*`` and ``head.2.*``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(features), dim=1)  # (B, out_dim), ||z|| = 1


class ContrastiveModel(nn.Module):
    """Encoder + projection head; ``forward`` returns both (features (B, F), projection (B, d))."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Representation used downstream: (B, C, D, H, W) -> (B, F)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)  # (B, F)
        return features, self.head(features)  # (B, F), (B, d) unit norm


def build_model(depth: str = "resnet18", base_width: int = 64, norm: str = "batch",
                projection_dim: int = 128, hidden_dim: int | None = None,
                in_channels: int = 1) -> ContrastiveModel:
    """Build encoder + projection head; ``hidden_dim`` defaults to the encoder's feature_dim.

    At the defaults this is the paper's network: ResNet-18, 512 -> 512 -> 128.
    """
    encoder = ResNet3d(depth, in_channels=in_channels, base_width=base_width, norm=norm)
    hidden = encoder.feature_dim if hidden_dim is None else hidden_dim
    return ContrastiveModel(encoder, ProjectionHead(encoder.feature_dim, hidden, projection_dim))
