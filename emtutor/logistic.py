"""Logistic regression with fully observed features: likelihood, derivatives and gradient ascent.

This module holds the model of the first chapter of the course. With a feature matrix ``X``
of shape ``(N, d)`` (add a column of ones yourself if you want an intercept) and labels
``y`` in {0, 1}, the model is P(Y = 1 | X = x) = σ(w·x) and the log-likelihood is

    L(w) = Σ_i [ y_i ln σ(w·x_i) + (1 − y_i) ln σ(−w·x_i) ],

a total over the data set. The functions are small and pure so that a reader can call
them one at a time: :func:`sigmoid`, :func:`log_sigmoid`, :func:`log_likelihood_terms`,
:func:`log_likelihood`, :func:`gradient`, :func:`hessian`, :func:`is_separable`,
:func:`default_learning_rate`; :func:`gradient_ascent` is the driver on top.

Arguments are checked like everywhere in the package: a wrong
type (a string for ``lr``, a float for ``max_iter``, complex features) is a ``TypeError``
naming the argument, a value out of range a ``ValueError`` naming it and the value. No
function returns NaN for finite inputs or lets a floating-point ``OverflowError`` escape:
where a result cannot be represented in double precision (the linear predictor ``w·x``,
``λ_max(XᵀX)`` or the Hessian overflows, because the features are of the order of 1e154 or
more) the ``ValueError`` says so and asks for standardised features.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linprog
from scipy.special import expit, log_expit

from emtutor._validation import (
    as_float_array,
    check_max_iter,
    check_real,
    check_tol,
)

__all__ = [
    "GradientAscentResult",
    "SeparableDataWarning",
    "default_learning_rate",
    "gradient",
    "gradient_ascent",
    "hessian",
    "is_separable",
    "log_likelihood",
    "log_likelihood_terms",
    "log_sigmoid",
    "sigmoid",
]

_EPS = float(np.finfo(float).eps)
_TINY = float(np.finfo(float).tiny)  # the smallest normal float, about 2.2e-308
# An increase of L below this many units in the last place of |L| cannot be told apart
# from the rounding error of the sum that computes L.
_ROUNDING_ULPS = 64.0


class SeparableDataWarning(UserWarning):
    """The classes are linearly separable, so the maximum likelihood estimate does not exist."""


@dataclass(frozen=True)
class GradientAscentResult:
    """What :func:`gradient_ascent` returns.

    Attributes
    ----------
    w : numpy.ndarray
        The last iterate, shape ``(d,)`` (read-only).
    log_likelihood : numpy.ndarray
        L at every iterate, the starting point included, so it has ``n_iter + 1`` entries
        (read-only).
    n_iter : int
        Number of gradient steps taken.
    converged : bool
        Whether the stopping rule was met before ``max_iter`` steps (always ``False`` when
        the data are separable or ``tol=0``).
    lr : float
        The learning rate η that was used.
    """

    w: np.ndarray
    log_likelihood: np.ndarray
    n_iter: int
    converged: bool
    lr: float


# ---------------------------------------------------------------------------------------------
# input checks


def _check_z(z, name: str = "z") -> np.ndarray:
    """Real numbers of any shape, ``±inf`` included (σ(±inf) is 1 and 0), NaN not."""
    return as_float_array(z, name, allow_empty=True, allow_inf=True)


def _check_data(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = as_float_array(X, "X", ndim=2)
    y = as_float_array(y, "y", ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"y has {y.shape[0]} entries but X has {X.shape[0]} rows; "
            "they must have one label per data point"
        )
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        values = np.unique(y[bad])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise ValueError(
            f"y must contain only the labels 0 and 1; found {int(bad.sum())} other "
            f"entr{'y' if bad.sum() == 1 else 'ies'} with value(s) {shown}"
        )
    return X, y


def _check_w(w, X: np.ndarray, name: str = "w") -> np.ndarray:
    w = as_float_array(w, name, ndim=1)
    if w.shape[0] != X.shape[1]:
        raise ValueError(
            f"{name} has {w.shape[0]} entries but X has {X.shape[1]} columns; "
            "there must be one weight per feature"
        )
    return w


_STANDARDISE = (
    "standardise the features (divide each column of X by its standard deviation, or X by "
    "one constant) and fit again; the weights for the original X are the fitted ones divided "
    "by the same factors"
)


def _linear_predictor(X: np.ndarray, w: np.ndarray, name: str = "w") -> np.ndarray:
    """``z = X @ w``, or a ``ValueError`` if some ``w·x_i`` overflows (is ``±inf`` or NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = X @ w
    bad = ~np.isfinite(z)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"the linear predictor {name}·x_{i} overflows ({z[i]}): with entries of X up to "
            f"{np.abs(X).max():.3g} and of {name} up to {np.abs(w).max():.3g} it exceeds the "
            f"floating-point range (about 1.8e308); use smaller weights, or, if the features "
            f"are this large, {_STANDARDISE}"
        )
    return z


