"""Checkers a student runs on their own EM code: monotonicity, ELBO + KL, gradients, E-step.

Each checker raises ``AssertionError`` with a message that says what failed, where
(iteration, coordinate, row and column) and by how much, and returns a useful number when
the check passes. Malformed inputs (NaN, wrong shapes) raise ``ValueError``/``TypeError``
instead, so a failing check always means the mathematics, not the plumbing, is wrong.
Tolerances and steps are checked like every argument of the package: a string, a bool or
``None`` is a ``TypeError`` naming the argument, a negative, infinite or NaN value a
``ValueError`` giving it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from emtutor import bounds
from emtutor._validation import as_float_array, check_real, check_same_shape

__all__ = [
    "assert_monotone",
    "check_decomposition",
    "check_gradient",
    "check_posterior",
    "rel_err",
]


def assert_monotone(values: ArrayLike, *, rtol: float = 1e-10) -> None:
    """Assert that a sequence (log-likelihoods, bounds) never decreases.

    A step from ``a = values[i-1]`` to ``b = values[i]`` fails if
    ``a - b > rtol * max(1, |a|, |b|)``: the slack is absolute for magnitudes below 1 and
    relative above, to absorb rounding.

    Parameters
    ----------
    values : array_like
        Shape (T,).
        Finite values, one per iteration (``values[0]`` at the start).
    rtol : float
        Relative tolerance, ``>= 0``.

    Raises
    ------
    AssertionError
        At the first decrease, naming the iteration, both values and the drop.
    TypeError
        If ``values`` holds something other than real numbers, or ``rtol`` is not a real
        number.
    ValueError
        If ``values`` is not 1-D or holds NaN or infinite values, or ``rtol`` is negative or
        not finite.

    Examples
    --------
    >>> assert_monotone([-10.0, -9.0, -9.0, -8.5])
    >>> assert_monotone([-10.0, -9.0, -9.5])
    Traceback (most recent call last):
    ...
    AssertionError: decrease at iteration 2: from -9 to -9.5, a drop of 0.5
    (relative 0.0526, allowed 1e-10)
    """
    rtol = check_real(rtol, "rtol", low=0.0)
    v = as_float_array(values, "values", ndim=1)
    if v.size < 2:
        return
    before, after = v[:-1], v[1:]
    scale = np.maximum(1.0, np.maximum(np.abs(before), np.abs(after)))
    drop = before - after
    bad = drop > rtol * scale
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(
            f"decrease at iteration {i + 1}: from {before[i]:.12g} to {after[i]:.12g}, "
            f"a drop of {drop[i]:.3g} (relative {drop[i] / scale[i]:.3g}, allowed {rtol:.3g})"
        )


def check_decomposition(
    log_joint: ArrayLike, q: ArrayLike, *, rtol: float = 1e-10
) -> bounds.Decomposition:
    """Check ``ln p(V | theta) = L(q, theta) + KL(q || p(Z | V, theta))``, KL >= 0 and L <= ln p.

    The three terms are computed independently by :func:`emtutor.bounds.decompose`; the
    slack of every comparison is ``rtol * max(1, |ln p|)``. If ``q`` puts mass on a state
    that is impossible under ``theta`` then ``L = -inf`` and ``KL = +inf``; the identity is
    then only meaningful in that limit and the check verifies just these two values.

    Parameters
    ----------
    log_joint : array_like
        Shape (N, K) or (K,).
        ``ln p(v_n, z_n = k | theta)`` of the student's model.
    q : array_like
        Same shape as ``log_joint``.
        Any distribution over the states of each data point.
    rtol : float
        Relative tolerance, ``>= 0``.

    Returns
    -------
    emtutor.bounds.Decomposition
        ``(log_likelihood, elbo, kl)``.

    Raises
    ------
    AssertionError
        If the identity or an inequality fails, with both sides and the difference.
    TypeError
        If an input holds something other than real numbers, or ``rtol`` is not a real
        number.
    ValueError
        If the inputs are malformed (shapes, NaN, rows of ``q`` not summing to 1: the message
        gives the sum and its deviation) or ``rtol`` is negative or not finite.

    Examples
    --------
    >>> import numpy as np
    >>> d = check_decomposition(np.log([[0.1, 0.3], [0.2, 0.2]]), [[0.5, 0.5], [0.9, 0.1]])
    >>> print(f"{d.log_likelihood:.4f} = {d.elbo:.4f} + {d.kl:.4f}")
    -1.8326 = -2.3445 + 0.5119
    """
    rtol = check_real(rtol, "rtol", low=0.0)
    d = bounds.decompose(log_joint, q)
    slack = rtol * max(1.0, abs(d.log_likelihood))
    if math.isinf(d.kl) or math.isinf(d.elbo):
        if not (d.kl == math.inf and d.elbo == -math.inf):
            raise AssertionError(
                f"q puts mass on an impossible state, so L should be -inf and KL +inf; "
                f"got L = {d.elbo} and KL = {d.kl}"
            )
        return d
    if d.kl < -slack:
        raise AssertionError(f"KL divergence is negative: KL = {d.kl:.6g} (allowed {-slack:.3g})")
    if d.elbo > d.log_likelihood + slack:
        raise AssertionError(
            f"ELBO exceeds the log-likelihood: L = {d.elbo:.12g} > ln p = "
            f"{d.log_likelihood:.12g} by {d.elbo - d.log_likelihood:.3g}"
        )
    gap = d.log_likelihood - (d.elbo + d.kl)
    if abs(gap) > slack:
        raise AssertionError(
            f"ln p != L + KL: ln p = {d.log_likelihood:.12g}, L + KL = {d.elbo + d.kl:.12g} "
            f"(L = {d.elbo:.12g}, KL = {d.kl:.12g}), difference {gap:.3g}, allowed {slack:.3g}"
        )
    return d


def check_gradient(
    f: Callable[[np.ndarray], float],
    grad: Callable[[np.ndarray], np.ndarray],
    x: ArrayLike,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
) -> float:
    """Compare an analytic gradient with central finite differences at ``x``.

    For each coordinate ``j`` the numeric derivative is
    ``(f(x + eps e_j) - f(x - eps e_j)) / (2 eps)`` (truncation error of order ``eps**2``,
    rounding error of order ``1e-16 |f| / eps``) and the error is
    ``|analytic_j - numeric_j| / max(1, |analytic_j|, |numeric_j|)`` (relative, absolute
    below magnitude 1). For a function with ``|f|`` much larger than 1, a larger ``eps``
    reduces the rounding part.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    grad : callable
        ``grad(x) -> array`` of the same shape as ``x``.
    x : array_like
        Point at which to compare (any shape; a scalar is allowed).
    eps : float
        Positive step.
    rtol : float
        Largest acceptable error, ``>= 0``.

    Returns
    -------
    float
        The largest error over the coordinates.

    Raises
    ------
    AssertionError
        If the largest error exceeds ``rtol``, naming the worst coordinate, both
        derivatives and the error.
    TypeError
        If ``f`` or ``grad`` is not callable, ``f`` returns something other than a real
        number (an array, a complex number, a string), an array holds something other
        than real numbers, or ``eps``/``rtol`` is not a real number.
    ValueError
        If ``x`` or a returned value holds NaN/inf, ``grad`` has the wrong shape, ``eps`` is
        not positive or ``rtol`` is negative (or either is not finite).

    Examples
    --------
    >>> import numpy as np
    >>> f = lambda w: float(np.sum(w ** 3))
    >>> err = check_gradient(f, lambda w: 3 * w ** 2, np.array([1.0, -2.0]))
    >>> err < 1e-8
    True
    >>> check_gradient(f, lambda w: 3 * w, np.array([1.0, -2.0]))
    Traceback (most recent call last):
    ...
    AssertionError: gradient mismatch at coordinate (1,): analytic -6, numeric 12,
    relative error 1.5 > 1e-06
    """
    if not callable(f) or not callable(grad):
        bad = "f" if not callable(f) else "grad"
        raise TypeError(f"{bad} must be callable")
    eps = check_real(eps, "eps", low=0.0, strict=True)
    rtol = check_real(rtol, "rtol", low=0.0)
    x0 = as_float_array(x, "x")
    analytic = as_float_array(grad(x0.copy()), "grad(x)")
    check_same_shape(x0, analytic, "x", "grad(x)")

    def value(point: np.ndarray, where: str) -> float:
        out = f(point)
        if isinstance(out, np.ndarray) and out.ndim == 0:
            out = out[()]
        if isinstance(out, (bool, np.bool_)) or not isinstance(out, numbers.Real):
            got = type(out).__name__
            if isinstance(out, np.ndarray):
                got += f" of shape {out.shape}"
            raise TypeError(f"f must return a real number, got {got}")
        out = float(out)
        if not math.isfinite(out):
            raise ValueError(f"f is {out} at {where}; it must be finite near x")
        return out

    numeric = np.empty_like(x0)
    flat = numeric.reshape(-1)
    for j in range(x0.size):  # one pair of evaluations per coordinate
        step = np.zeros(x0.size)
        step[j] = eps
        step = step.reshape(x0.shape)
        up = value(x0 + step, f"x + eps e_{j}")
        down = value(x0 - step, f"x - eps e_{j}")
        flat[j] = (up - down) / (2 * eps)
    scale = np.maximum(1.0, np.maximum(np.abs(analytic), np.abs(numeric)))
    err = (np.abs(analytic - numeric) / scale).reshape(-1)
    worst = int(np.argmax(err))
    max_err = float(err[worst])
    if max_err > rtol:
        idx = tuple(int(i) for i in np.unravel_index(worst, x0.shape))
        raise AssertionError(
            f"gradient mismatch at coordinate {idx}: analytic {analytic[idx]:.10g}, "
            f"numeric {numeric[idx]:.10g}, relative error {max_err:.3g} > {rtol:.3g}"
        )
    return max_err


def check_posterior(q: ArrayLike, log_joint: ArrayLike, *, atol: float = 1e-10) -> float:
    """Check that an E-step output ``q`` equals the posterior ``p(z_n = k | v_n, theta)``.

    First each row of ``q`` must be a distribution (entries ``>= 0``, sum 1 within
    ``K * atol``), then every entry must be within ``atol`` of the posterior computed from
    ``log_joint`` by :func:`emtutor.bounds.posterior`.

    Parameters
    ----------
    q : array_like
        Shape (N, K) or (K,).
        The student's responsibilities.
    log_joint : array_like
        Same shape as ``q``.
        ``ln p(v_n, z_n = k | theta)`` at the same parameters.
    atol : float
        Largest acceptable absolute difference, ``>= 0``.

    Returns
    -------
    float
        The largest absolute difference between ``q`` and the posterior.

    Raises
    ------
    AssertionError
        If a row of ``q`` is negative somewhere or does not sum to 1, or differs from the
        posterior; the message names the row (and column) and the size of the error.
    TypeError
        If an input holds something other than real numbers, or ``atol`` is not a real
        number.
    ValueError
        If the inputs are malformed (shapes, NaN, an impossible data point), or ``atol`` is
        negative or not finite.

    Examples
    --------
    >>> import numpy as np
    >>> lj = np.log([[0.1, 0.3], [0.2, 0.2]])
    >>> print(f"{check_posterior([[0.25, 0.75], [0.5, 0.5]], lj):.1e}")
    0.0e+00
    >>> check_posterior([[0.25, 0.75], [0.6, 0.4]], lj)
    Traceback (most recent call last):
    ...
    AssertionError: q differs from the posterior at row 1, column 0: q = 0.6, posterior = 0.5,
    difference 0.1 (allowed 1e-10)
    """
    atol = check_real(atol, "atol", low=0.0)
    post = bounds.posterior(log_joint)
    qa = as_float_array(q, "q", ndim=(1, 2))
    check_same_shape(post, qa, "log_joint", "q")
    q2, p2 = np.atleast_2d(qa), np.atleast_2d(post)
    neg = q2 < 0
    if neg.any():
        n, k = (int(i) for i in np.argwhere(neg)[0])
        raise AssertionError(f"q has a negative entry at row {n}, column {k}: {q2[n, k]:.6g}")
    sums = q2.sum(axis=1)
    off = np.abs(sums - 1.0)
    if (off > atol * q2.shape[1]).any():
        n = int(np.argmax(off))
        raise AssertionError(
            f"row {n} of q sums to {sums[n]:.12g}, not 1 (off by {sums[n] - 1.0:.3g}); "
            "responsibilities must be normalised over the states"
        )
    diff = np.abs(q2 - p2)
    n, k = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    worst = float(diff[n, k])
    if worst > atol:
        raise AssertionError(
            f"q differs from the posterior at row {n}, column {k}: q = {q2[n, k]:.12g}, "
            f"posterior = {p2[n, k]:.12g}, difference {worst:.3g} (allowed {atol:.3g})"
        )
    return worst


def rel_err(a, b) -> float:
    """Largest relative distance between ``a`` and ``b``, ``|a - b| / max(|a|, |b|, 1)``.

    The measure the course uses for "both sides of a step agree": relative for numbers
    larger than 1 in magnitude, absolute below (so two values near zero compare sensibly).

    Parameters
    ----------
    a, b : array_like
        Numbers or arrays of the same shape (broadcast together).

    Returns
    -------
    float
        The largest entry; ``0.0`` for identical inputs, ``inf`` if one side is infinite
        and the other not.

    Examples
    --------
    >>> rel_err(1000.0, 1000.001)
    1e-06
    >>> rel_err([0.0, 1e-20], [1e-15, 0.0])
    1e-15
    """
    a = as_float_array(a, "a", allow_neg_inf=True)
    b = as_float_array(b, "b", allow_neg_inf=True)
    with np.errstate(invalid="ignore"):
        diff = np.where(a == b, 0.0, np.abs(a - b))
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)
    with np.errstate(invalid="ignore"):
        out = np.where(diff == 0.0, 0.0, diff / scale)
    return float(np.max(np.where(np.isnan(out), np.inf, out)))
