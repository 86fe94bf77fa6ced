"""Shared benchmark pieces: the bare vectorised-env baseline and a sampler that times its collects."""

from __future__ import annotations

import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from algorithms.base import Policy, Task, TrialBatch
from harness.rollout import Sampler


class BareVectorEnv:
    """``SyncVectorEnv`` of ``num_envs`` ``HalfCheetah-v5`` over pre-drawn random actions; ``seconds`` per run."""

    def __init__(self, num_envs: int, steps_per_env: int) -> None:
        self.envs = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5") for _ in range(num_envs)])
        space = self.envs.action_space
        self.actions = np.random.default_rng(0).uniform(space.low, space.high, (steps_per_env, *space.shape))
        self.actions = self.actions.astype(np.float32)
        self.seconds: list[float] = []

    def run(self) -> None:
        self.envs.reset(seed=len(self.seconds))
        start = time.perf_counter()
        for action in self.actions:
            self.envs.step(action)
        self.seconds.append(time.perf_counter() - start)


class TimedSampler:
    """The harness sampler, timing its ``collect`` calls."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.seconds = sampler, 0.0

    def collect(self, policy: Policy, tasks: Sequence[Task], episodes_per_trial: int,
                deterministic: bool = False) -> TrialBatch:  # fmt: skip
        start = time.perf_counter()
        batch = self.sampler.collect(policy, tasks, episodes_per_trial, deterministic)
        self.seconds += time.perf_counter() - start
        return batch
