"""Gaussian mixture models fitted by EM, with full, diagonal or spherical covariances.

The model for a data point ``v`` (a row ``x`` of ``X``) with latent component ``z``:

    p(z = k | theta) = w_k,        p(x | z = k, theta) = N(x | mu_k, Sigma_k).

Functional core, one step at a time:

* :func:`log_joint` -- the (N, K) array ``ln w_k + ln N(x_n | mu_k, Sigma_k)``, the input of
  every function of :mod:`emtutor.bounds`;
* :func:`e_step` -- responsibilities ``p(z_n = k | x_n, theta)`` and ``ln p(X | theta)``;
* :func:`m_step` -- weights, means and covariances maximising ``Q(theta, theta_old)``;
* :func:`log_likelihood`, :func:`predict`, :func:`predict_proba`, :func:`sample`.

Missing entries. Called with ``missing="em"``, :func:`fit`, :func:`e_step`,
:func:`log_likelihood`, :func:`log_joint`, :func:`score_samples`, :func:`predict_proba` and
:func:`predict` accept NaN in ``X``: a row counts through the marginal density of its
observed entries under each component, and the M-step uses the conditional moments of its
missing ones (the mixture version of :mod:`emtutor.missing`), rows grouped by pattern.

The driver :func:`fit` runs :func:`emtutor.em.run` on these steps and returns a
:class:`GMMResult` (an :class:`emtutor.em.EMResult` with the responsibilities added).

Parameters travel in a :class:`Params` tuple. The covariance type is read off the shape of
its covariances: (K, D, D) "full", (K, D) "diag" (the variances), (K,) "spherical" (one
variance per component). Functions that receive a :class:`Params` never take a
``covariance_type`` argument; :func:`m_step` and :func:`fit` take one because they build
parameters from data.

Exponential-family view. ``ln w_k N(x | mu_k, Sigma_k)`` is linear in the sufficient
statistics ``T(x) = (1, x, x x^T)``: ``log_joint(X, params) = T(X) @ eta`` with
``T = sufficient_statistics(X)`` and ``eta = natural_parameters(params)``. :func:`fit` uses
exactly this: it computes ``T`` once, and each iteration is one product ``T @ eta`` and a
softmax (E-step) and one product ``resp^T T`` (M-step, the expected sufficient statistics).

Numerics. Every function centres the data at its mean and divides it by a power of two
(exact in floating point) before computing anything, and maps the results back; data offset
by ``1e6`` is therefore fitted as accurately as centred data. Products with the natural
parameters are replaced by a Cholesky-based evaluation for any component where they would
lose more than ``1e-10`` nats to rounding (the private module ``emtutor._gaussian`` explains
how), and the feature matrix is not built at all when it would exceed 2^25 entries (full
covariances in many dimensions): every step then works on the centred data, as scikit-learn
does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

from emtutor import _gaussian as _g
from emtutor._validation import (
    as_float_array,
    check_concentration,
    check_distribution,
    check_int,
    check_max_iter,
    check_random_state,
    check_real,
    check_tol,
)
from emtutor.em import EmptyComponentWarning, EMResult, run

__all__ = [
    "EmptyComponentWarning",
    "GMMResult",
    "OnlineGMM",
    "Params",
    "aic",
    "bic",
    "check_params",
    "covariance_type_of",
    "e_step",
    "fit",
    "log_joint",
    "log_likelihood",
    "m_step",
    "n_parameters",
    "natural_parameters",
    "predict",
    "predict_proba",
    "sample",
    "score_samples",
    "sufficient_statistics",
]

_EPS = float(np.finfo(float).eps)


class Params(NamedTuple):
    """Parameters ``theta = (w, mu, Sigma)`` of a K-component Gaussian mixture in D dimensions.

    Attributes
    ----------
    weights : numpy.ndarray, shape (K,)
        Mixing weights ``w_k = p(z = k)``, non-negative, summing to 1.
    means : numpy.ndarray, shape (K, D)
        Component means ``mu_k``.
    covariances : numpy.ndarray, shape (K, D, D), (K, D) or (K,)
        "full": covariance matrices; "diag": their diagonals (variances);
        "spherical": one variance per component (``Sigma_k = s_k I``).

    Examples
    --------
    >>> p = Params(weights=[0.5, 0.5], means=[[0.0], [3.0]], covariances=[1.0, 2.0])
    >>> print(covariance_type_of(p))
    spherical
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class GMMResult(EMResult):
    """Result of :func:`fit`: an :class:`emtutor.em.EMResult` plus mixture-specific fields.

    Attributes
    ----------
    responsibilities : numpy.ndarray, shape (N, K)
        ``p(z_n = k | x_n, theta)`` at the final parameters.
    covariance_type : str
        "full", "diag" or "spherical".
    log_prior : numpy.ndarray or None
        With priors (MAP-EM), ``log_prior[i] = ln p(thetas[i])``, and ``log_likelihood``
        then holds the log posterior ``ln p(X | theta_i) + ln p(theta_i)`` (up to the
        constant ``ln p(X)``), the objective MAP-EM never decreases; the log-likelihood
        itself is ``log_likelihood - log_prior``. ``None`` without priors.

    Notes
    -----
    The inherited fields keep their meaning: ``theta`` is the final :class:`Params` (also
    available as :attr:`params`), ``thetas[i]`` the parameters after ``i`` iterations,
    ``log_likelihood[i] = ln p(X | thetas[i])`` (so entry 0 is at the initial parameters),
    ``elbo[i] = L(q_i, thetas[i + 1])``; :meth:`emtutor.em.EMResult.check_sandwich` checks
    ``ln p(thetas[i]) <= elbo[i] <= ln p(thetas[i + 1])``.

    Examples
    --------
    >>> X, _ = sample(Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0]), 50, random_state=0)
    >>> res = fit(X, 2, init="random", max_iter=5, random_state=0)
    >>> print(res.n_iter, len(res.thetas), res.log_likelihood.shape, res.elbo.shape)
    5 6 (6,) (5,)
    >>> print(res.responsibilities.shape, res.params is res.theta)
    (50, 2) True
    """

    responsibilities: np.ndarray
    covariance_type: str
    log_prior: np.ndarray | None = None

    @property
    def params(self) -> Params:
        """The final parameters, ``theta``."""
        return self.theta


# ----------------------------------------------------------------------------- validation


