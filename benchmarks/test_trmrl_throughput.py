"""TrMRL sampling throughput, as ratios to baselines measured in the same process.

Run with ``pytest benchmarks/test_trmrl_throughput.py --benchmark-only -s``.

* ``test_sampling_vs_bare_vector_env``: env steps/s of the harness sampler driving a policy over 20
  ``halfcheetah_vel`` tasks (one trial of 2 × 200 steps each) against the bare
  ``gymnasium.vector.SyncVectorEnv`` of 20 ``HalfCheetah-v5`` stepped with pre-drawn random actions.
  Policies: the TrMRL ``halfcheetah_vel`` preset (the paper's window attention), the same network with
  cached sliding attention, and with uncached sliding attention, and an MLP(64, 64) Gaussian policy.
  Target (the TrMRL issue): the paper preset ≥ 0.4 × bare.
* ``test_cached_step_cost_with_a_400_step_window``: per-step cost of one batched policy call over 20
  tasks with trial-spanning memory and a 400-step window, measured over the second episode (the
  window holds 200–400 tokens), cached vs recomputed. Target: cached ≤ 0.2 × uncached.

Rounds of the case and of its baseline alternate (pedantic's untimed setup), so both see the same load;
each side's best round is its rate. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from algorithms.base import MetaEnvInfo
from algorithms.trmrl import PRESETS, Config, TrMRL, TrMRLPolicy
from harness import seeding
from harness.rollout import Sampler
from harness.tasks import family_class, make_split

TASKS, EPISODES, STEPS, ROUNDS = 20, 2, 200, 3


class BareVectorEnv:
    """``SyncVectorEnv`` of ``TASKS`` ``HalfCheetah-v5`` over pre-drawn random actions; ``rates`` per run."""

    def __init__(self) -> None:
        self.envs = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5") for _ in range(TASKS)])
        space = self.envs.action_space
        self.actions = np.random.default_rng(0).uniform(space.low, space.high, (EPISODES * STEPS, *space.shape))
        self.actions = self.actions.astype(np.float32)
        self.rates: list[float] = []

    def run(self) -> None:
        self.envs.reset(seed=len(self.rates))
        start = time.perf_counter()
        for action in self.actions:
            self.envs.step(action)
        self.rates.append(self.actions.size / self.actions.shape[-1] / (time.perf_counter() - start))


class MLPPolicy:
    """A batched Gaussian MLP(64, 64, tanh) policy: the cheapest learned policy (MAML's)."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        self.net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                       torch.nn.Tanh(), torch.nn.Linear(64, action_dim))
        self.generator = torch.Generator().manual_seed(0)

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    @torch.inference_mode()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        mean = self.net(torch.from_numpy(obs))
        return (mean + 0.2 * torch.randn(mean.shape, generator=self.generator)).numpy()


def _learner(sampler: Sampler, **overrides: Any) -> TrMRL:
    env = MetaEnvInfo(sampler.observation_space, sampler.action_space, EPISODES, STEPS)
    return TrMRL(env, Config(**{**PRESETS["halfcheetah_vel"], **overrides}), seed=0)


POLICIES = {
    "trmrl_paper_window": lambda sampler: _learner(sampler).exploration_policy(),
    "trmrl_sliding_cached": lambda sampler: _learner(sampler, attention="sliding").exploration_policy(),
    "trmrl_sliding_uncached": lambda sampler: TrMRLPolicy(_learner(sampler, attention="sliding").net,
                                                          torch.Generator(), cached=False),
    "mlp": lambda sampler: MLPPolicy(sampler.observation_space.shape[0], sampler.action_space.shape[0]),
}


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_sampling_vs_bare_vector_env(benchmark: Any, policy_name: str) -> None:
    cls = family_class("halfcheetah_vel")
    family = cls(cls.Params())
    tasks = make_split(family, "bench", {"train": TASKS}, lambda split: seeding.generator(0, "bench", split))["train"]
    sampler = Sampler(family, seeding.generator(0, "bench", "sampler"))
    policy = POLICIES[policy_name](sampler)
    bare = BareVectorEnv()
    rates: list[float] = []

    def collect() -> None:
        start = time.perf_counter()
        batch = sampler.collect(policy, tasks, EPISODES)
        rates.append(batch.env_steps / (time.perf_counter() - start))

    benchmark.pedantic(collect, setup=bare.run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    rate, bare_rate = max(rates), max(bare.rates)
    benchmark.extra_info.update(steps_per_s=round(rate), bare_vector_steps_per_s=round(bare_rate),
                                ratio=round(rate / bare_rate, 3))
    print(f"\n{policy_name}: {rate:,.0f} steps/s, bare SyncVectorEnv {bare_rate:,.0f} steps/s, "
          f"ratio {rate / bare_rate:.2f}")


def test_cached_step_cost_with_a_400_step_window(benchmark: Any) -> None:
    torch.manual_seed(0)
    env = MetaEnvInfo(gym.spaces.Box(-np.inf, np.inf, (17,), np.float32), gym.spaces.Box(-1, 1, (6,), np.float32),
                      EPISODES, STEPS)
    config = replace(Config(**PRESETS["halfcheetah_vel"]), attention="sliding", memory_span="trial",
                     working_memory=EPISODES * STEPS)
    net = TrMRL(env, config, seed=0).net
    tokens = torch.randn(EPISODES * STEPS, TASKS, net.token_dim)
    timings: dict[bool, list[float]] = {True: [], False: []}

    def run(cached: bool) -> None:
        policy = TrMRLPolicy(net, torch.Generator(), cached=cached)
        policy.reset(np.ones(TASKS, bool))
        with torch.inference_mode():
            for t in range(STEPS):  # the first episode fills the memory
                policy.memory.step(tokens[t])
            start = time.perf_counter()
            for t in range(STEPS, EPISODES * STEPS):
                policy.memory.step(tokens[t])
        timings[cached].append((time.perf_counter() - start) / STEPS)

    benchmark.pedantic(lambda: run(True), setup=lambda: run(False), rounds=ROUNDS, iterations=1)
    cached, uncached = min(timings[True]), min(timings[False])
    benchmark.extra_info.update(cached_ms_per_step=round(1e3 * cached, 3),
                                uncached_ms_per_step=round(1e3 * uncached, 3), ratio=round(cached / uncached, 4))
    print(f"\n400-step window, 20 tasks: cached {1e3 * cached:.2f} ms/step, uncached {1e3 * uncached:.2f} ms/step, "
          f"ratio {cached / uncached:.3f}")
