"""Checkers a student runs on their own EM code: monotonicity, ELBO + KL, gradients, E-step,
M-step.

Each checker raises ``AssertionError`` with a message that says what failed, where
(iteration, coordinate, row and column) and by how much, and returns a useful number when
the check passes. Malformed inputs (NaN, wrong shapes) raise ``ValueError``/``TypeError``
instead, so a failing check always means the mathematics, not the plumbing, is wrong.
Tolerances and steps are checked like every argument of the package: a string, a bool or
``None`` is a ``TypeError`` naming the argument, a negative, infinite or NaN value a
``ValueError`` giving it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from emtutor import bounds, em
from emtutor._validation import (
    as_float_array,
    check_int,
    check_random_state,
    check_real,
    check_same_shape,
)

__all__ = [
    "CONSTRAINTS",
    "MStepCheck",
    "assert_monotone",
    "check_decomposition",
    "check_gradient",
    "check_m_step",
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


# ---------------------------------------------------------------- check_m_step
#: Feasible sets :func:`check_m_step` knows, by name.
CONSTRAINTS = ("simplex", "probability", "positive", "covariance", "real", "fixed")

# Defaults for the fields of a NamedTuple or dataclass, by the field's name.
_DEFAULT_CONSTRAINTS = {
    "weights": "simplex",
    "startprob": "simplex",
    "transmat": "simplex",
    "emissionprob": "simplex",
    "theta": "probability",
    "means": "real",
    "mean": "real",
    "variances": "positive",
}
_COVARIANCE_NAMES = ("covariances", "covariance", "cov", "covars")


class MStepCheck(NamedTuple):
    """What :func:`check_m_step` found for an M-step that passed.

    Attributes
    ----------
    theta : object
        The M-step's output.
    value : float
        ``Q(theta | q)`` at that output.
    largest_gain : float
        The largest ``Q(perturbed) - Q(theta)`` over every feasible perturbation tried
        (``<= 0`` up to rounding for the maximiser).

    Examples
    --------
    >>> MStepCheck(theta=0.5, value=-1.0, largest_gain=-2e-9).largest_gain < 0
    True
    """

    theta: object
    value: float
    largest_gain: float


def _parameter_fields(theta) -> tuple[list[str], list, Callable[[dict], object], bool]:
    """Names and values of the parameters in ``theta`` and a function rebuilding it.

    Returns ``(names, values, rebuild, named)``; ``rebuild({name: new_value})`` returns a
    copy of ``theta`` with those fields replaced, ``named`` says whether the names are
    field names (NamedTuple, dataclass) rather than positions.
    """
    if isinstance(theta, tuple) and hasattr(theta, "_fields"):
        return list(theta._fields), list(theta), lambda new: theta._replace(**new), True
    if dataclasses.is_dataclass(theta) and not isinstance(theta, type):
        names = [f.name for f in dataclasses.fields(theta) if f.init]
        values = [getattr(theta, n) for n in names]
        return names, values, lambda new: dataclasses.replace(theta, **new), True
    if isinstance(theta, (tuple, list)):
        names = [f"theta[{i}]" for i in range(len(theta))]

        def rebuild(new: dict):
            return type(theta)(new.get(n, v) for n, v in zip(names, theta, strict=True))

        return names, list(theta), rebuild, False
    scalar = np.ndim(theta) == 0
    return ["theta"], [theta], (
        lambda new: float(new["theta"]) if scalar else new["theta"]
    ), False


def _resolve_constraints(names, values, named: bool, constraints) -> dict[str, str]:
    """The feasible set of every numeric field: given, or the default for its name."""
    if isinstance(constraints, str):
        given = dict.fromkeys(names, constraints)
    elif constraints is None:
        given = {}
    elif isinstance(constraints, Mapping):
        given = {}
        for key, kind in constraints.items():
            name = f"theta[{key}]" if isinstance(key, numbers.Integral) and not named else key
            if name not in names:
                raise ValueError(
                    f"constraints names {key!r}, which is not a parameter of theta "
                    f"(its parameters are {', '.join(names)})"
                )
            given[name] = kind
    else:
        raise TypeError(
            "constraints must be None, a str or a mapping from parameter names to feasible "
            f"sets, got {type(constraints).__name__}"
        )
    out = {}
    for name, value in zip(names, values, strict=True):
        if value is None:
            continue
        kind = given.get(name)
        if kind is None and named:
            kind = _DEFAULT_CONSTRAINTS.get(name)
            if kind is None and name in _COVARIANCE_NAMES:
                kind = "covariance" if np.ndim(value) >= 3 else "positive"
        if kind is None:
            raise ValueError(
                f"check_m_step cannot tell the feasible set of the parameter {name}; give "
                f"constraints={{{name!r}: ...}} with one of {', '.join(CONSTRAINTS)}"
            )
        if kind not in CONSTRAINTS:
            raise ValueError(
                f"the feasible set of {name} must be one of {', '.join(CONSTRAINTS)}, "
                f"got {kind!r}"
            )
        out[name] = kind
    return out


def _index(idx) -> str:
    return ", ".join(str(int(i)) for i in idx)


def _check_feasible(name: str, kind: str, x: np.ndarray, atol: float = 1e-8) -> None:
    """Raise ``AssertionError`` if the M-step's ``x`` is outside the feasible set ``kind``."""
    head = f"the M-step's output is not feasible: {name}"
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise AssertionError(f"{head}[{_index(idx)}] = {x[tuple(idx)]}, not a finite number")
    if kind in ("simplex", "probability") and np.any(x < 0):
        idx = np.argwhere(x < 0)[0]
        raise AssertionError(
            f"{head}[{_index(idx)}] = {x[tuple(idx)]:.6g} is negative, by {-x[tuple(idx)]:.3g}; "
            "probabilities are >= 0"
        )
    if kind == "simplex":
        sums = x.sum(axis=-1) if x.ndim else x
        off = np.abs(np.asarray(sums) - 1.0)
        if np.any(off > atol * max(1, x.shape[-1] if x.ndim else 1)):
            i = np.unravel_index(int(np.argmax(off)), np.shape(off))
            s = float(np.asarray(sums)[i])
            where = "" if x.ndim <= 1 else f" (row {_index(i)})"
            raise AssertionError(
                f"{head} sums to {s:.12g}{where}, not 1 (off by {s - 1.0:.3g}); "
                f"{name} must be normalised, e.g. divided by its sum"
            )
    elif kind == "probability" and np.any(x > 1):
        idx = np.argwhere(x > 1)[0]
        raise AssertionError(
            f"{head}[{_index(idx)}] = {x[tuple(idx)]:.12g} exceeds 1 by {x[tuple(idx)] - 1:.3g}; "
            "probabilities are in [0, 1]"
        )
    elif kind == "positive" and np.any(x <= 0):
        idx = np.argwhere(x <= 0)[0]
        raise AssertionError(f"{head}[{_index(idx)}] = {x[tuple(idx)]:.6g} is not positive")
    elif kind == "covariance":
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            raise AssertionError(f"{head} has shape {x.shape}, not a stack of square matrices")
        asym = np.abs(x - np.swapaxes(x, -1, -2))
        scale = np.max(np.abs(x))
        if np.max(asym) > 1e-10 * scale:
            idx = np.argwhere(asym == np.max(asym))[0]
            raise AssertionError(
                f"{head} is not symmetric: entry [{_index(idx)}] differs from its transpose "
                f"by {np.max(asym):.3g}"
            )
        low = np.linalg.eigvalsh(0.5 * (x + np.swapaxes(x, -1, -2)))[..., 0]
        if np.any(low <= 0):
            i = np.unravel_index(int(np.argmin(low)), np.shape(low))
            where = f"[{_index(i)}]" if np.ndim(low) else ""
            raise AssertionError(
                f"{head}{where} is not positive definite: its smallest eigenvalue is "
                f"{float(np.asarray(low)[i]):.3g}"
            )


