"""The two-coin problem of Do and Batzoglou (2008): a mixture of binomial distributions.

Set ``n`` of the data consists of ``n_tosses[n]`` tosses of one coin, of which ``heads[n]``
came up heads. Which coin was used is the latent variable ``z_n in {0, ..., K-1}``; coin
``k`` is chosen with probability ``weights[k]`` and shows heads with probability
``theta[k]``. So

    ln p(v_n, z_n = k | theta) = ln weights[k] + ln C(n_n, h_n)
                                 + h_n ln theta[k] + (n_n - h_n) ln(1 - theta[k]).

The E-step gives responsibilities ``r_nk = p(z_n = k | v_n, theta)``; the M-step sets

    theta[k] = sum_n r_nk h_n / sum_n r_nk n_n,      weights[k] = (1/N) sum_n r_nk,

the fraction of heads among the tosses "expected" to come from coin ``k``.
:func:`fit` runs these steps with :func:`emtutor.em.run`, recording the log-likelihood and
the bound at every iteration.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, xlog1py, xlogy

from emtutor import bounds, em
from emtutor._validation import (
    as_float_array,
    as_int_array,
    check_distribution,
    check_max_iter,
    check_tol,
)
from emtutor.em import EmptyComponentWarning

__all__ = [
    "EmptyComponentWarning",
    "Params",
    "e_step",
    "expected_counts",
    "fit",
    "from_strings",
    "log_joint",
    "log_likelihood",
    "m_step",
]


class Params(NamedTuple):
    """Parameters of the K-coin mixture.

    Attributes
    ----------
    theta : numpy.ndarray
        Shape (K,).
        Head probability of each coin, in [0, 1].
    weights : numpy.ndarray
        Shape (K,).
        Probability of choosing each coin, non-negative, summing to 1.

    Examples
    --------
    >>> p = Params(theta=np.array([0.6, 0.5]), weights=np.array([0.5, 0.5]))
    >>> print(p.theta, p.weights)
    [0.6 0.5] [0.5 0.5]
    """

    theta: np.ndarray
    weights: np.ndarray


def from_strings(sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Count heads and tosses in strings of ``"H"`` and ``"T"`` (one string per set).

    Parameters
    ----------
    sequences : list of str
        Each string records one set of tosses, for example ``"HTTTHHTHTH"``. Only the
        characters ``H`` and ``T`` (either case) are allowed.

    Returns
    -------
    heads : numpy.ndarray of int
        Shape (N,).
        Number of heads in each set.
    n_tosses : numpy.ndarray of int
        Shape (N,).
        Length of each set.

    Raises
    ------
    TypeError
        If ``sequences`` is a single string, is not iterable, or holds something other than
        strings.
    ValueError
        If there are no sets, a set is empty, or a character is neither H nor T.

    Examples
    --------
    >>> heads, n_tosses = from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "hth"])
    >>> print(heads, n_tosses)
    [5 9 2] [10 10  3]
    """
    if isinstance(sequences, str):
        raise TypeError(
            "sequences must be a list of strings, one per set of tosses, not a single string"
        )
    try:
        seqs = list(sequences)
    except TypeError as exc:
        raise TypeError(
            "sequences must be a list of strings, one per set of tosses, got "
            f"{type(sequences).__name__}"
        ) from exc
    if not seqs:
        raise ValueError("sequences is empty; at least one set of tosses is needed")
    heads = np.empty(len(seqs), dtype=int)
    n_tosses = np.empty(len(seqs), dtype=int)
    for i, s in enumerate(seqs):  # one entry per string; the strings are the raw data
        if not isinstance(s, str):
            raise TypeError(f"sequence {i} must be a string, got {type(s).__name__}")
        if not s:
            raise ValueError(f"sequence {i} is empty; every set needs at least one toss")
        up = s.upper()
        bad = set(up) - {"H", "T"}
        if bad:
            pos = next(j for j, c in enumerate(up) if c in bad)
            raise ValueError(
                f"sequence {i} has the character {s[pos]!r} at position {pos}; "
                "only 'H' (heads) and 'T' (tails) are allowed"
            )
        heads[i] = up.count("H")
        n_tosses[i] = len(up)
    return heads, n_tosses


