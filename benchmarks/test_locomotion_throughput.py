"""Env steps/s of each locomotion family through the harness ``Sampler`` vs the bare Gymnasium env.

Run with ``pytest benchmarks/test_locomotion_throughput.py --benchmark-only``. Both sides take random
actions in the same process: the sampler collects one trial (2 episodes × 200 steps) on each of 10
tasks with a batched random policy; the bare env is ``gymnasium.make(<id>)`` (with its default
wrappers) stepped in a plain loop over pre-drawn actions, reset on termination, for as many steps.
Sampler and bare rounds alternate; ``extra_info`` holds both rates (best round of each) and ``ratio`` =
sampler / bare; the target is ≥ 0.8. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from benchmarks.bench import RandomPolicy
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import TaskFamily, family_class, make_split

TASKS, EPISODES, ROUNDS = 10, 2, 5
#: The bare Gymnasium environment each family wraps, with the same observation settings.
BARE: dict[str, tuple[str, dict[str, Any]]] = {
    "halfcheetah_vel": ("HalfCheetah-v5", {}),
    "halfcheetah_dir": ("HalfCheetah-v5", {}),
    "ant_dir": ("Ant-v5", {"include_cfrc_ext_in_observation": False}),
    "ant_goal": ("Ant-v5", {"include_cfrc_ext_in_observation": False,
                            "exclude_current_positions_from_observation": False}),
    "humanoid_dir": ("Humanoid-v5", {}),
    "walker_params": ("Walker2d-v5", {}),
    "hopper_params": ("Hopper-v5", {}),
}


class BareLoop:
    """A plain step loop on ``gymnasium.make(env_id)`` over pre-drawn random actions; ``rates`` per call."""

    def __init__(self, env_id: str, kwargs: dict[str, Any], steps: int) -> None:
        self.env = gym.make(env_id, **kwargs)
        space = self.env.action_space
        self.actions = np.random.default_rng(0).uniform(space.low, space.high, (steps, *space.shape))
        self.actions = self.actions.astype(np.float32)
        self.rates: list[float] = []

    def run(self) -> None:
        env = self.env
        env.reset(seed=len(self.rates))
        start = time.perf_counter()
        for action in self.actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        self.rates.append(len(self.actions) / (time.perf_counter() - start))


@pytest.mark.parametrize("name", list(BARE))
def test_sampler_vs_bare_env_steps_per_s(benchmark: Any, name: str) -> None:
    cls = family_class(name)
    family: TaskFamily = cls(cls.Params())
    tasks = make_split(family, name, {"train": TASKS}, lambda split: seeding.generator(0, "bench", split))["train"]
    sampler = Sampler(family, seeding.generator(0, "bench", "sampler"))
    policy = RandomPolicy(sampler.action_space, 0)  # type: ignore[arg-type]
    bare = BareLoop(*BARE[name], steps=TASKS * EPISODES * family.max_episode_steps)
    rates: list[float] = []

    def collect() -> None:
        start = time.perf_counter()
        batch = sampler.collect(policy, tasks, EPISODES)
        rates.append(batch.env_steps / (time.perf_counter() - start))

    # One bare round before every sampler round (pedantic's untimed setup), so both sides see the same
    # machine load; each side's best round is its rate.
    benchmark.pedantic(collect, setup=bare.run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    sampler_rate, bare_rate = max(rates), max(bare.rates)
    bare.env.close()
    benchmark.extra_info.update(
        sampler_steps_per_s=round(sampler_rate),
        bare_steps_per_s=round(bare_rate),
        ratio=round(sampler_rate / bare_rate, 3),
    )
    print(f"\n{name}: sampler {sampler_rate:,.0f} steps/s, bare {bare_rate:,.0f} steps/s, "
          f"ratio {sampler_rate / bare_rate:.2f}")