def _check_X(X: ArrayLike, missing=None, need_covariance: bool = False,
             dask: bool = False) -> np.ndarray:
    """A finite 2-D array; with ``missing="em"`` NaN entries are allowed (see
    ``emtutor._gmm_missing``), but no inf and no row or column entirely missing.
    ``dask=True``: a dask array chunked along rows is accepted (``emtutor._dask``)."""
    from emtutor import _dask, _gmm_missing

    if _dask.is_dask(X):
        if not dask:
            raise TypeError(
                "X is a dask array: gmm.fit, gmm.log_likelihood and gmm.predict accept one; "
                "for the other functions compute X (or a chunk of it) first"
            )
        return _dask.check_X(X, missing)

    if _gmm_missing.check_missing(missing):
        return _gmm_missing.check_X(X, need_covariance=need_covariance)
    arr = as_float_array(X, "X", ndim=2, allow_nan=True)  # inf, shape, type still refused
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(
            f"X contains NaN ({n_nan} entr{'y' if n_nan == 1 else 'ies'}): pass missing='em' "
            "to work on the observed entries of each row (EM treats the missing ones as "
            "latent), or remove or impute them"
        )
    return arr


def _make_problem(X: np.ndarray, covariance_type: str, reg_covar: float = 0.0,
                  prior: _g.Prior | None = None) -> _Problem:
    """The scaled problem; for data with NaN entries the missing-data version."""
    from emtutor import _dask

    if _dask.is_dask(X):
        return _dask.DaskProblem(X, covariance_type, reg_covar, prior)
    if np.isnan(X).any():
        from emtutor._gmm_missing import MissingProblem

        return MissingProblem(X, covariance_type, reg_covar, prior)
    return _Problem(X, covariance_type, reg_covar, prior)


def _check_covariance_type(covariance_type) -> str:
    if covariance_type not in _g.COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {', '.join(map(repr, _g.COVARIANCE_TYPES))}, "
            f"got {covariance_type!r}"
        )
    return covariance_type


def _check_reg_covar(reg_covar) -> float:
    return check_real(reg_covar, "reg_covar", low=0.0)


def _check_positive_definite(covariances: np.ndarray, what: str, hint: str = "") -> None:
    """Raise ``ValueError`` naming the first component whose covariance is not positive.

    A full covariance must have its smallest eigenvalue above ``D eps`` times its largest:
    beyond that condition number a Cholesky factor, even when it exists, carries no digits.
    """
    if covariances.ndim == 3:
        d = covariances.shape[-1]
        # First from the Cholesky factors that the E-step needs anyway: lambda_min >=
        # 1 / |L^{-1}|_F^2 and lambda_max <= trace, so this sufficient test (with a margin
        # of 2^10 for the rounding of L^{-1}) accepts only what the eigenvalues would.
        try:
            inv = _g.factors(covariances)[1]
            lower = 1.0 / np.einsum("kij,kij->k", inv, inv)
            trace = np.trace(covariances, axis1=1, axis2=2)
            if np.all(lower > 1024.0 * d * _EPS * trace):
                return
        except np.linalg.LinAlgError:
            pass
        eig = np.linalg.eigvalsh(covariances)
        bad = np.flatnonzero(~(eig[:, 0] > d * _EPS * np.abs(eig[:, -1])))
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"{what}[{k}] is not positive definite (eigenvalues from {eig[k, 0]:.3g} to "
                f"{eig[k, -1]:.3g}; the smallest must exceed {d} eps times the largest){hint}"
            )
        return
    bad = np.flatnonzero(~(covariances > 0).reshape(len(covariances), -1).all(axis=1))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{what}[{k}] must be positive, got {np.round(covariances[k], 6).tolist()}{hint}"
        )


def check_params(params: Params | tuple, n_features: int | None = None) -> Params:
    """Validate mixture parameters and return them as a :class:`Params` of float arrays.

    Parameters
    ----------
    params : Params or tuple
        ``(weights, means, covariances)``.
    n_features : int, optional
        Required dimension ``D`` of the means (the number of columns of the data).

    Returns
    -------
    Params

    Raises
    ------
    TypeError
        If ``params`` is not a triple of arrays of numbers.
    ValueError
        If a shape is wrong, a weight is negative, the weights do not sum to 1 (within
        ``1e-8``), an entry is not finite, or a covariance is not symmetric positive definite
        (full), or not positive (diag, spherical); the message names the component.

    Examples
    --------
    >>> check_params(([0.3, 0.6], [[0.0], [1.0]], [1.0, 1.0]))
    Traceback (most recent call last):
    ...
    ValueError: weights must sum to 1, got 0.9
    >>> check_params(([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]],
    ...               [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]]))
    Traceback (most recent call last):
    ...
    ValueError: covariances[1] is not positive definite (eigenvalues from -1 to 3; the smallest
    must exceed 2 eps times the largest)
    """
    if not isinstance(params, tuple) or len(params) != 3:
        raise TypeError(
            "params must be a Params(weights, means, covariances) or a tuple of three arrays, "
            f"got {type(params).__name__}"
        )
    weights = as_float_array(params[0], "weights", ndim=1)
    means = as_float_array(params[1], "means", ndim=2)
    covariances = as_float_array(params[2], "covariances", ndim=(1, 2, 3))
    k, d = means.shape
    if weights.shape != (k,):
        raise ValueError(
            f"weights must have shape ({k},), one per row of means, got {weights.shape}"
        )
    if (weights < 0).any():
        j = int(np.argmax(weights < 0))
        raise ValueError(f"weights must be non-negative, got weights[{j}] = {weights[j]:.6g}")
    if abs(weights.sum() - 1.0) > 1e-8:
        raise ValueError(f"weights must sum to 1, got {weights.sum():.10g}")
    if n_features is not None and d != n_features:
        raise ValueError(f"means have {d} features but X has {n_features} (columns)")
    expected = {3: (k, d, d), 2: (k, d), 1: (k,)}[covariances.ndim]
    if covariances.shape != expected:
        raise ValueError(
            f"covariances of type {_g.covariance_type_of(covariances)!r} must have shape "
            f"{expected} for {k} components in {d} dimensions, got {covariances.shape}"
        )
    if covariances.ndim == 3:
        asym = np.abs(covariances - covariances.transpose(0, 2, 1)).max(axis=(1, 2))
        size = np.abs(covariances).max(axis=(1, 2))
        bad = np.flatnonzero(asym > 1e-10 * size)
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"covariances[{j}] is not symmetric (largest |S - S^T| entry {asym[j]:.3g})"
            )
        covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    _check_positive_definite(covariances, "covariances")
    return Params(weights, means, covariances)


