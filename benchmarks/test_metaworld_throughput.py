"""Env steps/s of ML1 reach through the harness ``Sampler`` vs the bare Meta-World env.

Run with ``pytest benchmarks/test_metaworld_throughput.py --benchmark-only``. Both sides take random
actions in the same process: the sampler collects one trial (2 episodes × 500 steps) on each of 10
ML1 reach tasks with a batched random policy; the bare env is Meta-World's ``SawyerReachEnvV3`` set to
one benchmark task and stepped in a plain loop over pre-drawn actions, reset at truncation (every 500
steps, as many resets as the sampler makes), for as many steps. ``extra_info`` holds both rates (best
of the rounds) and ``ratio`` = sampler / bare; the target is ≥ 0.8. Nothing is asserted about
wall-clock time.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from harness import seeding
from harness.rollout import Sampler
from harness.tasks import family_class, make_split
from harness.tasks.meta_world import benchmark

TASK, TASKS, EPISODES, ROUNDS = "reach-v3", 10, 2, 5


class RandomPolicy:
    """Uniform random actions in the box, one batched draw per step (the ``Policy`` protocol)."""

    def __init__(self, space: gym.spaces.Box, seed: int) -> None:
        self.low, self.high = space.low, space.high
        self.rng = np.random.default_rng(seed)

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, (len(obs), len(self.low))).astype(np.float32)


def bare_steps_per_s(steps: int) -> float:
    """Best-of-``ROUNDS`` rate of a plain step loop on one Meta-World reach env."""
    env = ALL_V3_ENVIRONMENTS[TASK]()
    env.set_task(benchmark("ML1", 0, TASK).train_tasks[0])
    space = env.action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, (steps, *space.shape)).astype(np.float32)
    best = 0.0
    for round_ in range(ROUNDS + 1):  # round 0 warms up
        env.reset()
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        rate = steps / (time.perf_counter() - start)
        best = max(best, rate) if round_ else best
    env.close()
    return best


def test_sampler_vs_bare_env_steps_per_s(benchmark: Any) -> None:
    cls = family_class("metaworld_ml1")
    family = cls(cls.Params(task=TASK))
    tasks = make_split(family, "ml1", {"train": TASKS}, lambda split: seeding.generator(0, "bench", split))["train"]
    sampler = Sampler(family, seeding.generator(0, "bench", "sampler"))
    policy = RandomPolicy(sampler.action_space, 0)  # type: ignore[arg-type]
    rates: list[float] = []

    def collect() -> None:
        start = time.perf_counter()
        batch = sampler.collect(policy, tasks, EPISODES)
        rates.append(batch.env_steps / (time.perf_counter() - start))

    benchmark.pedantic(collect, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    sampler_rate = max(rates[-ROUNDS:])  # pedantic may or may not have run the warm-up round
    bare_rate = bare_steps_per_s(steps=TASKS * EPISODES * family.max_episode_steps)
    benchmark.extra_info.update(sampler_steps_per_s=round(sampler_rate), bare_steps_per_s=round(bare_rate),
                                ratio=round(sampler_rate / bare_rate, 3))
    print(f"\nmetaworld_ml1 {TASK}: sampler {sampler_rate:,.0f} steps/s, bare {bare_rate:,.0f} steps/s, "
          f"ratio {sampler_rate / bare_rate:.2f}")
