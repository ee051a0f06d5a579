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


def _check_log_joint(log_joint) -> np.ndarray:
    """Validate an (N, K) or (K,) log joint; every row needs one possible state."""
    lj = as_float_array(log_joint, "log_joint", ndim=(1, 2), allow_neg_inf=True)
    impossible = np.all(np.isneginf(lj), axis=-1)
    if np.any(impossible):
        rows = np.atleast_1d(impossible)
        n = int(np.argmax(rows))
        raise ValueError(
            f"log_joint row {n} is -inf for every state: data point {n} is impossible "
            f"under these parameters ({int(rows.sum())} such row(s)), so ln p(V | theta) = -inf"
        )
    return lj


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


def log_likelihood(log_joint) -> float:
    """Incomplete-data log-likelihood ``ln p(V | theta) = sum_n logsumexp_k log_joint[n, k]``.

    This is equation :eq:`eq-latent-loglik` for independent data points, evaluated in log space.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)``; ``-inf`` allowed, but not for a whole row.

    Returns
    -------
    float
        The total over the data points.

    Raises
    ------
    ValueError
        If ``log_joint`` has NaN or ``+inf`` entries, the wrong number of dimensions, or a
        row that is ``-inf`` everywhere (an impossible data point).

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> print(f"{log_likelihood(lj):.6f}  {np.log(0.4) + np.log(0.4):.6f}")
    -1.832581  -1.832581
    """
    lj = _check_log_joint(log_joint)
    return float(np.sum(logsumexp(lj, axis=-1)))


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
    lj = _check_log_joint(log_joint)
    return softmax(lj, axis=-1)


def entropy(q) -> np.ndarray:
    """Entropy ``H(q_n) = -sum_k q_nk ln q_nk`` of each row (along the last axis), ``0 ln 0 = 0``.

    Parameters
    ----------
    q : array_like
        Shape (..., K).
        Distributions along the last axis.

    Returns
    -------
    numpy.ndarray
        Shape ``q.shape[:-1]`` (a NumPy scalar for a single distribution). Sum it for the
        entropy of the factorised ``q(Z) = prod_n q_n(z_n)``.

    Raises
    ------
    ValueError
        If ``q`` has NaN, negative entries or rows not summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> print(entropy([[0.5, 0.5], [1.0, 0.0]]).round(6), f"{np.log(2):.6f}")
    [0.693147 0.      ] 0.693147
    """
    arr = _check_q(q)
    return _total_or_rows(0.0 - np.sum(xlogy(arr, arr), axis=-1))


def kl_divergence(q, p=None, *, log_p=None) -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        Shape ``q.shape[:-1]``, every entry ``>= 0`` (a NumPy scalar for one pair).

    Raises
    ------
    ValueError
        If the shapes differ, either argument is not a distribution along the last axis
        (``exp(log_p)`` must sum to 1 within ``1e-8``), or neither or both of ``p`` and
        ``log_p`` are given.

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
    """
    if (p is None) == (log_p is None):
        raise ValueError("give exactly one of p (probabilities) and log_p (log-probabilities)")
    qa = _check_q(q, name="q")
    if p is not None:
        pa = _check_q(p, name="p")
        check_same_shape(qa, pa, "q", "p")
        return _total_or_rows(np.sum(rel_entr(qa, pa), axis=-1))
    lp = as_float_array(log_p, "log_p", allow_neg_inf=True)
    check_same_shape(qa, lp, "q", "log_p")
    check_distribution(np.exp(lp), "exp(log_p)")
    return _total_or_rows(_kl_log(qa, lp))


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
    lj = _check_log_joint(log_joint)
    return lj - logsumexp(lj, axis=-1, keepdims=True)


def _q_times_log_joint(lj: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``q * log_joint`` with ``0 * (-inf) = 0``."""
    return np.multiply(q, lj, out=np.zeros_like(q), where=q > 0)


def expected_complete_loglik(log_joint, q) -> float:
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

    Returns
    -------
    float
        ``-inf`` if ``q`` puts mass on a state that is impossible under ``theta``.

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
    lj = _check_log_joint(log_joint)
    qa = _check_q(q, lj)
    return float(np.sum(_q_times_log_joint(lj, qa)))


def elbo(log_joint, q) -> float:
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

    Returns
    -------
    float
        The total over data points; ``-inf`` if ``q`` puts mass on an impossible state.

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
    lj = _check_log_joint(log_joint)
    qa = _check_q(q, lj)
    return float(np.sum(_q_times_log_joint(lj, qa) - xlogy(qa, qa)))


def decompose(log_joint, q) -> Decomposition:
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
    lj = _check_log_joint(log_joint)
    qa = _check_q(q, lj)
    kl = float(np.sum(_kl_log(qa, lj - logsumexp(lj, axis=-1, keepdims=True))))
    return Decomposition(log_likelihood(lj), elbo(lj, qa), kl)