def covariance_type_of(params: Params | tuple) -> str:
    """Covariance type of ``params``: "full", "diag" or "spherical", from the covariances' shape.

    Examples
    --------
    >>> import numpy as np
    >>> print(covariance_type_of(Params(np.ones(1), np.zeros((1, 2)), np.ones((1, 2)))))
    diag
    """
    covariances = np.asarray(params[2])
    if covariances.ndim not in (1, 2, 3):
        raise ValueError(
            f"covariances must be 1-D, 2-D or 3-D, got an array of shape {covariances.shape}"
        )
    return _g.covariance_type_of(covariances)


# ------------------------------------------------------------------- centred, scaled problem


class _Problem:
    """Data centred at its mean and divided by a power of two, with its feature matrix.

    Methods ``log_likelihood``, ``e_step``, ``m_step`` and ``elbo`` are the four functions of
    :func:`emtutor.em.run`, on parameters in the scaled units. The E-step is computed once per
    parameter value: ``log_likelihood(theta)`` keeps the responsibilities for the next
    ``e_step(theta)``, and ``m_step`` keeps the moments that ``elbo`` needs.
    """

    blocked = False  # True: the features are computed block by block in every step

    def __init__(
        self, X: np.ndarray, covariance_type: str, reg_covar: float = 0.0,
        prior: _g.Prior | None = None,
    ):
        n, d = X.shape
        self.covariance_type = covariance_type
        # Work on a transposed copy: reductions over the points then run along contiguous
        # rows, many times faster than down the columns of an (N, D) array.
        Xt = X.T.copy(order="C")  # a copy: the caller's X is never modified
        self.centre = Xt.mean(axis=1)
        Xt -= self.centre[:, None]
        spread = max(float(Xt.max()), -float(Xt.min()))
        # A power of two, so that scaling and unscaling are exact.
        self.scale = math.ldexp(1.0, math.frexp(spread)[1]) if spread > 0 else 1.0
        Xt /= self.scale
        self.X = Xt.T  # (N, D) view of the centred, scaled data
        f = _g.n_features(d, covariance_type)
        if n * f <= _g.FEATURE_LIMIT and f <= _g.STORED_FEATURES:
            self.T = _g.features(self.X, covariance_type)
            self.t_max = np.abs(self.T).max(axis=1)
        elif covariance_type in _g.BLOCKED_TYPES:
            self.T, self.blocked = None, True
            self.t_max = _g.feature_maxima(self.X, covariance_type)
        else:  # too many features to store: every step works on the centred data directly
            self.T = self.t_max = None
        self.reg = reg_covar / self.scale**2
        self.prior = prior  # in the units of the data
        self.scaled_prior = None if prior is None else prior._replace(
            scale=None if prior.scale is None else prior.scale / self.scale**2
        )
        self.log_scale = math.log(self.scale)
        self.shift = -n * d * self.log_scale  # ln p(X) = ln p(scaled X) - N D ln(scale)
        self.iteration = 0
        self._post = None  # (theta, resp, log-likelihood)
        self._moments = None  # (resp, moments, theta that produced resp, its log-likelihood)

    def to_scaled(self, p: Params) -> Params:
        s = self.scale
        return Params(p.weights, (p.means - self.centre) / s, p.covariances / s**2)

    def to_original(self, p: Params) -> Params:
        s = self.scale
        return Params(p.weights, self.centre + s * p.means, p.covariances * s**2)

    def log_joint(self, theta: Params) -> np.ndarray:
        """(K, N) log joint in the original units."""
        lj = _g.log_joint(self.T, self.X, self.t_max, *theta, blocked=self.blocked)
        lj -= self.X.shape[1] * self.log_scale
        return lj

    def log_prior(self, theta: Params) -> float:
        """``ln p(theta)`` in the units of the data (0 without priors)."""
        if self.prior is None:
            return 0.0
        return _g.log_prior(theta.weights, theta.covariances * self.scale**2, self.prior)

    def log_likelihood(self, theta: Params) -> float:
        """``ln p(X | theta)``, plus ``ln p(theta)`` with priors: the objective EM climbs."""
        lj = _g.log_joint(self.T, self.X, self.t_max, *theta, blocked=self.blocked)
        resp, ll = _g.posterior(lj)
        ll += self.shift + self.log_prior(theta)
        self._post = (theta, resp, ll)
        return ll

    def e_step(self, theta: Params) -> np.ndarray:
        if self._post is None or self._post[0] is not theta:
            self.log_likelihood(theta)
        return self._post[1]

    def moments(self, resp: np.ndarray) -> _g.Moments:
        return _g.moments(
            self.T, self.X, resp, self.covariance_type, self.reg, blocked=self.blocked
        )

    def check_covariances(self, p: Params, when: str) -> None:
        _check_positive_definite(
            p.covariances,
            f"the covariance {when}: covariances",
            "; its responsibility sits on too few distinct points. Use reg_covar > 0 "
            "(the default is 1e-6) or fewer components",
        )

    def m_step(self, resp: np.ndarray) -> Params:
        theta_old, resp_old, ll_old = self._post
        if resp is not resp_old:  # not the cached E-step: no previous parameters to fall on
            raise RuntimeError("m_step expects the responsibilities of the last e_step")
        self.iteration += 1
        m = self.moments(resp)
        theta = self.maximise(m, theta_old, f"at iteration {self.iteration}",
                              f"after M-step {self.iteration}")
        self._moments = (resp, m, theta_old, ll_old)
        return theta

    def maximise(self, m: _g.Moments, theta_old: Params, empty_when: str, check_when: str,
                 stacklevel: int = 5) -> Params:
        """The parameters maximising Q (plus the log prior) for the moments ``m``: weights,
        ``reg_covar`` and priors by :func:`emtutor._gaussian.params_from_moments`, an empty
        component keeping ``theta_old``'s parameters (with an ``EmptyComponentWarning``
        naming ``empty_when``), and the covariances checked (``check_when``)."""
        _warn_empty(m, empty_when, stacklevel=stacklevel)
        theta = Params(
            *_g.params_from_moments(m, self.reg, *theta_old[1:], prior=self.scaled_prior)
        )
        self.check_covariances(theta, check_when)
        return theta

    def elbo(self, resp: np.ndarray, theta: Params) -> float:
        """``L(q_i, theta_{i+1}) = ln p(theta_i) + Q(theta_{i+1}) - Q(theta_i)``, ``q_i`` exact."""
        resp_m, m, theta_old, ll_old = self._moments
        if resp is not resp_m:
            raise RuntimeError("elbo expects the responsibilities of the last m_step")
        gain = _g.expected_complete_loglik(*theta, m) - _g.expected_complete_loglik(*theta_old, m)
        if self.prior is not None:  # L(q, theta) + ln p(theta): the bound of MAP-EM
            gain += self.log_prior(theta) - self.log_prior(theta_old)
        return ll_old + gain


