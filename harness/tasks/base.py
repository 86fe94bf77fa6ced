"""Task families and fixed train/test/ood splits (which families exist: ``harness.tasks.registry``).

A family is a parameterised distribution of MDPs. It validates its own parameters (a strict pydantic
model), draws tasks for each split from a generator it is given, and builds Gymnasium environments
whose task can be switched in place (``env.set_task(params)``) so the sampler builds each environment
once and reuses it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict

from algorithms.base import Task

SPLITS = ("train", "test", "ood")


class FamilyParams(BaseModel):
    """Base of every family's parameter model: strict, frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class SplitError(ValueError):
    """A family cannot supply the split the suite asks for (e.g. test tasks disjoint from train)."""


class TaskFamily(ABC):
    """A parameterised distribution of MDPs.

    Subclasses set ``name``, ``Params``, the defaults of the protocol, and implement
    ``sample_params`` and ``make_env``.
    """

    name: ClassVar[str]
    Params: ClassVar[type[FamilyParams]]
    default_episodes_per_trial: ClassVar[int] = 1
    #: Version of the observation/reward definition; enters the task hash.
    version: ClassVar[str] = "1"
    #: Whether its environments report ``info["success"]`` (Meta-World): evaluations then record ``success``.
    records_success: ClassVar[bool] = False

    def __init__(self, params: FamilyParams) -> None:
        self.params = params

    @property
    @abstractmethod
    def max_episode_steps(self) -> int:
        """Time limit of one episode, in env steps (set by the family's parameters)."""

    @property
    def has_ood(self) -> bool:
        """Whether the parameters define an out-of-distribution region."""
        return True

    @property
    def disjoint_test(self) -> bool:
        """Whether the family can supply test tasks disjoint from its training tasks.

        ``False`` for families with a finite task set smaller than a split (``halfcheetah_dir`` has two
        tasks): their test tasks may coincide with training tasks, ``tasks.json`` records it and reports
        say so. Everywhere else a coincidence is an error.
        """
        return True

    @abstractmethod
    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        """Draw one task's parameters for ``split`` (``train`` and ``test`` share a distribution)."""

    def sample_split(self, split: str, count: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """The parameters of ``count`` tasks of ``split``.

        By default ``count`` independent draws of ``sample_params``. Families whose tasks come from a
        fixed list (Meta-World's benchmark objects) override this and raise ``SplitError`` when the list
        is shorter than ``count``.
        """
        return [self.sample_params(split, rng) for _ in range(count)]

    @abstractmethod
    def make_env(self) -> gym.Env:
        """A fresh environment (no task set yet); it must implement ``set_task(params)``."""

    def set_task(self, env: gym.Env, task: Task) -> None:
        """Switch ``env`` to ``task`` in place; takes effect at the next reset."""
        env.unwrapped.set_task(task.params)  # type: ignore[attr-defined]

    def in_training_region(self, params: dict[str, Any]) -> bool:
        """Whether a task lies inside the training distribution's support (used to check OOD splits)."""
        return True

    def task_vector(self, params: dict[str, Any]) -> np.ndarray | None:
        """The task's parameters as a flat float vector, appended to the observations of the ``oracle``
        reference (a policy told the task, ``harness.tasks.told``); ``None``: the family does not declare
        one (no trained oracle)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Human-readable summary for ``python -m harness tasks``."""
        return {
            "family": self.name,
            "version": self.version,
            "doc": (type(self).__doc__ or "").strip(),
            "params": self.params.model_dump(mode="json"),
            "max_episode_steps": self.max_episode_steps,
            "default_episodes_per_trial": self.default_episodes_per_trial,
        }


def _task_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def make_split(
    family: TaskFamily, family_id: str, sizes: dict[str, int], rng_for: Callable[[str], np.random.Generator]
) -> dict[str, list[Task]]:
    """Draw the fixed task lists of every split.

    Args:
        family: the family, with its parameters.
        family_id: the suite's id for this family entry (prefix of task ids).
        sizes: number of tasks per split name.
        rng_for: the generator for a split name (one independent stream per split, so growing the
            test split does not change the training tasks).

    Raises:
        SplitError: an OOD split is requested where none is defined, a test task coincides with a
            training task (unless the family declares it cannot avoid it, ``disjoint_test``), or an OOD
            task falls inside the training region.
    """
    split: dict[str, list[Task]] = {}
    for name in SPLITS:
        count = sizes.get(name, 0)
        if count and name == "ood" and not family.has_ood:
            raise SplitError(f"{family_id}: split.ood is {count} but the family parameters define no OOD region")
        params = family.sample_split(name, count, rng_for(name)) if count else []
        split[name] = [Task(family=family_id, task_id=f"{name}/{i:04d}", params=p) for i, p in enumerate(params)]
    train_keys = {_task_key(t.params) for t in split["train"]}
    shared = [t.task_id for t in split["test"] if _task_key(t.params) in train_keys]
    if shared and family.disjoint_test:
        raise SplitError(
            f"{family_id}: {len(shared)} test task(s) coincide with training tasks (e.g. {shared[0]}); "
            "this family cannot supply disjoint train/test splits with these parameters"
        )
    inside = [t.task_id for t in split["ood"] if family.in_training_region(t.params)]
    if inside:
        raise SplitError(f"{family_id}: OOD task {inside[0]} lies inside the training distribution")
    return split


def tasks_hash(payload: Any) -> str:
    """Content hash (sha256, first 16 hex digits) of a JSON-able payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
