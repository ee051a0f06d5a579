"""The optional compiled kernels of emtutor._compiled against the numpy reference paths.

With numba installed, ``hmm.fit``, ``forward_backward``, ``score``, ``predict_proba``,
``viterbi`` and ``predict`` run the kernels; the numpy paths of
``emtutor._forward_backward`` stay the reference. Here both run on the same problems
(brute-force enumeration on tiny ones, the log-space recursion of ``tests/test_hmm.py``
on long ones, and each other on fits) and must agree to 1e-12 (1e-10 relative for the
expected transition counts, sums over thousands of steps).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from emtutor import _compiled, hmm
from emtutor.hmm import Params
from tests.test_hmm import CAT, GAUSS, _log, brute_force, log_space_reference, random_model

pytest.importorskip("numba", reason="the compiled kernels need numba (an optional extra)")
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def switch(monkeypatch):
    """``switch(True)`` runs the kernels, ``switch(False)`` the numpy paths; the test fails
    if it switched the kernels on and no kernel ran."""
    _compiled.enabled()
    calls = {"on": False, "ran": 0}
    for name in ("posterior_kernel", "viterbi_kernel"):
        original = getattr(_compiled, name)

        def counted(*args, _original=original):
            calls["ran"] += _compiled.enabled()  # a call with the kernels off runs none
            return _original(*args)

        monkeypatch.setattr(_compiled, name, counted)

    def set_path(on: bool):
        calls["on"] = calls["on"] or on
        monkeypatch.setitem(_compiled._state, "enabled", on)

    yield set_path
    assert not calls["on"] or calls["ran"], "the kernels were switched on but never ran"


def _both(switch, f):
    switch(True)
    compiled = f()
    switch(False)
    return compiled, f()


@pytest.mark.parametrize(("K", "T"), [(1, 1), (1, 5), (2, 1), (2, 2), (3, 6), (4, 5)])
@pytest.mark.parametrize("zeros", [False, True])
def test_kernels_match_brute_force(switch, K, T, zeros):
    rng = np.random.default_rng(10 * K + T + zeros)
    ls, lA, lE = random_model(rng, K, T, zeros)
    bf = brute_force(ls, lA, lE)
    switch(True)
    fb = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(bf["ll"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(fb.gamma, bf["gamma"], atol=1e-12)
    np.testing.assert_allclose(fb.xi_sum, bf["xi"].sum(axis=0), atol=1e-12)
    v = hmm.viterbi(ls, lA, lE)
    assert v.log_prob == pytest.approx(bf["best"], rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(v.path, bf["path"])


@pytest.mark.parametrize(("K", "T", "scale"), [(3, 5000, 2.0), (7, 1500, 6.0), (50, 400, 1.0)])
def test_kernels_match_the_log_space_reference_on_long_sequences(switch, K, T, scale):
    rng = np.random.default_rng(K)
    ls, lA, lE = random_model(rng, K, T, zeros=True, scale=scale)
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    switch(True)
    fb = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(fb.gamma, gamma, atol=1e-12)
    np.testing.assert_allclose(fb.xi_sum, xi_sum, rtol=1e-10, atol=1e-12)  # sums of T terms


def test_several_sequences_of_different_lengths(switch):
    rng = np.random.default_rng(5)
    lengths = [1, 7, 30, 2, 64, 5]
    ls, lA, lE = random_model(rng, 3, sum(lengths), zeros=True)
    (c, n) = _both(switch, lambda: hmm.forward_backward(ls, lA, lE, lengths=lengths))
    assert c.log_likelihood == pytest.approx(n.log_likelihood, rel=1e-13)
    np.testing.assert_allclose(c.gamma, n.gamma, atol=1e-13)
    np.testing.assert_allclose(c.xi_sum, n.xi_sum, rtol=1e-12, atol=1e-13)
    # each sequence on its own: the totals are sums over the sequences
    start = 0
    ll = 0.0
    for n_t in lengths:
        ll += hmm.forward_backward(ls, lA, lE[start:start + n_t]).log_likelihood
        start += n_t
    assert c.log_likelihood == pytest.approx(ll, rel=1e-13)


def test_viterbi_and_predict_agree_with_the_numpy_paths(switch):
    rng = np.random.default_rng(8)
    for K, T in [(3, 200), (3, 20_000), (5, 3000), (130, 50)]:
        ls, lA, lE = random_model(rng, K, T, zeros=True)
        c, n = _both(switch, lambda ls=ls, lA=lA, lE=lE: hmm.viterbi(ls, lA, lE))
        assert c.log_prob == pytest.approx(n.log_prob, rel=1e-12)
        np.testing.assert_array_equal(c.path, n.path)
    X, _ = hmm.sample(CAT, 900, random_state=3)
    lengths = [400, 1, 299, 200]
    c, n = _both(switch, lambda: hmm.predict(X, CAT, lengths=lengths))
    np.testing.assert_array_equal(c, n)


@pytest.mark.parametrize("emission", ["categorical", "diag", "full"])
def test_fits_trace_the_same_iterations(switch, emission):
    if emission == "categorical":
        X, _ = hmm.sample(CAT, 600, random_state=1)
        kw = dict(emission="categorical", n_symbols=4)
    else:
        start = GAUSS if emission == "diag" else Params(
            GAUSS.startprob, GAUSS.transmat, means=GAUSS.means,
            covariances=np.array([np.diag(c) for c in GAUSS.covariances]))
        X, _ = hmm.sample(start, 600, random_state=1)
        kw = dict(emission="gaussian", covariance_type=emission)
    lengths = [100, 250, 50, 200]

    def run():
        return hmm.fit(X, 3 if emission == "categorical" else 2, lengths=lengths,
                       random_state=0, max_iter=30, tol=0, **kw)

    c, n = _both(switch, run)
    np.testing.assert_allclose(c.log_likelihood, n.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(c.elbo, n.elbo, rtol=1e-12)
    np.testing.assert_allclose(c.params.transmat, n.params.transmat, atol=1e-10)
    c.check_sandwich()


def test_a_failing_kernel_hands_over_to_the_log_space_fallback(switch, monkeypatch):
    """Absorbing states and ~1000 nats of contradicting evidence: the scaled vectors of the
    kernel lose the state that carries the posterior, it reports failure, and the numpy
    paths answer from log space."""
    T = 400
    ls = _log(np.array([0.5, 0.5]))
    lA = _log(np.eye(2))
    lE = np.zeros((T, 2))
    lE[: T // 2, 1] = -6.0
    lE[T // 2:, 0] = -6.5
    switch(True)
    pi, A = np.exp(ls), np.exp(lA)
    E = np.exp(lE - lE.max(axis=1, keepdims=True)).T
    assert _compiled.posterior_kernel(pi, A, E, [0], [T]) is None
    ll, gamma, xi_sum = log_space_reference(ls, lA, lE)
    fb = hmm.forward_backward(ls, lA, lE)
    assert fb.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(fb.gamma, gamma, atol=1e-12)


def test_impossible_data_is_refused_on_both_paths(switch):
    p = Params(startprob=[1.0, 0.0], transmat=[[1.0, 0.0], [0.0, 1.0]],
               emissionprob=[[1.0, 0.0], [0.0, 1.0]])
    X = np.array([0, 0, 1, 0])  # state 0 never emits 1 and is never left
    for on in (True, False):
        switch(on)
        with pytest.raises(ValueError, match="probability zero"):
            hmm.score(X, p)
        with pytest.raises(ValueError, match="probability zero"):
            hmm.predict(X, p)


def test_environment_variable_switches_the_kernels_off():
    code = ("from emtutor import _compiled, hmm; from tests.test_hmm import CAT;"
            "X, _ = hmm.sample(CAT, 50, random_state=0); hmm.score(X, CAT);"
            "print(_compiled.enabled(), _compiled._kernels is None)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for value, expected in (("0", "False True"), ("1", "True False")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=root, env={**os.environ, "EMTUTOR_COMPILED": value},
                             check=True)
        assert out.stdout.split() == expected.split()
