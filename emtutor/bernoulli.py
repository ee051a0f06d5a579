"""Mixtures of multivariate Bernoulli distributions fitted by EM (Bishop, 2006, §9.3.3).

A data point ``v`` is a row ``x`` of ``D`` binary values (the pixels of a black-and-white
image); the latent ``z`` says which of ``K`` components produced it:

    p(z = k | theta) = w_k,      p(x | z = k, theta) = prod_d mu_kd^x_d (1 - mu_kd)^(1 - x_d),

so that

    ln p(x_n, z_n = k | theta) = ln w_k + sum_d [x_nd ln mu_kd + (1 - x_nd) ln(1 - mu_kd)].

Functional core, one step at a time:

* :func:`log_joint` -- the (N, K) array above, the input of every function of
  :mod:`emtutor.bounds`; computed with one matrix product,
  ``X @ logit(mu)^T + sum_d ln(1 - mu_kd)``;
* :func:`e_step` -- responsibilities ``r_nk = p(z_n = k | x_n, theta)`` and ``ln p(X | theta)``;
* :func:`m_step` -- from the expected counts ``N_k = sum_n r_nk`` and
  ``S_kd = sum_n r_nk x_nd``: ``w_k = N_k / N`` and ``mu_kd = S_kd / N_k`` (maximum
  likelihood), or the MAP update of a :class:`Prior`;
* :func:`log_likelihood`, :func:`score_samples`, :func:`predict`, :func:`predict_proba`,
  :func:`sample`, :func:`log_prior`.

The driver :func:`fit` runs :func:`emtutor.em.run` on these steps and returns a
:class:`BernoulliResult` (an :class:`emtutor.em.EMResult` with the responsibilities).

Zeros are honest. Nothing is clipped: a component with ``mu_kd = 0`` says that pixel ``d``
is never on, so an image with that pixel on is impossible under it and :func:`log_joint`
gives ``-inf``; if every component says so, :func:`score_samples` and
:func:`log_likelihood` give ``-inf`` for that image. The maximum-likelihood M-step puts a
probability of exactly 0 (or 1) on every pixel that is off (on) in all the images a
component is responsible for. To keep probabilities away from 0 and 1, ask for it: a
Beta prior (``beta_prior=(2, 2)`` adds one pseudo-image with the pixel on and one with it
off to every component, Laplace's rule of succession).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaln, gammaln, logsumexp, xlog1py, xlogy

from emtutor import bounds
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
    "BernoulliResult",
    "EmptyComponentWarning",
    "Params",
    "Prior",
    "check_params",
    "e_step",
    "fit",
    "log_joint",
    "log_likelihood",
    "log_prior",
    "m_step",
    "predict",
    "predict_proba",
    "sample",
    "score_samples",
]


class Params(NamedTuple):
    """Parameters ``theta = (w, mu)`` of a K-component mixture of D-dimensional Bernoullis.

    Attributes
    ----------
    weights : numpy.ndarray, shape (K,)
        Mixing weights ``w_k = p(z = k)``, non-negative, summing to 1.
    means : numpy.ndarray, shape (K, D)
        ``mu_kd = p(x_d = 1 | z = k)``, the pixel probabilities of each component (the mean
        image of the component), in [0, 1].

    Examples
    --------
    >>> p = Params(weights=[0.5, 0.5], means=[[0.9, 0.1], [0.2, 0.8]])
    >>> print(check_params(p).means.shape)
    (2, 2)
    """

    weights: np.ndarray
    means: np.ndarray


class Prior(NamedTuple):
    """Conjugate priors for MAP-EM: ``Beta(a, b)`` on every ``mu_kd``, Dirichlet on ``w``.

    The prior density is ``prod_k prod_d Beta(mu_kd | a, b) * Dir(w | alpha)``; the MAP
    M-step (:func:`m_step`) is

        mu_kd = (S_kd + a - 1) / (N_k + a + b - 2),
        w_k = (N_k + alpha_k - 1) / (N + sum_j alpha_j - K),

    the maximum-likelihood update with ``a - 1`` pseudo-images that have the pixel on and
    ``b - 1`` that have it off added to each component, and ``alpha_k - 1`` pseudo-points
    to each component's count. ``a = b = 1`` and ``alpha = 1`` are flat priors and give
    maximum likelihood; ``a = b = 2`` is Laplace's smoothing ``(S_kd + 1) / (N_k + 2)``.

    Attributes
    ----------
    a, b : float
        Beta parameters, ``>= 1`` each (below 1 the density is unbounded at 0 or 1 and the
        mode can sit on the boundary, so no MAP update would exist in the interior).
    concentration : float or numpy.ndarray of shape (K,)
        Dirichlet concentration ``alpha``, every entry ``>= 1``.

    Examples
    --------
    >>> Prior(a=2.0, b=2.0)
    Prior(a=2.0, b=2.0, concentration=1.0)
    """

    a: float = 1.0
    b: float = 1.0
    concentration: float | np.ndarray = 1.0


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class BernoulliResult(EMResult):
    """Result of :func:`fit`: an :class:`emtutor.em.EMResult` plus the responsibilities.

    Attributes
    ----------
    responsibilities : numpy.ndarray, shape (N, K)
        ``p(z_n = k | x_n, theta)`` at the final parameters.
    prior : Prior or None
        The prior of a MAP fit, ``None`` for maximum likelihood.
    log_prior : numpy.ndarray or None
        With a prior, ``log_prior[i] = ln p(thetas[i])`` (:func:`log_prior`), and
        ``log_likelihood`` then holds the log posterior ``ln p(X | theta_i) + ln p(theta_i)``
        (up to the constant ``ln p(X)``), the objective MAP-EM never decreases; ``elbo``
        holds ``L(q_i, theta_{i+1}) + ln p(theta_{i+1})``. ``None`` without a prior.

    Notes
    -----
    ``theta`` (also :attr:`params`) is the final :class:`Params`, ``thetas[i]`` the
    parameters after ``i`` iterations, ``log_likelihood[i] = ln p(X | thetas[i])``,
    ``elbo[i] = L(q_i, thetas[i + 1])``; :meth:`emtutor.em.EMResult.check_sandwich` checks
    ``ln p(thetas[i]) <= elbo[i] <= ln p(thetas[i + 1])``.

    Examples
    --------
    >>> X, _ = sample(Params([0.5, 0.5], [[0.9, 0.9, 0.1], [0.1, 0.2, 0.9]]), 40,
    ...               random_state=0)
    >>> res = fit(X, 2, max_iter=5, tol=0, random_state=0)
    >>> print(res.n_iter, len(res.thetas), res.elbo.shape, res.responsibilities.shape)
    5 6 (5,) (40, 2)
    >>> res.check_sandwich()
    """

    responsibilities: np.ndarray
    prior: Prior | None = None
    log_prior: np.ndarray | None = None

    @property
    def params(self) -> Params:
        """The final parameters, ``theta``."""
        return self.theta


# ----------------------------------------------------------------------------- validation


def _check_X(X: ArrayLike) -> np.ndarray:
    """A 2-D array of zeros and ones, as floats."""
    arr = as_float_array(X, "X", ndim=2)
    bad = (arr != 0.0) & (arr != 1.0)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"X must hold binary data (0 or 1 only), got X[{i}, {j}] = {arr[i, j]:g} "
            f"({int(bad.sum())} such entries); threshold the data first, e.g. X > 0.5"
        )
    return arr


def check_params(params: Params | tuple, n_features: int | None = None) -> Params:
    """Validate mixture parameters and return them as a :class:`Params` of float arrays.

    Parameters
    ----------
    params : Params or tuple
        ``(weights, means)``.
    n_features : int, optional
        Required number ``D`` of columns of the means (the columns of the data).

    Returns
    -------
    Params

    Raises
    ------
    TypeError
        If ``params`` is not a pair of arrays of numbers.
    ValueError
        If a shape is wrong, the weights are not a distribution (negative, or not summing
        to 1 within ``1e-8``), or a mean lies outside [0, 1]; the message names the entry.

    Examples
    --------
    >>> check_params(([0.3, 0.6], [[0.5], [0.5]]))
    Traceback (most recent call last):
    ...
    ValueError: rows of weights must sum to 1 (along axis -1); row 0 sums to 0.9, off by
    -0.1 (the tolerance is 1e-08)
    >>> check_params(([0.5, 0.5], [[0.5, 0.2], [1.5, 0.0]]))
    Traceback (most recent call last):
    ...
    ValueError: means must lie in [0, 1] (probabilities), got means[1, 0] = 1.5
    """
    if not isinstance(params, tuple) or len(params) != 2:
        raise TypeError(
            "params must be a bernoulli.Params(weights, means) or a tuple of two arrays, "
            f"got {type(params).__name__}"
        )
    weights = as_float_array(params[0], "weights", ndim=1)
    means = as_float_array(params[1], "means", ndim=2)
    k, d = means.shape
    if weights.shape != (k,):
        raise ValueError(
            f"weights must have shape ({k},), one per row of means, got {weights.shape}"
        )
    check_distribution(weights, "weights")
    outside = (means < 0.0) | (means > 1.0)
    if outside.any():
        i, j = (int(v) for v in np.argwhere(outside)[0])
        raise ValueError(
            f"means must lie in [0, 1] (probabilities), got means[{i}, {j}] = {means[i, j]:g}"
        )
    if n_features is not None and d != n_features:
        raise ValueError(f"means have {d} columns (pixels) but X has {n_features}")
    return Params(weights, means)


def _check_resp(resp: ArrayLike, n: int) -> np.ndarray:
    r = as_float_array(resp, "resp", ndim=2)
    if r.shape[0] != n:
        raise ValueError(
            f"resp must have one row per data point: X has {n} rows, resp {r.shape[0]}"
        )
    return check_distribution(r, "resp")


def _check_prior(prior, k: int) -> Prior:
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a bernoulli.Prior or None, got {type(prior).__name__}")
    a = check_real(prior.a, "prior.a", low=1.0)
    b = check_real(prior.b, "prior.b", low=1.0)
    alpha = check_concentration(prior.concentration, "prior.concentration", k)
    return Prior(a, b, alpha)


# ------------------------------------------------------------------------- functional core


def _log_joint(X: np.ndarray, weights: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(N, K) log joint of validated inputs: one matrix product, exact zeros handled."""
    inside = (means > 0.0) & (means < 1.0)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
        log_on = np.log(np.where(inside, means, 0.5))
        log_off = np.log1p(-np.where(inside, means, 0.5))
    # sum_d x_d ln mu_d + (1 - x_d) ln(1 - mu_d) = x . logit(mu) + sum_d ln(1 - mu_d);
    # a pixel with mu in {0, 1} contributes 0 (ln 1) here when x agrees with it
    log_on = np.where(inside, log_on, 0.0)
    log_off = np.where(inside, log_off, 0.0)
    lj = X @ (log_on - log_off).T + (log_off.sum(axis=1) + log_w)
    if not inside.all():  # and -inf when x disagrees with a probability of 0 or 1
        clash = X @ (means == 0.0).T + (1.0 - X) @ (means == 1.0).T
        lj[clash > 0] = -np.inf
    return lj