def _warn_empty(m: _g.Moments, when: str, stacklevel: int = 4) -> None:
    if m.empty.any():
        ks = np.flatnonzero(m.empty).tolist()
        warnings.warn(
            f"component(s) {ks} received a total responsibility <= 10 eps {when}; they keep "
            "their previous mean and covariance with a weight of about 1e-15 / N, i.e. they "
            "are switched off. Consider fewer components or another initialisation",
            EmptyComponentWarning,
            stacklevel=stacklevel,
        )


def _prepare(X: ArrayLike, params: Params, missing=None) -> tuple[_Problem, Params]:
    """Validate ``X`` and ``params`` together; return the scaled problem and scaled params."""
    X = _check_X(X, missing)
    params = check_params(params, X.shape[1])
    problem = _make_problem(X, covariance_type_of(params))
    return problem, problem.to_scaled(params)


# ------------------------------------------------------------------ exponential-family view


def sufficient_statistics(X: ArrayLike, covariance_type: str = "full") -> np.ndarray:
    r"""Sufficient statistics ``T(x)`` of a Gaussian component, one row per data point.

    Columns: ``1``, then ``x_1, ..., x_D``, then the quadratic terms: for "full" the products
    ``x_i x_j`` with ``i <= j`` in :func:`numpy.triu_indices` order (``D (D + 1) / 2`` of
    them), for "diag" the squares ``x_j^2``, for "spherical" the single ``|x|^2``.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, one point per row.
    covariance_type : {"full", "diag", "spherical"}
        Which quadratic terms the covariance type needs.

    Returns
    -------
    numpy.ndarray, shape (N, F)

    Raises
    ------
    ValueError
        If X is not a finite 2-D array or the covariance type is unknown.

    Examples
    --------
    >>> print(sufficient_statistics([[2.0, 3.0]]))
    [[1. 2. 3. 4. 6. 9.]]
    >>> print(sufficient_statistics([[2.0, 3.0]], "spherical"))
    [[ 1.  2.  3. 13.]]
    """
    X = _check_X(X)
    return _g.features(X, _check_covariance_type(covariance_type)).T


def natural_parameters(params: Params) -> np.ndarray:
    r"""Natural parameters ``eta`` with ``log_joint(X, params) == sufficient_statistics(X) @ eta``.

    For component ``k`` with precision ``Lam = Sigma^{-1}`` (from a Cholesky factor):

    * constant feature: ``ln w_k - mu^T Lam mu / 2 - ln|Sigma| / 2 - (D / 2) ln(2 pi)``;
    * ``x``: ``Lam mu``;
    * ``x_i x_j``: ``-Lam_ii / 2`` on the diagonal, ``-Lam_ij`` off it (the upper triangle
      stands for both ``x_i x_j`` and ``x_j x_i``); "diag": ``-1 / (2 s_kj)``;
      "spherical": ``-1 / (2 s_k)``.

    The covariance type is read off the shape of ``params.covariances``.

    Parameters
    ----------
    params : Params
    missing : {None, "em"}
        ``"em"``: ``X`` may hold NaN for missing entries; each row then counts through the
        marginal density of its observed entries, and the missing ones are integrated out.
        The default refuses NaN.
    missing : {None, "em"}
        ``"em"``: ``X`` may hold NaN for missing entries; each row then counts through the
        marginal density of its observed entries, and the missing ones are integrated out.
        The default refuses NaN.
    missing : {None, "em"}
        ``"em"``: ``X`` may hold NaN for missing entries; each row then counts through the
        marginal density of its observed entries, and the missing ones are integrated out.
        The default refuses NaN.

    Returns
    -------
    numpy.ndarray, shape (F, K)

    Raises
    ------
    ValueError
        If ``params`` is invalid (see :func:`check_params`).

    Notes
    -----
    The product adds terms as large as ``|Lam| (|x| + |mu|)^2``; for data far from the origin
    or very narrow components it loses digits. :func:`log_joint` and :func:`fit` centre and
    scale the data first and fall back to a Cholesky evaluation where needed.

    Examples
    --------
    >>> import numpy as np
    >>> p = Params([0.4, 0.6], [[0.0, 1.0], [2.0, -1.0]],
    ...            [[[1.0, 0.3], [0.3, 2.0]], [[0.5, 0.0], [0.0, 0.5]]])
    >>> X = np.array([[0.5, 0.5], [1.0, -2.0], [3.0, 0.0]])
    >>> eta = natural_parameters(p)
    >>> print(eta.shape)
    (6, 2)
    >>> print(np.allclose(sufficient_statistics(X) @ eta, log_joint(X, p), rtol=1e-12))
    True
    """
    params = check_params(params)
    return _g.natural_parameters(*params)


# --------------------------------------------------------------------- the functional core


def log_joint(X: ArrayLike, params: Params, *, missing: str | None = None) -> np.ndarray:
    """Log joint ``ln p(x_n, z_n = k | theta) = ln w_k + ln N(x_n | mu_k, Sigma_k)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, one point per row.
    params : Params
        Mixture parameters; the covariance type is read off their shape.

    Returns
    -------
    numpy.ndarray, shape (N, K)
        Natural logarithms; ``-inf`` only in the column of a component of weight exactly 0.

    Raises
    ------
    ValueError
        If X is not a finite 2-D array, its number of columns differs from the means', or
        ``params`` is invalid (see :func:`check_params`).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> p = Params([0.3, 0.7], [[0.0], [2.0]], [1.0, 0.25])
    >>> print(log_joint([[1.0]], p).round(4))
    [[-2.6229 -2.5825]]
    >>> print(np.log([0.3 * norm.pdf(1.0), 0.7 * norm.pdf(1.0, 2.0, 0.5)]).round(4))
    [-2.6229 -2.5825]
    """
    problem, theta = _prepare(X, params, missing)
    return np.ascontiguousarray(problem.log_joint(theta).T)


