"""Numerics behind :mod:`emtutor.gmm`: sufficient statistics, natural parameters, log densities.

Nothing here validates its input; :mod:`emtutor.gmm` does that and then calls these functions,
usually on centred and scaled data. Arrays over data points are stored with the data index
last, ``(F, N)`` for features and ``(K, N)`` for log joints and responsibilities, so that the
reductions over the few components run over contiguous rows.

The exponential-family view
---------------------------
``ln N(x | mu, Sigma)`` is linear in the features ``T(x) = (1, x, x x^T)``:

    ln w + ln N(x | mu, Sigma) = eta . T(x)
    eta = (ln w - mu^T Lam mu / 2 - ln|2 pi Sigma| / 2,  Lam mu,  -Lam / 2),  Lam = Sigma^{-1}.

With the feature matrix computed once, the E-step is one matrix product ``eta^T T`` followed
by a softmax over the components, and the M-step needs only ``R T^T``, the expected
sufficient statistics. Both are single BLAS products over the whole data set.

Only the upper triangle of ``x x^T`` is kept (``x_i x_j``, ``i <= j``, in
:func:`numpy.triu_indices` order); an off-diagonal feature therefore carries the coefficient
``-Lam_ij`` (it stands for both ``x_i x_j`` and ``x_j x_i``), a diagonal one ``-Lam_ii / 2``.
The "diag" type keeps ``x_j^2`` and the "spherical" type ``|x|^2`` only.

Rounding guards
---------------
The product ``eta . T(x)`` adds terms as large as ``|Lam| (|x| + |mu|)^2`` to get a result
of order one, so it loses digits for a very narrow component or one far from the data. Its
rounding error is estimated as ``eps sqrt(F) sum_f |eta_f| max_n |T_f(x_n)|`` (on test
problems the actual error is below ``eps sum_f |eta_f| max_n |T_f(x_n)|``); a component whose
estimate exceeds :data:`ROUNDING_BUDGET` is evaluated from the Cholesky factor instead, as
``ln w - (|L^{-1} (x - mu)|^2 + ln|2 pi Sigma|) / 2``.
Likewise, the one-pass scatter ``E[x x^T] - mu mu^T`` of the M-step cancels when a component
is narrow compared with its distance from the origin; such a component's scatter is then
recomputed in two passes, ``sum_n r_n (x_n - mu)(x_n - mu)^T / N_k``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from scipy.linalg import blas as _blas

__all__ = [
    "COVARIANCE_TYPES",
    "EMPTY",
    "FEATURE_LIMIT",
    "STORED_FEATURES",
    "Moments",
    "Prior",
    "ROUNDING_BUDGET",
    "cholesky",
    "covariance_type_of",
    "emptied",
    "expected_complete_loglik",
    "factors",
    "feature_blocks",
    "feature_maxima",
    "features",
    "log_joint",
    "moments",
    "moments_of_statistics",
    "n_features",
    "natural_parameters",
    "log_prior",
    "params_from_moments",
    "posterior",
]

COVARIANCE_TYPES = ("full", "diag", "spherical")

_EPS = float(np.finfo(float).eps)
_LOG_2PI = math.log(2.0 * math.pi)

#: A component whose total responsibility is at most this is "empty" (scikit-learn adds the
#: same amount, 10 machine epsilons, to every total to avoid dividing by zero).
EMPTY = 10.0 * _EPS

#: Largest size ``N F`` of a feature matrix that :mod:`emtutor.gmm` builds (2^25 entries,
#: 256 MiB); larger problems (many dimensions with full covariances) use the direct path.
FEATURE_LIMIT = 2**25

#: Most features per point that :mod:`emtutor.gmm` stores as a matrix. With more, "diag"
#: and "spherical" compute them block by block in every step (``blocked=True``), and
#: "full" covariances (``D >= 7``) work on the centred data; the matrix would then take more
#: memory than the data and the responsibilities together.
STORED_FEATURES = 32

#: Covariance types whose features are computed block by block when they are not stored.
BLOCKED_TYPES = ("diag", "spherical")

#: Largest estimated rounding error (absolute, in nats) accepted in one log density computed
#: from the natural parameters, and largest relative error accepted in a one-pass scatter.
ROUNDING_BUDGET = 1e-10


def covariance_type_of(covariances: np.ndarray) -> str:
    """Covariance type from the number of axes: (K, D, D) full, (K, D) diag, (K,) spherical."""
    return {3: "full", 2: "diag", 1: "spherical"}[covariances.ndim]


def n_features(d: int, covariance_type: str) -> int:
    """Number of sufficient statistics ``F`` of one data point of dimension ``d``."""
    if covariance_type == "full":
        return 1 + d + d * (d + 1) // 2
    if covariance_type == "diag":
        return 1 + 2 * d
    return 2 + d


@functools.lru_cache(maxsize=32)
def _triu(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``numpy.triu_indices(d)`` and the factors 1/2 (diagonal) or 1 (off it), read-only."""
    iu, ju = np.triu_indices(d)
    half = np.where(iu == ju, 0.5, 1.0)
    for a in (iu, ju, half):
        a.flags.writeable = False
    return iu, ju, half


