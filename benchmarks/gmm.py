"""Time full-covariance EM iterations of emtutor.gmm against scikit-learn's GaussianMixture.

Both libraries start from the same parameters (weights, means and covariances of a
"random from data" start), run exactly ``N_ITER`` EM iterations with the same ``reg_covar``,
and must end at the same log-likelihood (relative 1e-8) before any time is printed. Each fit
is timed whole (input checks, set-up, iterations, final E-step) with ``time.perf_counter``,
best of ``REPEATS`` runs taken in turns with scikit-learn's. scikit-learn's fit also runs
one M-step on a one-hot initialisation whose result the given parameters then replace;
that is its cost of taking initial parameters, so it is counted.

Run from the repository root: ``.venv/bin/python benchmarks/gmm.py``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from _timing import REPEATS, best_times
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from emtutor import gmm

N_ITER = 20
REG_COVAR = 1e-6
SIZES = [(200_000, 2, 3), (20_000, 10, 8)]


def make_problem(n: int, d: int, k: int, seed: int, covariance_type: str = "full"):
    """Data from a random K-component mixture and a start at K random data points.

    The start's covariances are the data's covariance in the shape of ``covariance_type``:
    the matrix ("full"), its diagonal ("diag") or the mean of that diagonal ("spherical").
    """
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(k, d, d)) / np.sqrt(d)
    truth = gmm.Params(
        rng.dirichlet(np.full(k, 5.0)),
        rng.normal(scale=1.5, size=(k, d)),
        factors @ factors.transpose(0, 2, 1) + 0.1 * np.eye(d),
    )
    X, _ = gmm.sample(truth, n, random_state=rng)
    cov = np.cov(X.T).reshape(d, d)
    shaped = {"full": cov, "diag": np.diag(cov), "spherical": np.diag(cov).mean()}
    start = gmm.Params(
        np.full(k, 1.0 / k),
        X[rng.choice(n, size=k, replace=False)],
        np.repeat(np.asarray(shaped[covariance_type])[None], k, axis=0),
    )
    return X, start


def fit_emtutor(X, start, max_iter: int = N_ITER):
    # tol=0: exactly max_iter iterations run (checked below). The covariance type is that
    # of the start's covariances.
    return gmm.fit(X, len(start.weights), init=start, max_iter=max_iter, tol=0, reg_covar=REG_COVAR)


def fit_sklearn(X, start, max_iter: int = N_ITER):
    covariance_type = gmm.covariance_type_of(start)
    if covariance_type == "full":
        precisions = np.linalg.inv(start.covariances)
    else:
        precisions = 1.0 / start.covariances
    model = GaussianMixture(
        n_components=len(start.weights),
        covariance_type=covariance_type,
        tol=0.0,
        max_iter=max_iter,
        reg_covar=REG_COVAR,
        init_params="random_from_data",
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=precisions,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    return model


def main() -> None:
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(not set)')}, "
        f"{os.cpu_count()} CPUs, {N_ITER} iterations, best of {REPEATS}"
    )
    for n, d, k in SIZES:
        X, start = make_problem(n, d, k, seed=n + d + k)
        (t_ours, res), (t_sk, model) = best_times(
            lambda X=X, start=start: fit_emtutor(X, start),
            lambda X=X, start=start: fit_sklearn(X, start),
        )
        ll_sk = model.score(X) * n
        ll_ours = res.log_likelihood[-1]
        assert res.n_iter == N_ITER and model.n_iter_ == N_ITER, (res.n_iter, model.n_iter_)
        assert abs(ll_ours - ll_sk) <= 1e-8 * abs(ll_sk), (ll_ours, ll_sk)
        print(
            f"N={n:>7,} D={d:>2} K={k}:"
            f"  emtutor {t_ours:7.3f} s ({1e3 * t_ours / N_ITER:6.1f} ms/iter)"
            f"  scikit-learn {t_sk:7.3f} s ({1e3 * t_sk / N_ITER:6.1f} ms/iter)"
            f"   ratio {t_sk / t_ours:5.1f}x   final ln p = {ll_ours:.6f} (sklearn {ll_sk:.6f})"
        )


if __name__ == "__main__":
    main()
