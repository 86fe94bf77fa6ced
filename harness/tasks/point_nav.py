"""2-D point navigation to a goal on an arc (the PEARL / VariBAD / MAML point robot)."""

from __future__ import annotations

import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, model_validator

from harness.tasks.base import FamilyParams, TaskFamily


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class PointNavParams(FamilyParams):
    reward: Literal["dense", "sparse"] = Field("dense", description="dense: -distance; sparse: 1 within goal_radius")
    radius_range: tuple[float, float] = Field((1.0, 1.0), description="goal distance from the origin (train/test)")
    angle_range_deg: tuple[float, float] = Field((0.0, 180.0), description="goal angle in degrees (train/test)")
    ood_radius_range: tuple[float, float] | None = Field((1.0, 1.0), description="goal distance for ood")
    ood_angle_range_deg: tuple[float, float] | None = Field((180.0, 360.0), description="goal angle for ood")
    goal_radius: float = Field(0.2, gt=0, description="sparse reward radius")
    step_size: float = Field(0.1, gt=0, description="largest move per step along each axis")
    episode_steps: int = Field(20, ge=1, description="steps per episode")

    @model_validator(mode="after")
    def _ranges(self) -> PointNavParams:
        for key in ("radius_range", "angle_range_deg", "ood_radius_range", "ood_angle_range_deg"):
            lo_hi = getattr(self, key)
            if lo_hi is not None and not (lo_hi[0] <= lo_hi[1] and lo_hi[0] >= 0):
                raise ValueError(f"{key}: must satisfy 0 <= low <= high, got {list(lo_hi)}")
        if (self.ood_radius_range is None) != (self.ood_angle_range_deg is None):
            raise ValueError("ood_radius_range and ood_angle_range_deg: set both or neither")
        if self.ood_radius_range is not None and self.ood_angle_range_deg is not None:
            radii_overlap = _overlap(self.radius_range, self.ood_radius_range) or (
                self.radius_range[0] == self.radius_range[1] == self.ood_radius_range[0] == self.ood_radius_range[1]
            )
            if radii_overlap and _overlap(self.angle_range_deg, self.ood_angle_range_deg):
                raise ValueError("ood_angle_range_deg: the ood region overlaps the training region")
        return self


class PointNavEnv(gym.Env):
    """A point starting at the origin moves by ``step_size * clip(action, -1, 1)`` per step.

    Observation: the position ``[x, y]``. Reward (dense): ``-||p - g||`` after the move; (sparse):
    ``1`` if ``||p - g|| <= goal_radius`` else ``0``.
    """

    def __init__(self, params: PointNavParams) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._sparse = params.reward == "sparse"
        self._goal_radius = params.goal_radius
        self._step_size = params.step_size
        self.goal = np.zeros(2)
        self.position = np.zeros(2)

    def set_task(self, params: dict[str, Any]) -> None:
        self.goal = np.asarray(params["goal"], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = np.zeros(2)
        return self.position.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = self.position + self._step_size * np.clip(action, -1.0, 1.0)
        distance = math.hypot(self.position[0] - self.goal[0], self.position[1] - self.goal[1])
        reward = float(distance <= self._goal_radius) if self._sparse else -distance
        return self.position.astype(np.float32), reward, False, False, {"distance": distance}


def _in_range(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] <= value <= lo_hi[1]


class PointNavFamily(TaskFamily):
    """Point navigation: task = goal ``g = r (cos θ, sin θ)`` with ``r ~ U(radius_range)``,
    ``θ ~ U(angle_range_deg)`` (default: the unit upper half circle). Reward per step: dense
    ``-||p - g||``; sparse ``1[||p - g|| <= goal_radius]``. OOD goals come from
    ``ood_angle_range_deg`` × ``ood_radius_range`` (default: the lower half circle)."""

    name = "point_nav"
    Params = PointNavParams
    default_episodes_per_trial = 2

    params: PointNavParams

    @property
    def max_episode_steps(self) -> int:
        return self.params.episode_steps

    @property
    def has_ood(self) -> bool:
        return self.params.ood_angle_range_deg is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        p = self.params
        ood = split == "ood"
        radii = p.ood_radius_range if ood else p.radius_range
        angles = p.ood_angle_range_deg if ood else p.angle_range_deg
        radius = float(rng.uniform(*radii))  # type: ignore[misc]
        angle = math.radians(float(rng.uniform(*angles)))  # type: ignore[misc]
        return {"goal": [radius * math.cos(angle), radius * math.sin(angle)]}

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        return np.asarray(params["goal"], np.float32)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        x, y = params["goal"]
        radius = math.hypot(x, y)
        angle = math.degrees(math.atan2(y, x)) % 360.0
        tol = 1e-9
        radius_in = self.params.radius_range[0] - tol <= radius <= self.params.radius_range[1] + tol
        lo, hi = self.params.angle_range_deg
        angle_in = any(_in_range(a, (lo - tol, hi + tol)) for a in (angle, angle + 360.0, angle - 360.0))
        return radius_in and angle_in

    def make_env(self) -> gym.Env:
        return PointNavEnv(self.params)