def _check_counts(heads, n_tosses) -> tuple[np.ndarray, np.ndarray]:
    """Validate the counts; return ``heads`` and ``n_tosses`` as float arrays of shape (N,).

    Counts are whole numbers: integer arrays, or float arrays holding whole numbers (data read
    from a text file); booleans, strings, complex numbers and fractions are refused.
    """
    # as_float_array first, for its messages about NaN and infinities
    as_float_array(heads, "heads", ndim=1)
    as_float_array(n_tosses, "n_tosses", ndim=(0, 1))
    h = as_int_array(heads, "heads", ndim=1, low=0).astype(float)
    n = as_int_array(n_tosses, "n_tosses", ndim=(0, 1), low=1).astype(float)
    if n.ndim == 1 and n.shape != h.shape:
        raise ValueError(
            f"n_tosses must be one number or one per set: heads has shape {h.shape}, "
            f"n_tosses has shape {n.shape}"
        )
    n = np.broadcast_to(n, h.shape)
    over = h > n
    if over.any():
        i = int(np.argmax(over))
        raise ValueError(
            f"set {i} has more heads than tosses: heads = {h[i]:g} > n_tosses = {n[i]:g}"
        )
    return h, n


def _check_bool(value, name: str) -> bool:
    """Return a flag as a Python bool; anything but ``True``/``False`` is a ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def _check_resp(resp, n_sets: int) -> np.ndarray:
    """Validate responsibilities: (N, K), one row per set, rows summing to 1."""
    r = as_float_array(resp, "resp", ndim=2)
    if r.shape[0] != n_sets:
        raise ValueError(f"resp must have one row per set: got {r.shape[0]} rows for {n_sets} sets")
    return check_distribution(r, "resp")


def _check_params(params, name: str = "params", theta_name: str = "theta") -> Params:
    """Validate ``(theta, weights)``; return a :class:`Params` of float arrays.

    ``params`` must be a :class:`Params` or another pair (tuple, list, or array of two rows);
    a dict is refused rather than unpacked into its keys.
    """
    if isinstance(params, dict):
        raise TypeError(
            f"{name} must be a coins.Params or a (theta, weights) pair, got a dict with keys "
            f"{sorted(map(str, params))}; use coins.Params(theta=..., weights=...)"
        )
    if not isinstance(params, (tuple, list, np.ndarray)) or len(params) != 2:
        got = type(params).__name__
        if isinstance(params, (tuple, list, np.ndarray)):
            got += f" of length {len(params)}"
        raise TypeError(f"{name} must be a coins.Params or a (theta, weights) pair, got {got}")
    theta_in, weights_in = params
    theta = as_float_array(theta_in, theta_name, ndim=1)
    weights = as_float_array(weights_in, "weights", ndim=1)
    if theta.shape != weights.shape:
        raise ValueError(
            f"{theta_name} and weights must have one entry per coin, got {theta.size} and "
            f"{weights.size}"
        )
    outside = (theta < 0) | (theta > 1)
    if outside.any():
        k = int(np.argmax(outside))
        raise ValueError(f"{theta_name} must lie in [0, 1], got {theta_name}[{k}] = {theta[k]:g}")
    check_distribution(weights, "weights")
    return Params(theta, weights)


def log_joint(heads: ArrayLike, n_tosses: ArrayLike, params: Params) -> np.ndarray:
    """``ln p(v_n, z_n = k | theta)`` for every set ``n`` and coin ``k``, shape (N, K).

    Includes the log binomial coefficient ``ln C(n_n, h_n)``, so the rows' ``logsumexp`` is
    the true log-probability of each set's head count. Impossible states (a coin with
    ``theta = 0`` and some heads, or with weight 0) get ``-inf``.

    Parameters
    ----------
    heads : array_like of int
        Shape (N,).
        Heads in each set.
    n_tosses : int or array_like of int
        One number for all sets, or one per set (shape (N,)).
        Tosses in each set.
    params : Params
        ``(theta, weights)``.

    Returns
    -------
    numpy.ndarray
        Shape (N, K).

    Raises
    ------
    TypeError
        If ``params`` is not a :class:`Params` or ``(theta, weights)`` pair, or an array
        holds something other than real numbers (strings, complex numbers; booleans for
        the counts).
    ValueError
        If the counts or parameters are invalid (see :func:`fit`).

    Examples
    --------
    >>> lj = log_joint([5], 10, Params(np.array([0.5, 1.0]), np.array([0.5, 0.5])))
    >>> print(np.exp(lj).round(6), f"{0.5 * 252 / 1024:.6f}")
    [[0.123047 0.      ]] 0.123047
    """
    h, n = _check_counts(heads, n_tosses)
    theta, weights = _check_params(params)
    log_binom = gammaln(n + 1) - gammaln(h + 1) - gammaln(n - h + 1)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    return (
        log_binom[:, None]
        + xlogy(h[:, None], theta[None, :])
        + xlog1py((n - h)[:, None], -theta[None, :])
        + log_w[None, :]
    )


def e_step(heads: ArrayLike, n_tosses: ArrayLike, params: Params) -> np.ndarray:
    """Responsibilities ``r_nk = p(z_n = k | v_n, theta)``, shape (N, K), rows summing to 1.

    Raises
    ------
    ValueError
        If a set is impossible under every coin (for example heads with every
        ``theta = 0``), or the inputs are invalid.

    Examples
    --------
    >>> heads, n_tosses = from_strings(["HTTTHHTHTH", "HHHHTHHHHH"])
    >>> r = e_step(heads, n_tosses, Params(np.array([0.6, 0.5]), np.array([0.5, 0.5])))
    >>> print(r.round(2))
    [[0.45 0.55]
     [0.8  0.2 ]]
    """
    return bounds.posterior(log_joint(heads, n_tosses, params))


def m_step(
    heads: ArrayLike,
    n_tosses: ArrayLike,
    resp: ArrayLike,
    *,
    estimate_weights: bool = True,
    weights: ArrayLike | None = None,
    theta_old: ArrayLike | None = None,
) -> Params:
    """Maximise the expected complete-data log-likelihood for given responsibilities.

    ``theta[k] = sum_n r_nk h_n / sum_n r_nk n_n`` (expected heads over expected tosses of
    coin ``k``) and, if ``estimate_weights``, ``weights[k] = (1/N) sum_n r_nk``.

    When the expected tails of a coin are positive but so small that the quotient rounds to
    exactly 1, ``theta[k]`` is set to the largest float below 1 (and symmetrically for 0):
    the exact maximiser is not 1, and a rounded 1 would turn the sets that carry the tiny
    responsibility into impossible events, making the bound ``-inf``.

    Parameters
    ----------
    heads, n_tosses : array_like of int
        The counts, as in :func:`log_joint`.
    resp : array_like
        Shape (N, K).
        Rows are distributions over the coins (usually from :func:`e_step`).
    estimate_weights : bool
        If ``False``, the weights are held at ``weights`` (uniform if ``None``).
    weights : array_like, optional
        Shape (K,).
        Fixed weights used when ``estimate_weights`` is ``False``; ignored otherwise.
    theta_old : array_like, optional
        Shape (K,).
        Previous head probabilities. A coin with zero responsibility
        (``sum_n r_nk n_n = 0``) keeps its ``theta_old`` value, or gets 1/2 if ``theta_old``
        is ``None``; any value maximises the objective for that coin, and an
        :class:`EmptyComponentWarning` names it.

    Returns
    -------
    Params

    Raises
    ------
    TypeError
        If ``estimate_weights`` is not a bool, or an array holds something other than real
        numbers.
    ValueError
        If the counts are invalid, ``resp`` is not (N, K) with rows summing to 1 (the
        message gives the sum and its deviation from 1), or ``weights``/``theta_old`` do not
        have K valid entries.

    Examples
    --------
    >>> heads, n_tosses = from_strings(["HTTTHHTHTH", "HHHHTHHHHH"])
    >>> p = m_step(heads, n_tosses, [[0.45, 0.55], [0.8, 0.2]], estimate_weights=False)
    >>> print(p.theta.round(4), p.weights)
    [0.756  0.6067] [0.5 0.5]
    """
    estimate_weights = _check_bool(estimate_weights, "estimate_weights")
    h, n = _check_counts(heads, n_tosses)
    r = _check_resp(resp, h.size)
    n_coins = r.shape[1]
    if estimate_weights:
        new_weights = r.sum(axis=0) / r.shape[0]
        new_weights = new_weights / new_weights.sum()
    elif weights is None:
        new_weights = np.full(n_coins, 1.0 / n_coins)
    else:
        new_weights = check_distribution(as_float_array(weights, "weights", ndim=1), "weights")
        if new_weights.size != n_coins:
            raise ValueError(
                f"weights has {new_weights.size} entries but resp has {n_coins} columns"
            )
    if theta_old is None:
        fallback = np.full(n_coins, 0.5)
    else:
        fallback = as_float_array(theta_old, "theta_old", ndim=1)
        if fallback.size != n_coins:
            raise ValueError(
                f"theta_old has {fallback.size} entries but resp has {n_coins} columns"
            )
        fallback = _check_params(
            (fallback, np.full(n_coins, 1.0 / n_coins)), theta_name="theta_old"
        ).theta
    exp_heads = r.T @ h
    exp_tails = r.T @ (n - h)
    exp_tosses = exp_heads + exp_tails
    empty = exp_tosses <= 0
    if empty.any():
        ks = np.flatnonzero(empty).tolist()
        warnings.warn(
            f"coin(s) {ks} have zero responsibility: no data informs their head probability, "
            f"so it stays at {fallback[empty].round(6).tolist()}",
            EmptyComponentWarning,
            stacklevel=2,
        )
    safe = np.where(empty, 1.0, exp_tosses)
    theta = np.clip(exp_heads / safe, 0.0, 1.0)
    # theta is exactly 1 (or 0) only if the expected tails (heads) are exactly 0; otherwise a
    # rounded 1 would make a set with positive responsibility impossible (ln 0 = -inf)
    theta = np.where((theta == 1.0) & (exp_tails > 0), np.nextafter(1.0, 0.0), theta)
    theta = np.where((theta == 0.0) & (exp_heads > 0), np.nextafter(0.0, 1.0), theta)
    theta = np.where(empty, fallback, theta)
    return Params(theta, new_weights)


def log_likelihood(heads: ArrayLike, n_tosses: ArrayLike, params: Params) -> float:
    """Total log-likelihood ``ln p(V | theta) = sum_n ln sum_k p(v_n, z_n = k | theta)``.

    Raises
    ------
    ValueError
        If a set is impossible under every coin, or the inputs are invalid.

    Examples
    --------
    >>> print(f"{log_likelihood([5, 9], 10, Params(np.array([0.5]), np.array([1.0]))):.4f}")
    -6.0309
    """
    return bounds.log_likelihood(log_joint(heads, n_tosses, params))


def expected_counts(
    heads: ArrayLike, n_tosses: ArrayLike, resp: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Expected heads and tails attributed to each coin: ``sum_n r_nk h_n``, ``sum_n r_nk t_n``.

    These are the entries of the table in Do and Batzoglou (2008), Figure 1b.

    Parameters
    ----------
    heads, n_tosses : array_like of int
        The counts, as in :func:`log_joint`.
    resp : array_like
        Shape (N, K).
        Responsibilities, rows summing to 1.

    Returns
    -------
    expected_heads, expected_tails : numpy.ndarray
        Shape (K,).

    Examples
    --------
    >>> heads, n_tosses = from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH",
    ...                                 "HTHTTTHHTT", "THHHTHHHTH"])
    >>> r = e_step(heads, n_tosses, Params(np.array([0.6, 0.5]), np.array([0.5, 0.5])))
    >>> eh, et = expected_counts(heads, n_tosses, r)
    >>> print(eh.round(1), et.round(1))
    [21.3 11.7] [8.6 8.4]
    """
    h, n = _check_counts(heads, n_tosses)
    r = _check_resp(resp, h.size)
    return r.T @ h, r.T @ (n - h)


