"""Tests of emtutor.hmm: brute force over all paths, a log-space reference, hmmlearn as oracle."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from emtutor import _compiled, hmm
from emtutor import _forward_backward as fbm
from emtutor.em import EmptyComponentWarning, LikelihoodDecreaseWarning
from emtutor.hmm import Params
from emtutor.testing import assert_monotone

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module", autouse=True, params=["compiled", "numpy"])
def e_step_path(request):
    """Every test of this file runs twice: with the compiled kernels of
    ``emtutor._compiled`` and with the numpy reference paths (module scope, so that the
    hypothesis tests run under both as well)."""
    saved = _compiled.enabled()
    if request.param == "compiled" and not saved:
        pytest.skip("numba is not installed, so the compiled kernels cannot run")
    _compiled._state["enabled"] = request.param == "compiled"
    yield request.param
    _compiled._state["enabled"] = saved


# ------------------------------------------------------------------------------ references
def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def brute_force(ls, lA, lE):
    """Everything by enumerating the K^T paths: ln p, gamma, xi_t, best path, all log joints."""
    T, K = lE.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    lj = ls[paths[:, 0]] + lE[np.arange(T), paths].sum(axis=1)
    if T > 1:
        lj = lj + lA[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    ll = logsumexp(lj)
    w = np.exp(lj - ll)
    gamma = np.zeros((T, K))
    xi = np.zeros((T - 1, K, K))
    for t in range(T):
        np.add.at(gamma[t], paths[:, t], w)
    for t in range(T - 1):
        np.add.at(xi[t], (paths[:, t], paths[:, t + 1]), w)
    return dict(ll=ll, gamma=gamma, xi=xi, path=paths[np.argmax(lj)], best=lj.max(),
                paths=paths, log_joint=lj)


def log_space_reference(ls, lA, lE):
    """Plain log-space forward-backward, one time step at a time (independent of emtutor)."""
    T, K = lE.shape
    la = np.empty((T, K))
    lb = np.zeros((T, K))
    la[0] = ls + lE[0]
    for t in range(1, T):
        la[t] = logsumexp(la[t - 1][:, None] + lA, axis=0) + lE[t]
    for t in range(T - 2, -1, -1):
        lb[t] = logsumexp(lA + (lE[t + 1] + lb[t + 1])[None, :], axis=1)
    ll = logsumexp(la[-1])
    gamma = np.exp(la + lb - ll)
    pair = la[:-1, :, None] + lA[None] + (lE[1:] + lb[1:])[:, None, :] - ll
    return ll, gamma, np.exp(pair).sum(axis=0)


def random_model(rng, K, T, zeros=False, scale=2.0):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 1:
        A[0, 1] = 0.0
        A[-1, 0] = 0.0
        A /= A.sum(axis=1, keepdims=True)
    lE = rng.normal(scale=scale, size=(T, K))
    return _log(pi), _log(A), lE


CAT = Params(startprob=[0.6, 0.3, 0.1],
             transmat=[[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.2, 0.0, 0.8]],
             emissionprob=[[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
GAUSS = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.3, 0.7]],
               means=[[0.0, 0.0], [3.0, -1.0]], covariances=[[1.0, 0.5], [2.0, 1.0]])


# ---------------------------------------------------------------- forward-backward, Viterbi
@pytest.mark.parametrize(("K", "T"), [(1, 1), (1, 4), (2, 1), (2, 2), (2, 6), (3, 3), (3, 5),
                                      (3, 6)])
@pytest.mark.parametrize("zeros", [False, True])
def test_forward_backward_and_viterbi_match_brute_force(K, T, zeros):
    rng = np.random.default_rng(100 * K + T + zeros)
    ls, lA, lE = random_model(rng, K, T, zeros)
    bf = brute_force(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    np.testing.assert_allclose(fb.log_likelihood, bf["ll"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fb.gamma, bf["gamma"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fb.xi_sum, bf["xi"].sum(axis=0), rtol=0, atol=1e-12)
    post = hmm.chain_posterior(ls, lA, lE)
    np.testing.assert_allclose(post.xi, bf["xi"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(post.gamma, bf["gamma"], rtol=0, atol=1e-12)
    assert post.log_likelihood == pytest.approx(bf["ll"], rel=1e-12, abs=1e-12)
    v = hmm.viterbi(ls, lA, lE)
    np.testing.assert_array_equal(v.path, bf["path"])
    assert v.log_prob == pytest.approx(bf["best"], rel=1e-12, abs=1e-12)


def test_impossible_emission_of_one_state_is_handled():
    rng = np.random.default_rng(3)
    ls, lA, lE = random_model(rng, 3, 5, zeros=True)
    lE[2, 1] = -np.inf
    bf = brute_force(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    np.testing.assert_allclose(fb.gamma, bf["gamma"], atol=1e-12)
    assert fb.gamma[2, 1] == 0.0
    assert hmm.viterbi(ls, lA, lE).path[2] != 1


def test_several_sequences_are_the_sum_of_single_ones():
    rng = np.random.default_rng(4)
    lengths = [1, 7, 300, 2, 299, 40, 41, 1200]
    ls, lA, lE = random_model(rng, 3, sum(lengths), zeros=True)
    fb = hmm.forward_backward(ls, lA, lE, lengths=lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    ll, xi = 0.0, np.zeros((3, 3))
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        one = hmm.forward_backward(ls, lA, lE[a:b])
        np.testing.assert_allclose(fb.gamma[a:b], one.gamma, atol=1e-12)
        ll += one.log_likelihood
        xi += one.xi_sum
    np.testing.assert_allclose(fb.xi_sum, xi, rtol=1e-12)
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)


@pytest.mark.parametrize(("T", "K", "scale"), [(3000, 3, 3.0), (2500, 2, 20.0), (4000, 5, 1.0)])
def test_blocked_recursion_matches_log_space_reference(T, K, scale):
    assert fbm._plan(1, T - 1, K)[1] > 1  # these sizes take the blocked path
    rng = np.random.default_rng(T + K)
    ls, lA, lE = random_model(rng, K, T, zeros=True, scale=scale)
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(fb.gamma, gamma, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fb.xi_sum, xi_sum, rtol=1e-10, atol=1e-9)


def test_blocked_plain_and_log_space_fallbacks_agree(monkeypatch):
    """The same answer whatever the block plan, and with the rare safety paths forced on."""
    rng = np.random.default_rng(7)
    ls, lA, lE = random_model(rng, 3, 5000, zeros=True, scale=10.0)
    ref = hmm.forward_backward(ls, lA, lE)
    variants = [
        ("_plan", lambda n, s, k: (s, 1)),  # plain recursion
        ("_plan", lambda n, s, k: (7, -(-s // 7))),  # many short blocks
        ("_SMALL", 2.0),  # always redo block boundaries in log space
        ("_FLUSH", 2.0),  # take the log of every divisor
    ]
    for name, value in variants:
        with monkeypatch.context() as m:
            m.setattr(fbm, name, value)
            fb = hmm.forward_backward(ls, lA, lE)
        assert fb.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13), name
        np.testing.assert_allclose(fb.gamma, ref.gamma, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(fb.xi_sum, ref.xi_sum, rtol=1e-11, err_msg=name)


def test_million_steps_with_tiny_emissions_and_structural_zeros():
    T, K = 1_000_000, 3
    rng = np.random.default_rng(8)
    lA = _log(np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 0.95]]))
    ls = _log(np.array([1.0, 0.0, 0.0]))
    lE = rng.normal(scale=1.5, size=(T, K))
    fb = hmm.forward_backward(ls, lA, lE - 1000.0)
    assert np.isfinite(fb.log_likelihood) and -1001.0 * T < fb.log_likelihood < -999.0 * T
    assert np.all(np.isfinite(fb.gamma)) and np.all(fb.gamma >= 0)
    np.testing.assert_allclose(fb.gamma.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert fb.xi_sum.sum() == pytest.approx(T - 1, rel=1e-12)
    assert fb.xi_sum[0, 2] == 0.0 and fb.xi_sum[1, 0] == 0.0 and fb.xi_sum[2, 1] == 0.0
    # the two marginals of the expected transition counts are the summed gammas
    np.testing.assert_allclose(fb.xi_sum.sum(axis=1), fb.gamma[:-1].sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(fb.xi_sum.sum(axis=0), fb.gamma[1:].sum(axis=0), rtol=1e-10)
    # a constant added to every log emission only shifts ln p
    shifted = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(shifted.log_likelihood - 1000.0 * T, rel=1e-13)
    np.testing.assert_allclose(fb.gamma, shifted.gamma, atol=1e-12)


def test_long_viterbi_matches_log_space_dynamic_programming():
    rng = np.random.default_rng(9)
    ls, lA, lE = random_model(rng, 3, 400, zeros=True)
    v = hmm.viterbi(ls, lA, lE)
    score = ls[v.path[0]] + lA[v.path[:-1], v.path[1:]].sum() + lE[np.arange(400), v.path].sum()
    assert v.log_prob == pytest.approx(score, rel=1e-12)
    # no single-state change improves the path
    for t in range(400):
        for k in range(3):
            p = v.path.copy()
            p[t] = k
            alt = ls[p[0]] + lA[p[:-1], p[1:]].sum() + lE[np.arange(400), p].sum()
            assert alt <= v.log_prob + 1e-9


# ------------------------------------------------------------------ entropy, ELBO and KL
def _q_from_other_model(rng, K, T, lE):
    ls2, lA2, _ = random_model(rng, K, T)
    lE2 = lE + rng.normal(size=lE.shape)
    post = hmm.chain_posterior(ls2, lA2, lE2)
    q_paths = np.exp(brute_force(ls2, lA2, lE2)["log_joint"] - post.log_likelihood)
    return post.gamma, post.xi, q_paths


@pytest.mark.parametrize(("K", "T"), [(2, 1), (2, 2), (2, 5), (3, 3), (3, 6)])
def test_entropy_elbo_kl_match_brute_force(K, T):
    rng = np.random.default_rng(10 * K + T)
    ls, lA, lE = random_model(rng, K, T, zeros=True)
    bf = brute_force(ls, lA, lE)
    gamma, xi, q = _q_from_other_model(rng, K, T, lE)
    lj = bf["log_joint"]
    ok = q > 0
    H = -np.sum(q[ok] * np.log(q[ok]))
    Q = np.sum(np.where(ok & np.isfinite(lj), q * np.where(np.isfinite(lj), lj, 0), 0))
    post_paths = np.exp(lj - bf["ll"])
    assert hmm.posterior_entropy(gamma, xi) == pytest.approx(H, rel=1e-11, abs=1e-12)
    if np.all(np.isfinite(lj[ok])):
        assert hmm.expected_complete_loglik(gamma, xi, ls, lA, lE) == pytest.approx(
            Q, rel=1e-11)
        assert hmm.elbo(gamma, xi, ls, lA, lE) == pytest.approx(Q + H, rel=1e-11)
        kl = np.sum(q[ok] * (np.log(q[ok]) - np.log(post_paths[ok])))
        assert hmm.kl_to_posterior(gamma, xi, ls, lA, lE) == pytest.approx(kl, rel=1e-9,
                                                                         abs=1e-12)
        d = hmm.decompose(gamma, xi, ls, lA, lE)
        assert d.log_likelihood == pytest.approx(bf["ll"], rel=1e-12)
        assert d.log_likelihood == pytest.approx(d.elbo + d.kl, rel=1e-11)
        assert d.kl >= 0 and d.elbo <= d.log_likelihood
    # with q the posterior itself: KL = 0 and the bound is tight
    post = hmm.chain_posterior(ls, lA, lE)
    d = hmm.decompose(post.gamma, post.xi, ls, lA, lE)
    assert d.kl == pytest.approx(0.0, abs=1e-12)
    assert d.elbo == pytest.approx(d.log_likelihood, rel=1e-12)
    H_post = -np.sum(post_paths[post_paths > 0] * np.log(post_paths[post_paths > 0]))
    assert hmm.posterior_entropy(post.gamma, post.xi) == pytest.approx(H_post, rel=1e-11,
                                                                       abs=1e-12)


def test_q_on_an_impossible_path_gives_minus_inf_bound_and_infinite_kl():
    ls, lA = _log(np.array([0.5, 0.5])), _log(np.array([[1.0, 0.0], [0.5, 0.5]]))
    lE = np.zeros((2, 2))
    gamma, xi = np.full((2, 2), 0.5), np.full((1, 2, 2), 0.25)  # uses the 0 -> 1 move
    assert hmm.elbo(gamma, xi, ls, lA, lE) == -np.inf
    assert hmm.kl_to_posterior(gamma, xi, ls, lA, lE) == np.inf


# --------------------------------------------------------------- model-level functions
def test_score_predict_proba_predict_for_several_sequences():
    X, _ = hmm.sample(CAT, 60, random_state=11)
    lengths = [1, 5, 6, 48]
    lE = hmm.log_emission(X, CAT)
    fb = hmm.forward_backward(CAT.log_startprob, CAT.log_transmat, lE, lengths=lengths)
    assert hmm.score(X, CAT, lengths) == pytest.approx(fb.log_likelihood, rel=1e-13)
    np.testing.assert_allclose(hmm.predict_proba(X, CAT, lengths), fb.gamma, atol=1e-14)
    path = hmm.predict(X, CAT, lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        v = hmm.viterbi(CAT.log_startprob, CAT.log_transmat, lE[a:b])
        np.testing.assert_array_equal(path[a:b], v.path)
    Xg, _ = hmm.sample(GAUSS, 30, random_state=12)
    lE = hmm.log_emission(Xg, GAUSS)
    from scipy.stats import multivariate_normal
    for k in range(2):
        ref = multivariate_normal(GAUSS.means[k], np.diag(GAUSS.covariances[k])).logpdf(Xg)
        np.testing.assert_allclose(lE[:, k], ref, rtol=1e-12)
    brute = brute_force(GAUSS.log_startprob, GAUSS.log_transmat, lE[:6])
    assert hmm.score(Xg[:6], GAUSS) == pytest.approx(brute["ll"], rel=1e-12)


def test_full_covariance_log_emission_matches_scipy():
    from scipy.stats import multivariate_normal
    cov = np.array([[[2.0, 0.3], [0.3, 1.0]], [[1.0, -0.4], [-0.4, 0.5]]])
    p = Params(GAUSS.startprob, GAUSS.transmat, means=GAUSS.means, covariances=cov)
    X, _ = hmm.sample(p, 50, random_state=13)
    lE = hmm.log_emission(X, p)
    for k in range(2):
        np.testing.assert_allclose(lE[:, k], multivariate_normal(p.means[k], cov[k]).logpdf(X),
                                   rtol=1e-12)


def test_sample_follows_the_chain():
    X, z = hmm.sample(CAT, 40_000, random_state=14)
    assert X.shape == z.shape == (40_000,)
    counts = np.zeros((3, 3))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), CAT.transmat,
                               atol=0.02)
    assert counts[2, 1] == 0  # a structural zero is never used
    emitted = np.zeros((3, 4))
    np.add.at(emitted, (z, X), 1)
    np.testing.assert_allclose(emitted / emitted.sum(axis=1, keepdims=True), CAT.emissionprob,
                               atol=0.02)
    X2, z2 = hmm.sample(CAT, 40_000, random_state=14)
    np.testing.assert_array_equal(z, z2)
    Xg, zg = hmm.sample(GAUSS, 20_000, random_state=15)
    for k in range(2):
        np.testing.assert_allclose(Xg[zg == k].mean(axis=0), GAUSS.means[k], atol=0.06)
        np.testing.assert_allclose(Xg[zg == k].var(axis=0), GAUSS.covariances[k], rtol=0.06)


# -------------------------------------------------------------------------------- fitting
def test_fit_trace_is_monotone_and_ends_at_the_returned_parameters():
    X, _ = hmm.sample(CAT, 2000, random_state=16)
    for seed in range(3):
        res = hmm.fit(X, 3, lengths=[500, 700, 800], random_state=seed, max_iter=60)
        assert res.log_likelihood.shape == (res.n_iter + 1,)
        assert_monotone(res.log_likelihood, rtol=1e-12)
        assert res.log_likelihood[-1] == pytest.approx(
            hmm.score(X, res.params, [500, 700, 800]), rel=1e-13)
    Xg, _ = hmm.sample(GAUSS, 1500, random_state=17)
    for cov in ("diag", "full"):
        res = hmm.fit(Xg, 2, emission="gaussian", covariance_type=cov, init="kmeans",
                      random_state=0)
        assert res.converged and res.params.covariance_type == cov
        assert_monotone(res.log_likelihood, rtol=1e-12)
        order = np.argsort(res.params.means[:, 0])
        np.testing.assert_allclose(res.params.means[order], GAUSS.means, atol=0.3)


def test_fit_stops_by_the_shared_rule_and_zero_iterations_only_scores():
    init = {"startprob": CAT.startprob, "transmat": CAT.transmat,
            "emissionprob": CAT.emissionprob}
    X, _ = hmm.sample(CAT, 300, random_state=18)
    res0 = hmm.fit(X, 3, init=init, max_iter=0)
    assert res0.n_iter == 0 and not res0.converged
    assert res0.log_likelihood[0] == pytest.approx(hmm.score(X, CAT), rel=1e-14)
    res = hmm.fit(X, 3, init=CAT, tol=1e-6, max_iter=500)
    assert res.converged and res.n_iter < 500
    d = np.diff(res.log_likelihood)
    assert d[-1] < 1e-6 * abs(res.log_likelihood[-1]) and np.all(d[:-1] >= 0)


def _hmmlearn():
    return pytest.importorskip("hmmlearn.hmm", reason="hmmlearn is the oracle for Baum-Welch")


def _compare_with_hmmlearn(res, model, X, lengths, n_iter):
    np.testing.assert_allclose(res.log_likelihood[:-1], model.monitor_.history, rtol=1e-8)
    assert model.monitor_.iter == n_iter == res.n_iter
    np.testing.assert_allclose(res.log_likelihood[-1], model.score(X, lengths), rtol=1e-8)


def test_categorical_iterations_match_hmmlearn():
    hl = _hmmlearn()
    rng = np.random.default_rng(19)
    X, _ = hmm.sample(CAT, 1500, random_state=rng)
    lengths = [50, 400, 1, 300, 749]
    init = Params(rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3), size=3),
                  emissionprob=rng.dirichlet(np.ones(4), size=3))
    n_iter = 15
    res = hmm.fit(X, 3, lengths=lengths, init=init, max_iter=n_iter, tol=1e-300)
    model = hl.CategoricalHMM(3, n_features=4, n_iter=n_iter, tol=1e-300, params="ste",
                              init_params="", startprob_prior=1.0, transmat_prior=1.0,
                              emissionprob_prior=1.0)
    model.startprob_, model.transmat_ = init.startprob.copy(), init.transmat.copy()
    model.emissionprob_ = init.emissionprob.copy()
    model.fit(X[:, None], lengths)
    _compare_with_hmmlearn(res, model, X[:, None], lengths, n_iter)
    np.testing.assert_allclose(res.params.emissionprob, model.emissionprob_, atol=1e-8)
    np.testing.assert_allclose(res.params.transmat, model.transmat_, atol=1e-8)


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_gaussian_iterations_match_hmmlearn(cov):
    hl = _hmmlearn()
    rng = np.random.default_rng(20)
    X, _ = hmm.sample(GAUSS, 2000, random_state=rng)
    lengths = [700, 3, 600, 697]
    K, D = 3, 2
    covariances = np.ones((K, D)) if cov == "diag" else np.tile(np.eye(D), (K, 1, 1))
    init = Params(np.full(K, 1 / K), rng.dirichlet(np.ones(K), size=K),
                  means=X[[5, 500, 1500]], covariances=covariances)
    n_iter = 12
    res = hmm.fit(X, K, emission="gaussian", covariance_type=cov, lengths=lengths, init=init,
                  max_iter=n_iter, tol=1e-300)
    model = hl.GaussianHMM(K, covariance_type=cov, n_iter=n_iter, tol=1e-300, params="stmc",
                           init_params="", startprob_prior=1.0, transmat_prior=1.0,
                           means_prior=0.0, means_weight=0.0, covars_prior=0.0,
                           covars_weight=1.0 if cov == "diag" else 0.0)
    model.startprob_, model.transmat_ = init.startprob.copy(), init.transmat.copy()
    model.means_, model.covars_ = init.means.copy(), init.covariances.copy()
    model.fit(X, lengths)
    _compare_with_hmmlearn(res, model, X, lengths, n_iter)
    np.testing.assert_allclose(res.params.means, model.means_, rtol=1e-7, atol=1e-9)


def _swapped(old):
    """A wrong M-step: the states' rows swapped (mixed with uniform rows, so that no
    probability becomes 0 and the bound L(q, theta) stays finite), lowering ln p."""
    def mix(rows):
        return 0.7 * rows[::-1] + 0.3 / rows.shape[1]

    return Params(old.startprob, mix(old.transmat), emissionprob=mix(old.emissionprob))


def test_a_wrong_m_step_is_reported_as_a_decrease(monkeypatch):
    X, _ = hmm.sample(CAT, 200, random_state=21)

    def bad_m_step(X, gamma, xi_sum, layout, old, min_covar, XT=None):
        return _swapped(old)

    monkeypatch.setattr(hmm, "_m_step", bad_m_step)
    with pytest.warns(LikelihoodDecreaseWarning, match="decreased at iteration 1"):
        res = hmm.fit(X, 3, init=CAT, max_iter=1)
    assert not res.converged
    assert [i for i, _ in res.decreases] == [1]


# ------------------------------------------------------------------------------ bad input
LS, LA = _log(np.array([0.5, 0.5])), _log(np.array([[0.9, 0.1], [0.2, 0.8]]))
LE = np.zeros((4, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(transmat=[[0.9, 0.2], [0.2, 0.8]]), "rows of transmat must sum to 1"),
        (dict(transmat=[[1.1, -0.1], [0.2, 0.8]]), "negative probability"),
        (dict(startprob=[0.6, 0.6]), "rows of startprob must sum to 1"),
        (dict(transmat=[[1.0]]), r"transmat must have shape \(2, 2\)"),
        (dict(emissionprob=[[0.5, 0.5]]), "one row per state"),
        (dict(emissionprob=[[0.5, 0.6], [0.5, 0.5]]), "rows of emissionprob must sum to 1"),
        (dict(emissionprob=[[np.nan, 1.0], [0.5, 0.5]]), "NaN"),
        (dict(means=[[0.0], [1.0]], covariances=[[1.0], [1.0]]), "not both"),
        (dict(emissionprob=None), "not both and not neither"),
    ],
)
def test_bad_categorical_params(kwargs, match):
    base = dict(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
                emissionprob=[[0.5, 0.5], [0.1, 0.9]])
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Params(**base)


@pytest.mark.parametrize(
    ("means", "covariances", "match"),
    [
        ([[0.0], [1.0]], [[1.0], [0.0]], "variances must be positive"),
        ([[0.0], [1.0]], [[1.0, 1.0], [1.0, 1.0]], r"must have shape \(2, 1\)"),
        ([[0.0, 0.0], [1.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]], np.eye(2)], "not positive definite"),
        ([[0.0, 0.0], [1.0, 1.0]], [[[1.0, 0.5], [0.0, 1.0]], np.eye(2)], "symmetric"),
        ([[0.0], [1.0]], None, "need both means and covariances"),
        ([0.0, 1.0], [[1.0], [1.0]], "means must be 2-D"),
    ],
)
def test_bad_gaussian_params(means, covariances, match):
    with pytest.raises(ValueError, match=match):
        Params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], means=means, covariances=covariances)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((LS, LA, np.array([[0.0, np.nan]] * 3)), {}, "log_emission contains NaN"),
        ((LS, LA, np.zeros((3, 3))), {}, "one column per state"),
        ((LS, LA[:1], LE), {}, r"log_transmat must have shape \(2, 2\)"),
        ((LS, np.log([[0.5, 0.6], [0.5, 0.5]]), LE), {}, "rows of exp\\(log_transmat\\)"),
        ((np.log([0.7, 0.7]), LA, LE), {}, "rows of exp\\(log_startprob\\)"),
        ((LS, LA, LE), {"lengths": [2, 3]}, "lengths sum to 5 but X has 4"),
        ((LS, LA, LE), {"lengths": [4, 0]}, "lengths must be >= 1, got 0 at index 1"),
        ((LS, LA, np.array([[0.0, 0.0], [-np.inf, -np.inf]])), {}, "observation 1 is impossible"),
        ((_log(np.array([1.0, 0.0])), _log(np.array([[1.0, 0.0], [0.0, 1.0]])),
          np.array([[0.0, 0.0], [-np.inf, 0.0]])), {}, "probability zero"),
        ((LS, LA, np.zeros(4)), {}, "log_emission must be 2-D"),
        ((LS, LA, np.array([[np.inf, 0.0]])), {}, "infinite"),
    ],
)
def test_bad_forward_backward_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hmm.forward_backward(*args, **kwargs)


def test_bad_viterbi_and_chain_input():
    with pytest.raises(ValueError, match="probability zero"):
        hmm.viterbi(_log(np.array([1.0, 0.0])), _log(np.eye(2)),
                    np.array([[0.0, 0.0], [-np.inf, 0.0]]))
    g = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=r"xi must have shape \(2, 2, 2\)"):
        hmm.posterior_entropy(g, np.full((3, 2, 2), 0.25))
    with pytest.raises(ValueError, match="inconsistent"):
        hmm.posterior_entropy(g, np.array([[[0.5, 0.0], [0.5, 0.0]]] * 2))
    with pytest.raises(ValueError, match="rows of xi"):
        hmm.posterior_entropy(g, np.full((2, 2, 2), 0.3))
    with pytest.raises(ValueError, match="3 time steps but log_emission has 4"):
        hmm.expected_complete_loglik(g, np.full((2, 2, 2), 0.25), LS, LA, LE)


@pytest.mark.parametrize(
    ("X", "params", "lengths", "match"),
    [
        ([0, 1, 4], CAT, None, "symbol 4 is outside the alphabet 0..3"),
        ([0, -1, 2], CAT, None, "X must be >= 0, got -1 at index 1"),
        ([0.5, 1.0], CAT, None, "X must hold whole numbers, got 0.5"),
        ([[0, 1]], CAT, None, "1-D array of integer symbols"),
        ([0, 1, 2], CAT, [1, 1], "lengths sum to 2 but X has 3"),
        ([0, 1, 2], CAT, [[3]], r"lengths must be 1-D, got an array of shape \(1, 1\)"),
        ([0, 1, 2], CAT, [1.5, 1.5], "lengths must hold whole numbers, got 1.5"),
        ([[0.0, np.nan]], GAUSS, None, "X contains NaN"),
        ([0.0, 1.0], GAUSS, None, "Gaussian X must be 2-D"),
        ([[0.0, 1.0, 2.0]], GAUSS, None, "X has 3 features but the means have 2"),
    ],
)
def test_bad_data(X, params, lengths, match):
    with pytest.raises(ValueError, match=match):
        hmm.score(X, params, lengths)
    with pytest.raises(ValueError, match=match):
        hmm.predict(X, params, lengths)


def test_data_impossible_under_the_parameters():
    p = Params([1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], emissionprob=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="probability zero"):
        hmm.score([0, 1], p)
    with pytest.raises(ValueError, match="probability zero"):
        hmm.predict([0, 1], p)
    q = Params([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]],
               emissionprob=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="symbol 2 occurs in X but has probability 0"):
        hmm.score([0, 2], q)


def test_params_must_be_params():
    with pytest.raises(TypeError, match="must be an emtutor.hmm.Params"):
        hmm.score([0, 1], {"startprob": [1.0]})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_states=0), "n_states must be >= 1, got 0"),
        (dict(emission="poisson"), "emission must be 'categorical' or 'gaussian'"),
        (dict(covariance_type="tied"), "covariance_type must be 'diag' or 'full'"),
        (dict(max_iter=-1), "max_iter must be >= 0, got -1"),
        (dict(tol=-1e-3), "tol must be a finite number >= 0, got -0.001"),
        (dict(tol=float("nan")), "tol must be a finite number >= 0, got nan"),
        (dict(min_covar=-1.0), "min_covar must be a finite number >= 0, got -1.0"),
        (dict(init="kmeans"), "init='kmeans' needs Gaussian emissions"),
        (dict(init="spectral"), "init must be 'random', 'kmeans\\+\\+' or a mapping"),
        (dict(init={"startprob": [1.0]}), "needs exactly the keys"),
        (dict(init=GAUSS), "init holds gaussian parameters"),
        (dict(n_states=2, init=CAT), "init has 3 states but n_states is 2"),
        (dict(n_symbols=2), "n_symbols = 2 but X contains symbol 3"),
        (dict(lengths=[3, 3]), "lengths sum to 6 but X has 5"),
        (dict(init={"startprob": CAT.startprob, "transmat": CAT.transmat,
                    "emissionprob": CAT.emissionprob[:, :3] / CAT.emissionprob[:, :3].sum(
                        axis=1, keepdims=True)}), "symbol 3 is outside the alphabet 0..2"),
    ],
)
def test_bad_fit_arguments(kwargs, match):
    args = dict(n_states=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hmm.fit([0, 1, 2, 3, 0], args.pop("n_states"), **args)


def test_bad_gaussian_fit_arguments():
    X = np.zeros((5, 2))
    X[:, 0] = np.arange(5)
    with pytest.raises(ValueError, match="covariance_type is 'full'"):
        hmm.fit(X, 2, emission="gaussian", covariance_type="full", init=GAUSS)
    with pytest.raises(ValueError, match="need at least n_states = 6 observations"):
        hmm.fit(X, 6, emission="gaussian")
    with pytest.raises(ValueError, match="Gaussian X must be 2-D"):
        hmm.fit(np.arange(5.0), 2, emission="gaussian")


def test_sample_rejects_bad_length():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        hmm.sample(CAT, 0)
    with pytest.raises(TypeError, match="n must be an integer, got float"):
        hmm.sample(CAT, 5.0)


def test_underflow_of_the_scaled_vectors_falls_back_to_log_space(monkeypatch):
    """Absorbing states and ~1000 nats of contradicting evidence before and after a step."""
    T = 400
    ls = _log(np.array([0.5, 0.5]))
    lA = _log(np.eye(2))  # the state never changes
    lE = np.zeros((T, 2))
    lE[: T // 2, 1] = -6.0  # the first half favours state 0 by 1200 nats ...
    lE[T // 2:, 0] = -6.5  # ... the second half state 1 by 1300 nats
    calls = []
    original = fbm._posterior_log
    monkeypatch.setattr(fbm, "_posterior_log", lambda *a, **k: calls.append(1) or original(*a, **k))
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    assert calls, "the scaled recursions cannot represent this posterior"
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(fb.gamma, gamma, atol=1e-12)
    np.testing.assert_allclose(fb.gamma[:, 1], 1.0)
    np.testing.assert_allclose(fb.xi_sum, xi_sum, rtol=1e-12, atol=1e-12)
    post = hmm.chain_posterior(ls, lA, lE)
    np.testing.assert_allclose(post.xi.sum(axis=0), xi_sum, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("T", "K", "block"), [(3000, 3, None), (2001, 2, 7), (1500, 4, 64)])
def test_blocked_viterbi_matches_the_plain_recursion(T, K, block):
    rng = np.random.default_rng(T)
    ls, lA, lE = random_model(rng, K, T, zeros=True)
    path, log_prob = fbm.viterbi_long(ls, lA, lE, block=block)
    plain, plain_lp = fbm.viterbi_batch(ls, lA, lE[None])
    np.testing.assert_array_equal(path, plain[0])
    assert log_prob == pytest.approx(plain_lp[0], rel=1e-12)
    v = hmm.viterbi(ls, lA, lE)
    np.testing.assert_array_equal(v.path, plain[0])



def test_predict_long_and_short_sequences_matches_viterbi_per_sequence():
    X, _ = hmm.sample(GAUSS, 3000, random_state=22)
    lengths = [2300, 700]
    path = hmm.predict(X, GAUSS, lengths)
    lE = hmm.log_emission(X, GAUSS)
    for a, b in [(0, 2300), (2300, 3000)]:
        plain, _ = fbm.viterbi_batch(GAUSS.log_startprob, GAUSS.log_transmat, lE[None, a:b])
        np.testing.assert_array_equal(path[a:b], plain[0])


def test_m_step_is_one_fit_iteration_and_the_closed_form():
    X, _ = hmm.sample(CAT, 400, random_state=23)
    lengths = [100, 300]
    fb = hmm.forward_backward(CAT.log_startprob, CAT.log_transmat, hmm.log_emission(X, CAT),
                              lengths=lengths)
    new = hmm.m_step(X, fb.gamma, fb.xi_sum, CAT, lengths)
    np.testing.assert_allclose(new.transmat, fb.xi_sum / fb.xi_sum.sum(axis=1, keepdims=True),
                               rtol=1e-13)
    start = fb.gamma[[0, 100]].sum(axis=0)
    np.testing.assert_allclose(new.startprob, start / 2, rtol=1e-13)
    counts = np.stack([fb.gamma[X == m].sum(axis=0) for m in range(4)], axis=1)
    np.testing.assert_allclose(new.emissionprob, counts / fb.gamma.sum(axis=0)[:, None],
                               rtol=1e-12)
    once = hmm.fit(X, 3, lengths=lengths, init=CAT, max_iter=1).params
    np.testing.assert_allclose(once.emissionprob, new.emissionprob, rtol=1e-13)
    Xg, _ = hmm.sample(GAUSS, 300, random_state=24)
    fb = hmm.forward_backward(GAUSS.log_startprob, GAUSS.log_transmat,
                              hmm.log_emission(Xg, GAUSS))
    new = hmm.m_step(Xg, fb.gamma, fb.xi_sum, GAUSS)
    w = fb.gamma / fb.gamma.sum(axis=0)
    means = w.T @ Xg
    np.testing.assert_allclose(new.means, means, rtol=1e-12)
    for k in range(2):
        np.testing.assert_allclose(new.covariances[k], w[:, k] @ (Xg - means[k]) ** 2,
                                   rtol=1e-11)
    with pytest.raises(ValueError, match=r"gamma must have shape \(300, 2\)"):
        hmm.m_step(Xg, fb.gamma[:-1], fb.xi_sum, GAUSS)
    with pytest.raises(ValueError, match=r"xi_sum must be non-negative .*xi_sum\[0, 0\] = -"):
        hmm.m_step(Xg, fb.gamma, -fb.xi_sum, GAUSS)
    with pytest.raises(ValueError, match=r"xi_sum must have shape \(2, 2\)"):
        hmm.m_step(Xg, fb.gamma, fb.xi_sum[:1], GAUSS)


def test_a_state_never_visited_keeps_its_parameters_with_a_warning():
    p = Params([1.0, 0.0], [[1.0, 0.0], [0.5, 0.5]], emissionprob=[[0.5, 0.5], [0.9, 0.1]])
    X = np.array([0, 1, 1, 0, 1])
    with pytest.warns(EmptyComponentWarning, match=r"state\(s\) \[1\] received"):
        res = hmm.fit(X, 2, init=p, max_iter=3)
    np.testing.assert_array_equal(res.params.emissionprob[1], [0.9, 0.1])
    np.testing.assert_array_equal(res.params.transmat[1], [0.5, 0.5])
    np.testing.assert_allclose(res.params.emissionprob[0], [0.4, 0.6])


def test_fit_rejects_a_random_state_that_is_not_a_seed():
    with pytest.raises(TypeError, match="random_state must be None, an int or a numpy"):
        hmm.fit(np.array([0, 1, 1, 0, 1]), 2, random_state=1.5)


# --------------------------------------------------- KL in log space: posteriors that underflow
def _markov_q(rng, K, T, allowed=None):
    """Marginals (gamma, xi) of a random time-inhomogeneous Markov chain q over paths.

    ``allowed[i, j] = False`` keeps the move i -> j out of q's support.
    """
    gamma, xi = np.empty((T, K)), np.empty((T - 1, K, K))
    gamma[0] = rng.dirichlet(np.ones(K))
    for t in range(1, T):
        A = rng.dirichlet(np.ones(K), size=K)
        if allowed is not None:
            A = np.where(allowed, A, 0.0)
            A /= A.sum(axis=1, keepdims=True)
        xi[t - 1] = gamma[t - 1][:, None] * A
        gamma[t] = xi[t - 1].sum(axis=0)
    return gamma, xi


def kl_by_enumeration(gamma, xi, ls, lA, lE):
    """KL(q || p(Z | V)) as a sum over all K^T paths, from the definition.

    ``ln q(Z) = sum_t ln xi_t(z_{t-1}, z_t) - sum_{t=2}^{T-1} ln gamma_t(z_t)`` (the Markov
    chain with these marginals) and ``ln p(Z | V) = ln p(V, Z) - ln p(V)``. Subtracting each
    step's largest log emission first leaves ``p(Z | V)`` unchanged (every path takes every
    step's emission once) and keeps the path log joints small, so the subtraction is exact
    to rounding even with offsets of -1e6.
    """
    bf = brute_force(ls, lA, lE - lE.max(axis=1, keepdims=True))
    paths, T = bf["paths"], gamma.shape[0]
    log_post = bf["log_joint"] - bf["ll"]
    if T == 1:
        lq = _log(gamma[0][paths[:, 0]])
    else:
        lq = _log(xi[np.arange(T - 1), paths[:, :-1], paths[:, 1:]]).sum(axis=1)
        lq -= _log(gamma[np.arange(1, T - 1), paths[:, 1:-1]]).sum(axis=1)
    q = np.exp(lq)
    on = q > 0
    return float(np.sum(q[on] * (lq[on] - log_post[on])))


def _assert_identity(gamma, xi, ls, lA, lE, *, rtol=1e-10):
    d = hmm.decompose(gamma, xi, ls, lA, lE)
    assert np.isfinite(d.kl) and d.kl >= 0 and np.isfinite(d.elbo)
    scale = max(1.0, abs(d.log_likelihood))
    assert abs(d.log_likelihood - (d.elbo + d.kl)) <= rtol * scale
    assert d.log_likelihood == pytest.approx(brute_force(ls, lA, lE)["ll"], rel=1e-12)
    assert d.kl == pytest.approx(kl_by_enumeration(gamma, xi, ls, lA, lE), rel=1e-10,
                                 abs=1e-10)
    assert hmm.kl_to_posterior(gamma, xi, ls, lA, lE) == d.kl
    return d


@pytest.mark.parametrize("spread", [1500.0, 3e3, 1e4])
@pytest.mark.parametrize("offset", [0.0, -1e6])
@pytest.mark.parametrize("zeros", [False, True])
def test_kl_is_finite_where_the_posterior_underflows(spread, offset, zeros):
    """Log emissions of a step spread over ``spread`` nats: posterior probabilities of e^-1000
    and below are 0 in floating point, but the KL to them is finite and ln p = L + KL."""
    rng = np.random.default_rng(int(spread) + int(-offset) + zeros)
    K, T = 3, 5
    ls, lA, _ = random_model(rng, K, T, zeros=zeros)
    lE = offset + spread * rng.uniform(-1.0, 0.0, size=(T, K))
    lE[np.arange(T), rng.integers(K, size=T)] = offset  # every step has a clear favourite
    post = hmm.chain_posterior(ls, lA, lE)
    # the probability-space posterior has underflowed: 0 for some possible states
    assert np.any(post.gamma == 0.0) and np.any((post.xi == 0.0) & np.isfinite(lA))
    allowed = np.isfinite(lA)
    for gamma, xi in [_markov_q(rng, K, T, allowed), _markov_q(rng, K, T, allowed)]:
        d = _assert_identity(gamma, xi, ls, lA, lE)
        assert d.kl > 0.1 * spread  # q spreads its mass where the posterior has none
    if not zeros:  # the uniform chain: every state and every move equally likely
        d = _assert_identity(np.full((T, K), 1 / K), np.full((T - 1, K, K), 1 / K**2),
                             ls, lA, lE)
    # q = the posterior itself (underflowed to 0 where it is tiny): KL = 0, L = ln p
    d = hmm.decompose(post.gamma, post.xi, ls, lA, lE)
    assert d.kl <= 1e-12 * max(1.0, abs(d.log_likelihood))
    assert d.elbo == pytest.approx(d.log_likelihood, rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    K=st.integers(1, 3),
    T=st.integers(1, 5),
    spread=st.sampled_from([1.0, 800.0, 1e3, 1e4]),
    offset=st.sampled_from([0.0, -1e3, -1e6]),
    zeros=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_ln_p_is_elbo_plus_kl_whatever_the_spread_of_the_emissions(K, T, spread, offset, zeros,
                                                                  seed):
    rng = np.random.default_rng(seed)
    ls, lA, _ = random_model(rng, K, T, zeros=zeros)
    lE = offset + spread * rng.uniform(-1.0, 0.0, size=(T, K))
    gamma, xi = _markov_q(rng, K, T, np.isfinite(lA))
    _assert_identity(gamma, xi, ls, lA, lE)


def test_kl_is_infinite_only_for_truly_impossible_states_and_moves():
    ls = _log(np.array([0.5, 0.5]))
    lA = _log(np.array([[1.0, 0.0], [0.5, 0.5]]))  # 0 -> 1 is impossible
    lE = np.array([[0.0, -1e4], [0.0, -1e4], [-1e4, 0.0]])
    lE_ruled_out = lE.copy()
    lE_ruled_out[1, 1] = -np.inf  # state 1 cannot emit x_2
    stay = np.array([[[0.5, 0.0], [0.25, 0.25]], [[0.75, 0.0], [0.125, 0.125]]])  # no 0 -> 1
    g = np.array([[0.5, 0.5], [0.75, 0.25], [0.875, 0.125]])
    assert np.isfinite(hmm.kl_to_posterior(g, stay, ls, lA, lE))
    _assert_identity(g, stay, ls, lA, lE)
    # the same q puts mass 0.25 on state 1 at t = 2, which lE_ruled_out makes impossible
    assert hmm.kl_to_posterior(g, stay, ls, lA, lE_ruled_out) == np.inf
    assert hmm.elbo(g, stay, ls, lA, lE_ruled_out) == -np.inf
    uniform = np.full((2, 2, 2), 0.25)  # uses 0 -> 1
    assert hmm.kl_to_posterior(np.full((3, 2), 0.5), uniform, ls, lA, lE) == np.inf
    # a state that no path reaches: only state 0 at the start, and 0 never leaves
    ls0 = _log(np.array([1.0, 0.0]))
    assert np.isfinite(hmm.kl_to_posterior(np.array([[1.0, 0.0]] * 3),
                                           np.array([[[1.0, 0.0], [0.0, 0.0]]] * 2),
                                           ls0, lA, lE))
    assert hmm.kl_to_posterior(g, stay, ls0, lA, lE) == np.inf


def test_log_marginals_match_the_scaled_posterior_and_the_enumeration():
    rng = np.random.default_rng(31)
    ls, lA, lE = random_model(rng, 3, 6, zeros=True)
    bf = brute_force(ls, lA, lE)
    lg, lx = fbm.log_marginals(ls, lA, lE)
    np.testing.assert_allclose(np.exp(lg), bf["gamma"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.exp(lx), bf["xi"], rtol=1e-12, atol=1e-15)
    assert np.all(np.isneginf(lx[:, 0, 1])) and np.all(np.isneginf(lx[:, 2, 0]))
    # a long chain with contradicting evidence: still the scaled answer where that is exact
    ls, lA, lE = random_model(rng, 3, 3000, zeros=True, scale=5.0)
    post = hmm.chain_posterior(ls, lA, lE)
    lg, lx = fbm.log_marginals(ls, lA, lE)
    np.testing.assert_allclose(np.exp(lg), post.gamma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(lx), post.xi, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="probability zero"):
        fbm.log_marginals(_log(np.array([1.0, 0.0])), _log(np.eye(2)),
                          np.array([[0.0, 0.0], [-np.inf, 0.0]]))


# -------------------------------------------------------------------- tol = 0 and decreases
@pytest.mark.parametrize("emission", ["categorical", "gaussian"])
def test_tol_zero_runs_exactly_max_iter_iterations(emission):
    if emission == "categorical":
        X, _ = hmm.sample(CAT, 300, random_state=25)
        init = CAT
    else:
        X, _ = hmm.sample(GAUSS, 300, random_state=25)
        init = GAUSS
    # a run that stops by the rule, and the same iterations continued past its stop
    stopped = hmm.fit(X, init.n_states, emission=emission, init=init, tol=1e-5, max_iter=500)
    assert stopped.converged and stopped.n_iter < 500
    n = stopped.n_iter + 5
    res = hmm.fit(X, init.n_states, emission=emission, init=init, tol=0, max_iter=n)
    assert res.n_iter == n and res.log_likelihood.shape == (n + 1,)
    assert not res.converged and res.decreases == ()
    np.testing.assert_array_equal(res.log_likelihood[:stopped.n_iter + 1],
                                  stopped.log_likelihood)


@settings(max_examples=20, deadline=None)
@given(max_iter=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_tol_zero_never_converges(max_iter, seed):
    X, _ = hmm.sample(CAT, 60, random_state=seed)
    res = hmm.fit(X, 2, tol=0.0, max_iter=max_iter, random_state=seed, n_symbols=4)
    assert res.n_iter == max_iter and not res.converged
    assert_monotone(res.log_likelihood, rtol=1e-12)


def _patched_m_step(monkeypatch, bad_iterations):
    """Make the M-step of the given iterations swap the states' rows (lowering ln p)."""
    good = hmm._m_step
    count = [0]

    def m_step(X, gamma, xi_sum, layout, old, min_covar, XT=None):
        count[0] += 1
        if count[0] in bad_iterations:
            return _swapped(old)
        return good(X, gamma, xi_sum, layout, old, min_covar, XT)

    monkeypatch.setattr(hmm, "_m_step", m_step)


