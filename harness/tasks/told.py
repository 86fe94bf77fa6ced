"""A family's tasks with the task told: observations end with the task's vector.

The ``oracle`` reference of VariBAD and AMAGO is a policy that is told the task: trained by the harness
(``harness.references``, trained references) on ``TaskTold(family)``, whose environments append
``family.task_vector(params)`` to every observation. Everything else — the tasks, their rewards, the time
limit, success — is the family's own.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from algorithms.base import Task
from harness.tasks.base import TaskFamily


class TaskInObservation(gym.ObservationWrapper):
    """``[observation (flattened), task vector]``; the vector is set by ``TaskTold.set_task``."""

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        inner = env.observation_space
        low = np.concatenate([np.ravel(inner.low), np.full(size, -np.inf)]).astype(np.float32)  # type: ignore[attr-defined]
        high = np.concatenate([np.ravel(inner.high), np.full(size, np.inf)]).astype(np.float32)  # type: ignore[attr-defined]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.vector = np.zeros(size, np.float32)
        self._pending: np.ndarray | None = None

    def set_pending(self, vector: np.ndarray) -> None:
        """The next task's vector; like the task itself it takes effect at the next reset."""
        self._pending = vector

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        if self._pending is not None:
            self.vector, self._pending = self._pending, None
        return super().reset(seed=seed, options=options)

    def observation(self, observation: Any) -> np.ndarray:
        return np.concatenate([np.ravel(observation).astype(np.float32), self.vector])


class TaskTold(TaskFamily):
    """A view of ``family`` whose environments append the task's vector to their observations.

    Not registered: it is built by the harness for the ``oracle`` reference, never named in a suite.
    """

    def __init__(self, family: TaskFamily) -> None:
        probe = family.sample_params("train", np.random.default_rng(0))
        vector = family.task_vector(probe)
        if vector is None:
            raise ValueError(f"{family.name}: declares no task vector (TaskFamily.task_vector); no oracle is told")
        super().__init__(family.params)
        self.family = family
        self.size = int(np.asarray(vector).size)
        self.name = family.name  # type: ignore[misc]
        self.Params = family.Params  # type: ignore[misc]
        self.default_episodes_per_trial = family.default_episodes_per_trial  # type: ignore[misc]
        self.records_success = family.records_success  # type: ignore[misc]

    @property
    def max_episode_steps(self) -> int:
        return self.family.max_episode_steps

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        return self.family.sample_params(split, rng)

    def make_env(self) -> gym.Env:
        return TaskInObservation(self.family.make_env(), self.size)

    def set_task(self, env: gym.Env, task: Task) -> None:
        assert isinstance(env, TaskInObservation)
        self.family.set_task(env.env, task)
        env.set_pending(np.asarray(self.family.task_vector(task.params), np.float32).ravel())
