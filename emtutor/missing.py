"""A multivariate normal fitted by EM to data with missing entries (NaN marks one).

The missing entries are the latent variables. For a row ``x`` with observed entries ``o``
and missing entries ``m``, under ``N(mu, Sigma)``:

* its likelihood is the marginal density of the observed entries, ``N(x_o | mu_o, S_oo)``,
  so :func:`observed_log_likelihood` is ``sum_n ln N(x_{n,o} | mu_o, Sigma_oo)``;
* the posterior of the missing entries is normal (the E-step),

      x_m | x_o ~ N(mu_m + B (x_o - mu_o), C),   B = Sigma_mo Sigma_oo^{-1},
      C = Sigma_mm - B Sigma_om,

  and :func:`e_step` returns the expected sufficient statistics ``sum_n E[x_n]`` and
  ``sum_n E[x_n x_n^T]`` (the conditional covariance ``C`` added on the missing block);
* :func:`m_step` turns them into the mean and the (biased) covariance, exactly as for
  complete data.

Rows are grouped by their pattern of missing entries and the patterns batched by size, so
each iteration does one batched factorisation per number of observed entries, not one per
row or per pattern. :func:`fit` runs
:func:`emtutor.em.run` on these steps, with the bound ``L(q, theta) = Q(theta, theta_old)
+ H(q)``, where ``H(q)`` is the entropy of the conditional normals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import cho_factor, cho_solve

from emtutor._validation import as_float_array, check_max_iter, check_tol
from emtutor.em import EMResult, run

__all__ = [
    "MissingResult",
    "Stats",
    "e_step",
    "expected_complete_loglik",
    "fit",
    "m_step",
    "observed_log_likelihood",
]

_LOG_2PI = math.log(2.0 * math.pi)


class Stats(NamedTuple):
    """Expected sufficient statistics of a normal model under the E-step's posterior.

    Attributes
    ----------
    n : int
        Number of rows ``N``.
    sum_x : numpy.ndarray, shape (D,)
        ``sum_n E[x_n]``.
    sum_xx : numpy.ndarray, shape (D, D)
        ``sum_n E[x_n x_n^T]``, the conditional covariance included.
    expected : numpy.ndarray, shape (N, D)
        ``E[x_n]``: the observed entries, and the conditional means of the missing ones.
    entropy : float
        ``H(q) = sum_n`` entropy of the conditional normal of row ``n``'s missing entries
        (0 for a complete row).
    """

    n: int
    sum_x: np.ndarray
    sum_xx: np.ndarray
    expected: np.ndarray
    entropy: float


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class MissingResult(EMResult):
    """Result of :func:`fit`: an :class:`emtutor.em.EMResult` plus the fitted normal.

    Attributes
    ----------
    mean : numpy.ndarray, shape (D,)
        The final mean (``theta[0]``).
    covariance : numpy.ndarray, shape (D, D)
        The final covariance (``theta[1]``).
    expected : numpy.ndarray, shape (N, D)
        ``X`` with each missing entry replaced by its conditional expectation at the final
        parameters: the best imputation under the model (not a draw from it).

    Notes
    -----
    ``log_likelihood[i]`` is the observed-data ``ln p(X_obs | theta_i)`` (entry 0 at the
    start), and ``elbo[i] = L(q_i, theta_{i+1})``.
    """

    mean: np.ndarray
    covariance: np.ndarray
    expected: np.ndarray


# ----------------------------------------------------------------------------- validation


def _check_X(X: ArrayLike, *, need_covariance: bool = True) -> np.ndarray:
    """A 2-D float array with NaN for missing entries; no inf and no empty row.

    For fitting (``need_covariance``) every column needs at least two observed entries;
    evaluating at given parameters accepts a column with none (a single new row, say).
    """
    arr = as_float_array(X, "X", ndim=2, allow_nan=True, allow_inf=True)
    if np.isinf(arr).any():
        i, j = (int(v) for v in np.argwhere(np.isinf(arr))[0])
        raise ValueError(
            f"X[{i}, {j}] is {arr[i, j]}: infinite values are not missing entries (use NaN "
            "for those)"
        )
    observed = ~np.isnan(arr)
    empty_rows = np.flatnonzero(~observed.any(axis=1))
    if empty_rows.size:
        raise ValueError(
            f"row {int(empty_rows[0])} of X has every entry missing ({empty_rows.size} such "
            "row(s)); it carries no information: drop it"
        )
    if not need_covariance:  # evaluation at given parameters: any column may be unobserved
        return arr
    counts = observed.sum(axis=0)
    if (counts == 0).any():
        j = int(np.argmax(counts == 0))
        raise ValueError(f"column {j} of X has every entry missing; drop the column")
    if (counts < 2).any():
        j = int(np.argmax(counts < 2))
        raise ValueError(
            f"column {j} of X has only {int(counts[j])} observed entry; a variance needs at "
            "least 2"
        )
    return arr


def _check_params(mean, cov, d: int) -> tuple[np.ndarray, np.ndarray]:
    mean = as_float_array(mean, "mean", ndim=1)
    cov = as_float_array(cov, "cov", ndim=2)
    if mean.shape != (d,):
        raise ValueError(f"mean must have shape ({d},) for X with {d} columns, got {mean.shape}")
    if cov.shape != (d, d):
        raise ValueError(f"cov must have shape ({d}, {d}), got {cov.shape}")
    if np.abs(cov - cov.T).max() > 1e-10 * max(1.0, np.abs(cov).max()):
        raise ValueError("cov must be symmetric")
    eig = np.linalg.eigvalsh(cov)
    if not eig[0] > d * np.finfo(float).eps * abs(eig[-1]):
        raise ValueError(
            f"cov is not positive definite (eigenvalues from {eig[0]:.3g} to {eig[-1]:.3g})"
        )
    return mean, 0.5 * (cov + cov.T)


# ------------------------------------------------------------------ rows grouped by pattern


class _Patterns:
    """The rows of X grouped by pattern, and the patterns batched by their size.

    Patterns with the same number of observed entries form one batch: their blocks
    ``Sigma_oo`` are gathered into one (G, |o|, |o|) array and factorised in one call, and
    each row uses its own pattern's factor, so the work per iteration is a few vectorised
    operations per batch (at most D batches), not a Python loop over patterns.
    """

    def __init__(self, X: np.ndarray):
        n, d = X.shape
        observed = ~np.isnan(X)
        patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        self.X = X
        self.batches = []
        sizes = patterns.sum(axis=1)
        for size in np.unique(sizes):
            members = np.flatnonzero(sizes == size)  # patterns with `size` observed entries
            rows = np.flatnonzero(np.isin(inverse, members))
            which = np.searchsorted(members, inverse[rows])  # each row's pattern in the batch
            order = np.argsort(~patterns[members], axis=1, kind="stable")
            o_idx, m_idx = order[:, :size], order[:, size:]  # (G, |o|), (G, |m|)
            xo = X[rows[:, None], o_idx[which]]  # (R, |o|)
            counts = np.bincount(which, minlength=len(members)).astype(float)
            self.batches.append((rows, which, o_idx, m_idx, xo, counts))


def _blocks(cov: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``cov[a_g, b_g]`` for each pattern g: shape (G, |a|, |b|)."""
    return cov[a[:, :, None], b[:, None, :]]