def log_joint(X: ArrayLike, params: Params) -> np.ndarray:
    """``ln p(x_n, z_n = k | theta) = ln w_k + sum_d ln Bern(x_nd | mu_kd)``, shape (N, K).

    Computed as ``X @ logit(mu)^T + sum_d ln(1 - mu_kd) + ln w_k``, one matrix product.
    A pixel that is on where ``mu_kd = 0`` (or off where ``mu_kd = 1``), or a weight of 0,
    makes the state impossible: the entry is ``-inf``, not a large negative number.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Binary data, one image per row (0 and 1 only; bools are accepted).
    params : Params

    Returns
    -------
    numpy.ndarray, shape (N, K)

    Raises
    ------
    ValueError
        If ``X`` is not a 2-D array of zeros and ones (NaN, 0.5, ...), or the parameters
        are invalid or have another number of columns (see :func:`check_params`).

    Examples
    --------
    >>> import numpy as np
    >>> p = Params([0.25, 0.75], [[0.9, 0.5], [0.0, 0.5]])
    >>> lj = log_joint([[1, 0], [0, 1]], p)
    >>> print(np.exp(lj).round(4))
    [[0.1125 0.    ]
     [0.0125 0.375 ]]
    >>> print(lj[0, 1])
    -inf
    """
    X = _check_X(X)
    weights, means = check_params(params, X.shape[1])
    return _log_joint(X, weights, means)


