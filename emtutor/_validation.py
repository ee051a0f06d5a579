"""Input checks shared by every module: one function per kind of argument.

Every module checks its arguments with these functions, so that the same mistake gets the
same exception and the same message everywhere:

* a wrong *type* (a float or a bool where an integer is needed, a string where a number is,
  complex numbers in an array) raises ``TypeError`` naming the argument and what it got;
* a value *out of range* (a negative count, NaN, a tolerance below 0, rows of probabilities
  that do not sum to 1) raises ``ValueError`` naming the argument and the value.

The functions: :func:`check_int` (counts and other integers; :func:`check_max_iter` is the
iteration limit), :func:`check_real` (real numbers with a lower bound; :func:`check_tol` is
the convergence tolerance), :func:`check_random_state`, :func:`as_float_array`,
:func:`as_int_array`, :func:`check_distribution` and :func:`check_same_shape`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "as_float_array",
    "as_int_array",
    "check_distribution",
    "check_int",
    "check_max_iter",
    "check_random_state",
    "check_real",
    "check_same_shape",
    "check_tol",
]


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return an integer argument as a Python int, or raise naming ``name``.

    Python and numpy integers are accepted; floats (even ``3.0``), bools and strings are not.

    Parameters
    ----------
    value : object
        The argument.
    name : str
        Its name, for the messages.
    low, high : int, optional
        Inclusive bounds.

    Raises
    ------
    TypeError
        If ``value`` is not an integer.
    ValueError
        If it lies outside ``[low, high]``.

    Examples
    --------
    >>> import numpy as np
    >>> check_int(np.int64(3), "n_components", low=1)
    3
    >>> check_int(3.0, "n_components", low=1)
    Traceback (most recent call last):
    ...
    TypeError: n_components must be an integer, got float
    >>> check_int(0, "n_components", low=1)
    Traceback (most recent call last):
    ...
    ValueError: n_components must be >= 1, got 0
    """
    if type(value) is not int and (  # the common case first: abc checks cost microseconds
        isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_max_iter(max_iter) -> int:
    """Return an iteration limit (an integer ``>= 0``; 0 evaluates the start only).

    Examples
    --------
    >>> check_max_iter(100)
    100
    >>> check_max_iter(None)
    Traceback (most recent call last):
    ...
    TypeError: max_iter must be an integer, got NoneType
    """
    return check_int(max_iter, "max_iter", low=0)


def check_real(value, name: str, *, low: float | None = None, strict: bool = False) -> float:
    """Return a real argument as a finite float, or raise naming ``name``.

    Parameters
    ----------
    value : object
        The argument: a Python or numpy real number (not a bool, not a string).
    name : str
        Its name, for the messages.
    low : float, optional
        Lower bound.
    strict : bool
        Whether ``value`` must exceed ``low`` (``True``) or may equal it.

    Raises
    ------
    TypeError
        If ``value`` is not a real number.
    ValueError
        If it is NaN or infinite, or below the bound.

    Examples
    --------
    >>> check_real(0.5, "lr", low=0.0, strict=True)
    0.5
    >>> check_real("fast", "lr", low=0.0, strict=True)
    Traceback (most recent call last):
    ...
    TypeError: lr must be a real number, got str
    >>> check_real(0.0, "lr", low=0.0, strict=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a positive finite number, got 0.0
    """
    if type(value) is not float and (
        isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    below = low is not None and (value <= low if strict else value < low)
    if not math.isfinite(value) or below:
        if low is None:
            want = "a finite number"
        elif low == 0:
            want = "a positive finite number" if strict else "a finite number >= 0"
        else:
            want = f"a finite number {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be {want}, got {value}")
    return value


def check_tol(tol) -> float:
    """Return a convergence tolerance: a finite real number ``>= 0``.

    ``tol = 0`` is allowed and means "never converged": the run stops after ``max_iter``
    iterations (as in scikit-learn and hmmlearn), useful to time or compare a fixed number
    of iterations.

    Examples
    --------
    >>> check_tol(1e-8), check_tol(0)
    (1e-08, 0.0)
    >>> check_tol(-1e-3)
    Traceback (most recent call last):
    ...
    ValueError: tol must be a finite number >= 0, got -0.001
    """
    return check_real(tol, "tol", low=0.0)


def _as_array(a, name: str) -> np.ndarray:
    """``np.asarray(a)``, refusing ragged nesting, strings and complex numbers."""
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be an array of numbers (a rectangular list or ndarray), got "
            f"{type(a).__name__}"
        ) from exc
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must hold real numbers, got complex values ({arr.dtype})")
    if arr.dtype.kind not in "biufO":
        raise TypeError(
            f"{name} must be an array of numbers, got {type(a).__name__} of dtype {arr.dtype}"
        )
    return arr


