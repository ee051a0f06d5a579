"""emtutor.bernoulli: against brute-force enumeration, scipy and direct maximisation."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logsumexp

from emtutor import bernoulli, bounds, em, testing
from emtutor.bernoulli import Params, Prior
from emtutor.em import EmptyComponentWarning


def random_params(rng, k, d, low=0.05, high=0.95) -> Params:
    return Params(rng.dirichlet(np.ones(k)), rng.uniform(low, high, size=(k, d)))


def random_binary(rng, n, d) -> np.ndarray:
    return (rng.random((n, d)) < 0.5).astype(float)


def complete_data_probability(X, z, params) -> float:
    """p(X, Z = z | theta) as a product of plain numbers, one factor per point and pixel."""
    w, mu = params
    out = 1.0
    for n, k in enumerate(z):
        out *= w[k]
        for d, x in enumerate(X[n]):
            out *= mu[k, d] if x == 1 else 1.0 - mu[k, d]
    return out


def enumerate_all(X, params):
    """ln p(X | theta) and the posterior of every z_n, summing over all K^N assignments."""
    n, k = len(X), len(params[0])
    total, marg = 0.0, np.zeros((n, k))
    for z in itertools.product(range(k), repeat=n):
        p = complete_data_probability(X, z, params)
        total += p
        marg[np.arange(n), z] += p
    return math.log(total), marg / total


# ------------------------------------------------------------------ enumeration and scipy


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 3), d=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_log_likelihood_and_posterior_equal_the_sum_over_all_assignments(n, k, d, seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng, k, d)
    X = random_binary(rng, n, d)
    ln_p, post = enumerate_all(X, params)
    assert bernoulli.log_likelihood(X, params) == pytest.approx(ln_p, rel=1e-12, abs=1e-12)
    resp, ll = bernoulli.e_step(X, params)
    np.testing.assert_allclose(resp, post, atol=1e-12)
    assert ll == pytest.approx(ln_p, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(bernoulli.predict_proba(X, params), post, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_log_joint_equals_scipy_bernoulli_including_probabilities_zero_and_one(seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng, 3, 6)
    means = params.means.copy()
    means[rng.random(means.shape) < 0.3] = 0.0  # exact zeros and ones
    means[rng.random(means.shape) < 0.2] = 1.0
    params = params._replace(means=means)
    X = random_binary(rng, 40, 6)
    want = np.log(params.weights) + np.stack(
        [stats.bernoulli(m).logpmf(X).sum(axis=1) for m in means], axis=1
    )
    got = bernoulli.log_joint(X, params)
    assert np.isneginf(want).any() and np.isfinite(want).any()
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        bernoulli.score_samples(X, params), logsumexp(want, axis=1), rtol=1e-12, atol=1e-12
    )


def test_an_image_impossible_under_every_component_has_log_likelihood_minus_inf():
    params = Params(np.array([0.5, 0.5]), np.array([[0.0, 0.5], [0.0, 0.9]]))
    X = np.array([[0.0, 1.0], [1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from log(0)
        scores = bernoulli.score_samples(X, params)
        assert bernoulli.log_likelihood(X, params) == -np.inf
    assert np.isfinite(scores[0]) and scores[1] == -np.inf
    assert bernoulli.predict(X, params).tolist() == [1, 0]
    with pytest.raises(ValueError, match="row 1 is -inf for every state"):
        bernoulli.e_step(X, params)


def test_a_weight_of_zero_makes_its_component_impossible():
    params = Params(np.array([1.0, 0.0]), np.array([[0.5], [0.5]]))
    lj = bernoulli.log_joint([[1.0]], params)
    assert lj[0, 0] == pytest.approx(math.log(0.5)) and lj[0, 1] == -np.inf


# ------------------------------------------------------------------------------ M-step


def unpack(v, k, d):
    """Softmax weights and logistic pixel probabilities from an unconstrained vector."""
    log_w = log_softmax(np.concatenate([[0.0], v[: k - 1]]))
    return Params(np.exp(log_w), expit(v[k - 1:].reshape(k, d)))


def pack(params):
    w, mu = params
    return np.concatenate([np.log(w[1:] / w[0]), np.log(mu / (1 - mu)).ravel()])


def q_function(X, resp, params) -> float:
    """Q(theta) = sum_nk r_nk ln p(x_n, z_n = k | theta), from scipy's Bernoulli."""
    lj = np.log(params.weights) + np.stack(
        [stats.bernoulli(m).logpmf(X).sum(axis=1) for m in params.means], axis=1
    )
    return float(np.sum(resp * lj))


