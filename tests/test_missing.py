"""emtutor.missing: a normal with missing entries, against scipy and direct maximisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from emtutor import missing
from emtutor.em import LikelihoodDecreaseWarning


def random_normal(rng, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T + 0.5 * np.eye(d)


def with_missing(rng, X, pattern: str, fraction: float = 0.3) -> np.ndarray:
    X = X.copy()
    n, d = X.shape
    if pattern == "mcar":
        mask = rng.random((n, d)) < fraction
    elif pattern == "monotone":  # once a column is missing, so are all later ones
        start = rng.integers(1, d + 1, size=n)
        start[rng.random(n) > fraction] = d
        mask = np.arange(d)[None, :] >= start[:, None]
    else:  # arbitrary: per row a random subset, with probabilities that vary by column
        mask = rng.random((n, d)) < rng.uniform(0.05, 2 * fraction, size=d)
    mask[mask.all(axis=1), 0] = False  # keep one entry of every row
    for j in np.flatnonzero((~mask).sum(axis=0) < 2):  # and two of every column
        mask[:2, j] = False
    X[mask] = np.nan
    return X


def observed_ll_by_rows(X, mean, cov) -> float:
    total = 0.0
    for row in X:
        o = ~np.isnan(row)
        total += multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(row[o])
    return float(total)


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 5), n=st.integers(3, 40), seed=st.integers(0, 2**32 - 1),
       pattern=st.sampled_from(["mcar", "monotone", "arbitrary"]))
def test_observed_log_likelihood_matches_scipy_row_by_row(d, n, seed, pattern):
    rng = np.random.default_rng(seed)
    mean, cov = random_normal(rng, d)
    X = with_missing(rng, rng.multivariate_normal(mean, cov, size=n), pattern)
    want = observed_ll_by_rows(X, mean, cov)
    assert missing.observed_log_likelihood(X, mean, cov) == pytest.approx(want, rel=1e-10)


def test_e_step_matches_the_conditional_from_the_precision_matrix():
    rng = np.random.default_rng(1)
    mean, cov = random_normal(rng, 4)
    X = with_missing(rng, rng.multivariate_normal(mean, cov, size=30), "arbitrary", 0.4)
    stats = missing.e_step(X, mean, cov)
    prec = np.linalg.inv(cov)
    sum_xx = np.zeros((4, 4))
    for i, row in enumerate(X):
        m, o = np.isnan(row), ~np.isnan(row)
        filled, c = row.copy(), np.zeros((4, 4))
        if m.any():
            lam_mm = prec[np.ix_(m, m)]
            filled[m] = mean[m] - np.linalg.solve(lam_mm, prec[np.ix_(m, o)] @ (row[o] - mean[o]))
            c[np.ix_(m, m)] = np.linalg.inv(lam_mm)
        np.testing.assert_allclose(stats.expected[i], filled, rtol=1e-10, atol=1e-12)
        sum_xx += np.outer(filled, filled) + c
    np.testing.assert_allclose(stats.sum_xx, sum_xx, rtol=1e-10)
    np.testing.assert_allclose(stats.sum_x, stats.expected.sum(axis=0), rtol=1e-12)


def test_bound_after_the_e_step_equals_the_observed_log_likelihood():
    rng = np.random.default_rng(2)
    mean, cov = random_normal(rng, 3)
    X = with_missing(rng, rng.multivariate_normal(mean, cov, size=50), "mcar")
    stats = missing.e_step(X, mean, cov)
    bound = missing.expected_complete_loglik(stats, mean, cov) + stats.entropy
    assert bound == pytest.approx(observed_ll_by_rows(X, mean, cov), rel=1e-10)
    # Elsewhere the bound is below ln p (KL > 0).
    other = (mean + 0.3, cov * 1.2)
    below = missing.expected_complete_loglik(stats, *other) + stats.entropy
    assert below < observed_ll_by_rows(X, *other)


def direct_maximum(X):
    """Maximise the observed-data ln p over the mean and a Cholesky factor with BFGS."""
    d = X.shape[1]
    il = np.tril_indices(d)

    def unpack(v):
        lower = np.zeros((d, d))
        lower[il] = v[d:]
        lower[np.diag_indices(d)] = np.exp(lower[np.diag_indices(d)])
        return v[:d], lower @ lower.T

    def neg(v):
        return -missing.observed_log_likelihood(X, *unpack(v))

    start = np.concatenate([np.nanmean(X, axis=0), np.zeros(len(il[0]))])
    start[d:][il[0] == il[1]] = 0.5 * np.log(np.nanvar(X, axis=0))
    res = minimize(neg, start, method="BFGS", options={"gtol": 1e-9, "maxiter": 5000})
    return unpack(_newton_polish(neg, res.x))


def _newton_polish(f, v, steps=2, h=1e-4):
    """A few Newton steps with central-difference derivatives: BFGS's finite-difference
    gradients stop about 1e-5 short along the flattest directions; Newton with a central
    gradient (error ~ h^2) goes on to ~1e-9 in the parameters."""
    n = len(v)
    eye = np.eye(n)
    for _ in range(steps):
        grad = np.array([(f(v + 1e-6 * e) - f(v - 1e-6 * e)) / 2e-6 for e in eye])
        hess = np.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                ei, ej = h * eye[i], h * eye[j]
                hess[i, j] = hess[j, i] = (
                    f(v + ei + ej) - f(v + ei - ej) - f(v - ei + ej) + f(v - ei - ej)
                ) / (4 * h * h)
        v = v - np.linalg.solve(hess, grad)
    return v


@pytest.mark.parametrize(
    ("pattern", "d"), [("mcar", 2), ("monotone", 3), ("arbitrary", 4), ("mcar", 5)]
)
def test_em_fixed_point_is_the_direct_maximum(pattern, d):
    """EM's end point against BFGS on the observed-data ln p (mean, Cholesky factor).

    The two agree in ln p to 1e-9 relative and in the parameters to 1e-6 (BFGS, then Newton
    steps with central differences; EM run for a fixed 1000 iterations, past convergence).
    """
    rng = np.random.default_rng(10 * d + len(pattern))
    mean, cov = random_normal(rng, d)
    X = with_missing(rng, rng.multivariate_normal(mean, cov, size=60), pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        res = missing.fit(X, tol=0, max_iter=1000)
    assert res.decreases == ()
    assert np.all(np.diff(res.log_likelihood) >= -1e-9 * abs(res.log_likelihood[-1]))
    res.check_sandwich()
    m_opt, c_opt = direct_maximum(X)
    ll_opt = missing.observed_log_likelihood(X, m_opt, c_opt)
    assert res.log_likelihood[-1] >= ll_opt - 1e-9 * abs(ll_opt)
    np.testing.assert_allclose(res.mean, m_opt, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.covariance, c_opt, rtol=1e-6, atol=1e-6)


def test_without_missing_entries_one_iteration_gives_the_sample_estimates():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    res = missing.fit(X, max_iter=1, tol=0)
    np.testing.assert_allclose(res.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(res.covariance, np.cov(X.T, bias=True), rtol=1e-12)
    np.testing.assert_array_equal(res.expected, X)


def test_expected_keeps_observed_entries_and_fills_missing_ones():
    rng = np.random.default_rng(4)
    X = with_missing(rng, rng.normal(size=(60, 3)), "mcar")
    res = missing.fit(X)
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(res.expected[observed], X[observed])
    assert np.all(np.isfinite(res.expected))


@pytest.mark.parametrize(
    ("X", "exc", "match"),
    [
        ([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]], ValueError, "column 1 of X has every"),
        ([[1.0, 2.0], [np.nan, np.nan], [3.0, 1.0]], ValueError, "row 1 of X has every entry"),
        ([[1.0, np.inf], [2.0, 1.0], [3.0, 0.0]], ValueError, "X\\[0, 1\\] is inf"),
        ([[1.0, 2.0], [2.0, np.nan], [3.0, np.nan]], ValueError, "column 1 of X has only 1"),
        ([1.0, 2.0], ValueError, "X must be 2-D"),
        ([["a", "b"]], TypeError, "X must be an array of numbers"),
        (np.array([[1 + 1j, 2.0], [1.0, 2.0]]), TypeError, "X must hold real numbers"),
    ],
)
def test_bad_data(X, exc, match):
    with pytest.raises(exc, match=match):
        missing.fit(X)


def test_bad_parameters_and_options():
    X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 1.0], [np.nan, 0.5]])
    with pytest.raises(ValueError, match="mean must have shape \\(2,\\)"):
        missing.observed_log_likelihood(X, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="cov is not positive definite"):
        missing.e_step(X, np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(TypeError, match="max_iter must be an integer"):
        missing.fit(X, max_iter=2.5)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        missing.fit(X, tol=-1.0)
    with pytest.raises(TypeError, match="init must be a pair"):
        missing.fit(X, init=np.zeros(2))
    with pytest.raises(TypeError, match="stats must be the Stats"):
        missing.m_step((1, 2))


def test_one_row_with_a_missing_entry_can_be_evaluated():
    """At given parameters a column may be unobserved: one new row with a NaN."""
    from scipy.stats import norm

    mean, cov = np.array([1.0, -1.0]), np.array([[2.0, 0.6], [0.6, 1.0]])
    row = [[np.nan, 0.5]]
    assert missing.observed_log_likelihood(row, mean, cov) == pytest.approx(
        norm(-1.0, 1.0).logpdf(0.5), rel=1e-12
    )
    stats = missing.e_step(row, mean, cov)
    assert stats.expected[0, 0] == pytest.approx(1.0 + 0.6 * 1.5, rel=1e-12)
    with pytest.raises(ValueError, match="column 0 of X has every entry missing"):
        missing.fit(row + [[np.nan, 1.0]])
