"""Generic EM driver with a full trace, the package's stopping rule and its decrease warning.

Every EM iteration alternates two steps (Dempster, Laird and Rubin, 1977):

* E-step: ``q = e_step(theta)``, the posterior ``p(Z | V, theta)`` of the latent variables;
* M-step: ``theta = m_step(q)`` (or ``m_step(q, theta_old)``), the maximiser of the
  expected complete-data log-likelihood ``Q(theta, theta_old)``, equivalently of the bound
  ``L(q, theta)``.

:func:`run` drives any model written as these two functions plus its log-likelihood
``ln p(V | theta)``. It records every parameter value, the log-likelihood evaluated at
exactly those parameters, and optionally the evidence lower bound ``L(q_i, theta_{i+1})``,
so that the chain of inequalities

    ln p(V | theta_i) = L(q_i, theta_i) <= L(q_i, theta_{i+1}) <= ln p(V | theta_{i+1})

can be checked on the numbers (:meth:`EMResult.check_sandwich`), and, with ``check=True``,
each step on its own while the run goes (the E-step makes the bound tight, the M-step does
not lower it). A run without a bound issues a :class:`MissingElboWarning`.

:func:`has_converged` is the one stopping rule of the package and
:class:`LikelihoodDecreaseWarning` the one warning for a log-likelihood that went down;
the mixture and hidden-Markov modules use both.
"""

from __future__ import annotations

import inspect
import math
import numbers
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emtutor._validation import (
    as_float_array,
    check_int,
    check_max_iter,
    check_real,
    check_tol,
)

__all__ = [
    "NOISE_RTOL",
    "EMResult",
    "EmptyComponentWarning",
    "LikelihoodDecreaseWarning",
    "MissingElboWarning",
    "convergence_rate",
    "find_decreases",
    "has_converged",
    "rate_matrix",
    "run",
    "wants_theta_old",
]

#: Relative size of a change in the log-likelihood that is treated as rounding noise.
NOISE_RTOL = 1e-12

#: Relative slack of the per-iteration checks of ``run(..., check=True)``.
_CHECK_RTOL = 1e-9


class LikelihoodDecreaseWarning(UserWarning):
    """Warning issued when an EM iteration lowers the log-likelihood by more than rounding noise.

    A correct E-step and M-step can never lower ``ln p(V | theta)``; a decrease points to a
    bug (a wrong M-step formula, an E-step that is not the exact posterior) or to a
    numerical breakdown. The message names the iteration and the size of the drop, absolute
    and relative to ``max(1, |ln p|)``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     has_converged(-10.0, -10.5, tol=1e-8, iteration=3)
    False
    >>> print(caught[0].category.__name__)
    LikelihoodDecreaseWarning
    >>> print(caught[0].message)
    log-likelihood decreased at iteration 3: from -10 to -10.5, a drop of 0.5 (relative 0.05);
    EM never lowers it, so check the E-step and the M-step
    """


class MissingElboWarning(UserWarning):
    """Warning issued by :func:`run` when it is given no ``elbo``.

    Without the bound ``L(q, theta)`` the trace holds only ``ln p(V | theta)``, and a
    monotone log-likelihood is weak evidence: an E-step that is not the exact posterior or
    an M-step that only improves ``Q`` still climb. With ``elbo=`` the run records
    ``L(q_i, theta_{i+1})`` for :meth:`EMResult.check_sandwich` and can check every step
    (``check=True``). The warning is issued once per call of :func:`run`.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = run(0.0, lambda t: t, lambda q: q, lambda t: -1.0, max_iter=2)
    >>> print(caught[0].category.__name__, len(caught))
    MissingElboWarning 1
    """


class EmptyComponentWarning(UserWarning):
    """Warning issued when an M-step finds a component with no responsibility at all.

    If the responsibilities of component ``k`` sum to (almost) zero, the data say nothing
    about its parameters: the expected complete-data log-likelihood does not depend on them,
    so every value maximises it. The mixture modules then keep the component's previous
    parameters (see :func:`emtutor.coins.m_step` and :func:`emtutor.gmm.fit` for what each
    does exactly), so the log-likelihood still never decreases, and issue this warning
    naming the component. Fitting fewer components or starting elsewhere is usually the
    better answer.

    Examples
    --------
    >>> import warnings
    >>> from emtutor import coins
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     p = coins.m_step([3, 4], 5, [[1.0, 0.0], [1.0, 0.0]], theta_old=[0.5, 0.2])
    >>> print(caught[0].category.__name__, p.theta.round(2))
    EmptyComponentWarning [0.7 0.2]
    """


