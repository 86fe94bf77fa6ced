"""TrMRL trial-spanning memory: the KV-cached step against the recomputed one (``benchmarks/bench.py``).

Run with ``pytest benchmarks/test_trmrl_throughput.py --benchmark-only -s``. One batched policy step over
20 tasks with trial-spanning memory and a 400-step window, timed over the second episode (the window
holds 200–400 tokens), cached (``SlidingCache``) vs recomputed (``benchmarks.baselines.UncachedSliding``,
at evenly spaced steps). Target: cached ≤ 0.2 × uncached. TrMRL's sampling throughput (the paper's window
attention and the cached sliding window) is in ``test_sampling_throughput.py``. Nothing is asserted about
wall-clock time.
"""

from __future__ import annotations

from typing import Any

from benchmarks.bench import run_pytest_benchmark


def test_cached_step_cost_with_a_400_step_window(benchmark: Any) -> None:
    run_pytest_benchmark(benchmark, "trmrl_cache")
