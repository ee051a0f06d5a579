"""Input checks shared by every module.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the problem.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "as_float_array",
    "check_distribution",
    "check_random_state",
    "check_same_shape",
    "check_tol",
]


def as_float_array(
    a, name: str, *, ndim: int | tuple[int, ...] | None = None, allow_empty: bool = False,
    allow_neg_inf: bool = False,
) -> np.ndarray:
    """Return ``a`` as a float ndarray, or raise naming what is wrong with it.

    Parameters
    ----------
    a : array_like
        The input.
    name : str
        How the error messages call it (``"X"``, ``"log_joint"``, ...).
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    allow_empty : bool
        Whether an array with no elements is acceptable.
    allow_neg_inf : bool
        Whether ``-inf`` entries are acceptable (log-probabilities of impossible events).

    Examples
    --------
    >>> as_float_array([[1, 2], [3, 4]], "X", ndim=2).dtype
    dtype('float64')
    >>> as_float_array([1.0, float("nan")], "X")
    Traceback (most recent call last):
    ...
    ValueError: X contains NaN (1 entry); remove or impute missing values first
    """
    try:
        arr = np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got an array of shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one entry is needed")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"{name} contains NaN ({n_nan} entr{'y' if n_nan == 1 else 'ies'}); "
            "remove or impute missing values first"
        )
    bad = np.isposinf(arr) if allow_neg_inf else np.isinf(arr)
    n_inf = int(bad.sum())
    if n_inf:
        plural = "y" if n_inf == 1 else "ies"
        raise ValueError(f"{name} contains infinite values ({n_inf} entr{plural})")
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
    ValueError: rows of q must sum to 1 (along axis -1); row 0 sums to 0.9
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
            f"rows of {name} must sum to 1 (along axis {axis}); row {where} sums to {value:.6g}"
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


def check_random_state(random_state) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` for ``None``, an int seed or a Generator.

    A Generator is used as it is (its state advances), so a caller can chain fits.

    Examples
    --------
    >>> float(check_random_state(0).random()) == float(np.random.default_rng(0).random())
    True
    >>> check_random_state(1.5)
    Traceback (most recent call last):
    ...
    TypeError: random_state must be None, an int or a numpy.random.Generator, got float
    """
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int or a numpy.random.Generator, "
        f"got {type(random_state).__name__}"
    )


def check_tol(tol) -> float:
    """Return a convergence tolerance as a float, or raise: it must be a positive real number.

    Examples
    --------
    >>> check_tol(1e-8)
    1e-08
    >>> check_tol(0)
    Traceback (most recent call last):
    ...
    ValueError: tol must be a positive finite number, got 0.0
    """
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a positive real number, got {type(tol).__name__}")
    tol = float(tol)
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol}")
    return tol