def _as_finite_float(value: Any, what: str, iteration: int) -> float:
    """Return ``value`` as a Python float, or raise naming ``what`` and the iteration.

    Real numbers only: a string such as ``'-3.0'`` or a bool is a bug in the function that
    returned it, and is refused rather than converted.
    """
    if type(value) is float:  # the common case, without the abc checks below
        if math.isfinite(value):
            return value
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(())[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{what} at iteration {iteration} must be a real number, got {type(value).__name__}"
        )
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(
            f"{what} at iteration {iteration} is {out}; it must be finite "
            "(an impossible data point or a degenerate parameter value)"
        )
    return out


def _noise(current: float) -> float:
    """Size of a change of ``ln p`` treated as rounding: ``NOISE_RTOL * max(1, |ln p|)``."""
    return NOISE_RTOL * max(1.0, abs(current))


def find_decreases(log_likelihood) -> tuple[tuple[int, float], ...]:
    """The iterations of a trace where ``ln p`` fell beyond rounding, with the size of the drop.

    Entry ``i`` of ``log_likelihood`` is ``ln p(V | theta_i)``; iteration ``i`` lowered it if
    ``ln p_i < ln p_{i-1} - 1e-12 max(1, |ln p_i|)`` (the rounding allowance of
    :func:`has_converged`). Exact EM never does; a decrease is a bug in an E-step or an
    M-step, or an M-step that does not maximise ``Q`` exactly.

    Parameters
    ----------
    log_likelihood : array_like, shape (n_iter + 1,)

    Returns
    -------
    tuple of (int, float)
        ``(iteration, drop)`` pairs with ``drop > 0``, in order; empty for a monotone trace.

    Examples
    --------
    >>> find_decreases([-10.0, -9.0, -9.5, -9.5 - 1e-14, -8.0])
    ((2, 0.5),)
    """
    ll = np.asarray(log_likelihood, dtype=float)
    out = []
    for i in range(1, ll.size):
        drop = float(ll[i - 1] - ll[i])
        if drop > _noise(float(ll[i])):
            out.append((i, drop))
    return tuple(out)


def has_converged(previous: float, current: float, *, tol: float, iteration: int) -> bool:
    r"""Decide whether EM has converged after an iteration; warn if the log-likelihood fell.

    With :math:`\Delta = \text{current} - \text{previous}` and the scale
    :math:`s = \max(1, |\text{current}|)`, the rule is

    * :math:`0 \le \Delta < \text{tol}\cdot s` : converged, return ``True``;
    * :math:`\Delta \ge \text{tol}\cdot s` : still improving, return ``False``;
    * :math:`-\text{noise} \le \Delta < 0` with :math:`\text{noise} = 10^{-12}\, s`
      (:data:`NOISE_RTOL`): a change of zero blurred by rounding; treated as
      :math:`\Delta = 0`, so converged, return ``True``;
    * :math:`\Delta < -\text{noise}` : a genuine decrease, which exact EM never makes.
      A :class:`LikelihoodDecreaseWarning` naming the iteration and the drop is issued and
      the function returns ``False`` (a decrease is never reported as convergence).

    The tolerance is absolute for small log-likelihoods (:math:`|\ln p| \le 1`) and relative
    for large ones, because a log-likelihood is a sum over the data set and grows with it.

    Why :math:`10^{-12}\, s` for the noise: one evaluation of ``ln p`` is a (pairwise) sum of
    per-point ``logsumexp`` terms, each exact to a few units in the last place, so its
    relative rounding error is of order :math:`\log_2(N)\,\varepsilon \approx 10^{-14}`
    (:math:`\varepsilon \approx 2.2\times 10^{-16}`); two evaluations at parameters that
    differ only by rounding can therefore disagree by about :math:`10^{-14}\, s`.
    :math:`10^{-12}\, s` (about 4500 units in the last place) leaves a factor of a hundred
    for longer sums, recursions (forward algorithm) and parameter round-off, yet is far below
    any decrease caused by a wrong E- or M-step, which moves the log-likelihood by amounts
    comparable to the step itself.

    Parameters
    ----------
    previous, current : float
        The log-likelihood before and after the iteration (finite).
    tol : float
        Convergence tolerance ``>= 0``, absolute for ``|current| <= 1``, relative above.
        ``tol = 0`` never reports convergence (a run then stops at its ``max_iter``).
    iteration : int
        Number of the iteration that produced ``current`` (the first EM iteration is 1);
        it is only used in messages.

    Returns
    -------
    bool
        ``True`` iff the iteration changed the log-likelihood by less than the tolerance
        and did not lower it beyond rounding noise.

    Raises
    ------
    ValueError
        If ``tol`` is negative or not finite, or a log-likelihood is not finite.
    TypeError
        If an argument is not a real number.

    Examples
    --------
    >>> has_converged(-100.0, -99.0, tol=1e-6, iteration=1)
    False
    >>> has_converged(-100.0, -100.0 + 1e-7, tol=1e-10, iteration=2)  # 1e-7 >= 1e-10 * 100
    False
    >>> has_converged(-100.0, -100.0 + 1e-7, tol=1e-8, iteration=2)  # 1e-7 < 1e-8 * 100
    True
    >>> has_converged(-100.0, -100.0 - 1e-12, tol=1e-6, iteration=3)  # rounding noise
    True
    """
    tol = check_tol(tol)
    iteration = check_int(iteration, "iteration")
    previous = _as_finite_float(previous, "previous log-likelihood", iteration)
    current = _as_finite_float(current, "log-likelihood", iteration)
    delta = current - previous
    scale = max(1.0, abs(current))
    if delta < -_noise(current):
        drop = -delta
        warnings.warn(
            f"log-likelihood decreased at iteration {iteration}: from {previous:.10g} to "
            f"{current:.10g}, a drop of {drop:.3g} (relative {drop / scale:.3g}); "
            "EM never lowers it, so check the E-step and the M-step",
            LikelihoodDecreaseWarning,
            stacklevel=2,
        )
        return False
    return max(delta, 0.0) < tol * scale if tol > 0 else False


