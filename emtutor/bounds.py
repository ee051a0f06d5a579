"""The log-likelihood of a latent-variable model, its lower bound (ELBO) and the KL gap.

For data points ``v_1, ..., v_N`` that each have one discrete latent variable
``z_n in {1, ..., K}``, everything is a function of the (N, K) array

    log_joint[n, k] = ln p(v_n, z_n = k | theta)

(``-inf`` marks a state that is impossible under ``theta``) and, for the bound, of an
(N, K) array ``q`` whose rows are distributions ``q_n(z_n)``. The functions here are the
course's equations written as code:

* :func:`log_likelihood`, equation :eq:`eq-latent-loglik`:
  ``ln p(V | theta) = sum_n ln sum_k p(v_n, z_n = k | theta)``;
* :func:`posterior`, the E-step ``p(z_n = k | v_n, theta)``;
* :func:`elbo`, :func:`kl_divergence` and :func:`decompose`, equation :eq:`eq-elbo-kl`:
  ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))``;
* :func:`expected_complete_loglik` and :func:`entropy`, equation :eq:`eq-bound-after-estep`:
  ``L(q, theta) = Q(theta, theta_old) + H(q)`` when ``q = p(Z | V, theta_old)``.

A 1-D input of shape (K,) is treated as a single data point (one row); totals are then
that row's value and per-row results are scalars.

The convention ``0 ln 0 = 0`` (and ``0 * (-inf) = 0``) is used throughout: a state with
``q = 0`` contributes nothing, whatever its log joint.

Grouped data: every function that returns a total over the data points takes optional
per-row ``weights`` (counts ``w_n >= 0``, one per row), and returns ``sum_n w_n f_n``
instead of ``sum_n f_n``, the same number as repeating row ``n`` ``w_n`` times
(``np.repeat``) without building the repeated array. A row of weight 0 contributes nothing,
not even when it is impossible under ``theta`` (it is simply not in the data set).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp, rel_entr, softmax, xlogy

from emtutor._validation import as_float_array, check_distribution, check_same_shape

__all__ = [
    "Decomposition",
    "decompose",
    "elbo",
    "entropy",
    "expected_complete_loglik",
    "kl_divergence",
    "log_likelihood",
    "log_posterior",
    "posterior",
]


class Decomposition(NamedTuple):
    """The three terms of ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))``.

    Attributes
    ----------
    log_likelihood : float
        ``ln p(V | theta)``, computed by :func:`log_likelihood`.
    elbo : float
        ``L(q, theta)``, computed by :func:`elbo`.
    kl : float
        ``sum_n KL(q_n || p(z_n | v_n, theta))``, computed from the definition of the KL
        divergence (not as the difference of the other two).

    Examples
    --------
    >>> d = Decomposition(log_likelihood=-2.0, elbo=-2.5, kl=0.5)
    >>> print(d.log_likelihood == d.elbo + d.kl, d.kl)
    True 0.5
    """

    log_likelihood: float
    elbo: float
    kl: float


def _check_weights(weights, arr: np.ndarray, name: str) -> np.ndarray | None:
    """Validate per-row counts for the rows (all axes but the last) of ``arr``.

    Returns ``None`` for ``None``, else a float array of shape ``arr.shape[:-1]`` (``(1,)``
    for a single row given as a 1-D ``arr``) of finite numbers ``>= 0``.
    """
    if weights is None:
        return None
    want = arr.shape[:-1] if arr.ndim > 1 else (1,)
    w = as_float_array(weights, "weights", allow_empty=True)
    if w.shape != want:
        raise ValueError(
            f"weights must have shape {want}, one count per row of {name}, got shape {w.shape}"
        )
    if np.any(w < 0):
        idx = tuple(int(i) for i in np.argwhere(w < 0)[0])
        where = idx[0] if len(idx) == 1 else idx
        raise ValueError(
            f"weights must be counts >= 0, got weights[{where}] = {w[idx]:.6g}"
        )
    return w


def _weighted_total(values, w: np.ndarray | None) -> float:
    """``sum_n w_n values_n`` with ``0 * (+-inf) = 0``; the plain sum if ``w`` is None."""
    values = np.asarray(values, dtype=float)
    if w is None:
        return float(np.sum(values))
    values = values.reshape(w.shape)
    return float(np.sum(np.multiply(w, values, out=np.zeros_like(values), where=w > 0)))


def _check_log_joint(log_joint, weights=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate an (N, K) or (K,) log joint and its row weights.

    Every row of positive weight needs one possible state.
    """
    lj = as_float_array(log_joint, "log_joint", ndim=(1, 2), allow_neg_inf=True)
    w = _check_weights(weights, lj, "log_joint")
    impossible = np.all(np.isneginf(lj), axis=-1)
    if w is not None:
        impossible = impossible & (w.reshape(impossible.shape) > 0)
    if np.any(impossible):
        rows = np.atleast_1d(impossible)
        n = int(np.argmax(rows))
        raise ValueError(
            f"log_joint row {n} is -inf for every state: data point {n} is impossible "
            f"under these parameters ({int(rows.sum())} such row(s)), so ln p(V | theta) = -inf"
        )
    return lj, w


