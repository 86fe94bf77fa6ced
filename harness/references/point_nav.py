"""The point-navigation family's references: a random walk, the oracle that goes to the goal, and the
best non-adaptive target (the point of highest mean reward over the goal distribution).
"""

from __future__ import annotations

import functools

import numpy as np

from harness.tasks.base import TaskFamily
from harness.tasks.point_nav import PointNavFamily, PointNavParams


class RandomMove:
    """Uniform actions in [-1, 1]^2."""

    def __init__(self, num_envs: int, rng: np.random.Generator) -> None:
        self.num_envs, self.rng = num_envs, rng

    def reset(self, new_trial: np.ndarray) -> None:
        pass  # memoryless

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N, 2]`` float32."""
        return self.rng.uniform(-1.0, 1.0, (self.num_envs, 2)).astype(np.float32)


class GoTo:
    """Moves each environment's point to its target in the fewest steps, then stays there.

    The move ``step_size * clip((target - p) / step_size)`` is the point of the reachable box nearest the
    target, so after ``t`` steps the point is the nearest to the target of all positions reachable in ``t``
    steps: for the goal as target this minimises every step's distance (optimal for dense and sparse).

    Args:
        targets: ``[N, 2]`` target positions.
        step_size: the family's largest move per step along each axis.
    """

    def __init__(self, targets: np.ndarray, step_size: float) -> None:
        self.targets = np.asarray(targets, np.float64)
        self.step_size = step_size

    def reset(self, new_trial: np.ndarray) -> None:
        pass  # memoryless: the position is in the observation

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N, 2]`` float32 for positions ``obs: [N, 2]``."""
        return np.clip((self.targets - obs) / self.step_size, -1.0, 1.0).astype(np.float32)


#: Fixed seed and sample size of the training goals that choose the non-adaptive target.
_NON_ADAPTIVE_SEED = 0
_NON_ADAPTIVE_GOALS = 2000
#: Points per axis of the coarse and of the fine grid search; odd, so a grid centred on the origin holds it.
_NON_ADAPTIVE_GRID = 41


def _mean_reward_at(points: np.ndarray, goals: np.ndarray, params: PointNavParams) -> np.ndarray:
    """Mean per-step reward of standing at each of ``points: [P, 2]`` over ``goals: [G, 2]``; ``[P]``."""
    distance = np.hypot(points[:, None, 0] - goals[None, :, 0], points[:, None, 1] - goals[None, :, 1])  # [P, G]
    if params.reward == "sparse":
        return (distance <= params.goal_radius).mean(axis=1)
    return -distance.mean(axis=1)


def _grid_search(center: np.ndarray, half: float, goals: np.ndarray, params: PointNavParams) -> np.ndarray:
    """The point ``[2]`` of a square grid (``center ± half``) with the highest mean reward; first on ties."""
    axis = np.linspace(-half, half, _NON_ADAPTIVE_GRID)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2) + center  # [P, 2]
    return points[int(np.argmax(_mean_reward_at(points, goals, params)))]


@functools.lru_cache(maxsize=16)
def _non_adaptive_target(params: PointNavParams) -> tuple[float, float]:
    family = PointNavFamily(params)
    rng = np.random.Generator(np.random.PCG64(_NON_ADAPTIVE_SEED))
    goals = np.array([family.sample_params("train", rng)["goal"] for _ in range(_NON_ADAPTIVE_GOALS)])  # [G, 2]
    # Coarse: a square centred on the origin (where episodes start) covering every goal's reward region;
    # fine: one coarse cell around the best coarse point (resolution half / 400, ~0.003 by default).
    half = float(np.linalg.norm(goals, axis=1).max()) + params.goal_radius
    coarse = _grid_search(np.zeros(2), half, goals, params)
    fine = _grid_search(coarse, 2 * half / (_NON_ADAPTIVE_GRID - 1), goals, params)
    return float(fine[0]), float(fine[1])


def non_adaptive_target(family: TaskFamily) -> np.ndarray:
    """The point ``[2]`` where the non-adaptive reference stands: the grid point with the highest mean
    per-step reward over training goals (a fixed sample, so the same for every call)."""
    return np.array(_non_adaptive_target(family.params), np.float64)  # type: ignore[arg-type]