@dataclass(frozen=True, eq=False)
class EMResult:
    """Trace of an EM run: parameters, log-likelihoods and bounds at every iteration.

    Attributes
    ----------
    theta : object
        Final parameters, ``thetas[-1]``.
    thetas : list
        ``thetas[0]`` is the starting value, ``thetas[i]`` the parameters after ``i``
        iterations; ``len(thetas) == n_iter + 1``.
    log_likelihood : numpy.ndarray
        ``log_likelihood[i] = ln p(V | thetas[i])``, evaluated at exactly those parameters
        (no lag); length ``n_iter + 1``.
    elbo : numpy.ndarray or None
        ``elbo[i] = L(q_i, thetas[i + 1])`` where ``q_i`` is the E-step at ``thetas[i]``;
        length ``n_iter``. ``None`` if no bound function was given to :func:`run`.
    n_iter : int
        Number of EM iterations performed.
    converged : bool
        Whether the stopping rule :func:`has_converged` was met before ``max_iter`` **and**
        the log-likelihood never fell beyond rounding during the run. A run with decreases
        (see ``decreases``) is never reported as converged, even if its last steps were
        small: its E-step or M-step is not exact EM, and where it stopped is not a fixed
        point of EM one can trust.
    decreases : tuple of (int, float)
        The iterations where ``ln p`` fell beyond rounding and the size of each drop
        (:func:`find_decreases` of the trace); empty for a correct EM. Each one was also
        announced by a :class:`LikelihoodDecreaseWarning`.

    Notes
    -----
    Instances compare by identity (``eq=False``): the fields hold arrays, for which ``==``
    is elementwise. The ``repr`` shows the sizes, the final values and the decreases, not
    the whole trace.

    Examples
    --------
    >>> import numpy as np
    >>> res = EMResult(theta=0.5, thetas=[0.2, 0.5], log_likelihood=np.array([-3.0, -2.0]),
    ...                elbo=np.array([-2.5]), n_iter=1, converged=False)
    >>> res.check_sandwich()
    >>> res
    EMResult(n_iter=1, converged=False, log_likelihood[-1]=-2, decreases=())
    """

    theta: Any
    thetas: list
    log_likelihood: np.ndarray
    elbo: np.ndarray | None
    n_iter: int
    converged: bool
    decreases: tuple = ()

    def __repr__(self) -> str:
        ll = np.asarray(self.log_likelihood, dtype=float)
        last = f"{ll[-1]:.10g}" if ll.size else "none"
        drops = ", ".join(f"(iteration {i}: -{d:.3g})" for i, d in self.decreases)
        return (
            f"{type(self).__name__}(n_iter={self.n_iter}, converged={self.converged}, "
            f"log_likelihood[-1]={last}, decreases=({drops}))"
        )

    def check_sandwich(self, rtol: float = 1e-10) -> None:
        """Check ``ln p(theta_i) <= L(q_i, theta_{i+1}) <= ln p(theta_{i+1})`` for every ``i``.

        The left inequality holds because ``L(q_i, theta_i) = ln p(theta_i)`` (``q_i`` is the
        exact posterior) and the M-step maximises ``L(q_i, .)``; the right one because
        ``ln p = L + KL`` with ``KL >= 0``. Each comparison allows a slack of
        ``rtol * max(1, |ln p(theta_i)|, |ln p(theta_{i+1})|)``.

        Parameters
        ----------
        rtol : float
            Relative tolerance (absolute below magnitude 1).

        Raises
        ------
        AssertionError
            At the first iteration where an inequality fails, naming it and both sides.
        ValueError
            If the run recorded no bound (``elbo is None``) or ``rtol`` is negative.

        Examples
        --------
        >>> import numpy as np
        >>> bad = EMResult(theta=1, thetas=[0, 1], log_likelihood=np.array([-3.0, -2.0]),
        ...                elbo=np.array([-1.0]), n_iter=1, converged=False)
        >>> bad.check_sandwich()
        Traceback (most recent call last):
        ...
        AssertionError: iteration 0: L(q_0, theta_1) = -1 exceeds ln p(V | theta_1) = -2 by 1
        """
        if self.elbo is None:
            raise ValueError(
                "this run recorded no ELBO; pass elbo=... to emtutor.em.run to check the sandwich"
            )
        rtol = check_real(rtol, "rtol", low=0.0)
        ll = np.asarray(self.log_likelihood, dtype=float)
        lb = np.asarray(self.elbo, dtype=float)
        if ll.shape != (lb.size + 1,):
            raise ValueError(
                f"log_likelihood must have one more entry than elbo, got {ll.size} and {lb.size}"
            )
        before, after = ll[:-1], ll[1:]
        slack = rtol * np.maximum(1.0, np.maximum(np.abs(before), np.abs(after)))
        low = before - lb > slack
        high = lb - after > slack
        bad = low | high
        if bad.any():
            i = int(np.argmax(bad))
            if low[i]:
                raise AssertionError(
                    f"iteration {i}: L(q_{i}, theta_{i + 1}) = {lb[i]:.12g} is below "
                    f"ln p(V | theta_{i}) = {before[i]:.12g} by {before[i] - lb[i]:.3g}"
                )
            raise AssertionError(
                f"iteration {i}: L(q_{i}, theta_{i + 1}) = {lb[i]:.12g} exceeds "
                f"ln p(V | theta_{i + 1}) = {after[i]:.12g} by {lb[i] - after[i]:.3g}"
            )


