"""Tests for emtutor.logistic: derivatives against finite differences, the fit against scipy
and scikit-learn, numerical stability of the sigmoid, separable data and input validation."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from emtutor.logistic import (
    GradientAscentResult,
    SeparableDataWarning,
    default_learning_rate,
    gradient,
    gradient_ascent,
    hessian,
    is_separable,
    log_likelihood,
    log_likelihood_terms,
    log_sigmoid,
    sigmoid,
)

SEEDS = [0, 1, 2, 3, 4]
# A tolerance below any increase that rounding lets through: the run stops at the second test,
# a gradient too small to change L in floating point. (tol=0 would run all max_iter steps.)
TIGHT = 1e-15


def make_problem(seed: int, n: int = 150, d: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping classes: intercept column plus d-1 Gaussian features, labels drawn from
    the model itself, and a random point w at which to evaluate derivatives."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, d - 1))])
    w_true = rng.normal(size=d)
    y = (rng.random(n) < sigmoid(X @ w_true)).astype(float)
    w = rng.normal(size=d)
    return X, y, w


def scipy_mle(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent maximiser: scipy's trust-region Newton method on -L."""
    res = minimize(
        lambda w: -log_likelihood(w, X, y),
        np.zeros(X.shape[1]),
        jac=lambda w: -gradient(w, X, y),
        hess=lambda w: -hessian(w, X, y),
        method="trust-exact",
        options={"gtol": 1e-10},
    )
    # trust-exact may report a "bad approximation" when it is already at the optimum to
    # rounding precision; what matters is that the gradient vanishes there.
    assert np.abs(gradient(res.x, X, y)).max() < 1e-8, res.message
    return res.x


# ---------------------------------------------------------------------------------------------
# sigmoid and log-sigmoid


