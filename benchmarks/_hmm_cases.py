"""Rows of the benchmark matrix for emtutor.hmm against hmmlearn (see ``matrix.py``).

Every Baum-Welch row starts emtutor and hmmlearn from the same parameters and runs the
same number of iterations; hmmlearn's priors are switched off and ``init_params=""``
(see the docstring of ``benchmarks/hmm.py``, whose problem builders are reused here). The
value compared is ``ln p`` at the parameters of the last E-step both libraries ran:
``monitor_.history[-1]`` for hmmlearn, ``log_likelihood[-2]`` for emtutor (which also
runs the E-step at its final parameters, inside the timed call, to report its last
entry). The peers are hmmlearn's ``implementation="log"`` (its default) and
``implementation="scaling"``; on the K = 50 row and the rows of many short sequences only
``scaling`` runs (the log path takes over 10 s per iteration at K = 50, and several times
the scaling path's time on many short sequences, where SciPy's ``logsumexp`` overhead per
sequence dominates). Viterbi rows compare ``max_Z ln p(V, Z)`` with hmmlearn's
``decode(algorithm="viterbi")`` (compiled; its ``"map"`` decoder reports a different
quantity, so it cannot be checked against the same value).
"""

from __future__ import annotations

import logging

import numpy as np
from hmm import MIN_COVAR, categorical_problem, gaussian_problem
from hmmlearn import hmm as hl
from matrix import Case

from emtutor import hmm

logging.getLogger("hmmlearn").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ problems
def _gaussian(T, K, D, cov="diag", seed=0):
    X, start = gaussian_problem(T=T, K=K, D=D, seed=seed)
    if cov == "full":
        var = X.var(axis=0)
        start = hmm.Params(start.startprob, start.transmat, means=start.means,
                           covariances=np.tile(np.diag(var), (K, 1, 1)))
    return X, None, start


def _categorical_long(T, K, M, seed=3):
    """One long categorical sequence from a random sticky HMM and a random start."""
    rng = np.random.default_rng(seed)
    truth = hmm.Params(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=0.7 * np.eye(K) + 0.3 * rng.dirichlet(np.ones(K), size=K),
        emissionprob=rng.dirichlet(np.full(M, 0.5), size=K),
    )
    X, _ = hmm.sample(truth, T, random_state=rng)
    start = hmm.Params(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=rng.dirichlet(np.ones(K), size=K),
        emissionprob=rng.dirichlet(np.ones(M), size=K),
    )
    return X, None, start


def _categorical_many(n_seq, length, K=4, M=6, seed=1):
    X, lengths, start = categorical_problem(n_seq=n_seq, length=length, K=K, M=M, seed=seed)
    return X, lengths, start


# ------------------------------------------------------------------------------ runners
def _ours(n_iter):
    def run(problem):
        X, lengths, start = problem
        res = hmm.fit(X, start.n_states, emission=start.emission,
                      covariance_type=start.covariance_type or "diag", lengths=lengths,
                      init=start, max_iter=n_iter, tol=0, min_covar=MIN_COVAR)
        return res.log_likelihood[-2]
    return run


def _hmmlearn_model(start, n_iter, implementation):
    common = dict(n_components=start.n_states, n_iter=n_iter, tol=1e-300, init_params="",
                  implementation=implementation, startprob_prior=1.0, transmat_prior=1.0)
    if start.emission == "categorical":
        model = hl.CategoricalHMM(n_features=start.emissionprob.shape[1], params="ste",
                                  emissionprob_prior=1.0, **common)
        model.emissionprob_ = np.array(start.emissionprob)
    else:
        model = hl.GaussianHMM(covariance_type=start.covariance_type, params="stmc",
                               means_prior=0.0, means_weight=0.0, covars_prior=0.0,
                               covars_weight=1.0 if start.covariance_type == "diag" else 0.0,
                               **common)
        model.means_ = np.array(start.means)
        model.covars_ = np.array(start.covariances)
    model.startprob_ = np.array(start.startprob)
    model.transmat_ = np.array(start.transmat)
    return model


def _peer(n_iter, implementation):
    def run(problem):
        X, lengths, start = problem
        Xp = X[:, None] if start.emission == "categorical" else X
        model = _hmmlearn_model(start, n_iter, implementation).fit(Xp, lengths)
        assert model.monitor_.iter == n_iter
        return model.monitor_.history[-1]
    return run


def _fit_case(name, make, n_iter, *, peers=("log", "scaling"), **kw):
    return Case(name=name, n_iter=n_iter, make=make, ours=_ours(n_iter),
                peers={f"hmmlearn {p}": _peer(n_iter, p) for p in peers}, **kw)


def _viterbi_ours(problem):
    X, _, start = problem
    return hmm.viterbi(start.log_startprob, start.log_transmat,
                       hmm.log_emission(X, start)).log_prob


def _viterbi_peer(problem):
    X, _, start = problem
    model = _hmmlearn_model(start, 1, "log")
    return model.decode(X, algorithm="viterbi")[0]


def _viterbi_case(name, make, **kw):
    return Case(name=name, n_iter=1, make=make, ours=_viterbi_ours,
                peers={"hmmlearn decode viterbi": _viterbi_peer}, **kw)


def cases() -> list[Case]:
    return [
        _fit_case("HMM categorical, one sequence T=200, K=3, M=4 (homework)",
                  lambda: _categorical_long(200, 3, 4), 10, repeats=30, quick=True),
        _fit_case("HMM Gaussian diag, T=200, K=3, D=2 (homework)",
                  lambda: _gaussian(200, 3, 2), 10, repeats=30, quick=True),
        _viterbi_case("HMM Viterbi Gaussian, T=200, K=3 (homework)",
                      lambda: _gaussian(200, 3, 2), repeats=50, quick=True),
        _fit_case("HMM categorical, 2,000 sequences x 50, K=4, M=6",
                  lambda: _categorical_many(2_000, 50), 5, peers=("scaling",), quick=True),
        _fit_case("HMM categorical, 10,000 sequences x 20, K=4, M=6",
                  lambda: _categorical_many(10_000, 20), 5, peers=("scaling",)),
        _fit_case("HMM Gaussian diag, T=100k, K=3, D=2",
                  lambda: _gaussian(100_000, 3, 2), 5, quick=True),
        _fit_case("HMM Gaussian full, T=100k, K=5, D=3",
                  lambda: _gaussian(100_000, 5, 3, cov="full"), 3),
        _fit_case("HMM categorical, T=100k, K=50, M=20",
                  lambda: _categorical_long(100_000, 50, 20), 2, peers=("scaling",),
                  repeats=3),
        _fit_case("HMM Gaussian diag, T=10^6, K=3, D=2",
                  lambda: _gaussian(1_000_000, 3, 2), 2, repeats=3),
        _viterbi_case("HMM Viterbi Gaussian, T=10^6, K=3",
                      lambda: _gaussian(1_000_000, 3, 2), repeats=3),
    ]