def _check_ndim(arr: np.ndarray, name: str, ndim) -> None:
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got an array of shape {arr.shape}")


def as_float_array(
    a, name: str, *, ndim: int | tuple[int, ...] | None = None, allow_empty: bool = False,
    allow_neg_inf: bool = False, allow_inf: bool = False, allow_nan: bool = False,
) -> np.ndarray:
    """Return ``a`` as a float ndarray, or raise naming what is wrong with it.

    Parameters
    ----------
    a : array_like
        The input: numbers (bools count as 0 and 1); not strings, not complex numbers.
    name : str
        How the error messages call it (``"X"``, ``"log_joint"``, ...).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    allow_empty : bool
        Whether an array with no elements is acceptable.
    allow_neg_inf : bool
        Whether ``-inf`` entries are acceptable (log-probabilities of impossible events).
    allow_inf : bool
        Whether ``+inf`` and ``-inf`` are acceptable (arguments of the sigmoid).
    allow_nan : bool
        Whether NaN entries are acceptable (missing entries of data).

    Raises
    ------
    TypeError
        If ``a`` is not a rectangular array of real numbers.
    ValueError
        If it has the wrong number of dimensions, is empty, or holds NaN or infinities.

    Examples
    --------
    >>> as_float_array([[1, 2], [3, 4]], "X", ndim=2).dtype
    dtype('float64')
    >>> as_float_array([1.0, float("nan")], "X")
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN (1 entry); remove or impute missing values first
    >>> as_float_array([1 + 2j], "X")
    Traceback (most recent call last):
    ...
    TypeError: X must hold real numbers, got complex values (complex128)
    """
    arr = _as_array(a, name)
    try:
        arr = np.asarray(arr, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {type(a).__name__}") from exc
    _check_ndim(arr, name, ndim)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one entry is needed")
    n_nan = 0 if allow_nan else int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"{name} contains NaN ({n_nan} entr{'y' if n_nan == 1 else 'ies'}); "
            "remove or impute missing values first"
        )
    if allow_inf:
        return arr
    bad = np.isposinf(arr) if allow_neg_inf else np.isinf(arr)
    n_inf = int(bad.sum())
    if n_inf:
        plural = "y" if n_inf == 1 else "ies"
        raise ValueError(f"{name} contains infinite values ({n_inf} entr{plural})")
    return arr