def _per_row(mats: np.ndarray, which: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """``mats[which[r]] @ vecs[r]`` for every row r; one matrix product when G = 1."""
    if len(mats) == 1:
        return vecs @ mats[0].T
    return np.einsum("rij,rj->ri", mats[which], vecs)


def _batch_terms(batch, mean: np.ndarray, cov: np.ndarray, conditional: bool = True):
    """One batch of patterns under ``N(mean, cov)``: what the E-step needs of each row.

    Returns ``log_dens`` (R,), the marginal log density ``ln N(x_o | mu_o, Sigma_oo)`` of
    each row's observed entries, and, if ``conditional`` and entries are missing, the
    conditional means ``mu_m + B (x_o - mu_o)`` (R, |m|), the conditional covariances
    ``C = Sigma_mm - Sigma_mo Sigma_oo^{-1} Sigma_om`` (G, |m|, |m|) and their entropies
    (G,) per pattern (else three ``None``). One batched Cholesky factorisation
    ``Sigma_oo = L L^T`` serves all of them: with ``A = L^{-1} Sigma_om``,
    ``B = (L^{-T} A)^T`` and ``C = Sigma_mm - A^T A``.
    """
    _, which, o_idx, m_idx, xo, _ = batch
    chol = np.linalg.cholesky(_blocks(cov, o_idx, o_idx))  # (G, |o|, |o|)
    inv = np.linalg.inv(chol)  # L^{-1}; |o| <= D is small
    diff = xo - mean[o_idx][which]
    white = _per_row(inv, which, diff)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    size = o_idx.shape[1]
    log_dens = -0.5 * (np.einsum("ri,ri->r", white, white) + log_det[which] + size * _LOG_2PI)
    if not conditional or m_idx.shape[1] == 0:
        return log_dens, None, None, None
    a = inv @ _blocks(cov, o_idx, m_idx)  # (G, |o|, |m|)
    b = (inv.transpose(0, 2, 1) @ a).transpose(0, 2, 1)  # Sigma_mo Sigma_oo^{-1}
    cond_mean = mean[m_idx][which] + _per_row(b, which, diff)
    c = _blocks(cov, m_idx, m_idx) - a.transpose(0, 2, 1) @ a
    c = 0.5 * (c + c.transpose(0, 2, 1))
    entropy = 0.5 * (np.linalg.slogdet(c)[1] + m_idx.shape[1] * (1.0 + _LOG_2PI))
    return log_dens, cond_mean, c, entropy


def _log_lik(pat: _Patterns, mean: np.ndarray, cov: np.ndarray) -> float:
    return float(sum(_batch_terms(b, mean, cov, conditional=False)[0].sum() for b in pat.batches))


def _e_step(pat: _Patterns, mean: np.ndarray, cov: np.ndarray) -> Stats:
    n, d = pat.X.shape
    expected = pat.X.copy()
    extra = np.zeros((d, d))  # sum over rows of the conditional covariances
    entropy = 0.0
    for batch in pat.batches:
        rows, which, _, m_idx, _, counts = batch
        if m_idx.shape[1] == 0:
            continue
        _, cond_mean, c, h = _batch_terms(batch, mean, cov)
        expected[rows[:, None], m_idx[which]] = cond_mean
        np.add.at(extra, (m_idx[:, :, None], m_idx[:, None, :]), counts[:, None, None] * c)
        entropy += float(counts @ h)
    sum_x = expected.sum(axis=0)
    sum_xx = expected.T @ expected + extra
    return Stats(n, sum_x, sum_xx, expected, float(entropy))


def _q(stats: Stats, mean: np.ndarray, cov: np.ndarray) -> float:
    """``Q(theta) = sum_n E_q[ln N(x_n | mean, cov)]`` from the expected statistics."""
    d = len(mean)
    scatter = stats.sum_xx - np.outer(stats.sum_x, mean) - np.outer(mean, stats.sum_x)
    scatter += stats.n * np.outer(mean, mean)
    factor = cho_factor(cov, lower=True)
    log_det = 2.0 * np.log(np.diagonal(factor[0])).sum()
    trace = float(np.trace(cho_solve(factor, scatter)))
    return float(-0.5 * (stats.n * (d * _LOG_2PI + log_det) + trace))


# --------------------------------------------------------------------- the functional core


def observed_log_likelihood(X: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> float:
    """Observed-data log-likelihood ``sum_n ln N(x_{n,o} | mu_o, Sigma_oo)``.

    Each row contributes the marginal density of its observed entries (its own ``o``);
    the missing entries are integrated out.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, NaN for a missing entry; no row entirely missing.
    mean : array_like, shape (D,)
    cov : array_like, shape (D, D)
        Symmetric positive definite.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If X has inf, a row or column entirely missing, or the parameters have the wrong
        shape or are not a valid covariance.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm, multivariate_normal
    >>> X = np.array([[0.5, 1.0], [np.nan, -1.0], [2.0, np.nan]])
    >>> mean, cov = np.zeros(2), np.array([[1.0, 0.5], [0.5, 2.0]])
    >>> ll = observed_log_likelihood(X, mean, cov)
    >>> want = (multivariate_normal(mean, cov).logpdf(X[0]) + norm(0, np.sqrt(2)).logpdf(-1)
    ...         + norm(0, 1).logpdf(2.0))
    >>> print(round(ll, 10) == round(float(want), 10))
    True
    """
    X = _check_X(X, need_covariance=False)
    mean, cov = _check_params(mean, cov, X.shape[1])
    return _log_lik(_Patterns(X), mean, cov)


def e_step(X: ArrayLike, mean: ArrayLike, cov: ArrayLike) -> Stats:
    """E-step: the expected sufficient statistics under ``p(x_m | x_o, theta)`` for each row.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, NaN for a missing entry.
    mean : array_like, shape (D,)
    cov : array_like, shape (D, D)

    Returns
    -------
    Stats
        ``n``, ``sum_x = sum_n E[x_n]``, ``sum_xx = sum_n E[x_n x_n^T]``, the filled-in
        rows ``expected`` and the entropy ``H(q)`` of the posterior.

    Examples
    --------
    With ``x_2`` missing and a correlation of 0.5, its conditional mean is ``0.5 x_1``:

    >>> import numpy as np
    >>> s = e_step([[2.0, np.nan], [0.0, 1.0]], np.zeros(2), np.array([[1.0, 0.5], [0.5, 1.0]]))
    >>> print(s.expected)
    [[2. 1.]
     [0. 1.]]
    >>> print(s.sum_xx.round(2))  # E[x_2^2] of row 0 = 1^2 + (1 - 0.25)
    [[4.   2.  ]
     [2.   2.75]]
    """
    X = _check_X(X, need_covariance=False)
    mean, cov = _check_params(mean, cov, X.shape[1])
    return _e_step(_Patterns(X), mean, cov)


def m_step(stats: Stats) -> tuple[np.ndarray, np.ndarray]:
    """M-step: ``mean = sum_x / N`` and ``cov = sum_xx / N - mean mean^T``.

    The maximiser of ``Q(theta, theta_old)``, the same formulas as for complete data with
    the expected statistics in place of the observed ones.

    Parameters
    ----------
    stats : Stats
        From :func:`e_step`.

    Returns
    -------
    mean : numpy.ndarray, shape (D,)
    cov : numpy.ndarray, shape (D, D)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 2.0], [3.0, 0.0]])
    >>> mean, cov = m_step(e_step(X, np.zeros(2), np.eye(2)))  # no entry missing
    >>> print(mean, cov.tolist())
    [2. 1.] [[1.0, -1.0], [-1.0, 1.0]]
    """
    if not isinstance(stats, Stats):
        raise TypeError(f"stats must be the Stats of e_step, got {type(stats).__name__}")
    mean = stats.sum_x / stats.n
    cov = stats.sum_xx / stats.n - np.outer(mean, mean)
    return mean, 0.5 * (cov + cov.T)


def expected_complete_loglik(stats: Stats, mean: ArrayLike, cov: ArrayLike) -> float:
    """``Q(theta, theta_old) = sum_n E_q[ln N(x_n | mean, cov)]`` for the ``q`` of ``stats``.

    With ``stats`` from :func:`e_step` at ``theta_old``, ``Q + stats.entropy`` is the
    bound ``L(q, theta)``, equal to :func:`observed_log_likelihood` at ``theta_old``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.5, np.nan], [1.0, 2.0], [np.nan, -1.0]])
    >>> mean, cov = np.array([0.5, 0.5]), np.array([[1.0, 0.3], [0.3, 2.0]])
    >>> s = e_step(X, mean, cov)
    >>> bound = expected_complete_loglik(s, mean, cov) + s.entropy
    >>> print(round(bound, 10) == round(observed_log_likelihood(X, mean, cov), 10))
    True
    """
    if not isinstance(stats, Stats):
        raise TypeError(f"stats must be the Stats of e_step, got {type(stats).__name__}")
    mean, cov = _check_params(mean, cov, len(stats.sum_x))
    return _q(stats, mean, cov)


def fit(
    X: ArrayLike,
    *,
    max_iter: int = 1000,
    tol: float = 1e-10,
    init: tuple[ArrayLike, ArrayLike] | None = None,
) -> MissingResult:
    """Maximum-likelihood mean and covariance of data with missing entries, by EM.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, NaN for a missing entry (any pattern); no row or column entirely missing,
        and at least two observed entries per column.
    max_iter : int
        Maximum number of iterations, ``>= 0``.
    tol : float
        Tolerance ``>= 0`` of :func:`emtutor.em.has_converged` (``0``: run ``max_iter``).
    init : (mean, cov), optional
        Starting parameters; default the observed mean and variance of each column, with
        no correlation.

    Returns
    -------
    MissingResult
        ``mean``, ``covariance``, ``expected`` (the imputation), ``log_likelihood`` (the
        observed-data ln p at every iterate), ``elbo``, ``n_iter``, ``converged``.

    Raises
    ------
    ValueError
        For the bad inputs listed under ``X``, or invalid ``init``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.multivariate_normal([0.0, 1.0], [[1.0, 0.8], [0.8, 1.0]], size=500)
    >>> X[rng.random(500) < 0.3, 1] = np.nan           # 30 % of the second column missing
    >>> res = fit(X)
    >>> print(res.converged, res.mean.round(1), res.covariance.round(1).tolist())
    True [0. 1.] [[1.0, 0.8], [0.8, 1.0]]
    >>> res.check_sandwich()
    """
    X = _check_X(X)
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    n, d = X.shape
    if init is None:
        mean = np.nanmean(X, axis=0)
        cov = np.diag(np.nanvar(X, axis=0))
        if not (np.diag(cov) > 0).all():
            j = int(np.argmin(np.diag(cov)))
            raise ValueError(f"column {j} of X is constant where observed; drop it")
    else:
        if not isinstance(init, tuple) or len(init) != 2:
            raise TypeError("init must be a pair (mean, cov)")
        mean, cov = _check_params(*init, d)
    pat = _Patterns(X)

    def step_e(theta):
        return _e_step(pat, *theta)

    def step_m(stats: Stats):
        mean, cov = m_step(stats)
        eig = np.linalg.eigvalsh(cov)
        if not eig[0] > d * np.finfo(float).eps * abs(eig[-1]):
            raise ValueError(
                "the covariance became singular (a column is a linear function of others "
                "where observed); drop the redundant column"
            )
        return mean, cov

    def bound(stats: Stats, theta) -> float:
        return _q(stats, *theta) + stats.entropy

    trace = run(
        (mean, cov), step_e, step_m, lambda theta: _log_lik(pat, *theta),
        elbo=bound, tol=tol, max_iter=max_iter,
    )
    mean, cov = trace.theta
    return MissingResult(
        theta=trace.theta, thetas=trace.thetas, log_likelihood=trace.log_likelihood,
        elbo=trace.elbo, n_iter=trace.n_iter, converged=trace.converged,
        decreases=trace.decreases, mean=mean, covariance=cov,
        expected=_e_step(pat, mean, cov).expected,
    )
