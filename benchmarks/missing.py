"""Time EM iterations of emtutor.missing with 30 % of the entries missing against none missing.

The same N = 100,000 rows in D = 10 dimensions are fitted twice for ``N_ITER`` iterations:
with 30 % of the entries deleted completely at random (MCAR), and complete. The ratio of
the times per iteration is the cost of the missing entries (the goal is at most 3).
Each fit is timed whole, best of ``REPEATS`` runs taken in turns.

Run from the repository root: ``.venv/bin/python benchmarks/missing.py``.
"""

from __future__ import annotations

import numpy as np
from _timing import REPEATS, best_times

from emtutor import missing

N, D, FRACTION, N_ITER = 100_000, 10, 0.3, 10


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D)) / np.sqrt(D)
    X = rng.normal(size=(N, D)) @ a.T + rng.normal(size=D)
    holes = X.copy()
    mask = rng.random((N, D)) < FRACTION
    mask[mask.all(axis=1), 0] = False
    holes[mask] = np.nan
    return X, holes


def main() -> None:
    X, holes = make_data()
    patterns = len(np.unique(np.isnan(holes), axis=0))
    (t_missing, res_missing), (t_complete, res_complete) = best_times(
        lambda: missing.fit(holes, max_iter=N_ITER, tol=0),
        lambda: missing.fit(X, max_iter=N_ITER, tol=0),
    )
    assert res_missing.n_iter == res_complete.n_iter == N_ITER
    per_missing, per_complete = t_missing / N_ITER, t_complete / N_ITER
    print(f"N={N:,} D={D}, {FRACTION:.0%} MCAR ({patterns} patterns), {N_ITER} iterations, "
          f"best of {REPEATS}")
    print(f"  with missing entries {1e3 * per_missing:8.1f} ms/iteration")
    print(f"  complete data        {1e3 * per_complete:8.1f} ms/iteration")
    print(f"  ratio {per_missing / per_complete:.1f}x (goal <= 3x)")


if __name__ == "__main__":
    main()