def _check_callable(f: Any, name: str, optional: bool = False) -> None:
    if f is None and optional:
        return
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__}")


def wants_theta_old(m_step: Callable) -> bool:
    """Whether ``m_step`` is called as ``m_step(q, theta_old)`` rather than ``m_step(q)``.

    The rule of :func:`run` (and of :func:`emtutor.testing.check_m_step`): an M-step with
    two required positional parameters receives the E-step output and the parameters that
    E-step was computed from; one with a single required positional parameter (or none, or
    only ``*args``) receives ``q`` alone. Parameters with defaults and keyword-only
    parameters do not count, so ``functools.partial(coins.m_step, heads, n_tosses)`` takes
    ``q`` alone.

    Parameters
    ----------
    m_step : callable

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        If ``m_step`` is not callable or needs more than two positional arguments.

    Examples
    --------
    >>> wants_theta_old(lambda q: q), wants_theta_old(lambda q, theta_old: q)
    (False, True)
    >>> wants_theta_old(lambda q, theta_old=None: q)  # a default: called with q alone
    False
    """
    _check_callable(m_step, "m_step")
    if (type(m_step) is types.FunctionType and not hasattr(m_step, "__wrapped__")
            and not hasattr(m_step, "__signature__")):
        # a plain function: its signature is fixed by its code and its defaults, so the
        # answer is kept for every closure made from the same ``def`` (a fit builds a new
        # M-step per call, and inspect.signature costs more than a small iteration)
        try:
            key = (m_step.__code__, m_step.__defaults__,
                   tuple(sorted((m_step.__kwdefaults__ or {}).items())))
            hash(key)
        except TypeError:  # an unhashable default
            return _wants_theta_old(m_step)
        found = _WANTS_THETA_OLD.get(key)
        if found is None:
            if len(_WANTS_THETA_OLD) > 256:
                _WANTS_THETA_OLD.clear()
            found = _WANTS_THETA_OLD[key] = _wants_theta_old(m_step)
        return found
    return _wants_theta_old(m_step)


_WANTS_THETA_OLD: dict = {}  # (code, defaults, keyword defaults) -> answer


def _wants_theta_old(m_step: Callable) -> bool:
    try:
        sig = inspect.signature(m_step)
    except (TypeError, ValueError):  # some builtins have no signature: call with q alone
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [
        p.name for p in sig.parameters.values()
        if p.kind in positional and p.default is inspect.Parameter.empty
    ]
    if len(required) > 2:
        raise TypeError(
            f"m_step must be m_step(q) or m_step(q, theta_old), got one with "
            f"{len(required)} required positional parameters ({', '.join(required)}); "
            "bind the data with a lambda or functools.partial"
        )
    return len(required) == 2


