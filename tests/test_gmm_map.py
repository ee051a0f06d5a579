"""MAP-EM for Gaussian mixtures: Dirichlet and inverse-Wishart priors in gmm.fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import dirichlet, invgamma, invwishart, multivariate_normal

from emtutor import gmm
from emtutor.em import LikelihoodDecreaseWarning

TYPES = ("full", "diag", "spherical")


def data(seed: int = 0, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-2, 1, (n // 2, 2)), rng.normal(2, 0.5, (n - n // 2, 2))])


def prior_for(covariance_type: str, d: int = 2, scale: float = 0.5, dof: float = 4.0):
    return {
        "full": (scale * np.eye(d), dof),
        "diag": (np.full(d, scale), dof),
        "spherical": (scale, dof),
    }[covariance_type]


def log_posterior(X, p: gmm.Params, alpha, covariance_prior) -> float:
    """ln p(X | theta) + ln p(theta), from scipy alone."""
    cov = np.asarray(p.covariances)
    d = X.shape[1]
    full = cov if cov.ndim == 3 else (
        np.stack([np.diag(c) for c in cov]) if cov.ndim == 2 else cov[:, None, None] * np.eye(d)
    )
    comps = zip(p.weights, p.means, full, strict=True)
    dens = sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in comps)
    total = float(np.log(dens).sum()) + float(dirichlet(alpha).logpdf(p.weights))
    scale, dof = covariance_prior
    if cov.ndim == 3:
        total += sum(float(invwishart(df=dof, scale=scale).logpdf(c)) for c in cov)
    else:
        total += float(invgamma(dof / 2, scale=np.asarray(scale) / 2).logpdf(cov).sum())
    return total


@pytest.mark.parametrize("covariance_type", TYPES)
def test_no_prior_is_todays_fit(covariance_type):
    X = data()
    a = gmm.fit(X, 3, covariance_type=covariance_type, random_state=1, max_iter=40)
    b = gmm.fit(X, 3, covariance_type=covariance_type, random_state=1, max_iter=40,
                weight_concentration=None, covariance_prior=None)
    np.testing.assert_array_equal(a.log_likelihood, b.log_likelihood)
    assert a.log_prior is None


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("reg_covar", [0.0, 1e-6])
def test_map_trace_is_the_log_posterior_and_never_decreases(covariance_type, reg_covar):
    X = data(1)
    cp = prior_for(covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        res = gmm.fit(X, 3, covariance_type=covariance_type, reg_covar=reg_covar,
                      weight_concentration=2.0, covariance_prior=cp, random_state=0,
                      max_iter=60)
    assert res.decreases == () and np.all(np.diff(res.log_likelihood) >= -1e-9)
    res.check_sandwich()
    for theta, objective, lp in zip(res.thetas, res.log_likelihood, res.log_prior, strict=True):
        want = log_posterior(X, theta, np.full(3, 2.0), cp)
        assert objective == pytest.approx(want, rel=1e-9)
        assert objective - lp == pytest.approx(gmm.log_likelihood(X, theta), rel=1e-9)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_map_m_step_maximises_q_plus_log_prior(covariance_type):
    """Perturbing the M-step's output never raises Q(theta) + ln p(theta) for fixed q."""
    X = data(2)
    cp = prior_for(covariance_type)
    alpha = np.array([1.5, 3.0, 2.0])
    res = gmm.fit(X, 3, covariance_type=covariance_type, weight_concentration=alpha,
                  covariance_prior=cp, reg_covar=0.0, random_state=0, max_iter=3, tol=0)
    q, _ = gmm.e_step(X, res.thetas[-2])  # the responsibilities the last M-step used
    best = res.thetas[-1]

    def objective(p: gmm.Params) -> float:  # Q(theta) + ln p(theta), from scipy
        total = float(np.sum(q * gmm.log_joint(X, p))) + float(dirichlet(alpha).logpdf(p.weights))
        scale, dof = cp
        if covariance_type == "full":
            return total + sum(float(invwishart(df=dof, scale=scale).logpdf(c))
                               for c in p.covariances)
        return total + float(invgamma(dof / 2, scale=np.asarray(scale) / 2)
                             .logpdf(p.covariances).sum())

    top = objective(best)
    rng = np.random.default_rng(3)
    for _ in range(30):
        w = best.weights * np.exp(0.05 * rng.normal(size=3))
        cov = np.asarray(best.covariances)
        if cov.ndim == 3:
            a = np.eye(2) + 0.05 * rng.normal(size=(3, 2, 2))
            cov = a @ cov @ a.transpose(0, 2, 1)
        else:
            cov = cov * np.exp(0.05 * rng.normal(size=cov.shape))
        moved = gmm.Params(w / w.sum(), best.means + 0.05 * rng.normal(size=(3, 2)), cov)
        assert objective(moved) <= top + 1e-9 * abs(top)


def test_a_prior_keeps_a_collapsing_component_finite():
    """One component on a single point: ln p -> +inf without a prior, finite with one."""
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(size=(100, 1)), [[8.0]]])
    init = gmm.Params(np.array([0.9, 0.1]), np.array([[0.0], [8.0]]), np.array([1.0, 0.01]))
    with pytest.raises(ValueError, match="not positive|must be positive"):
        gmm.fit(X, 2, init=init, reg_covar=0.0, max_iter=50)
    res = gmm.fit(X, 2, init=init, reg_covar=0.0, max_iter=50,
                  covariance_prior=(np.array(0.1), 2.0))
    assert np.all(np.isfinite(res.log_likelihood)) and res.decreases == ()
    assert res.params.covariances[1] > 0.01


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"weight_concentration": 0.5}, ValueError, "weight_concentration must be >= 1"),
        ({"weight_concentration": [2.0, 2.0]}, ValueError, "must be a number or have shape"),
        ({"weight_concentration": "flat"}, TypeError, "weight_concentration must be a real"),
        ({"covariance_prior": np.eye(2)}, TypeError, "covariance_prior must be a pair"),
        ({"covariance_prior": (np.eye(3), 4.0)}, ValueError, "must have shape \\(2, 2\\)"),
        ({"covariance_prior": (np.eye(2), 0.5)}, ValueError, "dof must be a finite number > 1"),
        ({"covariance_prior": (-np.eye(2), 4.0)}, ValueError, "not positive definite"),
        ({"covariance_prior": (np.eye(2), "4")}, TypeError, "dof must be a real number"),
    ],
)
def test_bad_priors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gmm.fit(data(), 3, **kwargs)
