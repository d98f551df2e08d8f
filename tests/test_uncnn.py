"""The training-free un-CNN reference row (anatcl_core.evaluation.uncnn): its published feature count,
its preprocessing against library references, determinism (same bytes twice, at 1 or 2 threads, in
any batch position), invariances, and that its widths and seed change the features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from anatcl_core.evaluation import uncnn

SHAPE = (21, 25, 21)  # CAT12's field of view at 9 mm (the tests' grid)
WIDTHS = (8, 8, 16, 16)


def maps(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 1, X, Y, Z)`` GM-like maps: positive values inside an ellipsoid, zero outside."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    inside = sum(a ** 2 for a in axes) < 0.8
    return (inside * rng.uniform(0.05, 0.9, (n, *SHAPE))).astype(np.float32)[:, None]


def test_feature_count_reproduces_the_published_9664():
    # Encin et al. 2026: (64 + 128 + 256 + 512) x 8 means + 4 x 32 x 31 / 2 covariances
    assert uncnn.feature_count(uncnn.PUBLISHED_WIDTHS) == 7680 + 1984 == 9664
    assert uncnn.feature_count((8, 16, 32, 64)) == 8 * 120 + 28 + 120 + 496 + 496  # k_b = min(32, w_b)
    assert uncnn.UnCNN((8, 16), 0)(torch.zeros(1, 3, 8, 8, 8)).shape == (1, uncnn.feature_count((8, 16)))


def test_architecture_follows_the_description():
    model = uncnn.UnCNN(WIDTHS, 0)
    convs = [m for m in model.blocks[0].modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.weight.shape for c in convs] == [(8, 3, 3, 3, 3), (8, 8, 3, 3, 3)]  # block 1: dense
    later = [m for m in model.blocks[2].modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.groups, tuple(c.kernel_size)) for c in later] == [(8, (3, 3, 3)), (1, (1, 1, 1)),  # 8 -> 16: separable
                                                                 (16, (3, 3, 3)), (1, (1, 1, 1))]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 2 * len(WIDTHS) and {n.num_groups for n in norms} == {8}
    assert not any(p.requires_grad for p in model.parameters())


def test_input_channels_follow_their_definition():
    x = maps(1)[0, 0]
    channels = uncnn.input_channels(x)
    inside = x > 0
    q1, q2, q3 = np.percentile(x[inside], [25, 50, 75])
    assert channels.shape == (3, *SHAPE) and channels.dtype == np.float32
    np.testing.assert_allclose(channels[0][inside], (x[inside] - q2) / (q3 - q1), rtol=1e-5)
    assert not channels[0][~inside].any()
    assert np.array_equal(channels[1], ndimage.median_filter(channels[0], size=3, mode="constant"))
    sobel = np.sqrt(sum(ndimage.sobel(channels[0].astype(float), axis=a, mode="constant") ** 2 for a in range(3)))
    np.testing.assert_allclose(channels[2], sobel, rtol=1e-4, atol=1e-4)
    # robust scaling: an affine change of the map's intensities leaves the channels unchanged
    np.testing.assert_allclose(uncnn.input_channels(2.0 * x + 0.1 * inside), channels, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no voxel above 0"):
        uncnn.input_channels(np.zeros(SHAPE, np.float32))


def test_features_are_the_same_bytes_twice_at_any_thread_count_and_batch_position():
    x = maps(6)
    first = uncnn.uncnn_features(x, WIDTHS, 0, progress=False)
    assert first.shape == (6, uncnn.feature_count(WIDTHS)) and np.isfinite(first).all()
    assert uncnn.uncnn_features(x, WIDTHS, 0, progress=False).tobytes() == first.tobytes()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert uncnn.uncnn_features(x, WIDTHS, 0, progress=False).tobytes() == first.tobytes()
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
    order = [5, 2, 0, 4, 1, 3]  # other batches, other positions, another padded last batch
    assert uncnn.uncnn_features(x[order], WIDTHS, 0, progress=False).tobytes() == first[order].tobytes()
    assert uncnn.uncnn_features(x[:1], WIDTHS, 0, progress=False).tobytes() == first[:1].tobytes()


def test_widths_and_seed_change_the_features_and_intensity_scale_does_not():
    x = maps(2)
    base = uncnn.uncnn_features(x, WIDTHS, 0, progress=False)
    assert uncnn.uncnn_features(x, (8, 8, 16, 24), 0, progress=False).shape[1] != base.shape[1]
    assert not np.allclose(uncnn.uncnn_features(x, WIDTHS, 1, progress=False), base)
    wider = uncnn.uncnn_features(x, (16, 8, 16, 16), 0, progress=False)
    assert wider.shape[1] == base.shape[1] + 8 * 8 + 16 * 15 // 2 - 8 * 7 // 2 and not np.allclose(wider[:, :64], base[:, :64])
    np.testing.assert_allclose(uncnn.uncnn_features(3.0 * x, WIDTHS, 0, progress=False), base, rtol=1e-3, atol=1e-4)
    assert not np.allclose(base[0], base[1])  # two subjects differ


@pytest.mark.parametrize("widths", [(), (12,), (8, 0), (4, 8)])
def test_widths_must_be_multiples_of_the_groups(widths):
    with pytest.raises(ValueError, match="multiple of 8"):
        uncnn.check_widths(widths, "reference.uncnn_widths")