def e_step(
    X: ArrayLike, params: Params, *, missing: str | None = None
) -> tuple[np.ndarray, float]:
    """E-step: responsibilities ``p(z_n = k | x_n, theta)`` and the log-likelihood.

    Parameters
    ----------
    X : array_like, shape (N, D)
    params : Params

    Returns
    -------
    resp : numpy.ndarray, shape (N, K)
        Rows sum to 1.
    log_likelihood : float
        ``ln p(X | theta)``, the total over the data (it comes with the E-step at no cost).

    Raises
    ------
    ValueError
        As :func:`log_joint`.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> resp, ll = e_step([[1.0], [3.0]], p)
    >>> print(resp.round(4), round(ll, 4))
    [[0.5   0.5  ]
     [0.018 0.982]] -3.5129
    """
    problem, theta = _prepare(X, params, missing)
    ll = problem.log_likelihood(theta)
    return np.ascontiguousarray(problem.e_step(theta).T), ll


def log_likelihood(X: ArrayLike, params: Params, *, missing: str | None = None) -> float:
    """Log-likelihood ``ln p(X | theta) = sum_n ln sum_k w_k N(x_n | mu_k, Sigma_k)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
    params : Params

    Returns
    -------
    float
        Natural logarithm, total over the data points.

    Raises
    ------
    ValueError
        As :func:`log_joint`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> x = np.array([1.0, 3.0])
    >>> print(round(log_likelihood(x[:, None], p), 6))
    -3.512874
    >>> print(round(float(np.log(0.5 * norm.pdf(x) + 0.5 * norm.pdf(x, 2.0)).sum()), 6))
    -3.512874

    With ``missing="em"`` a NaN entry is integrated out: the second row counts as ``x_1 = 3``.

    >>> X = np.array([[1.0, 0.0], [3.0, np.nan]])
    >>> p2 = Params([0.5, 0.5], [[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    >>> print(round(log_likelihood(X, p2, missing="em") - norm.logpdf(0.0), 6))
    -3.512874

    ``X`` may be a ``dask.array.Array`` chunked along rows: the total is then the sum over
    the chunks, computed by dask in one pass (``missing`` must be ``None``).
    """
    from emtutor import _dask

    if _dask.is_dask(X):
        _dask.check_X(X, missing)
        return _dask.log_likelihood(X, params)
    problem, theta = _prepare(X, params, missing)
    return problem.log_likelihood(theta)


def score_samples(X: ArrayLike, params: Params, *, missing: str | None = None) -> np.ndarray:
    """Per-point log-likelihood ``ln p(x_n | theta) = ln sum_k w_k N(x_n | mu_k, Sigma_k)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
    params : Params
    missing : {None, "em"}
        ``"em"``: ``X`` may hold NaN for missing entries; each row then counts through the
        marginal density of its observed entries, and the missing ones are integrated out.
        The default refuses NaN.

    Returns
    -------
    numpy.ndarray, shape (N,)
        Its sum is :func:`log_likelihood`; its mean is what a held-out comparison of
        models uses (per point, so data sets of different sizes compare).

    Raises
    ------
    ValueError
        As :func:`log_joint`.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.stats import norm
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> print(score_samples([[1.0], [3.0]], p).round(6))
    [-1.418939 -2.093935]
    >>> print(np.log(0.5 * norm.pdf([1.0, 3.0]) + 0.5 * norm.pdf([1.0, 3.0], 2.0)).round(6))
    [-1.418939 -2.093935]
    """
    problem, theta = _prepare(X, params, missing)
    return logsumexp(problem.log_joint(theta), axis=0)


def n_parameters(params: Params) -> int:
    """Number of free parameters of a mixture: what BIC and AIC count.

    ``K - 1`` weights (they sum to 1), ``K D`` means, and per component ``D (D + 1) / 2``
    ("full"), ``D`` ("diag") or 1 ("spherical") covariance entries, as scikit-learn counts.

    Examples
    --------
    >>> import numpy as np
    >>> print(n_parameters(Params(np.full(3, 1 / 3), np.zeros((3, 2)), np.ones((3, 2)))))
    14
    """
    params = check_params(params)
    k, d = params.means.shape
    per_component = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1}
    return int(k - 1 + k * d + k * per_component[covariance_type_of(params)])


def bic(X: ArrayLike, params: Params) -> float:
    """Bayesian information criterion ``-2 ln p(X | theta) + n_parameters ln N`` (lower is better).

    Parameters
    ----------
    X : array_like, shape (N, D)
    params : Params
        Usually the result of :func:`fit`; BIC penalises each free parameter by ``ln N``.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> X, _ = sample(Params([0.5, 0.5], [[-3.0], [3.0]], [1.0, 1.0]), 400, random_state=0)
    >>> scores = [bic(X, fit(X, k, random_state=0).params) for k in (1, 2, 3)]
    >>> print(int(np.argmin(scores)) + 1)
    2
    """
    X = _check_X(X)
    return -2.0 * log_likelihood(X, params) + n_parameters(params) * math.log(X.shape[0])


def aic(X: ArrayLike, params: Params) -> float:
    """Akaike information criterion ``-2 ln p(X | theta) + 2 n_parameters`` (lower is better).

    Parameters
    ----------
    X : array_like, shape (N, D)
    params : Params

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> X = np.array([[1.0], [3.0]])
    >>> print(round(aic(X, p), 6), round(-2 * log_likelihood(X, p) + 2 * n_parameters(p), 6))
    17.025749 17.025749
    """
    X = _check_X(X)
    return -2.0 * log_likelihood(X, params) + 2.0 * n_parameters(params)


