"""Hidden Markov models: forward-backward, Viterbi, Baum-Welch (EM) and the ELBO over paths.

A hidden Markov model (HMM) with ``K`` states has parameters ``theta = (pi, A, emission)``:
the start distribution ``pi`` (``startprob``), the transition matrix ``A`` (``transmat``,
rows sum to 1) and an emission distribution per state, either

* *categorical*: ``emissionprob[k, m] = p(x_t = m | z_t = k)`` for integer symbols
  ``x_t in {0, ..., M - 1}``, or
* *Gaussian*: ``x_t | z_t = k ~ N(means[k], Sigma_k)`` with ``Sigma_k`` diagonal (the
  ``covariances`` are then the ``(K, D)`` variances) or full (``(K, D, D)`` matrices).

:class:`Params` holds them. The functional core works on log arrays and one sequence:

* :func:`log_emission` gives the ``(T, K)`` array ``ln p(x_t | z_t = k)``;
* :func:`forward_backward` is the E-step: posterior marginals ``gamma``, expected transition
  counts ``xi_sum`` and ``ln p(V | theta)``, exact for sequences of any length (scaled
  recursions). With numba installed it runs as one compiled loop over every sequence
  (``emtutor._compiled``; ``EMTUTOR_COMPILED=0`` switches it off), which hands over to the
  numpy paths below in the rare cases where scaled vectors cannot represent the posterior.
  The numpy paths are the reference, chosen by size (``emtutor._forward_backward`` says
  which runs when): two banded triangular solves for one short sequence (homework sizes), a
  blocked scheme of prefix products for long chains with few states, the plain
  recursion (one product per time step, both directions at once) for many states or
  many short sequences, and per-step normalised and log-space fallbacks for the extreme
  cases;
* :func:`m_step` is the closed-form M-step from those expected counts;
* :func:`viterbi` gives the most probable path (compiled with numba; otherwise a max-plus
  scan for one short sequence, the blocked max-plus scheme for long ones, one step at a
  time across many sequences);
* :func:`chain_posterior`, :func:`posterior_entropy`, :func:`expected_complete_loglik`,
  :func:`elbo`, :func:`kl_to_posterior` and :func:`decompose` write the course's identities
  ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))`` (equation :eq:`eq-elbo-kl`) and
  ``L(q, theta) = Q(theta, theta_old) + H(q)`` (equation :eq:`eq-bound-after-estep`) for a
  distribution ``q`` over whole paths that is a Markov chain, described by its one- and
  two-slice marginals ``(gamma, xi)``. The KL is computed in log space, so it stays finite
  where the posterior's probabilities underflow.

On top sit :func:`fit` (Baum-Welch run by the package's driver :func:`emtutor.em.run`:
the parameter history, the log-likelihood trace, the ELBO after every M-step, its stopping
rule :func:`emtutor.em.has_converged` and any decrease of the log-likelihood recorded),
:func:`score`, :func:`predict`, :func:`predict_proba` and :func:`sample`. Several sequences
are passed as in hmmlearn: concatenated in ``X`` with their ``lengths``.

Arguments are checked with the shared functions of ``emtutor._validation``: a wrong type
(a float where an integer is needed, strings, complex numbers) raises ``TypeError``, a value
out of range ``ValueError``, each naming the argument.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg import solve_triangular

from emtutor import _compiled
from emtutor._forward_backward import (
    _IMPOSSIBLE,
    _buffer,
    log_marginals,
    posterior,
    posterior_batch,
    viterbi_batch,
    viterbi_long,
    viterbi_scan,
)
from emtutor._validation import (
    as_float_array,
    as_int_array,
    check_distribution,
    check_int,
    check_max_iter,
    check_random_state,
    check_real,
    check_tol,
)
from emtutor.bounds import Decomposition, _kl_log, entropy
from emtutor.em import EmptyComponentWarning, EMResult
from emtutor.em import run as _em_run

__all__ = [
    "ChainPosterior",
    "FitResult",
    "ForwardBackward",
    "Params",
    "Viterbi",
    "chain_posterior",
    "decompose",
    "elbo",
    "expected_complete_loglik",
    "fit",
    "forward_backward",
    "kl_to_posterior",
    "log_emission",
    "m_step",
    "posterior_entropy",
    "predict",
    "predict_proba",
    "sample",
    "score",
    "viterbi",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_TINY = np.finfo(float).tiny
# Below this many entries (K D T) the Gaussian emission and M-step work on all states in
# one (K, D, T) array; above, one state at a time keeps the work array small.
_SMALL_WORK = 1 << 16
_EMPTY = 10 * np.finfo(float).eps  # expected visits at or below this: the data say nothing
# One sequence of T steps takes the max-plus scan (viterbi_scan) while T K^2 log2 T is at
# most this (about T = 4000 for K = 3); beyond, the work of the scan outgrows the numpy
# calls it saves.
_VITERBI_SCAN_WORK = 400_000


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Params:
    """Parameters of an HMM with categorical or Gaussian emissions (validated, read-only).

    Give ``emissionprob`` for categorical emissions, or ``means`` and ``covariances`` for
    Gaussian ones. The covariance type follows from the shape of ``covariances``: ``(K, D)``
    holds the variances of a diagonal covariance (``"diag"``), ``(K, D, D)`` full matrices
    (``"full"``).

    Attributes
    ----------
    startprob : numpy.ndarray, shape (K,)
        ``pi_k = p(z_1 = k)``.
    transmat : numpy.ndarray, shape (K, K)
        ``A_ij = p(z_t = j | z_{t-1} = i)``; rows sum to 1, zeros allowed.
    emissionprob : numpy.ndarray, shape (K, M), or None
        ``B_km = p(x_t = m | z_t = k)`` (categorical emissions).
    means : numpy.ndarray, shape (K, D), or None
        Gaussian means.
    covariances : numpy.ndarray, shape (K, D) or (K, D, D), or None
        Gaussian variances (diagonal) or covariance matrices (full, positive definite).

    Raises
    ------
    ValueError
        If a probability is negative, a row does not sum to 1 (within ``1e-8``), shapes do
        not match, a variance is not positive, a covariance matrix is not symmetric positive
        definite, or the emission parameters are missing or mixed.

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    >>> print(p.n_states, p.emission, p.log_transmat.round(4))
    2 categorical [[-0.1054 -2.3026]
     [-1.6094 -0.2231]]
    >>> Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.2], [0.2, 0.8]],
    ...        emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    Traceback (most recent call last):
    ...
    ValueError: rows of transmat must sum to 1 (along axis -1); row 0 sums to 1.1, off by 0.1
    (the tolerance is 1e-08)
    """

    startprob: np.ndarray
    transmat: np.ndarray
    emissionprob: np.ndarray | None = None
    means: np.ndarray | None = None
    covariances: np.ndarray | None = None

    def __post_init__(self) -> None:
        pi = check_distribution(as_float_array(self.startprob, "startprob", ndim=1), "startprob")
        K = pi.size
        A = check_distribution(as_float_array(self.transmat, "transmat", ndim=2), "transmat")
        if A.shape != (K, K):
            raise ValueError(
                f"transmat must have shape ({K}, {K}) to match startprob, got {A.shape}"
            )
        object.__setattr__(self, "startprob", _readonly(pi))
        object.__setattr__(self, "transmat", _readonly(A))
        has_cat = self.emissionprob is not None
        has_gauss = self.means is not None or self.covariances is not None
        if has_cat == has_gauss:
            raise ValueError(
                "give either emissionprob (categorical emissions) or means and covariances "
                "(Gaussian emissions), not both and not neither"
            )
        if has_cat:
            B = as_float_array(self.emissionprob, "emissionprob", ndim=2)
            if B.shape[0] != K:
                raise ValueError(
                    f"emissionprob must have one row per state ({K}), got shape {B.shape}"
                )
            B = check_distribution(B, "emissionprob")
            object.__setattr__(self, "emissionprob", _readonly(B))
            return
        if self.means is None or self.covariances is None:
            raise ValueError("Gaussian emissions need both means and covariances")
        mu = as_float_array(self.means, "means", ndim=2)
        if mu.shape[0] != K:
            raise ValueError(f"means must have one row per state ({K}), got shape {mu.shape}")
        D = mu.shape[1]
        cov = as_float_array(self.covariances, "covariances", ndim=(2, 3))
        if cov.ndim == 2:
            if cov.shape != (K, D):
                raise ValueError(
                    f"diagonal covariances (variances) must have shape ({K}, {D}) to match "
                    f"means, got {cov.shape}"
                )
            if np.any(cov <= 0):
                k, d = (int(i) for i in np.argwhere(cov <= 0)[0])
                raise ValueError(
                    f"variances must be positive; covariances[{k}, {d}] = {cov[k, d]:.3g}"
                )
        else:
            if cov.shape != (K, D, D):
                raise ValueError(
                    f"full covariances must have shape ({K}, {D}, {D}) to match means, "
                    f"got {cov.shape}"
                )
            if not np.allclose(cov, np.swapaxes(cov, 1, 2), rtol=1e-10, atol=0):
                raise ValueError("covariance matrices must be symmetric")
            _cholesky(cov)
        object.__setattr__(self, "means", _readonly(mu))
        object.__setattr__(self, "covariances", _readonly(cov))

    @classmethod
    def _trusted(cls, startprob, transmat, emissionprob=None, means=None,
                 covariances=None) -> Params:
        """Parameters computed by the package itself (an M-step): no checks, no copies."""
        self = object.__new__(cls)
        for value in (startprob, transmat, emissionprob, means, covariances):
            if value is not None:
                value.setflags(write=False)
        self.__dict__.update(startprob=startprob, transmat=transmat, emissionprob=emissionprob,
                             means=means, covariances=covariances)
        return self

    @property
    def n_states(self) -> int:
        """Number of hidden states ``K``."""
        return int(self.startprob.size)

    @property
    def emission(self) -> str:
        """``"categorical"`` or ``"gaussian"``."""
        return "categorical" if self.emissionprob is not None else "gaussian"

    @property
    def covariance_type(self) -> str | None:
        """``"diag"`` or ``"full"`` for Gaussian emissions, ``None`` for categorical ones."""
        if self.covariances is None:
            return None
        return "diag" if self.covariances.ndim == 2 else "full"

    @property
    def log_startprob(self) -> np.ndarray:
        """``ln startprob`` (``-inf`` where the probability is 0)."""
        return _log(self.startprob)

    @property
    def log_transmat(self) -> np.ndarray:
        """``ln transmat`` (``-inf`` where the probability is 0)."""
        return _log(self.transmat)


def _log(p: np.ndarray) -> np.ndarray:
    """Natural log with ``ln 0 = -inf`` and no warning."""
    out = np.full(np.shape(p), -np.inf)
    np.log(p, out=out, where=np.asarray(p) > 0)
    return out


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of matrices; ValueError naming a bad one."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        for k, c in enumerate(cov):
            try:
                np.linalg.cholesky(c)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"covariance matrix of state {k} is not positive definite"
                ) from None
        raise  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Data checks
# ---------------------------------------------------------------------------------------------


# An alphabet inferred from the data (``X.max() + 1`` symbols) larger than this many symbols
# per observation (and than _MIN_ALPHABET_CAP) is refused as almost surely a stray value.
_SYMBOLS_PER_OBS = 10
_MIN_ALPHABET_CAP = 1000


def _check_symbols(X, n_symbols: int | None = None) -> np.ndarray:
    """Categorical data: a 1-D array of whole numbers ``>= 0`` (below ``n_symbols`` if given)."""
    sym = as_int_array(X, "X", low=0)
    if sym.ndim != 1:
        hint = (" (for hmmlearn's layout of shape (T, 1) pass X.ravel())"
                if sym.ndim == 2 and sym.shape[1] == 1 else "")
        raise ValueError(
            f"categorical X must be a 1-D array of integer symbols, got shape {sym.shape}{hint}"
        )
    if n_symbols is not None:
        _check_alphabet(sym, n_symbols)
    return sym.astype(np.intp, copy=False)


def _check_alphabet(sym: np.ndarray, n_symbols: int) -> None:
    top = int(sym.max())
    if top >= n_symbols:
        i = int(np.argmax(sym >= n_symbols))
        raise ValueError(
            f"symbol {top} is outside the alphabet 0..{n_symbols - 1} of emissionprob "
            f"(shape (K, {n_symbols})); the first symbol outside it is X[{i}] = {int(sym[i])}"
        )


def _alphabet_size(X: np.ndarray, n_states: int, init, n_symbols: int | None) -> int:
    """Number of symbols ``M`` of a categorical fit: ``n_symbols``, else the number of columns
    of the ``emissionprob`` of ``init``, else ``X.max() + 1`` (refused if absurdly large)."""
    init_B = None
    if isinstance(init, Params):
        init_B = init.emissionprob
    elif isinstance(init, Mapping):
        init_B = init.get("emissionprob")
    shape = np.shape(init_B) if init_B is not None else ()
    M_init = int(shape[1]) if len(shape) == 2 else None
    top = int(X.max())
    if n_symbols is not None:
        if M_init is not None and M_init != n_symbols:
            raise ValueError(
                f"n_symbols = {n_symbols} but the emissionprob of init has {M_init} columns "
                f"(shape {shape}), one per symbol; they must agree (or omit n_symbols)"
            )
        if top >= n_symbols:
            i = int(np.argmax(X >= n_symbols))
            raise ValueError(
                f"n_symbols = {n_symbols} but X contains symbol {top} (first at X[{i}] = "
                f"{int(X[i])}); symbols must lie in 0..{n_symbols - 1}"
            )
        return n_symbols
    if M_init is not None:
        _check_alphabet(X, M_init)
        return M_init
    cap = max(_MIN_ALPHABET_CAP, _SYMBOLS_PER_OBS * X.size)
    if top + 1 > cap:
        i = int(np.argmax(X == top))
        raise ValueError(
            f"the largest symbol in X is {top} (at X[{i}]), so the alphabet inferred from the "
            f"data would have {top + 1} symbols (an emission matrix of {n_states} x "
            f"{top + 1}) for {X.size} observations; pass n_symbols if that alphabet is "
            "intended, or re-code the symbols as 0..M-1 (e.g. np.unique(X, "
            "return_inverse=True))"
        )
    return top + 1


def _check_features(X, n_features: int | None = None) -> np.ndarray:
    arr = as_float_array(X, "X")
    if arr.ndim != 2:
        raise ValueError(
            f"Gaussian X must be 2-D, shape (T, D), got shape {arr.shape} "
            "(use X[:, None] for one feature)"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"X has {arr.shape[1]} features but the means have {n_features}"
        )
    return arr


def _check_lengths(lengths, n_obs: int) -> np.ndarray:
    if lengths is None:
        return np.array([n_obs], dtype=np.intp)
    arr = as_int_array(lengths, "lengths", ndim=1, low=1).astype(np.intp, copy=False)
    if int(arr.sum()) != n_obs:
        raise ValueError(
            f"lengths sum to {int(arr.sum())} but X has {n_obs} observations; "
            "they must be equal"
        )
    return arr


def _check_data(X, params: Params) -> np.ndarray:
    if params.emission == "categorical":
        return _check_symbols(X, params.emissionprob.shape[1])
    return _check_features(X, params.means.shape[1])


def _check_params(params) -> Params:
    if not isinstance(params, Params):
        raise TypeError(f"params must be an emtutor.hmm.Params, got {type(params).__name__}")
    return params


# ---------------------------------------------------------------------------------------------
# Emissions
# ---------------------------------------------------------------------------------------------


def _gaussian_log_emission(XT: np.ndarray, means: np.ndarray, cov: np.ndarray,
                           ws: dict | None = None) -> np.ndarray:
    """``ln N(x_t | means[k], Sigma_k)`` as a state-major (K, T) array from ``XT = X.T``.

    One vectorised pass over the data per state (a loop over states, not data points).
    """
    D, T = XT.shape
    K = means.shape[0]
    out = _buffer(ws, "log_emission", (K, T))
    if cov.ndim == 2:
        const = -0.5 * (D * _LOG_2PI + np.log(cov).sum(axis=1))
    if cov.ndim == 2 and K * D * T <= _SMALL_WORK:  # all states in one pass: fewer calls
        z = XT[None, :, :] - means[:, :, None]
        z /= np.sqrt(cov)[:, :, None]
        z *= z
        z.sum(axis=1, out=out)
    elif cov.ndim == 2:
        z = _buffer(ws, "z", (D, T))
        for k in range(K):
            np.subtract(XT, means[k][:, None], out=z)
            z /= np.sqrt(cov[k])[:, None]
            z *= z
            np.sum(z, axis=0, out=out[k])
    else:
        chol = _cholesky(cov)
        const = -0.5 * D * _LOG_2PI - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        # z = L_k^{-1} (x - mu_k) for all states at once: one (K D, D) @ (D, T) product
        # with the inverse Cholesky factors (a D x D triangular solve per state)
        eye = np.eye(D)
        W = np.concatenate([solve_triangular(c, eye, lower=True, check_finite=False)
                            for c in chol])  # (K D, D)
        shift = np.einsum("kij,kj->ki", W.reshape(K, D, D), means).reshape(K * D, 1)
        step = max(1, (1 << 22) // (K * D))  # about 32 MB of work array at a time
        for lo in range(0, T, step):
            z = W @ XT[:, lo:lo + step]
            z -= shift
            z *= z
            np.sum(z.reshape(K, D, -1), axis=1, out=out[:, lo:lo + step])
    out *= -0.5
    out += const[:, None]
    return out


def _emission_factors(X: np.ndarray, params: Params, XT: np.ndarray | None = None,
                      ws: dict | None = None):
    """State-major emission factors ``E`` (K, T), largest entry of each step 1, the total
    of the log shifts ``sum_t ln max_k p(x_t | z_t = k)`` and a function returning the (K, T)
    log emissions (needed only by the log-space fallback). ``XT``: ``X.T`` as a contiguous
    array (Gaussian emissions), if already at hand."""
    if params.emission == "categorical":
        B = params.emissionprob
        col_max = B.max(axis=0)
        kept = None if ws is None else ws.get("symbol_counts")
        if kept is None:
            counts = np.bincount(X, minlength=B.shape[1])
            kept = (counts, np.flatnonzero(counts))  # the counts and the symbols seen
            if ws is not None:
                ws["symbol_counts"] = kept
        counts, seen = kept
        if not col_max[seen].all():
            m = int(seen[np.argmin(col_max[seen])])
            raise ValueError(f"symbol {m} occurs in X but has probability 0 in every state")
        # a symbol never seen may have probability 0 everywhere: any divisor will do
        safe = np.maximum(col_max, _TINY)
        # X has been checked to lie in 0..M-1, so mode="clip" never clips: it only spares
        # take the buffered copy of ``out`` that the default mode="raise" makes.
        E = np.take(B / safe, X, axis=1, out=_buffer(ws, "E", (B.shape[0], X.size)),
                    mode="clip")
        shift = float(np.log(safe) @ counts)  # sum_t ln s_t, grouped by symbol
        return E, shift, lambda: _log(B)[:, X]
    if XT is None:
        XT = np.ascontiguousarray(X.T)
    logE = _gaussian_log_emission(XT, params.means, params.covariances, ws)
    # the factors overwrite the log emissions; the log-space fallback recomputes them
    E, shift = _factors_from_log(logE, ws, in_place=ws is not None)
    if E is logE:
        return E, shift, lambda: _gaussian_log_emission(XT, params.means, params.covariances)
    return E, shift, lambda: logE


def _factors_from_log(logE: np.ndarray, ws: dict | None = None, in_place: bool = False):
    """Emission factors and total shift from a state-major (K, T) log emission array
    (written over ``logE`` itself if ``in_place``)."""
    m = logE.max(axis=0)
    if not m.min() > -np.inf:
        t = int(np.argmax(np.isneginf(m)))
        raise ValueError(
            f"log_emission row {t} is -inf for every state: observation {t} is impossible"
        )
    E = np.subtract(logE, m, out=logE if in_place else _buffer(ws, "E", logE.shape))
    np.exp(E, out=E)
    return E, float(m.sum())


def log_emission(X, params: Params) -> np.ndarray:
    """Log emission probabilities (or densities) ``ln p(x_t | z_t = k)``, shape (T, K).

    Parameters
    ----------
    X : array_like
        Categorical: 1-D integer symbols in ``0..M-1``. Gaussian: shape (T, D).
    params : Params

    Returns
    -------
    numpy.ndarray, shape (T, K)
        ``-inf`` where a categorical emission probability is 0.

    Raises
    ------
    ValueError
        If ``X`` does not fit the emission model (shape, NaN, symbols outside the alphabet).

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            means=[[0.0], [3.0]], covariances=[[1.0], [1.0]])
    >>> print(log_emission([[0.0], [3.0]], p).round(4))
    [[-0.9189 -5.4189]
     [-5.4189 -0.9189]]
    """
    params = _check_params(params)
    X = _check_data(X, params)
    if params.emission == "categorical":
        return _log(params.emissionprob).T[X]
    XT = np.ascontiguousarray(X.T)
    return _gaussian_log_emission(XT, params.means, params.covariances).T.copy()


# ---------------------------------------------------------------------------------------------
# Many sequences: grouping by length
# ---------------------------------------------------------------------------------------------


class _Layout:
    """How the sequences inside a concatenated ``X`` are batched for the recursions.

    Sequences of similar length form a group padded to the group's longest sequence
    (padding rows use emission factor 1, see ``emtutor._forward_backward``), so each time
    step is one vectorised operation across the group. Equal lengths need no copy at all.
    """

    def __init__(self, lengths: np.ndarray):
        self.cache: dict = {}  # arrays that depend only on the data, kept for a whole fit
        self.lengths = lengths
        self.n_obs = int(lengths.sum())
        self.groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if lengths.size == 1:  # one sequence
            self.starts = np.zeros(1, dtype=np.intp)
            self.uniform = True
            return
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
        self.uniform = bool(np.all(lengths == lengths[0]))
        if self.uniform:
            return
        order = np.argsort(-lengths, kind="stable")
        sorted_len = lengths[order]
        i = 0
        while i < order.size:
            top = sorted_len[i]
            j = i + int(np.sum(sorted_len[i:] >= 0.75 * top))
            seqs = order[i:j]
            glen = lengths[seqs]
            offs = np.arange(top)[None, :]
            valid = offs < glen[:, None]
            # index into the concatenated rows; padding points at an extra row (index n_obs)
            idx = np.where(valid, self.starts[seqs][:, None] + offs, self.n_obs)
            self.groups.append((glen, idx, valid))
            i = j

    def batches(self, E: np.ndarray):
        """Yield ``(E_group (K, N, T), lengths or None, idx, valid)`` for every group.

        ``E`` is state-major, (K, n_obs).
        """
        K = E.shape[0]
        if self.uniform:
            N, T = self.lengths.size, int(self.lengths[0])
            yield E.reshape(K, N, T), None, None, None
            return
        ext = np.concatenate([E, np.ones((K, 1))], axis=1)
        for glen, idx, valid in self.groups:
            yield ext[:, idx], glen, idx, valid


def _estep(E: np.ndarray, shift: float, startprob, transmat, layout: _Layout, log_source=None,
           ws: dict | None = None):
    """State-major posteriors (K, n_obs), expected transition counts and ``ln p(V)``.

    ``log_source()`` returns the (K, n_obs) log emissions, for the rare log-space fallback.
    ``ws`` is a workspace dict whose arrays are reused from one call to the next (the
    returned posteriors live in it).
    """
    K = startprob.size
    # numba installed: one compiled pass over every sequence
    found = _compiled.posterior_kernel(startprob, transmat, E, layout.starts, layout.lengths)
    if found is not None:
        return found[0], found[1], found[2] + shift
    gamma = None if layout.uniform else _buffer(ws, "gamma", (K, layout.n_obs))
    xi_sum = np.zeros((K, K))
    log_c = 0.0
    for group, (Eg, glen, idx, valid) in enumerate(layout.batches(E)):
        log_E = None
        if log_source is not None:
            def log_E(Eg=Eg, idx=idx):
                full = log_source()
                if idx is None:
                    return full.reshape(Eg.shape)
                return np.concatenate([full, np.zeros((K, 1))], axis=1)[:, idx]
        group_ws = None if ws is None else ws.setdefault(group, {})
        g, xi, lc = posterior(startprob, transmat, Eg, glen, log_E, ws=group_ws)
        xi_sum += xi
        log_c += float(lc.sum())
        if layout.uniform:
            gamma = g.reshape(K, -1)
        else:
            gamma[:, idx[valid]] = g[:, valid]
    return gamma, xi_sum, log_c + shift


# ---------------------------------------------------------------------------------------------
# E-step on log arrays
# ---------------------------------------------------------------------------------------------


class ForwardBackward(NamedTuple):
    """Output of :func:`forward_backward`.

    Attributes
    ----------
    gamma : numpy.ndarray, shape (T, K)
        ``gamma[t, k] = p(z_t = k | V, theta)``.
    xi_sum : numpy.ndarray, shape (K, K)
        ``sum_t p(z_{t-1} = i, z_t = j | V, theta)``, the expected transition counts.
    log_likelihood : float
        ``ln p(V | theta)``.
    """

    gamma: np.ndarray
    xi_sum: np.ndarray
    log_likelihood: float


def _check_log_model(log_startprob, log_transmat, log_emission):
    ls = as_float_array(log_startprob, "log_startprob", ndim=1, allow_neg_inf=True)
    lA = as_float_array(log_transmat, "log_transmat", ndim=2, allow_neg_inf=True)
    lE = as_float_array(log_emission, "log_emission", ndim=2, allow_neg_inf=True)
    K = ls.size
    if lA.shape != (K, K):
        raise ValueError(
            f"log_transmat must have shape ({K}, {K}) to match log_startprob, got {lA.shape}"
        )
    if lE.shape[1] != K:
        raise ValueError(
            f"log_emission must have one column per state ({K}), got shape {lE.shape}"
        )
    pi = check_distribution(np.exp(ls), "exp(log_startprob)")
    A = check_distribution(np.exp(lA), "exp(log_transmat)")
    return pi, A, ls, lA, lE


def forward_backward(
    log_startprob, log_transmat, log_emission, *, lengths=None
) -> ForwardBackward:
    """E-step of an HMM: posterior marginals, expected transition counts and ``ln p(V)``.

    The scaled forward and backward recursions run in probability space after the largest
    log emission of each step has been subtracted (and added back to the log-likelihood),
    so the result is exact for sequences of any length, emission log-likelihoods of any
    size and transition matrices with structural zeros. Long sequences use a blocked
    form of the recursions (see ``emtutor._forward_backward``); in the rare case where
    the scaled vectors cannot represent the posterior (absorbing states and contradicting
    evidence of hundreds of nats), the computation is redone in log space.

    Parameters
    ----------
    log_startprob : array_like, shape (K,)
        ``ln pi``; ``-inf`` allowed.
    log_transmat : array_like, shape (K, K)
        ``ln A``; ``-inf`` allowed (structural zeros). ``exp`` of each row must sum to 1.
    log_emission : array_like, shape (T, K)
        ``ln p(x_t | z_t = k)``, e.g. from :func:`log_emission`.
    lengths : array_like of int, optional
        Lengths of several sequences concatenated along the rows (as in hmmlearn); then
        ``xi_sum`` and ``log_likelihood`` are totals over the sequences.

    Returns
    -------
    ForwardBackward
        ``(gamma, xi_sum, log_likelihood)``.

    Raises
    ------
    ValueError
        If an input has NaN or the wrong shape, the probabilities are not distributions,
        ``lengths`` do not add up to ``T``, or the observations are impossible.

    Examples
    --------
    >>> import numpy as np
    >>> fb = forward_backward(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]]),
    ...                       np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]]))
    >>> print(fb.gamma.round(4))
    [[0.9357 0.0643]
     [0.9333 0.0667]
     [0.7051 0.2949]]
    >>> print(fb.xi_sum.round(4), f"{fb.log_likelihood:.6f}")
    [[1.6046 0.2644]
     [0.0338 0.0971]] -2.433263
    """
    pi, A, _, _, lE = _check_log_model(log_startprob, log_transmat, log_emission)
    layout = _Layout(_check_lengths(lengths, lE.shape[0]))
    E, shift = _factors_from_log(lE.T)
    gamma, xi_sum, ll = _estep(E, shift, pi, A, layout, lambda: lE.T)
    return ForwardBackward(np.ascontiguousarray(gamma.T), xi_sum, ll)


class Viterbi(NamedTuple):
    """Output of :func:`viterbi`.

    Attributes
    ----------
    path : numpy.ndarray of int, shape (T,)
        A most probable state sequence ``argmax_Z p(Z | V, theta)``.
    log_prob : float
        ``max_Z ln p(V, Z | theta)``.
    """

    path: np.ndarray
    log_prob: float


def _viterbi_group(ls, lA, log_E, lengths=None):
    """Viterbi for ``N`` padded sequences (N, T, K): each time step vectorised across the
    sequences, or, for a few long sequences, the blocked max-plus scheme one at a time."""
    N, T, K = log_E.shape
    if N == 1 and T * K * K * math.log2(T + 1) <= _VITERBI_SCAN_WORK:
        path, log_prob = viterbi_scan(ls, lA, log_E[0])
        paths, log_prob = path[None], np.array([log_prob])
    elif T > 256 and K <= 16 and N * 5 < np.sqrt(T):
        paths = np.zeros((N, T), dtype=np.intp)
        log_prob = np.empty(N)
        for n in range(N):  # a loop over a few sequences, each one vectorised inside
            Tn = T if lengths is None else int(lengths[n])
            if Tn > 256:
                paths[n, :Tn], log_prob[n] = viterbi_long(ls, lA, log_E[n, :Tn])
            else:
                p, lp = viterbi_batch(ls, lA, log_E[n:n + 1, :Tn])
                paths[n, :Tn], log_prob[n] = p[0], lp[0]
    else:
        paths, log_prob = viterbi_batch(ls, lA, log_E, lengths)
    return paths, _possible(log_prob)


def _possible(log_prob: np.ndarray) -> np.ndarray:
    """``log_prob``, the best paths' log-probabilities; ValueError if one is not finite."""
    if not np.all(np.isfinite(log_prob)):
        raise ValueError(_IMPOSSIBLE)
    return log_prob