def test_a_decrease_is_recorded_and_the_run_is_never_converged(monkeypatch):
    X, _ = hmm.sample(CAT, 200, random_state=26)
    _patched_m_step(monkeypatch, {1})
    with pytest.warns(LikelihoodDecreaseWarning, match="decreased at iteration 1"):
        res = hmm.fit(X, 3, init=CAT, tol=1e-6, max_iter=500)
    # the stopping rule was met later, but a run with a decrease is not converged
    assert res.n_iter < 500 and not res.converged
    (it, drop), = res.decreases
    assert it == 1 and drop == pytest.approx(res.log_likelihood[0] - res.log_likelihood[1])
    assert drop > 0
    text = repr(res)
    assert text.startswith(f"FitResult(n_iter={res.n_iter}, converged=False, ")
    assert f"log_likelihood[-1]={res.log_likelihood[-1]:.10g}" in text
    assert f"decreases=((iteration 1: -{drop:.3g}))" in text
    assert "params" not in text  # short: no arrays


def _q_value(X, fb, theta, starts):
    """Q(theta; q) by its definition, from the posterior marginals and log emissions."""
    lE = hmm.log_emission(X, theta)
    first = fb.gamma[starts].sum(axis=0)
    return (first @ theta.log_startprob + np.sum(fb.xi_sum * theta.log_transmat)
            + np.sum(fb.gamma * np.where(fb.gamma > 0, lE, 0.0)))