def _check_finite_result(value: np.ndarray, what: str, X: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(value)):
        raise ValueError(
            f"the {what} overflows: the entries of X (up to {np.abs(X).max():.3g}) are too "
            f"large for floating point; {_STANDARDISE}"
        )
    return value


def _lambda_max(X: np.ndarray) -> float:
    """``λ_max(XᵀX) = σ_max(X)²``, or a ``ValueError`` if it or ``4/λ_max`` is not a normal
    float (features of the order of 1e154 or more, or of 1e-154 or less). 0 for ``X = 0``."""
    sigma = float(np.linalg.norm(X, 2))  # the SVD rescales internally: no overflow here
    if sigma == 0.0:
        return 0.0
    try:
        lam = sigma**2
    except OverflowError:
        lam = math.inf
    if math.isfinite(lam) and (lam < _TINY or not math.isfinite(4.0 / lam)):
        raise ValueError(
            f"the features are too small: the largest singular value of X is {sigma:.3g}, so "
            f"lambda_max(X^T X) = ({sigma:.3g})^2 underflows (and the step size 4/lambda_max "
            f"overflows) in floating point; {_STANDARDISE}"
        )
    if not math.isfinite(lam) or 4.0 / lam < _TINY:
        raise ValueError(
            f"the features are too large: the largest singular value of X is {sigma:.3g}, so "
            f"lambda_max(X^T X) = ({sigma:.3g})^2 overflows (or the step size 4/lambda_max "
            f"underflows to 0) in floating point; {_STANDARDISE}"
        )
    return lam


# ---------------------------------------------------------------------------------------------
# the sigmoid


def sigmoid(z: ArrayLike) -> np.ndarray | float:
    """Logistic sigmoid σ(z) = 1 / (1 + e^{−z}), elementwise and without overflow.

    Computed with ``scipy.special.expit``, which never evaluates ``exp`` of a large
    positive number: σ(±1e4) is exactly 1 and 0 with no warning.

    Parameters
    ----------
    z : array_like
        Real numbers (``±inf`` allowed, NaN is not).

    Returns
    -------
    numpy.ndarray or float
        σ(z), with the shape of ``z``.

    Raises
    ------
    TypeError
        If ``z`` holds something other than real numbers (strings, complex numbers).
    ValueError
        If ``z`` contains NaN.

    Examples
    --------
    >>> print(f"{sigmoid(0.0):.4f}")
    0.5000
    >>> print(sigmoid([-1e4, 0.0, 1e4]))
    [0.  0.5 1. ]
    >>> print(f"{sigmoid(2.0) + sigmoid(-2.0):.4f}")
    1.0000
    """
    return expit(_check_z(z))


def log_sigmoid(z: ArrayLike) -> np.ndarray | float:
    """Log of the sigmoid, ln σ(z) = −ln(1 + e^{−z}), elementwise and without overflow.

    Evaluating ``np.log(sigmoid(z))`` gives ``-inf`` once σ(z) underflows to 0 (z below
    about −745) and loses all digits of 1 − σ(z) for large z; ``scipy.special.log_expit``
    avoids both: ln σ(−1e4) = −1e4 exactly.

    Parameters
    ----------
    z : array_like
        Real numbers (``±inf`` allowed, NaN is not).

    Returns
    -------
    numpy.ndarray or float
        ln σ(z), with the shape of ``z``; always ≤ 0.

    Raises
    ------
    TypeError
        If ``z`` holds something other than real numbers (strings, complex numbers).
    ValueError
        If ``z`` contains NaN.

    Examples
    --------
    >>> print(f"{log_sigmoid(0.0):.6f}")
    -0.693147
    >>> print(log_sigmoid([-1e4, -800.0]))
    [-10000.  -800.]
    >>> print(f"{log_sigmoid(40.0):.3e}")
    -4.248e-18
    """
    return log_expit(_check_z(z))


# ---------------------------------------------------------------------------------------------
# the log-likelihood and its derivatives