@pytest.mark.parametrize("prior", [None, Prior(2.0, 2.0), Prior(3.0, 1.5, np.array([2.0, 4.0]))])
def test_m_step_maximises_q_plus_log_prior(prior):
    rng = np.random.default_rng(3)
    X = random_binary(rng, 30, 3)
    X[:, 0] = 1.0  # a pixel that is always on: the ML update gives exactly 1
    resp = rng.dirichlet(np.ones(2), size=30)
    got = bernoulli.m_step(X, resp, prior=prior)
    if prior is None:
        assert (got.means[:, 0] == 1.0).all()
        X = X[:, 1:]  # the optimum on the boundary is checked above; optimise the rest
        got = got._replace(means=got.means[:, 1:])

    def objective(v):
        p = unpack(v, 2, X.shape[1])
        extra = 0.0 if prior is None else bernoulli.log_prior(p, prior)
        return -(q_function(X, resp, p) + extra)

    res = minimize(objective, np.zeros(1 + 2 * X.shape[1]), method="BFGS",
                   options={"gtol": 1e-10})
    best = unpack(res.x, 2, X.shape[1])
    np.testing.assert_allclose(got.weights, best.weights, atol=1e-6)
    np.testing.assert_allclose(got.means, best.means, atol=1e-6)
    assert -objective(pack(got)) >= -res.fun - 1e-10


def test_m_step_map_formula_by_hand():
    X = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    resp = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    p = bernoulli.m_step(X, resp, prior=Prior(3.0, 2.0, 2.0))
    # N_k = (1.5, 1.5), S = [[1.5, 0.5], [0.5, 0.5]]; (S + 2) / (N_k + 3), (N_k + 1) / 5
    np.testing.assert_allclose(p.means, [[3.5 / 4.5, 2.5 / 4.5], [2.5 / 4.5, 2.5 / 4.5]])
    np.testing.assert_allclose(p.weights, [0.5, 0.5])


def test_m_step_keeps_a_tiny_responsibility_possible():
    # r = 1e-300 on an image with the pixel on: mu must stay > 0, or that image becomes
    # impossible under the component while carrying responsibility (the bound -inf).
    X = np.array([[1.0], [0.0], [0.0]])
    resp = np.array([[1e-300, 1.0 - 1e-300], [1.0, 0.0], [0.0, 1.0]])
    p = bernoulli.m_step(X, resp)
    assert 0.0 < p.means[0, 0] < 1e-299
    assert p.weights[0] > 0, "a tiny N_k must not round to a weight of 0"
    assert np.isfinite(bounds.elbo(bernoulli.log_joint(X, p), resp))


def test_empty_component_keeps_its_previous_means_with_a_warning():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    resp = np.array([[1.0, 0.0], [1.0, 0.0]])
    previous = Params(np.array([0.5, 0.5]), np.array([[0.5, 0.5], [0.3, 0.7]]))
    with pytest.warns(EmptyComponentWarning, match=r"component\(s\) \[1\]"):
        p = bernoulli.m_step(X, resp, previous=previous)
    np.testing.assert_array_equal(p.means[1], [0.3, 0.7])
    assert p.weights.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="component 1 has no data"):
        bernoulli.m_step(X, resp)
    # a Beta prior defines the means of an empty component: its mode (a - 1)/(a + b - 2)
    p = bernoulli.m_step(X, resp, prior=Prior(2.0, 4.0))
    np.testing.assert_allclose(p.means[1], [0.25, 0.25])


