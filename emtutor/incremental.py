"""Incremental and online EM for Gaussian mixtures: the free-energy view of EM at scale.

Chapter 4's decomposition ``ln p(X | theta) = L(q, theta) + KL(q || p(Z | X, theta))`` says
that EM is coordinate ascent on the bound ``L(q, theta)`` (Neal and Hinton, 1998): any
step that raises ``L``, in ``q`` or in ``theta``, for all the data or for a part of it,
never lowers it. Two variants follow.

* **Incremental EM** (:func:`partial_steps`, and :func:`emtutor.gmm.fit` with
  ``method="incremental"``): the data are split into ``B`` blocks; a partial E-step sets
  ``q`` of one block to its posterior and updates the expected sufficient statistics by
  subtracting that block's old contribution and adding its new one; the M-step follows.
  ``L`` never decreases over these partial steps.
* **Online (stepwise) EM** (:class:`OnlineGMM`, Cappé and Moulines, 2009): running
  expected sufficient statistics per point ``s`` are moved towards those of each
  mini-batch, ``s <- (1 - gamma_t) s + gamma_t s_batch`` with ``gamma_t = (t + t0)^(-alpha)``,
  ``alpha`` in (0.5, 1], and the M-step maps ``s`` to parameters.

The statistics. Both variants use the E-step/M-step interface of the batch fit: the
expected sufficient statistics ``S = resp T^T`` (K, F) of the data centred and divided by
a power of two (``emtutor.gmm._Problem``), and
``emtutor._gaussian.moments_of_statistics`` to turn them into weights, means and
scatters. ``S`` is a raw sum (``N_k``, ``sum r x``, ``sum r x x^T``), not a centred
moment, because raw sums add and subtract exactly as blocks enter and leave. Raw second
moments lose digits only for a component much narrower than its distance from the centre
of the data; the batch fit's own test flags such a component, and incremental EM then
computes its scatter in two passes from the stored responsibilities, as the batch fit
does (a full pass, rare: a standard deviation below about 1/270 of the data's range).

Blocks are contiguous runs of rows in the given order: shuffle sorted data first.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy

from emtutor import _gaussian as _g
from emtutor._validation import as_float_array, check_int, check_real
from emtutor.em import EMResult, find_decreases, has_converged
from emtutor.gmm import (
    Params,
    _check_covariance_type,
    _check_reg_covar,
    _Problem,
    check_params,
    covariance_type_of,
)

__all__ = [
    "OnlineGMM",
    "PartialStep",
    "block_slices",
    "partial_steps",
    "step_size",
]


# ------------------------------------------------------------------ shared numerics


def block_slices(n: int, n_blocks: int) -> list[slice]:
    """Split ``range(n)`` into ``n_blocks`` contiguous slices of near-equal length.

    Examples
    --------
    >>> print(block_slices(10, 3))
    [slice(0, 3, None), slice(3, 7, None), slice(7, 10, None)]
    """
    n = check_int(n, "n", low=1)
    n_blocks = check_int(n_blocks, "n_blocks", low=1, high=n)
    edges = np.linspace(0, n, n_blocks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _chunk_statistics(Xs: np.ndarray, t_max, theta: Params, covariance_type: str):
    """E-step on scaled rows ``Xs``: ``(S, ln p, resp)`` with ``S = resp T^T`` (K, F).

    ``t_max`` is the row-wise ``max |T|`` the rounding guard of
    :func:`emtutor._gaussian.log_joint` uses (``None``: that of these rows). The log
    joint is in the scaled units (no ``- D ln(scale)`` per point).
    """
    T = _g.features(Xs, covariance_type)
    if t_max is None:
        t_max = np.abs(T).max(axis=1)
    resp, ll = _g.posterior(_g.log_joint(T, Xs, t_max, *theta))
    return np.inner(resp, T), ll, resp


def _moments(stats: np.ndarray, d: int, covariance_type: str, reg: float):
    """:class:`emtutor._gaussian.Moments` from ``S`` and the mask of cancelling scatters."""
    totals, means, scatter, cancels = _g.moments_of_statistics(stats, d, covariance_type, reg)
    empty = _g.emptied(totals, means, scatter)
    return _g.Moments(totals, means, scatter, empty), cancels & ~empty


# ------------------------------------------------------------------- incremental EM


class _Incremental:
    """Incremental EM on a scaled :class:`emtutor.gmm._Problem` (Neal and Hinton, 1998).

    State: the responsibilities ``q`` (K, N), each block's statistics ``S_b`` and entropy
    ``H(q_b)``, their total ``S = sum_b S_b`` and the parameters ``theta``.
    """

    def __init__(self, problem: _Problem, theta0: Params, n_blocks: int):
        self.problem = problem
        self.blocks = block_slices(problem.X.shape[0], n_blocks)
        self.d = problem.X.shape[1]
        self.theta = theta0
        problem.log_likelihood(theta0)  # the full E-step at theta0 (cached by the problem)
        self.resp = problem.e_step(theta0).copy()
        k = self.resp.shape[0]
        f = _g.n_features(self.d, problem.covariance_type)
        self.stats = np.empty((len(self.blocks), k, f))
        self.entropy = np.empty(len(self.blocks))
        for b, rows in enumerate(self.blocks):
            self.stats[b] = np.inner(self.resp[:, rows], self._features(rows))
            self.entropy[b] = -xlogy(self.resp[:, rows], self.resp[:, rows]).sum()
        self.total = self.stats.sum(axis=0)
        self.n_steps = 0
        # contiguous copies of the blocks' features: products with them run 3x faster
        self.T_blocks = None if problem.T is None else [
            np.ascontiguousarray(problem.T[:, rows]) for rows in self.blocks
        ]

    def _features(self, rows: slice, b: int | None = None) -> np.ndarray:
        if b is not None and self.T_blocks is not None:
            return self.T_blocks[b]
        if self.problem.T is not None:
            return self.problem.T[:, rows]
        return _g.features(self.problem.X[rows], self.problem.covariance_type)

    def e_step(self, b: int) -> None:
        """Partial E-step: ``q_b`` becomes the posterior at ``theta``; ``S += S_b' - S_b``."""
        rows = self.blocks[b]
        problem = self.problem
        T = self._features(rows, b)
        t_max = np.abs(T).max(axis=1) if problem.t_max is None else problem.t_max
        resp, _ = _g.posterior(_g.log_joint(T, problem.X[rows], t_max, *self.theta))
        self.resp[:, rows] = resp
        new = np.inner(resp, T)
        self.total += new - self.stats[b]
        self.stats[b] = new
        self.entropy[b] = -xlogy(resp, resp).sum()

    def current_moments(self) -> _g.Moments:
        """Moments of the total statistics (two passes for a scatter that would cancel)."""
        problem = self.problem
        m, cancels = _moments(self.total, self.d, problem.covariance_type, problem.reg)
        return problem.moments(self.resp) if cancels.any() else m

    def m_step(self) -> None:
        """M-step: ``theta`` maximises ``L(q, theta)`` for the current ``q``."""
        self.n_steps += 1
        when = f"at partial step {self.n_steps}"
        self.theta = self.problem.maximise(self.current_moments(), self.theta, when, when)

    def resync(self) -> None:
        """Re-add the block statistics (after a pass: no drift from repeated updates)."""
        self.total = self.stats.sum(axis=0)

    def elbo(self) -> float:
        """``L(q, theta)`` (plus ``ln p(theta)`` with priors), in the units of the data."""
        p = self.problem
        q = _g.expected_complete_loglik(*self.theta, self.current_moments())
        return float(q + self.entropy.sum() + p.shift + p.log_prior(self.theta))