@pytest.mark.parametrize(("emission", "cov"), [("categorical", "diag"), ("gaussian", "diag"),
                                               ("gaussian", "full")])
def test_fit_returns_the_em_result_family_with_history_and_bound(emission, cov):
    """fit runs on em.run: parameter history, the ELBO after every M-step, and the
    sandwich ln p(theta_i) <= L(q_i, theta_{i+1}) <= ln p(theta_{i+1}) holds."""
    from emtutor.em import EMResult

    p = CAT if emission == "categorical" else GAUSS
    X, _ = hmm.sample(p, 400, random_state=28)
    if emission == "gaussian":
        X = X + 50.0  # far from the origin: the bound is formed about the data mean
    lengths = [150, 250]
    res = hmm.fit(X, 2, emission=emission, covariance_type=cov, random_state=1,
                  max_iter=25, lengths=lengths)
    assert isinstance(res, EMResult) and res.params is res.theta is res.thetas[-1]
    assert len(res.thetas) == res.n_iter + 1 == res.elbo.size + 1
    res.check_sandwich(rtol=1e-10)
    # L(q_i, theta_{i+1}) = Q(theta_{i+1}) + H(q_i) with H(q_i) = ln p(theta_i) - Q(theta_i),
    # each Q from its definition
    for i in (0, 3):
        before, after = res.thetas[i], res.thetas[i + 1]
        fb = hmm.forward_backward(before.log_startprob, before.log_transmat,
                                  hmm.log_emission(X, before), lengths=lengths)
        expected = (_q_value(X, fb, after, [0, 150]) - _q_value(X, fb, before, [0, 150])
                    + fb.log_likelihood)
        assert res.elbo[i] == pytest.approx(expected, rel=1e-11)


