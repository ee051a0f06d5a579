"""The benchmark matrix: emtutor against the fastest peer on every size people use.

Each row (a :class:`Case`) builds one problem, then times emtutor and every peer path on
it in turns (round 1: each implementation once, round 2: ...), so that a slow spell of a
shared machine falls on all of them alike. For every implementation the script prints the
best and the median milliseconds per iteration, the peak memory of one untimed run
(``tracemalloc``: the allocations numpy and Python make, which is what the buffers of an
E-step are), the ratio of the **fastest** peer's best time to emtutor's best time, and a
verdict against the row's goal. Before anything is printed, every implementation must have
reached the same final value (a log-likelihood, or a Viterbi path's log-probability) to
``RTOL`` relative.

The rows live next to this driver: ``_gmm_cases.py`` (emtutor.gmm against scikit-learn) and
``_hmm_cases.py`` (emtutor.hmm against hmmlearn's ``log`` and ``scaling`` paths, and its
``decode`` for Viterbi). Each module exposes ``cases() -> list[Case]``.

Run from the repository root::

    .venv/bin/python benchmarks/matrix.py            # every row (under 10 minutes, 2 cores)
    .venv/bin/python benchmarks/matrix.py --quick    # the rows marked quick (about 1 minute)
    .venv/bin/python benchmarks/matrix.py --only HMM # rows whose name contains "HMM"

Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RTOL = 1e-8


@dataclass
class Case:
    """One row of the matrix.

    ``make()`` builds the problem (data and a common start) once; ``ours(problem)`` and
    each ``peers[name](problem)`` run the same number of iterations ``n_iter`` from that
    start and return the final value to compare (float). ``goal`` is the ratio emtutor
    must reach against the fastest peer; ``repeats`` the number of timed rounds.
    """

    name: str
    n_iter: int
    make: Callable[[], Any]
    ours: Callable[[Any], float]
    peers: dict[str, Callable[[Any], float]]
    goal: float = 1.0
    repeats: int = 5
    quick: bool = False
    note: str = ""
    memory_goal: bool = False  # emtutor's peak memory must not exceed the peer's
    extra: dict[str, Any] = field(default_factory=dict)
    # explain(problem, ours_ms, peer_ms) -> str: for a row whose goal is not met, a
    # measurement (made in the same run) of what stands in the way and what it would take
    explain: Callable[[Any, float, float], str] | None = None


def _peak_mib(run: Callable[[Any], float], problem: Any) -> float:
    tracemalloc.start()
    try:
        run(problem)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def measure(case: Case, repeats: int | None = None) -> dict[str, Any]:
    """Time every implementation of ``case`` in turns; return the row's figures."""
    problem = case.make()
    runs = {"emtutor": case.ours, **case.peers}
    values = {name: float(run(problem)) for name, run in runs.items()}  # warm-up, checked
    ref = values["emtutor"]
    for name, value in values.items():
        if not abs(value - ref) <= RTOL * max(abs(ref), 1.0):
            raise AssertionError(
                f"{case.name}: {name} ends at {value!r}, emtutor at {ref!r} "
                f"(relative {abs(value - ref) / max(abs(ref), 1.0):.2e} > {RTOL})"
            )
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats or case.repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(problem)
            times[name].append(time.perf_counter() - t0)
    memory = {name: _peak_mib(run, problem) for name, run in runs.items()}
    per_iter = 1e3 / case.n_iter
    best = {name: min(t) * per_iter for name, t in times.items()}
    median = {name: statistics.median(t) * per_iter for name, t in times.items()}
    fastest = min(case.peers, key=best.__getitem__)
    ratio = best[fastest] / best["emtutor"]
    ok = ratio >= case.goal
    if case.memory_goal:
        ok = ok and memory["emtutor"] <= memory[fastest]
    why = ""
    if not ok and case.explain is not None:
        why = case.explain(problem, best["emtutor"], best[fastest])
    return {
        "best": best,
        "median": median,
        "memory": memory,
        "fastest": fastest,
        "ratio": ratio,
        "ok": ok,
        "value": ref,
        "why": why,
    }


def _print_row(case: Case, row: dict[str, Any]) -> None:
    print(f"\n{case.name}  ({case.n_iter} iterations, goal >= {case.goal:g}x the fastest peer)")
    for name in row["best"]:
        print(
            f"  {name:<22} best {row['best'][name]:10.3f} ms/iter"
            f"  median {row['median'][name]:10.3f}  peak {row['memory'][name]:8.1f} MiB"
        )
    verdict = "goal met" if row["ok"] else "GOAL NOT MET"
    mem = row["memory"]["emtutor"] / max(row["memory"][row["fastest"]], 1e-9)
    print(
        f"  -> {row['ratio']:.2f}x {row['fastest']} (memory {mem:.2f}x of it), "
        f"same final value {row['value']:.10g}: {verdict}"
        + (f"  [{case.note}]" if case.note else "")
    )
    if row["why"]:
        print(f"  why: {row['why']}")
    sys.stdout.flush()


def _simd() -> str:
    """The widest vector instructions of the processor (numpy's SIMD exp needs AVX-512)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return "vector extensions unknown"
    return next((name for name in ("avx512f", "avx2", "sse4_2") if name in flags), "no AVX")


def all_cases() -> list[Case]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import importlib

    rows: list[Case] = []
    for module in ("_gmm_cases", "_hmm_cases"):
        try:
            rows += importlib.import_module(module).cases()
        except ModuleNotFoundError as exc:  # a case module not written yet
            if exc.name != module:
                raise
            print(f"({module}.py not found: its rows are skipped)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the rows marked quick")
    parser.add_argument("--only", default="", help="only rows whose name contains this")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per row")
    args = parser.parse_args(argv)
    cases = [
        c
        for c in all_cases()
        if (c.quick or not args.quick) and args.only.lower() in c.name.lower()
    ]
    print(
        f"{os.cpu_count()} CPUs ({_simd()}), "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')},"
        f" {len(cases)} rows, same final value to {RTOL:g} checked on every row"
    )
    start = time.perf_counter()
    summary = []
    for case in cases:
        row = measure(case, args.repeats)
        _print_row(case, row)
        summary.append((case.name, row["ratio"], row["fastest"], row["ok"]))
    print(f"\nSummary ({time.perf_counter() - start:.0f} s):")
    for name, ratio, fastest, ok in summary:
        print(f"  {'ok  ' if ok else 'MISS'} {ratio:6.2f}x {fastest:<18} {name}")
    return 0 if all(ok for *_, ok in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
