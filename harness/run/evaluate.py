"""The meta-test protocol (DESIGN.md §5), one protocol for every learner and reference policy.

For each task of a split, run one trial of ``episodes_per_trial`` episodes: in-context learners
(``exploration_episodes is None``) run the whole trial with their exploration policy; the others run
``exploration_episodes`` episodes, ``adapt``, and run the rest with the adapted policy. One row per
(task, episode index within the trial) and metric. The evaluator returns rows; it writes nothing.

An evaluation is an observation, not an intervention: a learner's evaluation policy draws from a generator
of the evaluation's own (``generator_for``), never from one the learner trains with (``algorithms/base.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from algorithms.base import MetaLearner, Policy, Task, TrialBatch
from harness.run.rollout import Sampler
from harness.spec.suite import Protocol


def _rows(split: str, tasks: Sequence[Task], returns: np.ndarray, lengths: np.ndarray,
          success: np.ndarray | None) -> list[dict[str, Any]]:
    rows = []
    for i, task in enumerate(tasks):
        for e in range(returns.shape[1]):
            rows.append({"split": split, "task_id": task.task_id, "episode_index": e, "metric": "return",
                         "value": float(returns[i, e])})
            rows.append({"split": split, "task_id": task.task_id, "episode_index": e, "metric": "length",
                         "value": float(lengths[i, e])})
            if success is not None:
                rows.append({"split": split, "task_id": task.task_id, "episode_index": e, "metric": "success",
                             "value": float(success[i, e])})
    return rows


def run_trial(
    sampler: Sampler,
    tasks: Sequence[Task],
    episodes_per_trial: int,
    policy: Policy,
    deterministic: bool,
    exploration_episodes: int | None = None,
    adapt: Callable[[Policy, TrialBatch], Policy] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One evaluation trial per task.

    Returns:
        ``(returns, lengths, success)``, each ``[tasks, episodes_per_trial]``.
    """
    if exploration_episodes is None or adapt is None:
        batch = sampler.collect(policy, tasks, episodes_per_trial, deterministic)
        return batch.episode_returns, batch.episode_lengths, batch.episode_success
    if not 0 < exploration_episodes < episodes_per_trial:
        raise ValueError(
            f"exploration_episodes ({exploration_episodes}) must lie in (0, episodes_per_trial={episodes_per_trial})"
        )
    explore = sampler.collect(policy, tasks, exploration_episodes, deterministic)
    adapted = sampler.collect(adapt(policy, explore), tasks, episodes_per_trial - exploration_episodes, deterministic)
    return (
        np.concatenate([explore.episode_returns, adapted.episode_returns], axis=1),
        np.concatenate([explore.episode_lengths, adapted.episode_lengths], axis=1),
        np.concatenate([explore.episode_success, adapted.episode_success], axis=1),
    )


def evaluate(
    sampler_for: Callable[[str], Sampler],
    task_sets: Mapping[str, Sequence[Task]],
    episodes_per_trial: int,
    policy_for: Callable[[str, Sequence[Task]], Policy],
    deterministic: bool,
    records_success: bool,
    exploration_episodes: int | None = None,
    adapt: Callable[[Policy, TrialBatch], Policy] | None = None,
) -> list[dict[str, Any]]:
    """Rows ``{split, task_id, episode_index, metric, value}`` for every split in ``task_sets``.

    Args:
        sampler_for: the evaluation sampler of a split (its own seed stream, the same for every
            algorithm and every evaluation of a run seed).
        task_sets: tasks per split name, e.g. ``{"test": [...], "ood": [...], "train": [...]}``.
        episodes_per_trial: episodes per evaluation trial.
        policy_for: a fresh policy for a split and its tasks (learners ignore the tasks; oracles use them).
        deterministic: act deterministically.
        records_success: whether to record the ``success`` metric.
        exploration_episodes: see the module docstring.
        adapt: the learner's ``adapt``.
    """
    rows: list[dict[str, Any]] = []
    for split, tasks in task_sets.items():
        if not tasks:
            continue
        returns, lengths, success = run_trial(
            sampler_for(split), tasks, episodes_per_trial, policy_for(split, tasks), deterministic,
            exploration_episodes, adapt,
        )
        rows += _rows(split, tasks, returns, lengths, success if records_success else None)
    return rows


def evaluate_learner(
    learner: MetaLearner,
    sampler_for: Callable[[str], Sampler],
    task_sets: Mapping[str, Sequence[Task]],
    protocol: Protocol,
    records_success: bool,
    generator_for: Callable[[str], torch.Generator],
) -> list[dict[str, Any]]:
    """``evaluate`` with a learner's exploration policy and adaptation.

    Args:
        generator_for: a fresh generator for a split's evaluation policy: the evaluation's own randomness.
    """
    return evaluate(
        sampler_for, task_sets, protocol.episodes_per_trial,
        lambda split, _tasks: learner.exploration_policy(generator_for(split)), protocol.deterministic,
        records_success, protocol.exploration_episodes, learner.adapt,
    )