def _check_q(q, like: np.ndarray | None = None, name: str = "q") -> np.ndarray:
    """Validate rows of ``q`` as distributions (and its shape against the log joint ``like``)."""
    arr = as_float_array(q, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the states), got a scalar")
    if like is not None:
        check_same_shape(like, arr, "log_joint", name)
    return check_distribution(arr, name)


def _total_or_rows(values: np.ndarray):
    """Return a 0-d result as a NumPy scalar, anything else unchanged."""
    return values[()] if values.ndim == 0 else values


def log_likelihood(log_joint, *, weights=None) -> float:
    """Incomplete-data log-likelihood ``ln p(V | theta) = sum_n logsumexp_k log_joint[n, k]``.

    This is equation :eq:`eq-latent-loglik` for independent data points, evaluated in log space.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``; ``-inf`` allowed, but not for a whole row (of
        positive weight).
    weights : array_like, optional
        Shape (N,).
        Counts ``w_n >= 0`` of the rows (grouped data); the result is then
        ``sum_n w_n (...)_n``, as if row ``n`` were repeated ``w_n`` times.

    Returns
    -------
    float
        The total over the data points.

    Raises
    ------
    ValueError
        If ``log_joint`` has NaN or ``+inf`` entries, the wrong number of dimensions, or a
        row that is ``-inf`` everywhere (an impossible data point); if ``weights`` has the
        wrong shape or holds a negative, NaN or infinite count.

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> print(f"{log_likelihood(lj):.6f}  {np.log(0.4) + np.log(0.4):.6f}")
    -1.832581  -1.832581

    Grouped data: the first row seen three times and the second once,

    >>> repeated = lj[[0, 0, 0, 1]]
    >>> print(f"{log_likelihood(lj, weights=[3, 1]):.6f} {log_likelihood(repeated):.6f}")
    -3.665163 -3.665163
    """
    lj, w = _check_log_joint(log_joint, weights)
    if w is None:
        return float(np.sum(logsumexp(lj, axis=-1)))
    return _weighted_total(_row_logsumexp(lj), w)


def _row_logsumexp(lj: np.ndarray) -> np.ndarray:
    """``logsumexp`` of each row, ``-inf`` (without a warning) for an impossible row."""
    with np.errstate(divide="ignore"):
        return np.atleast_1d(logsumexp(lj, axis=-1))


def posterior(log_joint) -> np.ndarray:
    """E-step: the posterior ``p(z_n = k | v_n, theta)``, a softmax of each row.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``log_joint``; each row sums to 1, impossible states get 0.

    Raises
    ------
    ValueError
        As :func:`log_likelihood`.

    Examples
    --------
    >>> import numpy as np
    >>> print(posterior(np.log([[0.1, 0.3], [0.2, 0.2]])).round(4))
    [[0.25 0.75]
     [0.5  0.5 ]]
    >>> print(posterior([0.0, -np.inf]))
    [1. 0.]
    """
    lj, _ = _check_log_joint(log_joint)
    return softmax(lj, axis=-1)


