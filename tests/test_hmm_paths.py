"""Every computational path of emtutor.hmm, forced on small problems, against references.

Without the optional compiled kernels (switched off here), the E-step and Viterbi choose
their algorithm by size (see ``emtutor._forward_backward``):
the blocked forward-backward with any block length (one block is the plain recursion),
its fallback to the per-step normalised recursion and then to log space, and for Viterbi
the max-plus scan, the step-by-step recursion and the blocked max-plus scheme. Each one
is compared here with brute-force enumeration, a log-space reference written
independently in ``tests/test_hmm.py``, or hmmlearn, whatever the size would choose.
"""

import numpy as np
import pytest

from emtutor import _compiled, hmm
from emtutor import _forward_backward as fbm
from emtutor.hmm import Params
from tests.test_hmm import (
    CAT,
    GAUSS,
    _compare_with_hmmlearn,
    _hmmlearn,
    _log,
    brute_force,
    log_space_reference,
    random_model,
)

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def numpy_paths(monkeypatch):
    """This file is about the numpy paths, so the compiled kernels (which ``hmm.fit``,
    ``viterbi`` and ``predict`` would otherwise take when numba is installed) are off;
    ``tests/test_hmm_compiled.py`` compares the two."""
    _compiled.enabled()
    monkeypatch.setitem(_compiled._state, "enabled", False)


def _factors(lE):
    """State-major emission factors (K, 1, T) and the shift, as the E-step forms them."""
    shift = lE.max(axis=1)
    return np.ascontiguousarray(np.exp(lE - shift[:, None]).T[:, None, :]), shift.sum()


# -------------------------------------------------------------- blocked forward-backward
@pytest.mark.parametrize("block", [1, 2, 3, 7, 32, 33, 64, None])
@pytest.mark.parametrize(("K", "T", "zeros"), [(1, 5, False), (2, 2, False), (2, 7, True),
                                               (3, 6, True), (3, 8, False)])
def test_every_block_length_matches_brute_force(K, T, zeros, block):
    rng = np.random.default_rng(100 * K + T)
    ls, lA, lE = random_model(rng, K, T, zeros=zeros)
    ref = brute_force(ls, lA, lE)
    E, shift = _factors(lE)
    out = fbm.posterior_blocks(np.exp(ls), np.exp(lA), E, block=block)
    assert out is not None
    gamma, xi, log_c = out
    assert log_c[0] + shift == pytest.approx(ref["ll"], rel=1e-12)
    np.testing.assert_allclose(gamma[:, 0].T, ref["gamma"], atol=1e-12)
    np.testing.assert_allclose(xi, ref["xi"].sum(axis=0), atol=1e-12)


