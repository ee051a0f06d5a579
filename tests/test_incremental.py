"""Incremental EM (``gmm.fit(method="incremental")``, ``incremental.partial_steps``) and
online EM (``gmm.OnlineGMM``).

Oracles: the batch fit's fixed point (both variants must reach it), the bound
``L(q, theta) = sum_n sum_k q_nk (ln w_k N(x_n | mu_k, Sigma_k) - ln q_nk)`` computed
with scipy's densities from the ``q`` and ``theta`` of every partial step (never from the
statistics the algorithm keeps), scipy's posterior for the rows a partial E-step updates,
and the model's own moments for the statistics of the initial parameters.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp, xlogy
from scipy.stats import multivariate_normal

from emtutor import gmm, incremental
from emtutor.testing import rel_err

TRUTH = gmm.Params(
    [0.3, 0.45, 0.25],
    [[-3.0, 0.0], [0.0, 2.5], [3.0, -1.0]],
    np.array([np.eye(2), [[1.0, 0.5], [0.5, 1.0]], 0.5 * np.eye(2)]),
)
INIT = gmm.Params(
    np.full(3, 1 / 3),
    np.array([[-2.0, 0.5], [0.5, 1.5], [2.0, 0.0]]),
    np.array([np.eye(2), np.eye(2), np.eye(2)]),
)


def _data(n=3000, seed=0, offset=0.0):
    X, _ = gmm.sample(TRUTH, n, random_state=seed)
    return X + offset


def _log_joint(X, params):
    """(N, K) log joint from scipy's multivariate normal."""
    return np.column_stack([
        np.log(w) + multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(*params, strict=True)
    ])


def _bound(X, params, q):
    return float(np.sum(q * _log_joint(X, params)) - xlogy(q, q).sum())


def _param_err(a, b):
    return max(rel_err(x, y) for x, y in zip(a, b, strict=True))


def _shifted(offset):
    return INIT._replace(means=INIT.means + offset)


def _batch(X, tol=1e-14, max_iter=2000, init=INIT):
    return gmm.fit(X, len(init[0]), init=init, tol=tol, max_iter=max_iter, reg_covar=0.0)


# --------------------------------------------------------------------- incremental EM


def test_one_block_is_batch_em():
    X = _data(1000)
    batch = gmm.fit(X, 3, init=INIT, tol=0, max_iter=15)
    one = gmm.fit(X, 3, init=INIT, tol=0, max_iter=15, method="incremental", n_blocks=1)
    assert rel_err(one.log_likelihood, batch.log_likelihood) < 1e-12
    assert _param_err(one.params, batch.params) < 1e-10


@pytest.mark.parametrize("n_blocks", [10, 40])
def test_incremental_reaches_the_batch_fixed_point(n_blocks):
    X = _data(2000, offset=50.0)
    batch = _batch(X, init=_shifted(50.0))
    inc = gmm.fit(X, 3, init=_shifted(50.0), tol=1e-14, max_iter=500, method="incremental",
                  n_blocks=n_blocks, reg_covar=0.0)
    assert batch.converged and inc.converged
    assert _param_err(inc.params, batch.params) < 1e-6
    assert rel_err(inc.log_likelihood[-1], batch.log_likelihood[-1]) < 1e-12
    # at the fixed point the bound is tight: L(q, theta) = ln p(X | theta)
    assert rel_err(inc.elbo[-1], inc.log_likelihood[-1]) < 1e-10
    # the bound incremental EM climbs never goes down from pass to pass
    assert np.all(np.diff(inc.elbo) >= -1e-12 * np.abs(inc.elbo[1:]))
    # incremental EM needs fewer passes than batch EM needs iterations here
    assert inc.n_iter < batch.n_iter
    assert inc.responsibilities.shape == (2000, 3)


def test_bound_never_decreases_over_partial_steps():
    X = _data(600, seed=3)
    n_blocks = 6
    blocks = incremental.block_slices(len(X), n_blocks)
    exact = []
    previous_q = None
    for step in incremental.partial_steps(X, INIT, n_blocks, n_passes=4):
        q = step.q
        bound = _bound(X, step.params, q)
        exact.append(bound)
        # the bound reported from the running statistics is the exact one
        assert rel_err(step.elbo, bound) < 1e-10
        if step.step == "E" and step.block is not None:
            rows = blocks[step.block]
            lj = _log_joint(X[rows], step.params)
            assert rel_err(q[rows], np.exp(lj - logsumexp(lj, axis=1, keepdims=True))) < 1e-12
            others = np.ones(len(X), dtype=bool)
            others[rows] = False
            assert np.array_equal(q[others], previous_q[others])  # only block b changed
        previous_q = q.copy()
    exact = np.array(exact)
    assert len(exact) == 2 + 2 * n_blocks * 3
    assert np.all(np.diff(exact) >= -1e-12 * np.abs(exact[1:]))
    assert exact[-1] - exact[0] > 10.0  # it climbed


def test_incremental_stops_by_its_rule_and_records_the_trace():
    X = _data(2000)
    res = gmm.fit(X, 3, init=INIT, method="incremental", n_blocks=10, tol=1e-8)
    assert res.converged
    assert len(res.thetas) == res.n_iter + 1 == len(res.log_likelihood)
    assert len(res.elbo) == res.n_iter
    assert rel_err(res.log_likelihood[-1], gmm.log_likelihood(X, res.params)) < 1e-12
    assert np.all(res.elbo <= res.log_likelihood[1:] + 1e-9 * np.abs(res.elbo))