# ----------------------------------------------------------------------- the EM driver


def small_problem(seed=0, n=100):
    truth = Params(np.array([0.35, 0.65]),
                   np.array([[0.8, 0.7, 0.2, 0.6, 0.3], [0.2, 0.4, 0.85, 0.3, 0.7]]))
    return bernoulli.sample(truth, n, random_state=seed)[0]


def test_fixed_point_of_em_is_a_maximum_of_the_observed_log_likelihood():
    X = small_problem()
    res = bernoulli.fit(X, 2, tol=0, max_iter=1000, random_state=1)
    theta = res.theta
    assert np.all((theta.means > 1e-3) & (theta.means < 1 - 1e-3)), "interior maximum"

    def neg_ll(v):
        return -bernoulli.log_likelihood(X, unpack(v, 2, 5))

    # the gradient of ln p in the unconstrained parameters vanishes at the fixed point
    err = testing.check_gradient(neg_ll, lambda v: np.zeros_like(v), pack(theta),
                                 eps=1e-5, rtol=1e-6)
    assert err < 1e-6
    # and a quasi-Newton search from there finds nothing higher, nor anywhere else nearby
    opt = minimize(neg_ll, pack(theta), method="BFGS", options={"gtol": 1e-9})
    assert -opt.fun <= res.log_likelihood[-1] + 1e-9
    np.testing.assert_allclose(unpack(opt.x, 2, 5).means, theta.means, atol=1e-5)
    # a search from another start reaches the same value (same maximum, up to labels)
    opt2 = minimize(neg_ll, np.r_[0.3, np.full(10, 0.0)] + np.arange(11) * 0.1, method="BFGS",
                    options={"gtol": 1e-9})
    assert -opt2.fun == pytest.approx(res.log_likelihood[-1], abs=1e-7)


def test_fixed_point_of_map_em_maximises_log_likelihood_plus_log_prior():
    X = small_problem(seed=2, n=60)
    prior = Prior(2.0, 3.0, np.array([1.5, 2.5]))
    res = bernoulli.fit(X, 2, tol=0, max_iter=1000, random_state=0, beta_prior=(2.0, 3.0),
                        weight_concentration=[1.5, 2.5])
    theta = res.theta

    def neg_post(v):
        p = unpack(v, 2, 5)
        return -(bernoulli.log_likelihood(X, p) + bernoulli.log_prior(p, prior))

    assert res.log_likelihood[-1] == pytest.approx(-neg_post(pack(theta)), rel=1e-12)
    np.testing.assert_allclose(
        res.log_likelihood - res.log_prior,
        [bernoulli.log_likelihood(X, t) for t in res.thetas], rtol=1e-12,
    )
    opt = minimize(neg_post, pack(theta), method="BFGS", options={"gtol": 1e-9})
    assert -opt.fun <= res.log_likelihood[-1] + 1e-9
    np.testing.assert_allclose(unpack(opt.x, 2, 5).means, theta.means, atol=1e-5)
    testing.check_gradient(neg_post, lambda v: np.zeros_like(v), pack(theta), eps=1e-5,
                           rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {}, {"init": "random"}, {"beta_prior": (2.0, 2.0)},
    {"beta_prior": (1.5, 3.0), "weight_concentration": 3.0}, {"n_init": 3},
])
def test_trace_is_monotone_and_the_bound_sandwiched(kwargs):
    rng = np.random.default_rng(5)
    truth = random_params(rng, 4, 12)
    X, _ = bernoulli.sample(truth, 300, random_state=rng)
    res = bernoulli.fit(X, 4, tol=0, max_iter=60, random_state=0, **kwargs)
    assert res.n_iter == 60 and not res.decreases
    testing.assert_monotone(res.log_likelihood, rtol=1e-12)
    res.check_sandwich(rtol=1e-12)
    # the recorded bound is the ELBO of emtutor.bounds at the recorded parameters
    for i in (0, 10, 59):
        q = bernoulli.predict_proba(X, res.thetas[i])
        lp = 0.0 if res.prior is None else bernoulli.log_prior(res.thetas[i + 1], res.prior)
        lj = bernoulli.log_joint(X, res.thetas[i + 1])
        assert res.elbo[i] == pytest.approx(bounds.elbo(lj, q) + lp, rel=1e-12)
        testing.check_decomposition(lj, q)
    np.testing.assert_allclose(res.responsibilities, bernoulli.predict_proba(X, res.theta))
    assert (bernoulli.predict(X, res.theta) == res.responsibilities.argmax(axis=1)).all()