def score_samples(X: ArrayLike, params: Params) -> np.ndarray:
    """``ln p(x_n | theta) = ln sum_k p(x_n, z_n = k | theta)`` of every row, shape (N,).

    ``-inf`` for an image that every component finds impossible (a pixel on where every
    component with positive weight has ``mu_kd = 0``, or off where it has ``mu_kd = 1``).

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[1.0, 0.5], [1.0, 0.2]])
    >>> print(score_samples([[1, 1], [0, 1]], p).round(4))
    [-1.0498    -inf]
    """
    lj = log_joint(X, params)
    return logsumexp(lj, axis=1)


def log_likelihood(X: ArrayLike, params: Params) -> float:
    """Total log-likelihood ``ln p(X | theta) = sum_n ln sum_k p(x_n, z_n = k | theta)``.

    ``-inf`` if some image is impossible under every component (see :func:`score_samples`).

    Examples
    --------
    >>> p = Params([1.0], [[0.5, 0.5, 0.5]])
    >>> print(round(log_likelihood([[0, 1, 1], [1, 1, 1]], p), 6), round(6 * np.log(0.5), 6))
    -4.158883 -4.158883
    """
    return float(score_samples(X, params).sum())


def e_step(X: ArrayLike, params: Params) -> tuple[np.ndarray, float]:
    """E-step: responsibilities ``r_nk = p(z_n = k | x_n, theta)`` and ``ln p(X | theta)``.

    The responsibilities are :func:`emtutor.bounds.posterior` of :func:`log_joint`.

    Returns
    -------
    resp : numpy.ndarray, shape (N, K)
        Rows sum to 1; impossible states get exactly 0.
    log_likelihood : float
        ``ln p(X | theta)``, a by-product of the same log joint.

    Raises
    ------
    ValueError
        As :func:`log_joint`, and if an image is impossible under every component (its
        posterior is undefined); :func:`score_samples` finds such images.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.9, 0.9], [0.1, 0.1]])
    >>> resp, ll = e_step([[1, 1], [1, 0]], p)
    >>> print(resp.round(4), round(ll, 4))
    [[0.9878 0.0122]
     [0.5    0.5   ]] -3.2995
    """
    lj = log_joint(X, params)
    return bounds.posterior(lj), bounds.log_likelihood(lj)