def viterbi(log_startprob, log_transmat, log_emission) -> Viterbi:
    """Most probable hidden path of one sequence (Viterbi algorithm in log space).

    Long sequences use the blocked scheme of ``emtutor._forward_backward`` in max-plus
    algebra (``viterbi_long``), which removes the per-step interpreter overhead.

    Parameters
    ----------
    log_startprob, log_transmat, log_emission : array_like
        As in :func:`forward_backward`.

    Returns
    -------
    Viterbi
        ``(path, log_prob)`` with ``log_prob = ln p(V, path | theta)``.

    Raises
    ------
    ValueError
        For malformed inputs or observations that are impossible.

    Examples
    --------
    >>> import numpy as np
    >>> v = viterbi(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]]),
    ...             np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]]))
    >>> print(v.path, f"{v.log_prob:.6f}")
    [0 0 0] -2.821191
    """
    _, _, ls, lA, lE = _check_log_model(log_startprob, log_transmat, log_emission)
    found = _compiled.viterbi_kernel(ls, lA, lE, [0], [lE.shape[0]])
    if found is not None:
        return Viterbi(found[0], float(_possible(found[1])[0]))
    paths, log_prob = _viterbi_group(ls, lA, lE[None])
    return Viterbi(paths[0], float(log_prob[0]))