def run(problem: _Problem, theta0: Params, n_blocks: int, *, tol: float,
        max_iter: int) -> EMResult:
    """Incremental EM for :func:`emtutor.gmm.fit`; an iteration is one pass over the data.

    Pass 1 is the batch E-step at ``theta0`` and an M-step; each later pass takes, for
    every block in turn, a partial E-step and an M-step. The trace holds, per pass, the
    parameters, ``ln p(X | theta)`` (one evaluation per pass for the record) and the bound
    ``L(q, theta)``, which incremental EM never lowers; the stopping rule
    :func:`emtutor.em.has_converged` is applied to the bound.
    """
    engine = _Incremental(problem, theta0, n_blocks)
    thetas = [theta0]
    lls = [problem.log_likelihood(theta0)]
    bounds: list[float] = []
    converged = False
    n_iter = 0
    for i in range(1, max_iter + 1):
        if i == 1:
            engine.m_step()
        else:
            for b in range(len(engine.blocks)):
                engine.e_step(b)
                engine.m_step()
            engine.resync()
        bounds.append(engine.elbo())
        thetas.append(engine.theta)
        lls.append(problem.log_likelihood(engine.theta))
        n_iter = i
        previous = lls[0] if i == 1 else bounds[-2]
        if has_converged(previous, bounds[-1], tol=tol, iteration=i):
            converged = True
            break
    problem.log_likelihood(engine.theta)  # leave the final E-step cached for the caller
    return EMResult(
        theta=engine.theta,
        thetas=thetas,
        log_likelihood=np.asarray(lls),
        elbo=np.asarray(bounds),
        n_iter=n_iter,
        converged=converged,
        decreases=find_decreases(bounds),
    )


