"""The contract between the harness and every learner: tasks, trial batches, and the protocols of DESIGN.md §4.

An algorithm imports this module and torch, never the runner. The harness implements `Sampler`;
every learner implements `MetaLearner` and hands out `Policy` objects, and its class is a
`LearnerClass`. Which learners exist is the registry's to know (`algorithms.registry`), not this module's.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

if TYPE_CHECKING:
    from algorithms.device import Acting


@dataclass(frozen=True)
class Task:
    """One MDP of a task family, fully described by its parameters.

    Attributes:
        family: name of the task family, e.g. ``"bandit"``.
        task_id: stable identifier within the suite, e.g. ``"test/007"``.
        params: JSON-able parameters, e.g. ``{"means": [0.1, 0.7, ...]}``.
    """

    family: str
    task_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class MetaEnvInfo:
    """The shape of a family's meta-task, given to a learner when it is built.

    Attributes:
        observation_space: space of one environment's observations.
        action_space: space of one environment's actions (``Discrete`` or ``Box``).
        episodes_per_trial: episodes collected on one task before memory is reset.
        max_episode_steps: time limit of one episode, in env steps.
    """

    observation_space: gym.Space
    action_space: gym.Space
    episodes_per_trial: int
    max_episode_steps: int


@dataclass
class TrialBatch:
    """One trial per task, padded to the longest trial. Arrays are ``[tasks, steps, ...]``.

    Step ``t`` of row ``i`` holds the observation the action was taken in, the action, and the reward
    it earned. ``valid`` is False on padding after a trial ended early (terminations).

    Attributes:
        obs: ``[N, T, *obs_shape]`` float32.
        actions: ``[N, T]`` int64 for discrete actions, ``[N, T, act_dim]`` float32 otherwise.
        rewards: ``[N, T]`` float32.
        episode_start: ``[N, T]`` bool, first step of an episode.
        episode_end: ``[N, T]`` bool, last step of an episode (terminated or time limit).
        terminated: ``[N, T]`` bool, the episode ended in a terminal state at this step.
        episode_index: ``[N, T]`` int64, index of the episode within the trial.
        valid: ``[N, T]`` bool.
        success: ``[N, T]`` bool, the environment's ``info["success"]`` (False where absent).
        episode_returns: ``[N, E]`` float64, undiscounted return of each episode.
        episode_lengths: ``[N, E]`` int64.
        episode_success: ``[N, E]`` bool, success at any step of the episode.
        task_ids: the ``task_id`` of each row.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_start: np.ndarray
    episode_end: np.ndarray
    terminated: np.ndarray
    episode_index: np.ndarray
    valid: np.ndarray
    success: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    episode_success: np.ndarray
    task_ids: list[str]

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    @property
    def env_steps(self) -> int:
        return int(self.valid.sum())

    def previous(self, array: np.ndarray) -> np.ndarray:
        """``array`` shifted one step later along time, zeros at the trial start.

        Memory agents see ``a_{t-1}, r_{t-1}`` at step ``t``; the values carry across the episodes of
        a trial (RL²), so the shift is over the whole trial.
        """
        shifted = np.zeros_like(array)
        shifted[:, 1:] = array[:, :-1]
        return shifted


@runtime_checkable
class Policy(Protocol):
    """Maps one step of every environment of a batch to actions; may hold per-environment memory."""

    def reset(self, new_trial: np.ndarray) -> None:
        """Forget the memory of the environments where ``new_trial`` (``[N]`` bool) is True."""

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N, ...]`` for observations ``[N, *obs_shape]``.

        ``prev_action``/``prev_reward`` are the previous step's within the trial (zeros at its start);
        ``episode_start`` (``[N]`` bool) marks the first step of an episode (``done_{t-1}``).
        """


class Sampler(Protocol):
    """Runs trials; implemented by ``harness.run.rollout``. It counts the env steps it takes."""

    def collect(
        self,
        policy: Policy,
        tasks: Sequence[Task],
        episodes_per_trial: int,
        deterministic: bool = False,
    ) -> TrialBatch: ...


@runtime_checkable
class MetaLearner(Protocol):
    """A meta-RL algorithm as the harness drives it.

    ``exploration_episodes`` says how evaluation adapts (DESIGN.md §5): ``None`` for in-context
    learners (RL², TrMRL), whose whole trial runs with the exploration policy; ``k`` for learners that
    collect ``k`` episodes, call ``adapt`` and run the rest of the trial with the adapted policy.

    **Evaluating never changes training.** The harness evaluates by calling
    ``exploration_policy(generator)`` with a generator of the evaluation's own (derived from the run's
    seed, the split and the evaluation's env step), then ``adapt``. Every random draw of an evaluation
    (action noise, a latent sample, anything ``adapt`` draws) comes from that generator, handed on from
    the policy to its adapted policy; none comes from, or advances, a generator the learner trains with,
    and neither call changes the learner's ``state_dict``. So evaluating more or less often, or on more
    splits, leaves every training row unchanged. (``execution.check_evaluation`` makes the harness
    verify the ``state_dict`` part on every evaluation.)
    """

    exploration_episodes: int | None
    #: False: ``train_iteration`` gets the harness's meta-batch (``tasks_per_iteration`` training tasks drawn
    #: by the harness). True: it gets every training task each iteration and draws its own (PEARL as oyster
    #: released it: initial data on every training task, then its own task draws).
    samples_own_tasks: bool

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """A fresh policy drawing its randomness from ``generator``; ``None`` means the learner's own
        training generator (for the learner's training and for tests), never used by the harness."""
        ...

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        """A policy adapted to each task of ``exploration`` (one row per task); must not mutate the learner
        or ``policy``. Randomness comes from the generator ``policy`` was built with."""
        ...

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class LearnerClass(Protocol):
    """A learner class, as ``algorithms.registry.learner_class`` hands it out; calling it builds a ``MetaLearner``.

    ``exploration_episodes`` and ``samples_own_tasks`` are the built learner's (``MetaLearner``): MAML and
    PEARL set them from their config, so the class need not carry them.
    """

    #: The suite name it is registered under, e.g. ``"rl2"``.
    name: str
    #: Its config: a frozen dataclass whose fields carry ``metadata={"doc": ...}`` (and ``"added": True`` for an
    #: option added later whose default keeps the earlier computation: at its default it is not hashed).
    Config: type
    #: Preset name → config overrides, e.g. ``{"mujoco": {"hidden_size": 64, ...}}``.
    presets: dict[str, dict[str, Any]]

    def acts_on(self, config: Any) -> Acting:
        """Where a learner with ``config`` acts, ``"cpu"`` or ``"device"`` (``algorithms.device``)."""
        ...

    def __call__(self, env: MetaEnvInfo, config: Any, seed: int, device: str | torch.device = "cpu") -> MetaLearner: ...


# --- configs -------------------------------------------------------------------------------------


def check(condition: bool, field: str, reason: str) -> None:
    """Raise ``ValueError("field: reason")`` unless ``condition``; used in configs' ``__post_init__``."""
    if not condition:
        raise ValueError(f"{field}: {reason}")


def check_choices(config: Any) -> None:
    """``check`` every field of the dataclass ``config`` typed as a ``Literal`` against the values it allows.

    Suites reach a config through ``harness.spec``, which validates every field against its type; this
    keeps a config built in code (a preset, a test, a benchmark) from running with a misspelt option.
    """
    for name, hint in typing.get_type_hints(type(config)).items():
        if typing.get_origin(hint) is Literal:
            allowed = typing.get_args(hint)
            check(getattr(config, name) in allowed, name, f"must be one of {', '.join(allowed)}")
