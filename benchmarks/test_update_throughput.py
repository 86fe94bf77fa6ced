"""Learner update throughput: one PPO update of RL² and of TrMRL on a ``halfcheetah_vel`` batch
(20 tasks × 2 episodes × 200 steps), in samples/s and as a ratio to the bare vectorised env's steps/s
measured in the same process (``benchmarks/bench.py``).

Run with ``pytest benchmarks/test_update_throughput.py --benchmark-only -s``. TrMRL: its
``halfcheetah_vel`` preset (minibatch 256 samples, 10 epochs, the paper's); RL²: its default config (no
``halfcheetah_vel`` preset: 4 epochs of 4 minibatches of whole trials). One round each (an update of the
TrMRL preset takes tens of seconds on one core); PyTorch runs one thread. Nothing is asserted about
wall-clock time.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench import run_pytest_benchmark


@pytest.mark.parametrize("case", ["update_rl2", "update_trmrl"])
def test_ppo_update_samples_per_s(benchmark: Any, case: str) -> None:
    run_pytest_benchmark(benchmark, case, rounds=1, warmup=0)