def test_a_correct_run_has_no_decreases():
    X, _ = hmm.sample(CAT, 200, random_state=27)
    res = hmm.fit(X, 3, random_state=0, max_iter=1000, tol=1e-6)
    assert res.decreases == () and res.converged
    assert repr(res) == (f"FitResult(n_iter={res.n_iter}, converged=True, "
                         f"log_likelihood[-1]={res.log_likelihood[-1]:.10g}, decreases=())")


# ------------------------------------------------------------------ one validation convention
def test_complex_inputs_are_refused_with_a_type_error():
    Xc = np.array([0, 1, 2]) + 0j
    with pytest.raises(TypeError, match="X must hold real numbers, got complex"):
        hmm.fit(Xc, 2)
    with pytest.raises(TypeError, match="X must hold real numbers, got complex"):
        hmm.score(Xc, CAT)
    with pytest.raises(TypeError, match="X must hold real numbers, got complex"):
        hmm.fit(np.ones((5, 2)) * 1j, 2, emission="gaussian")
    with pytest.raises(TypeError, match="transmat must hold real numbers"):
        Params([0.5, 0.5], np.eye(2) + 0j, emissionprob=[[1.0], [1.0]])
    with pytest.raises(TypeError, match="log_emission must hold real numbers"):
        hmm.forward_backward(LS, LA, LE + 0j)
    with pytest.raises(TypeError, match="lengths must hold real numbers"):
        hmm.score([0, 1, 2], CAT, lengths=[3 + 0j])
    fb = hmm.forward_backward(LS, LA, LE)
    X = [[0.0], [1.0], [2.0], [3.0]]
    p = Params(LS * 0 + 0.5, np.exp(LA), means=[[0.0], [1.0]], covariances=[[1.0], [1.0]])
    with pytest.raises(TypeError, match="gamma must hold real numbers"):
        hmm.m_step(X, fb.gamma + 0j, fb.xi_sum, p)


