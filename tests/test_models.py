"""3D ResNet family, heads and the AnatCL drop-in: wiring, arguments, determinism, learning."""

import logging

import pytest
import torch
from torch import nn

from anatcl_core.model.network import (
    NORMS, RESNET_SPECS, BasicBlock, Bottleneck, ContrastiveModel, ProjectionHead, ResNet3d, build_model,
)
from anatcl_core.model.upstream import AnatCL

NORM_TYPES = {"batch": nn.BatchNorm3d, "instance": nn.InstanceNorm3d, "group": nn.GroupNorm}
ALL_NORM_TYPES = tuple(NORM_TYPES.values())


def _signature(model: nn.Module) -> list:
    """Everything that defines the architecture: parameter/buffer names and shapes, module types."""
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return shapes + [type(m).__name__ for m in model.modules()]


def _blocks(encoder: ResNet3d) -> list[nn.Module]:
    return [b for stage in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4)
            for b in stage]


@pytest.mark.parametrize("depth,blocks,feature_dim", [
    ("resnet18", 8, 32), ("resnet34", 16, 32), ("resnet50", 16, 128)])
def test_spec_table_sets_blocks_and_feature_dim(depth, blocks, feature_dim):
    torch.manual_seed(0)
    encoder = ResNet3d(depth, base_width=4)
    block_type = RESNET_SPECS[depth][0]
    assert len(_blocks(encoder)) == blocks
    assert all(type(b) is block_type for b in _blocks(encoder))
    assert encoder.feature_dim == feature_dim
    # coarse CPU grid of the synthetic cohort and a tiny cube both work
    for shape in [(41, 43, 41), (16, 16, 16)]:
        out = encoder(torch.randn(2, 1, *shape))
        assert out.shape == (2, feature_dim)
        assert torch.isfinite(out).all()


def test_full_width_resnet18_dimensions():
    model = build_model()
    assert model.encoder.feature_dim == 512
    feats, proj = model.eval()(torch.randn(1, 1, 16, 16, 16))
    assert feats.shape == (1, 512) and proj.shape == (1, 128)


@pytest.mark.parametrize("change", [
    {"depth": "resnet34"}, {"depth": "resnet50"}, {"base_width": 8}, {"norm": "instance"},
    {"norm": "group"}, {"norm": "none"}, {"in_channels": 2}, {"projection_dim": 16},
    {"hidden_dim": 8}])
def test_every_constructor_argument_changes_the_network(change):
    base = dict(depth="resnet18", base_width=4, norm="batch", projection_dim=32, hidden_dim=None,
                in_channels=1)
    assert _signature(build_model(**base)) != _signature(build_model(**{**base, **change}))


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
@pytest.mark.parametrize("norm", NORMS)
def test_norm_reaches_every_block(depth, norm):
    encoder = ResNet3d(depth, base_width=8, norm=norm)
    per_block = 2 if depth == "resnet18" else 3
    for block in _blocks(encoder):
        assert isinstance(block, (BasicBlock, Bottleneck))
        expected = per_block + (block.downsample is not None)
        found = [m for m in block.modules() if isinstance(m, ALL_NORM_TYPES)]
        if norm == "none":
            assert found == []
            assert sum(isinstance(m, nn.Identity) for m in block.modules()) == expected
        else:
            assert len(found) == expected
            assert all(type(m) is NORM_TYPES[norm] for m in found)
            if norm == "group":  # real groups, not one channel each (degenerate on tiny maps)
                assert all(m.num_groups <= 32 and m.num_channels // m.num_groups >= 4
                           for m in found)
    stem_expected = nn.Identity if norm == "none" else NORM_TYPES[norm]
    assert type(encoder.bn1) is stem_expected
    # the stage-2..4 shortcuts change shape, so they exist and carry the norm too
    assert all(s[0].downsample is not None for s in (encoder.layer2, encoder.layer3, encoder.layer4))


def test_norm_changes_the_output():
    x = torch.randn(2, 1, 40, 40, 40)  # 2^3 voxels left at stage 4, as instance norm needs
    outputs = {}
    for norm in NORMS:
        torch.manual_seed(0)
        outputs[norm] = ResNet3d(base_width=4, norm=norm).eval()(x)
    for a in NORMS:
        for b in NORMS:
            if a < b:
                assert not torch.allclose(outputs[a], outputs[b]), (a, b)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    encoder = ResNet3d(base_width=16, norm="batch")
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    conv = encoder.layer4[1].conv2  # fan_out = 128 * 27, Kaiming std = sqrt(2 / fan_out)
    expected_std = (2.0 / (conv.out_channels * 27)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert conv.bias is None and encoder.conv1.bias is None
    assert encoder.conv1.kernel_size == (7, 7, 7) and encoder.conv1.stride == (2, 2, 2)


@pytest.mark.parametrize("kwargs", [
    {"depth": "resnet101"}, {"norm": "layer"}, {"base_width": 0}, {"in_channels": 1.5}])
def test_invalid_encoder_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ResNet3d(**kwargs)


def test_same_seed_same_weights_different_seed_different_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model(base_width=4).state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["encoder.conv1.weight"], other["encoder.conv1.weight"])
    assert not torch.equal(first["head.2.weight"], other["head.2.weight"])


def test_projection_head_is_unit_norm_with_upstream_indices():
    head = ProjectionHead(12, 10, 6)
    z = head(torch.randn(5, 12) * 7)
    assert z.shape == (5, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert sorted(head.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_contrastive_model_returns_encoder_features_and_projection():
    torch.manual_seed(0)
    model = build_model(base_width=4, projection_dim=8).eval()
    x = torch.randn(3, 1, 16, 16, 16)
    features, projection = model(x)
    torch.testing.assert_close(features, model.encode(x))
    torch.testing.assert_close(projection, model.head(features))
    assert isinstance(model, ContrastiveModel) and projection.shape == (3, 8)


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    encoder = ResNet3d(base_width=4, norm="batch")
    regressor = nn.Linear(encoder.feature_dim, 1)  # the supervised objective's read-out
    x = torch.randn(6, 1, 16, 16, 16)
    y = torch.linspace(-1.0, 1.0, 6)
    params = list(encoder.parameters()) + list(regressor.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(80):
        loss = (regressor(encoder(x)).squeeze(1) - y).abs().mean()  # L1 brain-age baseline loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]


def test_anatcl_outputs_and_argument_validation():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16)
    net = AnatCL().eval()
    assert net(x).shape == (2, 512)
    net.use_head = True
    z = net(x)
    assert z.shape == (2, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert AnatCL(use_head=True).use_head
    for bad in [{"descriptor": "regional"}, {"fold": 5}, {"fold": -1}, {"fold": True},
                {"model": "resnet152"}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            AnatCL(**bad)


@pytest.mark.parametrize("descriptor,expected", [
    ("global", "resnet18-anatcl-g3/fold0.pth"), ("local", "resnet18-anatcl-l3/fold3.pth")])
def test_anatcl_without_weights_warns_with_the_needed_file(descriptor, expected, caplog):
    fold = 0 if descriptor == "global" else 3
    with caplog.at_level(logging.WARNING, logger="anatcl_core.model.network"):
        AnatCL(descriptor=descriptor, fold=fold)
    assert expected in caplog.text