def test_sigmoid_exact_values_without_warnings():
    z = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid(z)
        ls = log_sigmoid(z)
        ls_neg = log_sigmoid(-z)
    np.testing.assert_array_equal(s, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(ls, [-1e4, -800.0, -np.log(2.0), 0.0, 0.0])
    np.testing.assert_array_equal(ls_neg, [0.0, 0.0, -np.log(2.0), -800.0, -1e4])


def test_sigmoid_scalars_and_shapes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.ndim(sigmoid(1e4)) == 0 and float(sigmoid(1e4)) == 1.0
        assert float(log_sigmoid(-1e4)) == -1e4
        assert float(sigmoid(0)) == 0.5
    z = np.linspace(-5, 5, 12).reshape(3, 4)
    assert sigmoid(z).shape == (3, 4)
    assert log_sigmoid(z).shape == (3, 4)
    assert float(sigmoid(np.inf)) == 1.0 and float(sigmoid(-np.inf)) == 0.0


def test_sigmoid_symmetry():
    z = np.random.default_rng(1).normal(scale=20.0, size=1000)
    np.testing.assert_allclose(sigmoid(z) + sigmoid(-z), 1.0, rtol=0, atol=3e-16)


def test_log_sigmoid_matches_log_of_sigmoid_where_safe():
    # For z in [-30, 5], sigma(z) is far from 0 and its log far from 0: no cancellation.
    z = np.linspace(-30.0, 5.0, 701)
    np.testing.assert_allclose(log_sigmoid(z), np.log(sigmoid(z)), rtol=1e-12)
    # Large z: ln sigma(z) = -ln(1 + e^{-z}) = -e^{-z} to relative accuracy e^{-z}.
    big = np.array([40.0, 100.0, 700.0])
    np.testing.assert_allclose(log_sigmoid(big), -np.exp(-big), rtol=1e-12)
    # Very negative z: ln sigma(z) = z - ln(1 + e^{z}) = z to double precision.
    very_negative = np.array([-40.0, -100.0, -700.0])
    np.testing.assert_array_equal(log_sigmoid(very_negative), very_negative)


@pytest.mark.parametrize("fn", [sigmoid, log_sigmoid])
def test_sigmoid_rejects_nan(fn):
    with pytest.raises(ValueError, match="contains NaN"):
        fn([0.0, np.nan])


# ---------------------------------------------------------------------------------------------
# the log-likelihood: eq 2 = eq 3, per-instance terms


@pytest.mark.parametrize("seed", SEEDS)
def test_eq2_equals_eq3(seed):
    X, y, w = make_problem(seed)
    p1 = 1.0 / (1.0 + np.exp(-(X @ w)))  # naive sigmoid, fine for moderate w.x
    prob_of_observed = np.where(y == 1, p1, 1.0 - p1)  # P(Y = y_i | x_i), picked case by case
    eq2 = np.sum(np.log(prob_of_observed))
    np.testing.assert_allclose(log_likelihood(w, X, y), eq2, rtol=1e-12)


def test_terms_sum_to_log_likelihood_and_are_per_instance():
    X, y, w = make_problem(7)
    terms = log_likelihood_terms(w, X, y)
    assert terms.shape == (X.shape[0],)
    assert np.all(terms <= 0)
    np.testing.assert_allclose(terms.sum(), log_likelihood(w, X, y), rtol=1e-14)
    # Changing one data point changes exactly one term, bit for bit.
    X2, y2 = X.copy(), y.copy()
    X2[10, 1:] += 3.0
    y2[10] = 1.0 - y2[10]
    terms2 = log_likelihood_terms(w, X2, y2)
    changed = np.flatnonzero(terms2 != terms)
    np.testing.assert_array_equal(changed, [10])


def test_log_likelihood_at_zero_is_minus_n_log2():
    X, y, _ = make_problem(3)
    np.testing.assert_allclose(
        log_likelihood(np.zeros(X.shape[1]), X, y), -X.shape[0] * np.log(2.0), rtol=1e-14
    )


def test_log_likelihood_finite_for_huge_weights():
    X, y, _ = make_problem(4)
    w = np.full(X.shape[1], 1e5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = log_likelihood(w, X, y)
        g = gradient(w, X, y)
        H = hessian(w, X, y)
    assert np.isfinite(value) and value < 0
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(H))


# ---------------------------------------------------------------------------------------------
# derivatives against central finite differences


def central_difference(f, w: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of f (scalar or vector valued) along each coordinate of w."""
    cols = []
    for j in range(w.size):
        e = np.zeros_like(w)
        e[j] = h
        cols.append((np.asarray(f(w + e)) - np.asarray(f(w - e))) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_matches_finite_differences(seed):
    X, y, w = make_problem(seed)
    fd = central_difference(lambda v: log_likelihood(v, X, y), w)
    g = gradient(w, X, y)
    rel_err = np.linalg.norm(g - fd) / np.linalg.norm(g)
    assert rel_err < 1e-6, rel_err


@pytest.mark.parametrize("seed", SEEDS)
def test_hessian_matches_finite_differences_of_gradient(seed):
    X, y, w = make_problem(seed)
    fd = central_difference(lambda v: gradient(v, X, y), w)  # fd[i, j] = d g_i / d w_j
    H = hessian(w, X, y)
    rel_err = np.linalg.norm(H - fd) / np.linalg.norm(H)
    assert rel_err < 1e-6, rel_err


@pytest.mark.parametrize("seed", SEEDS)
def test_hessian_is_symmetric_negative_semidefinite_and_bounded(seed):
    X, y, w = make_problem(seed)
    H = hessian(w, X, y)
    np.testing.assert_array_equal(H, H.T)
    scale = np.linalg.norm(X, 2) ** 2
    assert np.linalg.eigvalsh(H).max() <= 1e-12 * scale
    # -H <= X^T X / 4 in the Loewner order (sigma(z) sigma(-z) <= 1/4)
    assert np.linalg.eigvalsh(X.T @ X / 4 + H).min() >= -1e-12 * scale


def test_hessian_does_not_depend_on_labels():
    X, y, w = make_problem(2)
    np.testing.assert_array_equal(hessian(w, X, y), hessian(w, X, 1.0 - y))


# ---------------------------------------------------------------------------------------------
# gradient ascent


@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_ascent_agrees_with_scipy(seed):
    X, y, _ = make_problem(seed)
    res = gradient_ascent(X, y, tol=TIGHT)
    w_ref = scipy_mle(X, y)
    assert res.converged
    np.testing.assert_allclose(res.w, w_ref, rtol=0, atol=1e-5)
    L_ref = log_likelihood(w_ref, X, y)
    assert abs(res.log_likelihood[-1] - L_ref) <= 1e-11 * abs(L_ref)
    # with the default tolerance the fit is close too
    res_default = gradient_ascent(X, y)
    assert res_default.converged
    np.testing.assert_allclose(res_default.w, w_ref, rtol=0, atol=1e-3)
    assert abs(res_default.log_likelihood[-1] - L_ref) <= 1e-8 * abs(L_ref)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_gradient_ascent_agrees_with_sklearn(seed):
    from sklearn.linear_model import LogisticRegression

    X, y, _ = make_problem(seed)
    res = gradient_ascent(X, y, tol=TIGHT)
    clf = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=10_000)
    clf.fit(X, y)
    np.testing.assert_allclose(res.w, clf.coef_.ravel(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_likelihood_increases_at_every_iterate(seed):
    X, y, _ = make_problem(seed)
    res = gradient_ascent(X, y, tol=TIGHT)
    lls = res.log_likelihood
    assert len(lls) == res.n_iter + 1 and res.n_iter > 1
    assert np.all(np.diff(lls) >= -1e-13 * np.abs(lls[1:]))
    assert np.all(np.diff(lls)[:-1] > 0)
    # the recorded values are L at the iterates, not lagged: the last one is L(res.w)
    assert lls[-1] == log_likelihood(res.w, X, y)
    assert lls[0] == log_likelihood(np.zeros(X.shape[1]), X, y)


def test_default_learning_rate_is_four_over_lambda_max():
    X, _, _ = make_problem(5)
    lam_max = np.linalg.eigvalsh(X.T @ X).max()
    np.testing.assert_allclose(default_learning_rate(X), 4.0 / lam_max, rtol=1e-12)
    res = gradient_ascent(X, make_problem(5)[1], max_iter=3)
    assert res.lr == default_learning_rate(X)


def test_gradient_ascent_from_the_optimum_stops_at_once():
    X, y, _ = make_problem(6)
    w_ref = scipy_mle(X, y)
    res = gradient_ascent(X, y, w0=w_ref)
    assert res.converged and res.n_iter <= 1
    np.testing.assert_allclose(res.w, w_ref, atol=1e-9)


def test_gradient_ascent_max_iter_reached():
    X, y, _ = make_problem(0)
    res = gradient_ascent(X, y, max_iter=3)
    assert not res.converged
    assert res.n_iter == 3 and len(res.log_likelihood) == 4


def test_too_large_learning_rate_warns_about_the_decrease():
    X, y, _ = make_problem(1)
    with pytest.warns(UserWarning, match="decreased by .* too large"):
        res = gradient_ascent(X, y, lr=50 * default_learning_rate(X), max_iter=20)
    assert np.any(np.diff(res.log_likelihood) < 0)


def test_result_is_frozen_and_read_only():
    X, y, _ = make_problem(0)
    res = gradient_ascent(X, y, max_iter=5)
    assert isinstance(res, GradientAscentResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.n_iter = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        res.w[0] = 1.0


# ---------------------------------------------------------------------------------------------
# separable data


def separable_problem(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y = (X[:, 1] + 0.5 * X[:, 2] > 0.2).astype(float)
    return X, y


def test_separable_data_warns_and_stops():
    X, y = separable_problem()
    with pytest.warns(SeparableDataWarning, match="maximum likelihood estimate does not exist"):
        res = gradient_ascent(X, y)
    assert not res.converged and res.n_iter == 0
    np.testing.assert_array_equal(res.w, np.zeros(3))
    assert len(res.log_likelihood) == 1


def test_separable_data_really_has_no_maximiser():
    # The claim behind the warning: along the separating direction L increases towards 0.
    X, y = separable_problem()
    v = np.array([-0.2, 1.0, 0.5])
    margins = (2 * y - 1) * (X @ v)
    assert margins.min() > 0
    c_big = 40.0 / margins.min()  # every margin at least 40: each term above -e^{-40}
    values = [log_likelihood(c * v, X, y) for c in (1.0, 10.0, 100.0, c_big)]
    assert np.all(np.diff(values) > 0)
    assert values[-1] > -X.shape[0] * np.exp(-40.0)


def test_quasi_complete_separation_is_detected():
    # y=1 exactly when x > 0, and points at x = 0 carry both labels: only quasi-separable.
    x = np.array([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    X = np.column_stack([np.ones_like(x), x])
    assert is_separable(X, y)
    with pytest.warns(SeparableDataWarning):
        gradient_ascent(X, y)


@pytest.mark.parametrize("seed", range(20))
def test_is_separable_matches_one_dimensional_brute_force(seed):
    # With an intercept and one feature, the classes are separable exactly when all labels
    # are equal or, after sorting by x, one class lies weakly on each side of a threshold.
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 9))
    x = rng.integers(-3, 4, size=n).astype(float)
    y = rng.integers(0, 2, size=n).astype(float)
    X = np.column_stack([np.ones(n), x])
    x0, x1 = x[y == 0], x[y == 1]
    if x0.size == 0 or x1.size == 0:
        expected = True
    else:
        expected = bool(x0.max() <= x1.min() or x1.max() <= x0.min())
    assert is_separable(X, y) == expected


@pytest.mark.parametrize("seed", SEEDS)
def test_overlapping_data_is_not_separable(seed):
    X, y, _ = make_problem(seed)
    assert not is_separable(X, y)


# ---------------------------------------------------------------------------------------------
# input validation

GOOD_X = np.array([[1.0, 0.5], [1.0, -1.0], [1.0, 2.0]])
GOOD_Y = np.array([1.0, 0.0, 0.0])
GOOD_W = np.array([0.1, -0.2])

BAD_DATA = [
    (GOOD_X, [1.0, 2.0, 0.0], "only the labels 0 and 1.*value\\(s\\) 2"),
    (GOOD_X, [1.0, -1.0, 0.5], "only the labels 0 and 1.*-1, 0.5"),
    (GOOD_X, [1.0, np.nan, 0.0], "y contains NaN"),
    ([[1.0, np.nan], [1.0, 0.0], [1.0, 1.0]], GOOD_Y, "X contains NaN"),
    ([[1.0, np.inf], [1.0, 0.0], [1.0, 1.0]], GOOD_Y, "X contains infinite"),
    ([[1.0, -np.inf], [1.0, 0.0], [1.0, 1.0]], GOOD_Y, "X contains infinite"),
    (GOOD_X, [1.0, 0.0], "y has 2 entries but X has 3 rows"),
    (np.empty((0, 2)), np.empty(0), "X is empty"),
    ([1.0, 2.0, 3.0], GOOD_Y, "X must be 2-D"),
    (GOOD_X, GOOD_Y[:, None], "y must be 1-D"),
]


@pytest.mark.parametrize("X, y, match", BAD_DATA)
@pytest.mark.parametrize(
    "call",
    [
        lambda X, y: log_likelihood(GOOD_W, X, y),
        lambda X, y: log_likelihood_terms(GOOD_W, X, y),
        lambda X, y: gradient(GOOD_W, X, y),
        lambda X, y: hessian(GOOD_W, X, y),
        lambda X, y: is_separable(X, y),
        lambda X, y: gradient_ascent(X, y),
    ],
    ids=["log_likelihood", "terms", "gradient", "hessian", "is_separable", "gradient_ascent"],
)
def test_bad_data_raises(call, X, y, match):
    with pytest.raises(ValueError, match=match):
        call(X, y)


@pytest.mark.parametrize("fn", [log_likelihood, log_likelihood_terms, gradient, hessian])
@pytest.mark.parametrize(
    "w, match",
    [
        ([0.1, 0.2, 0.3], "w has 3 entries but X has 2 columns"),
        ([0.1, np.nan], "w contains NaN"),
        ([0.1, np.inf], "w contains infinite"),
        ([[0.1, 0.2]], "w must be 1-D"),
    ],
)
def test_bad_weights_raise(fn, w, match):
    with pytest.raises(ValueError, match=match):
        fn(w, GOOD_X, GOOD_Y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"w0": [0.0]}, "w0 has 1 entries but X has 2 columns"),
        ({"w0": [0.0, np.nan]}, "w0 contains NaN"),
        ({"lr": 0.0}, "lr must be a positive finite number"),
        ({"lr": -1.0}, "lr must be a positive finite number"),
        ({"lr": np.inf}, "lr must be a positive finite number"),
        ({"max_iter": -1}, "max_iter must be >= 0, got -1"),
        ({"tol": -1e-3}, "tol must be a finite number >= 0"),
        ({"tol": np.nan}, "tol must be a finite number >= 0"),
    ],
)
def test_bad_gradient_ascent_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_ascent(GOOD_X, GOOD_Y, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_iter": 2.5}, "max_iter must be an integer, got float"),
        ({"max_iter": 10.0}, "max_iter must be an integer, got float"),
        ({"max_iter": "abc"}, "max_iter must be an integer, got str"),
        ({"max_iter": None}, "max_iter must be an integer, got NoneType"),
        ({"max_iter": True}, "max_iter must be an integer, got bool"),
        ({"lr": "fast"}, "lr must be a real number, got str"),
        ({"lr": True}, "lr must be a real number, got bool"),
        ({"lr": 1j}, "lr must be a real number, got complex"),
        ({"tol": None}, "tol must be a real number, got NoneType"),
        ({"tol": "0"}, "tol must be a real number, got str"),
        ({"w0": [0.0, 1j]}, "w0 must hold real numbers, got complex"),
        ({"w0": ["a", "b"]}, "w0 must be an array of numbers"),
    ],
)
def test_wrong_types_of_gradient_ascent_options_raise(kwargs, match):
    with pytest.raises(TypeError, match=match):
        gradient_ascent(GOOD_X, GOOD_Y, **kwargs)


def test_all_zero_features_raise():
    with pytest.raises(ValueError, match="X is all zeros"):
        default_learning_rate(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="X is all zeros"):
        gradient_ascent(np.zeros((3, 2)), GOOD_Y)


# ---------------------------------------------------------------------------------------------
# tol = 0 and max_iter


@pytest.mark.parametrize("max_iter", [0, 1, 25, np.int64(300)])
def test_tol_zero_runs_exactly_max_iter_steps(max_iter):
    X, y, _ = make_problem(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gradient_ascent(X, y, tol=0, max_iter=max_iter)
    assert res.n_iter == max_iter and not res.converged
    assert len(res.log_likelihood) == max_iter + 1
    # the same iterates as with a positive tolerance, as far as that run goes
    ref = gradient_ascent(X, y, tol=TIGHT, max_iter=max_iter)
    m = min(ref.n_iter, res.n_iter) + 1
    np.testing.assert_array_equal(res.log_likelihood[:m], ref.log_likelihood[:m])


def test_tol_zero_keeps_stepping_past_the_optimum():
    """Where the gradient rounding test would stop, tol=0 runs on, without warnings and
    without moving away from the maximiser."""
    X, y, _ = make_problem(6)
    ref = gradient_ascent(X, y, tol=TIGHT)
    assert ref.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gradient_ascent(X, y, tol=0.0, max_iter=ref.n_iter + 500)
    assert res.n_iter == ref.n_iter + 500 and not res.converged
    w_ref = scipy_mle(X, y)
    assert np.abs(res.w - w_ref).max() <= np.abs(ref.w - w_ref).max() + 1e-12
    np.testing.assert_allclose(res.w, w_ref, rtol=0, atol=1e-5)
    tail = res.log_likelihood[ref.n_iter:]
    assert np.ptp(tail) <= 1e-12 * abs(tail[0])


def test_max_iter_zero_evaluates_the_start_only():
    X, y, _ = make_problem(1)
    res = gradient_ascent(X, y, max_iter=0, w0=np.ones(X.shape[1]))
    assert res.n_iter == 0 and not res.converged
    np.testing.assert_array_equal(res.w, np.ones(X.shape[1]))
    assert res.log_likelihood.tolist() == [log_likelihood(np.ones(X.shape[1]), X, y)]


def test_numpy_scalars_are_accepted():
    X, y, _ = make_problem(2)
    ref = gradient_ascent(X, y, lr=0.01, max_iter=40, tol=1e-8)
    res = gradient_ascent(X, y, lr=np.float64(0.01), max_iter=np.int32(40),
                          tol=np.float64(1e-8))
    np.testing.assert_array_equal(res.log_likelihood, ref.log_likelihood)
    assert gradient_ascent(X, y, lr=1e-3, max_iter=np.uint8(3)).n_iter == 3
    assert gradient_ascent(X, y, lr=np.float32(0.01), max_iter=3, tol=0).n_iter == 3


def test_boolean_labels_are_labels():
    X, y, w = make_problem(3)
    assert log_likelihood(w, X, y.astype(bool)) == log_likelihood(w, X, y)


# ---------------------------------------------------------------------------------------------
# scale: features of any magnitude floating point can handle, a clear error beyond


@pytest.mark.parametrize("k", [-400, -100, 100, 400])
def test_fit_is_equivariant_under_scaling_of_the_features(k):
    """w(2^k X) = 2^-k w(X): logistic regression only sees X w. With a power of two the
    scaling is exact, and so are the iterates (features up to about 1e120 and down to 1e-120)."""
    X, y, _ = make_problem(4)
    ref = gradient_ascent(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = gradient_ascent(np.ldexp(X, k), y)
    assert res.converged and res.n_iter == ref.n_iter
    np.testing.assert_allclose(np.ldexp(res.w, k), ref.w, rtol=1e-13)
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-13)
    assert res.lr == pytest.approx(np.ldexp(ref.lr, -2 * k), rel=1e-13)


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1.0, 1e30, 1e200])
def test_is_separable_does_not_depend_on_the_scale(scale):
    X, y = separable_problem()
    Xo, yo, _ = make_problem(0)
    assert is_separable(scale * X, y)
    assert not is_separable(scale * Xo, yo)
    # nor on the relative scale of the features
    assert is_separable(X * [1.0, 1e-12, 1e12], y)


@pytest.mark.parametrize("scale, word", [(1e200, "large"), (2.0**600, "large"),
                                         (1e-200, "small"), (2.0**-600, "small")])
def test_features_out_of_range_ask_for_standardisation(scale, word):
    X, y, _ = make_problem(0)
    for call in (lambda: gradient_ascent(scale * X, y),
                 lambda: gradient_ascent(scale * X, y, lr=1e-3),
                 lambda: default_learning_rate(scale * X)):
        with pytest.raises(ValueError, match=f"the features are too {word}.*standardise"):
            call()


def test_overflowing_predictor_or_hessian_is_a_value_error():
    X, y, _ = make_problem(0)
    w_big = np.full(X.shape[1], 1e307)
    for fn in (log_likelihood, log_likelihood_terms, gradient, hessian):
        with pytest.raises(ValueError, match=r"linear predictor w·x_\d+ overflows"):
            fn(w_big, 1e10 * X, y)
    # w·x = inf - inf = NaN inside the sum
    with pytest.raises(ValueError, match=r"w·x_0 overflows \(nan\)"):
        log_likelihood([1e200, -1e200], [[1e200, 1e200]], [1])
    # at w ~ 1e-200 the predictor of 1e200 X is moderate, but X^T S X is not representable
    with pytest.raises(ValueError, match="the Hessian -X\\^T S X overflows.*standardise"):
        hessian(np.full(X.shape[1], 1e-200), 1e200 * X, y)
    with pytest.raises(ValueError, match="w0·x_\\d+ overflows"):
        gradient_ascent(X, y, w0=np.full(X.shape[1], 1e308))


def test_diverging_user_learning_rate_is_a_value_error():
    X, y, _ = make_problem(0)
    with pytest.raises(ValueError, match=r"diverged: at step 1 .*lr=1e\+307 is far too"):
        gradient_ascent(X, y, lr=1e307)
    # a huge lr that does not overflow gives finite numbers (and the decrease warning)
    with pytest.warns(UserWarning, match="decreased"):
        res = gradient_ascent(X, y, lr=1e300, max_iter=100)
    assert np.all(np.isfinite(res.log_likelihood)) and np.all(np.isfinite(res.w))


@settings(max_examples=150, deadline=None)
@given(
    x_exp=st.integers(-320, 307),
    w_exp=st.integers(-320, 308),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=6, max_size=6),
)
def test_no_nan_and_no_overflow_error_at_any_magnitude(x_exp, w_exp, signs):
    """Finite inputs of any magnitude give finite results or a ValueError, never NaN, inf,
    an OverflowError or a floating-point RuntimeWarning."""
    X = np.array([[1.0, 2.0], [1.0, -1.0], [1.0, 0.5]]) * np.array(signs[:3])[:, None]
    X = X * float(f"1e{x_exp}")  # entries up to 2e307, finite
    w = np.array(signs[3:5]) * float(f"1e{w_exp}")
    y = GOOD_Y
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # overflow, invalid value
        warnings.simplefilter("ignore", SeparableDataWarning)
        warnings.simplefilter("ignore", UserWarning)  # L decreased: lr too large
        for call in (
            lambda: log_likelihood(w, X, y),
            lambda: log_likelihood_terms(w, X, y),
            lambda: gradient(w, X, y),
            lambda: hessian(w, X, y),
            lambda: default_learning_rate(X),
            lambda: gradient_ascent(X, y, max_iter=50),
            lambda: gradient_ascent(X, y, w0=w, max_iter=50),
            lambda: is_separable(X, y),
        ):
            try:
                out = call()
            except ValueError:
                continue
            if isinstance(out, GradientAscentResult):
                assert np.all(np.isfinite(out.w)) and np.all(np.isfinite(out.log_likelihood))
                assert np.isfinite(out.lr) and out.lr > 0
            elif not isinstance(out, bool):
                assert np.all(np.isfinite(out)), out


# ---------------------------------------------------------------------------------------------
# argument types, for every function


@pytest.mark.parametrize("fn", [sigmoid, log_sigmoid])
@pytest.mark.parametrize(
    "z, match",
    [("abc", "z must be an array of numbers"), (1 + 2j, "z must hold real numbers"),
     ([0.5, 1j], "z must hold real numbers"), ([1.0, {}], "z must be an array of real numbers"),
     ([[1.0], [1.0, 2.0]], "z must be an array of numbers")],
)
def test_sigmoid_type_errors_name_z(fn, z, match):
    with pytest.raises(TypeError, match=match):
        fn(z)


@pytest.mark.parametrize("arg", ["w", "X", "y"])
@pytest.mark.parametrize("bad", ["complex", "strings", "ragged"])
@pytest.mark.parametrize("fn", [log_likelihood, log_likelihood_terms, gradient, hessian])
def test_bad_arrays_are_type_errors_naming_them(fn, arg, bad):
    args = {"w": GOOD_W, "X": GOOD_X, "y": GOOD_Y}
    value = np.asarray(args[arg])
    args[arg] = {"complex": value + 0j, "strings": value.astype(str).tolist(),
                 "ragged": [value.tolist(), [1.0]]}[bad]
    with pytest.raises(TypeError, match=f"^{arg} must"):
        fn(args["w"], args["X"], args["y"])


@pytest.mark.parametrize("fn", [is_separable, gradient_ascent])
@pytest.mark.parametrize("arg", ["X", "y"])
def test_complex_data_is_a_type_error(fn, arg):
    X, y = (GOOD_X + 0j, GOOD_Y) if arg == "X" else (GOOD_X, GOOD_Y + 0j)
    with pytest.raises(TypeError, match=f"^{arg} must hold real numbers, got complex"):
        fn(X, y)
    if arg == "X":
        with pytest.raises(TypeError, match="^X must hold real numbers"):
            default_learning_rate(X)


NOT_INTEGERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=4),
    st.none(), st.complex_numbers(), st.just(np.float64(10.0)), st.just([10]),
)
NOT_REALS = st.one_of(
    st.booleans(), st.text(max_size=4), st.complex_numbers(), st.just([0.1]),
    st.just(np.array([0.1])), st.just(np.bool_(True)),
)
NEGATIVE_OR_NOT_FINITE = st.one_of(
    st.just(np.nan), st.just(np.inf), st.just(-np.inf),
    st.floats(max_value=-1e-300, allow_nan=False), st.integers(max_value=-1),
)


@settings(max_examples=150, deadline=None)
@given(
    arg=st.sampled_from(["max_iter", "lr", "tol"]),
    data=st.data(),
)
def test_bad_scalars_name_the_argument(arg, data):
    """A float, bool, string, None, NaN, infinite or negative value where it does not belong:
    TypeError (wrong type) or ValueError (out of range) whose message starts with the name."""
    if arg == "max_iter":
        value = data.draw(st.one_of(NOT_INTEGERS, st.integers(max_value=-1)))
        want = ValueError if isinstance(value, int) and not isinstance(value, bool) else TypeError
    else:
        choices = [NOT_REALS, NEGATIVE_OR_NOT_FINITE]
        if arg == "lr":
            choices.append(st.just(0.0))
        else:
            choices.append(st.none())
        value = data.draw(st.one_of(*choices))
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = ValueError if is_number else TypeError
    with pytest.raises((TypeError, ValueError)) as info:
        gradient_ascent(GOOD_X, GOOD_Y, **{arg: value})
    assert info.type is want, (value, info.value)
    assert str(info.value).startswith(f"{arg} must"), str(info.value)