class PartialStep(NamedTuple):
    """One step of :func:`partial_steps`.

    Attributes
    ----------
    n_pass : int
        Pass over the data, from 1 (pass 1 is the batch E-step at the initial parameters).
    block : int or None
        The block whose ``q`` the E-step updated (``None``: all of them, in pass 1).
    step : str
        ``"E"`` (``q`` of one block changed) or ``"M"`` (``theta`` changed).
    params : emtutor.gmm.Params
        ``theta`` after the step, in the units of the data.
    elbo : float
        ``L(q, theta)`` after the step, from the running statistics and entropies.
    q : numpy.ndarray, shape (N, K)
        The current ``q`` of every point: a read-only view, valid until the next step.
    """

    n_pass: int
    block: int | None
    step: str
    params: Params
    elbo: float
    q: np.ndarray


def partial_steps(
    X: ArrayLike,
    init: Params,
    n_blocks: int,
    n_passes: int,
    *,
    reg_covar: float = 0.0,
) -> Iterator[PartialStep]:
    """Incremental EM one partial step at a time (Neal and Hinton, 1998).

    Pass 1 computes ``q`` for all the data at ``init`` (a batch E-step) and takes an
    M-step. Each further pass visits the ``n_blocks`` contiguous blocks in order; for block
    ``b`` it sets ``q_b`` to the posterior at the current ``theta`` (partial E-step: the
    statistics change by ``S_b' - S_b``) and then maximises ``L`` over ``theta`` (M-step).

    Parameters
    ----------
    X : array_like, shape (N, D)
    init : emtutor.gmm.Params
        Starting parameters; the covariance type is read off their shape.
    n_blocks : int
        ``B``, ``1 <= B <= N``; ``B = 1`` is batch EM.
    n_passes : int
        Number of passes, ``>= 1``.
    reg_covar : float
        As in :func:`emtutor.gmm.fit`; the default 0 makes every M-step the exact maximiser
        of ``L``, so that ``L`` never decreases.

    Yields
    ------
    PartialStep
        After the E-step of pass 1 (``block=None``) and after every partial E-step and
        every M-step.

    Examples
    --------
    >>> import numpy as np
    >>> from emtutor import gmm
    >>> truth = gmm.Params([0.5, 0.5], [[-2.0], [2.0]], [1.0, 1.0])
    >>> X, _ = gmm.sample(truth, 400, random_state=0)
    >>> init = gmm.Params([0.5, 0.5], [[-1.0], [1.0]], [2.0, 2.0])
    >>> steps = list(partial_steps(X, init, n_blocks=4, n_passes=3))
    >>> print(len(steps), steps[-1].n_pass, steps[-1].block, steps[-1].step)
    18 3 3 M
    >>> bounds = np.array([s.elbo for s in steps])
    >>> print(bool(np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))))
    True
    """
    X = as_float_array(X, "X", ndim=2)
    init = check_params(init, X.shape[1])
    n_blocks = check_int(n_blocks, "n_blocks", low=1, high=X.shape[0])
    n_passes = check_int(n_passes, "n_passes", low=1)
    reg_covar = _check_reg_covar(reg_covar)
    problem = _Problem(X, covariance_type_of(init), reg_covar)
    engine = _Incremental(problem, problem.to_scaled(init), n_blocks)
    q = engine.resp.T
    q.flags.writeable = False

    def report(n_pass, block, step):
        bound = engine.elbo()
        return PartialStep(n_pass, block, step, problem.to_original(engine.theta), bound, q)

    yield report(1, None, "E")
    engine.m_step()
    yield report(1, None, "M")
    for n_pass in range(2, n_passes + 1):
        for b in range(n_blocks):
            engine.e_step(b)
            yield report(n_pass, b, "E")
            engine.m_step()
            yield report(n_pass, b, "M")
        engine.resync()