def as_int_array(
    a, name: str, *, ndim: int | tuple[int, ...] | None = None, low: int | None = None,
    high: int | None = None, allow_empty: bool = False,
) -> np.ndarray:
    """Return ``a`` as an int64 ndarray of whole numbers in ``[low, high]``, or raise.

    Integer arrays are accepted, and float arrays whose entries are all whole numbers (data
    read from a text file); bools, strings and fractions are not.

    Examples
    --------
    >>> as_int_array([0, 2.0, 1], "X", low=0)
    array([0, 2, 1])
    >>> as_int_array(["5", "5"], "lengths")
    Traceback (most recent call last):
    ...
    TypeError: lengths must be an array of numbers, got list of dtype <U1
    >>> as_int_array([0, 1.5], "X")
    Traceback (most recent call last):
    ...
    ValueError: X must hold whole numbers, got 1.5 at index 1
    >>> as_int_array([0, 10**7], "X", high=4)
    Traceback (most recent call last):
    ...
    ValueError: X must be <= 4, got 10000000 at index 1
    """
    arr = _as_array(a, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold integers, got booleans; use .astype(int)")
    if arr.dtype.kind == "O":
        arr = as_float_array(arr, name, allow_empty=True)
    _check_ndim(arr, name, ndim)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one entry is needed")
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            i = int(np.argmin(whole.ravel()))
            raise ValueError(f"{name} must hold whole numbers, got {arr.ravel()[i]:g} at index {i}")
        if arr.size and np.abs(arr).max() > 2.0**62:
            raise ValueError(f"{name} holds a number too large for an integer index")
    arr = arr.astype(np.int64)
    for bound, bad, word in ((low, lambda v: v < low, ">="), (high, lambda v: v > high, "<=")):
        if bound is not None and arr.size:
            mask = bad(arr.ravel())
            if mask.any():
                i = int(np.argmax(mask))
                value = arr.ravel()[i]
                raise ValueError(f"{name} must be {word} {bound}, got {value} at index {i}")
    return arr


def check_distribution(p, name: str, *, axis: int = -1, atol: float = 1e-8) -> np.ndarray:
    """Check that ``p`` holds probability distributions along ``axis``; return it as floats.

    Entries must be finite and non-negative and sum to 1 (within ``atol``) along ``axis``.

    Examples
    --------
    >>> check_distribution([[0.2, 0.8], [1.0, 0.0]], "q").shape
    (2, 2)
    >>> check_distribution([[0.2, 0.7]], "q")
    Traceback (most recent call last):
    ...
    ValueError: rows of q must sum to 1 (along axis -1); row 0 sums to 0.9, off by -0.1 (the
    tolerance is 1e-08)
    """
    arr = as_float_array(p, name)
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name} has a negative probability {arr[idx]:.3g} at index {idx}")
    sums = arr.sum(axis=axis)
    off = np.abs(sums - 1.0) > atol
    if np.any(off):
        first = np.argwhere(np.atleast_1d(off))[0]
        where = int(first[0]) if first.size == 1 else tuple(int(i) for i in first)
        value = np.atleast_1d(sums)[tuple(first)]
        raise ValueError(
            f"rows of {name} must sum to 1 (along axis {axis}); row {where} sums to "
            f"{value:.12g}, off by {value - 1.0:.3g} (the tolerance is {atol:g})"
        )
    return arr


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> check_same_shape(np.zeros((2, 3)), np.zeros((3, 2)), "log_joint", "q")
    Traceback (most recent call last):
    ...
    ValueError: log_joint and q must have the same shape, got (2, 3) and (3, 2)
    """
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )


def check_concentration(value, name: str, k: int) -> np.ndarray:
    """A Dirichlet concentration for K weights: a number or shape (K,), every entry >= 1.

    Returns the (K,) array. Below 1 the prior's mode, hence the MAP weights, leave the
    simplex.

    >>> check_concentration(2, "alpha", 3)
    array([2., 2., 2.])
    """
    if np.ndim(value) == 0:
        alpha = np.full(k, check_real(value, name))
    else:
        alpha = as_float_array(value, name, ndim=1)
    if alpha.shape != (k,):
        raise ValueError(f"{name} must be a number or have shape ({k},), got {alpha.shape}")
    if (alpha < 1).any():
        j = int(np.argmax(alpha < 1))
        raise ValueError(
            f"{name} must be >= 1 (below 1 the prior's mode leaves the simplex), "
            f"got {alpha[j]:g} at index {j}"
        )
    return alpha


def check_random_state(random_state, *, create: bool = True) -> np.random.Generator | None:
    """Return a ``numpy.random.Generator`` for ``None``, a seed ``>= 0`` or a Generator.

    A Generator is used as it is (its state advances), so a caller can chain fits. With
    ``create=False`` the argument is only checked and ``None`` returned (for a caller that
    turns out to need no random numbers: a new generator from ``None`` reads the operating
    system's entropy, which costs more than a small fit's iteration).

    Examples
    --------
    >>> float(check_random_state(0).random()) == float(np.random.default_rng(0).random())
    True
    >>> check_random_state(1.5)
    Traceback (most recent call last):
    ...
    TypeError: random_state must be None, an int or a numpy.random.Generator, got float
    >>> check_random_state(-1)
    Traceback (most recent call last):
    ...
    ValueError: random_state must be a seed >= 0, got -1
    """
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state) if create else None
    if isinstance(random_state, numbers.Integral) and not isinstance(
        random_state, (bool, np.bool_)
    ):
        if random_state < 0:
            raise ValueError(f"random_state must be a seed >= 0, got {random_state}")
        return np.random.default_rng(int(random_state)) if create else None
    raise TypeError(
        "random_state must be None, an int or a numpy.random.Generator, "
        f"got {type(random_state).__name__}"
    )