# ---------------------------------------------------------------------------------------------
# The posterior over paths, its entropy, the ELBO and the KL gap
# ---------------------------------------------------------------------------------------------


class ChainPosterior(NamedTuple):
    """The posterior over paths of one sequence, described by its marginals.

    The posterior ``p(Z | V, theta)`` of an HMM is a Markov chain, so these two arrays
    determine it completely.

    Attributes
    ----------
    gamma : numpy.ndarray, shape (T, K)
        ``gamma[t, k] = p(z_t = k | V, theta)``.
    xi : numpy.ndarray, shape (T - 1, K, K)
        ``xi[t - 1, i, j] = p(z_{t-1} = i, z_t = j | V, theta)`` for ``t = 1, ..., T - 1``
        (zero-based time).
    log_likelihood : float
        ``ln p(V | theta)``.
    """

    gamma: np.ndarray
    xi: np.ndarray
    log_likelihood: float


def chain_posterior(log_startprob, log_transmat, log_emission) -> ChainPosterior:
    """One- and two-slice posterior marginals of one sequence (per time step, not summed).

    Parameters
    ----------
    log_startprob, log_transmat, log_emission : array_like
        As in :func:`forward_backward`.

    Returns
    -------
    ChainPosterior
        ``(gamma, xi, log_likelihood)``; ``xi.sum(axis=0)`` is the ``xi_sum`` of
        :func:`forward_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> post = chain_posterior(np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]]),
    ...                        np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]]))
    >>> print(post.xi.shape, post.xi[0].round(4))
    (2, 2, 2) [[0.9046 0.0311]
     [0.0287 0.0356]]
    >>> print(np.allclose(post.xi.sum(axis=2), post.gamma[:-1]))
    True
    """
    pi, A, _, _, lE = _check_log_model(log_startprob, log_transmat, log_emission)
    E, shift = _factors_from_log(lE.T)
    gamma, xi, log_c = posterior_batch(pi, A, E[:, None, :], log_E=lambda: lE.T[:, None, :],
                                       pairwise=True)
    return ChainPosterior(np.ascontiguousarray(gamma[:, 0].T), xi[0], float(log_c[0]) + shift)