def test_incremental_bad_input():
    X = _data(100)
    with pytest.raises(ValueError, match="method must be 'batch' or 'incremental'"):
        gmm.fit(X, 3, method="online")
    with pytest.raises(ValueError, match="n_blocks is for method='incremental'"):
        gmm.fit(X, 3, n_blocks=10)
    with pytest.raises(ValueError, match="n_blocks must be"):
        gmm.fit(X, 3, method="incremental", n_blocks=101)
    Xm = X.copy()
    Xm[0, 0] = np.nan
    with pytest.raises(ValueError, match="needs complete data in memory"):
        gmm.fit(Xm, 3, method="incremental", missing="em")
    with pytest.raises(ValueError, match="n_passes must be"):
        next(incremental.partial_steps(X, INIT, 2, 0))


# -------------------------------------------------------------------------- online EM


def test_online_with_the_whole_data_as_batch_reaches_the_batch_fixed_point():
    # with every mini-batch the whole data set, online EM is a damped batch EM,
    # s <- (1 - gamma) s + gamma S(theta(s)) / N: its fixed points are the batch ones.
    # Well separated components make batch EM converge to machine precision.
    far = gmm.Params([0.4, 0.6], [[-4.0, 1.0], [4.0, 0.0]], [[1.0, 0.5], [0.5, 1.0]])
    X = gmm.sample(far, 500, random_state=1)[0] + 7.0
    start = gmm.Params([0.5, 0.5], [[5.0, 7.0], [9.0, 7.0]], [[2.0, 2.0], [2.0, 2.0]])
    fixed = _batch(X, init=start)
    assert fixed.converged
    online = gmm.OnlineGMM(fixed.params, alpha=0.6, t0=0.0, reg_covar=0.0)
    for _ in range(20):
        online.partial_fit(X)
    assert _param_err(online.params, fixed.params) < 1e-12  # it stays there
    online = gmm.OnlineGMM(start, alpha=0.51, t0=0.0, reg_covar=0.0)
    for _ in range(300):
        online.partial_fit(X)
    assert _param_err(online.params, fixed.params) < 1e-6  # and it gets there
    assert online.n_updates == 300 and online.n_seen == 300 * 500


@pytest.mark.parametrize(("alpha", "atol"), [(0.6, 0.05), (0.75, 0.1)])
def test_online_on_a_stream_approaches_the_batch_fit(alpha, atol):
    rng = np.random.default_rng(7)
    batches = [gmm.sample(TRUTH, 200, random_state=rng)[0] for _ in range(300)]
    online = gmm.OnlineGMM(INIT, alpha=alpha)
    for b in batches:
        online.partial_fit(b)
    batch = _batch(np.concatenate(batches), tol=1e-10)
    order = np.argsort(online.params.means[:, 0])
    ref = np.argsort(batch.params.means[:, 0])
    # the stream holds 60,000 points; online EM lags by about gamma_t times the drift
    assert np.abs(online.params.means[order] - batch.params.means[ref]).max() < atol
    assert np.abs(online.params.weights[order] - batch.params.weights[ref]).max() < 0.02
    # the held-out score of the last batch is its log-likelihood before the update
    assert online.batch_log_likelihood < 0


def test_online_initial_statistics_are_the_models_moments():
    # with t0 = 0 the first step is 1: the result is one M-step on the first batch;
    # with gamma -> 0 the parameters stay at init (its statistics are the model's moments)
    X = _data(500)
    first = gmm.OnlineGMM(INIT, t0=0.0, reg_covar=0.0).partial_fit(X).params
    resp, _ = gmm.e_step(X, INIT)
    direct = gmm.m_step(X, resp, covariance_type="full", reg_covar=0.0)
    assert _param_err(first, direct) < 1e-10
    still = gmm.OnlineGMM(INIT, alpha=1.0, t0=1e12, reg_covar=0.0).partial_fit(X).params
    assert _param_err(still, INIT) < 1e-9
    for cov in (INIT.covariances[:, [0, 1], [0, 1]], INIT.covariances[:, 0, 0]):
        p = gmm.Params(INIT.weights, INIT.means, cov)
        kept = gmm.OnlineGMM(p, alpha=1.0, t0=1e12, reg_covar=0.0).partial_fit(X).params
        assert _param_err(kept, p) < 1e-9


def test_step_size_and_bad_input():
    gamma = incremental.step_size(np.arange(1, 6), alpha=0.7, t0=2.0)
    assert rel_err(gamma, (np.arange(1, 6) + 2.0) ** -0.7) < 1e-15
    with pytest.raises(ValueError, match=r"alpha must be in \(0.5, 1\]"):
        gmm.OnlineGMM(INIT, alpha=1.5)
    with pytest.raises(ValueError, match="alpha must"):
        gmm.OnlineGMM(INIT, alpha=0.5)
    with pytest.raises(ValueError, match="t0 must"):
        gmm.OnlineGMM(INIT, t0=-1.0)
    online = gmm.OnlineGMM(INIT)
    with pytest.raises(ValueError, match="X_batch has 3 columns but the means have 2"):
        online.partial_fit(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X_batch"):
        online.partial_fit([[np.nan, 0.0]])
    assert online.n_updates == 0 and online.params is online._init


# ------------------------------------------------------------------ optional dask


def test_emtutor_imports_and_fits_without_dask():
    # emtutor imports no dask, and fits with dask made unimportable
    code = (
        "import sys, numpy as np, emtutor\n"
        "print('dask' in sys.modules)\n"
        "sys.modules['dask'] = None; sys.modules['dask.array'] = None\n"
        "from emtutor import gmm\n"
        "X = np.random.default_rng(0).normal(size=(50, 2))\n"
        "res = gmm.fit(X, 2, random_state=0, max_iter=5)\n"
        "print(res.n_iter == 5, gmm.predict(X, res.params).shape == (50,))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]