def _check_posterior_rows(q: np.ndarray, i: int) -> None:
    """``check=True``: an array E-step output must hold distributions along its last axis."""
    if q.dtype.kind not in "fiu" or q.ndim == 0 or q.size == 0:
        return
    if not np.all(np.isfinite(q)) or np.any(q < 0):
        bad = np.argwhere(~(np.isfinite(q) & (q >= 0)))[0]
        raise AssertionError(
            f"check at iteration {i} (E-step): q[{', '.join(map(str, bad))}] = "
            f"{q[tuple(bad)]}; a posterior has finite entries >= 0"
        )
    sums = q.sum(axis=-1)
    off = np.abs(sums - 1.0)
    if np.any(off > 1e-8):
        n = np.unravel_index(int(np.argmax(off)), off.shape)
        where = f"row {n[0]}" if len(n) == 1 else f"row {tuple(int(j) for j in n)}"
        raise AssertionError(
            f"check at iteration {i} (E-step): {where} of q sums to {sums[n]:.12g}, not 1 "
            f"(off by {sums[n] - 1.0:.3g}); the E-step must normalise the posterior over the "
            "latent states"
        )


def _check_step(i: int, ll_old: float, bound_old: float, bound_new: float) -> None:
    """``check=True``: ``L(q, theta_old) = ln p(theta_old) <= L(q, theta_new)``, with slack."""
    slack = _CHECK_RTOL * max(1.0, abs(ll_old))
    kl = ll_old - bound_old
    if kl > slack:
        raise AssertionError(
            f"check at iteration {i} (E-step): KL(q_{i - 1} || p(Z | V, theta_{i - 1})) = "
            f"ln p(V | theta_{i - 1}) - L(q_{i - 1}, theta_{i - 1}) = {kl:.6g} > 0 "
            f"(allowed {slack:.3g}): q is not the exact posterior, so the bound is not tight "
            "after the E-step (a tempered posterior, or one that leaves out a factor of the "
            "joint such as the mixing weights or a prior?)"
        )
    if kl < -slack:
        raise AssertionError(
            f"check at iteration {i} (E-step): L(q_{i - 1}, theta_{i - 1}) = {bound_old:.12g} "
            f"exceeds ln p(V | theta_{i - 1}) = {ll_old:.12g} by {-kl:.3g}, a negative KL "
            f"(allowed {slack:.3g}): elbo and log_likelihood disagree, or q is not a "
            "distribution"
        )
    drop = bound_old - bound_new
    if drop > slack:
        raise AssertionError(
            f"check at iteration {i} (M-step): Q decreased: L(q_{i - 1}, theta_{i}) = "
            f"{bound_new:.12g} is below L(q_{i - 1}, theta_{i - 1}) = {bound_old:.12g} by "
            f"{drop:.3g} (allowed {slack:.3g}), so Q(theta_{i}, theta_{i - 1}) < "
            f"Q(theta_{i - 1}, theta_{i - 1}); the M-step must not lower Q"
        )