def test_n_init_returns_the_best_of_the_same_starts():
    X = small_problem(seed=4, n=120)
    rng = np.random.default_rng(9)
    singles = [bernoulli.fit(X, 3, max_iter=30, random_state=rng) for _ in range(4)]
    best = bernoulli.fit(X, 3, max_iter=30, n_init=4, random_state=np.random.default_rng(9))
    assert best.log_likelihood[-1] == max(s.log_likelihood[-1] for s in singles)


def test_fit_recovers_the_generating_mixture():
    truth = Params(np.array([0.3, 0.7]), np.array([[0.9, 0.1, 0.8, 0.2], [0.2, 0.8, 0.3, 0.7]]))
    X, z = bernoulli.sample(truth, 5000, random_state=3)
    res = bernoulli.fit(X, 2, random_state=0)
    order = np.argsort(-res.params.means[:, 0])
    assert res.converged
    np.testing.assert_allclose(res.params.weights[order], truth.weights, atol=0.02)
    np.testing.assert_allclose(res.params.means[order], truth.means, atol=0.03)
    agree = np.mean(np.argsort(order)[bernoulli.predict(X, res.params)] == z)
    assert agree > 0.9


def test_maximum_likelihood_zero_gives_minus_inf_on_new_data_and_the_prior_fixes_it():
    X = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=float)
    new = np.array([[1.0, 0.0, 1.0]])  # pixel 2 was never on
    ml = bernoulli.fit(X, 2, random_state=0, max_iter=50)
    assert (ml.params.means[:, 2] == 0).all()
    assert bernoulli.log_likelihood(new, ml.params) == -np.inf
    smooth = bernoulli.fit(X, 2, random_state=0, max_iter=50, beta_prior=(2.0, 2.0))
    assert np.all((smooth.params.means > 0) & (smooth.params.means < 1))
    assert np.isfinite(bernoulli.log_likelihood(new, smooth.params))


# ------------------------------------------------------------------------------ sampling


def test_sample_statistics():
    params = Params(np.array([0.2, 0.5, 0.3]),
                    np.array([[0.9, 0.1, 0.5], [0.3, 0.6, 0.05], [0.5, 0.95, 0.7]]))
    n = 40_000
    X, z = bernoulli.sample(params, n, random_state=11)
    assert set(np.unique(X)) <= {0.0, 1.0} and X.shape == (n, 3)
    counts = np.bincount(z, minlength=3)
    sd = np.sqrt(n * params.weights * (1 - params.weights))
    assert np.all(np.abs(counts - n * params.weights) < 4 * sd)
    for k in range(3):
        xk = X[z == k]
        sd = np.sqrt(params.means[k] * (1 - params.means[k]) / len(xk))
        assert np.all(np.abs(xk.mean(axis=0) - params.means[k]) < 4 * sd)
        c = np.corrcoef(xk.T)  # pixels are independent given the component
        assert np.abs(c[np.triu_indices(3, 1)]).max() < 4 / np.sqrt(len(xk))
    # marginally they are not: cov = sum_k w_k mu_k mu_k^T - m m^T off the diagonal
    m = params.weights @ params.means
    cov = (params.means.T * params.weights) @ params.means - np.outer(m, m)
    emp = np.cov(X.T, bias=True)
    iu = np.triu_indices(3, 1)
    np.testing.assert_allclose(emp[iu], cov[iu], atol=0.01)
    X2, z2 = bernoulli.sample(params, n, random_state=11)
    assert np.array_equal(X, X2) and np.array_equal(z, z2)


