"""Standardised linear models of the probes (:mod:`anatcl_core.evaluation.probes`), written out.

``GridSearchCV(Pipeline([StandardScaler, model]))`` is what each probe means, and what
``tests/test_probes.py`` checks these against; here it is a closed-form ridge path over all alphas
from one SVD, and a warm-started logistic path over C, under single-threaded BLAS. Features wider
than the subjects are fitted in their training rows' span (:func:`row_space`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import sklearn
from scipy import optimize
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from anatcl_core.evaluation.metrics import multiclass_balanced_accuracy, regression_rows


@contextmanager
def lean_fits() -> Iterator[None]:
    """Where thousands of small fits run: single-threaded BLAS, scikit-learn's per-call checks off.

    Two busy cores make threaded BLAS 40x slower on these small problems (:mod:`anatcl_core.evaluation.probes`).
    ``assume_finite`` and ``skip_parameter_validation`` are scikit-learn's own switches for inputs
    already checked: every probe's features are checked finite once (:func:`anatcl_core.evaluation.probes.check_finite`), and
    the estimators' parameters are fixed here. They took an evaluate stage (~3,000 logistic fits)
    from 17.9 to 16.6 s on 2 cores with a byte-identical ``probes.json``. (scikit-learn's
    ``newton-cholesky`` solver was slower here, 18.1 s, and moved the results in the 4th decimal.)
    """
    with threadpool_limits(1), sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        yield


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-score every array with the mean and std (ddof 0) of ``train`` (StandardScaler).

    A column constant on ``train`` (a dead feature channel: released AnatCL weights have some) is
    only shifted by its value, so it is exactly 0 on ``train`` and never divided by a rounding-error
    std (``np.full(97, 0.1).std()`` is 1.4e-17, not 0) or by zero.
    """
    mean, std = train.mean(0), train.std(0)
    constant = (train == train[:1]).all(0)  # (F,)
    mean[constant], std[constant] = train[0, constant], 1.0
    return [(a - mean) / std for a in (train, *others)]


def ridge_path(x_train, y_train, x_test, alphas: Sequence[float]) -> np.ndarray:
    """Predictions of ``StandardScaler -> Ridge(alpha)`` for every alpha, from one SVD.

    With standardised ``X = U S V^T`` and centred ``y``: ``coef(alpha) = V diag(s / (s^2 + alpha)) U^T y``.

    Args:
        x_train: ``(N, F)``; y_train: ``(N,)``; x_test: ``(M, F)``; alphas: ``A`` penalties.

    Returns:
        ``(A, M)`` predictions.
    """
    xs_train, xs_test = row_space(*standardise(x_train, x_test))  # the same predictions, cheaper when F > N
    y_mean = y_train.mean()
    u, s, vt = np.linalg.svd(xs_train, full_matrices=False)  # u: N x k, s: k, vt: k x F
    uty = u.T @ (y_train - y_mean)  # k
    shrink = s / (s**2 + np.asarray(alphas, float)[:, None])  # A x k
    coef = (shrink * uty) @ vt  # A x F
    return coef @ xs_test.T + y_mean  # A x M