def _check_chain_q(gamma, xi, K: int | None = None):
    """Validate ``q = (gamma, xi)`` as the marginals of a Markov chain over paths."""
    g = check_distribution(as_float_array(gamma, "gamma", ndim=2), "gamma")
    T, Kg = g.shape
    if K is not None and Kg != K:
        raise ValueError(f"gamma must have one column per state ({K}), got shape {g.shape}")
    x = as_float_array(xi, "xi", ndim=3, allow_empty=True)
    if x.shape != (T - 1, Kg, Kg):
        raise ValueError(
            f"xi must have shape ({T - 1}, {Kg}, {Kg}) to match gamma of shape {g.shape}, "
            f"got {x.shape}"
        )
    if T > 1:
        check_distribution(x.reshape(T - 1, Kg * Kg), "xi (each time step)")
        if not (np.allclose(x.sum(axis=2), g[:-1], rtol=0, atol=1e-8)
                and np.allclose(x.sum(axis=1), g[1:], rtol=0, atol=1e-8)):
            raise ValueError(
                "xi and gamma are inconsistent: summing xi[t] over its second (first) index "
                "must give gamma[t] (gamma[t + 1])"
            )
    return g, x


def posterior_entropy(gamma, xi) -> float:
    r"""Entropy of a Markov-chain distribution over paths from its marginals.

    For ``q(Z) = q(z_1) prod_t q(z_t | z_{t-1})`` with one-slice marginals ``gamma`` and
    two-slice marginals ``xi``, ``ln q(Z) = sum_t ln xi_t(z_{t-1}, z_t) - sum_{t=2}^{T-1}
    ln gamma_t(z_t)``, so

    .. math::

        H(q) = -\sum_{t=2}^{T} \sum_{i,j} \xi_t(i,j) \ln \xi_t(i,j)
               + \sum_{t=2}^{T-1} \sum_i \gamma_t(i) \ln \gamma_t(i)

    (one-based time), and ``H = -sum_i gamma_1(i) ln gamma_1(i)`` when ``T = 1``. This needs
    ``O(T K^2)`` work instead of a sum over the ``K^T`` paths.

    Parameters
    ----------
    gamma : array_like, shape (T, K)
    xi : array_like, shape (T - 1, K, K)
        Consistent marginals, e.g. from :func:`chain_posterior`.

    Returns
    -------
    float
        ``H(q) >= 0`` in nats.

    Raises
    ------
    ValueError
        If ``gamma`` or ``xi`` are not distributions, their shapes differ, or they are not
        consistent (the sums of ``xi`` must give ``gamma``).

    Examples
    --------
    Two independent fair coin flips form a (trivial) Markov chain with entropy ``2 ln 2``:

    >>> import numpy as np
    >>> h = posterior_entropy(np.full((2, 2), 0.5), np.full((1, 2, 2), 0.25))
    >>> print(f"{h:.6f} {2 * np.log(2):.6f}")
    1.386294 1.386294
    """
    g, x = _check_chain_q(gamma, xi)
    T, K = g.shape
    if T == 1:
        return float(entropy(g[0]))
    h = float(np.sum(entropy(x.reshape(T - 1, K * K))))
    if T > 2:
        h -= float(np.sum(entropy(g[1:-1])))
    return h


def _weighted_log_sum(w: np.ndarray, log_p: np.ndarray) -> float:
    """``sum w * log_p`` with ``0 * (-inf) = 0``."""
    return float(np.sum(np.multiply(w, log_p, out=np.zeros(np.broadcast_shapes(
        w.shape, log_p.shape)), where=w > 0)))


def expected_complete_loglik(gamma, xi, log_startprob, log_transmat, log_emission) -> float:
    r"""``Q = E_q[ln p(V, Z | theta)]`` for a Markov-chain ``q`` given by its marginals.

    Because ``ln p(V, Z | theta) = ln pi_{z_1} + sum_t ln A_{z_{t-1} z_t} + sum_t
    ln p(x_t | z_t)`` (equation ``eq-ch6-joint``) is a sum of terms that each involve one or
    two neighbouring states,

    .. math::

        Q = \sum_i \gamma_1(i) \ln \pi_i + \sum_{t=2}^T \sum_{i,j} \xi_t(i,j) \ln A_{ij}
            + \sum_{t=1}^T \sum_k \gamma_t(k) \ln p(x_t \mid z_t = k).

    With ``q = p(Z | V, theta_old)`` this is ``Q(theta, theta_old)``.

    Parameters
    ----------
    gamma, xi : array_like
        Marginals of ``q`` (see :func:`posterior_entropy`).
    log_startprob, log_transmat, log_emission : array_like
        The model ``theta`` (see :func:`forward_backward`).

    Returns
    -------
    float
        ``-inf`` if ``q`` gives positive probability to an impossible path.

    Examples
    --------
    >>> import numpy as np
    >>> lp, lA = np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> lE = np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]])
    >>> post = chain_posterior(lp, lA, lE)
    >>> print(f"{expected_complete_loglik(post.gamma, post.xi, lp, lA, lE):.6f}")
    -3.395426
    """
    _, _, ls, lA, lE = _check_log_model(log_startprob, log_transmat, log_emission)
    g, x = _check_chain_q(gamma, xi, ls.size)
    if g.shape[0] != lE.shape[0]:
        raise ValueError(
            f"gamma has {g.shape[0]} time steps but log_emission has {lE.shape[0]}"
        )
    return (_weighted_log_sum(g[0], ls) + _weighted_log_sum(x, lA)
            + _weighted_log_sum(g, lE))


def elbo(gamma, xi, log_startprob, log_transmat, log_emission) -> float:
    """Evidence lower bound ``L(q, theta) = Q + H(q)`` for a Markov-chain ``q`` over paths.

    Equals :func:`expected_complete_loglik` plus :func:`posterior_entropy`; it is at most
    ``ln p(V | theta)``, with equality when ``q`` is the posterior at ``theta``.

    Parameters
    ----------
    gamma, xi : array_like
        Marginals of ``q``.
    log_startprob, log_transmat, log_emission : array_like
        The model ``theta``.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> lp, lA = np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> lE = np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]])
    >>> post = chain_posterior(lp, lA, lE)
    >>> print(f"{elbo(post.gamma, post.xi, lp, lA, lE):.6f} {post.log_likelihood:.6f}")
    -2.433263 -2.433263
    """
    q_term = expected_complete_loglik(gamma, xi, log_startprob, log_transmat, log_emission)
    return q_term + posterior_entropy(gamma, xi)