# ------------------------------------------------------------------------------ bad input

GOOD = Params(np.array([0.5, 0.5]), np.array([[0.2, 0.8], [0.6, 0.4]]))


@pytest.mark.parametrize("X, exc, match", [
    ([[0, 1], [1, 0.5]], ValueError, r"binary data \(0 or 1 only\), got X\[1, 1\] = 0.5"),
    ([[0, 1], [1, np.nan]], ValueError, "X contains NaN"),
    ([[0, 1], [1, np.inf]], ValueError, "infinite"),
    ([0, 1], ValueError, "X must be 2-D"),
    ([[0, 1, 1]], ValueError, "means have 2 columns .* but X has 3"),
    ([["0", "1"]], TypeError, "X must be an array of numbers"),
    ([[2, 1]], ValueError, r"X\[0, 0\] = 2"),
])
def test_bad_data_is_refused(X, exc, match):
    with pytest.raises(exc, match=match):
        bernoulli.log_joint(X, GOOD)


@pytest.mark.parametrize("params, exc, match", [
    (Params([0.5, 0.6], [[0.2, 0.8], [0.6, 0.4]]), ValueError, "weights must sum to 1"),
    (Params([1.5, -0.5], [[0.2, 0.8], [0.6, 0.4]]), ValueError, "negative probability"),
    (Params([0.5, 0.5], [[0.2, 1.2], [0.6, 0.4]]), ValueError,
     r"means must lie in \[0, 1\].*means\[0, 1\] = 1.2"),
    (Params([0.5, 0.5], [[0.2, -0.1], [0.6, 0.4]]), ValueError, r"means\[0, 1\] = -0.1"),
    (Params([1.0], [[0.2, 0.8], [0.6, 0.4]]), ValueError, r"weights must have shape \(2,\)"),
    (Params([0.5, 0.5], [[0.2, np.nan], [0.6, 0.4]]), ValueError, "means contains NaN"),
    ({"weights": [1.0], "means": [[0.5, 0.5]]}, TypeError, "params must be"),
])
def test_bad_params_are_refused(params, exc, match):
    with pytest.raises(exc, match=match):
        bernoulli.log_joint([[0, 1]], params)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"n_components": 4}, ValueError, "n_components = 4 exceeds the number of data points N = 3"),
    ({"n_components": 0}, ValueError, "n_components must be >= 1"),
    ({"n_components": 2.0}, TypeError, "n_components must be an integer"),
    ({"n_components": 2, "init": "kmeans"}, ValueError, "init must be 'uniform', 'random'"),
    ({"n_components": 2, "init": [0.5, 0.5]}, TypeError, "init must be"),
    ({"n_components": 3, "init": GOOD}, ValueError, "init has 2 components"),
    ({"n_components": 2, "init": GOOD, "n_init": 2}, ValueError, "n_init > 1 needs"),
    ({"n_components": 2, "beta_prior": (0.5, 2.0)}, ValueError, "prior.a must be a finite"),
    ({"n_components": 2, "beta_prior": 2.0}, TypeError, "beta_prior must be a pair"),
    ({"n_components": 2, "weight_concentration": [1.0, 0.5]}, ValueError,
     "prior.concentration must be >= 1"),
    ({"n_components": 2, "weight_concentration": [1.0, 2.0, 3.0]}, ValueError,
     r"must be a number or have shape \(2,\)"),
    ({"n_components": 2, "tol": -1.0}, ValueError, "tol must be"),
    ({"n_components": 2, "max_iter": -1}, ValueError, "max_iter must be >= 0"),
    ({"n_components": 2, "random_state": -3}, ValueError, "random_state must be a seed"),
])
def test_bad_fit_options_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bernoulli.fit(np.array([[0, 1], [1, 1], [1, 0]]), **kwargs)