def row_space(xs_train: np.ndarray, xs_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in coordinates of the training rows' span, when features outnumber subjects.

    An L2-penalised linear model's optimal weights lie in the span of the (standardised) training
    rows: the data term's gradient is a combination of them, and the unpenalised intercept does
    not change that. With the Gram matrix ``X X^T = V diag(lam) V^T``, ``Z = V diag(sqrt(lam))``
    (``N x k``, ``k``: the rows' rank, ``N - 1`` at most after centring) is ``X`` in an orthonormal
    basis ``P = X^T V diag(lam)^-1/2`` of that span, so a model fitted on ``Z`` has weights ``beta``
    with ``w = P beta``, the same penalty ``|beta| = |w|`` and the same predictions
    ``X_test P beta``: the same optimum, each solver step costing ``k`` instead of ``F`` per
    subject. For the un-CNN's 3,528 features on a few hundred subjects (benchmarks/README.md).
    """
    n, f = xs_train.shape
    if f <= n:
        return xs_train, xs_test
    lam, vec = np.linalg.eigh(xs_train @ xs_train.T)
    keep = lam > lam[-1] * n * np.finfo(float).eps  # numerically null directions: X has nothing there
    scale = np.sqrt(lam[keep])
    basis = vec[:, keep]
    return basis * scale, (xs_test @ xs_train.T) @ basis / scale


class BinaryLogistic:
    """L2-penalised binary logistic regression: scikit-learn's ``LogisticRegression(solver="lbfgs")``
    objective, solver and stopping rule, without its per-call overhead.

    The objective is scikit-learn's (``sum_i s_i loss_i / sum_i s_i + |w|^2 / (2 C sum_i s_i)``,
    intercept unpenalised), minimised by the same SciPy L-BFGS-B with the same options (``gtol``
    1e-4, ``ftol`` 64 eps, 50 line-search steps, 5,000 iterations), warm-started along a C path.
    Why not scikit-learn's own: its array-API dispatch and input checks cost ~20x the arithmetic on
    these problems (a few hundred subjects, 128 features; profile of an evaluate stage: 73,000
    loss evaluations, 17 s, mostly dispatch), and an evaluate stage runs ~3,000 fits.
    ``benchmarks/bench_probes.py`` measures both on the run's features; ``tests/test_probes.py``
    checks predictions and C choices against ``LogisticRegression`` itself.
    """

    TOL, MAX_ITER = 1e-4, 5000

    def __init__(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None):
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"BinaryLogistic: expected 2 classes, got {len(self.classes_)}")
        self._x, self._y = x, index.astype(float)
        self._w = np.ones(len(y)) if weight is None else np.asarray(weight, float)
        self._params = np.zeros(x.shape[1] + 1)
        self.coef_, self.intercept_ = self._params[:-1], 0.0

    def fit(self, c: float) -> BinaryLogistic:
        """Fit at inverse penalty ``c``, starting from the previous fit."""
        x, y, w = self._x, self._y, self._w
        total = w.sum()
        l2 = 1.0 / (c * total)

        def loss_grad(params):
            coef, z = params[:-1], x @ params[:-1] + params[-1]
            loss = w @ (np.logaddexp(0.0, z) - y * z) / total + 0.5 * l2 * (coef @ coef)
            g = w * (expit(z) - y) / total
            return loss, np.append(x.T @ g + l2 * coef, g.sum())

        result = optimize.minimize(loss_grad, self._params, method="L-BFGS-B", jac=True,
                                   options={"maxiter": self.MAX_ITER, "maxls": 50, "gtol": self.TOL,
                                            "ftol": 64 * np.finfo(float).eps})
        self._params = result.x
        self.coef_, self.intercept_ = result.x[:-1], float(result.x[-1])
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef_ + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(x) > 0).astype(int)]


def logistic_path(x_train, y_train, x_test, c_grid, balanced: bool):
    """Yield ``(C, fitted model, x_test as the model takes it)`` along an increasing C path (warm starts).

    ``balanced``: class-balanced, as ``class_weight="balanced"`` (the same weights, given once as
    ``sample_weight``: scikit-learn tests the two equal). Two classes: :class:`BinaryLogistic`;
    more (the site classifier): scikit-learn's multinomial ``LogisticRegression``. Wide features
    are fitted in their row space (:func:`row_space`).
    """
    xs_train, xs_test = row_space(*standardise(x_train, x_test))
    weight = None
    classes, index = np.unique(y_train, return_inverse=True)
    if balanced:
        weight = (len(y_train) / (len(classes) * np.bincount(index)))[index]
    if len(classes) == 2:
        model = BinaryLogistic(xs_train, y_train, weight)
        for c in sorted(c_grid):
            yield c, model.fit(c), xs_test
        return
    model = LogisticRegression(max_iter=5000, warm_start=True)
    for c in sorted(c_grid):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.set_params(C=c).fit(xs_train, y_train, sample_weight=weight)
        yield c, model, xs_test


def select_alpha(x, y, alpha_grid, inner, metric: str) -> float:
    """Inner-CV choice of the ridge penalty on ``(x, y)`` only (``metric``: "mae" or "r2")."""
    scores = np.zeros(len(alpha_grid))
    for train, val in inner.split(x):
        pred = ridge_path(x[train], y[train], x[val], alpha_grid)  # A x M
        rows = regression_rows(np.broadcast_to(y[val], pred.shape), pred)
        scores += -rows["mae"] if metric == "mae" else rows["r2"]
    return float(alpha_grid[int(np.argmax(scores))])  # ties -> first, as GridSearchCV


def select_c(x, y, c_grid, inner, balanced: bool) -> float:
    """Inner-CV choice of the logistic C on ``(x, y)`` only, by (mean-recall) balanced accuracy."""
    scores = {c: 0.0 for c in c_grid}
    for train, val in inner.split(x, y):
        for c, model, xs_val in logistic_path(x[train], y[train], x[val], c_grid, balanced):
            scores[c] += multiclass_balanced_accuracy(y[val], model.predict(xs_val))
    return float(max(c_grid, key=lambda c: (scores[c], -list(c_grid).index(c))))