@pytest.mark.parametrize("random_state", [-1, np.int64(-5)])
def test_negative_seeds_are_refused(random_state):
    with pytest.raises(ValueError, match="random_state must be a seed >= 0, got -"):
        hmm.fit([0, 1, 1, 0], 2, random_state=random_state)
    with pytest.raises(ValueError, match="random_state must be a seed >= 0, got -"):
        hmm.sample(CAT, 5, random_state=random_state)


@pytest.mark.parametrize("stray", [10**4 + 1, 10**7, 10**9, 2**62])
def test_a_stray_symbol_does_not_build_a_huge_alphabet(stray):
    X = np.array([0, 1, 2, 1, 0, 2, 1, stray, 0, 1])
    with pytest.raises(ValueError, match=(
            f"largest symbol in X is {stray} \\(at X\\[7\\]\\).*{stray + 1} symbols.*"
            "pass n_symbols if that alphabet is intended, or re-code the symbols")):
        hmm.fit(X, 2, random_state=0)
    with pytest.raises(ValueError, match=f"n_symbols = 3 but X contains symbol {stray} "
                                         r"\(first at X\[7\]"):
        hmm.fit(X, 2, n_symbols=3, random_state=0)
    with pytest.raises(ValueError, match=f"symbol {stray} is outside the alphabet 0..3"):
        hmm.fit(X, 3, init=CAT)
    with pytest.raises(ValueError, match=f"symbol {stray} is outside the alphabet 0..3"):
        hmm.score(X, CAT)