def test_bad_m_step_and_sample_arguments_are_refused():
    X = np.array([[0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="rows of resp must sum to 1"):
        bernoulli.m_step(X, [[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match="one row per data point"):
        bernoulli.m_step(X, [[0.5, 0.5]])
    with pytest.raises(TypeError, match="prior must be a bernoulli.Prior"):
        bernoulli.m_step(X, [[0.5, 0.5], [0.5, 0.5]], prior=(2.0, 2.0))
    with pytest.raises(ValueError, match="previous has 2 components but resp has 1"):
        bernoulli.m_step(X, [[1.0], [1.0]], previous=GOOD)
    with pytest.raises(ValueError, match="n must be >= 1"):
        bernoulli.sample(GOOD, 0)
    with pytest.raises(ValueError, match="prior.b must be"):
        bernoulli.log_prior(GOOD, Prior(2.0, 0.0))


def test_fit_keeps_an_empty_component_and_warns():
    X = small_problem(seed=6, n=50)
    init = Params(np.array([1.0, 0.0]), np.array([[0.5] * 5, [0.3] * 5]))
    with pytest.warns(EmptyComponentWarning, match=r"component\(s\) \[1\]"):
        res = bernoulli.fit(X, 2, init=init, max_iter=5, tol=0)
    np.testing.assert_array_equal(res.params.means[1], init.means[1])
    assert res.params.weights[1] == 0.0
    res.check_sandwich()


@pytest.mark.parametrize("prior", [None, Prior(2.0, 3.0, 2.0)])
def test_m_step_passes_check_m_step_and_the_core_passes_run_check(prior):
    rng = np.random.default_rng(8)
    X, _ = bernoulli.sample(random_params(rng, 3, 6), 200, random_state=rng)
    theta = random_params(rng, 3, 6)

    def objective(q, t):  # Q(theta | q) + ln p(theta), what the MAP M-step maximises
        extra = 0.0 if prior is None else bernoulli.log_prior(t, prior)
        return bounds.expected_complete_loglik(bernoulli.log_joint(X, t), q) + extra

    q = bernoulli.predict_proba(X, theta)
    found = testing.check_m_step(lambda r: bernoulli.m_step(X, r, prior=prior), q,
                                 objective, theta, constraints={"means": "probability"})
    assert found.largest_gain <= 0
    # an M-step that divides S_kd by N instead of N_k, or forgets the prior, is caught
    if prior is None:
        def wrong(r):
            return Params(r.mean(axis=0), r.T @ X / len(X))
    else:
        def wrong(r):
            return bernoulli.m_step(X, r)
    with pytest.raises(AssertionError, match="Q"):
        testing.check_m_step(wrong, q, objective, theta,
                             constraints={"means": "probability"})
    lp = (lambda t: 0.0) if prior is None else (lambda t: bernoulli.log_prior(t, prior))
    res = em.run(
        theta, lambda t: bernoulli.predict_proba(X, t),
        lambda r: bernoulli.m_step(X, r, prior=prior),
        lambda t: bernoulli.log_likelihood(X, t) + lp(t),
        elbo=lambda r, t: bounds.elbo(bernoulli.log_joint(X, t), r) + lp(t),
        tol=0, max_iter=30, check=True,
    )
    fit = bernoulli.fit(X, 3, init=theta, tol=0, max_iter=30,
                        **({} if prior is None else {"beta_prior": (2.0, 3.0),
                                                     "weight_concentration": 2.0}))
    np.testing.assert_allclose(fit.log_likelihood, res.log_likelihood, rtol=1e-12)