# ------------------------------------------------------------------------ online EM


def step_size(t: ArrayLike, alpha: float = 0.6, t0: float = 1.0) -> np.ndarray:
    """Step sizes ``gamma_t = (t + t0)^(-alpha)`` of online EM (Cappé and Moulines, 2009).

    ``alpha`` in (0.5, 1] makes ``sum gamma_t`` diverge and ``sum gamma_t^2`` converge, the
    conditions of stochastic approximation.

    Examples
    --------
    >>> print(step_size([1, 2, 100], alpha=1.0, t0=0.0).round(3))
    [1.   0.5  0.01]
    """
    alpha = check_real(alpha, "alpha", low=0.5, strict=True)
    if alpha > 1.0:
        raise ValueError(f"alpha must be in (0.5, 1], got {alpha:g}")
    t0 = check_real(t0, "t0", low=0.0)
    return (np.asarray(t, dtype=float) + t0) ** -alpha


def _statistics_of_params(theta: Params) -> np.ndarray:
    """Expected sufficient statistics per point under the model: ``E[1{z=k} T(x)]``."""
    w, mu, cov = theta
    d = mu.shape[1]
    if cov.ndim == 3:
        iu, ju = np.triu_indices(d)
        quad = (cov + mu[:, :, None] * mu[:, None, :])[:, iu, ju]
    elif cov.ndim == 2:
        quad = cov + mu**2
    else:
        quad = (d * cov + np.einsum("kd,kd->k", mu, mu))[:, None]
    return w[:, None] * np.concatenate([np.ones((len(w), 1)), mu, quad], axis=1)


