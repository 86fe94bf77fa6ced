"""What a reference policy is: the ``Reference`` protocol, the wrappers that make one from a policy factory, the
trained references' descriptor, uniformly random actions for any family, and the grid search the tuned
references share. The families' own references build on this module (``harness/references/*.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from algorithms.base import Policy, Task


class Reference(Protocol):
    """A baseline policy the harness evaluates like a learner.

    Attributes:
        name: short key, e.g. ``"thompson"``.
        description: one line for reports.
    """

    name: str
    description: str

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        """A fresh batched policy for ``tasks`` (row ``i`` of every ``act`` call is ``tasks[i]``).

        ``rng`` is its only source of randomness.
        """
        ...


PolicyFactory = Callable[[Sequence[Task], int, np.random.Generator], Policy]


@dataclass(frozen=True)
class FactoryReference:
    """A ``Reference`` built from a policy factory; ``standard``: evaluated on the family unless a suite's
    family entry names its own ``references`` (the others are offered, run only when named)."""

    name: str
    description: str
    make: PolicyFactory
    standard: bool = True

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        if not tasks:
            raise ValueError(f"reference {self.name!r}: tasks is empty")
        if episodes_per_trial < 1:
            raise ValueError(f"reference {self.name!r}: episodes_per_trial must be >= 1, got {episodes_per_trial}")
        return self.make(tasks, episodes_per_trial, rng)


@dataclass(frozen=True)
class DeferredReference:
    """An offered reference whose policies come from references built on first use: those that tune a
    parameter on the training split (seconds to a minute), which listing, validating and counting the runs
    of a suite never pay for. ``build`` returns the built references by name (and caches them)."""

    name: str
    description: str
    build: Callable[[], dict[str, Reference]]
    standard: bool = False

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        return self.build()[self.name].policy(tasks, episodes_per_trial, rng)


@dataclass(frozen=True)
class TrainedReference:
    """A reference the harness trains within the suite, as a ``ref-*`` run with a training budget and curve
    (``harness.run.runner``): PPO with an MLP policy (``algorithms.mlp_ppo``), trained on the training tasks.
    ``told``: on the tasks told (``harness.tasks.told``: the task's vector appended to the observation), the
    ``oracle`` of VariBAD and AMAGO; else the ``multitask`` policy, the best a policy that cannot adapt does.
    Offered, run when named (its training costs env steps like a learner's)."""

    name: str
    description: str
    told: bool
    standard: bool = False

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        raise TypeError(f"reference {self.name!r} is trained by the harness (harness.run.runner), not built from tasks")


#: The learner that trained references train (``algorithms.mlp_ppo``).
TRAINED_REFERENCE_LEARNER = "mlp_ppo"



class UniformActions:
    """Uniformly random actions of any ``Discrete`` or bounded ``Box`` action space."""

    def __init__(self, space: object, num_envs: int, rng: np.random.Generator) -> None:
        self.space, self.num_envs, self.rng = space, num_envs, rng

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:  # fmt: skip
        space = self.space
        if hasattr(space, "n"):
            return self.rng.integers(int(space.n), size=len(obs))  # type: ignore[attr-defined]
        low, high = space.low, space.high  # type: ignore[attr-defined]
        return self.rng.uniform(low, high, size=(len(obs), *low.shape)).astype(np.float32)



def tune_by_grid(score: Callable[[float, np.random.Generator, np.random.Generator], float], grid: Sequence[float],
                 rng: np.random.Generator, name: str) -> tuple[float, dict[float, float]]:  # fmt: skip
    """Grid search of one hyperparameter, as the RL² paper tuned its baselines: ``score(value, env_rng,
    policy_rng)`` of every candidate, each given generators from the same two seeds drawn once from ``rng``
    (common random numbers: the comparison is paired). Returns the best value (the first of equal best, in
    grid order) and every candidate's score. ``name`` names the caller in the error for an empty grid."""
    if not grid:
        raise ValueError(f"{name}: grid is empty")
    env_seed, policy_seed = (int(seed) for seed in rng.integers(0, 2**63 - 1, size=2))
    scores: dict[float, float] = {}
    for value in grid:
        scores[float(value)] = score(value, np.random.Generator(np.random.PCG64(env_seed)),
                                     np.random.Generator(np.random.PCG64(policy_seed)))
    best = max(scores, key=scores.__getitem__)  # max returns the first of equal maxima
    return best, scores


