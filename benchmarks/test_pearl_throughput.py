"""PEARL training throughput on ``halfcheetah_vel``, against the bare simulator measured in the same process.

Run with ``pytest benchmarks/test_pearl_throughput.py --benchmark-only -s``.

The ``pearl_iteration`` case of ``benchmarks/bench.py`` (also ``python -m harness bench --cases
pearl_iteration``): one ``train_iteration`` of the ``halfcheetah_vel`` preset (oyster's networks and
batches: 3 × 300 units, meta-batch 16 × 256 transitions, context 100) on 20 tasks after iteration 0,
from the same state every round: 5 × 1000 env steps collected in 200-step episodes, then gradient steps,
of which ``Sizes.pearl_gradient_steps`` are timed and the preset's 2000 extrapolated. The figure is env
steps/s of that whole iteration; the ratio divides it by a bare ``SyncVectorEnv`` of ``HalfCheetah-v5``
stepping pre-drawn random actions, measured in alternating rounds. The note gives the collection's
seconds and the milliseconds per gradient step. PyTorch runs one thread, as the harness's workers.
Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

from typing import Any

from benchmarks.bench import run_pytest_benchmark


def test_pearl_iteration_vs_bare_vector_env(benchmark: Any) -> None:
    run_pytest_benchmark(benchmark, "pearl_iteration", rounds=2, warmup=0)