def entropy(q, *, weights=None) -> np.ndarray | float:
    """Entropy ``H(q_n) = -sum_k q_nk ln q_nk`` of each row (along the last axis), ``0 ln 0 = 0``.

    Parameters
    ----------
    q : array_like
        Shape (..., K).
        Distributions along the last axis.
    weights : array_like, optional
        Shape ``q.shape[:-1]`` ((N,) for an (N, K) ``q``).
        Counts ``w_n >= 0`` of the rows. If given, the result is the total
        ``sum_n w_n H(q_n)``, the entropy of the factorised ``q`` of the repeated data.

    Returns
    -------
    numpy.ndarray or float
        Without ``weights``: shape ``q.shape[:-1]`` (a NumPy scalar for a single
        distribution); sum it for the entropy of the factorised ``q(Z) = prod_n q_n(z_n)``.
        With ``weights``: the weighted total, a float.

    Raises
    ------
    ValueError
        If ``q`` has NaN, negative entries or rows not summing to 1, or ``weights`` has the
        wrong shape or holds a negative, NaN or infinite count.

    Examples
    --------
    >>> import numpy as np
    >>> print(entropy([[0.5, 0.5], [1.0, 0.0]]).round(6), f"{np.log(2):.6f}")
    [0.693147 0.      ] 0.693147
    >>> print(f"{entropy([[0.5, 0.5], [1.0, 0.0]], weights=[3, 7]):.6f}")  # 3 ln 2
    2.079442
    """
    arr = _check_q(q)
    w = _check_weights(weights, arr, "q")
    rows = 0.0 - np.sum(xlogy(arr, arr), axis=-1)
    return _total_or_rows(rows) if w is None else _weighted_total(rows, w)


def kl_divergence(q, p=None, *, log_p=None, weights=None) -> np.ndarray | float:
    """KL divergence ``KL(q || p) = sum_k q_k (ln q_k - ln p_k)`` along the last axis.

    Give ``p`` as probabilities, or ``log_p`` as log-probabilities. The log form is the one
    to use for a posterior: where a row's log joints differ by more than about 745, the
    posterior's probabilities underflow to 0 and ``KL`` computed from them is ``+inf``,
    while ``ln p = log_joint - logsumexp(log_joint)`` stays exact. Uses ``0 ln(0 / p) = 0``
    and gives ``+inf`` only where ``q_k > 0`` but ``p_k = 0`` (``ln p_k = -inf``).

    Parameters
    ----------
    q : array_like
        Shape (..., K).
        Distributions along the last axis.
    p : array_like, optional
        Same shape; distributions along the last axis.
    log_p : array_like, optional
        Same shape; the logarithms of distributions (``-inf`` for probability 0). Exactly
        one of ``p`` and ``log_p`` is given.
    weights : array_like, optional
        Shape ``q.shape[:-1]`` ((N,) for an (N, K) ``q``).
        Counts ``w_n >= 0`` of the rows. If given, the result is the total
        ``sum_n w_n KL(q_n || p_n)`` (a row of weight 0 adds nothing, even an infinite
        divergence).

    Returns
    -------
    numpy.ndarray or float
        Without ``weights``: shape ``q.shape[:-1]``, every entry ``>= 0`` (a NumPy scalar
        for one pair). With ``weights``: the weighted total, a float ``>= 0``.

    Raises
    ------
    ValueError
        If the shapes differ, either argument is not a distribution along the last axis
        (``exp(log_p)`` must sum to 1 within ``1e-8``), neither or both of ``p`` and
        ``log_p`` are given, or ``weights`` has the wrong shape or holds a negative, NaN or
        infinite count.

    Examples
    --------
    >>> import numpy as np
    >>> print(f"{kl_divergence([0.5, 0.5], [0.9, 0.1]):.6f}")
    0.510826
    >>> print(kl_divergence([[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]).round(6))
    [0.       0.693147]
    >>> print(kl_divergence([0.5, 0.5], [1.0, 0.0]))
    inf
    >>> print(f"{kl_divergence([0.5, 0.5], log_p=[0.0, -800.0]):.4f}")  # p = (1, e^-800)
    399.3069
    >>> kl = kl_divergence([[0.5, 0.5], [0.5, 0.5]], [[0.9, 0.1], [1.0, 0.0]],
    ...                    weights=[2, 0])  # twice the first row, the second left out
    >>> print(f"{kl:.6f}")
    1.021651
    """
    if (p is None) == (log_p is None):
        raise ValueError("give exactly one of p (probabilities) and log_p (log-probabilities)")
    qa = _check_q(q, name="q")
    w = _check_weights(weights, qa, "q")
    if p is not None:
        pa = _check_q(p, name="p")
        check_same_shape(qa, pa, "q", "p")
        rows = np.sum(rel_entr(qa, pa), axis=-1)
    else:
        lp = as_float_array(log_p, "log_p", allow_neg_inf=True)
        check_same_shape(qa, lp, "q", "log_p")
        check_distribution(np.exp(lp), "exp(log_p)")
        rows = _kl_log(qa, lp)
    return _total_or_rows(rows) if w is None else _weighted_total(rows, w)


