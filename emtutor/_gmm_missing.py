"""Gaussian mixtures on data with missing entries (NaN): the problem behind ``missing="em"``.

For a row ``x`` with observed entries ``o`` and missing entries ``m`` the latent variables
are the component ``z`` and the missing values ``x_m``. Under component ``k``:

* the row's likelihood is the marginal density of its observed entries,
  ``p(x_o | z = k) = N(x_o | mu_ko, Sigma_k,oo)``, so the responsibilities are
  ``r_nk ∝ w_k N(x_no | mu_ko, Sigma_k,oo)``;
* given ``z = k`` the missing entries are normal with the conditional mean
  ``mu_km + Sigma_k,mo Sigma_k,oo^{-1} (x_o - mu_ko)`` and covariance
  ``C_k = Sigma_k,mm - Sigma_k,mo Sigma_k,oo^{-1} Sigma_k,om``
  (:func:`emtutor.missing._batch_terms` computes both, per missingness pattern);
* the M-step is the complete-data one on the expected statistics: ``N_k = sum_n r_nk``,
  ``xbar_k = sum_n r_nk E_k[x_n] / N_k`` and the scatter
  ``sum_n r_nk [(E_k[x_n] - xbar_k)(E_k[x_n] - xbar_k)^T + C_nk] / N_k`` (its diagonal for
  "diag", its mean diagonal entry for "spherical"), so weights, ``reg_covar`` and the MAP
  priors go through the same :func:`emtutor._gaussian.params_from_moments` as without NaN.

Rows are grouped by pattern and patterns batched by their number of observed entries, as
in :mod:`emtutor.missing`: one batched Cholesky factorisation per batch and component.
The bound needs no extra code: with ``q_i`` the exact posterior at ``theta_i``,
``L(q_i, theta) = ln p(X_obs | theta_i) + Q(theta | theta_i) - Q(theta_i | theta_i)``, and
``Q`` follows from the centred moments above (the conditional covariances are in them).
"""

from __future__ import annotations

import numpy as np

from emtutor import _gaussian as _g
from emtutor import missing as _missing
from emtutor.gmm import Params, _Problem, check_params, covariance_type_of

MISSING_OPTIONS = ("em",)


def check_missing(missing) -> bool:
    """``True`` for ``missing="em"``, ``False`` for ``None``; anything else refused."""
    if missing is None:
        return False
    if isinstance(missing, str) and missing in MISSING_OPTIONS:
        return True
    raise ValueError(f"missing must be None or 'em', got {missing!r}")


def check_X(X, *, need_covariance: bool) -> np.ndarray:
    """Data with NaN for missing entries; inf, empty rows and empty columns refused."""
    return _missing._check_X(X, need_covariance=need_covariance)


def _full(covariances: np.ndarray, d: int) -> np.ndarray:
    """(K, D, D) covariance matrices from covariances of any type."""
    if covariances.ndim == 3:
        return covariances
    k = len(covariances)
    out = np.zeros((k, d, d))
    diag = covariances if covariances.ndim == 2 else np.repeat(covariances[:, None], d, axis=1)
    out[:, np.arange(d), np.arange(d)] = diag
    return out


class MissingProblem(_Problem):
    """:class:`emtutor.gmm._Problem` for data with NaN entries.

    ``self.X`` holds the centred, scaled data with every missing entry at its column's
    observed mean: the initialisation ("kmeans++", "random") works on it. Every EM step
    works on the data with its NaN (``self.patterns``), exactly.
    """

    def __init__(self, X: np.ndarray, covariance_type: str, reg_covar: float = 0.0,
                 prior: _g.Prior | None = None):
        observed = ~np.isnan(X)
        counts = observed.sum(axis=0)
        column_means = np.where(observed, X, 0.0).sum(axis=0) / np.maximum(counts, 1)
        filled = np.where(observed, X, column_means)  # a column never observed: at 0
        super().__init__(filled, covariance_type, reg_covar, prior)
        scaled = (X - self.centre) / self.scale  # NaN stays NaN
        self.patterns = _missing._Patterns(scaled)
        self.n_observed = observed.sum(axis=1)
        self.shift = -float(self.n_observed.sum()) * self.log_scale
        self._cond = None  # (resp, conditional terms) of the last E-step

    def _terms(self, theta: Params, conditional: bool = True):
        """(K, N) log joints in scaled units and each component's conditional terms
        (``None`` in place of them without ``conditional``: log joints only)."""
        weights, means, covs = theta.weights, theta.means, theta.covariances
        n, d = self.X.shape
        full = _full(covs, d)
        lj = np.empty((len(weights), n))
        cond = []
        for k in range(len(weights)):
            per_batch = []
            for batch in self.patterns.batches:
                log_dens, cond_mean, c, _ = _missing._batch_terms(
                    batch, means[k], full[k], conditional
                )
                lj[k, batch[0]] = log_dens
                per_batch.append((cond_mean, c))
            cond.append(per_batch)
        with np.errstate(divide="ignore"):
            lj += np.log(weights)[:, None]
        return lj, cond

    def log_joint(self, theta: Params) -> np.ndarray:
        """(K, N) log joint ``ln w_k N(x_no | mu_ko, Sigma_k,oo)`` in the original units."""
        lj, _ = self._terms(theta, conditional=False)
        return lj - self.n_observed * self.log_scale

    def log_likelihood(self, theta: Params) -> float:
        lj, cond = self._terms(theta)
        resp, ll = _g.posterior(lj)
        ll += self.shift + self.log_prior(theta)
        self._post = (theta, resp, ll)
        self._cond = (resp, cond)
        return ll

    def moments(self, resp: np.ndarray) -> _g.Moments:
        """Moments of the expected statistics; on the filled-in data for another ``resp``.

        Only the responsibilities of the last E-step come with conditional moments of the
        missing entries; any other ``resp`` (the initialisation's) is read on ``self.X``.
        """
        if self._cond is None or self._cond[0] is not resp:
            return super().moments(resp)
        cond = self._cond[1]
        k, d = len(resp), self.X.shape[1]
        totals = resp.sum(axis=1)
        empty = ~(totals > _g.EMPTY)
        means = np.zeros((k, d))
        scatter = np.zeros((k, d, d))
        for j in np.flatnonzero(~empty):
            expected = self.patterns.X.copy()
            extra = np.zeros((d, d))
            for (rows, which, _, m_idx, _, _), (cond_mean, c) in zip(
                self.patterns.batches, cond[j], strict=True
            ):
                if cond_mean is None:
                    continue
                expected[rows[:, None], m_idx[which]] = cond_mean
                mass = np.bincount(which, weights=resp[j, rows], minlength=len(m_idx))
                np.add.at(extra, (m_idx[:, :, None], m_idx[:, None, :]), mass[:, None, None] * c)
            means[j] = resp[j] @ expected / totals[j]
            diff = expected - means[j]
            scatter[j] = ((diff * resp[j][:, None]).T @ diff + extra) / totals[j]
        if self.covariance_type == "diag":
            scatter = np.diagonal(scatter, axis1=1, axis2=2).copy()
        elif self.covariance_type == "spherical":
            scatter = np.trace(scatter, axis1=1, axis2=2) / d
        return _g.Moments(totals, means, scatter, empty)


def prepare(X, params: Params) -> tuple[MissingProblem, Params]:
    """Validate data with NaN and parameters together; the scaled problem and parameters."""
    X = check_X(X, need_covariance=False)
    params = check_params(params, X.shape[1])
    problem = MissingProblem(X, covariance_type_of(params))
    return problem, problem.to_scaled(params)
