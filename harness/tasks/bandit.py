"""Bernoulli multi-armed bandits, as in the RL² paper (Duan et al. 2016, §4.1)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import Field, model_validator

from harness.tasks.base import FamilyParams, TaskFamily


class BanditParams(FamilyParams):
    arms: int = Field(5, ge=2, description="number of arms k")
    pulls: int = Field(10, ge=1, description="pulls per episode n (the RL² paper's horizon)")
    mean_range: tuple[float, float] = Field((0.0, 1.0), description="arm means ~ U(mean_range) for train/test")
    # e.g. mean_range [0, 0.5] with ood_mean_range [0.5, 1]: arms richer than any seen in training
    ood_mean_range: tuple[float, float] | None = Field(
        None, description="arm means ~ U(ood_mean_range) for the ood split; None: no ood split"
    )

    @model_validator(mode="after")
    def _ranges(self) -> BanditParams:
        for key in ("mean_range", "ood_mean_range"):
            lo_hi = getattr(self, key)
            if lo_hi is not None and not 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0:
                raise ValueError(f"{key}: must satisfy 0 <= low < high <= 1, got {list(lo_hi)}")
        ood = self.ood_mean_range
        if ood is not None and ood[0] < self.mean_range[1] and self.mean_range[0] < ood[1]:
            raise ValueError(f"ood_mean_range: {list(ood)} overlaps mean_range {list(self.mean_range)}; "
                             "OOD arm means must lie outside the training range")
        return self


class BernoulliBanditEnv(gym.Env):
    """k arms with Bernoulli rewards; the observation is a constant 0 (all information is in the
    previous action and reward, which memory agents receive)."""

    def __init__(self, arms: int) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(arms)
        self._obs = np.zeros(1, np.float32)
        self.means = np.full(arms, 0.5)

    def set_task(self, params: dict[str, Any]) -> None:
        self.means = np.asarray(params["means"], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.np_random.random() < self.means[int(action)])
        return self._obs, reward, False, False, {}


class BanditFamily(TaskFamily):
    """Bernoulli bandit: task = arm means ``p_1..p_k`` ~ U(mean_range); reward of a pull of arm ``a``
    is 1 with probability ``p_a``, else 0. An episode is ``pulls`` pulls; its return is the number of
    successes (the RL² paper's "total reward")."""

    name = "bandit"
    Params = BanditParams
    default_episodes_per_trial = 1

    params: BanditParams

    @property
    def max_episode_steps(self) -> int:
        return self.params.pulls

    @property
    def has_ood(self) -> bool:
        return self.params.ood_mean_range is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        low, high = self.params.ood_mean_range if split == "ood" else self.params.mean_range  # type: ignore[misc]
        return {"means": [float(m) for m in rng.uniform(low, high, self.params.arms)]}

    def in_training_region(self, params: dict[str, Any]) -> bool:
        low, high = self.params.mean_range
        return all(low <= m <= high for m in params["means"])

    def make_env(self) -> gym.Env:
        return BernoulliBanditEnv(self.params.arms)
