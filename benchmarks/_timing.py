"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

REPEATS = 5


def best_times(
    *fits: Callable[[], Any], repeats: int = REPEATS
) -> list[tuple[float, Any]]:
    """Time each callable ``repeats`` times; return its shortest wall time and last result.

    The callables take turns (round 1: every callable once, round 2: ...), so that a slow
    spell of a shared machine falls on all of them alike rather than on whichever happened
    to run then; the minimum over the rounds is the least disturbed measurement.
    """
    times: list[list[float]] = [[] for _ in fits]
    results: list[Any] = [None] * len(fits)
    for _ in range(repeats):
        for i, fit in enumerate(fits):
            t0 = time.perf_counter()
            results[i] = fit()
            times[i].append(time.perf_counter() - t0)
    return [(min(t), r) for t, r in zip(times, results, strict=True)]
