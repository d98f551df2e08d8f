"""Augmentations: deterministic given a generator seed, each changes the image (none does not)."""

from __future__ import annotations

import pytest
import torch

from anatcl_core.data.augment import AUGMENTATIONS, TwoViews, cutout, flip, gaussian_blur, make_augmentation
from anatcl_core.data.openbhb import OpenBHB

CHANGING = ["cutout", "crop", "noise", "blur"]


def image() -> torch.Tensor:
    return torch.rand((1, 12, 14, 10), generator=torch.Generator().manual_seed(0)) + 0.1  # no zeros


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_deterministic_and_shape_preserving(name):
    augment = make_augmentation(name)
    x = image()
    a, b = augment(x, seeded(3)), augment(x, seeded(3))
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(x, image(), rtol=0, atol=0)  # the input is not modified in place


@pytest.mark.parametrize("name", CHANGING)
def test_changes_the_image_and_depends_on_seed(name):
    augment = make_augmentation(name)
    x = image()
    a = augment(x, seeded(1))
    assert not torch.equal(a, x)
    assert any(not torch.equal(a, augment(x, seeded(s))) for s in range(2, 6))


def test_none_is_identity():
    x = image()
    assert torch.equal(make_augmentation("none")(x, seeded(0)), x)


def test_flip_is_a_left_right_mirror_half_of_the_time():
    x = image()
    results = [flip(x, seeded(s)) for s in range(40)]
    flipped = [torch.equal(r, torch.flip(x, dims=[1])) for r in results]
    kept = [torch.equal(r, x) for r in results]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 30
    assert torch.equal(flip(x, seeded(0), probability=1.0), torch.flip(x, dims=[1]))


def test_cutout_zeros_one_box_of_the_asked_size():
    x = image()
    zeroed = cutout(x, seeded(5), fraction=0.5) == 0
    assert int(zeroed.sum()) == 6 * 7 * 5
    idx = zeroed[0].nonzero()
    assert (idx.max(0).values - idx.min(0).values + 1).tolist() == [6, 7, 5]


def test_blur_preserves_a_constant_interior_and_smooths():
    x = torch.ones((1, 15, 15, 15))
    out = gaussian_blur(x, seeded(0), sigma_voxels=(1.0, 1.0))
    torch.testing.assert_close(out[0, 7, 7, 7], torch.tensor(1.0))  # kernel sums to one
    noisy = image()
    assert gaussian_blur(noisy, seeded(0)).std() < noisy.std()


def test_composition_and_unknown_names():
    x = image()
    composed = make_augmentation(["flip", "noise"])
    g1, g2 = seeded(7), seeded(7)
    torch.testing.assert_close(composed(x, g1), AUGMENTATIONS["noise"](flip(x, g2), g2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown augmentation"):
        make_augmentation("rotate")


def test_two_views(openbhb_root):
    base = OpenBHB(openbhb_root)
    same = TwoViews(base, "none")[2]
    assert same["image"].shape == (2, 1, 21, 22, 21)
    assert torch.equal(same["image"][0], base[2]["image"]) and torch.equal(same["image"][1], base[2]["image"])
    views = TwoViews(base, "noise", seed=1)
    first = views[2]["image"]
    assert not torch.equal(first[0], first[1])  # two different draws
    assert torch.equal(TwoViews(base, "noise", seed=1)[2]["image"], first)  # reproducible
    views.set_epoch(1)
    assert not torch.equal(views[2]["image"], first)  # fresh views each epoch
    assert views[2]["participant_id"] == base[2]["participant_id"]