def features(X: np.ndarray, covariance_type: str, out: np.ndarray | None = None) -> np.ndarray:
    """The (F, N) matrix of sufficient statistics ``(1, x, quadratic terms)`` of the rows of X.

    Written into ``out`` (shape (F, N)) when given.
    """
    n, d = X.shape
    Xt = X.T
    T = np.empty((n_features(d, covariance_type), n)) if out is None else out
    T[0] = 1.0
    T[1 : 1 + d] = Xt
    if covariance_type == "full":
        iu, ju, _ = _triu(d)
        np.multiply(Xt[iu], Xt[ju], out=T[1 + d :])
    elif covariance_type == "diag":
        np.square(Xt, out=T[1 + d :])
    else:
        T[1 + d] = np.einsum("dn,dn->n", Xt, Xt)
    return T


def feature_blocks(X: np.ndarray, covariance_type: str):
    """Yield ``(cols, T_b)``: :func:`features` of the rows ``cols`` of X, block after block.

    Every block is written into the same buffer of about :data:`_FEATURE_BLOCK_ENTRIES`
    entries, so the feature matrix is never stored whole; a block is valid until the next.
    """
    n, d = X.shape
    f = n_features(d, covariance_type)
    blocks, size = _column_blocks(f, n, _FEATURE_BLOCK_ENTRIES)
    buf = np.empty(f * size)
    for cols in blocks:
        Tb = buf[: f * (cols.stop - cols.start)].reshape(f, -1)
        yield cols, features(X[cols], covariance_type, out=Tb)


def feature_maxima(X: np.ndarray, covariance_type: str) -> np.ndarray:
    """``max_n |T_f(x_n)|`` for every feature, from the blocks of :func:`feature_blocks`."""
    t_max = np.zeros(n_features(X.shape[1], covariance_type))
    for _, Tb in feature_blocks(X, covariance_type):
        np.maximum(t_max, np.abs(Tb).max(axis=1), out=t_max)
    return t_max