class OnlineGMM:
    """Online (stepwise) EM for a Gaussian mixture (Cappé and Moulines, 2009).

    The estimator keeps ``s``, the running expected sufficient statistics per point, starting
    from those of the initial parameters. Each call of :meth:`partial_fit` takes one
    mini-batch: an E-step at the current parameters gives the batch's statistics per point
    ``s_batch``, then ``s <- (1 - gamma_t) s + gamma_t s_batch`` with
    ``gamma_t = (t + t0)^(-alpha)`` (:func:`step_size`) and the M-step of the batch fit maps
    ``s`` to the new parameters. Nothing of the stream is kept.

    Parameters
    ----------
    init : emtutor.gmm.Params
        Starting parameters (the covariance type is read off their shape).
    alpha : float
        Exponent in (0.5, 1]; smaller forgets the past faster.
    t0 : float
        Offset ``>= 0`` of the step sizes; ``t0 = 0`` makes the first step 1, which
        forgets ``init`` except through the first E-step.
    reg_covar : float
        As in :func:`emtutor.gmm.fit`.

    Attributes
    ----------
    params : emtutor.gmm.Params
        The current parameters, in the units of the data.
    n_updates : int
        Number of mini-batches seen, ``t``.
    n_seen : int
        Number of points seen.
    batch_log_likelihood : float or None
        ``ln p(X_batch | theta)`` of the last mini-batch at the parameters before its
        update (a held-out score of the stream, point by point), ``None`` before the first.

    Notes
    -----
    The statistics are held in units fixed by the first mini-batch (its mean and a power
    of two above its spread), as :func:`emtutor.gmm.fit` scales its data.

    Examples
    --------
    >>> import numpy as np
    >>> from emtutor import gmm
    >>> truth = gmm.Params([0.3, 0.7], [[-2.0], [2.0]], [1.0, 0.5])
    >>> init = gmm.Params([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0])
    >>> online = OnlineGMM(init, alpha=0.6)
    >>> rng = np.random.default_rng(0)
    >>> for t in range(200):
    ...     batch, _ = gmm.sample(truth, 100, random_state=rng)
    ...     online = online.partial_fit(batch)
    >>> print(online.n_updates, online.params.weights.round(2))
    200 [0.3 0.7]
    """

    def __init__(self, init: Params, *, alpha: float = 0.6, t0: float = 1.0,
                 reg_covar: float = 1e-6):
        self._init = check_params(init)
        step_size(1, alpha, t0)  # validates alpha and t0
        self.alpha = float(alpha)
        self.t0 = float(t0)
        self.reg_covar = _check_reg_covar(reg_covar)
        self.covariance_type = _check_covariance_type(covariance_type_of(self._init))
        self.n_updates = 0
        self.n_seen = 0
        self.batch_log_likelihood = None
        self._problem = None  # fixes the units at the first mini-batch
        self._theta = None
        self._stats = None
        self._warned = False

    @property
    def params(self) -> Params:
        """The current parameters, in the units of the data."""
        if self._problem is None:
            return self._init
        return self._problem.to_original(self._theta)

    def partial_fit(self, X_batch: ArrayLike) -> OnlineGMM:
        """One step of online EM on a mini-batch; returns ``self``.

        Raises
        ------
        ValueError
            If ``X_batch`` is not a finite 2-D array with as many columns as the means.
        """
        X = as_float_array(X_batch, "X_batch", ndim=2)
        d = self._init.means.shape[1]
        if X.shape[1] != d:
            raise ValueError(f"X_batch has {X.shape[1]} columns but the means have {d}")
        if self._problem is None:
            self._problem = _Problem(X, self.covariance_type, self.reg_covar)
            self._theta = self._problem.to_scaled(self._init)
            self._stats = _statistics_of_params(self._theta)
        p = self._problem
        stats, ll, _ = _chunk_statistics((X - p.centre) / p.scale, None, self._theta,
                                         self.covariance_type)
        n = X.shape[0]
        self.batch_log_likelihood = float(ll - n * d * p.log_scale)
        self.n_updates += 1
        self.n_seen += n
        gamma = float(step_size(self.n_updates, self.alpha, self.t0))
        self._stats = (1.0 - gamma) * self._stats + gamma * (stats / n)
        m, cancels = _moments(self._stats, d, self.covariance_type, p.reg)
        if cancels.any() and not self._warned:
            self._warned = True
            warnings.warn(
                f"component(s) {np.flatnonzero(cancels).tolist()} are so narrow compared "
                "with their distance from the centre of the first mini-batch that their "
                "one-pass scatter may carry fewer digits than the batch fit's (relative "
                "error above 1e-10)",
                UserWarning,
                stacklevel=2,
            )
        when = f"at online update {self.n_updates}"
        self._theta = p.maximise(m, self._theta, when, when)
        return self