def m_step(
    X: ArrayLike,
    resp: ArrayLike,
    *,
    covariance_type: str,
    reg_covar: float = 1e-6,
    previous: Params | None = None,
) -> Params:
    """M-step: the parameters maximising ``Q(theta, theta_old)`` for given responsibilities.

    With ``N_k = sum_n r_nk``: ``w_k = N_k / N``, ``mu_k = sum_n r_nk x_n / N_k`` and
    ``Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I`` ("diag": its
    diagonal; "spherical": the mean of that diagonal). As in scikit-learn, ``10 eps`` is added
    to each ``N_k`` in the weights, and ``reg_covar`` keeps covariances positive definite.
    Everything comes from the expected sufficient statistics ``resp^T T(X)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
    resp : array_like, shape (N, K)
        Responsibilities; rows are distributions.
    covariance_type : {"full", "diag", "spherical"}
    reg_covar : float
        Non-negative amount added to the diagonal of every covariance.
    previous : Params, optional
        The parameters the responsibilities were computed from. Only used for an empty
        component (``sum_n r_nk <= 10 eps``), whose mean and covariance the data leave
        undefined: it keeps its previous ones, with an :class:`EmptyComponentWarning`, as in
        :func:`fit`. Without ``previous`` an empty component is an error.

    Returns
    -------
    Params

    Raises
    ------
    ValueError
        If X or resp is malformed (shapes, NaN, rows not summing to 1), ``reg_covar < 0``, a
        column of ``resp`` sums to (almost) zero and no ``previous`` is given, ``previous``
        does not match (components, features, covariance type), or a covariance comes out
        singular (possible only with ``reg_covar = 0``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [5.0], [7.0]])
    >>> resp = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> p = m_step(X, resp, covariance_type="spherical", reg_covar=0.0)
    >>> print(p.weights.round(4), p.means.ravel().round(4), p.covariances.round(4))
    [0.5 0.5] [0.5 6. ] [0.25 1.  ]
    """
    X = _check_X(X)
    covariance_type = _check_covariance_type(covariance_type)
    reg_covar = _check_reg_covar(reg_covar)
    resp = as_float_array(resp, "resp", ndim=2)
    if resp.shape[0] != X.shape[0]:
        raise ValueError(
            f"resp must have one row per data point: X has {X.shape[0]} rows, resp {resp.shape[0]}"
        )
    resp = check_distribution(resp, "resp")
    problem = _Problem(X, covariance_type, reg_covar)
    if previous is not None:
        previous = check_params(previous, X.shape[1])
        if covariance_type_of(previous) != covariance_type or len(previous[0]) != resp.shape[1]:
            raise ValueError(
                f"previous must have {resp.shape[1]} components of type {covariance_type!r}, "
                f"got {len(previous[0])} of type {covariance_type_of(previous)!r}"
            )
    m = problem.moments(np.ascontiguousarray(resp.T))
    if m.empty.any() and previous is None:
        k = int(np.flatnonzero(m.empty)[0])
        raise ValueError(
            f"column {k} of resp sums to {m.totals[k]:.3g}: component {k} has no data, so its "
            "mean and covariance are undefined; pass previous=... to keep the old ones, or "
            "drop the component"
        )
    _warn_empty(m, "in the M-step", stacklevel=3)
    fallback = (m.means, m.scatter) if previous is None else problem.to_scaled(previous)[1:]
    theta = Params(*_g.params_from_moments(m, problem.reg, *fallback))
    problem.check_covariances(theta, "from the M-step")
    return problem.to_original(theta)


def predict_proba(X: ArrayLike, params: Params, *, missing: str | None = None) -> np.ndarray:
    """Posterior probabilities ``p(z_n = k | x_n, theta)``, shape (N, K).

    Same as the first output of :func:`e_step`.
    With ``missing="em"`` ``X`` may hold NaN entries, as in :func:`e_step`.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> print(predict_proba([[1.0], [3.0]], p).round(4))
    [[0.5   0.5  ]
     [0.018 0.982]]
    """
    return e_step(X, params, missing=missing)[0]


def predict(X: ArrayLike, params: Params, *, missing: str | None = None) -> np.ndarray:
    """Most probable component ``argmax_k p(z_n = k | x_n, theta)`` of each point, shape (N,).

    The argmax of :func:`predict_proba`'s rows, so the two always agree; ties go to the
    lowest index.
    With ``missing="em"`` ``X`` may hold NaN entries, as in :func:`e_step`.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.0], [2.0]], [1.0, 1.0])
    >>> print(predict([[-1.0], [0.9], [3.0]], p))
    [0 0 1]

    ``X`` may be a ``dask.array.Array`` chunked along rows: the labels are then a lazy dask
    array of shape (N,), computed chunk by chunk.
    """
    from emtutor import _dask

    if _dask.is_dask(X):
        return _dask.predict(X, params, missing)
    problem, theta = _prepare(X, params, missing)
    return np.argmax(problem.e_step(theta), axis=0)