def cholesky(covariances: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors (full) or standard deviations (diag, spherical).

    Raises ``numpy.linalg.LinAlgError`` (full) or returns NaN (others) for a covariance that
    is not positive definite; callers check positivity first.
    """
    if covariances.ndim == 3:
        return np.linalg.cholesky(covariances)
    return np.sqrt(covariances)


#: The factors of the last few (K, D, D) covariance arrays: id -> (copy, L, L^{-1}).
_FACTORS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def factors(covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors ``L`` and their inverses ``L^{-1}`` of (K, D, D) covariances.

    An EM iteration needs them for the same parameters several times (positive
    definiteness after the M-step, the E-step, the bound), so the last four results are
    kept, looked up by the array's identity and checked against a copy of its values.
    Raises ``numpy.linalg.LinAlgError`` for a covariance that is not positive definite.
    """
    key = id(covariances)
    hit = _FACTORS.get(key)
    if hit is not None and hit[0].shape == covariances.shape and np.array_equal(
        hit[0], covariances
    ):
        return hit[1], hit[2]
    chol = np.linalg.cholesky(covariances)
    inv = _inverse_factors(chol)
    if len(_FACTORS) >= 4:
        _FACTORS.pop(next(iter(_FACTORS)))
    _FACTORS[key] = (covariances.copy(), chol, inv)
    return chol, inv


def _inverse_factors(chol: np.ndarray) -> np.ndarray:
    """``L^{-1}`` for each lower-triangular factor ``L`` of shape (K, D, D), in one batched call.

    (A loop of ``scipy.linalg.solve_triangular`` calls would do the same; on a busy machine
    its many small LAPACK calls cost far more than the arithmetic.)
    """
    return np.tril(np.linalg.inv(chol))


def _log_weights(weights: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # a weight of exactly 0 is a component that cannot occur
        return np.log(weights)


def natural_parameters(weights, means, covariances) -> tuple[np.ndarray, np.ndarray]:
    """Return ``eta`` of shape (F, K) with ``T(X)^T eta = log joint``."""
    k, d = means.shape
    log_w = _log_weights(weights)
    if covariances.ndim == 3:
        chol, inv = factors(covariances)  # L^{-1}, with Lam = L^{-T} L^{-1}
        prec = np.einsum("kji,kjl->kil", inv, inv)
        white_mean = np.einsum("kij,kj->ki", inv, means)  # L^{-1} mu
        linear = np.einsum("kji,kj->ki", inv, white_mean)  # Lam mu
        iu, ju, half = _triu(d)
        quadratic = -prec[:, iu, ju] * half
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        mahalanobis_mean = np.einsum("ki,ki->k", white_mean, white_mean)
    elif covariances.ndim == 2:
        prec = 1.0 / covariances
        linear = means * prec
        quadratic = -0.5 * prec
        log_det = np.log(covariances).sum(axis=1)
        mahalanobis_mean = np.einsum("ki,ki->k", means, linear)
    else:
        prec = 1.0 / covariances
        linear = means * prec[:, None]
        quadratic = -0.5 * prec[:, None]
        log_det = d * np.log(covariances)
        mahalanobis_mean = np.einsum("ki,ki->k", means, linear)
    const = log_w - 0.5 * (mahalanobis_mean + log_det + d * _LOG_2PI)
    eta = np.concatenate([const[:, None], linear, quadratic], axis=1).T
    return np.ascontiguousarray(eta)


#: Entries of one block of centred data in the direct evaluations (2 MiB): the data are
#: read block by block, each block serves every component while it is in the cache.
_BLOCK_ENTRIES = 2**18


#: Entries of one block of :func:`feature_blocks` (2 MiB): blocks of a few thousand points,
#: so that the products with them are few (each may start BLAS threads).
_FEATURE_BLOCK_ENTRIES = 2**18


def _product_blocks(kf: int, n: int) -> list[slice]:
    """Column blocks for the products ``eta^T T`` and ``resp T^T`` with ``K F = kf``.

    A product of ``K F B <= 2^17`` multiplications (at least 4096 columns) is one that
    OpenBLAS runs on one thread: for the few components and features of small problems,
    where the product is bound by memory, threads gain nothing and on a busy machine cost
    many times the product itself (measured: 3x slower at N = 200,000, D = 2, K = 3).
    """
    size = max(4096, 2**17 // max(kf, 1))
    return [slice(a, min(n, a + size)) for a in range(0, n, size)]


def _column_blocks(d: int, n: int, entries: int | None = None):
    """Slices of at most ``entries / d`` columns covering ``range(n)``.

    ``entries`` defaults to :data:`_BLOCK_ENTRIES`.
    """
    entries = _BLOCK_ENTRIES if entries is None else entries
    size = max(1, min(n, entries // max(d, 1)))
    return [slice(a, min(n, a + size)) for a in range(0, n, size)], size


def _direct_log_joint(Xt: np.ndarray, weights, means, covariances, ks, lj: np.ndarray) -> None:
    """``lj[k] = ln w_k + ln N(x_n | mu_k, Sigma_k)`` for ``k`` in ``ks``, from centred data.

    The stable path: ``-(|L^{-1} (x - mu)|^2 + ln|2 pi Sigma|) / 2`` with the Cholesky factor
    ``L`` (a triangular solve, BLAS ``trsm``, in place on a block of ``x - mu``), or the
    scaled differences for "diag" and "spherical". ``Xt`` is (D, N).
    """
    d, n = Xt.shape
    ks = [int(k) for k in ks]
    if covariances.ndim == 3:
        chol = factors(covariances)[0][ks]
        fortran = [np.asfortranarray(c) for c in chol]
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    elif covariances.ndim == 2:
        inv_sd = 1.0 / np.sqrt(covariances[ks])[:, :, None]
        log_det = np.log(covariances[ks]).sum(axis=1)
    else:
        inv_sd = 1.0 / np.sqrt(covariances[ks])
        log_det = d * np.log(covariances[ks])
    blocks, size = _column_blocks(d, n)
    work = np.empty(d * size)
    for cols in blocks:
        xb = Xt[:, cols]
        w = work[: xb.size].reshape(xb.shape)
        for j, k in enumerate(ks):
            np.subtract(xb, means[k][:, None], out=w)
            if covariances.ndim == 3:  # w^T := w^T L^{-T}, i.e. w := L^{-1} w
                white = _blas.dtrsm(
                    1.0, fortran[j], w.T, side=1, lower=1, trans_a=1, overwrite_b=1
                ).T
            else:
                white = np.multiply(w, inv_sd[j], out=w)
            np.einsum("dn,dn->n", white, white, out=lj[k, cols])
    log_w = _log_weights(weights)
    for j, k in enumerate(ks):
        row = lj[k]
        row += log_det[j] + d * _LOG_2PI
        row *= -0.5
        row += log_w[k]


def log_joint(
    T: np.ndarray | None, X: np.ndarray, t_max, weights, means, covariances, *,
    blocked: bool = False,
):
    """The (K, N) array ``ln w_k + ln N(x_n | mu_k, Sigma_k)``.

    ``T`` is :func:`features` of ``X`` and ``t_max`` its row-wise ``max_n |T_f(x_n)|``.
    Components whose estimated rounding error in ``eta^T T`` exceeds :data:`ROUNDING_BUDGET`
    are recomputed directly from their Cholesky factor; without ``T`` (``None``) all are,
    unless ``blocked``: then the features are computed block by block
    (:func:`feature_blocks`) and ``t_max`` must be given.
    """
    if T is None and not blocked:
        lj = np.full((len(weights), X.shape[0]), -np.inf)
        unsafe = np.flatnonzero(weights > 0)
    else:
        eta = natural_parameters(weights, means, covariances)
        if T is not None:
            lj = np.empty((len(weights), T.shape[1]))
            eta_t = np.ascontiguousarray(eta.T)
            for cols in _product_blocks(eta.size, T.shape[1]):
                np.matmul(eta_t, T[:, cols], out=lj[:, cols])
        else:
            lj = np.empty((len(weights), X.shape[0]))
            eta_t = np.ascontiguousarray(eta.T)
            for cols, Tb in feature_blocks(X, covariance_type_of(covariances)):
                np.matmul(eta_t, Tb, out=lj[:, cols])
        with np.errstate(invalid="ignore"):  # inf * 0 for a component of weight 0
            error = _EPS * math.sqrt(len(t_max)) * (np.abs(eta).T @ t_max)
        unsafe = np.flatnonzero(~(error <= ROUNDING_BUDGET) & (weights > 0))
    if unsafe.size:
        _direct_log_joint(X.T, weights, means, covariances, unsafe, lj)
    return lj


#: Largest ``max_k lj_kn - lj_cn`` for which :func:`posterior` measures a point's log joints
#: from the reference component ``c``; a point beyond it is measured from its own largest.
_REFERENCE_GAP = 100.0


def _reference(lj: np.ndarray) -> int:
    """A component to measure log joints from: the largest on a sample of up to 1024 points.

    Any component with finite log joints gives exact results (points far below it are
    handled separately); this choice only makes that fallback rare, so it needs no more
    than a sample.
    """
    step = max(1, lj.shape[1] // 1024)
    with np.errstate(invalid="ignore"):  # -inf - -inf for a weight-0 component
        return int(np.argmax(lj[:, ::step].sum(axis=1)))


def posterior(lj: np.ndarray) -> tuple[np.ndarray, float]:
    """Responsibilities (K, N) and the total log-likelihood from a (K, N) log joint.

    The softmax over the components is computed in place, in ``lj``, which is overwritten.
    With ``m_n = max_k lj_kn``, the exact answer is

        r_kn = exp(lj_kn - m_n) / s_n,   s_n = sum_k exp(lj_kn - m_n),
        ln p(X) = sum_n (m_n + ln s_n),

    as in :func:`scipy.special.softmax` and :func:`scipy.special.logsumexp`. To save one
    exponential per point (``exp`` is the main cost of an EM iteration on large data), the
    log joints of a point are measured from a reference component ``c`` instead of from
    their maximum whenever that loses nothing: if ``m_n - lj_cn <= 100`` (``_REFERENCE_GAP``),
    then with ``e_cn = 1`` and ``e_kn = exp(lj_kn - lj_cn) <= e^100``,

        r_kn = e_kn / s_n,   ln p(x_n) = lj_cn + ln s_n,   s_n = sum_k e_kn,

    which is the same softmax, with ``K - 1`` exponentials and no risk of overflow. The
    points where the reference lies further below the maximum (well separated components)
    are computed from their own maximum, from a copy of their original log joints, so that
    no large shift is ever subtracted and added back. The result does not depend on the
    order of the points. The sum of logarithms is taken by :func:`_sum_of_logs`.
    """
    k, n = lj.shape
    c = _reference(lj)
    gap = lj.max(axis=0)
    with np.errstate(invalid="ignore"):
        np.subtract(gap, lj[c], out=gap)  # m_n - lj_cn
        far_idx = np.flatnonzero(~(gap <= _REFERENCE_GAP))  # also NaN: lj_cn = -inf
    if far_idx.size:  # exact softmax of these points from their own maximum
        far_lj = lj[:, far_idx]
        far_m = far_lj.max(axis=0)
        far_lj -= far_m
        np.exp(far_lj, out=far_lj)
        far_s = far_lj.sum(axis=0)
        far_lj /= far_s
        far_ll = float(far_m.sum() + np.log(far_s).sum())
        lj[:, far_idx] = 0.0  # harmless values for the reference pass below
    shift = lj[c].copy()
    others = [rows for rows in (slice(0, c), slice(c + 1, k)) if rows.start < rows.stop]
    for rows in others:
        lj[rows] -= shift
        np.exp(lj[rows], out=lj[rows])
    lj[c] = 1.0
    s = lj.sum(axis=0)
    inv = np.divide(1.0, s, out=gap)  # r_cn = 1 / s_n, the others e_kn / s_n
    for rows in others:
        lj[rows] *= inv
    lj[c] = inv
    if far_idx.size:
        lj[:, far_idx] = far_lj
        shift[far_idx] = 0.0
        s[far_idx] = 1.0
        total = float(shift.sum()) + far_ll
    else:
        total = float(shift.sum())
    return lj, total + _sum_of_logs(s, 1.0, 1.0 + (k - 1) * math.exp(_REFERENCE_GAP))


def _sum_of_logs(s: np.ndarray, lower: float, upper: float) -> float:
    """``sum(log(s))`` for ``lower <= s <= upper``, with one logarithm per block of values.

    The values are multiplied in blocks of ``c``, with ``c`` small enough that no product
    leaves ``[1e-300, 1e300]``, and the logarithms of the block products are summed. Each
    product carries a relative error of at most ``c eps``, an absolute error below ``2e-13``
    in its logarithm, while ``N / c`` logarithms replace ``N`` (a logarithm costs about ten
    multiplications).
    """
    n = len(s)
    widest = max(abs(math.log(lower)), abs(math.log(upper)), 1e-300)
    c = max(1, min(n, int(690.0 / widest)))
    q = n // c
    blocks = s[: q * c].reshape(c, q).prod(axis=0)  # column j: s[j], s[q + j], ... (c values)
    return float(np.log(blocks).sum() + np.log(s[q * c :]).sum())


class Moments(NamedTuple):
    """Centred expected sufficient statistics of each component for given responsibilities.

    ``totals`` (K,) are ``N_k = sum_n r_nk``, ``means`` (K, D) the weighted means and
    ``scatter`` the weighted covariance about them, shaped like the covariances of the type.
    ``empty`` flags components with ``N_k <= EMPTY``; their means and scatter are zero.
    """

    totals: np.ndarray
    means: np.ndarray
    scatter: np.ndarray
    empty: np.ndarray


def _one_pass(T, d: int, resp, covariance_type: str, reg: float):
    """Moments from the expected sufficient statistics ``resp T^T``, and where they cancel.

    Returns ``totals, means, scatter`` and a mask of the components whose one-pass scatter
    ``E[x x^T] - mu mu^T`` may have lost more than :data:`ROUNDING_BUDGET` of its smallest
    eigenvalue (plus ``reg``, the floor that will be added to it).
    """
    stats = np.zeros((len(resp), T.shape[0]))
    for cols in _product_blocks(stats.size, T.shape[1]):
        stats += resp[:, cols] @ T[:, cols].T
    return moments_of_statistics(stats, d, covariance_type, reg)


def moments_of_statistics(stats: np.ndarray, d: int, covariance_type: str, reg: float):
    """``totals, means, scatter, cancels`` from expected sufficient statistics ``resp T^T``.

    ``stats`` (K, F) holds ``N_k``, ``sum_n r_nk x_n`` and ``sum_n r_nk T_quad(x_n)``; it is
    additive over points, so sums of it over chunks or blocks of data give the same
    moments (``emtutor._dask``, ``emtutor.incremental``). ``cancels`` is as in
    :func:`_one_pass`.
    """
    totals = stats[:, 0].copy()
    safe = np.where(totals > EMPTY, totals, 1.0)[:, None]
    means = stats[:, 1 : 1 + d] / safe
    second = stats[:, 1 + d :] / safe  # E_k[quadratic features]
    if covariance_type == "full":
        iu, ju, _ = _triu(d)
        square = np.zeros((len(totals), d, d))
        square[:, iu, ju] = second
        square[:, ju, iu] = second
        scatter = square - means[:, :, None] * means[:, None, :]
        size = np.trace(square, axis1=1, axis2=2)
        smallest = np.linalg.eigvalsh(scatter + reg * np.eye(d))[:, 0]
    elif covariance_type == "diag":
        scatter = second - means**2
        size = second.sum(axis=1)
        smallest = (scatter + reg).min(axis=1)
    else:
        scatter = (second[:, 0] - np.einsum("kd,kd->k", means, means)) / d
        size = second[:, 0]
        smallest = scatter + reg
    cancels = ~(_EPS * stats.shape[1] * size <= ROUNDING_BUDGET * smallest)
    return totals, means, scatter, cancels


def emptied(totals: np.ndarray, means: np.ndarray, scatter: np.ndarray) -> np.ndarray:
    """The mask of empty components (``N_k <= EMPTY``), whose means and scatter are set to
    zero in place (their statistics are rounding noise)."""
    empty = ~(totals > EMPTY)
    scatter[empty] = 0.0
    means[empty] = 0.0
    return empty


def moments(
    T: np.ndarray | None, X: np.ndarray, resp: np.ndarray, covariance_type: str, reg, *,
    blocked: bool = False,
):
    """M-step statistics: :class:`Moments` of the (K, N) responsibilities ``resp``.

    With the feature matrix ``T`` they come from the expected sufficient statistics
    ``resp T^T`` (one product); a scatter that this one-pass formula would get wrong by more
    than :data:`ROUNDING_BUDGET` (relative to ``scatter + reg``) is recomputed in two passes,
    ``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k``. Without ``T`` every scatter is computed
    in two passes, unless ``blocked``: then ``resp T^T`` is summed over the blocks of
    :func:`feature_blocks`.
    """
    k, d = len(resp), X.shape[1]
    if T is None and blocked:
        stats = 0.0
        for cols, Tb in feature_blocks(X, covariance_type):
            stats = stats + np.inner(resp[:, cols], Tb)
        totals, means, scatter, two_pass = moments_of_statistics(stats, d, covariance_type, reg)
    elif T is None:
        totals = resp.sum(axis=1)
        means = resp @ X / np.where(totals > EMPTY, totals, 1.0)[:, None]
        scatter = np.zeros({"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[covariance_type])
        two_pass = np.ones(k, dtype=bool)
    else:
        totals, means, scatter, two_pass = _one_pass(T, d, resp, covariance_type, reg)
    empty = emptied(totals, means, scatter)
    ks = np.flatnonzero(two_pass & ~empty)
    if ks.size:
        scatter[ks] = _two_pass_scatter(X.T, resp, totals, means, ks, covariance_type)
    return Moments(totals, means, scatter, empty)


def _two_pass_scatter(Xt: np.ndarray, resp, totals, means, ks, covariance_type: str):
    """``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k`` for ``k`` in ``ks`` (diagonal, mean).

    The data ``Xt`` (D, N) are read block by block; each block of differences ``x - mu_k``
    is weighted and multiplied by its transpose (one small BLAS product per component).
    """
    d, n = Xt.shape
    ks = [int(k) for k in ks]
    acc = np.zeros({"full": (len(ks), d, d), "diag": (len(ks), d), "spherical": (len(ks),)}[
        covariance_type
    ])
    blocks, size = _column_blocks(d, n)
    work = np.empty((2, d * size))
    for cols in blocks:
        xb = Xt[:, cols]
        w = work[0, : xb.size].reshape(xb.shape)
        wr = work[1, : xb.size].reshape(xb.shape)
        for j, k in enumerate(ks):
            np.subtract(xb, means[k][:, None], out=w)
            np.multiply(w, resp[k, cols], out=wr)
            if covariance_type == "full":
                acc[j] += wr @ w.T
            else:
                np.multiply(wr, w, out=wr)
                row_sums = wr.sum(axis=1)
                acc[j] += row_sums if covariance_type == "diag" else row_sums.sum()
    if covariance_type == "full":
        acc = 0.5 * (acc + acc.transpose(0, 2, 1))
        return acc / totals[ks][:, None, None]
    if covariance_type == "diag":
        return acc / totals[ks][:, None]
    return acc / (d * totals[ks])


class Prior(NamedTuple):
    """Conjugate priors of MAP-EM, in the units of the data they are used with.

    ``concentration`` (K,): a Dirichlet prior on the weights, every entry ``>= 1`` (or
    ``None``). ``scale`` and ``dof``: an inverse-Wishart prior ``IW(scale, dof)`` on each
    full covariance, with ``scale`` (D, D); for "diag" each variance has the
    one-dimensional inverse-Wishart (inverse-gamma) prior ``IW(scale_d, dof)`` with
    ``scale`` (D,), for "spherical" the one variance ``IW(scale, dof)`` with a scalar
    ``scale`` (or ``None`` for no covariance prior).
    """

    concentration: np.ndarray | None
    scale: np.ndarray | float | None
    dof: float | None


def params_from_moments(
    m: Moments, reg: float, fallback_means, fallback_covariances, prior: Prior | None = None
):
    """M-step: weights, means and covariances (scatter + ``reg`` on the diagonal).

    Weights are ``(N_k + EMPTY) / sum_j (N_j + EMPTY)`` as in scikit-learn, so none is exactly
    zero. Empty components take their mean and covariance from the fallbacks.

    With a :class:`Prior` the M-step maximises ``Q(theta) + ln p(theta)`` instead (MAP-EM):
    ``w_k = (N_k + a_k - 1) / (N + sum_j a_j - K)`` for the Dirichlet concentration ``a``,
    and for an inverse-Wishart ``IW(Psi, nu)`` on ``Sigma_k`` (flat prior on the means)

        Sigma_k = (Psi + N_k S_k) / (N_k + nu + D + 1)      ("full"),
        s_kd = (psi_d + N_k S_kd) / (N_k + nu + 2)         ("diag"),
        s_k = (psi + N_k D S_k) / (N_k D + nu + 2)         ("spherical"),

    with ``S_k`` the scatter about the weighted mean (``reg`` is still added after).
    """
    concentration = None if prior is None else prior.concentration
    if concentration is None:
        weights = (m.totals + EMPTY) / (m.totals + EMPTY).sum()
    else:
        weights = (m.totals + concentration - 1.0 + EMPTY)
        weights = weights / weights.sum()
    means = m.means.copy()
    scatter = m.scatter
    if prior is not None and prior.scale is not None:
        n_k = m.totals
        if scatter.ndim == 3:
            d = scatter.shape[-1]
            scatter = (prior.scale + n_k[:, None, None] * scatter) / (
                n_k + prior.dof + d + 1.0
            )[:, None, None]
        elif scatter.ndim == 2:
            scatter = (prior.scale + n_k[:, None] * scatter) / (n_k + prior.dof + 2.0)[:, None]
        else:
            d = m.means.shape[1]
            scatter = (prior.scale + n_k * d * scatter) / (n_k * d + prior.dof + 2.0)
    if scatter.ndim == 3:
        covariances = scatter + reg * np.eye(scatter.shape[-1])
    else:
        covariances = scatter + reg
    if m.empty.any():
        means[m.empty] = fallback_means[m.empty]
        covariances[m.empty] = fallback_covariances[m.empty]
    return weights, means, covariances


def log_prior(weights, covariances, prior: Prior | None) -> float:
    """``ln p(theta)`` of the priors of a :class:`Prior` (0 without one), in its units.

    The Dirichlet density of the weights plus, per component, the inverse-Wishart density
    of its covariance (inverse-gamma for each variance of "diag" and "spherical"); the
    means have a flat prior, which adds a constant.
    """
    from scipy.stats import dirichlet, invgamma, invwishart

    if prior is None:
        return 0.0
    total = 0.0
    if prior.concentration is not None:
        with np.errstate(divide="ignore"):
            total += float(dirichlet(prior.concentration).logpdf(weights / weights.sum()))
    if prior.scale is not None:
        if covariances.ndim == 3:
            total += float(sum(invwishart(df=prior.dof, scale=prior.scale).logpdf(c)
                               for c in covariances))
        else:
            shape, scale = prior.dof / 2.0, np.asarray(prior.scale) / 2.0
            total += float(invgamma(shape, scale=scale).logpdf(covariances).sum())
    return total


def expected_complete_loglik(weights, means, covariances, m: Moments) -> float:
    """``Q(theta) = sum_n sum_k r_nk ln(w_k N(x_n | mu_k, Sigma_k))`` from centred moments.

    Uses ``sum_n r_nk (x_n - mu)(x_n - mu)^T = N_k [S_k + (xbar_k - mu)(xbar_k - mu)^T]``
    with the scatter ``S_k`` about the weighted mean ``xbar_k``, so no pass over the data is
    needed. Empty components contribute nothing.
    """
    d = means.shape[1]
    offset = m.means - means
    if covariances.ndim == 3:
        chol, inv = factors(covariances)
        trace = np.einsum("kij,kjl,kil->k", inv, m.scatter, inv)
        white = np.einsum("kij,kj->ki", inv, offset)
        maha = np.einsum("ki,ki->k", white, white)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    elif covariances.ndim == 2:
        trace = (m.scatter / covariances).sum(axis=1)
        maha = (offset**2 / covariances).sum(axis=1)
        log_det = np.log(covariances).sum(axis=1)
    else:
        trace = d * m.scatter / covariances
        maha = np.einsum("kd,kd->k", offset, offset) / covariances
        log_det = d * np.log(covariances)
    per_point = _log_weights(weights) - 0.5 * (d * _LOG_2PI + log_det + trace + maha)
    keep = ~m.empty
    return float(np.dot(m.totals[keep], per_point[keep]))
