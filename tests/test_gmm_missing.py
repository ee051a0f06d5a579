"""Gaussian mixtures on data with missing entries: ``gmm.*(..., missing="em")``.

Oracles: scipy's multivariate normal on each row's observed entries (likelihood,
responsibilities), a direct numerical maximisation of the observed-data log-likelihood
(the fixed point), the complete-data code path (no NaN), and the trace's own bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from emtutor import gmm
from emtutor._gmm_missing import MissingProblem
from emtutor.em import LikelihoodDecreaseWarning
from emtutor.testing import assert_monotone, rel_err

TYPES = ("full", "diag", "spherical")


def _data(n=300, seed=0, frac=0.25, d=2):
    rng = np.random.default_rng(seed)
    truth = gmm.Params(
        [0.4, 0.6],
        np.array([[0.0] * d, [3.0] + [2.0] * (d - 1)]),
        np.array([np.eye(d) + 0.5 * (1 - np.eye(d)), 0.5 * np.eye(d) + 0.2]),
    )
    X, _ = gmm.sample(truth, n, random_state=rng)
    Xm = X.copy()
    Xm[rng.random(X.shape) < frac] = np.nan
    empty = np.isnan(Xm).all(axis=1)
    Xm[empty, 0] = X[empty, 0]  # no row entirely missing
    return X, Xm


def _full(params):
    cov = np.asarray(params.covariances)
    k, d = np.asarray(params.means).shape
    if cov.ndim == 3:
        return cov
    if cov.ndim == 2:
        return np.array([np.diag(c) for c in cov])
    return np.array([c * np.eye(d) for c in cov])


def _oracle_log_joint(X, params):
    """(N, K) ln w_k N(x_no | mu_ko, Sigma_k,oo) with scipy, one pattern of NaN at a time."""
    cov = _full(params)
    observed = ~np.isnan(X)
    out = np.empty((len(X), len(params.weights)))
    for o in np.unique(observed, axis=0):
        rows = np.flatnonzero((observed == o).all(axis=1))
        for k in range(len(params.weights)):
            dist = multivariate_normal(params.means[k][o], cov[k][np.ix_(o, o)])
            out[rows, k] = np.log(params.weights[k]) + dist.logpdf(X[np.ix_(rows, o)])
    return out


def _random_params(rng, k, d, covariance_type):
    a = rng.normal(size=(k, d, d))
    cov = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(d)
    if covariance_type == "diag":
        cov = rng.uniform(0.3, 2.0, size=(k, d))
    elif covariance_type == "spherical":
        cov = rng.uniform(0.3, 2.0, size=k)
    return gmm.Params(rng.dirichlet(np.ones(k) * 3), rng.normal(size=(k, d)), cov)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("seed", range(3))
def test_likelihood_and_posterior_against_scipy(covariance_type, seed):
    rng = np.random.default_rng(seed)
    d, k = 2 + seed, 3
    X = rng.normal(size=(80, d)) * 2 + 5.0
    X[rng.random(X.shape) < 0.35] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    params = _random_params(rng, k, d, covariance_type)
    params = params._replace(means=params.means + 5.0)
    lj = _oracle_log_joint(X, params)
    assert rel_err(gmm.log_likelihood(X, params, missing="em"), logsumexp(lj, axis=1).sum()) < 1e-12
    np.testing.assert_allclose(gmm.log_joint(X, params, missing="em"), lj, rtol=1e-11)
    np.testing.assert_allclose(
        gmm.score_samples(X, params, missing="em"), logsumexp(lj, axis=1), rtol=1e-11
    )
    resp, ll = gmm.e_step(X, params, missing="em")
    np.testing.assert_allclose(resp, softmax(lj, axis=1), atol=1e-12)
    np.testing.assert_allclose(gmm.predict_proba(X, params, missing="em"), resp)
    assert np.array_equal(gmm.predict(X, params, missing="em"), np.argmax(resp, axis=1))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_trace_monotone_and_sandwiched(covariance_type):
    _, Xm = _data(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        res = gmm.fit(
            Xm, 2, covariance_type=covariance_type, random_state=0, reg_covar=0.0, missing="em"
        )
    assert res.n_iter > 5
    assert_monotone(res.log_likelihood)
    res.check_sandwich()
    # the recorded ln p is the observed-data log-likelihood of the iterate (scipy oracle)
    for i in (0, res.n_iter // 2, res.n_iter):
        want = logsumexp(_oracle_log_joint(Xm, res.thetas[i]), axis=1).sum()
        assert rel_err(res.log_likelihood[i], want) < 1e-11


def test_map_prior_with_missing_entries_is_monotone():
    _, Xm = _data(seed=2)
    res = gmm.fit(
        Xm, 2, random_state=0, reg_covar=0.0, weight_concentration=2.0,
        covariance_prior=(0.5 * np.eye(2), 4.0), missing="em",
    )
    assert_monotone(res.log_likelihood)
    res.check_sandwich()
    assert res.log_prior is not None


def _unpack(z, d):
    """Unconstrained vector -> K = 2 mixture (softmax weight, means, Cholesky factors)."""
    w1 = 1.0 / (1.0 + np.exp(-z[0]))
    means = z[1 : 1 + 2 * d].reshape(2, d)
    rest = z[1 + 2 * d :].reshape(2, -1)
    il = np.tril_indices(d)
    covs = []
    for r in rest:
        L = np.zeros((d, d))
        L[il] = r
        L[np.diag_indices(d)] = np.exp(np.diag(L))
        covs.append(L @ L.T)
    return gmm.Params(np.array([1 - w1, w1]), means, np.array(covs))


def _pack(p):
    d = p.means.shape[1]
    il = np.tril_indices(d)
    parts = [np.log(p.weights[1] / p.weights[0]), p.means.ravel()]
    for c in p.covariances:
        L = np.linalg.cholesky(c)
        L[np.diag_indices(d)] = np.log(np.diag(L))
        parts.append(L[il])
    return np.concatenate([np.atleast_1d(x) for x in parts])


def test_fixed_point_against_direct_maximisation():
    """K = 2, D = 2: EM's fixed point maximises the observed-data ln p (scipy BFGS)."""
    _, Xm = _data(n=120, seed=3, frac=0.3)
    res = gmm.fit(Xm, 2, random_state=0, reg_covar=0.0, tol=0, max_iter=3000, missing="em")
    em = res.params
    d = 2

    def neg(z):
        return -logsumexp(_oracle_log_joint(Xm, _unpack(z, d)), axis=1).sum()

    z_em = _pack(em)
    # EM stops at a stationary point: every partial derivative ~ 0 (central differences)
    h = 1e-5
    grad = np.array([(neg(z_em + h * e) - neg(z_em - h * e)) / (2 * h) for e in np.eye(len(z_em))])
    assert np.abs(grad).max() < 1e-5, grad
    # and a direct maximisation from a perturbed start lands on the same parameters
    start = z_em + np.random.default_rng(0).normal(scale=0.05, size=z_em.shape)
    opt = minimize(neg, start, method="BFGS", options={"gtol": 1e-9, "maxiter": 2000})
    assert rel_err(-opt.fun, res.log_likelihood[-1]) < 1e-10
    direct = _unpack(opt.x, d)
    np.testing.assert_allclose(direct.weights, em.weights, atol=1e-5)
    np.testing.assert_allclose(direct.means, em.means, atol=1e-5)
    np.testing.assert_allclose(direct.covariances, em.covariances, atol=1e-5)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_without_nan_identical_to_complete_data_fit(covariance_type):
    X, _ = _data(seed=4)
    a = gmm.fit(X, 2, covariance_type=covariance_type, random_state=3)
    b = gmm.fit(X, 2, covariance_type=covariance_type, random_state=3, missing="em")
    assert np.array_equal(a.log_likelihood, b.log_likelihood)
    assert np.array_equal(a.params.covariances, b.params.covariances)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_missing_problem_on_complete_data_matches_the_complete_data_steps(covariance_type):
    """The missing-data steps themselves, forced onto data without NaN: same E and M-step."""
    X, _ = _data(seed=5)
    rng = np.random.default_rng(5)
    theta = _random_params(rng, 2, 2, covariance_type)
    plain = gmm._Problem(X, covariance_type, 1e-6)
    miss = MissingProblem(X, covariance_type, 1e-6)
    assert plain.scale == miss.scale
    t_plain, t_miss = plain.to_scaled(theta), miss.to_scaled(theta)
    assert rel_err(plain.log_likelihood(t_plain), miss.log_likelihood(t_miss)) < 1e-12
    m1 = plain.m_step(plain.e_step(t_plain))
    m2 = miss.m_step(miss.e_step(t_miss))
    for a, b in zip(m1, m2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_predictions_on_new_rows_with_missing_entries():
    X, _ = _data(seed=6)
    res = gmm.fit(X, 2, random_state=0)
    one = np.array([[np.nan, 2.0], [3.0, np.nan], [0.0, 0.0]])
    resp = gmm.predict_proba(one, res.params, missing="em")
    want = softmax(_oracle_log_joint(one, res.params), axis=1)
    np.testing.assert_allclose(resp, want, atol=1e-12)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        ([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]], r"X\[0, 1\] is inf"),
        ([[np.nan, np.nan], [2.0, 3.0], [1.0, 1.0]], "row 0 of X has every entry missing"),
        ([[1.0, np.nan], [2.0, np.nan], [1.0, np.nan]], "column 1 of X has every entry missing"),
        ([[1.0, np.nan], [2.0, 3.0], [1.0, np.nan]], "column 1 of X has only 1 observed"),
    ],
)
def test_bad_data_refused(X, match):
    with pytest.raises(ValueError, match=match):
        gmm.fit(X, 1, missing="em")