def test_a_large_alphabet_is_fine_when_plausible_or_asked_for():
    X = np.array([0, 999, 3, 999])  # 1000 symbols are within the cap max(1000, 10 T)
    res = hmm.fit(X, 2, random_state=0, max_iter=2)
    assert res.params.emissionprob.shape == (2, 1000)
    X = np.array([0, 5000, 3, 5000])  # beyond the cap for 4 observations ...
    with pytest.raises(ValueError, match="alphabet inferred from the data"):
        hmm.fit(X, 2, random_state=0)
    res = hmm.fit(X, 2, random_state=0, max_iter=2, n_symbols=5001)  # ... unless asked for
    assert res.params.emissionprob.shape == (2, 5001)


@settings(max_examples=50, deadline=None)
@given(n_symbols=st.integers(1, 20), extra=st.integers(0, 10**12), where=st.integers(0, 9),
       seed=st.integers(0, 2**32 - 1))
def test_every_symbol_outside_n_symbols_is_refused(n_symbols, extra, where, seed):
    X = np.random.default_rng(seed).integers(n_symbols, size=10)
    X[where] = n_symbols + extra
    with pytest.raises(ValueError, match=f"n_symbols = {n_symbols} but X contains symbol "
                                         f"{n_symbols + extra} \\(first at X\\[{where}\\]"):
        hmm.fit(X, 2, n_symbols=n_symbols, random_state=seed)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_symbols="5"), TypeError, "n_symbols must be an integer, got str"),
        (dict(n_symbols=3.5), TypeError, "n_symbols must be an integer, got float"),
        (dict(n_symbols=4.0), TypeError, "n_symbols must be an integer, got float"),
        (dict(n_symbols=True), TypeError, "n_symbols must be an integer, got bool"),
        (dict(n_symbols=0), ValueError, "n_symbols must be >= 1, got 0"),
        (dict(n_states=2.0), TypeError, "n_states must be an integer, got float"),
        (dict(n_states="3"), TypeError, "n_states must be an integer, got str"),
        (dict(max_iter=1.5), TypeError, "max_iter must be an integer, got float"),
        (dict(max_iter=None), TypeError, "max_iter must be an integer, got NoneType"),
        (dict(tol="1e-3"), TypeError, "tol must be a real number, got str"),
        (dict(tol=float("inf")), ValueError, "tol must be a finite number >= 0, got inf"),
        (dict(min_covar=None), TypeError, "min_covar must be a real number, got NoneType"),
        (dict(min_covar=float("nan")), ValueError, "min_covar must be a finite number >= 0"),
        (dict(lengths=["5", "5"]), TypeError, "lengths must be an array of numbers"),
        (dict(lengths=[5.0, 5.5]), ValueError, "lengths must hold whole numbers, got 5.5"),
        (dict(lengths=[True, True]), TypeError, "lengths must hold integers, got booleans"),
        (dict(lengths=[]), ValueError, "lengths is empty"),
        (dict(random_state=1.5), TypeError, "random_state must be None, an int or a numpy"),
        (dict(init=[0.5, 0.5]), TypeError, "init must be 'random', 'kmeans\\+\\+', a mapping or a"),
        (dict(init=CAT, n_symbols=5), ValueError,
         r"n_symbols = 5 but the emissionprob of init has 4 columns \(shape \(3, 4\)\)"),
        (dict(init={"startprob": CAT.startprob, "transmat": CAT.transmat,
                    "emissionprob": CAT.emissionprob}, n_symbols=3), ValueError,
         "n_symbols = 3 but the emissionprob of init has 4 columns"),
        (dict(emission=1), TypeError, "emission must be a string, 'categorical' or 'gaussian'"),
        (dict(covariance_type=None), TypeError, "covariance_type must be a string"),
        (dict(emission="gaussian", n_symbols=4), ValueError,
         "n_symbols is for categorical emissions only"),
    ],
)
def test_fit_arguments_follow_the_validation_convention(kwargs, error, match):
    X = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    args = dict(n_states=3)
    args.update(kwargs)
    if args.get("emission") == "gaussian":
        X = np.arange(10.0)[:, None]
    with pytest.raises(error, match=match):
        hmm.fit(X, args.pop("n_states"), **args)