def run(
    theta0: Any,
    e_step: Callable[[Any], Any],
    m_step: Callable[[Any], Any],
    log_likelihood: Callable[[Any], float],
    *,
    elbo: Callable[[Any, Any], float] | None = None,
    tol: float = 1e-10,
    max_iter: int = 1000,
    callback: Callable[[int, Any, Any, float], Any] | None = None,
    check: bool = False,
) -> EMResult:
    """Run EM from ``theta0`` and return the full trace.

    Iteration ``i = 1, 2, ...`` computes ``q = e_step(theta_{i-1})``,
    ``theta_i = m_step(q)`` (or ``m_step(q, theta_{i-1})``, see ``m_step``), optionally
    ``L(q, theta_i)``, then ``ln p(V | theta_i)``, and stops as soon as
    :func:`has_converged` says so (or after ``max_iter`` iterations).
    A log-likelihood that goes down issues a :class:`LikelihoodDecreaseWarning` and EM
    continues; such an iteration never counts as convergence, the result records it in
    ``decreases``, and a run with a decrease is not reported as ``converged``.

    Parameters
    ----------
    theta0 : object
        Starting parameters, of any type the three functions understand (tuple, NamedTuple,
        dataclass, array, ...). ``m_step`` must return a new object rather than modify its
        input in place, because the trace keeps a reference to every value.
    e_step : callable
        ``e_step(theta) -> q``, the posterior over the latent variables at ``theta``.
    m_step : callable
        ``m_step(q) -> theta``, the parameters maximising the bound for that ``q``. An
        M-step that needs the previous parameters (to keep those of an empty component, or
        to take a partial step as in generalised EM) is written with two required
        positional parameters, ``m_step(q, theta_old) -> theta``, and :func:`run` then
        passes ``theta_{i-1}``, the parameters ``q`` was computed from (the rule is
        :func:`wants_theta_old`). There is no need to return ``theta`` from the E-step.
    log_likelihood : callable
        ``log_likelihood(theta) -> float``, the total ``ln p(V | theta)``.
    elbo : callable, optional
        ``elbo(q, theta) -> float``, the bound ``L(q, theta)``. If given, the trace records
        ``L(q_i, theta_{i+1})`` for :meth:`EMResult.check_sandwich`. Without it a
        :class:`MissingElboWarning` is issued (once per call).
    tol : float
        Tolerance ``>= 0`` of the stopping rule (see :func:`has_converged`); ``0`` runs
        exactly ``max_iter`` iterations.
    max_iter : int
        Maximum number of iterations, ``>= 0``; ``0`` only evaluates ``ln p(V | theta0)``.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, theta, q, log_likelihood)``
        with the iteration number ``i >= 1``, the new parameters ``theta_i``, the E-step
        output ``q_{i-1}`` they were computed from and ``ln p(V | theta_i)``. Its return value
        is ignored; it is called before the stopping test, so it sees the last iteration too.
    check : bool
        Check every iteration ``i`` as it runs, with the bound alone (no other function of
        the model is needed, so ``elbo`` is required):

        1. E-step, normalised: if ``q`` is a NumPy array, its entries are ``>= 0`` and sum
           to 1 along the last axis (within ``1e-8``);
        2. E-step, exact: ``KL(q_{i-1} || p(Z | V, theta_{i-1})) = ln p(V | theta_{i-1}) -
           L(q_{i-1}, theta_{i-1})`` is 0, neither positive (``q`` is not the posterior,
           e.g. tempered, or missing the mixing weights) nor negative;
        3. M-step: ``L(q_{i-1}, theta_i) >= L(q_{i-1}, theta_{i-1})``, which is
           ``Q(theta_i, theta_{i-1}) >= Q(theta_{i-1}, theta_{i-1})`` since the two bounds
           differ from ``Q`` by the same entropy ``H(q_{i-1})``.

        The slack of 2 and 3 is ``1e-9 max(1, |ln p(V | theta_{i-1})|)``. A failed check
        raises ``AssertionError`` naming the iteration, the step and the size of the
        violation. The cost is one more evaluation of ``elbo`` per iteration; with
        ``check=False`` (the default) nothing is added. That the M-step *maximises* ``Q``
        over the feasible parameters is a different question, which
        :func:`emtutor.testing.check_m_step` answers: mixing weights that are not
        normalised, for example, raise ``L`` and ``ln p`` alike and pass these checks.

    Returns
    -------
    EMResult

    Raises
    ------
    AssertionError
        With ``check=True``, at the first iteration that fails a check.
    ValueError
        If ``tol < 0``, ``max_iter < 0``, a log-likelihood or bound is not finite
        (the message names the iteration), or ``check=True`` without ``elbo``.
    TypeError
        If a function argument is not callable, ``m_step`` needs more than two positional
        arguments, ``max_iter`` is not an integer, ``check`` is not a bool, or a function
        returns something that is not a real number.

    Examples
    --------
    The two-coin problem of Do and Batzoglou (2008): five sets of ten tosses, each made with
    coin A or coin B chosen with probability 1/2; the unknowns are the two head probabilities.

    >>> import numpy as np
    >>> from scipy.special import logsumexp, xlogy
    >>> from scipy.stats import binom
    >>> heads, n = np.array([5, 9, 8, 4, 7]), 10
    >>> def log_joint(theta):  # ln p(v_n, z_n = k | theta), shape (5, 2)
    ...     return binom.logpmf(heads[:, None], n, np.asarray(theta)) + np.log(0.5)
    >>> def e_step(theta):
    ...     lj = log_joint(theta)
    ...     return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    >>> def m_step(q):
    ...     return tuple(q.T @ heads / (n * q.sum(axis=0)))
    >>> def log_likelihood(theta):
    ...     return float(logsumexp(log_joint(theta), axis=1).sum())
    >>> def bound(q, theta):
    ...     return float(np.sum(q * log_joint(theta) - xlogy(q, q)))
    >>> res = run((0.6, 0.5), e_step, m_step, log_likelihood, elbo=bound)
    >>> print([round(float(t), 2) for t in res.thetas[1]])
    [0.71, 0.58]
    >>> print([round(float(t), 2) for t in res.theta], res.converged)
    [0.8, 0.52] True
    >>> bool(np.all(np.diff(res.log_likelihood) >= 0))
    True
    >>> res.check_sandwich()

    An M-step that asks for the previous parameters gets them: here a generalised EM that
    goes only half way from ``theta_old`` to the maximiser (it still never lowers ``Q``).

    >>> def half_m_step(q, theta_old):
    ...     return tuple(0.5 * (np.asarray(theta_old) + m_step(q)))
    >>> half = run((0.6, 0.5), e_step, half_m_step, log_likelihood, elbo=bound, check=True)
    >>> print([round(float(t), 2) for t in half.thetas[1]], half.n_iter > res.n_iter)
    [0.66, 0.54] True

    With ``check=True`` an E-step that is not the exact posterior is caught at once:

    >>> def tempered_e_step(theta):  # q proportional to p(z | v) ** 0.5
    ...     lj = 0.5 * log_joint(theta)
    ...     return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    >>> try:
    ...     run((0.6, 0.5), tempered_e_step, m_step, log_likelihood, elbo=bound, check=True)
    ... except AssertionError as err:
    ...     print(err)
    check at iteration 1 (E-step): KL(q_0 || p(Z | V, theta_0)) = ln p(V | theta_0) -
    L(q_0, theta_0) = 0.102537 > 0 (allowed 1.13e-08): q is not the exact posterior, so the
    bound is not tight after the E-step (a tempered posterior, or one that leaves out a factor
    of the joint such as the mixing weights or a prior?)
    """
    _check_callable(e_step, "e_step")
    with_old = wants_theta_old(m_step)
    _check_callable(log_likelihood, "log_likelihood")
    _check_callable(elbo, "elbo", optional=True)
    _check_callable(callback, "callback", optional=True)
    tol = check_tol(tol)
    max_iter = check_max_iter(max_iter)
    if not isinstance(check, (bool, np.bool_)):
        raise TypeError(f"check must be True or False, got {type(check).__name__}")
    if elbo is None:
        if check:
            raise ValueError(
                "check=True needs elbo=...: the checks compare L(q, theta) with ln p(V | theta) "
                "before the M-step and with itself after it"
            )
        warnings.warn(
            "em.run got no elbo, so the trace records no bound and the steps cannot be "
            "checked; pass elbo=lambda q, theta: L(q, theta) (for a mixture: "
            "emtutor.bounds.elbo(log_joint(theta), q)) to allow EMResult.check_sandwich() "
            "and check=True",
            MissingElboWarning,
            stacklevel=2,
        )

    theta = theta0
    thetas = [theta0]
    lls = [_as_finite_float(log_likelihood(theta0), "log-likelihood", 0)]
    bounds: list[float] = []
    converged = False
    n_iter = 0
    for i in range(1, max_iter + 1):
        q = e_step(theta)
        if check and isinstance(q, np.ndarray):
            _check_posterior_rows(q, i)
        theta_old = theta
        theta = m_step(q, theta_old) if with_old else m_step(q)
        if elbo is not None:
            bounds.append(_as_finite_float(elbo(q, theta), f"ELBO L(q_{i - 1}, theta_{i})", i))
            if check:
                before = _as_finite_float(
                    elbo(q, theta_old), f"ELBO L(q_{i - 1}, theta_{i - 1})", i
                )
                _check_step(i, lls[-1], before, bounds[-1])
        ll = _as_finite_float(log_likelihood(theta), "log-likelihood", i)
        thetas.append(theta)
        lls.append(ll)
        n_iter = i
        if callback is not None:
            callback(i, theta, q, ll)
        if has_converged(lls[-2], ll, tol=tol, iteration=i):
            converged = True
            break
    return EMResult(
        theta=theta,
        thetas=thetas,
        log_likelihood=np.asarray(lls, dtype=float),
        elbo=None if elbo is None else np.asarray(bounds, dtype=float),
        n_iter=n_iter,
        converged=converged and not find_decreases(lls),
        decreases=find_decreases(lls),
    )