def log_likelihood_terms(w: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Per-data-point terms ℓ_i(w) = y_i ln σ(w·x_i) + (1 − y_i) ln σ(−w·x_i).

    Term ``i`` is ln P(Y = y_i | X = x_i); it depends on ``w`` only through the scalar
    w·x_i, and their sum is :func:`log_likelihood`. It is computed as ln σ(s_i w·x_i) with
    s_i = 2 y_i − 1, the same number without the product 0 · ln σ(∓w·x_i), which would be
    NaN where ln σ is −inf.

    Parameters
    ----------
    w : array_like
        Weights, shape (d,).
    X : array_like
        Features, one row per data point, shape (N, d).
    y : array_like
        Labels, each 0 or 1, shape (N,).

    Returns
    -------
    numpy.ndarray
        The terms, each ≤ 0, shape (N,).

    Raises
    ------
    TypeError
        If an input holds something other than real numbers (strings, complex numbers).
    ValueError
        If the shapes do not match, ``y`` holds a value other than 0 or 1, an input
        contains NaN or infinite values or is empty, or some w·x_i overflows.

    Examples
    --------
    >>> X = [[1.0, 2.0], [1.0, -1.0], [1.0, 0.5]]
    >>> y = [1, 0, 0]
    >>> terms = log_likelihood_terms([0.5, -1.0], X, y)
    >>> print(np.round(terms, 4))
    [-1.7014 -1.7014 -0.6931]
    >>> print(f"{terms.sum():.4f}")
    -4.0960
    """
    X, y = _check_data(X, y)
    w = _check_w(w, X)
    return _terms(_linear_predictor(X, w), y)


def _terms(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ln σ(s_i z_i) with s_i = 2 y_i − 1: bit for bit y ln σ(z) + (1 − y) ln σ(−z)."""
    return log_expit((2.0 * y - 1.0) * z)


def log_likelihood(w: ArrayLike, X: ArrayLike, y: ArrayLike) -> float:
    """Log-likelihood L(w) = Σ_i [y_i ln σ(w·x_i) + (1 − y_i) ln σ(−w·x_i)] (a total).

    Parameters
    ----------
    w : array_like
        Weights, shape (d,).
    X : array_like
        Features, one row per data point, shape (N, d).
    y : array_like
        Labels, each 0 or 1, shape (N,).

    Returns
    -------
    float
        L(w) ≤ 0, summed (not averaged) over the N data points.

    Raises
    ------
    TypeError
        As for :func:`log_likelihood_terms`.
    ValueError
        As for :func:`log_likelihood_terms`.

    Examples
    --------
    At w = 0 every point has probability 1/2, so L = −N ln 2:

    >>> X = [[1.0, 2.0], [1.0, -1.0], [1.0, 0.5]]
    >>> y = [1, 0, 0]
    >>> print(f"{log_likelihood([0.0, 0.0], X, y):.4f}")
    -2.0794
    >>> print(f"{-3 * np.log(2):.4f}")
    -2.0794
    """
    return float(log_likelihood_terms(w, X, y).sum())


def gradient(w: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Gradient of the log-likelihood, ∇L(w) = Xᵀ (y − σ(Xw)).

    Parameters
    ----------
    w : array_like
        Weights, shape (d,).
    X : array_like
        Features, one row per data point, shape (N, d).
    y : array_like
        Labels, each 0 or 1, shape (N,).

    Returns
    -------
    numpy.ndarray
        ∇L(w), shape (d,).

    Raises
    ------
    TypeError
        As for :func:`log_likelihood_terms`.
    ValueError
        As for :func:`log_likelihood_terms`; also if the gradient overflows.

    Examples
    --------
    >>> X = [[1.0, 2.0], [1.0, -1.0], [1.0, 0.5]]
    >>> y = [1, 0, 0]
    >>> print(np.round(gradient([0.5, -1.0], X, y), 4))
    [-0.5     2.2027]
    """
    X, y = _check_data(X, y)
    w = _check_w(w, X)
    with np.errstate(over="ignore", invalid="ignore"):
        g = X.T @ (y - expit(_linear_predictor(X, w)))
    return _check_finite_result(g, "gradient X^T (y - sigma(Xw))", X)


def hessian(w: ArrayLike, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Hessian of the log-likelihood, ∇²L(w) = −Xᵀ S X with S = diag(σ(w·x_i) σ(−w·x_i)).

    Since σ(z)σ(−z) = σ(z)(1 − σ(z)) lies in (0, 1/4], the Hessian is negative
    semi-definite at every ``w`` (L is concave) and −∇²L ⪯ XᵀX / 4. It does not depend
    on ``y``; ``y`` is taken, and checked, so that all derivatives share one signature.

    Parameters
    ----------
    w : array_like
        Weights, shape (d,).
    X : array_like
        Features, one row per data point, shape (N, d).
    y : array_like
        Labels, each 0 or 1, shape (N,).

    Returns
    -------
    numpy.ndarray
        Symmetric and negative semi-definite, shape (d, d).

    Raises
    ------
    TypeError
        As for :func:`log_likelihood_terms`.
    ValueError
        As for :func:`log_likelihood_terms`; also if the Hessian overflows (entries of X
        of the order of 1e154 or more), with a request to standardise the features.

    Examples
    --------
    >>> X = [[1.0, 2.0], [1.0, -1.0], [1.0, 0.5]]
    >>> y = [1, 0, 0]
    >>> H = hessian([0.5, -1.0], X, y)
    >>> print(np.round(H, 4))
    [[-0.5483 -0.2741]
     [-0.2741 -0.8082]]
    >>> bool(np.all(np.linalg.eigvalsh(H) <= 0))
    True
    """
    X, y = _check_data(X, y)
    w = _check_w(w, X)
    z = _linear_predictor(X, w)
    s = expit(z) * expit(-z)
    with np.errstate(over="ignore", invalid="ignore"):
        H = -(X.T * s) @ X
        H = 0.5 * (H + H.T)  # exactly symmetric, whatever order the matrix product summed in
    return _check_finite_result(H, "Hessian -X^T S X", X)


# ---------------------------------------------------------------------------------------------
# existence of the maximiser


def is_separable(X: ArrayLike, y: ArrayLike) -> bool:
    """Whether the labels are (completely or quasi-completely) linearly separable by X.

    The maximum likelihood estimate exists (for ``X`` of full column rank) if and only if
    there is no direction ``v ≠ 0`` with s_i v·x_i ≥ 0 for every i, where s_i = 2 y_i − 1
    (Albert and Anderson, 1984). If such a ``v`` exists with at least one strict
    inequality, L(w + c v) keeps increasing as c → ∞, towards a supremum it never reaches,
    and ‖w‖ would grow without bound under any ascent method. This function decides the
    question with one linear program (``scipy.optimize.linprog``): maximise
    Σ_i s_i v·x_i subject to s_i v·x_i ≥ 0 and −1 ≤ v_j ≤ 1. The optimum is 0 unless the
    data are separated, in which case it is positive. Separability does not change when a
    row (a data point) or a column (a feature) is multiplied by a positive number, so the
    program is set up with every column and then every row scaled by a power of two (an
    exact operation) to a largest entry between 1/2 and 1: the answer is the same for X and
    1e200 X, and the solver never sees magnitudes it would reject or drop.

    Parameters
    ----------
    X : array_like
        Features, shape (N, d), one row per data point (with a column of ones for an
        intercept).
    y : array_like
        Labels, each 0 or 1, shape (N,).

    Returns
    -------
    bool
        ``True`` if some hyperplane through the origin of feature space puts all points
        with y = 1 on one side and all with y = 0 on the other (points on the hyperplane
        allowed), so that the maximum likelihood estimate does not exist.

    Raises
    ------
    TypeError
        As for :func:`log_likelihood_terms`.
    ValueError
        As for :func:`log_likelihood_terms`.

    Examples
    --------
    >>> X = [[1.0, -2.0], [1.0, -1.0], [1.0, 1.0], [1.0, 2.0]]
    >>> is_separable(X, [0, 0, 1, 1])
    True
    >>> is_separable(X, [0, 1, 0, 1])
    False
    """
    X, y = _check_data(X, y)
    signed = (2.0 * y - 1.0)[:, None] * X  # row i is s_i x_i
    for axis in (0, 1):  # columns, then rows: largest |entry| of each in [1/2, 1)
        _, exponent = np.frexp(np.abs(signed).max(axis=axis, keepdims=True))
        signed = np.ldexp(signed, -exponent)
    res = linprog(
        c=-signed.sum(axis=0),
        A_ub=-signed,
        b_ub=np.zeros(X.shape[0]),
        bounds=[(-1.0, 1.0)] * X.shape[1],
        method="highs",
    )
    if res.status != 0:  # pragma: no cover - the program is feasible (v = 0) and bounded
        raise RuntimeError(f"the separability linear program failed: {res.message}")
    scale = max(1.0, float(np.abs(signed).sum()))
    return bool(-res.fun > 1e-9 * scale)


# ---------------------------------------------------------------------------------------------
# gradient ascent


def default_learning_rate(X: ArrayLike) -> float:
    """The step size η = 4 / λ_max(XᵀX), for which every gradient step increases L.

    Why: −∇²L(w) = XᵀSX ⪯ XᵀX / 4 ⪯ (λ_max / 4) I because σ(z)σ(−z) ≤ 1/4, so ∇L is
    Lipschitz with constant M = λ_max / 4. Taylor's theorem then gives, with g = ∇L(w),
    L(w + ηg) ≥ L(w) + η (1 − ηM / 2) ‖g‖², which is positive for any η < 2 / M; the
    choice η = 1 / M = 4 / λ_max guarantees an increase of at least ‖g‖² / (2M).
    λ_max(XᵀX) is the square of the largest singular value of X.

    Parameters
    ----------
    X : array_like
        Features, one row per data point, shape (N, d).

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``X`` holds something other than real numbers.
    ValueError
        If ``X`` is not a finite, non-empty 2-D array, is all zeros (then L does not
        depend on w), or is so large (or small) that λ_max or η is outside the range of
        floating point: singular values above about 1e154 (or below 1e-154); the message
        asks for standardised features.

    Examples
    --------
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> print(f"{default_learning_rate(X):.4f}")
    1.0000
    """
    X = as_float_array(X, "X", ndim=2)
    lam_max = _lambda_max(X)
    if lam_max == 0.0:
        raise ValueError("X is all zeros, so L(w) = -N ln 2 does not depend on w")
    return 4.0 / lam_max


def gradient_ascent(
    X: ArrayLike,
    y: ArrayLike,
    *,
    lr: float | None = None,
    w0: ArrayLike | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> GradientAscentResult:
    """Maximise the log-likelihood by gradient ascent, w ← w + η ∇L(w).

    Before iterating, :func:`is_separable` checks with a linear program that the maximum
    likelihood estimate exists. If the data are (completely or quasi-completely) linearly
    separable it does not: L(w) increases towards its supremum as ‖w‖ → ∞ and no iterate is
    ever a maximiser. The function then issues a :class:`SeparableDataWarning` and returns
    at once, with ``w = w0``, ``n_iter = 0`` and ``converged = False``, instead of running
    ``max_iter`` steps that only inflate ‖w‖.

    Stopping rule, checked at every step t: stop, converged, as soon as either

    * 0 ≤ L(w_{t+1}) − L(w_t) < tol · max(1, abs(L(w_{t+1}))): the increase is small relative
      to L (a decrease never counts as convergence), or
    * η ‖∇L(w_t)‖² ≤ 64 ε max(1, abs(L(w_t))), with ε the machine epsilon: the gain that the
      next step would bring (to first order) is below the rounding error of L itself, so
      the gradient is zero as far as floating point can tell.

    ``tol=0`` switches both tests off, as everywhere in the package: the run is never
    reported as converged and takes exactly ``max_iter`` steps (useful to time or compare a
    fixed number of steps).

    Parameters
    ----------
    X : array_like
        Features, shape (N, d), one row per data point (add a column of ones for an
        intercept).
    y : array_like
        Labels, each 0 or 1, shape (N,).
    lr : float, optional
        Learning rate η > 0 (a real number). The default is :func:`default_learning_rate`,
        η = 4 / λ_max(XᵀX): the Hessian's spectral norm is at most λ_max / 4 (because
        σ(z)σ(−z) ≤ 1/4), so with this η every step increases L. A larger ``lr`` may make
        L decrease; if it decreases by more than rounding error, a ``UserWarning`` says so.
    w0 : array_like, optional
        Starting point, shape (d,); zeros by default.
    max_iter : int, default 10_000
        Maximum number of gradient steps (≥ 0; 0 only evaluates L at ``w0``), a Python or
        numpy integer.
    tol : float, default 1e-10
        Relative tolerance on the increase of L (≥ 0); 0 runs exactly ``max_iter`` steps.

    Returns
    -------
    GradientAscentResult
        ``w``, ``log_likelihood`` (one value per iterate, the start included), ``n_iter``,
        ``converged``, ``lr``.

    Raises
    ------
    TypeError
        If ``max_iter`` is not an integer (a float, even ``10.0``, a bool, a string,
        ``None``), ``lr`` or ``tol`` is not a real number, or an array holds something
        other than real numbers.
    ValueError
        On bad data (see :func:`log_likelihood_terms`), a ``w0`` of the wrong length or with
        NaN/inf, a non-positive or infinite ``lr``, ``max_iter < 0``, a negative or NaN
        ``tol``; for features too large (or small) for floating point, where λ_max(XᵀX)
        overflows (singular values of X above about 1e154), with a request to standardise
        them; and when a user-chosen ``lr`` is so large that the iterates overflow.

    Warns
    -----
    SeparableDataWarning
        When the data are linearly separable (the MLE does not exist).
    UserWarning
        When a user-chosen ``lr`` makes L decrease.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([np.ones(100), rng.normal(size=100)])
    >>> y = (rng.random(100) < sigmoid(X @ [0.5, 2.0])).astype(float)
    >>> res = gradient_ascent(X, y)
    >>> res.converged, len(res.log_likelihood) == res.n_iter + 1
    (True, True)
    >>> bool(np.all(np.diff(res.log_likelihood) >= 0))
    True
    >>> print(f"{np.abs(gradient(res.w, X, y)).max() < 1e-3}")
    True

    On separable data the function warns and stops:

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = gradient_ascent(X, (X[:, 1] > 0).astype(float))
    >>> caught[0].category.__name__, res.n_iter, res.converged
    ('SeparableDataWarning', 0, False)

    With ``tol=0`` it takes exactly ``max_iter`` steps:

    >>> res = gradient_ascent(X, y, tol=0, max_iter=50)
    >>> res.n_iter, res.converged, len(res.log_likelihood)
    (50, False, 51)
    """
    user_lr = lr is not None
    if user_lr:
        lr = check_real(lr, "lr", low=0.0, strict=True)
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    X, y = _check_data(X, y)
    w = np.zeros(X.shape[1]) if w0 is None else _check_w(w0, X, "w0")
    lam_max = _lambda_max(X)  # refuses features too large or small for the arithmetic
    lr_limit = 8.0 / lam_max if lam_max > 0 else math.inf  # every lr below it increases L
    if not user_lr:
        lr = default_learning_rate(X)

    L = float(_terms(_linear_predictor(X, w, "w0"), y).sum())
    history = [L]
    converged = False
    if is_separable(X, y):
        warnings.warn(
            "the classes are linearly separable by X (a hyperplane puts every y=1 point on one "
            "side and every y=0 point on the other), so L(w) has no maximiser: it keeps "
            "increasing as ||w|| grows without bound, and the maximum likelihood estimate "
            "does not exist. Gradient ascent was not run; add a penalty on ||w|| (a prior) "
            "or remove the separating features.",
            SeparableDataWarning,
            stacklevel=2,
        )
        return _result(w, history, 0, False, lr)

    warned_decrease = False
    n_iter = 0
    for _ in range(max_iter):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is tested for below
            g = X.T @ (y - expit(X @ w))
            if tol > 0 and lr * float(g @ g) <= _ROUNDING_ULPS * _EPS * max(1.0, abs(L)):
                converged = True
                break
            w = w + lr * g
            z = X @ w
        if not np.all(np.isfinite(z)):  # only a user's lr can get here (see Raises)
            raise ValueError(
                f"gradient ascent diverged: at step {n_iter + 1} the iterate w overflowed "
                f"(|w| up to {np.abs(w).max():.3g}, X·w not finite); lr={lr:.4g} is far too "
                f"large: any lr below 8/lambda_max(X^T X) = {lr_limit:.4g} increases L "
                "at every step"
            )
        L_new = float(_terms(z, y).sum())
        delta = L_new - L
        history.append(L_new)
        n_iter += 1
        L = L_new
        if 0.0 <= delta < tol * max(1.0, abs(L)):
            converged = True
            break
        if user_lr and not warned_decrease and delta < -_ROUNDING_ULPS * _EPS * max(1.0, abs(L)):
            warnings.warn(
                f"L decreased by {-delta:.3g} at step {n_iter}: lr={lr:.4g} is too large; "
                f"any lr below 8/lambda_max(X^T X) = {lr_limit:.4g} "
                "guarantees an increase",
                UserWarning,
                stacklevel=2,
            )
            warned_decrease = True
    return _result(w, history, n_iter, converged, lr)


def _result(
    w: np.ndarray, history: list[float], n_iter: int, converged: bool, lr: float
) -> GradientAscentResult:
    w = np.array(w, dtype=float)
    lls = np.array(history, dtype=float)
    w.setflags(write=False)
    lls.setflags(write=False)
    return GradientAscentResult(w=w, log_likelihood=lls, n_iter=n_iter, converged=converged, lr=lr)