def _perturb(kind: str, x: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """A random point of the feasible set ``kind`` at relative distance about ``t`` from x."""
    if kind == "real":
        scale = np.abs(x) + max(float(np.mean(np.abs(x))), 1e-300) + (not np.any(x))
        return x + t * scale * rng.standard_normal(x.shape)
    # Distributions and probabilities move either towards a random point of the set, or
    # (half of the time) in log-odds, which also moves them away from its centre: an
    # M-step shrunk towards 1/2 is caught as well as one pushed away from it.
    if kind == "simplex":
        if rng.random() < 0.5:
            target = rng.dirichlet(np.ones(x.shape[-1]), size=x.shape[:-1])
            return (1 - t) * x + t * target
        with np.errstate(divide="ignore"):
            logits = np.log(x) + t * rng.standard_normal(x.shape)
        out = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return out / out.sum(axis=-1, keepdims=True)
    if kind == "probability":
        if rng.random() < 0.5:
            return (1 - t) * x + t * rng.random(x.shape)
        inside = (x > 0) & (x < 1)
        safe = np.where(inside, x, 0.5)
        moved = 1.0 / (1.0 + (1.0 / safe - 1.0) * np.exp(-t * rng.standard_normal(x.shape)))
        return np.where(inside, moved, x)
    if kind == "positive":
        return x * np.exp(t * rng.standard_normal(x.shape))
    # covariance: A S A^T with A = I + t G is symmetric positive definite for A non-singular
    a = np.eye(x.shape[-1]) + t * rng.standard_normal(x.shape)
    out = a @ x @ np.swapaxes(a, -1, -2)
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def check_m_step(
    m_step: Callable,
    q,
    expected_complete_loglik: Callable[[object, object], float],
    theta,
    *,
    constraints: str | Mapping | None = None,
    n_perturbations: int = 20,
    rtol: float = 1e-10,
    random_state=0,
) -> MStepCheck:
    r"""Check that an M-step maximises ``Q(theta | q)`` over the feasible parameters.

    ``theta_new = m_step(q)`` (or ``m_step(q, theta)`` if the M-step takes the previous
    parameters, the rule of :func:`emtutor.em.run`) is checked in three ways:

    1. it is **feasible**: weights and other distributions are ``>= 0`` and sum to 1 along
       their last axis (within ``1e-8``), probabilities lie in ``[0, 1]``, variances are
       positive, covariance matrices symmetric positive definite, everything finite;
    2. it does **not lower Q**: ``Q(theta_new | q) >= Q(theta | q)``;
    3. it **maximises Q**: no random feasible perturbation raises ``Q``. Each parameter is
       moved on its own, then all together, ``n_perturbations`` times at each of the
       relative step sizes ``0.3``, ``1e-2`` and ``1e-4``, staying inside its feasible set:
       a mixture ``(1 - t) w + t u`` with a random ``u`` of the set or, half of the time,
       a step ``t g`` in log-odds (distributions, probabilities), ``s e^{t g}``
       (positive), ``A S A^T`` with ``A = I + t G`` (covariances), ``mu + t (|mu| + c) g``
       (real). Large steps find gross errors, small ones errors of a fraction of a percent.

    A gain counts if it exceeds ``rtol * max(1, |Q(theta_new | q)|)``. The M-step of EM
    maximises ``Q`` exactly, so any feasible point, near or far, has a ``Q`` no larger:
    the check has no false alarms beyond rounding, and it is sensitive to any error that
    moves the output away from the maximiser (a mean off by a factor, an M-step that
    ignores the responsibilities). It cannot prove maximality (a random search can miss a
    direction), but in a few hundred tries it rarely does.

    Parameters
    ----------
    m_step : callable
        ``m_step(q) -> theta`` or ``m_step(q, theta_old) -> theta``.
    q : object
        The E-step output the M-step is given (usually the posterior at ``theta``).
    expected_complete_loglik : callable
        ``expected_complete_loglik(q, theta) -> float``, ``Q(theta | q)``: the expected
        complete-data log-likelihood, with the same argument order as the ``elbo`` of
        :func:`emtutor.em.run`. The bound ``L(q, theta)`` works as well, since it differs
        from ``Q`` by ``H(q)``, which does not depend on ``theta``. For a model with one
        discrete latent variable per data point,
        ``lambda q, theta: emtutor.bounds.expected_complete_loglik(log_joint(theta), q)``.
    theta : object
        The parameters ``q`` was computed from (``theta_old``); also the comparison point
        of check 2. A NamedTuple, a dataclass, a tuple, an array or a number.
    constraints : str or mapping, optional
        The feasible set of each parameter, one of ``"simplex"`` (non-negative, summing to
        1 along the last axis), ``"probability"`` (in ``[0, 1]``), ``"positive"``,
        ``"covariance"`` (symmetric positive definite along the last two axes),
        ``"real"`` and ``"fixed"`` (not perturbed). A mapping gives them by field name
        (or position, for a plain tuple); a string gives one set for every parameter.
        Fields of a NamedTuple or dataclass default by name: ``weights``, ``startprob``,
        ``transmat``, ``emissionprob`` are simplices, ``theta`` (the coins) probabilities,
        ``means`` real, ``covariances`` covariance matrices when 3-D and positive
        variances otherwise; fields that are ``None`` are skipped.
    n_perturbations : int
        Random perturbations per parameter and per step size, ``>= 1``.
    rtol : float
        Relative slack of the comparisons, ``>= 0``.
    random_state : None, int or numpy.random.Generator
        Seed of the perturbations (fixed by default, so a check is reproducible).

    Returns
    -------
    MStepCheck
        ``(theta, value, largest_gain)``: the M-step's output, ``Q`` there, and the largest
        change of ``Q`` found by the perturbations (``<= 0`` up to rounding).

    Raises
    ------
    AssertionError
        If the output is infeasible (naming the parameter, the entry or row, and by how
        much), lowers ``Q`` below its value at ``theta``, or a perturbation of a parameter
        raises ``Q`` (naming the parameter, the step size and the gain).
    TypeError
        If ``m_step`` or ``expected_complete_loglik`` is not callable or returns something
        that is not a real number, or ``constraints`` has the wrong type.
    ValueError
        If a parameter has no known feasible set, ``Q`` is not finite at the output or is
        NaN at a feasible point, or ``n_perturbations``/``rtol`` are out of range.

    Examples
    --------
    The two-coin mixture: the package's M-step passes, one that forgets to normalise the
    mixing weights (they sum to the number of sets) does not.

    >>> import numpy as np
    >>> from emtutor import bounds, coins
    >>> heads, n = np.array([5, 9, 8, 4, 7]), np.full(5, 10)
    >>> theta = coins.Params(np.array([0.6, 0.5]), np.array([0.6, 0.4]))
    >>> q = coins.e_step(heads, n, theta)
    >>> def Q(q, p):
    ...     return bounds.expected_complete_loglik(coins.log_joint(heads, n, p), q)
    >>> def m_step(q):
    ...     return coins.m_step(heads, n, q)
    >>> found = check_m_step(m_step, q, Q, theta)
    >>> print(found.theta.theta.round(4), found.largest_gain <= 0)
    [0.7023 0.5702] True
    >>> def unnormalised(q):
    ...     return coins.Params(m_step(q).theta, q.sum(axis=0))
    >>> check_m_step(unnormalised, q, Q, theta)
    Traceback (most recent call last):
    ...
    AssertionError: the M-step's output is not feasible: weights sums to 5, not 1 (off by 4);
    weights must be normalised, e.g. divided by its sum
    """
    if not callable(m_step) or not callable(expected_complete_loglik):
        bad = "m_step" if not callable(m_step) else "expected_complete_loglik"
        raise TypeError(f"{bad} must be callable")
    n_perturbations = check_int(n_perturbations, "n_perturbations", low=1)
    rtol = check_real(rtol, "rtol", low=0.0)
    rng = check_random_state(random_state)
    theta_new = m_step(q, theta) if em.wants_theta_old(m_step) else m_step(q)
    names, values, rebuild, named = _parameter_fields(theta_new)
    kinds = _resolve_constraints(names, values, named, constraints)
    arrays = {
        name: as_float_array(v, name, allow_nan=True, allow_inf=True)
        for name, v in zip(names, values, strict=True) if name in kinds
    }
    for name, kind in kinds.items():
        if kind != "fixed":
            _check_feasible(name, kind, arrays[name])

    def value(point, where: str) -> float:
        out = expected_complete_loglik(q, point)
        if isinstance(out, np.ndarray) and out.size == 1:
            out = out.reshape(())[()]
        if isinstance(out, (bool, np.bool_)) or not isinstance(out, numbers.Real):
            raise TypeError(
                f"expected_complete_loglik must return a real number, got {type(out).__name__}"
            )
        out = float(out)
        if math.isnan(out):
            raise ValueError(
                f"expected_complete_loglik is nan at {where}; if a parameter has a bounded "
                "domain, declare it in constraints (e.g. 'probability')"
            )
        return out

    best = value(theta_new, "the M-step's output")
    if not math.isfinite(best):
        raise ValueError(
            f"Q(theta | q) is {best} at the M-step's output; it must be finite there"
        )
    slack = rtol * max(1.0, abs(best))
    before = value(theta, "theta (the parameters q was computed from)")
    if before - best > slack:
        raise AssertionError(
            f"the M-step lowered Q: Q(theta_new | q) = {best:.12g} is below "
            f"Q(theta | q) = {before:.12g} at the parameters q came from, by "
            f"{before - best:.3g} (allowed {slack:.3g}); the M-step must maximise Q"
        )
    free = [name for name, kind in kinds.items() if kind != "fixed"]
    groups = [[name] for name in free] + ([free] if len(free) > 1 else [])
    largest = -math.inf
    for group in groups:
        what = group[0] if len(group) == 1 else "all parameters together"
        for t in (0.3, 1e-2, 1e-4):
            for _ in range(n_perturbations):
                moved = {n: _perturb(kinds[n], arrays[n], t, rng) for n in group}
                gain = value(rebuild(moved), f"a feasible perturbation of {what}") - best
                largest = max(largest, gain)
                if gain > slack:
                    raise AssertionError(
                        f"the M-step's output does not maximise Q: moving {what} by a "
                        f"feasible step of relative size {t:g} raises Q(theta | q) from "
                        f"{best:.12g} to {best + gain:.12g}, by {gain:.3g} (relative "
                        f"{gain / max(1.0, abs(best)):.3g}, allowed {rtol:.3g})"
                    )
    return MStepCheck(theta_new, best, largest)