def test_n_symbols_that_agrees_with_init_is_accepted():
    X, _ = hmm.sample(CAT, 100, random_state=28)
    a = hmm.fit(X, 3, init=CAT, n_symbols=4, max_iter=3)
    b = hmm.fit(X, 3, init=CAT, max_iter=3)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)


def test_string_and_boolean_data_are_refused_with_a_type_error():
    with pytest.raises(TypeError, match="lengths must be an array of numbers"):
        hmm.score([0, 1, 2], CAT, lengths=["3"])
    with pytest.raises(TypeError, match="lengths must be an array of numbers"):
        hmm.forward_backward(LS, LA, LE, lengths=["2", "2"])
    with pytest.raises(TypeError, match="X must be an array of numbers"):
        hmm.fit(["a", "b"], 2)
    with pytest.raises(TypeError, match="X must hold integers, got booleans"):
        hmm.fit(np.array([True, False, True]), 2)


def test_hmmlearn_layout_of_symbols_gets_a_hint():
    with pytest.raises(ValueError, match=r"shape \(3, 1\) \(for hmmlearn's layout .* X.ravel"):
        hmm.fit(np.array([[0], [1], [0]]), 2)


def _collapsing_gaussian(D: int):
    """Data with one far outlier and a state centred on it: its posterior is one point."""
    rng = np.random.default_rng(29)
    X = rng.normal(size=(60, D))
    X[30] = 1000.0
    cov = np.ones((2, D)) if D == 1 else np.tile(np.eye(D), (2, 1, 1))
    init = Params([0.5, 0.5], [[0.9, 0.1], [0.5, 0.5]], means=[[0.0] * D, [1000.0] * D],
                  covariances=cov)
    return X, init


