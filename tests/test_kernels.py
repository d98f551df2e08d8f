"""Kernels: properties, closed forms, channel selection by name, the fitted normaliser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anatcl_core.data.freesurfer import CHANNELS, DEFAULT_CHANNELS, channel_index
from anatcl_core.contrastive.kernels import (
    DescriptorNormalizer,
    age_kernel,
    anatomical_kernel,
    delta_kernel,
    label_kernel,
    rbf_kernel,
)

MODES = ("global", "local")
MAPPINGS = ("affine", "relu")


def _tables(n: int = 40, n_regions: int = 68, seed: int = 0) -> np.ndarray:
    """(n, 7, R) tables whose channels have very different scales and offsets."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 1000.0, size=(1, 7, n_regions))
    offset = rng.uniform(-50, 5000, size=(1, 7, n_regions))
    return offset + scale * rng.standard_normal((n, 7, n_regions))


def _assert_kernel(w: torch.Tensor, b: int) -> None:
    assert w.shape == (b, b)
    assert torch.equal(w, w.T)
    assert torch.equal(torch.diagonal(w), torch.ones(b, dtype=w.dtype))
    assert (w >= 0).all() and (w <= 1).all()


# --- age / delta / label ------------------------------------------------------------------


def test_rbf_closed_form_and_properties():
    y = torch.tensor([20.0, 23.0, 35.5, 20.0], dtype=torch.float64)
    w = rbf_kernel(y, 2.0)
    _assert_kernel(w, 4)
    assert w[0, 1].item() == pytest.approx(math.exp(-9 / 8), abs=1e-15)
    assert w[0, 3].item() == 1.0  # equal ages
    assert torch.equal(age_kernel(y, sigma_years=2.0), w)
    assert not torch.allclose(rbf_kernel(y, 5.0), w)  # sigma changes the result


def test_rbf_tends_to_delta_on_distinct_ages():
    y = torch.tensor([20.0, 21.0, 30.0, 45.0], dtype=torch.float64)
    assert torch.allclose(rbf_kernel(y, 1e-2), delta_kernel(4, dtype=torch.float64), atol=1e-300)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_rbf_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        rbf_kernel(torch.zeros(3), sigma)


def test_rbf_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        rbf_kernel(torch.zeros(3, 1), 1.0)


def test_delta_and_label_kernels():
    assert torch.equal(delta_kernel(3), torch.eye(3))
    assert delta_kernel(2, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError):
        delta_kernel(0)
    w = label_kernel(torch.tensor([0, 1, 0, 2]))
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=w.dtype)
    assert torch.equal(w, expected)
    assert torch.equal(label_kernel(torch.arange(4)), delta_kernel(4))


# --- anatomical kernels ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_anatomical_kernel_properties(mode, mapping, dtype):
    desc = torch.randn(9, 3, 68, generator=torch.Generator().manual_seed(1), dtype=dtype)
    desc[4] = 0.0  # a subject exactly at the population mean: zero vectors must not give NaN
    w = anatomical_kernel(desc, mode=mode, mapping=mapping)
    assert w.dtype == dtype
    assert torch.isfinite(w).all()
    _assert_kernel(w, 9)
    off = w[4][torch.arange(9) != 4]
    assert torch.allclose(off, torch.full_like(off, 0.5 if mapping == "affine" else 0.0))


def test_anatomical_local_vs_global_closed_form():
    # M_n is (C, R) = (2 measures, 2 regions)
    m1 = [[1.0, 2.0], [3.0, 4.0]]
    m2 = [[4.0, 3.0], [2.0, 1.0]]
    desc = torch.tensor([m1, m2], dtype=torch.float64)  # (2, 2, 2)
    # local: regions' measure vectors (1,3).(4,2) and (2,4).(3,1) -> cos 1/sqrt(2) twice
    cos_local = 1 / math.sqrt(2)
    # global: measures' region vectors (1,2).(4,3) and (3,4).(2,1) -> cos 2/sqrt(5) twice
    cos_global = 2 / math.sqrt(5)
    w_local = anatomical_kernel(desc, mode="local", mapping="affine")
    w_global = anatomical_kernel(desc, mode="global", mapping="affine")
    assert w_local[0, 1].item() == pytest.approx((1 + cos_local) / 2, abs=1e-12)
    assert w_global[0, 1].item() == pytest.approx((1 + cos_global) / 2, abs=1e-12)
    assert anatomical_kernel(desc, "local", "relu")[0, 1].item() == pytest.approx(cos_local, abs=1e-12)


def test_anatomical_three_regions_mean_over_regions():
    # C=2, R=3: local cosines per region are 1, -1, 0 -> alpha = 0
    m1 = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    m2 = [[2.0, -3.0, 0.0], [0.0, 0.0, 5.0]]
    desc = torch.tensor([m1, m2], dtype=torch.float64)
    assert anatomical_kernel(desc, "local", "affine")[0, 1].item() == pytest.approx(0.5, abs=1e-12)
    # global: measure 0 (1,1,1).(2,-3,0) = -1/(sqrt3 sqrt13); measure 1 has a zero vector -> 0
    cos0 = -1 / (math.sqrt(3) * math.sqrt(13))
    expected = (1 + (cos0 + 0.0) / 2) / 2
    assert anatomical_kernel(desc, "global", "affine")[0, 1].item() == pytest.approx(expected, abs=1e-12)


