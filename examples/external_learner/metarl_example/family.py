"""Gaussian multi-armed bandits: a task family of this package's own.

A family is a ``harness.tasks.base.TaskFamily``: a strict parameter model (``Params``), the draw of one task's
parameters from a generator it is given (``sample_params``), and an environment whose task is switched in place
(``make_env`` → an env with ``set_task(params)``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import Field

from harness.tasks.base import FamilyParams, TaskFamily


class GaussianBanditParams(FamilyParams):
    arms: int = Field(5, ge=2, description="number of arms k")
    pulls: int = Field(20, ge=1, description="pulls per episode")
    mean_std: float = Field(1.0, gt=0, description="arm means ~ N(0, mean_std²)")
    reward_std: float = Field(1.0, gt=0, description="a pull of arm a pays ~ N(μ_a, reward_std²)")


class GaussianBanditEnv(gym.Env):
    """k arms with Gaussian rewards; the observation is a constant 0 (the information is in the rewards)."""

    def __init__(self, arms: int, reward_std: float) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(arms)
        self.reward_std = reward_std
        self.means = np.zeros(arms)
        self._obs = np.zeros(1, np.float32)

    def set_task(self, params: dict[str, Any]) -> None:
        self.means = np.asarray(params["means"], np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self.means[int(action)] + self.reward_std * self.np_random.standard_normal()
        return self._obs, float(reward), False, False, {}


class GaussianBanditFamily(TaskFamily):
    """Gaussian bandit: task = arm means ``μ_1..μ_k`` ~ N(0, mean_std²); a pull of arm ``a`` pays
    N(μ_a, reward_std²). An episode is ``pulls`` pulls; random arms earn 0 on average, the best arm about
    1.16 × mean_std per pull (k = 5)."""

    name = "gaussian_bandit"
    Params = GaussianBanditParams
    default_episodes_per_trial = 1

    params: GaussianBanditParams

    @property
    def max_episode_steps(self) -> int:
        return self.params.pulls

    @property
    def has_ood(self) -> bool:
        return False

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        return {"means": [float(m) for m in rng.normal(0.0, self.params.mean_std, self.params.arms)]}

    def make_env(self) -> gym.Env:
        return GaussianBanditEnv(self.params.arms, self.params.reward_std)
