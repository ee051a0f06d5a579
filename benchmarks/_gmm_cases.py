"""Rows of ``matrix.py`` for Gaussian mixtures: emtutor.gmm against scikit-learn.

Both fits start from the same parameters (:func:`gmm.make_problem`), run exactly ``n_iter``
iterations (``tol=0``) with the same ``reg_covar`` and must end at the same log-likelihood;
the fairness rules are those of ``benchmarks/gmm.py``. The final value of a scikit-learn
fit, ``score(X) * N``, is one more E-step that its ``fit`` does not need, so it is
computed only when the driver asks for the number (:class:`_Deferred`), never inside a
timed run; emtutor's fit reports ``ln p`` at its final parameters itself.
"""

from __future__ import annotations

from functools import partial

from gmm import fit_emtutor, fit_sklearn, make_problem

try:
    from _timing import Case
except ImportError:  # Case still lives in the driver
    from matrix import Case


class _Deferred:
    """A final log-likelihood computed when ``float()`` is called on it."""

    def __init__(self, model, X):
        self.model, self.X = model, X

    def __float__(self) -> float:
        return float(self.model.score(self.X) * self.X.shape[0])


def _make(n, d, k, covariance_type):
    return make_problem(n, d, k, seed=n + d + k, covariance_type=covariance_type)


def _ours(problem, n_iter):
    X, start = problem
    res = fit_emtutor(X, start, max_iter=n_iter)
    assert res.n_iter == n_iter
    return float(res.log_likelihood[-1])


def _sklearn(problem, n_iter):
    X, start = problem
    model = fit_sklearn(X, start, max_iter=n_iter)
    assert model.n_iter_ == n_iter
    return _Deferred(model, X)


def _explain_softmax(problem, ours_ms, peer_ms, goal):
    """What stands between a large small-D row and its goal, measured in the same run.

    The parts of emtutor's iteration that no rearrangement of numpy calls removes: ``exp``
    of a (K - 1, N) array (the fewest exponentials of an exact softmax; emtutor measures
    each point's log joints from one reference component) and the two products over the
    (F, N) feature matrix (the log joints ``eta^T T`` and the statistics ``R T^T``).
    """
    import time

    import numpy as np

    from emtutor import _gaussian

    X, start = problem
    k, n = len(start.weights), X.shape[0]
    cov_type = _gaussian.covariance_type_of(np.asarray(start.covariances))
    T = _gaussian.features(X, cov_type)
    eta_t = np.ascontiguousarray(
        _gaussian.natural_parameters(*(np.asarray(a) for a in start)).T)
    lj = eta_t @ T
    a = np.random.default_rng(0).normal(size=(k - 1, n))
    out = np.empty_like(a)

    def best(f):
        return min(_timed(f, time) for _ in range(20)) * 1e3

    exp_ms = best(lambda: np.exp(a, out=out))
    prod_ms = best(lambda: eta_t @ T) + best(lambda: lj @ T.T)
    budget = peer_ms / goal
    rest = ours_ms - exp_ms - prod_ms
    return (
        f"the goal needs <= {budget:.2f} ms/iter, emtutor takes {ours_ms:.2f}: the "
        f"{(k - 1) * n:,} exponentials of an exact softmax {exp_ms:.2f} ms "
        f"({exp_ms * 1e6 / ((k - 1) * n):.1f} ns each), the two products over the "
        f"{T.shape[0]} x {n:,} features {prod_ms:.2f} ms, the softmax's other passes over "
        f"the {k} x {n:,} arrays and the M-step {rest:.2f} ms. Those passes are compute, "
        "not memory traffic: run on cache-sized chunks of points they took as long (tried). "
        "It would take fewer operations per point than numpy's one-ufunc-per-pass softmax "
        "allows, i.e. a compiled loop over the points with a vectorised exp (numpy "
        "vectorises the float64 exp with AVX-512 only; a numba loop with its scalar exp "
        "was tried and was no faster)"
    )


def _timed(f, time) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _case(covariance_type, n, d, k, n_iter, repeats, goal=1.0, quick=False, note=""):
    return Case(
        name=f"GMM {covariance_type} N={n:,} D={d} K={k}",
        n_iter=n_iter,
        make=partial(_make, n, d, k, covariance_type),
        ours=partial(_ours, n_iter=n_iter),
        peers={"scikit-learn": partial(_sklearn, n_iter=n_iter)},
        goal=goal,
        repeats=repeats,
        quick=quick,
        note=note,
        memory_goal=True,
        explain=partial(_explain_softmax, goal=goal) if d <= 5 and n >= 100_000 else None,
    )


def cases() -> list[Case]:
    """The GMM rows, fastest first; the whole set runs in about four minutes on 2 cores."""
    return [
        _case("full", 1_000, 2, 3, 20, 30, quick=True, note="homework size"),
        _case("full", 200_000, 2, 3, 20, 3, goal=10.0, quick=True),
        _case("diag", 200_000, 2, 3, 20, 3, goal=10.0),
        _case("spherical", 200_000, 2, 3, 20, 3, goal=10.0, quick=True),
        _case("full", 1_000_000, 2, 3, 4, 3),
        _case("full", 50_000, 5, 50, 5, 3),
        _case("diag", 100_000, 50, 10, 5, 3, note="features computed block by block"),
        _case("full", 100_000, 50, 10, 2, 2, note="centred data, no feature matrix"),
    ]