def sample(
    params: Params, n: int, random_state: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points from the mixture: ``z ~ Categorical(w)``, then ``x ~ N(mu_z, Sigma_z)``.

    Parameters
    ----------
    params : Params
    n : int
        Number of points, ``>= 1``.
    random_state : None, int or numpy.random.Generator
        Seed or generator (passed to :func:`numpy.random.default_rng`).

    Returns
    -------
    X : numpy.ndarray, shape (n, D)
    z : numpy.ndarray of int, shape (n,)
        The component each point came from.

    Examples
    --------
    >>> p = Params([0.25, 0.75], [[-5.0], [5.0]], [1.0, 1.0])
    >>> X, z = sample(p, 1000, random_state=0)
    >>> print(X.shape, round(float((z == 1).mean()), 2), round(float(X[z == 1].mean()), 1))
    (1000, 1) 0.77 5.0
    """
    params = check_params(params)
    n = check_int(n, "n", low=1)
    rng = check_random_state(random_state)
    weights, means, covariances = params
    z = rng.choice(len(weights), size=n, p=weights / weights.sum())
    noise = rng.standard_normal((n, means.shape[1]))
    factors = _g.cholesky(covariances)
    X = np.empty_like(noise)
    for k in range(len(weights)):
        rows = z == k
        if covariances.ndim == 3:
            X[rows] = means[k] + noise[rows] @ factors[k].T
        else:
            X[rows] = means[k] + noise[rows] * factors[k]
    return X, z


# ------------------------------------------------------------------------------- the driver


def _kmeans_plusplus(problem: _Problem, k: int, rng: np.random.Generator) -> Params:
    """k-means++ seeding, nearest-centre assignment, then one M-step (scaled units)."""
    X = problem.X
    n = X.shape[0]
    index = [int(rng.integers(n))]
    dist2 = np.einsum("nd,nd->n", X - X[index[0]], X - X[index[0]])
    for _ in range(1, k):
        total = dist2.sum()
        i = int(rng.choice(n, p=dist2 / total)) if total > 0 else int(rng.integers(n))
        index.append(i)
        dist2 = np.minimum(dist2, np.einsum("nd,nd->n", X - X[i], X - X[i]))
    centres = X[index]
    sq = (
        np.einsum("nd,nd->n", X, X)[None, :]
        - 2.0 * centres @ X.T
        + np.einsum("kd,kd->k", centres, centres)[:, None]
    )
    labels = np.argmin(sq, axis=0)
    resp = (labels[None, :] == np.arange(k)[:, None]).astype(float)
    m = problem.moments(resp)
    _warn_empty(m, "after the k-means++ assignment (fewer distinct points than components?)")
    # An empty cluster keeps its centre and the scatter of the whole data set.
    whole = problem.moments(np.ones((1, n)))
    whole_cov = _g.params_from_moments(whole, problem.reg, whole.means, whole.scatter)[2]
    fallback_cov = np.repeat(whole_cov, k, axis=0)
    return Params(*_g.params_from_moments(m, problem.reg, centres, fallback_cov))


def _initial_params(problem: _Problem, k: int, init, rng) -> Params:
    if isinstance(init, str):
        if init == "kmeans++":
            theta = _kmeans_plusplus(problem, k, rng)
        else:
            resp = rng.random((problem.X.shape[0], k))
            resp /= resp.sum(axis=1, keepdims=True)
            m = problem.moments(np.ascontiguousarray(resp.T))
            theta = Params(*_g.params_from_moments(m, problem.reg, m.means, m.scatter))
        problem.check_covariances(theta, "at initialisation")
        return theta
    return problem.to_scaled(init)


def fit(
    X: ArrayLike,
    n_components: int,
    *,
    covariance_type: str | None = None,
    init: str | Params = "kmeans++",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-10,
    reg_covar: float = 1e-6,
    random_state: int | np.random.Generator | None = None,
    weight_concentration: float | ArrayLike | None = None,
    covariance_prior: tuple | None = None,
    missing: str | None = None,
    method: str = "batch",
    n_blocks: int | None = None,
) -> GMMResult:
    """Fit a Gaussian mixture by EM (via :func:`emtutor.em.run`) and return the full trace.

    Each iteration is an E-step (:func:`e_step`) and an M-step (:func:`m_step`); the
    log-likelihood is recorded at every parameter value, starting with the initial one, and
    EM stops by the package's rule :func:`emtutor.em.has_converged`.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Data, one point per row; finite.
    n_components : int
        ``K``, with ``1 <= K <= N``.
    covariance_type : {"full", "diag", "spherical"}, optional
        Defaults to the type of ``init`` when it is a :class:`Params`, else to "full". Given
        together with ``init`` parameters, the two must agree.
    init : "kmeans++", "random" or Params
        "kmeans++": k-means++ seeding (centres drawn with probability proportional to the
        squared distance to the nearest centre so far), each point assigned to its nearest
        centre, then one M-step. "random": responsibilities drawn uniformly and normalised,
        then one M-step. A :class:`Params` is used as the starting point as is.
    n_init : int
        Number of random starts; the run with the highest final log-likelihood is returned.
        Must be 1 when ``init`` is a :class:`Params`.
    max_iter : int
        Maximum number of EM iterations (``>= 0``).
    tol : float
        Tolerance ``>= 0`` of :func:`emtutor.em.has_converged`: stop when the log-likelihood
        rose by less than ``tol * max(1, |ln p|)``; ``0`` runs exactly ``max_iter``
        iterations.
    reg_covar : float
        Non-negative amount added to the diagonal of each covariance after every M-step (and
        at initialisation), as in scikit-learn. It bounds covariances away from zero, so a
        component collapsing onto repeated points keeps a finite likelihood.
    random_state : None, int or numpy.random.Generator
        Seed or generator for the initialisation; an int reproduces a fit exactly. With
        ``n_init > 1`` one generator serves the starts in turn.
    weight_concentration : float or array_like of shape (K,), optional
        A Dirichlet prior on the weights, with every concentration ``>= 1`` (1 is flat):
        MAP-EM. The M-step then gives ``w_k = (N_k + a_k - 1) / (N + sum_j a_j - K)``.
    covariance_prior : (scale, dof), optional
        A conjugate prior on each component's covariance: inverse-Wishart ``IW(scale,
        dof)`` with ``scale`` of shape (D, D) (symmetric positive definite) and
        ``dof > D - 1`` for "full"; for "diag" an inverse-Wishart in one dimension
        (inverse-gamma) on each variance, ``scale`` of shape (D,) and ``dof > 0``; for
        "spherical" the same on the one variance, ``scale`` a positive number. It keeps
        covariances away from zero as a prior, unlike ``reg_covar``, which scikit-learn
        adds after the M-step and which is not the MAP estimate of any prior. With a
        prior, pass ``reg_covar=0`` for an exact MAP M-step.
    missing : {None, "em"}
        ``"em"``: ``X`` may hold NaN for missing entries (any pattern; no row or column
        entirely missing, at least two observed entries per column). EM then treats the
        missing entries as latent too: the E-step uses each component's marginal density of
        a row's observed entries and the conditional moments of its missing ones, and the
        log-likelihood is that of the observed entries. Rows are grouped by their pattern
        of missing entries, so the cost per iteration grows with the number of patterns'
        sizes, not of rows. Without NaN in ``X`` the fit is the complete-data one, exactly.
        The initialisation runs on the data with each missing entry at its column's mean.
    method : {"batch", "incremental"}
        "batch": every iteration is an E-step on all the data and an M-step. "incremental":
        incremental EM (Neal and Hinton, 1998; :mod:`emtutor.incremental`); an iteration is
        then one pass over the data in ``n_blocks`` blocks, each a partial E-step on the
        block and an M-step, ``elbo[i]`` is ``L(q, theta)`` after pass ``i + 1`` (the
        objective incremental EM never lowers, and the one its stopping rule watches),
        and ``log_likelihood`` is evaluated at the end of each pass for the record.
    n_blocks : int, optional
        Number of contiguous blocks of rows for ``method="incremental"`` (default 10,
        ``1 <= n_blocks <= N``; 1 is batch EM). Shuffle sorted data first.

    Returns
    -------
    GMMResult
        ``params``, ``log_likelihood`` (entry ``i`` = ``ln p(X | theta_i)``, entry 0 at the
        initial parameters), ``elbo`` (entry ``i`` = ``L(q_i, theta_{i + 1})``), ``n_iter``,
        ``converged``, ``responsibilities`` at the final parameters, and the whole trace.
        With a prior, ``log_likelihood`` is the log posterior (see :class:`GMMResult`).

    Raises
    ------
    ValueError
        If X is not a finite 2-D array, ``n_components`` is not in ``1..N``, an option is out of
        range, ``init`` is an unknown string or invalid parameters, or a covariance becomes
        singular (only possible with ``reg_covar = 0``).
    TypeError
        If an integer option is not an integer or ``init`` has the wrong type.

    Warns
    -----
    EmptyComponentWarning
        When a component receives (almost) no responsibility; see its documentation.
    emtutor.em.LikelihoodDecreaseWarning
        If the log-likelihood goes down (it should not, up to rounding; ``reg_covar > 0``
        makes the M-step slightly inexact).

    Notes
    -----
    One E-step per iteration: the log-likelihood ``ln p(X | theta_i)`` is a by-product of the
    E-step at ``theta_i`` (see :func:`emtutor.gmm.e_step`), and the ELBO comes from the
    expected sufficient statistics of the M-step, via ``L(q_i, theta) = ln p(X | theta_i) +
    Q(theta, theta_i) - Q(theta_i, theta_i)``.

    ``X`` may be a ``dask.array.Array`` chunked along rows (known chunk sizes, one chunk
    across the columns): each iteration then maps the E-step over the chunks and adds
    their expected sufficient statistics (one pass per iteration), with the same centring,
    scaling and M-step as in memory, so ``init`` given as Params gives the in-memory trace
    (to about 1e-13 relative). "kmeans++" and "random" seed on the first chunk, and
    ``responsibilities`` is a lazy dask array. See ``emtutor._dask``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = Params([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]],
    ...                [[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]]])
    >>> X, z = sample(truth, 2000, random_state=1)
    >>> res = fit(X, 2, random_state=0)
    >>> order = np.argsort(res.params.means[:, 0])
    >>> print(res.converged, res.params.weights[order].round(2))
    True [0.3 0.7]
    >>> print(bool(np.abs(res.params.means[order] - truth.means).max() < 0.1))
    True
    >>> print(bool(np.all(np.diff(res.log_likelihood) >= -1e-9)))
    True
    >>> res.check_sandwich()
    """
    X = _check_X(X, missing, need_covariance=True, dask=True)
    n = X.shape[0]
    n_blocks = _check_method(method, n_blocks, n, missing, X)
    k = check_int(n_components, "n_components", low=1)
    if k > n:
        raise ValueError(f"n_components = {k} exceeds the number of data points N = {n}")
    n_init = check_int(n_init, "n_init", low=1)
    max_iter = check_max_iter(max_iter)
    reg_covar = _check_reg_covar(reg_covar)
    check_tol(tol)
    if isinstance(init, str):
        if init not in ("kmeans++", "random"):
            raise ValueError(f"init must be 'kmeans++', 'random' or Params, got {init!r}")
        covariance_type = _check_covariance_type(covariance_type or "full")
    elif isinstance(init, tuple):
        init = check_params(init, X.shape[1])
        init_type = covariance_type_of(init)
        if covariance_type is not None and _check_covariance_type(covariance_type) != init_type:
            raise ValueError(
                f"covariance_type={covariance_type!r} but the covariances of init have the "
                f"shape of type {init_type!r}"
            )
        covariance_type = init_type
        if len(init.weights) != k:
            raise ValueError(
                f"init has {len(init.weights)} components but n_components = {k}"
            )
        if n_init != 1:
            raise ValueError(
                "n_init > 1 needs a random init; every start from given Params is the same"
            )
    else:
        raise TypeError(f"init must be 'kmeans++', 'random' or Params, got {type(init).__name__}")
    rng = check_random_state(random_state)
    prior = _check_prior(weight_concentration, covariance_prior, k, X.shape[1], covariance_type)

    problem = _make_problem(X, covariance_type, reg_covar, prior)
    best = None
    for _ in range(n_init):
        problem.iteration = 0
        theta0 = _initial_params(problem, k, init, rng)
        trace = incremental.run(problem, theta0, n_blocks, tol=tol, max_iter=max_iter) if (
            method == "incremental") else run(
            theta0,
            problem.e_step,
            problem.m_step,
            problem.log_likelihood,
            elbo=problem.elbo,
            tol=tol,
            max_iter=max_iter,
        )
        if best is None or trace.log_likelihood[-1] > best[0].log_likelihood[-1]:
            best = (trace, problem.e_step(trace.theta))
        problem._moments = None  # frees the previous responsibilities before the copy below
    trace, resp = best
    thetas = [problem.to_original(t) for t in trace.thetas]
    return GMMResult(
        theta=thetas[-1],
        thetas=thetas,
        log_likelihood=trace.log_likelihood,
        elbo=trace.elbo,
        n_iter=trace.n_iter,
        converged=trace.converged,
        decreases=trace.decreases,
        responsibilities=problem.responsibilities(trace.theta) if hasattr(
            problem, "responsibilities") else np.ascontiguousarray(resp.T),
        covariance_type=covariance_type,
        log_prior=None if prior is None else np.array([problem.log_prior(t) for t in trace.thetas]),
    )


def _check_method(method, n_blocks, n: int, missing, X) -> int | None:
    """Validate ``method`` and ``n_blocks`` of :func:`fit`; the number of blocks or None."""
    if method not in ("batch", "incremental"):
        raise ValueError(f"method must be 'batch' or 'incremental', got {method!r}")
    if method == "batch":
        if n_blocks is not None:
            raise ValueError("n_blocks is for method='incremental'; batch EM has no blocks")
        return None
    if missing is not None or not isinstance(X, np.ndarray):
        raise ValueError(
            "method='incremental' needs complete data in memory (a numpy array, "
            "missing=None)"
        )
    return check_int(10 if n_blocks is None else n_blocks, "n_blocks", low=1, high=n)


def _check_prior(concentration, covariance_prior, k: int, d: int, covariance_type: str):
    """Validate the priors of :func:`fit` and return a :class:`emtutor._gaussian.Prior`."""
    if concentration is None and covariance_prior is None:
        return None
    alpha = None
    if concentration is not None:
        alpha = check_concentration(concentration, "weight_concentration", k)
    scale = dof = None
    if covariance_prior is not None:
        if not isinstance(covariance_prior, tuple) or len(covariance_prior) != 2:
            raise TypeError(
                "covariance_prior must be a pair (scale, dof), got "
                f"{type(covariance_prior).__name__}"
            )
        want = {"full": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
        scale = as_float_array(covariance_prior[0], "covariance_prior scale", ndim=len(want))
        if scale.shape != want:
            raise ValueError(
                f"covariance_prior scale must have shape {want} for {covariance_type!r} "
                f"covariances in {d} dimensions, got {scale.shape}"
            )
        low = d - 1 if covariance_type == "full" else 0
        dof = check_real(covariance_prior[1], "covariance_prior dof", low=float(low), strict=True)
        if covariance_type == "full":
            _check_positive_definite(scale[None], "covariance_prior scale")
        elif not (scale > 0).all():
            raise ValueError(f"covariance_prior scale must be positive, got {scale.tolist()}")
        if covariance_type == "spherical":
            scale = float(scale)
    return _g.Prior(alpha, scale, dof)


from emtutor import incremental  # noqa: E402  (it builds on the functions above)
from emtutor.incremental import OnlineGMM  # noqa: E402