def kl_to_posterior(gamma, xi, log_startprob, log_transmat, log_emission) -> float:
    r"""``KL(q || p(Z | V, theta))`` between two Markov chains over paths, from marginals.

    Both ``q`` and the posterior ``p`` factorise along the chain, so (one-based time)

    .. math::

        \mathrm{KL}(q \,\|\, p) = \sum_{t=2}^{T} \mathrm{KL}(\xi_t \,\|\, \xi^p_t)
            - \sum_{t=2}^{T-1} \mathrm{KL}(\gamma_t \,\|\, \gamma^p_t),

    with the posterior marginals ``gamma^p, xi^p``. This is computed from the definition,
    not as ``ln p - L``, and in log space: every term is ``q (ln q - ln p)`` with the logs of
    the posterior marginals from a log-space forward-backward pass
    (``emtutor._forward_backward.log_marginals``), never from probabilities. Where a time
    step's log emissions differ by more than about 745 nats, the posterior probabilities of
    the unlikely states underflow to 0 and a divergence computed from them would be
    ``+inf``; their logs stay finite, and so does the KL. That pass is a Python loop over
    the time steps (a few tens of us per step), far slower than :func:`forward_backward`.

    Parameters
    ----------
    gamma, xi : array_like
        Marginals of ``q``.
    log_startprob, log_transmat, log_emission : array_like
        The model ``theta``.

    Returns
    -------
    float
        ``>= 0``; ``+inf`` only if ``q`` gives positive probability to a state or a pair of
        states that the posterior rules out (probability exactly 0: a zero start, transition
        or emission probability, or no possible path through it).

    Examples
    --------
    >>> import numpy as np
    >>> lp, lA = np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> lE = np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]])
    >>> uniform_g, uniform_x = np.full((3, 2), 0.5), np.full((2, 2, 2), 0.25)
    >>> print(f"{kl_to_posterior(uniform_g, uniform_x, lp, lA, lE):.6f}")
    1.614632

    With 2000 nats of evidence at the middle step the posterior probability of state 1
    there is ``e^-2000``, 0 in floating point; the divergence of the uniform ``q`` is finite:

    >>> lE_far = np.array([[0.0, 0.0], [0.0, -2000.0], [0.0, 0.0]])
    >>> print(f"{kl_to_posterior(uniform_g, uniform_x, lp, lA, lE_far):.4f}")
    1000.1361
    """
    g, x = _check_chain_q(gamma, xi)
    _, _, ls, lA, lE = _check_log_model(log_startprob, log_transmat, log_emission)
    if lE.shape != g.shape:
        raise ValueError(
            f"gamma has shape {g.shape} but the model gives posteriors of shape {lE.shape}"
        )
    _factors_from_log(lE.T)  # names an observation impossible in every state
    log_gamma, log_xi = log_marginals(ls, lA, lE)
    T, K = g.shape
    if T == 1:
        return float(_kl_log(g[0], log_gamma[0]))
    kl = float(np.sum(_kl_log(x.reshape(T - 1, K * K), log_xi.reshape(T - 1, K * K))))
    if not np.isfinite(kl):
        return float("inf")
    if T > 2:
        kl -= float(np.sum(_kl_log(g[1:-1], log_gamma[1:-1])))
    # each term is >= 0 up to rounding, and so is their combination
    return max(kl, 0.0)


def decompose(gamma, xi, log_startprob, log_transmat, log_emission) -> Decomposition:
    """The three terms of ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))``.

    Each is computed from its own definition (the log-likelihood by the forward recursion,
    :func:`elbo` and :func:`kl_to_posterior`), so ``ln p = L + KL`` on the result is a real
    check of equation :eq:`eq-elbo-kl` for an HMM.

    Parameters
    ----------
    gamma, xi : array_like
        Marginals of a Markov-chain ``q`` over paths.
    log_startprob, log_transmat, log_emission : array_like
        The model ``theta``.

    Returns
    -------
    emtutor.bounds.Decomposition
        ``(log_likelihood, elbo, kl)``.

    Examples
    --------
    >>> import numpy as np
    >>> lp, lA = np.log([0.5, 0.5]), np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> lE = np.log([[0.7, 0.1], [0.7, 0.1], [0.3, 0.9]])
    >>> d = decompose(np.full((3, 2), 0.5), np.full((2, 2, 2), 0.25), lp, lA, lE)
    >>> print(f"{d.log_likelihood:.6f} = {d.elbo:.6f} + {d.kl:.6f}")
    -2.433263 = -4.047896 + 1.614632
    """
    ll = forward_backward(log_startprob, log_transmat, log_emission).log_likelihood
    return Decomposition(
        ll,
        elbo(gamma, xi, log_startprob, log_transmat, log_emission),
        kl_to_posterior(gamma, xi, log_startprob, log_transmat, log_emission),
    )


# ---------------------------------------------------------------------------------------------
# Model-level functions
# ---------------------------------------------------------------------------------------------


def score(X, params: Params, lengths=None) -> float:
    """Log-likelihood ``ln p(X | theta)`` (total over the sequences).

    Parameters
    ----------
    X : array_like
        Observations (see :func:`log_emission`), several sequences concatenated.
    params : Params
    lengths : array_like of int, optional
        Sequence lengths; default one sequence.

    Returns
    -------
    float

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    >>> print(f"{score([0, 0, 1], p):.6f}")
    -2.433263
    """
    params = _check_params(params)
    X = _check_data(X, params)
    layout = _Layout(_check_lengths(lengths, X.shape[0]))
    E, shift, log_source = _emission_factors(X, params)
    return _estep(E, shift, params.startprob, params.transmat, layout, log_source)[2]


def predict_proba(X, params: Params, lengths=None) -> np.ndarray:
    """Posterior state probabilities ``p(z_t = k | X, theta)``, shape (T, K).

    Parameters
    ----------
    X : array_like
    params : Params
    lengths : array_like of int, optional

    Returns
    -------
    numpy.ndarray, shape (T, K)

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    >>> print(predict_proba([0, 0, 1], p).round(4))
    [[0.9357 0.0643]
     [0.9333 0.0667]
     [0.7051 0.2949]]
    """
    params = _check_params(params)
    X = _check_data(X, params)
    layout = _Layout(_check_lengths(lengths, X.shape[0]))
    E, shift, log_source = _emission_factors(X, params)
    gamma = _estep(E, shift, params.startprob, params.transmat, layout, log_source)[0]
    return np.ascontiguousarray(gamma.T)


def predict(X, params: Params, lengths=None) -> np.ndarray:
    """Most probable hidden path of every sequence (Viterbi), concatenated, shape (T,).

    Parameters
    ----------
    X : array_like
    params : Params
    lengths : array_like of int, optional

    Returns
    -------
    numpy.ndarray of int

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    >>> print(predict([0, 0, 1, 1, 1, 0, 1, 1], p, lengths=[3, 5]))
    [0 0 0 1 1 1 1 1]
    """
    params = _check_params(params)
    X = _check_data(X, params)
    layout = _Layout(_check_lengths(lengths, X.shape[0]))
    if params.emission == "categorical":
        logE = _log(params.emissionprob).T[X]
    else:
        XT = np.ascontiguousarray(X.T)
        logE = _gaussian_log_emission(XT, params.means, params.covariances).T
    ls, lA = params.log_startprob, params.log_transmat
    K = params.n_states
    found = _compiled.viterbi_kernel(ls, lA, logE, layout.starts, layout.lengths)
    if found is not None:
        _possible(found[1])
        return found[0]
    if layout.uniform:
        N, T = layout.lengths.size, int(layout.lengths[0])
        paths, _ = _viterbi_group(ls, lA, logE.reshape(N, T, K))
        return paths.reshape(-1)
    out = np.empty(layout.n_obs, dtype=np.intp)
    ext = np.concatenate([logE, np.zeros((1, K))])
    for glen, idx, valid in layout.groups:
        paths, _ = _viterbi_group(ls, lA, ext[idx], glen)
        out[idx[valid]] = paths[valid]
    return out


