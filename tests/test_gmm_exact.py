"""The GMM E-step is exact whatever the data and their order: against scipy, both row orders.

The oracle evaluates every component with :class:`scipy.stats.multivariate_normal` and
combines them with :func:`scipy.special.logsumexp` and :func:`scipy.special.softmax`, which
share no code with :mod:`emtutor._gaussian`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from emtutor import gmm
from emtutor.em import LikelihoodDecreaseWarning
from emtutor.gmm import Params

LL_RTOL = 1e-8  # relative, on ln p(X | theta)
RESP_ATOL = 1e-9  # absolute, on the responsibilities


def full_covariances(p: Params, d: int) -> np.ndarray:
    cov = np.asarray(p.covariances, dtype=float)
    if cov.ndim == 3:
        return cov
    if cov.ndim == 2:
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def log_density(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``ln N(x | mean, cov)`` by scipy; by an eigendecomposition where scipy refuses.

    scipy declares a covariance singular when its condition number exceeds about 1e10;
    the fits with ``reg_covar = 1e-10`` below reach such covariances, which are still
    positive definite. For them the density is ``-(sum_j (u_j^T (x - mean))^2 / s_j
    + sum_j ln s_j + D ln 2 pi) / 2`` from ``numpy.linalg.eigh``.
    """
    try:
        return multivariate_normal(mean=mean, cov=cov).logpdf(X).reshape(len(X))
    except np.linalg.LinAlgError:
        s, u = np.linalg.eigh(cov)
        z = (X - mean) @ u
        return -0.5 * ((z**2 / s).sum(axis=1) + np.log(s).sum() + len(s) * np.log(2 * np.pi))


def oracle(X: np.ndarray, p: Params) -> tuple[np.ndarray, float]:
    """Responsibilities (N, K) and ln p(X | theta) from scipy (and numpy) alone."""
    d = X.shape[1]
    cov = full_covariances(p, d)
    lj = np.column_stack(
        [
            np.log(w) + log_density(X, m, c)
            for w, m, c in zip(p.weights, p.means, cov, strict=True)
        ]
    )
    return softmax(lj, axis=1), float(logsumexp(lj, axis=1).sum())


def assert_exact(X: np.ndarray, p: Params) -> None:
    """Every public E-step function agrees with the oracle, for X and for X reversed."""
    for rows in (slice(None), slice(None, None, -1)):
        Xo = np.ascontiguousarray(X[rows])
        want_resp, want_ll = oracle(Xo, p)
        resp, ll = gmm.e_step(Xo, p)
        scale = max(1.0, abs(want_ll))
        assert abs(ll - want_ll) <= LL_RTOL * scale, (ll, want_ll)
        assert abs(gmm.log_likelihood(Xo, p) - want_ll) <= LL_RTOL * scale
        np.testing.assert_allclose(resp, want_resp, rtol=0, atol=RESP_ATOL)
        proba = gmm.predict_proba(Xo, p)
        np.testing.assert_allclose(proba, want_resp, rtol=0, atol=RESP_ATOL)
        np.testing.assert_array_equal(gmm.predict(Xo, p), np.argmax(proba, axis=1))