@pytest.mark.parametrize("block", [5, 31, 32, 40, 200, 799])
def test_long_blocks_with_rescaling_match_the_log_space_reference(block):
    """Blocks longer than the rescaling interval (32 steps), structural zeros, spread-out
    emissions: the same posterior as the log-space recursion."""
    rng = np.random.default_rng(block)
    ls, lA, lE = random_model(rng, 3, 800, zeros=True, scale=6.0)
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    E, shift = _factors(lE)
    g, xi, log_c = fbm.posterior_blocks(np.exp(ls), np.exp(lA), E, block=block)
    assert log_c[0] + shift == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(g[:, 0].T, gamma, atol=1e-10)
    np.testing.assert_allclose(xi, xi_sum, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("block", [1, 4, 9, 33, None])
def test_padded_sequences_of_different_lengths_in_blocks(block):
    """Several sequences padded to a common length (factors 1 after each end)."""
    rng = np.random.default_rng(5)
    K, T = 3, 120
    lengths = np.array([120, 1, 37, 64, 119])
    ls, lA, _ = random_model(rng, K, 1)
    E = np.ones((K, lengths.size, T))
    refs = []
    for n, length in enumerate(lengths):
        lE = rng.normal(scale=2.0, size=(length, K))
        factors, shift = _factors(lE)
        E[:, n, :length] = factors[:, 0]
        refs.append((log_space_reference(ls, lA, lE), shift))
    g, xi, log_c = fbm.posterior_blocks(np.exp(ls), np.exp(lA), E, lengths, block=block)
    xi_ref = np.zeros((K, K))
    for n, ((ll, gamma, xi_n), shift) in enumerate(refs):
        assert log_c[n] + shift == pytest.approx(ll, rel=1e-12)
        np.testing.assert_allclose(g[:, n, :lengths[n]].T, gamma, atol=1e-12)
        xi_ref += xi_n
    np.testing.assert_allclose(xi, xi_ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(("K", "T", "zeros"), [(1, 2, False), (2, 2, False), (2, 7, True),
                                               (3, 6, True), (4, 5, False)])
def test_banded_solves_match_brute_force(K, T, zeros):
    rng = np.random.default_rng(7 * K + T)
    ls, lA, lE = random_model(rng, K, T, zeros=zeros)
    ref = brute_force(ls, lA, lE)
    E, shift = _factors(lE)
    gamma, xi, log_c = fbm.posterior_banded(np.exp(ls), np.exp(lA), E)
    assert log_c[0] + shift == pytest.approx(ref["ll"], rel=1e-12)
    np.testing.assert_allclose(gamma[:, 0].T, ref["gamma"], atol=1e-12)
    np.testing.assert_allclose(xi, ref["xi"].sum(axis=0), atol=1e-12)


@pytest.mark.parametrize(("K", "T", "sampled"), [(3, 200, False), (10, 200, False),
                                                 (2, 2000, True), (3, 2000, True)])
def test_banded_solves_match_the_blocked_and_per_step_recursions(K, T, sampled):
    """Random emissions unrelated to the chain, or a long sequence drawn from the model
    (whose one-step divisors then track the true ones, keeping the solves in range)."""
    rng = np.random.default_rng(K + T)
    if sampled:
        p = CAT if K == 3 else GAUSS
        X, _ = hmm.sample(p, T, random_state=rng)
        ls, lA, lE = p.log_startprob, p.log_transmat, hmm.log_emission(X, p)
    else:
        ls, lA, lE = random_model(rng, K, T, zeros=True, scale=3.0)
    E, _ = _factors(lE)
    pi, A = np.exp(ls), np.exp(lA)
    banded = fbm.posterior_banded(pi, A, E)
    assert banded is not None
    for other in (fbm.posterior_blocks(pi, A, E), fbm.posterior_batch(pi, A, E)):
        np.testing.assert_allclose(banded[0], other[0], atol=1e-12)
        np.testing.assert_allclose(banded[1], other[1], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(banded[2], other[2], rtol=1e-13)


def test_the_plan_picks_one_block_for_many_states_and_blocks_for_long_chains():
    assert fbm.plan_blocks(1, 99_999, 50) == 99_999  # K = 50: the lean per-step loop
    assert fbm.plan_blocks(2_000, 49, 4) == 49  # many short sequences: across sequences
    assert 8 <= fbm.plan_blocks(1, 999_999, 3) <= 4096  # one long chain: blocks
    assert fbm.plan_blocks(1, 199, 3) < 199  # homework size: blocks as well


def test_vanishing_sums_between_rescalings_fall_back_and_stay_exact(monkeypatch):
    """The chain starts in an absorbing state whose emissions are e^-40 times those of the
    other state at every step: the unnormalised vectors shrink by e^-40 per step, far
    below _TINY after 32 steps, so the blocked pass and the banded solves give up and the
    per-step normalised recursion answers, equal to the log-space reference."""
    T = 300
    ls = _log(np.array([0.0, 1.0]))
    lA = _log(np.array([[0.5, 0.5], [0.0, 1.0]]))
    lE = np.zeros((T, 2))
    lE[:, 1] = -40.0
    calls = []
    original = fbm.posterior_batch
    monkeypatch.setattr(fbm, "posterior_batch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    E, _ = _factors(lE)
    assert fbm.posterior_blocks(np.exp(ls), np.exp(lA), E, block=T - 1) is None
    assert fbm.posterior_banded(np.exp(ls), np.exp(lA), E) is None
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    assert calls
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(fb.gamma, gamma, atol=1e-12)
    np.testing.assert_allclose(fb.xi_sum, xi_sum, rtol=1e-10, atol=1e-12)


def test_a_failed_boundary_check_falls_back(monkeypatch):
    """With the agreement tolerance made impossible the blocked pass declines, and the
    answer (from the fallback) is unchanged."""
    rng = np.random.default_rng(3)
    ls, lA, lE = random_model(rng, 3, 2000, zeros=True)
    ref = hmm.forward_backward(ls, lA, lE)
    monkeypatch.setattr(fbm, "_AGREE", -1.0)
    E, _ = _factors(lE)
    assert fbm.posterior_blocks(np.exp(ls), np.exp(lA), E, block=16) is None
    fb = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13)
    np.testing.assert_allclose(fb.gamma, ref.gamma, atol=1e-12)


@pytest.mark.parametrize("plan", [lambda n, s, k: s, lambda n, s, k: 1, lambda n, s, k: 5])
@pytest.mark.parametrize("emission", ["categorical", "diag", "full"])
def test_forced_plans_give_hmmlearn_s_iterations(monkeypatch, plan, emission):
    """Baum-Welch with the E-step forced onto one block, blocks of one step, or blocks of
    five steps: the log-likelihood trace and final value of hmmlearn (scaling) to 1e-8."""
    hl = _hmmlearn()
    monkeypatch.setattr(fbm, "plan_blocks", plan)
    rng = np.random.default_rng(31)
    lengths = [300, 1, 77, 222]
    n_iter = 6
    K = 3
    if emission == "categorical":
        X, _ = hmm.sample(CAT, sum(lengths), random_state=rng)
        init = Params(rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K),
                      emissionprob=rng.dirichlet(np.ones(4), size=K))
        res = hmm.fit(X, K, lengths=lengths, init=init, max_iter=n_iter, tol=0)
        model = hl.CategoricalHMM(K, n_features=4, n_iter=n_iter, tol=1e-300, params="ste",
                                  init_params="", implementation="scaling",
                                  startprob_prior=1.0, transmat_prior=1.0,
                                  emissionprob_prior=1.0)
        model.emissionprob_ = init.emissionprob.copy()
        Xp = X[:, None]
    else:
        X, _ = hmm.sample(GAUSS, sum(lengths), random_state=rng)
        D = X.shape[1]
        cov = np.ones((K, D)) if emission == "diag" else np.tile(np.eye(D), (K, 1, 1))
        init = Params(np.full(K, 1 / K), rng.dirichlet(np.ones(K), size=K),
                      means=X[[3, 150, 500]], covariances=cov)
        res = hmm.fit(X, K, emission="gaussian", covariance_type=emission, lengths=lengths,
                      init=init, max_iter=n_iter, tol=0)
        model = hl.GaussianHMM(K, covariance_type=emission, n_iter=n_iter, tol=1e-300,
                               params="stmc", init_params="", implementation="scaling",
                               startprob_prior=1.0, transmat_prior=1.0, means_prior=0.0,
                               means_weight=0.0, covars_prior=0.0,
                               covars_weight=1.0 if emission == "diag" else 0.0)
        model.means_, model.covars_ = init.means.copy(), init.covariances.copy()
        Xp = X
    model.startprob_, model.transmat_ = init.startprob.copy(), init.transmat.copy()
    model.fit(Xp, lengths)
    _compare_with_hmmlearn(res, model, Xp, lengths, n_iter)


# ---------------------------------------------------------------------------- Viterbi
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize(("K", "T"), [(1, 1), (1, 4), (2, 1), (2, 2), (2, 7), (3, 6), (4, 5)])
def test_viterbi_scan_matches_brute_force(K, T, zeros):
    rng = np.random.default_rng(10 * K + T + zeros)
    ls, lA, lE = random_model(rng, K, T, zeros=zeros)
    ref = brute_force(ls, lA, lE)
    path, log_prob = fbm.viterbi_scan(ls, lA, lE)
    assert log_prob == pytest.approx(ref["best"], rel=1e-12)
    np.testing.assert_array_equal(path, ref["path"])


@pytest.mark.parametrize(("K", "T"), [(3, 200), (2, 1000), (5, 333)])
def test_viterbi_scan_matches_the_step_by_step_and_blocked_recursions(K, T):
    rng = np.random.default_rng(K * T)
    ls, lA, lE = random_model(rng, K, T, zeros=True)
    path, log_prob = fbm.viterbi_scan(ls, lA, lE)
    plain, plain_lp = fbm.viterbi_batch(ls, lA, lE[None])
    np.testing.assert_array_equal(path, plain[0])
    assert log_prob == pytest.approx(plain_lp[0], rel=1e-12)
    blocked, blocked_lp = fbm.viterbi_long(ls, lA, lE, block=17)
    np.testing.assert_array_equal(blocked, plain[0])
    assert blocked_lp == pytest.approx(plain_lp[0], rel=1e-12)


@pytest.mark.parametrize("work", [0, 10**12])
def test_viterbi_and_predict_whichever_path_the_size_picks(monkeypatch, work):
    """With the scan switched off (work 0) or forced for every size, viterbi and predict
    agree with hmmlearn's compiled decoder."""
    hl = _hmmlearn()
    monkeypatch.setattr(hmm, "_VITERBI_SCAN_WORK", work)
    X, _ = hmm.sample(GAUSS, 3000, random_state=4)
    model = hl.GaussianHMM(2, covariance_type="diag", init_params="")
    model.startprob_, model.transmat_ = GAUSS.startprob.copy(), GAUSS.transmat.copy()
    model.means_, model.covars_ = GAUSS.means.copy(), GAUSS.covariances.copy()
    for lengths in (None, [2500, 500]):
        log_prob, path = model.decode(X, lengths, algorithm="viterbi")
        np.testing.assert_array_equal(hmm.predict(X, GAUSS, lengths), path)
    v = hmm.viterbi(GAUSS.log_startprob, GAUSS.log_transmat, hmm.log_emission(X, GAUSS))
    assert v.log_prob == pytest.approx(model.decode(X, algorithm="viterbi")[0], rel=1e-12)


def test_viterbi_scan_of_an_impossible_sequence_is_refused():
    lA = _log(np.eye(2))
    lE = np.array([[0.0, -np.inf], [-np.inf, 0.0]])  # state 0 then state 1, never switching
    assert fbm.viterbi_scan(_log(np.array([0.5, 0.5])), lA, lE)[1] == -np.inf
    with pytest.raises(ValueError, match="probability zero"):
        hmm.viterbi(_log(np.array([0.5, 0.5])), lA, lE)
