"""Env steps/s of the harness sampler driving each learner's exploration policy on ``halfcheetah_vel``, as a
ratio to a bare ``gymnasium.vector.SyncVectorEnv`` measured in the same process (``benchmarks/bench.py``).

Run with ``pytest benchmarks/test_sampling_throughput.py --benchmark-only -s`` (``-k mlp`` for one case).
20 tasks × one trial of 2 episodes × 200 steps; the bare baseline steps 20 ``HalfCheetah-v5`` with
pre-drawn random actions; rounds of the two alternate and each side's best round counts. PyTorch runs
one thread (``benchmarks.bench.THREADS``), as each harness worker. Targets (the issue): ``mlp`` ≥ 0.8,
``gru`` ≥ 0.6, ``trmrl`` (the paper's window attention) ≥ 0.4. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench import run_pytest_benchmark


@pytest.mark.parametrize("case", ["random", "mlp", "gru", "trmrl", "trmrl_sliding", "pearl"])
def test_sampling_vs_bare_vector_env(benchmark: Any, case: str) -> None:
    run_pytest_benchmark(benchmark, case)
