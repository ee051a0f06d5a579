"""Gaussian mixtures on dask arrays: ``gmm.fit``, ``gmm.log_likelihood``, ``gmm.predict``.

Oracle: the in-memory fit of the same data (a numpy array) from the same initial
parameters, whose trace the out-of-core fit must reproduce to 1e-10 relative, with
dask's threaded scheduler and with a ``dask.distributed`` cluster of two worker processes.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from emtutor import gmm
from emtutor.testing import rel_err

da = pytest.importorskip("dask.array", reason="dask is an optional dependency (extra 'dask')")
import dask  # noqa: E402

TRUTH = gmm.Params(
    [0.3, 0.45, 0.25],
    [[-3.0, 0.0], [0.0, 2.5], [3.0, -1.0]],
    np.array([np.eye(2), [[1.0, 0.5], [0.5, 1.0]], 0.5 * np.eye(2)]),
)
CHUNKS = ((700, 1300, 500, 1500, 1000), (2,))  # unequal row chunks


def _data(n=5000, offset=1000.0, seed=0):
    X, _ = gmm.sample(TRUTH, n, random_state=seed)
    return X + offset


def _init(X, covariance_type="full"):
    """Starting parameters from one in-memory k-means++ seeding."""
    return gmm.fit(X, 3, covariance_type=covariance_type, max_iter=0, random_state=1).params


def _same_fit(a, b, rtol=1e-10):
    assert a.n_iter == b.n_iter and a.converged == b.converged
    assert rel_err(a.log_likelihood, b.log_likelihood) < rtol
    assert rel_err(a.elbo, b.elbo) < rtol
    for x, y in zip(a.params, b.params, strict=True):
        assert rel_err(x, y) < 1e-8


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_threaded_fit_reproduces_the_in_memory_trace(covariance_type):
    X = _data()
    init = _init(X, covariance_type)
    memory = gmm.fit(X, 3, init=init, max_iter=25, tol=0)
    with dask.config.set(scheduler="threads"):
        Xd = da.from_array(X, chunks=CHUNKS)
        out = gmm.fit(Xd, 3, init=init, max_iter=25, tol=0)
        _same_fit(out, memory)
        assert isinstance(out.responsibilities, da.Array)
        assert rel_err(out.responsibilities.compute(), memory.responsibilities) < 1e-10
        ll = gmm.log_likelihood(Xd, out.params)
        assert rel_err(ll, gmm.log_likelihood(X, out.params)) < 1e-12
        labels = gmm.predict(Xd, out.params)
        assert isinstance(labels, da.Array)
        assert np.array_equal(labels.compute(), gmm.predict(X, out.params))


def test_stops_where_the_in_memory_fit_stops_and_priors_pass_through():
    X = _data(3000, offset=-50.0, seed=2)
    init = gmm.fit(X, 3, init=_init(X), max_iter=60, tol=0).params  # near convergence
    kwargs = dict(init=init, tol=1e-8, weight_concentration=2.0,
                  covariance_prior=(np.eye(2), 3.0), reg_covar=0.0)
    memory = gmm.fit(X, 3, **kwargs)
    with dask.config.set(scheduler="threads"):
        out = gmm.fit(da.from_array(X, chunks=(800, 2)), 3, **kwargs)
    assert memory.converged
    _same_fit(out, memory)
    assert rel_err(out.log_prior, memory.log_prior) < 1e-10


def test_a_narrow_component_far_from_the_centre_gets_its_scatter_in_two_passes():
    # a standard deviation of 1e-4 at distance 100 from the centre: the one-pass scatter
    # would cancel, the in-memory M-step recomputes it in two passes, and so must dask
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0.0, 1.0, (2000, 1)), rng.normal(200.0, 1e-4, (500, 1))])
    rng.shuffle(X)
    init = gmm.Params([0.7, 0.3], [[0.5], [199.0]], [2.0, 1.0])
    memory = gmm.fit(X, 2, init=init, max_iter=10, tol=0, reg_covar=0.0)
    with dask.config.set(scheduler="threads"):
        out = gmm.fit(da.from_array(X, chunks=(600, 1)), 2, init=init, max_iter=10, tol=0,
                      reg_covar=0.0)
    assert abs(np.sqrt(out.params.covariances[1]) - 1e-4) < 1e-5
    _same_fit(out, memory)


def test_kmeans_plusplus_seeds_on_the_first_chunk():
    X = _data(4000)
    with dask.config.set(scheduler="threads"):
        Xd = da.from_array(X.astype(np.float32), chunks=(1000, 2))  # any real dtype
        out = gmm.fit(Xd, 3, max_iter=10, tol=0, random_state=0)
    # the seeding is the in-memory one on the first chunk's rows ...
    seed = gmm.fit(X[:1000].astype(np.float32), 3, max_iter=0, random_state=0).params
    assert rel_err(out.thetas[0].means, seed.means) < 1e-8
    # ... and from there the fit is the in-memory fit of the whole array
    memory = gmm.fit(X.astype(np.float32), 3, init=out.thetas[0], max_iter=10, tol=0)
    _same_fit(out, memory)


def test_distributed_local_cluster_reproduces_the_in_memory_trace():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is optional")
    X = _data(2000, offset=10.0, seed=5)
    init = _init(X)
    memory = gmm.fit(X, 3, init=init, max_iter=6, tol=0)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    try:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            Xd = da.from_array(X, chunks=(500, 2))
            out = gmm.fit(Xd, 3, init=init, max_iter=6, tol=0)
            ll = gmm.log_likelihood(Xd, out.params)
            labels = gmm.predict(Xd, out.params).compute()
    finally:
        cluster.close()
    _same_fit(out, memory)
    assert rel_err(ll, gmm.log_likelihood(X, out.params)) < 1e-12
    assert np.array_equal(labels, gmm.predict(X, out.params))


def test_bad_dask_input_is_refused_with_a_message():
    X = _data(400)
    with dask.config.set(scheduler="threads"):
        by_column = da.from_array(X, chunks=(100, 1))
        with pytest.raises(ValueError, match="chunked along rows only"):
            gmm.fit(by_column, 2)
        with pytest.raises(ValueError, match="chunked along rows only"):
            gmm.log_likelihood(by_column, _init(X))
        with pytest.raises(ValueError, match="chunked along rows only"):
            gmm.predict(by_column, _init(X))
        Xd = da.from_array(X, chunks=(100, 2))
        unknown = Xd[Xd[:, 0] > 1000.0]
        with pytest.raises(ValueError, match="unknown chunk sizes"):
            gmm.fit(unknown, 2)
        with pytest.raises(ValueError, match="2-D"):
            gmm.fit(Xd[:, 0], 2)
        with_nan = da.from_array(np.where(np.arange(400)[:, None] == 7, np.nan, X),
                                 chunks=(100, 2))
        with pytest.raises(ValueError, match="must be finite"):
            gmm.fit(with_nan, 2)
        with pytest.raises(ValueError, match="not supported on a dask array"):
            gmm.fit(Xd, 2, missing="em")
        with pytest.raises(ValueError, match="needs complete data in memory"):
            gmm.fit(Xd, 2, method="incremental")
        with pytest.raises(TypeError, match="accept one; for the other functions"):
            gmm.e_step(Xd, _init(X))
        with pytest.raises(TypeError, match="accept one; for the other functions"):
            gmm.m_step(Xd, np.ones((400, 1)), covariance_type="full")
        with pytest.raises(TypeError, match="real numbers"):
            gmm.fit(da.from_array(np.full((10, 2), "a"), chunks=(5, 2)), 2)