@st.composite
def mixtures(draw):
    """A random mixture (K 2-5, D 1-3, means up to 1e3 apart, variances 1e-8 to 1) and data."""
    k = draw(st.integers(2, 5))
    d = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["full", "diag", "spherical"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = 10.0 ** draw(st.floats(0.0, 3.0))
    means = rng.uniform(-spread / 2, spread / 2, size=(k, d))
    log_var = rng.uniform(-8.0, 0.0, size=(k, d))
    if kind == "full":
        rot = np.linalg.qr(rng.normal(size=(k, d, d)))[0]
        covariances = np.einsum("kij,kj,klj->kil", rot, 10.0**log_var, rot)
        covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    elif kind == "diag":
        covariances = 10.0**log_var
    else:
        covariances = 10.0 ** log_var[:, 0]
    weights = rng.dirichlet(np.ones(k))
    p = Params(weights, means, covariances)
    n = draw(st.integers(20, 200))
    X, _ = gmm.sample(p, n, random_state=rng)
    # Points between and beyond the components too: far from every one of them.
    X[: n // 4] = rng.uniform(-spread, spread, size=(n // 4, d))
    if draw(st.booleans()):
        # The first point on the narrowest component: the case that made the reference of a
        # softmax chosen from the first point lose every digit on the others.
        X[0] = means[np.argmin(log_var.min(axis=1))]
    return X, p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixtures())
def test_e_step_matches_scipy_in_both_row_orders(case):
    X, p = case
    assert_exact(X, p)


def test_narrow_component_far_from_broad_ones():
    """A variance-1e-12 component at +1000 and two broad ones at -1000 and -999."""
    rng = np.random.default_rng(0)
    p = Params(
        np.array([0.2, 0.4, 0.4]),
        np.array([[1000.0], [-1000.0], [-999.0]]),
        np.array([1e-12, 1.0, 1.0]),
    )
    X = np.concatenate(
        [
            1000.0 + 1e-6 * rng.normal(size=(5, 1)),  # on the narrow component
            -1000.0 + rng.normal(size=(200, 1)),
            -999.0 + rng.normal(size=(200, 1)),
        ]
    )
    assert X.shape == (405, 1)
    assert_exact(X, p)


def test_duplicated_far_points_first_or_last():
    """50 copies of a far point, listed first or last, fitted with the default reg_covar."""
    rng = np.random.default_rng(1)
    X = np.concatenate([np.full((50, 2), 300.0), rng.normal(size=(400, 2))])
    for rows in (slice(None), slice(None, None, -1)):
        Xo = np.ascontiguousarray(X[rows])
        with warnings.catch_warnings():
            warnings.simplefilter("error", LikelihoodDecreaseWarning)
            res = gmm.fit(Xo, 3, max_iter=30, random_state=0)
        for theta, ll in zip(res.thetas, res.log_likelihood, strict=True):
            want = oracle(Xo, theta)[1]
            assert abs(ll - want) <= LL_RTOL * abs(want), (ll, want)
        assert res.decreases == ()
        assert_exact(Xo, res.params)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
@pytest.mark.parametrize("reg_covar", [1e-10, 1e-8])
def test_fits_with_small_reg_covar_report_the_true_trace(covariance_type, reg_covar):
    """Traces of fits whose components shrink: every entry is ln p at that theta.

    Three distinct points repeated 20 times make components collapse onto two of them, so
    a full covariance reaches a condition number near ``1 / reg_covar``. No float64 method
    can then be exact to 1e-8: a relative perturbation ``eps`` of the covariance moves its
    smallest eigenvalue by ``eps cond`` relatively, and every log density with it. (At
    ``reg_covar = 1e-10`` both this oracle and ``emtutor`` are off by a few 1e-6 nats from
    the value computed in exact rational arithmetic.) The allowance is therefore
    ``1e-8 |ln p| + 10 eps cond``; the breakdown the row-order bug caused was 1e3 nats.
    """
    rng = np.random.default_rng(2)
    X = np.concatenate(
        [np.repeat(rng.normal(size=(3, 2)), 20, axis=0), 50.0 + rng.normal(size=(200, 2))]
    )
    X = rng.permutation(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        res = gmm.fit(
            X, 4, covariance_type=covariance_type, reg_covar=reg_covar, max_iter=60,
            random_state=3,
        )
    for theta, ll in zip(res.thetas, res.log_likelihood, strict=True):
        want = oracle(X, theta)[1]
        cond = float(np.linalg.cond(full_covariances(theta, 2)).max())
        allowed = LL_RTOL * max(1.0, abs(want)) + 10 * np.finfo(float).eps * cond
        assert abs(ll - want) <= allowed, (ll, want, cond)
    assert res.decreases == ()
    final_resp = oracle(X, res.params)[0]
    np.testing.assert_allclose(res.responsibilities, final_resp, rtol=0, atol=RESP_ATOL)


def test_responsibilities_sum_to_one_and_weight_zero_components_get_zero():
    rng = np.random.default_rng(4)
    p = Params(np.array([0.0, 0.5, 0.0, 0.5]), rng.normal(size=(4, 2)) * 100, np.ones((4, 2)))
    X = rng.normal(size=(100, 2)) * 100
    resp, _ = gmm.e_step(X, p)
    assert np.all(resp[:, [0, 2]] == 0.0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    p_live = Params(np.array([0.5, 0.5]), p.means[[1, 3]], p.covariances[[1, 3]])
    assert_exact(X, p_live)