def rate_matrix(
    em_map: Callable[[np.ndarray], Any], theta_star, *, step: float | None = None
) -> np.ndarray:
    r"""Jacobian of the EM map at a fixed point, by central differences.

    Near a maximum ``theta_star``, one EM iteration ``theta <- M(theta)`` is the linear
    iteration ``theta - theta_star <- J (theta - theta_star)`` with ``J = dM/dtheta``;
    the error shrinks by the largest eigenvalue of ``J`` per iteration
    (:func:`convergence_rate`). Dempster, Laird and Rubin (1977) showed that
    ``J = I - I_c^{-1} I_obs``: the fraction of the information that the latent variables
    hide.

    Column ``j`` is ``(M(theta* + h_j e_j) - M(theta* - h_j e_j)) / (2 h_j)``, with
    ``h_j = step * max(1, |theta*_j|)``. The map works on whatever vector the caller
    chooses: the raw parameters, or an unconstrained parametrisation of them (for example
    the free weights of a mixture, since weights summing to 1 give ``J`` a zero
    eigenvalue along the constraint, which is harmless but uninformative).

    Parameters
    ----------
    em_map : callable
        ``em_map(theta) -> theta_new``, one E-step and M-step on a 1-D parameter vector.
    theta_star : array_like, shape (P,)
        A fixed point of ``em_map`` (the end of a converged run).
    step : float, optional
        Relative finite-difference step; default ``eps ** (1/3)`` (about ``6e-6``), which
        balances truncation and rounding errors of a central difference.

    Returns
    -------
    numpy.ndarray, shape (P, P)

    Raises
    ------
    ValueError
        If ``theta_star`` is not a finite 1-D vector, ``step`` is not positive, or the map
        returns a vector of another size or a non-finite value.

    Examples
    --------
    The genetic linkage example of Dempster, Laird and Rubin (1977): 197 animals in four
    categories with probabilities ``(1/2 + t/4, (1 - t)/4, (1 - t)/4, t/4)``; EM splits
    the first category into its two parts. Their paper reports a rate of 0.1328.

    >>> import numpy as np
    >>> y1, y2, y3, y4 = 125, 18, 20, 34
    >>> def e_step(t):       # expected count of the t/4 part of the first category
    ...     return y1 * (t[0] / 4) / (1 / 2 + t[0] / 4)
    >>> def m_step(x2):      # binomial maximum likelihood with that count
    ...     return np.array([(x2 + y4) / (x2 + y2 + y3 + y4)])
    >>> def log_lik(t):
    ...     t = t[0]
    ...     return float(y1 * np.log(2 + t) + (y2 + y3) * np.log(1 - t) + y4 * np.log(t))
    >>> def bound(x2, t):  # L(q, t) = ln p - KL(q || posterior) of the split of y1
    ...     a, post = x2 / y1, t[0] / (2 + t[0])
    ...     kl = a * np.log(a / post) + (1 - a) * np.log((1 - a) / (1 - post))
    ...     return log_lik(t) - y1 * float(kl)
    >>> res = run(np.array([0.5]), e_step, m_step, log_lik, elbo=bound, tol=0, max_iter=30)
    >>> def em_map(t):
    ...     return m_step(e_step(t))
    >>> print(round(float(res.theta[0]), 6), round(convergence_rate(em_map, res.theta), 4))
    0.626821 0.1328
    """
    theta = as_float_array(theta_star, "theta_star", ndim=1)
    rel = float(np.finfo(float).eps) ** (1.0 / 3.0) if step is None else check_real(
        step, "step", low=0.0, strict=True
    )

    def call(t: np.ndarray) -> np.ndarray:
        out = np.asarray(em_map(t.copy()), dtype=float).reshape(-1)
        if out.shape != theta.shape:
            raise ValueError(
                f"em_map returned a vector of size {out.size} for a parameter of size "
                f"{theta.size}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("em_map returned a non-finite value near theta_star")
        return out

    p = theta.size
    jac = np.empty((p, p))
    for j in range(p):
        h = rel * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        jac[:, j] = (call(up) - call(down)) / (up[j] - down[j])
    return jac


def convergence_rate(
    em_map: Callable[[np.ndarray], Any], theta_star, *, step: float | None = None
) -> float:
    """Rate of convergence of EM at ``theta_star``: the spectral radius of :func:`rate_matrix`.

    Near the maximum the error shrinks by about this factor per iteration (0: superlinear;
    close to 1: slow, the latent variables hide most of the information).

    Parameters
    ----------
    em_map, theta_star, step
        As for :func:`rate_matrix`.

    Returns
    -------
    float
        ``max |eigenvalue|`` of the Jacobian of the EM map.

    Examples
    --------
    A linear map with known eigenvalues 0.5 and 0.2:

    >>> import numpy as np
    >>> A = np.array([[0.5, 0.1], [0.0, 0.2]])
    >>> print(round(convergence_rate(lambda t: A @ t, np.zeros(2)), 10))
    0.5
    """
    return float(np.max(np.abs(np.linalg.eigvals(rate_matrix(em_map, theta_star, step=step)))))