def sample(params: Params, n: int, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sequence of length ``n``: observations and hidden states.

    The hidden chain is drawn without a loop over time: each step's uniform number defines a
    map ``state -> next state`` (inverse CDF of every row of ``A``), and the running
    compositions of these maps are formed by doubling (``log2 n`` vectorised passes).

    Parameters
    ----------
    params : Params
    n : int
        Length of the sequence, ``>= 1``.
    random_state : int, numpy.random.Generator or None
        Seed or generator.

    Returns
    -------
    X : numpy.ndarray
        Shape (n,) of int (categorical) or (n, D) (Gaussian).
    states : numpy.ndarray of int, shape (n,)

    Examples
    --------
    >>> p = Params(startprob=[1.0, 0.0], transmat=[[0.0, 1.0], [1.0, 0.0]],
    ...            emissionprob=[[1.0, 0.0], [0.0, 1.0]])
    >>> X, z = sample(p, 5, random_state=0)
    >>> print(X, z)
    [0 1 0 1 0] [0 1 0 1 0]
    """
    params = _check_params(params)
    n = check_int(n, "n", low=1)
    rng = check_random_state(random_state)
    K = params.n_states

    def inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
        cum = np.cumsum(p)
        return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), p.size - 1)

    z0 = int(inverse_cdf(params.startprob, rng.random()))
    states = np.empty(n, dtype=np.intp)
    states[0] = z0
    if n > 1:
        u = rng.random(n - 1)
        # maps[s, i] = next state when leaving state i at step s
        maps = np.stack([inverse_cdf(params.transmat[i], u) for i in range(K)], axis=1)
        d = 1
        while d < n - 1:  # inclusive prefix composition: maps[s] <- maps[s] o maps[s - d]
            maps[d:] = np.take_along_axis(maps[d:], maps[:-d], axis=1)
            d *= 2
        states[1:] = maps[:, z0]
    if params.emission == "categorical":
        B = params.emissionprob
        cum = np.cumsum(B, axis=1)
        u = rng.random(n) * cum[states, -1]
        X = np.minimum((u[:, None] >= cum[states]).sum(axis=1), B.shape[1] - 1)
        return X.astype(np.intp), states
    D = params.means.shape[1]
    noise = rng.standard_normal((n, D))
    if params.covariance_type == "diag":
        X = params.means[states] + np.sqrt(params.covariances[states]) * noise
    else:
        chol = np.linalg.cholesky(params.covariances)
        X = params.means[states] + np.einsum("tij,tj->ti", chol[states], noise)
    return X, states


# ---------------------------------------------------------------------------------------------
# Baum-Welch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class FitResult(EMResult):
    """Result of :func:`fit`: an :class:`emtutor.em.EMResult` with the HMM's parameters.

    Every field of :class:`emtutor.em.EMResult` (``theta``, the parameter history
    ``thetas``, ``log_likelihood``, the bound ``elbo``, ``n_iter``, ``converged``,
    ``decreases``) and its :meth:`~emtutor.em.EMResult.check_sandwich`, plus ``params``,
    the final parameters (the same object as ``theta``).

    Attributes
    ----------
    params : Params
        Parameters after the last iteration.
    log_likelihood : numpy.ndarray
        ``log_likelihood[i] = ln p(X | theta_i)``: entry 0 at the initial parameters, entry
        ``i`` after ``i`` iterations, the last one at ``params``; length ``n_iter + 1``.
    elbo : numpy.ndarray
        ``elbo[i] = L(q_i, theta_{i+1})`` with ``q_i`` the posterior over paths at
        ``theta_i``, from the expected statistics of ``q_i``; length ``n_iter``.
    n_iter : int
        Number of EM iterations (M-steps) performed.
    converged : bool
        Whether :func:`emtutor.em.has_converged` stopped the run before ``max_iter``
        **and** the log-likelihood never fell beyond rounding during the run. A run with
        decreases (see ``decreases``) is never reported as converged: exact Baum-Welch
        never lowers ``ln p``, so where such a run stopped is not a fixed point to trust.
        Always ``False`` with ``tol = 0``.
    decreases : tuple of (int, float)
        The iterations where ``ln p`` fell beyond rounding and the size of each drop
        (:func:`emtutor.em.find_decreases` of ``log_likelihood``); empty for a correct run.
        Each one was also announced by an :class:`emtutor.em.LikelihoodDecreaseWarning`.

    Notes
    -----
    Instances compare by identity (``eq=False``). The ``repr`` shows the number of
    iterations, ``converged``, the last log-likelihood and the decreases, not the
    parameters or the whole trace.

    Examples
    --------
    >>> import numpy as np
    >>> p = Params(startprob=[1.0], transmat=[[1.0]], emissionprob=[[1.0]])
    >>> FitResult(theta=p, thetas=[p, p, p], log_likelihood=np.array([-3.0, -2.5, -2.75]),
    ...           elbo=np.array([-2.8, -2.6]), n_iter=2, converged=False,
    ...           decreases=((2, 0.25),))
    FitResult(n_iter=2, converged=False, log_likelihood[-1]=-2.75, decreases=((iteration 2: -0.25)))
    """

    @property
    def params(self) -> Params:
        """The final parameters (``theta``)."""
        return self.theta

    __repr__ = EMResult.__repr__  # the same short summary as every EM result


class _Posterior(NamedTuple):
    """The E-step's output at ``theta``: state-major ``gamma``, ``xi_sum`` and ``ln p``."""

    theta: Params
    gamma: np.ndarray
    xi_sum: np.ndarray
    log_likelihood: float


def _of_posterior(layout: _Layout, name: str, compute):
    """``compute()``, kept until the next E-step: ``fit`` marks every E-step with a fresh
    ``layout.cache["estep"]``, so that the M-step and the bound share the statistics of one
    posterior. Outside ``fit`` (no mark) nothing is kept."""
    cache = layout.cache
    token = cache.get("estep")
    kept = cache.get(name)
    if token is not None and kept is not None and kept[0] is token:
        return kept[1]
    value = compute()
    if token is not None:
        cache[name] = (token, value)
    return value


def _first_posteriors(gamma, layout: _Layout) -> np.ndarray:
    """``sum_n p(z_{n,0} = k | V)``: the posteriors of the first step, summed over sequences."""
    return _of_posterior(layout, "first", lambda: gamma[:, layout.starts].sum(axis=1))


def _symbol_counts(X, gamma, layout: _Layout, K: int, M: int) -> np.ndarray:
    """``counts[k, m]``: the sum of ``gamma[k, t]`` over the steps with ``x_t = m``.

    One bincount over the pairs ``(k, x_t)``, whose flat codes ``k M + x_t`` are kept for
    the whole fit; the counts are kept until the next E-step (:func:`_of_posterior`).
    """
    def compute():
        codes = layout.cache.get("codes")
        if codes is None or codes.shape[0] != K * X.size:
            codes = layout.cache["codes"] = (np.arange(K)[:, None] * M + X).ravel()
        return np.bincount(codes, weights=gamma.ravel(), minlength=K * M).reshape(K, M)

    return _of_posterior(layout, "counts", compute)


def _probability_logs(theta: Params) -> np.ndarray:
    """The logs of ``theta``'s probabilities in the order of ``_expected_complete``'s
    weights (start, transitions, categorical emissions), kept on the (read-only) ``theta``:
    the bound of an iteration needs those of ``theta_new``, and the next one those of the
    same parameters as ``theta_old``."""
    logs = theta.__dict__.get("_probability_logs")
    if logs is None:
        parts = [theta.startprob, theta.transmat.ravel()]
        if theta.emission == "categorical":
            parts.append(theta.emissionprob.ravel())
        logs = _log(np.concatenate(parts))
        logs.setflags(write=False)
        object.__setattr__(theta, "_probability_logs", logs)
    return logs


def _expected_complete(q: _Posterior, thetas: tuple[Params, ...], X: np.ndarray,
                       layout: _Layout, XT: np.ndarray | None = None) -> np.ndarray:
    """``Q(theta; q) = E_q[ln p(V, Z | theta)]`` for each of ``thetas``, from the expected
    statistics of ``q``.

    The start and transition terms use the first-step posteriors and ``xi_sum``; the
    emission term ``sum_t sum_k gamma_tk ln p(x_t | k)`` uses the posterior-weighted symbol
    counts (categorical) or the weighted means and scatters of :func:`_moments`, which the
    M-step has computed from the same posterior (Gaussian), so it costs no pass over the
    data. The parameter sets are stacked, so the bound's two (``theta_new`` and
    ``theta_old``) cost one evaluation.
    """
    gamma = q.gamma
    theta = thetas[0]

    def weights():
        first = _first_posteriors(gamma, layout)
        if theta.emission == "categorical":
            counts = _symbol_counts(X, gamma, layout, *theta.emissionprob.shape)
            return np.concatenate([first, q.xi_sum.ravel(), counts.ravel()])
        return np.concatenate([first, q.xi_sum.ravel()])

    w = _of_posterior(layout, "q_weights", weights)
    logs = np.array([_probability_logs(t) for t in thetas])
    total = np.where(w > 0, logs, 0.0) @ w
    if theta.emission == "categorical":
        return total
    nk = _of_posterior(layout, "nk", lambda: gamma.sum(axis=1))
    diag = theta.covariance_type == "diag"
    if XT is None:
        XT = np.ascontiguousarray(X.T)
    mu, S = _of_posterior(layout, "moments", lambda: _moments(X, XT, gamma, nk, diag))
    # np.array, not np.stack: it stacks a few small arrays at a fraction of the cost
    diff = mu - np.array([t.means for t in thetas])  # (n, K, D)
    D = diff.shape[2]
    cov = np.array([t.covariances for t in thetas])
    if diag:
        # sum_t gamma_tk (x_t - m_k)^2 / var_k = (S_k + n_k (mu_k - m_k)^2) / var_k
        quad = ((S + nk[:, None] * diff * diff) / cov).sum(axis=2)
        logdet = np.log(cov).sum(axis=2)
    else:
        scatter = S + nk[:, None, None] * (diff[..., :, None] * diff[..., None, :])
        chol = np.linalg.cholesky(cov)
        quad = np.trace(np.linalg.solve(cov, scatter), axis1=-2, axis2=-1)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
    return total + (-0.5 * (nk * (D * _LOG_2PI + logdet) + quad)).sum(axis=1)


class _CollapsedState(ValueError):
    """A Gaussian state whose covariance came out singular in the M-step (``min_covar = 0``)."""

    def __init__(self, state: int, detail: str):
        self.state, self.detail = state, detail
        super().__init__(self.message())

    def message(self, when: str = "in the M-step") -> str:
        return (
            f"the covariance of state {self.state} collapsed {when} ({self.detail}): its "
            "posterior mass sits on too few distinct points. Use min_covar > 0 (the default "
            "is 1e-6) or fewer states"
        )


def _moments(X, XT, gamma, nk, diag: bool):
    """The posterior-weighted means ``mu_k = sum_t gamma_tk x_t / n_k`` and scatters about
    them, ``S_k = sum_t gamma_tk (x_t - mu_k)(x_t - mu_k)^T`` (their diagonals if ``diag``):
    the M-step divides ``S_k`` by ``n_k``, and the bound uses, for any mean ``m``,
    ``sum_t gamma_tk (x_t - m)(x_t - m)^T = S_k + n_k (mu_k - m)(mu_k - m)^T``.
    """
    K = gamma.shape[0]
    mu = (gamma @ X) / np.where(nk > 0, nk, 1.0)[:, None]
    D, T = XT.shape
    if diag and K * XT.size <= _SMALL_WORK:  # all states in one pass: fewer calls
        d = XT[None, :, :] - mu[:, :, None]
        d *= d
        return mu, np.matmul(d, gamma[:, :, None])[:, :, 0]
    S = np.empty((K, D) if diag else (K, D, D))
    for k in range(K):
        d = XT - mu[k][:, None]
        if diag:
            d *= d
            S[k] = d @ gamma[k]
        else:
            S[k] = (d * gamma[k]) @ d.T
    if not diag:
        S = 0.5 * (S + np.swapaxes(S, 1, 2))
    return mu, S


def _m_step(X, gamma, xi_sum, layout: _Layout, old: Params, min_covar: float,
            XT: np.ndarray | None = None) -> Params:
    """Closed-form maximiser of ``Q(theta, theta_old)``; ``gamma`` is state-major (K, T).

    A state whose expected number of visits is at most ``10 eps`` keeps its old emission
    parameters (the data say nothing about them) with an :class:`EmptyComponentWarning`;
    a state never left (e.g. visited only at the last step) keeps its old transition row.
    """
    K = old.n_states
    first = _first_posteriors(gamma, layout)
    startprob = first / first.sum()
    row = xi_sum.sum(axis=1)
    if row.min() > _EMPTY:
        transmat = xi_sum / row[:, None]
    else:
        keep = row <= _EMPTY
        transmat = np.where(keep[:, None], old.transmat,
                            xi_sum / np.where(keep, 1.0, row)[:, None])
    if old.emission == "categorical":
        counts = _symbol_counts(X, gamma, layout, K, old.emissionprob.shape[1])
        nk = counts.sum(axis=1)
    else:
        nk = _of_posterior(layout, "nk", lambda: gamma.sum(axis=1))
    keep = nk <= _EMPTY
    empty = bool(keep.any())
    if empty:
        warnings.warn(
            f"state(s) {np.flatnonzero(keep).tolist()} received a total posterior probability "
            "<= 10 eps in the M-step; they keep their previous emission parameters",
            EmptyComponentWarning,
            stacklevel=3,
        )
    safe = np.where(keep, 1.0, nk)
    if old.emission == "categorical":
        B = counts / safe[:, None]
        if empty:
            B[keep] = old.emissionprob[keep]
        return Params._trusted(startprob, transmat, emissionprob=B)
    if XT is None:
        XT = np.ascontiguousarray(X.T)
    mu, S = _of_posterior(layout, "moments", lambda: _moments(
        X, XT, gamma, nk, old.covariance_type == "diag"))
    means = mu.copy()
    if empty:
        means[keep] = old.means[keep]
    if old.covariance_type == "diag":
        cov = np.maximum(S / safe[:, None], min_covar)
        if empty:
            cov[keep] = old.covariances[keep]
        if not (cov > 0).all():  # only possible with min_covar = 0 (NaN fails the test too)
            k, d = (int(i) for i in np.argwhere(~(cov > 0))[0])
            raise _CollapsedState(k, f"variance {cov[k, d]:.3g} in dimension {d}")
    else:
        cov = S / safe[:, None, None]
        w, v = np.linalg.eigh(cov)
        low = w.min(axis=1) < min_covar
        if low.any():  # floor the eigenvalues
            floored = (v[low] * np.maximum(w[low], min_covar)[:, None, :]) @ np.swapaxes(
                v[low], 1, 2)
            cov[low] = 0.5 * (floored + np.swapaxes(floored, 1, 2))
        if empty:
            cov[keep] = old.covariances[keep]
        if min_covar == 0:
            for k in range(K):
                try:
                    np.linalg.cholesky(cov[k])
                except np.linalg.LinAlgError:
                    w = np.linalg.eigvalsh(cov[k]) if np.all(np.isfinite(cov[k])) else [np.nan]
                    raise _CollapsedState(
                        k, f"smallest eigenvalue {np.min(w):.3g}, not positive definite"
                    ) from None
    return Params._trusted(startprob, transmat, means=means, covariances=cov)


def m_step(X, gamma, xi_sum, params: Params, lengths=None, *,
           min_covar: float = 1e-6) -> Params:
    """M-step of Baum-Welch: the parameters maximising ``Q(theta, theta_old)``.

    With the posterior marginals of the E-step at ``theta_old``,

    * ``startprob`` is the average of ``gamma`` at the first step of every sequence;
    * ``transmat`` is ``xi_sum`` with each row divided by its sum;
    * ``emissionprob[k, m]`` is the posterior-weighted count of symbol ``m`` in state ``k``
      divided by the expected time spent in ``k`` (categorical), or ``means`` and
      ``covariances`` are the posterior-weighted mean and covariance of the data (Gaussian;
      variances, or eigenvalues of full covariances, floored at ``min_covar``).

    A state with no expected visits (at most ``10 eps``) keeps its old emission parameters,
    with an :class:`emtutor.em.EmptyComponentWarning`; a state never left keeps its old
    transition row.

    Parameters
    ----------
    X : array_like
        The data (see :func:`log_emission`).
    gamma : array_like, shape (T, K)
        Posterior marginals from :func:`forward_backward` at ``params``.
    xi_sum : array_like, shape (K, K)
        Expected transition counts from :func:`forward_backward`.
    params : Params
        ``theta_old``: fixes the emission model and fills in states without data.
    lengths : array_like of int, optional
        Sequence lengths, as given to :func:`forward_backward`.
    min_covar : float
        Variance floor for Gaussian emissions, ``>= 0``.

    Returns
    -------
    Params

    Raises
    ------
    TypeError
        If an array holds non-numbers (strings, complex numbers) or ``min_covar`` is not a
        real number.
    ValueError
        For malformed or inconsistent inputs: ``gamma`` not rows of probabilities of shape
        (T, K), ``xi_sum`` not a non-negative (K, K) array, ``min_covar < 0``, or, with
        ``min_covar = 0``, a Gaussian state whose covariance comes out singular (collapsed
        onto too few points).

    Examples
    --------
    >>> p = Params(startprob=[0.5, 0.5], transmat=[[0.9, 0.1], [0.2, 0.8]],
    ...            emissionprob=[[0.7, 0.3], [0.1, 0.9]])
    >>> X = [0, 0, 1, 1, 1, 0]
    >>> fb = forward_backward(p.log_startprob, p.log_transmat, log_emission(X, p))
    >>> new = m_step(X, fb.gamma, fb.xi_sum, p)
    >>> print(new.transmat.round(4))
    [[0.8121 0.1879]
     [0.2873 0.7127]]
    >>> print(score(X, new) >= score(X, p))
    True
    """
    params = _check_params(params)
    X = _check_data(X, params)
    layout = _Layout(_check_lengths(lengths, X.shape[0]))
    K = params.n_states
    g = check_distribution(as_float_array(gamma, "gamma", ndim=2), "gamma")
    if g.shape != (X.shape[0], K):
        raise ValueError(f"gamma must have shape ({X.shape[0]}, {K}), got {g.shape}")
    xs = as_float_array(xi_sum, "xi_sum", ndim=2)
    if xs.shape != (K, K):
        raise ValueError(f"xi_sum must have shape ({K}, {K}), got {xs.shape}")
    if np.any(xs < 0):
        i, j = (int(v) for v in np.argwhere(xs < 0)[0])
        raise ValueError(
            f"xi_sum must be non-negative (expected transition counts), got "
            f"xi_sum[{i}, {j}] = {xs[i, j]:.6g}"
        )
    min_covar = check_real(min_covar, "min_covar", low=0.0)
    return _m_step(X, np.ascontiguousarray(g.T), xs, layout, params, min_covar)


def _check_choice(value, name: str, choices: tuple[str, ...]) -> None:
    """TypeError unless ``value`` is a string, ValueError unless it is one of ``choices``."""
    want = " or ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, {want}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be {want}, got {value!r}")