def _counts(X: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected counts ``N_k = sum_n r_nk`` and ``S_kd = sum_n r_nk x_nd``."""
    return resp.sum(axis=0), resp.T @ X


def _m_step(
    X: np.ndarray, resp: np.ndarray, prior: Prior | None, previous: Params | None,
    stacklevel: int = 3,
) -> Params:
    """M-step on validated inputs (see :func:`m_step`)."""
    n, k = resp.shape
    nk, s = _counts(X, resp)
    a, b, alpha = (1.0, 1.0, 1.0) if prior is None else prior
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (k,))
    # (alpha - 1) first: nk + alpha - 1 would round a tiny N_k to a weight of exactly 0
    weights = (nk + (alpha - 1.0)) / (n + (alpha.sum() - k))
    weights = weights / weights.sum()
    denom = nk + (a + b - 2.0)
    empty = denom <= 0.0  # no data and a flat prior: the means are undefined
    means = (s + (a - 1.0)) / np.where(empty, 1.0, denom)[:, None]
    means = np.clip(means, 0.0, 1.0)
    if (means == 0.0).any() or (means == 1.0).any():
        # A rounded 0 (or 1) where the expected count of on (off) pixels is positive
        # would make images with positive responsibility impossible: use the nearest
        # float inside (0, 1) instead, the exact maximiser being inside.
        off = resp.T @ (1.0 - X) + (b - 1.0)
        means = np.where((means == 0.0) & (s + (a - 1.0) > 0), np.nextafter(0.0, 1.0), means)
        means = np.where((means == 1.0) & (off > 0), np.nextafter(1.0, 0.0), means)
    if empty.any():
        ks = np.flatnonzero(empty).tolist()
        if previous is None:
            raise ValueError(
                f"column {ks[0]} of resp sums to 0: component {ks[0]} has no data, so its "
                "pixel probabilities are undefined; pass previous=... to keep the old ones, "
                "use a Beta prior, or drop the component"
            )
        warnings.warn(
            f"component(s) {ks} have zero responsibility: no image informs their pixel "
            "probabilities, so they keep their previous values",
            EmptyComponentWarning,
            stacklevel=stacklevel,
        )
        means[empty] = previous.means[empty]
    return Params(weights, means)


def m_step(
    X: ArrayLike,
    resp: ArrayLike,
    *,
    prior: Prior | None = None,
    previous: Params | None = None,
) -> Params:
    r"""M-step: the parameters maximising ``Q(theta, theta_old)`` (plus ``ln p(theta)``).

    From the expected counts ``N_k = sum_n r_nk`` and ``S_kd = sum_n r_nk x_nd``:

    * maximum likelihood (``prior=None``): ``w_k = N_k / N``, ``mu_kd = S_kd / N_k``;
    * MAP with a :class:`Prior` ``(a, b, alpha)``:
      ``mu_kd = (S_kd + a - 1) / (N_k + a + b - 2)`` and
      ``w_k = (N_k + alpha_k - 1) / (N + sum_j alpha_j - K)``, the maximiser of
      ``Q(theta, theta_old) + ln p(theta)``.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Binary data.
    resp : array_like, shape (N, K)
        Responsibilities; rows are distributions.
    prior : Prior, optional
        Beta prior on the pixel probabilities and Dirichlet prior on the weights.
    previous : Params, optional
        The parameters the responsibilities came from. Only used for an empty component
        (``N_k = 0`` and a flat Beta prior), whose pixel probabilities the data leave
        undefined: it keeps its previous ones, with an :class:`EmptyComponentWarning`.
        Without ``previous`` an empty component is an error.

    Returns
    -------
    Params

    Raises
    ------
    ValueError
        If ``X`` is not binary, ``resp`` is not (N, K) with rows summing to 1, the prior is
        out of range, or a component is empty and no ``previous`` is given.

    Notes
    -----
    Nothing is clipped: ``mu_kd`` is exactly 0 when ``S_kd + a - 1 = 0`` and exactly 1
    when no expected image of the component has pixel ``d`` off (and ``b = 1``). Only
    where the quotient *rounds* to 0 or 1 although the exact value is inside (0, 1) (a
    responsibility of 1e-300, say) is the nearest float inside used, so that an image
    with positive responsibility never becomes impossible under its component.

    Examples
    --------
    >>> X = [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    >>> resp = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    >>> p = m_step(X, resp)
    >>> print(p.weights.round(4), p.means.tolist())
    [0.6667 0.3333] [[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]
    >>> print(m_step(X, resp, prior=Prior(2.0, 2.0)).means.round(4).tolist())
    [[0.75, 0.5, 0.25], [0.3333, 0.3333, 0.6667]]
    """
    X = _check_X(X)
    resp = _check_resp(resp, X.shape[0])
    k = resp.shape[1]
    if prior is not None:
        prior = _check_prior(prior, k)
    if previous is not None:
        previous = check_params(previous, X.shape[1])
        if len(previous.weights) != k:
            raise ValueError(
                f"previous has {len(previous.weights)} components but resp has {k} columns"
            )
    return _m_step(X, resp, prior, previous)


def log_prior(params: Params, prior: Prior) -> float:
    """``ln p(theta) = sum_kd ln Beta(mu_kd | a, b) + ln Dir(w | alpha)``, normalised.

    ``-inf`` where the density is 0 (``mu_kd`` in {0, 1} with ``a > 1`` or ``b > 1``).

    Examples
    --------
    >>> from scipy import stats
    >>> p = Params([0.3, 0.7], [[0.2, 0.9], [0.5, 0.4]])
    >>> mine = log_prior(p, Prior(2.0, 3.0, concentration=2.0))
    >>> ref = (stats.beta(2, 3).logpdf(p.means).sum()
    ...        + stats.dirichlet([2.0, 2.0]).logpdf(p.weights))
    >>> print(round(mine, 10) == round(float(ref), 10))
    True
    """
    weights, means = check_params(params)
    a, b, alpha = _check_prior(prior, len(weights))
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), weights.shape)
    beta_part = np.sum(xlogy(a - 1.0, means) + xlog1py(b - 1.0, -means)) - means.size * betaln(
        a, b
    )
    dir_part = (
        gammaln(alpha.sum()) - gammaln(alpha).sum() + np.sum(xlogy(alpha - 1.0, weights))
    )
    return float(beta_part + dir_part)


def predict_proba(X: ArrayLike, params: Params) -> np.ndarray:
    """Posterior probabilities ``p(z_n = k | x_n, theta)``, shape (N, K): :func:`e_step`'s first.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.9, 0.9], [0.1, 0.1]])
    >>> print(predict_proba([[0, 0]], p).round(4))
    [[0.0122 0.9878]]
    """
    return e_step(X, params)[0]


def predict(X: ArrayLike, params: Params) -> np.ndarray:
    """Most probable component ``argmax_k p(z_n = k | x_n, theta)`` of each row, shape (N,).

    Ties go to the lowest index (up to rounding of the log joints). Unlike
    :func:`predict_proba` it also answers for an image that every component finds
    impossible (all ``-inf``): component 0.

    Examples
    --------
    >>> p = Params([0.5, 0.5], [[0.9, 0.9], [0.1, 0.1]])
    >>> print(predict([[1, 1], [0, 0], [1, 1]], p))
    [0 1 0]
    """
    return np.argmax(log_joint(X, params), axis=1)


def sample(
    params: Params, n: int, random_state: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` images: ``z ~ Categorical(w)``, then ``x_d ~ Bernoulli(mu_zd)`` independently.

    Parameters
    ----------
    params : Params
    n : int
        Number of images, ``>= 1``.
    random_state : None, int or numpy.random.Generator
        Seed or generator.

    Returns
    -------
    X : numpy.ndarray of float, shape (n, D)
        Zeros and ones.
    z : numpy.ndarray of int, shape (n,)
        The component each image came from.

    Examples
    --------
    >>> p = Params([0.25, 0.75], [[0.9, 0.1], [0.2, 0.6]])
    >>> X, z = sample(p, 4000, random_state=0)
    >>> print(X.shape, round(float((z == 1).mean()), 2), X[z == 1].mean(axis=0).round(2))
    (4000, 2) 0.75 [0.21 0.6 ]
    """
    weights, means = check_params(params)
    n = check_int(n, "n", low=1)
    rng = check_random_state(random_state)
    z = rng.choice(len(weights), size=n, p=weights / weights.sum())
    X = (rng.random((n, means.shape[1])) < means[z]).astype(float)
    return X, z


# ------------------------------------------------------------------------------- the driver


def _initial_params(X: np.ndarray, k: int, init, rng: np.random.Generator, prior) -> Params:
    n, d = X.shape
    if init == "uniform":
        return Params(np.full(k, 1.0 / k), rng.uniform(0.25, 0.75, size=(k, d)))
    if init == "random":
        resp = rng.random((n, k))
        resp /= resp.sum(axis=1, keepdims=True)
        return _m_step(X, resp, prior, None)
    raise AssertionError(init)  # pragma: no cover - checked by fit


def fit(
    X: ArrayLike,
    n_components: int,
    *,
    init: str | Params = "uniform",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-10,
    random_state: int | np.random.Generator | None = None,
    beta_prior: tuple[float, float] | None = None,
    weight_concentration: float | ArrayLike | None = None,
) -> BernoulliResult:
    """Fit a mixture of Bernoullis by EM (via :func:`emtutor.em.run`), with the full trace.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Binary data (0 and 1 only), one image per row.
    n_components : int
        ``K``, with ``1 <= K <= N``.
    init : "uniform", "random" or Params
        "uniform" (Bishop's start, §9.3.3): equal weights and every ``mu_kd`` drawn
        uniformly from (0.25, 0.75). "random": responsibilities drawn uniformly and
        normalised, then one M-step (every component starts near the mean image). A
        :class:`Params` is used as the start as it is.
    n_init : int
        Number of random starts; the run with the highest final objective is returned.
        Must be 1 when ``init`` is a :class:`Params`.
    max_iter : int
        Maximum number of EM iterations (``>= 0``).
    tol : float
        Tolerance ``>= 0`` of :func:`emtutor.em.has_converged`; ``0`` runs ``max_iter``.
    random_state : None, int or numpy.random.Generator
        Seed or generator for the start.
    beta_prior : (a, b), optional
        A ``Beta(a, b)`` prior, ``a, b >= 1``, on every pixel probability: MAP-EM with
        ``mu_kd = (S_kd + a - 1) / (N_k + a + b - 2)``. ``(2, 2)`` is Laplace smoothing;
        it keeps every probability strictly inside (0, 1), so no new image is impossible.
    weight_concentration : float or array_like of shape (K,), optional
        A Dirichlet prior on the weights, concentrations ``>= 1``.

    Returns
    -------
    BernoulliResult
        ``params``, ``log_likelihood`` (entry ``i`` = ``ln p(X | theta_i)``; with a prior the
        log posterior, see :class:`BernoulliResult`), ``elbo``, ``n_iter``, ``converged``,
        ``responsibilities`` at the final parameters.

    Raises
    ------
    ValueError
        If ``X`` is not a 2-D binary array, ``n_components`` is not in ``1..N``, an option
        is out of range, or ``init`` is an unknown string or invalid parameters.
    TypeError
        If an integer option is not an integer or ``init`` has the wrong type.

    Warns
    -----
    EmptyComponentWarning
        When a component receives no responsibility at all (it keeps its parameters).

    Examples
    --------
    >>> import numpy as np
    >>> truth = Params([0.4, 0.6], [[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.9, 0.7]])
    >>> X, z = sample(truth, 2000, random_state=1)
    >>> res = fit(X, 2, random_state=0)
    >>> order = np.argsort(-res.params.means[:, 0])
    >>> print(res.converged, res.params.weights[order].round(2))
    True [0.4 0.6]
    >>> print(bool(np.abs(res.params.means[order] - truth.means).max() < 0.05))
    True
    >>> res.check_sandwich()
    """
    X = _check_X(X)
    n, d = X.shape
    k = check_int(n_components, "n_components", low=1)
    if k > n:
        raise ValueError(f"n_components = {k} exceeds the number of data points N = {n}")
    n_init = check_int(n_init, "n_init", low=1)
    max_iter = check_max_iter(max_iter)
    tol = check_tol(tol)
    if isinstance(init, str):
        if init not in ("uniform", "random"):
            raise ValueError(f"init must be 'uniform', 'random' or Params, got {init!r}")
    elif isinstance(init, tuple):
        init = check_params(init, d)
        if len(init.weights) != k:
            raise ValueError(f"init has {len(init.weights)} components but n_components = {k}")
        if n_init != 1:
            raise ValueError(
                "n_init > 1 needs a random init; every start from given Params is the same"
            )
    else:
        raise TypeError(f"init must be 'uniform', 'random' or Params, got {type(init).__name__}")
    prior = None
    if beta_prior is not None or weight_concentration is not None:
        if beta_prior is None:
            beta_prior = (1.0, 1.0)
        if not isinstance(beta_prior, tuple) or len(beta_prior) != 2:
            raise TypeError(
                f"beta_prior must be a pair (a, b), got {type(beta_prior).__name__}"
            )
        prior = _check_prior(
            Prior(*beta_prior, 1.0 if weight_concentration is None else weight_concentration),
            k,
        )
    rng = check_random_state(random_state)

    cache: dict = {}

    def objective(theta: Params) -> tuple[np.ndarray, float]:
        """Log joint at ``theta`` and the log-likelihood (plus log prior), computed once."""
        if cache.get("theta") is not theta:
            lj = _log_joint(X, *theta)
            ll = bounds.log_likelihood(lj)
            lp = 0.0 if prior is None else log_prior(theta, prior)
            cache.update(theta=theta, lj=lj, ll=ll + lp, lp=lp)
        return cache["lj"], cache["ll"]

    def step_e(theta: Params) -> np.ndarray:
        return bounds.posterior(objective(theta)[0])

    def step_m(resp: np.ndarray, theta_old: Params) -> Params:
        # em.run passes the parameters resp came from: an empty component keeps them
        return _m_step(X, resp, prior, theta_old, stacklevel=4)

    def bound(resp: np.ndarray, theta: Params) -> float:
        lj, _ = objective(theta)
        return bounds.elbo(lj, resp) + cache["lp"]

    best = None
    for _ in range(n_init):
        theta0 = init if isinstance(init, tuple) else _initial_params(X, k, init, rng, prior)
        trace = run(
            theta0, step_e, step_m, lambda t: objective(t)[1], elbo=bound, tol=tol,
            max_iter=max_iter,
        )
        if best is None or trace.log_likelihood[-1] > best.log_likelihood[-1]:
            best = trace
    resp = bounds.posterior(_log_joint(X, *best.theta))
    return BernoulliResult(
        theta=best.theta,
        thetas=best.thetas,
        log_likelihood=best.log_likelihood,
        elbo=best.elbo,
        n_iter=best.n_iter,
        converged=best.converged,
        decreases=best.decreases,
        responsibilities=resp,
        prior=prior,
        log_prior=None if prior is None else np.array([log_prior(t, prior) for t in best.thetas]),
    )
