"""Time Baum-Welch iterations of emtutor.hmm against hmmlearn on the same data and start.

Two cases:

1. Gaussian emissions with diagonal covariances, one sequence of T = 100,000, K = 3 states
   (the long-sequence case: emtutor's blocked forward-backward); the peers are hmmlearn's
   default ``implementation="log"`` and its ``implementation="scaling"``.
2. Categorical emissions, 2,000 sequences of length 50, K = 4 states, 6 symbols (the
   many-short-sequences case: emtutor vectorises each time step across the sequences).

For a fair comparison both libraries start from the same parameters, run exactly ``N_ITER``
iterations and must agree before any time is printed: same number of iterations, the same
log-likelihood trace and the same log-likelihood at the final parameters (relative 1e-8).
hmmlearn's priors are switched off so that its M-step is the maximum-likelihood one:
``startprob_prior = transmat_prior = emissionprob_prior = 1`` (Dirichlet with all
parameters 1), ``means_prior = means_weight = 0``, ``covars_prior = 0`` and
``covars_weight = 1`` (its diagonal M-step then divides by the posterior mass alone).
``init_params=""`` makes it keep the given parameters. hmmlearn's ``min_covar`` only enters
its own initialisation, which is skipped; emtutor floors variances at ``min_covar = 1e-6``,
and the script checks that the floor never binds, so both run the same M-step.

Each fit is timed whole with ``time.perf_counter`` (input checks, set-up, iterations; for
emtutor also the E-step at the final parameters, which it reports and hmmlearn does not),
best of ``REPEATS`` runs taken in turns with the peers; the time per iteration is that
time divided by ``N_ITER``.

A note on the categorical case: hmmlearn's default (log) implementation normalises the
posteriors of every sequence with ``scipy.special.logsumexp``, whose per-call overhead in
recent SciPy releases dominates its time on thousands of short sequences; its
``implementation="scaling"`` avoids that, so the ratio against it is the stricter one.

Run from the repository root: ``.venv/bin/python benchmarks/hmm.py``.
"""

from __future__ import annotations

import logging

import numpy as np
from _timing import best_times
from hmmlearn import hmm as hl

from emtutor import hmm

N_ITER = 10
MIN_COVAR = 1e-6
RTOL = 1e-8

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # its per-run convergence chatter


def gaussian_problem(T: int = 100_000, K: int = 3, D: int = 2, seed: int = 0):
    """One long sequence from a random Gaussian HMM and a start at random data points."""
    rng = np.random.default_rng(seed)
    truth = hmm.Params(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=0.8 * np.eye(K) + 0.2 * rng.dirichlet(np.ones(K), size=K),
        means=rng.normal(scale=2.0, size=(K, D)),
        covariances=rng.uniform(0.5, 2.0, size=(K, D)),
    )
    X, _ = hmm.sample(truth, T, random_state=rng)
    start = hmm.Params(
        startprob=np.full(K, 1.0 / K),
        transmat=np.full((K, K), 0.1 / (K - 1)) + (0.9 - 0.1 / (K - 1)) * np.eye(K),
        means=X[rng.choice(T, size=K, replace=False)],
        covariances=np.tile(X.var(axis=0), (K, 1)),
    )
    return X, start


def categorical_problem(n_seq: int = 2_000, length: int = 50, K: int = 4, M: int = 6,
                        seed: int = 1):
    """Many short sequences from a random categorical HMM and a random start."""
    rng = np.random.default_rng(seed)
    truth = hmm.Params(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=0.7 * np.eye(K) + 0.3 * rng.dirichlet(np.ones(K), size=K),
        emissionprob=rng.dirichlet(np.full(M, 0.5), size=K),
    )
    X = np.concatenate([hmm.sample(truth, length, random_state=rng)[0] for _ in range(n_seq)])
    start = hmm.Params(
        startprob=rng.dirichlet(np.ones(K)),
        transmat=rng.dirichlet(np.ones(K), size=K),
        emissionprob=rng.dirichlet(np.ones(M), size=K),
    )
    return X, np.full(n_seq, length), start


def fit_emtutor(X, start, lengths=None):
    # tol is tiny so that exactly N_ITER iterations run (checked below).
    return hmm.fit(X, start.n_states, emission=start.emission, lengths=lengths, init=start,
                   max_iter=N_ITER, tol=1e-300, min_covar=MIN_COVAR)


