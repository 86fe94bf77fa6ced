"""Env steps/s of the harness sampler on Meta-World ML1 ``reach-v3``, as a ratio to a bare
``gymnasium.vector.SyncVectorEnv`` over the family's own environments set to the same tasks, measured in
the same process (``benchmarks/bench.py``).

Run with ``pytest benchmarks/test_metaworld_throughput.py --benchmark-only -s``. 10 tasks × one trial of
2 episodes × 500 steps; policies: a batched random policy (the sampler's own cost), MAML's ``metaworld``
MLP(128, 128) and TrMRL's ``metaworld`` preset. Rounds alternate with the baseline's; each side's best
round counts; PyTorch runs one thread. Target for the MLP: ≥ 0.8. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.bench import run_pytest_benchmark


@pytest.mark.parametrize("case", ["mw_random", "mw_mlp", "mw_trmrl"])
def test_metaworld_sampling_vs_bare_vector_env(benchmark: Any, case: str) -> None:
    run_pytest_benchmark(benchmark, case)
