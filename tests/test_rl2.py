"""RL²'s acting policy: one GRU step per env step over the batch, consistent with the training forward."""

from __future__ import annotations

import numpy as np
import torch

from algorithms.base import MetaEnvInfo
from algorithms.rl2 import RL2, Config
from harness import seeding
from harness.rollout import Sampler
from harness.tasks import family_class, make_split


def _point_nav() -> tuple[Sampler, list, MetaEnvInfo]:
    cls = family_class("point_nav")
    family = cls(cls.Params())
    tasks = make_split(family, "pn", {"train": 4}, lambda s: seeding.generator(0, "rl2", s))["train"]
    sampler = Sampler(family, seeding.generator(0, "rl2", "sampler"))
    return sampler, tasks, MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)


def test_one_policy_collects_trial_after_trial_and_starts_each_from_a_zero_state() -> None:
    sampler, tasks, info = _point_nav()
    learner = RL2(info, Config(hidden_size=8), seed=0)
    policy = learner.exploration_policy()
    first = sampler.collect(policy, tasks, 2, deterministic=True)
    again = sampler.collect(policy, tasks, 2, deterministic=True)  # the GRU state is reset, in place
    rewound = Sampler(sampler.family, seeding.generator(0, "rl2", "sampler"))
    fresh = rewound.collect(learner.exploration_policy(), tasks, 2, deterministic=True)
    np.testing.assert_array_equal(first.actions, fresh.actions)
    assert again.actions.shape == first.actions.shape and np.isfinite(again.actions).all()


def test_acting_step_by_step_matches_the_training_forward_over_whole_trials() -> None:
    sampler, tasks, info = _point_nav()
    learner = RL2(info, Config(hidden_size=8, shared_value=True), seed=0)
    batch = sampler.collect(learner.exploration_policy(), tasks, 2, deterministic=True)
    inputs = learner._sequence_inputs(batch)["inputs"]
    with torch.no_grad():
        mean = learner.net.policy_head(learner.net.gru(inputs)[0])  # [N, T, A]: a row is one trial
    # the deterministic actions stored are the means the policy computed one env step at a time
    torch.testing.assert_close(torch.from_numpy(batch.actions), mean, rtol=1e-5, atol=1e-6)
