"""EM at scale: a Gaussian mixture fitted out of core on dask, and incremental EM.

1. Out of core. N = 2e7 points in D = 2 from K = 3 components, generated chunk by chunk
   by dask (each chunk from its own seed; the 320 MB array never exists as a whole), are
   fitted by EM on dask's threaded scheduler (the problem ``gmm.fit`` builds, iterated
   directly so that each iteration is timed alone: one pass for the E-step, its statistics
   and ``ln p``, then the M-step; best of M). Each measurement runs in its own Python
   process, which reports its peak resident memory (``ru_maxrss``). Every pass generates
   the chunks again, so the time of a pass that only generates them is shown too.
   Beside it: the in-memory iteration at N = 2e6, and the time per point of both.
2. Incremental EM on N = 1e6: the passes over the data it needs to reach the batch fit's
   final ``ln p`` within 1e-6 relative, for B = 10 and 100 blocks, and what batch EM needs.

Run from the repository root: ``.venv/bin/python benchmarks/scale.py`` (a few minutes).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from emtutor import gmm

N_DASK, N_MEMORY, N_INCREMENTAL = 20_000_000, 2_000_000, 1_000_000
CHUNK = 500_000
M = 3  # iterations timed (best of)
TRUTH = gmm.Params(
    np.array([0.3, 0.45, 0.25]),
    np.array([[-3.0, 0.0], [0.0, 2.5], [3.0, -1.0]]),
    np.array([np.eye(2), [[1.0, 0.5], [0.5, 1.0]], 0.5 * np.eye(2)]),
)
INIT = gmm.Params(
    np.full(3, 1 / 3),
    np.array([[-2.0, 0.5], [0.5, 1.5], [2.0, 0.0]]),
    np.array([np.eye(2)] * 3),
)


_FACTORS = np.linalg.cholesky(TRUTH.covariances)


def _block(block_id=None):
    """Chunk ``i``: CHUNK points from the mixture, from the seed ``(12345, i)``.

    The points of each component come in a run (their order does not matter to EM):
    one multinomial draw of the counts, then one batch of normals per component.
    """
    rng = np.random.default_rng([12345, block_id[0]])
    counts = rng.multinomial(CHUNK, TRUTH.weights)
    return np.concatenate([
        TRUTH.means[k] + rng.standard_normal((c, 2)) @ _FACTORS[k].T
        for k, c in enumerate(counts)
    ])


def dask_data(n: int):
    import dask.array as da

    return da.map_blocks(_block, chunks=((CHUNK,) * (n // CHUNK), (2,)), dtype=float,
                         meta=np.empty((0, 2)))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _iterations(problem, theta, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` EM iterations (E-step pass, ln p, M-step)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        problem.log_likelihood(theta)
        theta = problem.m_step(problem.e_step(theta))
        times.append(time.perf_counter() - t0)
    return times


def measure_dask() -> dict:
    import dask

    from emtutor._dask import DaskProblem

    X = dask_data(N_DASK)
    with dask.config.set(scheduler="threads"):
        generate = []
        for _ in range(2):
            t0 = time.perf_counter()
            X.sum().compute()  # a pass that only generates the data
            generate.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        problem = DaskProblem(X, "full", 1e-6)  # what gmm.fit sets up: two passes
        setup = time.perf_counter() - t0
        times = _iterations(problem, problem.to_scaled(INIT), M)
        # the public call on the same array, for the record
        res = gmm.fit(X, 3, init=INIT, max_iter=1, tol=0)
    return {"n": N_DASK, "chunks": X.numblocks[0], "s_per_iter": min(times),
            "s_per_iter_all": times, "s_generate": min(generate), "s_setup": setup,
            "peak_mb": _peak_mb(), "ll": float(res.log_likelihood[-1])}


def measure_memory() -> dict:
    from emtutor.gmm import _Problem

    X, _ = gmm.sample(TRUTH, N_MEMORY, random_state=0)
    problem = _Problem(X, "full", 1e-6)
    times = _iterations(problem, problem.to_scaled(INIT), 2 * M)
    return {"n": N_MEMORY, "s_per_iter": min(times), "s_per_iter_all": times,
            "peak_mb": _peak_mb()}


def passes_to_reach(trace: np.ndarray, target: float, rtol: float = 1e-6) -> int | None:
    """First entry ``i >= 1`` with ``|trace[i] - target| <= rtol |target|`` (None: never)."""
    hit = np.flatnonzero(np.abs(trace - target) <= rtol * abs(target))
    hit = hit[hit >= 1]
    return int(hit[0]) if hit.size else None


def measure_incremental() -> dict:
    X, _ = gmm.sample(TRUTH, N_INCREMENTAL, random_state=1)
    batch = gmm.fit(X, 3, init=INIT, max_iter=1000, tol=1e-12)
    target = float(batch.log_likelihood[-1])
    out = {"n": N_INCREMENTAL, "batch_iterations_to_converge": batch.n_iter,
           "batch": passes_to_reach(batch.log_likelihood, target)}
    for b in (10, 100):
        t0 = time.perf_counter()
        inc = gmm.fit(X, 3, init=INIT, method="incremental", n_blocks=b, max_iter=60, tol=0)
        out[f"B={b}"] = passes_to_reach(inc.log_likelihood, target)
        out[f"s_per_pass_B={b}"] = (time.perf_counter() - t0) / inc.n_iter
    return out


def _child(what: str) -> dict:
    run = subprocess.run([sys.executable, __file__, what], capture_output=True, text=True,
                         check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    memory = _child("memory")
    out_of_core = _child("dask")
    memory_again = _child("memory")  # in turns: the machine is shared
    per_memory = min(memory["s_per_iter"], memory_again["s_per_iter"])
    mb = N_DASK * 2 * 8 / 1e6
    print(f"Out of core: N={N_DASK:,}, D=2, K=3 ({mb:.0f} MB as float64), "
          f"{out_of_core['chunks']} dask chunks of {CHUNK:,} rows, threaded scheduler")
    print(f"  one EM iteration        {1e3 * out_of_core['s_per_iter']:9.0f} ms "
          f"(a pass that only generates the chunks: {1e3 * out_of_core['s_generate']:.0f} ms;"
          f" set-up, two passes: {1e3 * out_of_core['s_setup']:.0f} ms)")
    print(f"  peak resident memory    {out_of_core['peak_mb']:9.0f} MB (goal < 1000 MB)")
    print(f"In memory: N={N_MEMORY:,}")
    print(f"  one EM iteration        {1e3 * per_memory:9.0f} ms")
    print(f"  peak resident memory    {max(memory['peak_mb'], memory_again['peak_mb']):9.0f} MB")
    per_point_dask = out_of_core["s_per_iter"] / N_DASK
    per_point_memory = per_memory / N_MEMORY
    print(f"Per point: out of core {1e9 * per_point_dask:.1f} ns, in memory "
          f"{1e9 * per_point_memory:.1f} ns, ratio {per_point_dask / per_point_memory:.2f}x")
    work = (out_of_core["s_per_iter"] - out_of_core["s_generate"]) / N_DASK
    print(f"  without generating the chunks: out of core {1e9 * work:.1f} ns, "
          f"ratio {work / per_point_memory:.2f}x")
    inc = _child("incremental")
    print(f"Incremental EM: N={inc['n']:,}; passes to reach the batch fit's final ln p "
          "within 1e-6 relative")
    print(f"  batch EM   {inc['batch']} iterations "
          f"(converged to tol 1e-12 after {inc['batch_iterations_to_converge']})")
    for b in (10, 100):
        print(f"  B = {b:<5d} {inc[f'B={b}']} passes "
              f"({1e3 * inc[f's_per_pass_B={b}']:.0f} ms per pass, ln p recorded)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        task = {"dask": measure_dask, "memory": measure_memory,
                "incremental": measure_incremental}[sys.argv[1]]
        print(json.dumps(task()))
    else:
        main()