def test_nan_without_missing_option_names_the_option():
    with pytest.raises(ValueError, match="missing='em'"):
        gmm.fit([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]], 1)
    p = gmm.Params([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="missing='em'"):
        gmm.log_likelihood([[1.0, np.nan]], p)


@pytest.mark.parametrize("missing", ["mean", True, 1, "EM"])
def test_unknown_missing_option_refused(missing):
    with pytest.raises(ValueError, match="missing must be None or 'em'"):
        gmm.fit([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]], 1, missing=missing)


def test_more_components_than_points_refused():
    with pytest.raises(ValueError, match="exceeds the number of data points"):
        gmm.fit([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]], 4, missing="em")


def test_row_order_does_not_matter():
    _, Xm = _data(seed=7)
    p = gmm.fit(Xm, 2, random_state=0, missing="em").params
    perm = np.random.default_rng(0).permutation(len(Xm))
    a = gmm.predict_proba(Xm, p, missing="em")
    b = gmm.predict_proba(Xm[perm], p, missing="em")
    np.testing.assert_allclose(a[perm], b, atol=1e-13)


def test_one_new_row_with_a_missing_entry():
    X, _ = _data(seed=8)
    p = gmm.fit(X, 2, random_state=0).params
    row = np.array([[np.nan, 1.5]])
    want = _oracle_log_joint(row, p)
    assert rel_err(gmm.log_likelihood(row, p, missing="em"), logsumexp(want)) < 1e-12
    assert gmm.predict(row, p, missing="em")[0] == np.argmax(want)
