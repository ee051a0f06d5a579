"""Gaussian mixtures on a ``dask.array.Array`` chunked along rows: EM out of core.

The E-step's expected sufficient statistics ``S = resp T^T`` and the log-likelihood are
sums over the data points, so each iteration maps one function over the chunks (E-step
on the chunk, then its ``S`` and its ``ln p``) and adds the small results, in chunk order,
on the client. That is one pass over the data per iteration; the parameters (a few
arrays of size K D^2) stay in numpy, and :class:`DaskProblem` plugs into
:func:`emtutor.em.run` exactly as the in-memory :class:`emtutor.gmm._Problem` does, with
the same M-step.

To reproduce the in-memory trace (to about 1e-13 relative), the set-up uses the same
centre (the column means) and the same power-of-two scale as the in-memory problem, both
from one pass, and a second pass finds the largest absolute value of each feature, which
the rounding guard of :func:`emtutor._gaussian.log_joint` needs. A component whose
one-pass scatter would cancel (flagged by the batch fit's own test) gets its scatter in a
second pass of that iteration, about its new mean, as the in-memory M-step does.

Initialisation: ``Params`` are used as given, so they reproduce the in-memory fit.
``init="kmeans++"`` or ``"random"`` run the in-memory seeding on the rows of the first
chunk (in the units of the whole data set): shuffle sorted data first, or pass Params.

dask is imported only when a dask array is passed: :mod:`emtutor` imports without it.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from emtutor import _gaussian as _g
from emtutor.gmm import Params, _Problem, check_params, covariance_type_of
from emtutor.incremental import _chunk_statistics, _moments

__all__ = ["DaskProblem", "check_X", "is_dask", "log_likelihood", "predict"]


def is_dask(X) -> bool:
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def check_X(X, missing=None):
    """A 2-D dask array of numbers, chunked along rows only, with known chunk sizes."""
    if missing is not None:
        raise ValueError(
            "missing='em' is not supported on a dask array; compute X (it holds NaN) or "
            "impute the missing entries"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got a dask array of shape {X.shape}")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "X is a dask array with unknown chunk sizes (NaN in X.chunks, e.g. after boolean "
            "indexing); call X.compute_chunk_sizes() first"
        )
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"X must be chunked along rows only (one chunk across its {X.shape[1]} columns), "
            f"got {len(X.chunks[1])} column chunks {X.chunks[1]}; use X.rechunk({{1: -1}})"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got a dask array of dtype {X.dtype}")
    return X


def _scaled(chunk, centre, scale) -> np.ndarray:
    Xs = np.asarray(chunk, dtype=float) - centre
    Xs /= scale
    return Xs


def _chunk_summary(chunk) -> tuple:
    """Per chunk: the column sums, minima and maxima, and whether every entry is finite."""
    chunk = np.asarray(chunk, dtype=float)
    return chunk.sum(axis=0), chunk.min(axis=0), chunk.max(axis=0), bool(
        np.isfinite(chunk).all()
    )


def _chunk_t_max(chunk, centre, scale, covariance_type) -> np.ndarray:
    return np.abs(_g.features(_scaled(chunk, centre, scale), covariance_type)).max(axis=1)


def _chunk_e_step(chunk, centre, scale, t_max, theta, covariance_type) -> tuple:
    stats, ll, _ = _chunk_statistics(_scaled(chunk, centre, scale), t_max, theta,
                                     covariance_type)
    return stats, ll


def _chunk_scatter(chunk, centre, scale, t_max, theta, covariance_type, means, which):
    """Two-pass scatter ``sum_n r_nk (x_n - m_k)(x_n - m_k)^T`` of components ``which``."""
    Xs = _scaled(chunk, centre, scale)
    _, _, resp = _chunk_statistics(Xs, t_max, theta, covariance_type)
    ones = np.ones(len(resp))  # the batch fit's formula, not yet divided by N_k
    return _g._two_pass_scatter(np.ascontiguousarray(Xs.T), resp, ones, means, which,
                                covariance_type)


def _map(X, func, *args) -> list:
    """``func(chunk, *args)`` for every row chunk, computed by dask, in chunk order."""
    import dask

    blocks = X.to_delayed().ravel()
    return list(dask.compute(*[dask.delayed(func)(b, *args) for b in blocks]))


class _Statistics:
    """What one pass gives an iteration: ``S`` summed over the chunks, at ``theta``."""

    def __init__(self, theta, stats):
        self.theta = theta
        self.stats = stats

    @property
    def T(self):
        raise TypeError(
            "the responsibilities of a dask array are not held in memory; gmm.fit returns "
            "them as a lazy dask array (responsibilities), and gmm.predict gives the labels"
        )


class DaskProblem(_Problem):
    """:class:`emtutor.gmm._Problem` on a dask array: every step maps over the chunks.

    ``self.X`` (and the feature matrix) hold only the first chunk, scaled: the in-memory
    seeding ("kmeans++", "random") runs on it. Each ``log_likelihood(theta)`` is one pass
    that also gathers the statistics the next M-step needs.
    """

    def __init__(self, X, covariance_type: str, reg_covar: float = 0.0,
                 prior: _g.Prior | None = None):
        n, d = X.shape
        self.data = X
        self.covariance_type = covariance_type
        parts = _map(X, _chunk_summary)
        if not all(p[3] for p in parts):
            raise ValueError(
                "X must be finite: the dask array holds NaN or inf (missing='em' is not "
                "available for dask arrays)"
            )
        self.centre = np.sum([p[0] for p in parts], axis=0) / n
        spread = max(
            float((np.max([p[2] for p in parts], axis=0) - self.centre).max()),
            float((self.centre - np.min([p[1] for p in parts], axis=0)).max()),
        )
        self.scale = math.ldexp(1.0, math.frexp(spread)[1]) if spread > 0 else 1.0
        self.t_max = np.max(_map(X, _chunk_t_max, self.centre, self.scale, covariance_type),
                            axis=0)
        first = X.blocks[0].compute()
        self.X = _scaled(first, self.centre, self.scale)
        self.T = _g.features(self.X, covariance_type)
        self.reg = reg_covar / self.scale**2
        self.prior = prior
        self.scaled_prior = None if prior is None else prior._replace(
            scale=None if prior.scale is None else prior.scale / self.scale**2
        )
        self.log_scale = math.log(self.scale)
        self.shift = -n * d * self.log_scale
        self.iteration = 0
        self._post = None
        self._moments = None

    def log_likelihood(self, theta: Params) -> float:
        parts = _map(self.data, _chunk_e_step, self.centre, self.scale, self.t_max,
                     tuple(theta), self.covariance_type)
        stats = np.sum([p[0] for p in parts], axis=0)
        ll = math.fsum(p[1] for p in parts) + self.shift + self.log_prior(theta)
        self._post = (theta, _Statistics(theta, stats), ll)
        return ll

    def moments(self, resp) -> _g.Moments:
        if not isinstance(resp, _Statistics):  # the seeding, on the first chunk
            return super().moments(resp)
        d = self.data.shape[1]
        m, cancels = _moments(resp.stats, d, self.covariance_type, self.reg)
        which = np.flatnonzero(cancels).tolist()
        if which:  # a second pass for scatters the one-pass formula would get wrong
            parts = _map(self.data, _chunk_scatter, self.centre, self.scale, self.t_max,
                         tuple(resp.theta), self.covariance_type, m.means, which)
            for i, k in enumerate(which):
                m.scatter[k] = np.sum([p[i] for p in parts], axis=0) / m.totals[k]
        return m

    def log_joint(self, theta):
        raise TypeError(
            "X is a dask array: gmm.fit, gmm.log_likelihood and gmm.predict accept one; "
            "for the other functions compute X (or a chunk of it) first"
        )

    def responsibilities(self, theta: Params):
        """``p(z_n = k | x_n, theta)`` as a lazy (N, K) dask array (scaled ``theta``)."""
        k = len(theta.weights)
        return self.data.map_blocks(
            _chunk_resp, self.centre, self.scale, self.t_max, tuple(theta),
            self.covariance_type, chunks=(self.data.chunks[0], (k,)), dtype=float,
        )


def _chunk_resp(chunk, centre, scale, t_max, theta, covariance_type):
    _, _, resp = _chunk_statistics(_scaled(chunk, centre, scale), t_max, Params(*theta),
                                   covariance_type)
    return np.ascontiguousarray(resp.T)


def _chunk_log_likelihood(chunk, params):
    from emtutor import gmm

    return gmm.log_likelihood(np.asarray(chunk, dtype=float), params)


def _chunk_predict(chunk, params):
    from emtutor import gmm

    return gmm.predict(np.asarray(chunk, dtype=float), params)


def log_likelihood(X, params: Params) -> float:
    """``ln p(X | theta)``: the in-memory function on every chunk, summed (one pass)."""
    X = check_X(X)
    params = check_params(params, X.shape[1])
    return math.fsum(_map(X, _chunk_log_likelihood, params))


def predict(X, params: Params, missing=None):
    """Labels as a lazy dask array of shape (N,): the in-memory predict on every chunk."""
    X = check_X(X, missing)
    params = check_params(params, X.shape[1])
    covariance_type_of(params)
    return X.map_blocks(_chunk_predict, params, drop_axis=1, dtype=np.intp)
