"""Timing and memory: latency percentiles over alternated runs, tracemalloc peaks."""

from __future__ import annotations

import math
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Operation = Callable[[int], object]
WARMUP = 2
#: Indexes an operation must accept beyond the timed runs: two memory runs and the warm-up.
EXTRA_RUNS = 2 + WARMUP


@dataclass(frozen=True, slots=True)
class Stats:
    """Latency of one operation: nearest-rank percentiles in milliseconds, Python peak memory in KiB."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    peak_kib: float | None = None

    @classmethod
    def of(cls, seconds: list[float], peak_bytes: int | None = None) -> Stats:
        ordered = sorted(seconds)
        return cls(
            n=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            mean_ms=statistics.fmean(ordered) * 1000,
            peak_kib=None if peak_bytes is None else peak_bytes / 1024,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (p99 of 100 samples is the largest but one)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def peak_memory(operation: Operation, index: int) -> int:
    """Peak bytes Python allocated during one run (measured apart: tracemalloc slows code down)."""
    tracemalloc.start()
    try:
        operation(index)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def compare(
    casebook: Operation, baseline: Operation, iterations: int, *, warmup: int = WARMUP,
    before: Operation | None = None,
) -> tuple[Stats, Stats]:
    """Time both operations `iterations` times each, alternating so drift hits both alike.

    Each operation gets the run's index (0..iterations-1 for the timed runs, then
    `iterations` and up for warm-up-free memory runs), so it can use a fresh record or
    instance every time. Warm-up runs (compiled statements, template caches) use indexes
    above those of the memory runs; operations that take seconds skip them (`warmup=0`).
    `before`, untimed, runs ahead of every Casebook run (a save that changes the data, say).
    """
    for k in range(warmup):
        casebook(iterations + 2 + k)
        baseline(iterations + 2 + k)
    casebook_times: list[float] = []
    baseline_times: list[float] = []
    for i in range(iterations):
        for operation, times in ((casebook, casebook_times), (baseline, baseline_times)):
            if before is not None and operation is casebook:
                before(i)
            started = time.perf_counter()
            operation(i)
            times.append(time.perf_counter() - started)
    if before is not None:
        before(iterations)
    return (Stats.of(casebook_times, peak_memory(casebook, iterations)),
            Stats.of(baseline_times, peak_memory(baseline, iterations + 1)))
