"""What a policy's sampled action becomes at the environment, and the samples it keeps to score them.

Several released codebases put an action map between the policy and the environment: ProMP's
``normalize(env)`` rescales the policy's ``[-scale, scale]`` onto the ``Box`` bounds and clips
(``ActionNormalization``, MAML), cleanrl's ``ClipAction`` wrapper clips to the bounds (``ActionClip``, the
trained references). Either way the environment (and its control cost) sees the mapped action while
the policy-gradient log-probabilities are of the policy's own sample. The harness's sampler runs the
family's environment as it is, so a policy with a map returns the mapped actions and keeps its samples
(``KeptSamples``) for the learner to score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np

from algorithms.base import TrialBatch


class ActionMap(Protocol):
    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """``[..., A]`` policy samples → the actions the environment gets."""
        ...


def finite_bounds(space: gym.Space, option: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``Box`` bounds ``low, high`` (float32, ``[A]``) of ``space``, or a ``ValueError`` naming ``option``."""
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{option}: needs a Box action space, not {space}")
    low, high = space.low.astype(np.float32).ravel(), space.high.astype(np.float32).ravel()
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(f"{option}: needs finite action bounds; this Box is unbounded")
    return low, high


@dataclass(frozen=True)
class ActionNormalization:
    """ProMP's ``normalize(env)`` action map: the policy's units ``[-scale, scale]`` affinely onto the
    environment's ``Box`` bounds ``[low, high]``, then clipped to them (float32, ``[A]`` each)."""

    scale: float
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, space: gym.Space, scale: float) -> ActionNormalization:
        return cls(scale, *finite_bounds(space, "action_normalization_scale"))

    @property
    def gain(self) -> np.ndarray:
        """Env units per policy unit, ``[A]``: half the bounds' range over ``scale``."""
        return (self.high - self.low) / np.float32(2 * self.scale)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """``[..., A]`` policy-unit actions → the clipped env-unit actions the environment gets."""
        middle = (self.high + self.low) / np.float32(2)
        return np.clip(middle + actions * self.gain, self.low, self.high)


@dataclass(frozen=True)
class ActionClip:
    """cleanrl's ``ClipAction`` wrapper: samples clipped to the ``Box`` bounds, no rescaling."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, space: gym.Space) -> ActionClip:
        return cls(*finite_bounds(space, "clip_actions"))

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.low, self.high)


class KeptSamples:
    """A policy's samples of its current trial, one ``[N, A]`` array per ``act`` call since the trial
    began, and what they map to.

    The sampler calls ``act`` once per step of a trial for every environment (``harness.run.rollout``),
    so the kept samples line up with the trial batch's steps; ``in_policy_units`` checks that they map
    onto the batch's actions before handing them out.
    """

    def __init__(self, action_map: ActionMap) -> None:
        self.action_map = action_map
        self.samples: list[np.ndarray] | None = []

    def restart(self, new_trial: np.ndarray) -> None:
        # They restart with a trial of every environment (what the sampler does); after a partial reset
        # they no longer line up, and ``in_policy_units`` refuses.
        self.samples = [] if np.all(new_trial) else None

    def keep(self, actions: np.ndarray) -> np.ndarray:
        """Keep ``actions [N, A]`` (not copied: pass a fresh array) and return what the environment gets."""
        if self.samples is not None:
            self.samples.append(actions)
        return self.action_map.to_env(actions)

    def in_policy_units(self, batch: TrialBatch) -> TrialBatch:
        """``batch`` (the policy's last trial) with its actions replaced by the kept samples, zero on
        padding: what the log-probabilities are of.

        Raises:
            ValueError: the batch is not the trial this policy last ran.
        """
        if not self.samples:
            raise ValueError(
                "this policy has no recorded trial (it maps its actions and keeps its samples "
                "from the last collect only)"
            )
        samples = np.stack(self.samples, axis=1)  # [N, S, A]
        num, steps = batch.valid.shape
        if samples.shape[0] != num or samples.shape[1] > steps or batch.valid[:, samples.shape[1] :].any():
            raise ValueError(
                f"the policy's last trial ({samples.shape[0]} environments, {samples.shape[1]} steps) "
                f"is not this batch ({num} rows, {steps} steps)"
            )
        actions = np.zeros(batch.actions.shape, np.float32)
        actions[:, : samples.shape[1]] = samples.reshape(num, samples.shape[1], *batch.actions.shape[2:])
        actions[~batch.valid] = 0.0
        mapped = self.action_map.to_env(actions)
        if not np.array_equal(mapped[batch.valid], batch.actions[batch.valid]):
            raise ValueError(
                "the batch's actions are not this policy's last trial's samples, mapped to the "
                "environment (rescaled and/or clipped)"
            )
        return dataclasses.replace(batch, actions=actions)