_INIT_KEYS = {
    "categorical": ("startprob", "transmat", "emissionprob"),
    "gaussian": ("startprob", "transmat", "means", "covariances"),
}


def _initial_params(X, K, emission, covariance_type, init, n_symbols, rng, min_covar) -> Params:
    if isinstance(init, Params):
        if init.emission != emission:
            raise ValueError(
                f"init holds {init.emission} parameters but emission is {emission!r}"
            )
    if isinstance(init, (Params, Mapping)):
        need = _INIT_KEYS[emission]
        missing = [] if isinstance(init, Params) else [k for k in need if k not in init]
        extra = [] if isinstance(init, Params) else [k for k in init if k not in need]
        if missing or extra:
            raise ValueError(
                f"init for {emission} emissions needs exactly the keys {list(need)}; "
                f"missing {missing}, unexpected {extra}"
            )
        # a Params is checked and read-only already: used as it is
        params = init if isinstance(init, Params) else Params(**{k: init[k] for k in need})
        if params.n_states != K:
            raise ValueError(f"init has {params.n_states} states but n_states is {K}")
        if emission == "gaussian" and params.covariance_type != covariance_type:
            raise ValueError(
                f"init covariances have shape {params.covariances.shape}, which is "
                f"{params.covariance_type!r}, but covariance_type is {covariance_type!r}"
            )
        return params
    if not isinstance(init, str):
        raise TypeError(
            "init must be 'random', 'kmeans++', a mapping or a Params, got "
            f"{type(init).__name__}"
        )
    if init not in _INIT_METHODS:
        raise ValueError(f"init must be 'random', 'kmeans++' or a mapping, got {init!r}")
    if emission == "categorical":
        if init != "random":
            raise ValueError(
                f"init={init!r} needs Gaussian emissions; use 'random' or a mapping"
            )
        return Params(rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K),
                      emissionprob=rng.dirichlet(np.ones(n_symbols), size=K))
    T, D = X.shape
    if T < K:
        raise ValueError(f"need at least n_states = {K} observations to initialise, got {T}")
    if init != "random":  # k-means with k-means++ seeding
        from scipy.cluster.vq import kmeans2

        means, _ = kmeans2(X, K, minit="++", seed=rng)
        startprob = np.full(K, 1.0 / K)
        transmat = np.full((K, K), 1.0 / K)
    else:
        means = X[rng.choice(T, size=K, replace=False)]
        startprob = rng.dirichlet(np.ones(K))
        transmat = rng.dirichlet(np.ones(K), size=K)
    var = np.maximum(X.var(axis=0), min_covar) if T > 1 else np.ones(D)
    if covariance_type == "diag":
        cov = np.tile(var, (K, 1))
    else:
        full = np.cov(X, rowvar=False).reshape(D, D) if T > 1 else np.eye(D)
        full = full + min_covar * np.eye(D)
        cov = np.tile(full, (K, 1, 1))
    return Params(startprob, transmat, means=means, covariances=cov)


