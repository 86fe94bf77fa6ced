"""Learners that break the contract on purpose, each in one way, for ``tests/test_conformance.py``. Named by
import path they also show the kit's table on the command line:
``PYTHONPATH=tests python -m harness check-learner broken_learners:MutatingAdapt --quick``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.base import Policy, TrialBatch
from algorithms.rl2 import RL2


class MutatingAdapt(RL2):
    """``adapt`` nudges the network it shares with the learner in place (garage's MAML overwrote and restored
    module parameters in place: garage issue #1269)."""

    name = "broken_mutating_adapt"

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.add_(1e-3)
        return policy


class _EpsilonGreedy:
    """RL²'s policy, but one action in five uniformly random, drawn from NumPy's legacy global generator."""

    def __init__(self, policy: Policy, arms: int) -> None:
        self.policy, self.arms = policy, arms

    def reset(self, new_trial: np.ndarray) -> None:
        self.policy.reset(new_trial)

    def act(self, *args: Any) -> np.ndarray:
        actions = self.policy.act(*args)
        explore = np.random.random(len(actions)) < 0.2  # noqa: NPY002  # the bug under test
        return np.where(explore, np.random.randint(self.arms, size=len(actions)), actions)  # noqa: NPY002


class GlobalRNG(RL2):
    """Explores ε-greedily with the global generator (oyster sampled its tasks with unseeded ``np.random``)."""

    name = "broken_global_rng"

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        return _EpsilonGreedy(super().exploration_policy(generator), int(self.env.action_space.n))


class _Sticky:
    """RL²'s policy, but the first action of a trial repeats the last action of the trial before (a memory that
    ``reset`` does not clear)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.last, self.first = policy, None, False

    def reset(self, new_trial: np.ndarray) -> None:
        self.policy.reset(new_trial)
        self.first = True

    def act(self, *args: Any) -> np.ndarray:
        actions = self.policy.act(*args)
        if self.first and self.last is not None:
            actions = self.last.copy()
        self.first, self.last = False, actions
        return actions


class KeepsMemory(RL2):
    """Its policies carry an action from one trial into the next."""

    name = "broken_keeps_memory"

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        return _Sticky(super().exploration_policy(generator))


@dataclass(frozen=True)
class _BareConfig(RL2.Config):  # no docstring
    retries: int = 1  # and no metadata={"doc": ...}


class UndocumentedConfig(RL2):
    """Its ``Config`` has no docstring, and a field without documentation."""

    name = "broken_undocumented_config"
    Config = _BareConfig