def hmmlearn_gaussian(start, implementation: str):
    model = hl.GaussianHMM(
        n_components=start.n_states, covariance_type="diag", n_iter=N_ITER, tol=1e-300,
        params="stmc", init_params="", implementation=implementation,
        startprob_prior=1.0, transmat_prior=1.0, means_prior=0.0, means_weight=0.0,
        covars_prior=0.0, covars_weight=1.0,
    )
    model.startprob_ = np.array(start.startprob)
    model.transmat_ = np.array(start.transmat)
    model.means_ = np.array(start.means)
    model.covars_ = np.array(start.covariances)
    return model


def hmmlearn_categorical(start, implementation: str = "log"):
    model = hl.CategoricalHMM(
        n_components=start.n_states, n_features=start.emissionprob.shape[1], n_iter=N_ITER,
        tol=1e-300, params="ste", init_params="", implementation=implementation,
        startprob_prior=1.0, transmat_prior=1.0, emissionprob_prior=1.0,
    )
    model.startprob_ = np.array(start.startprob)
    model.transmat_ = np.array(start.transmat)
    model.emissionprob_ = np.array(start.emissionprob)
    return model


def check_same(res, model, X_peer, lengths, name: str) -> None:
    """The two runs must be the same computation before their times mean anything."""
    assert res.n_iter == N_ITER, f"emtutor ran {res.n_iter} iterations"
    assert model.monitor_.iter == N_ITER, f"{name} ran {model.monitor_.iter} iterations"
    trace = np.asarray(model.monitor_.history)
    np.testing.assert_allclose(res.log_likelihood[:-1], trace, rtol=RTOL, atol=0,
                               err_msg=f"log-likelihood trace differs from {name}")
    final = model.score(X_peer, lengths)
    np.testing.assert_allclose(res.log_likelihood[-1], final, rtol=RTOL, atol=0,
                               err_msg=f"final log-likelihood differs from {name}")


def report(title: str, per_ours: float, peers: list[tuple[str, float]]) -> None:
    print(title)
    print(f"  emtutor                       {1e3 * per_ours:8.2f} ms/iteration")
    for label, per_peer in peers:
        print(f"  {label:<29} {1e3 * per_peer:8.2f} ms/iteration   "
              f"speed-up of emtutor {per_peer / per_ours:5.2f}x")


def bench_gaussian() -> None:
    X, start = gaussian_problem()
    T, D = X.shape
    runs = [lambda: fit_emtutor(X, start)]
    labels = ["hmmlearn (default, log)", "hmmlearn (scaling)"]
    for impl in ("log", "scaling"):
        runs.append(lambda impl=impl: hmmlearn_gaussian(start, impl).fit(X))
    (t_ours, res), *timed = best_times(*runs)
    if res.params.covariances.min() <= MIN_COVAR:
        raise AssertionError("the variance floor was reached; the M-steps would differ")
    peers = []
    for label, (t_peer, model) in zip(labels, timed, strict=True):
        check_same(res, model, X, None, label)  # before anything is printed
        peers.append((label, t_peer / N_ITER))
    report(f"Gaussian (diag) HMM, one sequence, T = {T:,}, K = {start.n_states}, D = {D}, "
           f"{N_ITER} iterations", t_ours / N_ITER, peers)


def bench_categorical() -> None:
    X, lengths, start = categorical_problem()
    Xp = X[:, None]
    runs = [lambda: fit_emtutor(X, start, lengths)]
    labels = ["hmmlearn (default, log)", "hmmlearn (scaling)"]
    for impl in ("log", "scaling"):
        runs.append(lambda impl=impl: hmmlearn_categorical(start, impl).fit(Xp, lengths))
    (t_ours, res), *timed = best_times(*runs)
    peers = []
    for label, (t_peer, model) in zip(labels, timed, strict=True):
        check_same(res, model, Xp, lengths, label)  # before anything is printed
        peers.append((label, t_peer / N_ITER))
    report(f"Categorical HMM, {lengths.size:,} sequences of length {lengths[0]}, "
           f"K = {start.n_states}, M = {start.emissionprob.shape[1]}, {N_ITER} iterations",
           t_ours / N_ITER, peers)


if __name__ == "__main__":
    bench_gaussian()
    bench_categorical()