#: Initialisation methods of :func:`fit`, spelled as in :func:`emtutor.gmm.fit`
#: ("kmeans" is accepted as another name for "kmeans++").
_INIT_METHODS = ("random", "kmeans++", "kmeans")


def fit(
    X,
    n_states: int,
    *,
    emission: str = "categorical",
    covariance_type: str = "diag",
    lengths=None,
    init: str | Mapping[str, Any] | Params = "random",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-10,
    random_state=None,
    n_symbols: int | None = None,
    min_covar: float = 1e-6,
) -> FitResult:
    """Fit an HMM by EM (the Baum-Welch algorithm) and return the whole log-likelihood trace.

    Every iteration runs :func:`forward_backward` at the current parameters (E-step) and
    the closed-form M-step: ``startprob`` from the first-step posteriors, ``transmat`` from
    the expected transition counts normalised by row, and the emission parameters as
    posterior-weighted counts (categorical) or weighted means and covariances (Gaussian).
    The loop is :func:`emtutor.em.run`; one forward-backward pass at each new ``theta``
    serves both its log-likelihood and the next E-step, and the bound
    ``L(q, theta_new) = Q(theta_new; q) - Q(theta_old; q) + ln p(V | theta_old)`` is formed
    from the expected statistics of ``q`` (a few products over the data).
    The run stops when :func:`emtutor.em.has_converged` says so: the log-likelihood rose by
    less than ``tol * max(1, |ln p|)`` and did not fall (a fall issues an
    :class:`emtutor.em.LikelihoodDecreaseWarning`, is recorded in ``decreases`` and makes
    the run not ``converged``); with ``tol = 0`` it runs exactly ``max_iter`` iterations.

    Parameters
    ----------
    X : array_like
        Categorical: 1-D integer symbols. Gaussian: shape (T, D). Several sequences are
        concatenated along the first axis, with ``lengths``.
    n_states : int
        Number of hidden states ``K``, ``>= 1``.
    emission : {"categorical", "gaussian"}
    covariance_type : {"diag", "full"}
        For Gaussian emissions.
    lengths : array_like of int, optional
        Lengths of the sequences in ``X`` (as in hmmlearn); default one sequence.
    init : {"random", "kmeans++"}, mapping or Params
        ``"random"``: Dirichlet-distributed probabilities, Gaussian means at distinct random
        data points and every covariance equal to that of the data. ``"kmeans++"`` (Gaussian
        only; ``"kmeans"`` is the same): means from k-means seeded by k-means++, uniform
        ``startprob`` and ``transmat``. A mapping gives the
        initial parameters with keys ``startprob``, ``transmat`` and ``emissionprob``
        (categorical) or ``means``, ``covariances`` (Gaussian; variances of shape (K, D) for
        ``"diag"``), as does a :class:`Params`.
    n_init : int
        Number of random starts (``>= 1``); the run with the highest final log-likelihood
        is returned, as in :func:`emtutor.gmm.fit`. Must be 1 for given parameters.
    max_iter : int
        Maximum number of iterations, ``>= 0``.
    tol : float
        Tolerance of the stopping rule, ``>= 0``; the default ``1e-10`` is relative to
        ``|ln p|`` (absolute when ``|ln p| <= 1``), close to the rounding level of a long
        forward recursion, so a run stops only when EM has essentially stopped moving.
        ``tol = 0`` never reports convergence: the run stops after ``max_iter`` iterations
        (to time or compare a fixed number of iterations).
    random_state : int, numpy.random.Generator or None
        Seed (``>= 0``) or generator for ``"random"`` and ``"kmeans++"``; with
        ``n_init > 1`` one generator serves the starts in turn.
    n_symbols : int, optional
        Alphabet size ``M`` (categorical emissions only): every symbol must lie in
        ``0..M-1``, and an ``emissionprob`` given in ``init`` must have ``M`` columns.
        Default: the number of columns of that ``emissionprob``, else ``X.max() + 1``; an
        alphabet inferred from the data larger than ``max(1000, 10 T)`` symbols is refused
        as a likely stray value (give ``n_symbols`` if it is intended).
    min_covar : float
        Floor on the variances (diagonal) or the eigenvalues of the covariances (full)
        after every M-step, ``>= 0``. With ``0`` a state can collapse onto a single point;
        the fit then stops with an error naming the state and the iteration.

    Returns
    -------
    FitResult
        An :class:`emtutor.em.EMResult` (``theta``, the history ``thetas``,
        ``log_likelihood`` of length ``n_iter + 1``, ``elbo`` of length ``n_iter``,
        ``n_iter``, ``converged``, ``decreases``, and ``check_sandwich()``) with the final
        parameters also as ``params``.

    Raises
    ------
    TypeError
        If an integer argument (``n_states``, ``max_iter``, ``n_symbols``, entries of
        ``lengths``) is not an integer, a real one (``tol``, ``min_covar``) not a real
        number, ``random_state`` not a seed or a generator, ``init`` of the wrong type, or
        ``X`` holds non-numbers (strings, complex numbers; booleans for categorical ``X``).
    ValueError
        For malformed data, lengths, initial parameters or settings (out of range, or
        inconsistent with each other), data that are impossible under the initial
        parameters, or a Gaussian state that collapses with ``min_covar = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = Params(startprob=[0.5, 0.5], transmat=[[0.95, 0.05], [0.1, 0.9]],
    ...                emissionprob=[[0.8, 0.2], [0.2, 0.8]])
    >>> X, z = sample(truth, 500, random_state=1)
    >>> res = fit(X, 2, init={"startprob": [0.5, 0.5], "transmat": [[0.8, 0.2], [0.2, 0.8]],
    ...                       "emissionprob": [[0.6, 0.4], [0.4, 0.6]]})
    >>> print(res.converged, bool(np.all(np.diff(res.log_likelihood) >= -1e-9)))
    True True
    >>> print(res.params.emissionprob.round(1))
    [[0.8 0.2]
     [0.2 0.8]]
    >>> res
    FitResult(n_iter=43, converged=True, log_likelihood[-1]=-305.4966622, decreases=())

    With ``tol = 0`` exactly ``max_iter`` iterations run:

    >>> fit(X, 2, random_state=0, max_iter=5, tol=0).n_iter
    5
    """
    K = check_int(n_states, "n_states", low=1)
    _check_choice(emission, "emission", tuple(_INIT_KEYS))
    _check_choice(covariance_type, "covariance_type", ("diag", "full"))
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    min_covar = check_real(min_covar, "min_covar", low=0.0)
    # random numbers are drawn only to initialise; given parameters need none
    rng = check_random_state(random_state, create=isinstance(init, str))
    if n_symbols is not None:
        if emission != "categorical":
            raise ValueError("n_symbols is for categorical emissions only; omit it")
        n_symbols = check_int(n_symbols, "n_symbols", low=1)
    if emission == "categorical":
        X = _check_symbols(X)
        M = _alphabet_size(X, K, init, n_symbols)
    else:
        X = _check_features(X)
        M = None
    layout = _Layout(_check_lengths(lengths, X.shape[0]))
    n_init = check_int(n_init, "n_init", low=1)
    if n_init > 1 and not isinstance(init, str):
        raise ValueError("n_init > 1 needs a random init; every start from given parameters "
                         "is the same")

    XT = None if emission == "categorical" else np.ascontiguousarray(X.T)
    ws: dict = {}  # work arrays reused by every E-step of every run

    def e_step(p: Params):
        layout.cache["estep"] = object()  # statistics of an older posterior are stale
        E, shift, log_source = _emission_factors(X, p, XT, ws)
        return _estep(E, shift, p.startprob, p.transmat, layout, log_source, ws)

    def one_run(params: Params) -> FitResult:
        # em.run asks for ln p(V | theta) after every M-step and then for the E-step at the
        # same theta: one forward-backward pass serves both (kept until the next theta)
        last: list = [None, None]
        iteration = [0]

        def log_likelihood(p: Params) -> float:
            last[0], last[1] = p, _Posterior(p, *e_step(p))
            return last[1].log_likelihood

        def posterior(p: Params) -> _Posterior:
            return last[1] if last[0] is p else _Posterior(p, *e_step(p))

        def m_step(q: _Posterior, theta_old: Params) -> Params:
            iteration[0] += 1
            try:
                return _m_step(X, q.gamma, q.xi_sum, layout, theta_old, min_covar, XT)
            except _CollapsedState as exc:
                raise ValueError(
                    exc.message(f"in the M-step of iteration {iteration[0]}")) from None

        def bound(q: _Posterior, theta: Params) -> float:
            # L(q, theta) = Q(theta; q) + H(q), and H(q) = ln p(V | theta_q) - Q(theta_q; q)
            # for the posterior q at theta_q: both Q from the expected statistics of q
            if theta is q.theta:
                return q.log_likelihood
            Q_new, Q_old = _expected_complete(q, (theta, q.theta), X, layout, XT)
            return float(Q_new - Q_old + q.log_likelihood)

        res = _em_run(params, posterior, m_step, log_likelihood, elbo=bound, tol=tol,
                      max_iter=max_iter)
        return FitResult(theta=res.theta, thetas=res.thetas,
                         log_likelihood=res.log_likelihood, elbo=res.elbo,
                         n_iter=res.n_iter, converged=res.converged, decreases=res.decreases)

    best = None
    for _ in range(n_init):
        start = _initial_params(X, K, emission, covariance_type, init, M, rng, min_covar)
        _check_data(X, start)
        res = one_run(start)
        if best is None or res.log_likelihood[-1] > best.log_likelihood[-1]:
            best = res
    return best