def _kl_log(q: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """``sum_k q_k (ln q_k - ln p_k)`` over the last axis, ``0 (ln 0 - ln p) = 0``."""
    terms = np.zeros_like(q)
    mass = q > 0
    np.subtract(np.log(q, where=mass, out=np.zeros_like(q)), log_p, out=terms, where=mass)
    terms *= q
    # Rounding can make a zero divergence come out as -1e-17; KL is never negative.
    return np.maximum(np.sum(terms, axis=-1), 0.0)


def log_posterior(log_joint) -> np.ndarray:
    """Log of the posterior, ``ln p(z_n = k | v_n, theta) = log_joint - logsumexp(log_joint)``.

    Exact where :func:`posterior`'s probabilities underflow (log joints of a row more than
    about 745 apart); ``-inf`` for impossible states.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).

    Returns
    -------
    numpy.ndarray
        Same shape; ``exp`` of each row sums to 1.

    Examples
    --------
    >>> print(log_posterior([0.0, -800.0]))
    [   0. -800.]
    """
    lj, _ = _check_log_joint(log_joint)
    return lj - logsumexp(lj, axis=-1, keepdims=True)


def _q_times_log_joint(lj: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``q * log_joint`` with ``0 * (-inf) = 0``."""
    return np.multiply(q, lj, out=np.zeros_like(q), where=q > 0)


def expected_complete_loglik(log_joint, q, *, weights=None) -> float:
    """``Q = sum_n sum_k q_nk ln p(v_n, z_n = k | theta)``, with ``0 * (-inf) = 0``.

    With ``q`` the posterior at ``theta_old`` and ``log_joint`` evaluated at ``theta``, this
    is ``Q(theta, theta_old)``, the function the M-step maximises (equation :eq:`eq-m-step`),
    and ``L(q, theta) = Q(theta, theta_old) + H(q)`` (equation :eq:`eq-bound-after-estep`).

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``.
    q : array_like
        Same shape as ``log_joint``.
        Rows are distributions over the K states.
    weights : array_like, optional
        Shape (N,).
        Counts ``w_n >= 0`` of the rows (grouped data); the result is then
        ``sum_n w_n (...)_n``, as if row ``n`` were repeated ``w_n`` times.

    Returns
    -------
    float
        ``-inf`` if ``q`` puts mass on a state that is impossible under ``theta`` (in a row
        of positive weight).

    Raises
    ------
    ValueError
        If the inputs are malformed (see :func:`log_likelihood` and :func:`entropy`).

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> q = posterior(lj)
    >>> total = expected_complete_loglik(lj, q) + float(entropy(q).sum())
    >>> print(f"{total:.6f} {elbo(lj, q):.6f}")
    -1.832581 -1.832581
    """
    lj, w = _check_log_joint(log_joint, weights)
    qa = _check_q(q, lj)
    return _weighted_total(np.sum(_q_times_log_joint(lj, qa), axis=-1), w)


def elbo(log_joint, q, *, weights=None) -> float:
    """Evidence lower bound ``L(q, theta) = sum_n sum_k q_nk (log_joint[n, k] - ln q_nk)``.

    Uses ``0 ln 0 = 0`` and ``0 * (-inf) = 0``; ``L <= ln p(V | theta)`` with equality iff
    every row of ``q`` is the posterior (equation :eq:`eq-elbo-kl`).

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``.
    q : array_like
        Same shape as ``log_joint``.
        Rows are distributions over the K states.
    weights : array_like, optional
        Shape (N,).
        Counts ``w_n >= 0`` of the rows (grouped data); the result is then
        ``sum_n w_n (...)_n``, as if row ``n`` were repeated ``w_n`` times.

    Returns
    -------
    float
        The total over data points; ``-inf`` if ``q`` puts mass on an impossible state (in
        a row of positive weight).

    Raises
    ------
    ValueError
        If the inputs are malformed (see :func:`log_likelihood` and :func:`entropy`).

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> print(f"{elbo(lj, [[0.5, 0.5], [0.5, 0.5]]):.6f} <= {log_likelihood(lj):.6f}")
    -1.976422 <= -1.832581
    >>> print(f"{elbo(lj, posterior(lj)):.6f}")
    -1.832581
    """
    lj, w = _check_log_joint(log_joint, weights)
    qa = _check_q(q, lj)
    return _weighted_total(np.sum(_q_times_log_joint(lj, qa) - xlogy(qa, qa), axis=-1), w)


def decompose(log_joint, q, *, weights=None) -> Decomposition:
    """Compute the three terms of ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))``.

    Each term is computed from its own definition: ``ln p`` by :func:`log_likelihood`,
    ``L`` by :func:`elbo` and ``KL = sum_n KL(q_n || posterior_n)`` by
    :func:`kl_divergence` against :func:`log_posterior` (in log space, so that it stays
    finite when the posterior's probabilities underflow), so checking ``ln p = L + KL`` on
    the result is a real test of equation :eq:`eq-elbo-kl`.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``.
    q : array_like
        Same shape as ``log_joint``.
        Rows are distributions over the K states.
    weights : array_like, optional
        Shape (N,).
        Counts ``w_n >= 0`` of the rows (grouped data); the result is then
        ``sum_n w_n (...)_n``, as if row ``n`` were repeated ``w_n`` times.

    Returns
    -------
    Decomposition
        ``(log_likelihood, elbo, kl)`` as floats. If ``q`` puts mass on an impossible state,
        ``elbo = -inf`` and ``kl = +inf``.

    Raises
    ------
    ValueError
        If the inputs are malformed.

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> d = decompose(lj, [[0.5, 0.5], [0.5, 0.5]])
    >>> print(f"{d.log_likelihood:.6f} = {d.elbo:.6f} + {d.kl:.6f}")
    -1.832581 = -1.976422 + 0.143841
    >>> d = decompose([[0.0, -800.0, -5.0]], [[0.5, 0.25, 0.25]])  # posterior underflows
    >>> print(f"{d.log_likelihood:.6f} = {d.elbo:.6f} + {d.kl:.6f}")
    0.006715 = -200.210279 + 200.216995
    """
    lj, w = _check_log_joint(log_joint, weights)
    qa = _check_q(q, lj)
    with np.errstate(invalid="ignore"):  # an impossible row of weight 0: -inf - (-inf)
        log_post = lj - _row_logsumexp(lj).reshape(lj.shape[:-1] + (1,))
    kl = _weighted_total(_kl_log(qa, log_post), w)
    return Decomposition(log_likelihood(lj, weights=w), elbo(lj, qa, weights=w), kl)