@pytest.mark.parametrize(("D", "cov"), [(1, "diag"), (2, "full")])
def test_a_collapsing_state_names_the_state_the_iteration_and_the_remedy(D, cov):
    X, init = _collapsing_gaussian(D)
    with pytest.raises(ValueError, match=(
            r"covariance of state 1 collapsed in the M-step of iteration 1 \(.*\): its "
            r"posterior mass sits on too few distinct points\. Use min_covar > 0 \(the "
            r"default is 1e-6\)")):
        hmm.fit(X, 2, emission="gaussian", covariance_type=cov, init=init, min_covar=0.0)
    fb = hmm.forward_backward(init.log_startprob, init.log_transmat, hmm.log_emission(X, init))
    with pytest.raises(ValueError, match="state 1 collapsed in the M-step \\(.*min_covar > 0"):
        hmm.m_step(X, fb.gamma, fb.xi_sum, init, min_covar=0)
    res = hmm.fit(X, 2, emission="gaussian", covariance_type=cov, init=init, max_iter=3)
    assert np.all(np.isfinite(res.log_likelihood))  # the default floor keeps it finite


def test_rows_slightly_off_one_report_the_actual_deviation():
    with pytest.raises(ValueError, match=r"rows of startprob must sum to 1 .* row 0 sums to "
                                         r"1.0000001, off by 1e-07 \(the tolerance is 1e-08\)"):
        Params([0.5, 0.5 + 1e-7], [[0.9, 0.1], [0.2, 0.8]], emissionprob=[[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"rows of transmat must sum to 1 .* row 1 sums to "
                                         r"1.0000001, off by 1e-07"):
        Params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8 + 1e-7]], emissionprob=[[1.0], [1.0]])
    with pytest.raises(ValueError, match=r"rows of exp\(log_transmat\) must sum to 1 .* row 0 "
                                         r"sums to 1.0000001, off by 1e-07"):
        hmm.forward_backward(LS, np.log([[0.9 + 1e-7, 0.1], [0.2, 0.8]]), LE)
    with pytest.raises(ValueError, match=r"rows of emissionprob must sum to 1 .* off by 1e-07"):
        hmm.fit([0, 1, 0], 2, init={"startprob": [0.5, 0.5],
                                    "transmat": [[0.9, 0.1], [0.2, 0.8]],
                                    "emissionprob": [[0.5, 0.5 + 1e-7], [0.5, 0.5]]})


# ---------------------------------------------------------------- restarts: n_init
def test_n_init_keeps_the_best_of_the_runs_it_makes():
    truth = hmm.Params(startprob=[0.6, 0.4], transmat=[[0.9, 0.1], [0.2, 0.8]],
                       emissionprob=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    X, _ = hmm.sample(truth, 300, random_state=0)
    rng = np.random.default_rng(5)
    best = hmm.fit(X, 2, n_init=4, max_iter=30, random_state=rng)
    # The same four starts one at a time, from a generator in the same state.
    rng = np.random.default_rng(5)
    singles = [hmm.fit(X, 2, max_iter=30, random_state=rng) for _ in range(4)]
    finals = [r.log_likelihood[-1] for r in singles]
    assert best.log_likelihood[-1] == max(finals)
    np.testing.assert_array_equal(best.log_likelihood,
                                  singles[int(np.argmax(finals))].log_likelihood)


def test_kmeans_plus_plus_is_the_spelling_of_gmm_and_kmeans_its_other_name():
    rng = np.random.default_rng(0)
    Xg = np.concatenate([rng.normal(-3, 1, (100, 1)), rng.normal(3, 1, (100, 1))])
    a = hmm.fit(Xg, 2, emission="gaussian", init="kmeans++", random_state=1, max_iter=5)
    b = hmm.fit(Xg, 2, emission="gaussian", init="kmeans", random_state=1, max_iter=5)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(n_init=0), ValueError, "n_init must be >= 1, got 0"),
        (dict(n_init=2.0), TypeError, "n_init must be an integer, got float"),
        (dict(n_init=2, init={"startprob": [0.5, 0.5], "transmat": [[0.5, 0.5], [0.5, 0.5]],
                              "emissionprob": [[0.5, 0.5], [0.5, 0.5]]}),
         ValueError, "n_init > 1 needs a random init"),
    ],
)
def test_bad_n_init(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        hmm.fit([0, 1, 1, 0, 1], 2, **kwargs)
