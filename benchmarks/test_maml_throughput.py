"""MAML-TRPO training throughput on ``halfcheetah_vel``, with the simulator's share measured in the same process.

Run with ``pytest benchmarks/test_maml_throughput.py --benchmark-only -s``.

One round is one ``train_iteration`` of the ``halfcheetah_vel`` preset on 20 tasks with 200-step episodes,
``trials_per_task`` (rollouts per task) reduced from 20 to 2 so that a round takes a few seconds: a fixed
batch of 2 (pre- and post-update) × 20 tasks × 2 one-episode trials × 200 steps = 16k env steps, then
the TRPO step (10 conjugate-gradient Hessian-vector products through the inner step, and the line
search) over the 40 adaptations.
The baseline is a bare ``gymnasium.vector.SyncVectorEnv`` of 20 ``HalfCheetah-v5`` stepping the same
16k env steps with pre-drawn random actions. Rounds of the two alternate (pedantic's untimed setup), so
both see the same load; each side's best round is its figure.

Reported (``extra_info`` and printed): seconds per 10k env steps of a whole iteration, the same for its
sampling alone, the update's seconds, and the simulator's share (bare-simulator seconds for the
iteration's env steps / the iteration's seconds). PyTorch runs one thread, as in the harness's
workers. Nothing is asserted about wall-clock time.

``test_maml_trpo_step_vs_bare_vector_env`` times the TRPO step alone at the preset's full batch (20 tasks ×
20 pooled trials × 200 steps, pre + post: 160k samples), the ``maml_trpo`` case of ``benchmarks/bench.py``:
samples/s over the bare env's steps/s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from algorithms.base import MetaEnvInfo
from algorithms.maml import MAML, PRESETS, Config
from benchmarks.bench import THREADS, TimedSampler, halfcheetah_bare, run_pytest_benchmark, torch_threads
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import family_class, make_split

TASKS, TRIALS_PER_TASK, STEPS, ROUNDS = 20, 2, 200, 3
ENV_STEPS = 2 * TASKS * TRIALS_PER_TASK * STEPS  # pre- and post-update one-episode trials of one iteration


@pytest.fixture
def one_torch_thread() -> Any:
    """One intra-op thread, as the harness's workers run (``harness.run.runner.execute``): with two threads on
    a loaded 2-core machine, the many small per-step policy calls slow sampling several-fold."""
    with torch_threads(THREADS):
        yield


@pytest.mark.usefixtures("one_torch_thread")
def test_maml_trpo_iteration_vs_bare_vector_env(benchmark: Any) -> None:
    cls = family_class("halfcheetah_vel")
    family = cls(cls.Params())
    tasks = make_split(family, "bench", {"train": TASKS}, lambda split: seeding.generator(0, "bench", split))["train"]
    sampler = TimedSampler(Sampler(family, seeding.generator(0, "bench", "sampler")))
    env = MetaEnvInfo(sampler.sampler.observation_space, sampler.sampler.action_space, 2, family.max_episode_steps)
    learner = MAML(env, Config(**{**PRESETS["halfcheetah_vel"], "trials_per_task": TRIALS_PER_TASK}), seed=0)
    bare = halfcheetah_bare(TASKS, ENV_STEPS // TASKS)
    rounds: list[dict[str, float]] = []

    def iteration() -> None:
        steps_before, sampler.seconds = sampler.sampler.env_steps, 0.0
        start = time.perf_counter()
        learner.train_iteration(sampler, tasks)
        seconds = time.perf_counter() - start
        assert sampler.sampler.env_steps - steps_before == ENV_STEPS
        rounds.append({"seconds": seconds, "sampling": sampler.seconds, "update": seconds - sampler.seconds})

    benchmark.pedantic(iteration, setup=bare.run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    bare.close()
    best = min(rounds, key=lambda r: r["seconds"])
    bare_seconds = min(bare.seconds)
    per_10k = 1e4 / ENV_STEPS
    benchmark.extra_info.update(
        env_steps_per_iteration=ENV_STEPS,
        s_per_10k_env_steps=round(best["seconds"] * per_10k, 3),
        sampling_s_per_10k_env_steps=round(best["sampling"] * per_10k, 3),
        update_s=round(best["update"], 3),
        bare_vector_s_per_10k_env_steps=round(bare_seconds * per_10k, 3),
        simulator_share=round(bare_seconds / best["seconds"], 3),
    )
    print(f"\nMAML-TRPO halfcheetah_vel, {TASKS} tasks × {TRIALS_PER_TASK} trials × {STEPS} steps, pre + post "
          f"({ENV_STEPS} env steps): {best['seconds'] * per_10k:.2f} s per 10k env steps (sampling "
          f"{best['sampling'] * per_10k:.2f} s, update {best['update']:.2f} s per iteration); bare SyncVectorEnv "
          f"{bare_seconds * per_10k:.2f} s per 10k env steps; simulator share {bare_seconds / best['seconds']:.2f}")


def test_maml_trpo_step_vs_bare_vector_env(benchmark: Any) -> None:
    run_pytest_benchmark(benchmark, "maml_trpo", rounds=2, warmup=0)