def test_mapping_changes_result():
    desc = torch.tensor([[[1.0, 1.0]], [[-1.0, -0.5]]], dtype=torch.float64)  # negative cosine
    affine = anatomical_kernel(desc, "global", "affine")
    relu = anatomical_kernel(desc, "global", "relu")
    assert relu[0, 1].item() == 0.0
    assert affine[0, 1].item() == pytest.approx((1 - 3 / math.sqrt(10)) / 2, abs=1e-12)


def test_local_with_one_channel_is_sign_agreement():
    desc = torch.tensor([[[1.5, -2.0, 0.3, 4.0]], [[0.1, -7.0, -1.0, 2.0]]], dtype=torch.float64)
    expected_cos = (1 + 1 - 1 + 1) / 4
    w = anatomical_kernel(desc, "local", "relu")
    assert w[0, 1].item() == pytest.approx(expected_cos, abs=1e-12)


def test_anatomical_kernel_rejects_bad_arguments():
    desc = torch.randn(3, 3, 5)
    with pytest.raises(ValueError, match="mode"):
        anatomical_kernel(desc, mode="regional", mapping="affine")
    with pytest.raises(ValueError, match="mapping"):
        anatomical_kernel(desc, mode="global", mapping="abs")
    with pytest.raises(ValueError, match=r"\(B, C, R\)"):
        anatomical_kernel(desc[0], "global", "affine")


# --- the descriptor normaliser --------------------------------------------------------------


def test_channel_selection_by_name_picks_the_right_rows():
    table = np.arange(7)[:, None] * np.ones((7, 68)) + np.arange(68)[None, :] / 100  # row i ~ i
    norm = DescriptorNormalizer()
    norm.mean, norm.std = np.zeros((3, 68)), np.ones((3, 68))
    norm.channels = ("CT", "GMV", "SA")
    out = norm.transform(table[None])  # (1, 3, 68)
    assert out.shape == (1, 3, 68)
    np.testing.assert_array_equal(out[0], table[[2, 1, 0]])  # CT=row 2, GMV=1, SA=0
    assert [channel_index(c) for c in ("SA", "GMV", "CT")] == [0, 1, 2]
    assert CHANNELS[2] == "average_thickness"


def test_normaliser_zero_mean_unit_std_on_fitted_data():
    tables = _tables()
    norm = DescriptorNormalizer().fit(tables, DEFAULT_CHANNELS)
    out = norm.transform(tables)  # (N, 3, 68)
    assert out.shape == (40, 3, 68)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-10)
    # the statistics are those of the named rows
    np.testing.assert_allclose(norm.mean[0], tables[:, 2].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm.std[2], tables[:, 0].std(axis=0), rtol=1e-12)


def test_normaliser_round_trips_through_a_plain_dict():
    tables = _tables()
    norm = DescriptorNormalizer().fit(tables, channels=("GMV", "CT_std"))
    state = json.loads(json.dumps(norm.to_dict()))  # plain Python only
    again = DescriptorNormalizer.from_dict(state)
    assert again.channels == ("GMV", "CT_std")
    new = _tables(n=5, seed=3)
    np.testing.assert_array_equal(again.transform(new), norm.transform(new))
    assert state["n_subjects"] == 40


def test_normaliser_tensor_and_preselected_inputs():
    tables = _tables()
    norm = DescriptorNormalizer().fit(torch.from_numpy(tables), DEFAULT_CHANNELS)
    t = torch.from_numpy(tables[:4]).float()
    out = norm.transform(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (4, 3, 68)
    pre = t[:, [2, 1, 0], :]  # already CT, GMV, SA
    assert torch.equal(norm.transform(pre), out)
    out64 = norm.transform(torch.from_numpy(tables[:4]))
    assert out64.dtype == torch.float64
    np.testing.assert_allclose(norm.transform(tables[0]), out64[0].numpy(), rtol=1e-12)
    torch.testing.assert_close(out, out64.float(), atol=1e-3, rtol=0)  # float32 input rounding


def test_normaliser_errors():
    tables = _tables()
    with pytest.raises(RuntimeError, match="before fit"):
        DescriptorNormalizer().transform(tables)
    norm = DescriptorNormalizer().fit(tables, DEFAULT_CHANNELS)
    with pytest.raises(ValueError, match="regions"):
        norm.transform(tables[:, :, :34])
    with pytest.raises(ValueError, match="channels"):
        norm.transform(tables[:, :5])
    with pytest.raises(ValueError, match=r"\(N, 7, R\)"):
        DescriptorNormalizer().fit(tables[:, :3], DEFAULT_CHANNELS)
    with pytest.raises(KeyError, match="unknown FreeSurfer channel"):
        DescriptorNormalizer().fit(tables, channels=("CT", "thickness"))
    with pytest.raises(ValueError, match="lacks keys"):
        DescriptorNormalizer.from_dict({"channels": ["CT"]})
    bad = norm.to_dict()
    bad["std"] = bad["std"][:2]
    with pytest.raises(ValueError, match="do not match"):
        DescriptorNormalizer.from_dict(bad)


def test_normaliser_subset_and_constant_region():
    tables = _tables()
    tables[:, 2, 5] = 2.5  # CT of region 5 is constant
    norm = DescriptorNormalizer().fit(tables, channels=("CT",))
    out = norm.transform(tables)
    assert out.shape == (40, 1, 68)
    assert np.isfinite(out).all() and np.all(out[:, 0, 5] == 0.0)
