"""Tests of emtutor.gmm against scikit-learn, scipy.stats and direct formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from emtutor import _gaussian, bounds, gmm
from emtutor.em import LikelihoodDecreaseWarning
from emtutor.gmm import EmptyComponentWarning, Params

TYPES = ("full", "diag", "spherical")
FORCE = 1e-300  # a tolerance so small that EM runs for max_iter iterations


def full_covariances(p: Params) -> np.ndarray:
    """(K, D, D) covariance matrices of any covariance type."""
    cov = np.asarray(p.covariances)
    d = np.asarray(p.means).shape[1]
    if cov.ndim == 3:
        return cov
    if cov.ndim == 2:
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def clusters(seed: int, n: int = 300, d: int = 2, k: int = 3, spread: float = 4.0):
    """Points from k random Gaussian blobs (well posed: every blob has many points)."""
    rng = np.random.default_rng(seed)
    sizes = np.full(k, n // k)
    sizes[: n - sizes.sum()] += 1
    blobs = []
    for m in sizes:
        a = rng.normal(size=(d, d)) / np.sqrt(d) + 0.5 * np.eye(d)
        blobs.append(rng.normal(size=(m, d)) @ a.T + spread * rng.normal(size=d))
    return rng.permutation(np.concatenate(blobs))


def start(X: np.ndarray, k: int, covariance_type: str, seed: int = 0) -> Params:
    """Means at k random data points, the data covariance for every component."""
    rng = np.random.default_rng(seed)
    means = X[rng.choice(len(X), size=k, replace=False)]
    cov = np.cov(X.T).reshape(X.shape[1], X.shape[1])
    covariances = {
        "full": np.repeat(cov[None], k, axis=0),
        "diag": np.repeat(np.diag(cov)[None], k, axis=0),
        "spherical": np.full(k, np.diag(cov).mean()),
    }[covariance_type]
    return Params(np.full(k, 1.0 / k), means, covariances)


def random_params(rng: np.random.Generator, k: int, d: int, covariance_type: str) -> Params:
    a = rng.normal(size=(k, d, d))
    covariances = {
        "full": a @ a.transpose(0, 2, 1) + 0.3 * np.eye(d),
        "diag": rng.uniform(0.2, 2.0, size=(k, d)),
        "spherical": rng.uniform(0.2, 2.0, size=k),
    }[covariance_type]
    return Params(rng.dirichlet(np.ones(k)), rng.normal(scale=2.0, size=(k, d)), covariances)


# ---------------------------------------------------------------- against scikit-learn


def sklearn_trace(X, p0: Params, covariance_type: str, n_iter: int, reg_covar: float):
    """ln p(X | theta_i), i = 0..n_iter, from scikit-learn run one iteration at a time.

    With ``warm_start`` and ``max_iter=1`` every ``fit`` call is one E-step and one M-step.
    ``lower_bound_`` of the first call is the mean log-likelihood at the initial parameters
    (it comes from the E-step, before the M-step), and ``score`` after call ``i`` the mean
    log-likelihood at ``theta_i``.
    """
    cov = np.asarray(p0.covariances)
    precisions = np.linalg.inv(cov) if covariance_type == "full" else 1.0 / cov
    model = GaussianMixture(
        n_components=len(p0.weights),
        covariance_type=covariance_type,
        max_iter=1,
        tol=0.0,
        reg_covar=reg_covar,
        warm_start=True,
        init_params="random_from_data",
        weights_init=p0.weights,
        means_init=p0.means,
        precisions_init=precisions,
        random_state=0,
    )
    n = len(X)
    trace = []
    for i in range(n_iter):
        model.fit(X)
        if i == 0:
            trace.append(model.lower_bound_ * n)
        trace.append(model.score(X) * n)
    return np.array(trace), model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("reg_covar", [1e-6, 1e-2])
def test_trace_matches_sklearn(covariance_type, reg_covar):
    X = clusters(1, n=400, d=3, k=3, spread=2.0)
    p0 = start(X, 3, covariance_type, seed=2)
    n_iter = 12
    res = gmm.fit(X, 3, init=p0, max_iter=n_iter, tol=FORCE, reg_covar=reg_covar)
    expected, model = sklearn_trace(X, p0, covariance_type, n_iter, reg_covar)
    assert res.n_iter == n_iter
    assert res.covariance_type == covariance_type
    np.testing.assert_allclose(res.log_likelihood, expected, rtol=1e-8, atol=0)
    # the trace is not flat, so the comparison is a real one
    assert res.log_likelihood[-1] - res.log_likelihood[0] > 10.0
    np.testing.assert_allclose(res.params.weights, model.weights_, rtol=1e-8)
    np.testing.assert_allclose(res.params.means, model.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.params.covariances, model.covariances_, rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------- the functional core


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_joint_matches_scipy(covariance_type):
    rng = np.random.default_rng(5)
    p = random_params(rng, 3, 3, covariance_type)
    X = rng.normal(scale=3.0, size=(50, 3))
    expected = np.column_stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(X)
            for w, m, c in zip(p.weights, p.means, full_covariances(p), strict=True)
        ]
    )
    np.testing.assert_allclose(gmm.log_joint(X, p), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_natural_parameters_reproduce_log_joint(covariance_type):
    rng = np.random.default_rng(6)
    p = random_params(rng, 4, 3, covariance_type)
    X = rng.normal(size=(40, 3))
    T = gmm.sufficient_statistics(X, covariance_type)
    eta = gmm.natural_parameters(p)
    f = {"full": 1 + 3 + 6, "diag": 1 + 3 + 3, "spherical": 1 + 3 + 1}[covariance_type]
    assert T.shape == (40, f) and eta.shape == (f, 4)
    np.testing.assert_allclose(T @ eta, gmm.log_joint(X, p), rtol=1e-11, atol=1e-11)


def test_sufficient_statistics_full_columns():
    x = np.array([[1.0, 2.0, 3.0]])
    T = gmm.sufficient_statistics(x)
    # 1, x, then x_i x_j for i <= j: 11 12 13 22 23 33
    np.testing.assert_array_equal(T, [[1, 1, 2, 3, 1, 2, 3, 4, 6, 9]])
    np.testing.assert_array_equal(gmm.sufficient_statistics(x, "diag"), [[1, 1, 2, 3, 1, 4, 9]])


@pytest.mark.parametrize("covariance_type", TYPES)
def test_e_step_is_softmax_of_log_joint(covariance_type):
    rng = np.random.default_rng(7)
    p = random_params(rng, 3, 2, covariance_type)
    X = rng.normal(scale=2.0, size=(60, 2))
    lj = gmm.log_joint(X, p)
    resp, ll = gmm.e_step(X, p)
    np.testing.assert_allclose(resp, softmax(lj, axis=1), rtol=1e-12, atol=1e-15)
    assert ll == pytest.approx(float(logsumexp(lj, axis=1).sum()), rel=1e-13)
    assert ll == pytest.approx(bounds.log_likelihood(lj), rel=1e-13)
    assert gmm.log_likelihood(X, p) == pytest.approx(ll, rel=1e-14)
    np.testing.assert_allclose(gmm.predict_proba(X, p), resp, rtol=1e-14)
    np.testing.assert_array_equal(gmm.predict(X, p), np.argmax(resp, axis=1))


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("reg_covar", [0.0, 0.1])
def test_m_step_matches_weighted_formulas(covariance_type, reg_covar):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(30, 3)) + 5.0
    resp = rng.dirichlet(np.ones(4), size=30)
    p = gmm.m_step(X, resp, covariance_type=covariance_type, reg_covar=reg_covar)
    nk = resp.sum(axis=0)
    means = resp.T @ X / nk[:, None]
    full = np.stack(
        [(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] for k in range(4)]
    ) + reg_covar * np.eye(3)
    expected = {
        "full": full,
        "diag": np.diagonal(full, axis1=1, axis2=2),
        "spherical": np.diagonal(full, axis1=1, axis2=2).mean(axis=1),
    }[covariance_type]
    np.testing.assert_allclose(p.weights, nk / 30, rtol=1e-13)
    np.testing.assert_allclose(p.means, means, rtol=1e-13)
    np.testing.assert_allclose(p.covariances, expected, rtol=1e-11)


def test_m_step_two_pass_for_a_tight_cluster_far_out():
    # A component of spread 1e-4 at distance 1e3 from the data centre: the one-pass
    # E[x x^T] - mu mu^T would keep only a few digits of its covariance.
    rng = np.random.default_rng(9)
    X = np.concatenate([rng.normal(size=(50, 2)), 1e3 + 1e-4 * rng.normal(size=(50, 2))])
    resp = np.repeat([[1.0, 0.0], [0.0, 1.0]], 50, axis=0)
    p = gmm.m_step(X, resp, covariance_type="full", reg_covar=0.0)
    tight = X[50:] - X[50:].mean(axis=0)
    np.testing.assert_allclose(p.covariances[1], tight.T @ tight / 50, rtol=1e-9)


def test_direct_path_for_a_narrow_component_far_out():
    # Natural parameters of size 1e12: the product T @ eta would lose all digits here.
    p = Params(
        [0.5, 0.5], [[0.0, 0.0], [30.0, 30.0]], [[[1.0, 0.2], [0.2, 1.0]], np.eye(2) * 1e-12]
    )
    X = np.array([[30.0 + 1e-6, 30.0 - 1e-6], [1.0, 1.0], [29.0, 30.0]])
    expected = np.column_stack(
        [
            np.log(0.5) + multivariate_normal(m, c).logpdf(X)
            for m, c in zip(p.means, p.covariances, strict=True)
        ]
    )
    np.testing.assert_allclose(gmm.log_joint(X, p), expected, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("path", ["direct", "blocked"])
def test_direct_path_without_feature_matrix_agrees(covariance_type, path, monkeypatch):
    # Problems too large for the feature matrix take the direct path everywhere ("full"),
    # or compute the features block by block ("diag", "spherical"); blocks of 64 entries
    # make both read the 200 points in many blocks.
    X = clusters(14, n=200, d=3, k=3, spread=2.0)
    p0 = start(X, 3, covariance_type)
    kwargs = {"init": p0, "max_iter": 15, "tol": FORCE}
    resp = np.random.default_rng(0).dirichlet(np.ones(3), size=200)
    fast = gmm.fit(X, 3, **kwargs)
    fast_m = gmm.m_step(X, resp, covariance_type=covariance_type)
    monkeypatch.setattr(_gaussian, "FEATURE_LIMIT", 0)
    monkeypatch.setattr(_gaussian, "_BLOCK_ENTRIES", 64)
    monkeypatch.setattr(_gaussian, "_FEATURE_BLOCK_ENTRIES", 64)
    if path == "direct":
        monkeypatch.setattr(_gaussian, "BLOCKED_TYPES", ())
    direct = gmm.fit(X, 3, **kwargs)
    direct_m = gmm.m_step(X, resp, covariance_type=covariance_type)
    problem = gmm._Problem(X, covariance_type)
    assert problem.T is None  # the limit really applied
    assert problem.blocked == (path == "blocked" and covariance_type != "full")
    np.testing.assert_allclose(direct.log_likelihood, fast.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(direct.elbo, fast.elbo, rtol=1e-12)
    np.testing.assert_allclose(direct.params.covariances, fast.params.covariances, rtol=1e-10)
    np.testing.assert_allclose(direct_m.covariances, fast_m.covariances, rtol=1e-12)
    np.testing.assert_allclose(direct_m.means, fast_m.means, rtol=1e-12)


def test_the_data_are_never_modified():
    # A transposed or (N, 1) input is a view whose transpose is contiguous: still copied.
    for X in (np.array([[1.0], [3.0], [4.0]]), np.asfortranarray(clusters(3, n=50, d=2, k=2))):
        before = X.copy()
        p = Params([0.5, 0.5], X[:2].copy(), np.ones(2))
        gmm.log_likelihood(X, p)
        gmm.e_step(X, p)
        gmm.fit(X, 2, init=p, max_iter=3)
        np.testing.assert_array_equal(X, before)


def test_zero_weight_component_has_zero_responsibility():
    p = Params([1.0, 0.0], [[0.0], [1.0]], [1.0, 1.0])
    resp, ll = gmm.e_step([[0.5], [2.0]], p)
    np.testing.assert_array_equal(resp[:, 1], 0.0)
    assert np.isfinite(ll)
    assert ll == pytest.approx(float(multivariate_normal(0.0, 1.0).logpdf([0.5, 2.0]).sum()))


# ------------------------------------------------------------------------------- fit


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_traces_are_monotone_without_regularisation(covariance_type, seed):
    X = clusters(seed, n=240, d=2, k=3, spread=2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        res = gmm.fit(
            X,
            3,
            covariance_type=covariance_type,
            init="random",
            max_iter=60,
            tol=FORCE,
            reg_covar=0.0,
            random_state=seed,
        )
    scale = np.maximum(1.0, np.abs(res.log_likelihood[1:]))
    assert np.all(np.diff(res.log_likelihood) >= -1e-12 * scale)
    res.check_sandwich(rtol=1e-11)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_trace_fields_agree_with_the_functional_core(covariance_type):
    X = clusters(4, n=150, d=2, k=2)
    res = gmm.fit(X, 2, covariance_type=covariance_type, max_iter=5, tol=FORCE, random_state=0)
    assert len(res.thetas) == res.n_iter + 1 == len(res.log_likelihood) == len(res.elbo) + 1
    assert res.params is res.thetas[-1] is res.theta
    for i, theta in enumerate(res.thetas):
        assert res.log_likelihood[i] == pytest.approx(gmm.log_likelihood(X, theta), rel=1e-13)
    for i in range(res.n_iter):  # elbo[i] = L(q_i, theta_{i+1}) from its definition
        q, _ = gmm.e_step(X, res.thetas[i])
        direct = bounds.elbo(gmm.log_joint(X, res.thetas[i + 1]), q)
        assert res.elbo[i] == pytest.approx(direct, rel=1e-11)
    resp, _ = gmm.e_step(X, res.params)
    np.testing.assert_allclose(res.responsibilities, resp, rtol=1e-12, atol=1e-15)


def test_max_iter_zero_only_evaluates_the_start():
    X = clusters(5, n=60)
    p0 = start(X, 3, "full")
    res = gmm.fit(X, 3, init=p0, max_iter=0)
    assert res.n_iter == 0 and res.elbo.size == 0 and not res.converged
    assert res.log_likelihood[0] == pytest.approx(gmm.log_likelihood(X, p0), rel=1e-13)
    np.testing.assert_allclose(res.params.means, p0.means, rtol=1e-15)


def test_converges_with_default_tolerance():
    X = clusters(6, n=300, spread=6.0)
    res = gmm.fit(X, 3, random_state=0)
    assert res.converged and res.n_iter < 100


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_random_state_reproduces_the_fit(init):
    X = clusters(7, n=200)
    a = gmm.fit(X, 3, init=init, max_iter=10, random_state=123)
    b = gmm.fit(X, 3, init=init, max_iter=10, random_state=123)
    c = gmm.fit(X, 3, init=init, max_iter=10, random_state=np.random.default_rng(123))
    for other in (b, c):
        np.testing.assert_array_equal(a.log_likelihood, other.log_likelihood)
        for x, y in zip(a.params, other.params, strict=True):
            np.testing.assert_array_equal(x, y)
    d = gmm.fit(X, 3, init=init, max_iter=10, random_state=124)
    assert not np.array_equal(a.log_likelihood, d.log_likelihood)


def test_n_init_keeps_the_best_run():
    X = clusters(8, n=200, k=4, spread=2.0)
    kwargs = {"init": "random", "max_iter": 15, "tol": FORCE}
    best = gmm.fit(X, 4, n_init=5, random_state=np.random.default_rng(11), **kwargs)
    rng = np.random.default_rng(11)  # the same generator, used by single runs in turn
    singles = [gmm.fit(X, 4, random_state=rng, **kwargs) for _ in range(5)]
    finals = [r.log_likelihood[-1] for r in singles]
    assert len(set(np.round(finals, 6))) > 1  # the starts differ, so the choice matters
    winner = singles[int(np.argmax(finals))]
    np.testing.assert_array_equal(best.log_likelihood, winner.log_likelihood)
    np.testing.assert_array_equal(best.params.means, winner.params.means)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_offset_and_scale_invariance(covariance_type):
    # Fitting a X + b from the mapped start must follow the same path: the log-likelihood
    # shifts by -N D ln(a) and the parameters map back. X lies on a grid of 2^-30 so that
    # X + 1e6 is exact (the spacing of doubles near 1e6 is 2^-33): the test then measures the
    # algorithm, not the rounding of the data, which EM can amplify in a fast transition.
    X = np.round(clusters(9, n=300, d=2, k=3, spread=3.0) * 2.0**30) / 2.0**30
    p0 = start(X, 3, covariance_type, seed=1)
    a, b = 1e3, np.array([1e6, -2e6])
    Y = a * X + b
    q0 = Params(p0.weights, a * p0.means + b, a**2 * p0.covariances)
    kwargs = {"max_iter": 25, "tol": FORCE}
    fx = gmm.fit(X, 3, init=p0, reg_covar=1e-6, **kwargs)
    fy = gmm.fit(Y, 3, init=q0, reg_covar=1e-6 * a**2, **kwargs)
    shift = -X.size * np.log(a)
    np.testing.assert_allclose(fy.log_likelihood, fx.log_likelihood + shift, rtol=1e-9)
    np.testing.assert_allclose(fy.elbo, fx.elbo + shift, rtol=1e-9)
    np.testing.assert_allclose(fy.params.weights, fx.params.weights, rtol=1e-7)
    np.testing.assert_allclose((fy.params.means - b) / a, fx.params.means, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(fy.params.covariances / a**2, fx.params.covariances, rtol=1e-7)
    # plain offset, no scaling: the same numbers
    fz = gmm.fit(X + 1e6, 3, init=p0._replace(means=p0.means + 1e6), reg_covar=1e-6, **kwargs)
    np.testing.assert_allclose(fz.log_likelihood, fx.log_likelihood, rtol=1e-11)
    np.testing.assert_allclose(fz.params.means - 1e6, fx.params.means, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_collapse_onto_repeated_points_stays_finite(covariance_type, offset):
    rng = np.random.default_rng(10)
    X = np.concatenate([rng.normal(size=(60, 2)), np.tile([[3.0, 3.0]], (6, 1))]) + offset
    cov = start(X, 3, covariance_type).covariances
    narrow = cov * np.array([1.0, 1e-3, 1.0]).reshape(-1, *[1] * (cov.ndim - 1))
    p0 = Params(
        np.full(3, 1.0 / 3.0), np.array([[0.0, 0.0], [3.0, 3.0], [-1.0, 1.0]]) + offset, narrow
    )
    res = gmm.fit(X, 3, init=p0, max_iter=50, tol=FORCE, reg_covar=1e-6)
    cov = full_covariances(res.params)
    # component 1 sits on the six copies: its covariance has shrunk to the floor
    assert np.linalg.eigvalsh(cov[1]).max() < 1e-5
    assert np.linalg.eigvalsh(cov[1]).min() >= 1e-6 * (1 - 1e-6)
    for arr in (*res.params, res.log_likelihood, res.elbo, res.responsibilities):
        assert np.all(np.isfinite(arr))
    assert np.all(np.isfinite(gmm.log_joint(X, res.params)))
    assert res.log_likelihood[-1] > res.log_likelihood[0]


def test_collapse_without_regularisation_raises():
    X = np.concatenate([np.random.default_rng(11).normal(size=(40, 2)), np.ones((5, 2)) * 3.0])
    p0 = Params([0.5, 0.5], [[0.0, 0.0], [3.0, 3.0]], [1.0, 1e-3])
    with pytest.raises(ValueError, match=r"covariances\[1\].*reg_covar > 0"):
        gmm.fit(X, 2, init=p0, max_iter=20, reg_covar=0.0)


def test_empty_component_is_switched_off_with_a_warning():
    X = clusters(12, n=100, d=2, k=2)
    p0 = Params([0.5, 0.49, 0.01], [[0.0, 0.0], [1.0, 1.0], [1e4, 1e4]], [1.0, 1.0, 1.0])
    with pytest.warns(EmptyComponentWarning, match=r"component\(s\) \[2\].*switched off"):
        res = gmm.fit(X, 3, init=p0, max_iter=20, tol=FORCE)
    assert res.params.weights[2] < 1e-15
    np.testing.assert_array_equal(res.params.means[2], [1e4, 1e4])  # kept, not NaN
    for arr in (*res.params, res.log_likelihood, res.elbo, res.responsibilities):
        assert np.all(np.isfinite(arr))
    assert np.all(np.diff(res.log_likelihood) >= -1e-12 * np.abs(res.log_likelihood[1:]))


def test_m_step_keeps_previous_parameters_of_an_empty_component():
    X = clusters(13, n=50, d=2, k=2)
    previous = Params([0.5, 0.5], [[0.0, 0.0], [7.0, 7.0]], [[1.0, 2.0], [3.0, 4.0]])
    resp = np.column_stack([np.ones(50), np.zeros(50)])
    with pytest.warns(EmptyComponentWarning, match=r"component\(s\) \[1\] .* in the M-step"):
        p = gmm.m_step(X, resp, covariance_type="diag", previous=previous)
    np.testing.assert_allclose(p.means[1], [7.0, 7.0], rtol=1e-14)
    np.testing.assert_allclose(p.covariances[1], [3.0, 4.0], rtol=1e-14)
    np.testing.assert_allclose(p.means[0], X.mean(axis=0), rtol=1e-13)
    assert 0 < p.weights[1] < 1e-15


def test_kmeans_plus_plus_with_too_few_distinct_points_warns():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = gmm.fit(X, 3, covariance_type="spherical", max_iter=5, random_state=0)
    messages = [str(w.message) for w in caught if w.category is EmptyComponentWarning]
    assert "after the k-means++ assignment" in messages[0]
    assert all("component(s) [2]" in m for m in messages)
    for arr in (*res.params, res.log_likelihood, res.responsibilities):
        assert np.all(np.isfinite(arr))


def test_sample_follows_the_parameters():
    p = Params([0.2, 0.8], [[-3.0, 0.0], [3.0, 1.0]], [[[1.0, 0.6], [0.6, 1.0]], np.eye(2)])
    X, z = gmm.sample(p, 20000, random_state=0)
    assert X.shape == (20000, 2) and z.shape == (20000,)
    assert abs((z == 0).mean() - 0.2) < 0.01
    np.testing.assert_allclose(X[z == 0].mean(axis=0), p.means[0], atol=0.05)
    np.testing.assert_allclose(np.cov(X[z == 0].T), p.covariances[0], atol=0.06)
    X2, z2 = gmm.sample(p, 20000, random_state=0)
    np.testing.assert_array_equal(X, X2)


def test_fit_recovers_a_mixture():
    truth = Params([0.3, 0.7], [[-3.0, 0.0], [3.0, 1.0]], [[0.5, 1.0], [1.0, 0.3]])
    X, _ = gmm.sample(truth, 3000, random_state=1)
    res = gmm.fit(X, 2, covariance_type="diag", random_state=0)
    order = np.argsort(res.params.means[:, 0])
    np.testing.assert_allclose(res.params.weights[order], truth.weights, atol=0.03)
    np.testing.assert_allclose(res.params.means[order], truth.means, atol=0.1)
    np.testing.assert_allclose(res.params.covariances[order], truth.covariances, rtol=0.1)


# ------------------------------------------------------------------------- bad input


GOOD = Params([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), np.eye(2)])
X_GOOD = np.random.default_rng(0).normal(size=(20, 2))


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        ("abc", TypeError, "params must be a Params"),
        ((GOOD.weights, GOOD.means), TypeError, "params must be a Params"),
        (GOOD._replace(weights=[0.5, 0.4]), ValueError, "weights must sum to 1, got 0.9"),
        (GOOD._replace(weights=[1.5, -0.5]), ValueError, r"non-negative, got weights\[1\]"),
        (GOOD._replace(weights=[1.0]), ValueError, r"weights must have shape \(2,\)"),
        (GOOD._replace(weights=[np.nan, 0.5]), ValueError, "weights contains NaN"),
        (GOOD._replace(means=[0.0, 1.0]), ValueError, "means must be 2-D"),
        (GOOD._replace(means=[[0.0, np.inf], [1, 1]]), ValueError, "means contains infinite"),
        (GOOD._replace(covariances=np.ones((2, 3, 3))), ValueError, r"must have shape \(2, 2, 2\)"),
        (
            GOOD._replace(covariances=np.ones((2, 3))),
            ValueError,
            r"'diag' must have shape \(2, 2\)",
        ),
        (GOOD._replace(covariances=np.ones(3)), ValueError, r"'spherical' must have shape \(2,\)"),
        (
            GOOD._replace(covariances=[np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]),
            ValueError,
            r"covariances\[1\] is not positive definite",
        ),
        (
            GOOD._replace(covariances=[[[1.0, 0.5], [0.0, 1.0]], np.eye(2)]),
            ValueError,
            r"covariances\[0\] is not symmetric",
        ),
        (
            GOOD._replace(covariances=[[1.0, 1.0], [1.0, 0.0]]),
            ValueError,
            r"covariances\[1\] must be positive",
        ),
        (GOOD._replace(covariances=[-1.0, 1.0]), ValueError, r"covariances\[0\] must be positive"),
        (
            GOOD._replace(means=[[0.0], [1.0]], covariances=[1.0, 1.0]),
            ValueError,
            "means have 1 features but X has 2",
        ),
    ],
)
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        gmm.log_joint(X_GOOD, params)


@pytest.mark.parametrize(
    ("X", "exc", "match"),
    [
        ([[0.0, np.nan], [1.0, 1.0]], ValueError, "X contains NaN"),
        ([[0.0, np.inf], [1.0, 1.0]], ValueError, "X contains infinite"),
        ([0.0, 1.0, 2.0], ValueError, "X must be 2-D"),
        (np.zeros((2, 2, 2)), ValueError, "X must be 2-D"),
        (np.zeros((0, 2)), ValueError, "X is empty"),
        ([["a", "b"]], TypeError, "X must be an array of numbers"),
    ],
)
@pytest.mark.parametrize(
    "func", ["fit", "log_joint", "e_step", "log_likelihood", "predict", "m_step"]
)
def test_bad_data(X, exc, match, func):
    with pytest.raises(exc, match=match):
        if func == "fit":
            gmm.fit(X, 1)
        elif func == "m_step":
            gmm.m_step(X, np.ones((2, 1)), covariance_type="full")
        else:
            getattr(gmm, func)(X, GOOD)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_components": 0}, ValueError, "n_components must be >= 1, got 0"),
        (
            {"n_components": 21},
            ValueError,
            "n_components = 21 exceeds the number of data points N = 20",
        ),
        ({"n_components": 2.5}, TypeError, "n_components must be an integer"),
        ({"n_components": True}, TypeError, "n_components must be an integer"),
        ({"covariance_type": "tied"}, ValueError, "covariance_type must be one of"),
        (
            {"init": "kmeans"},
            ValueError,
            "init must be 'kmeans\\+\\+', 'random' or Params, got 'kmeans'",
        ),
        (
            {"init": [0.5, 0.5]},
            TypeError,
            "init must be 'kmeans\\+\\+', 'random' or Params, got list",
        ),
        ({"init": GOOD, "n_init": 2}, ValueError, "n_init > 1 needs a random init"),
        ({"init": GOOD, "covariance_type": "diag"}, ValueError, "covariance_type='diag' but"),
        (
            {"init": GOOD, "n_components": 3},
            ValueError,
            "init has 2 components but n_components = 3",
        ),
        ({"init": GOOD._replace(weights=[0.7, 0.7])}, ValueError, "weights must sum to 1"),
        ({"n_init": 0}, ValueError, "n_init must be >= 1"),
        ({"max_iter": -1}, ValueError, "max_iter must be >= 0"),
        ({"tol": -1e-3}, ValueError, "tol must be a finite number >= 0, got -0.001"),
        ({"tol": np.nan}, ValueError, "tol must be a finite number >= 0, got nan"),
        ({"tol": "small"}, TypeError, "tol must be a real number, got str"),
        ({"max_iter": 10.0}, TypeError, "max_iter must be an integer, got float"),
        ({"max_iter": "10"}, TypeError, "max_iter must be an integer, got str"),
        ({"random_state": -1}, ValueError, "random_state must be a seed >= 0, got -1"),
        ({"reg_covar": -1e-6}, ValueError, "reg_covar must be a finite number >= 0"),
        ({"reg_covar": None}, TypeError, "reg_covar must be a real number"),
        ({"random_state": "seed"}, TypeError, "random_state must be None, an int or a numpy"),
    ],
)
def test_bad_fit_options(kwargs, exc, match):
    kwargs = {"n_components": 2, **kwargs}
    with pytest.raises(exc, match=match):
        gmm.fit(X_GOOD, **kwargs)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_tol_zero_runs_exactly_max_iter_iterations(covariance_type):
    res = gmm.fit(X_GOOD, 2, covariance_type=covariance_type, tol=0, max_iter=7, random_state=0)
    assert res.n_iter == 7 and len(res.log_likelihood) == 8 and not res.converged
    assert res.decreases == ()


@pytest.mark.parametrize("func", ["fit", "e_step", "log_likelihood", "predict", "m_step"])
def test_complex_data_are_refused(func):
    Xc = X_GOOD.astype(complex)
    Xc[0, 0] += 1e-3j
    args = {
        "fit": lambda: gmm.fit(Xc, 2),
        "m_step": lambda: gmm.m_step(Xc, np.full((len(Xc), 2), 0.5), covariance_type="full"),
    }.get(func, lambda: getattr(gmm, func)(Xc, GOOD))
    with pytest.raises(TypeError, match="X must hold real numbers, got complex values"):
        args()


def test_fit_result_repr_is_short():
    res = gmm.fit(X_GOOD, 2, max_iter=3, tol=0, random_state=0)
    text = repr(res)
    assert text.startswith("GMMResult(n_iter=3, converged=False, log_likelihood[-1]=")
    assert text.endswith("decreases=())") and len(text) < 200


@pytest.mark.parametrize(
    ("resp", "kwargs", "exc", "match"),
    [
        (np.full((20, 2), 0.4), {}, ValueError, "rows of resp must sum to 1"),
        (np.full((19, 2), 0.5), {}, ValueError, "resp must have one row per data point"),
        (np.full(20, 1.0), {}, ValueError, "resp must be 2-D"),
        (
            np.column_stack([np.ones(20), np.zeros(20)]),
            {},
            ValueError,
            "column 1 of resp sums to 0",
        ),
        (np.full((20, 2), 0.5), {"covariance_type": "tied"}, ValueError, "covariance_type must be"),
        (np.full((20, 2), 0.5), {"reg_covar": -1.0}, ValueError, "reg_covar must be"),
        (
            np.full((20, 2), 0.5),
            {"previous": GOOD._replace(covariances=[1.0, 1.0])},
            ValueError,
            "previous must have 2 components of type 'full', got 2 of type 'spherical'",
        ),
        (np.full((20, 2), 0.5), {"previous": GOOD._replace(weights=[1, 1])}, ValueError, "sum"),
    ],
)
def test_bad_m_step_input(resp, kwargs, exc, match):
    kwargs = {"covariance_type": "full", **kwargs}
    with pytest.raises(exc, match=match):
        gmm.m_step(X_GOOD, resp, **kwargs)


def test_m_step_singular_covariance_without_regularisation():
    X = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # on a line: singular scatter
    with pytest.raises(ValueError, match=r"covariances\[0\] is not positive definite"):
        gmm.m_step(X, np.ones((3, 1)), covariance_type="full", reg_covar=0.0)


def test_bad_sample_and_statistics_input():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        gmm.sample(GOOD, 0)
    with pytest.raises(TypeError, match="n must be an integer"):
        gmm.sample(GOOD, 2.0)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        gmm.sufficient_statistics(X_GOOD, "tied")
    with pytest.raises(ValueError, match="covariances must be 1-D, 2-D or 3-D"):
        gmm.covariance_type_of(GOOD._replace(covariances=np.ones((1, 1, 1, 1))))


# ------------------------------------------------------- the in-place softmax of the E-step


@pytest.mark.parametrize("spread", [0.5, 20.0, 400.0])  # 400: gaps beyond the reference path
@pytest.mark.parametrize("k", [1, 2, 5])
def test_posterior_is_softmax_and_logsumexp(k, spread):
    from scipy.special import logsumexp, softmax

    from emtutor import _gaussian

    lj = np.random.default_rng(k).normal(scale=spread, size=(k, 1000)) - 3.0
    lj[:, 0] = -2.0  # equal log joints in one column
    want_resp, want_ll = softmax(lj, axis=0), float(logsumexp(lj, axis=0).sum())
    resp, ll = _gaussian.posterior(lj.copy())
    np.testing.assert_allclose(resp, want_resp, rtol=1e-12, atol=1e-300)
    assert ll == pytest.approx(want_ll, rel=1e-13)


def test_posterior_with_components_of_weight_zero():
    from emtutor import _gaussian

    lj = np.random.default_rng(5).normal(size=(4, 300))
    lj[[0, 2]] = -np.inf  # components 0 and 2 have weight 0
    resp, ll = _gaussian.posterior(lj.copy())
    assert np.all(resp[[0, 2]] == 0.0) and np.all(np.isfinite(resp))
    np.testing.assert_allclose(resp.sum(axis=0), 1.0, rtol=1e-15)
    assert ll == pytest.approx(float(np.logaddexp(lj[1], lj[3]).sum()), rel=1e-13)


# ------------------------------------------------------------ model choice: BIC, AIC, per point
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_bic_aic_and_score_samples_match_sklearn(covariance_type, k):
    X = clusters(7, n=240, d=3)
    res = gmm.fit(X, k, covariance_type=covariance_type, max_iter=30, random_state=0)
    p = res.params
    cov = np.asarray(p.covariances)
    precisions = np.linalg.inv(cov) if covariance_type == "full" else 1.0 / cov
    model = GaussianMixture(k, covariance_type=covariance_type)
    model.weights_, model.means_, model.covariances_ = p.weights, p.means, cov
    model.precisions_cholesky_ = (
        np.linalg.cholesky(precisions) if covariance_type == "full" else np.sqrt(precisions)
    )
    assert gmm.bic(X, p) == pytest.approx(model.bic(X), rel=1e-10)
    assert gmm.aic(X, p) == pytest.approx(model.aic(X), rel=1e-10)
    assert gmm.n_parameters(p) == model._n_parameters()
    np.testing.assert_allclose(gmm.score_samples(X, p), model.score_samples(X), rtol=1e-10)
    assert gmm.score_samples(X, p).sum() == pytest.approx(gmm.log_likelihood(X, p), rel=1e-12)


def test_cached_factors_follow_the_values_not_the_array():
    # The cache of Cholesky factors is looked up by identity and checked by value: an array
    # changed in place gets new factors.
    cov = np.array([[[2.0, 0.5], [0.5, 1.0]]])
    chol, inv = _gaussian.factors(cov)
    np.testing.assert_allclose(chol[0] @ chol[0].T, cov[0], rtol=1e-14)
    cov[0] = [[4.0, 1.0], [1.0, 3.0]]
    chol, inv = _gaussian.factors(cov)
    np.testing.assert_allclose(chol[0] @ chol[0].T, cov[0], rtol=1e-14)
    np.testing.assert_allclose(inv[0] @ chol[0], np.eye(2), atol=1e-14)