def fit(
    heads: ArrayLike,
    n_tosses: ArrayLike,
    params0: Params,
    *,
    estimate_weights: bool = True,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> em.EMResult:
    """Run EM on the coin mixture from ``params0`` with :func:`emtutor.em.run`.

    Parameters
    ----------
    heads : array_like of int
        Shape (N,).
        Heads in each set (non-negative whole numbers).
    n_tosses : int or array_like of int
        One number for all sets, or one per set (shape (N,)).
        Tosses in each set (at least 1 and at least ``heads``).
    params0 : Params
        Starting ``(theta, weights)``, a :class:`Params` or another pair (tuple, list);
        theta in [0, 1], weights summing to 1.
    estimate_weights : bool
        If ``False`` the weights stay at ``params0.weights`` (the setting of Do and
        Batzoglou, who choose each coin with probability 1/2).
    tol : float
        Tolerance ``>= 0`` of the stopping rule :func:`emtutor.em.has_converged`; ``0``
        never reports convergence and runs exactly ``max_iter`` iterations.
    max_iter : int
        Maximum number of EM iterations, ``>= 0`` (a Python or numpy integer).

    Returns
    -------
    emtutor.em.EMResult
        The result of :func:`emtutor.em.run`: ``thetas`` holds :class:`Params`,
        ``elbo[i] = L(r_i, params_{i+1})``, and ``decreases`` lists the iterations where
        the log-likelihood fell (empty for this exact EM).

    Raises
    ------
    TypeError
        If ``params0`` is not a :class:`Params` or ``(theta, weights)`` pair (a dict, for
        instance), ``max_iter`` is not an integer, ``tol`` is not a real number,
        ``estimate_weights`` is not a bool, or an array holds something other than real
        numbers.
    ValueError
        For invalid counts (negative, fractional, more heads than tosses), parameters
        (theta outside [0, 1], weights not summing to 1, different numbers of coins),
        ``tol < 0`` or NaN, ``max_iter < 0``, or a data set impossible under ``params0``.

    Examples
    --------
    The example of Do and Batzoglou (2008), Figure 1b:

    >>> heads, n_tosses = from_strings(["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH",
    ...                                 "HTHTTTHHTT", "THHHTHHHTH"])
    >>> p0 = Params(np.array([0.6, 0.5]), np.array([0.5, 0.5]))
    >>> res = fit(heads, n_tosses, p0, estimate_weights=False, max_iter=10)
    >>> print(res.thetas[1].theta.round(2), res.thetas[10].theta.round(2))
    [0.71 0.58] [0.8  0.52]
    >>> res.check_sandwich()
    >>> res
    EMResult(n_iter=10, converged=False, log_likelihood[-1]=-9.797, decreases=())

    With ``tol=0`` the run never counts as converged and stops after ``max_iter``:

    >>> res = fit(heads, n_tosses, p0, estimate_weights=False, tol=0, max_iter=25)
    >>> res.n_iter, res.converged
    (25, False)
    """
    estimate_weights = _check_bool(estimate_weights, "estimate_weights")
    tol = check_tol(tol)
    max_iter = check_max_iter(max_iter)
    h, n = _check_counts(heads, n_tosses)
    params0 = _check_params(params0, "params0")
    fixed_weights = params0.weights

    def estep(params: Params):
        return e_step(h, n, params)

    def mstep(resp, old: Params) -> Params:
        # two parameters: em.run passes theta_old, so an empty coin keeps its value
        return m_step(
            h, n, resp, estimate_weights=estimate_weights, weights=fixed_weights,
            theta_old=old.theta,
        )

    def bound(resp, params: Params) -> float:
        return bounds.elbo(log_joint(h, n, params), resp)

    return em.run(
        params0, estep, mstep, lambda p: log_likelihood(h, n, p), elbo=bound, tol=tol,
        max_iter=max_iter,
    )
