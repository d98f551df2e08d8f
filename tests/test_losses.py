"""Weighted InfoNCE against a loop reference of REFERENCE §1.1; closed forms; invariances."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from anatcl_core.contrastive.kernels import anatomical_kernel, delta_kernel, label_kernel, rbf_kernel
from anatcl_core.contrastive.losses import AnatCLLoss, WeightedInfoNCE, weighted_infonce

METHODS = ("yaware", "expw", "threshold")
F64 = torch.float64


def reference_loss(z: torch.Tensor, w: torch.Tensor, tau: float, method: str) -> torch.Tensor:
    """Python loops straight from the formulas; anchors ordered subject-major (unlike the library).

    L = (1/n') sum_a sum_{b!=a} -(w_ab / sum_{c!=a} w_ac) log(exp(s_ab) / D_ab), n' = anchors with
    sum_{c!=a} w_ac > 0 (the others have no positive and are skipped).
    """
    b_subjects, n_views, _ = z.shape
    emb = [z[i, v] / z[i, v].norm() for i in range(b_subjects) for v in range(n_views)]
    subj = [i for i in range(b_subjects) for _ in range(n_views)]
    n = len(emb)

    def s(a, c):
        return (emb[a] * emb[c]).sum() / tau

    def wt(a, c):
        return w[subj[a], subj[c]]

    total, count = z.new_zeros(()), 0
    for a in range(n):
        row = sum(float(wt(a, c)) for c in range(n) if c != a)
        if row == 0:
            continue
        count += 1
        for b in range(n):
            if b == a or wt(a, b) == 0:
                continue
            if method == "yaware":
                d = sum(torch.exp(s(a, c)) for c in range(n) if c != a)
            elif method == "expw":
                d = sum(torch.exp(s(a, c) * (1 - wt(a, c))) for c in range(n) if c != a)
            else:
                d = torch.exp(s(a, b))
                for c in range(n):
                    if c != a and wt(a, c) < wt(a, b):
                        d = d + torch.exp(s(a, c))
            total = total - wt(a, b) / row * torch.log(torch.exp(s(a, b)) / d)
    return total / count if count else total


def _z(b, v, d=5, seed=0):
    return torch.randn(b, v, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _w_with_ties(b, seed=0, symmetric=True):
    """Kernel on a coarse grid {0, .25, ..., 1}: many ties and some zeros; ones on the diagonal."""
    g = torch.Generator().manual_seed(100 + seed)
    w = torch.randint(0, 5, (b, b), generator=g).to(F64) / 4
    if symmetric:
        w = torch.triu(w) + torch.triu(w, 1).T
    return w.fill_diagonal_(1.0)


CASES = [(3, 1), (5, 1), (2, 2), (4, 2), (6, 2), (3, 3), (4, 3)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("b", "v"), CASES)
def test_matches_loop_reference_value_and_gradient(method, b, v):
    dense = torch.rand(b, b, dtype=F64, generator=torch.Generator().manual_seed(b))
    for seed, w in enumerate([_w_with_ties(b, seed=b), (dense + dense.T) / 2]):
        z = _z(b, v, seed=seed).requires_grad_(True)
        loss = weighted_infonce(z, w, temperature=0.3, method=method)
        (grad,) = torch.autograd.grad(loss, z)
        z_ref = z.detach().clone().requires_grad_(True)
        ref = reference_loss(z_ref, w, 0.3, method)
        (grad_ref,) = torch.autograd.grad(ref, z_ref)
        assert loss.dtype == F64
        assert abs(loss.item() - ref.item()) < 1e-9
        torch.testing.assert_close(grad, grad_ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_matches_reference_with_asymmetric_kernel(method):
    w = _w_with_ties(4, seed=7, symmetric=False)
    assert not torch.equal(w, w.T)
    z = _z(4, 2, seed=3)
    loss, ref = weighted_infonce(z, w, 0.1, method), reference_loss(z, w, 0.1, method)
    assert abs(loss.item() - ref.item()) < 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_batch_permutation_and_view_order_invariance(method):
    z, w = _z(6, 3, seed=1), _w_with_ties(6, seed=2)
    loss = weighted_infonce(z, w, 0.1, method)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = weighted_infonce(z[perm], w[perm][:, perm], 0.1, method)
    views = weighted_infonce(z[:, [2, 0, 1]], w, 0.1, method)
    assert abs(permuted.item() - loss.item()) < 1e-12
    assert abs(views.item() - loss.item()) < 1e-12
    # and a permutation of the subjects that does NOT permute w changes the loss
    assert abs(weighted_infonce(z[perm], w, 0.1, method).item() - loss.item()) > 1e-6


def _simclr_reference(z, tau):
    """NT-Xent with V = 2, textbook form: -log(exp(s_a,pos) / sum_{c != a} exp(s_ac))."""
    zn = torch.nn.functional.normalize(torch.cat([z[:, 0], z[:, 1]]), dim=1)  # (2B, d)
    b = z.shape[0]
    total = 0.0
    for a in range(2 * b):
        pos = (a + b) % (2 * b)
        s = zn[a] @ zn.T / tau
        denom = sum(math.exp(s[c].item()) for c in range(2 * b) if c != a)
        total += -math.log(math.exp(s[pos].item()) / denom)
    return total / (2 * b)


def test_yaware_tends_to_simclr_as_sigma_goes_to_zero():
    z = _z(5, 2, seed=4)
    ages = torch.tensor([20.0, 25.0, 31.0, 44.0, 60.0], dtype=F64)
    simclr = weighted_infonce(z, delta_kernel(5, dtype=F64), 0.1, "yaware")
    assert abs(simclr.item() - _simclr_reference(z, 0.1)) < 1e-9
    far = weighted_infonce(z, rbf_kernel(ages, 1e-2), 0.1, "yaware")
    wide = weighted_infonce(z, rbf_kernel(ages, 10.0), 0.1, "yaware")
    assert abs(far.item() - simclr.item()) < 1e-12
    assert abs(wide.item() - simclr.item()) > 1e-3


def _supcon_reference(z, labels, tau):
    """SupCon L_out (Khosla et al. 2020): mean over anchors of -1/|P(a)| sum_p log softmax_{c!=a}."""
    b, v, _ = z.shape
    zn = torch.nn.functional.normalize(z.reshape(b * v, -1), dim=1)
    lab = labels.repeat_interleave(v)
    total, count = 0.0, 0
    for a in range(b * v):
        positives = [p for p in range(b * v) if p != a and lab[p] == lab[a]]
        if not positives:
            continue
        s = zn[a] @ zn.T / tau
        log_denom = math.log(sum(math.exp(s[c].item()) for c in range(b * v) if c != a))
        total += -sum(s[p].item() - log_denom for p in positives) / len(positives)
        count += 1
    return total / count


def test_label_kernel_gives_supcon():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    z = _z(6, 2, seed=5)
    loss = weighted_infonce(z, label_kernel(labels, dtype=F64), 0.2, "yaware")
    assert abs(loss.item() - _supcon_reference(z, labels, 0.2)) < 1e-9


def _binary_closed_forms(z, w, tau):
    """For a 0/1 kernel: threshold D_ap = exp(s_ap) + sum_neg exp(s_ac); ExpW D_a = |P| + sum_neg."""
    b, v, _ = z.shape
    zn = torch.nn.functional.normalize(z.transpose(0, 1).reshape(b * v, -1), dim=1)
    s = zn @ zn.T / tau
    wf = w.repeat(v, v).fill_diagonal_(0.0)
    neg = (1 - wf).fill_diagonal_(0.0)
    neg_sum = (neg * s.exp()).sum(1, keepdim=True)  # (n, 1)
    n_pos = wf.sum(1, keepdim=True)  # (n, 1)
    thr = (wf * torch.log1p(neg_sum / s.exp())).sum(1) / n_pos.squeeze(1)
    expw = (wf * (torch.log(n_pos + neg_sum) - s)).sum(1) / n_pos.squeeze(1)
    return thr.mean().item(), expw.mean().item()


def test_threshold_and_expw_with_binary_kernel_closed_forms():
    w = label_kernel(torch.tensor([0, 1, 1, 0, 2]), dtype=F64)
    z = _z(5, 2, seed=6)
    thr, expw = _binary_closed_forms(z, w, 0.1)
    assert abs(weighted_infonce(z, w, 0.1, "threshold").item() - thr) < 1e-9
    assert abs(weighted_infonce(z, w, 0.1, "expw").item() - expw) < 1e-9


def test_temperature_and_method_change_the_result():
    z, w = _z(5, 2, seed=8), _w_with_ties(5, seed=8)
    values = {m: weighted_infonce(z, w, 0.1, m).item() for m in METHODS}
    assert len({round(x, 6) for x in values.values()}) == 3
    for m in METHODS:
        assert abs(weighted_infonce(z, w, 0.5, m).item() - values[m]) > 1e-6


def test_zero_weight_anchors_are_excluded_and_all_zero_gives_zero(caplog):
    z = _z(4, 1, seed=9).requires_grad_(True)
    w = torch.zeros(4, 4, dtype=F64)
    w[0, 1] = w[1, 0] = 0.5  # anchors 2 and 3 have no positive
    loss = weighted_infonce(z, w, 0.1, "yaware")
    zn = torch.nn.functional.normalize(z[:, 0], dim=1)
    s = zn @ zn.T / 0.1
    s01 = s[0, 1]
    lse = [torch.logsumexp(torch.cat([s[a, :a], s[a, a + 1 :]]), 0) for a in range(2)]
    expected = ((lse[0] - s01) + (lse[1] - s01)) / 2  # mean over the 2 anchors with a positive
    assert abs(loss.item() - expected.item()) < 1e-12
    for method in METHODS:  # SimCLR kernel with a single view: nobody has a positive
        with caplog.at_level(logging.WARNING, logger="anatcl_core.contrastive.losses"):
            zero = weighted_infonce(z, delta_kernel(4, dtype=F64), 0.1, method)
        (grad,) = torch.autograd.grad(zero, z)
        assert zero.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    assert "no anchor has a positive" in caplog.text


def test_float32_input_and_extreme_temperature_are_finite():
    z = _z(6, 2, seed=10).float().requires_grad_(True)
    w = _w_with_ties(6, seed=10).float()
    for method in METHODS:
        for tau in (0.1, 1e-3):
            loss = weighted_infonce(z, w, tau, method)
            (grad,) = torch.autograd.grad(loss, z)
            assert loss.dtype == torch.float32
            assert torch.isfinite(loss) and torch.isfinite(grad).all()


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor any aten op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_threshold_memory_is_quadratic_at_batch_512():
    b, v = 512, 2
    n = b * v
    z = torch.randn(b, v, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    ages = torch.rand(b, generator=torch.Generator().manual_seed(1)) * 60 + 20
    w = rbf_kernel(ages.round(), 2.0)  # rounded ages: plenty of ties
    with _MaxNumel() as probe:
        loss = weighted_infonce(z, w, 0.1, "threshold")
        loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert probe.largest <= n * n  # an (n, n, n) tensor would be 1024 times larger


def test_argument_validation():
    z, w = _z(3, 2), _w_with_ties(3)
    with pytest.raises(ValueError, match=r"z must have shape \(B, V, d\)"):
        weighted_infonce(z[:, 0], w)
    with pytest.raises(ValueError, match=r"w must have shape \(B, B\)"):
        weighted_infonce(z, w[:, :2])
    with pytest.raises(ValueError, match="B = 3"):
        weighted_infonce(z, _w_with_ties(4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        weighted_infonce(z, w * 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        weighted_infonce(z, w - 0.5)
    with pytest.raises(ValueError, match="temperature"):
        weighted_infonce(z, w, temperature=0.0)
    with pytest.raises(ValueError, match="method"):
        weighted_infonce(z, w, method="supcon")
    with pytest.raises(ValueError, match="at least 2"):
        weighted_infonce(z[:1, :1], w[:1, :1])
    with pytest.raises(ValueError, match="temperature"):
        WeightedInfoNCE(temperature=-1.0)
    with pytest.raises(ValueError, match="method"):
        WeightedInfoNCE(method="thr")
    module = WeightedInfoNCE(0.2, "expw")
    assert module(z, w).item() == weighted_infonce(z, w, 0.2, "expw").item()


# --- the AnatCL objective -------------------------------------------------------------------


def _batch(b=6, seed=11):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 2, 8, dtype=F64, generator=g).requires_grad_(True)
    age = torch.rand(b, dtype=F64, generator=g) * 10 + 20
    desc = torch.randn(b, 3, 68, dtype=F64, generator=g)
    return z, age, desc


@pytest.mark.parametrize("method", METHODS)
def test_anatcl_loss_is_the_weighted_sum_of_its_parts(method):
    z, age, desc = _batch()
    crit = AnatCLLoss(lambda_anat=0.7, lambda_age=1.3, sigma_years=2.0, temperature=0.1,
                      method=method, mode="local", mapping="relu")
    total, parts = crit(z, age, desc)
    anat = weighted_infonce(z, anatomical_kernel(desc, "local", "relu"), 0.1, method)
    age_term = weighted_infonce(z, rbf_kernel(age, 2.0), 0.1, method)
    assert abs(total.item() - (0.7 * anat + 1.3 * age_term).item()) < 1e-12
    assert parts["anat"].item() == pytest.approx(anat.item(), abs=1e-12)
    assert parts["age"].item() == pytest.approx(age_term.item(), abs=1e-12)
    assert not parts["anat"].requires_grad and not parts["age"].requires_grad
    total.backward()
    assert torch.isfinite(z.grad).all()


def test_anatcl_loss_skips_a_zero_lambda_and_its_arguments_change_it():
    z, age, desc = _batch()
    total, parts = AnatCLLoss(lambda_anat=0.0, lambda_age=1.0)(z, age, None)
    assert parts["anat"].item() == 0.0
    assert abs(total.item() - parts["age"].item()) < 1e-15
    total, parts = AnatCLLoss(lambda_anat=1.0, lambda_age=0.0)(z, None, desc)
    assert parts["age"].item() == 0.0
    base = AnatCLLoss()(z, age, desc)[0].item()
    for kwargs in ({"mode": "local"}, {"mapping": "relu"}, {"sigma_years": 5.0},
                   {"temperature": 0.2}, {"method": "expw"}, {"lambda_age": 2.0}):
        assert abs(AnatCLLoss(**kwargs)(z, age, desc)[0].item() - base) > 1e-6, kwargs


def test_anatcl_loss_validation():
    with pytest.raises(ValueError, match="both 0"):
        AnatCLLoss(lambda_anat=0.0, lambda_age=0.0)
    with pytest.raises(ValueError, match="lambda_age"):
        AnatCLLoss(lambda_age=-1.0)
    with pytest.raises(ValueError, match="sigma_years"):
        AnatCLLoss(sigma_years=0.0)
    with pytest.raises(ValueError, match="mode"):
        AnatCLLoss(mode="regional")
    with pytest.raises(ValueError, match="mapping"):
        AnatCLLoss(mapping="abs")
    with pytest.raises(ValueError, match="method"):
        AnatCLLoss(method="simclr")
    z, age, _ = _batch()
    with pytest.raises(ValueError, match="descriptors are required"):
        AnatCLLoss()(z, age, None)


def test_anat_method_changes_only_the_anatomical_term():
    torch.manual_seed(3)
    z = torch.randn(6, 2, 8, dtype=torch.float64)
    age = torch.rand(6, dtype=torch.float64) * 50 + 20
    desc = torch.randn(6, 3, 10, dtype=torch.float64)
    _, base = AnatCLLoss()(z, age, desc)
    _, mixed = AnatCLLoss(anat_method="threshold")(z, age, desc)
    assert torch.equal(mixed["age"], base["age"])
    w_anat = anatomical_kernel(desc, "global", "affine")
    assert torch.allclose(mixed["anat"], weighted_infonce(z, w_anat, 0.1, "threshold"), atol=1e-12)
    assert not torch.allclose(mixed["anat"], base["anat"])
    with pytest.raises(ValueError, match="method"):
        AnatCLLoss(anat_method="simclr")
