"""References the harness trains (``oracle``, ``multitask``: PPO with an MLP) and ``random`` for every family:
the told view of a family, the families' task vectors, the suite keys, and runs end to end."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from algorithms.base import MetaEnvInfo, Task
from algorithms.registry import learner_class
from harness.analysis.report import report
from harness.references import TrainedReference, references_for, selected_references, trained_references
from harness.run.executors import run_local
from harness.run.rollout import Sampler
from harness.run.store import SuiteDir
from harness.spec.suite import SpecError, parse_suite
from harness.tasks import family_class
from harness.tasks.told import TaskTold


def _family(name: str, **params: Any) -> Any:
    cls = family_class(name)
    return cls(cls.Params(**params))


def test_task_vectors_of_the_locomotion_families() -> None:
    assert _family("halfcheetah_vel").task_vector({"velocity": 1.5}).tolist() == [1.5]
    assert _family("halfcheetah_dir").task_vector({"direction": -1}).tolist() == [-1.0]
    np.testing.assert_allclose(_family("ant_dir").task_vector({"angle_rad": math.pi / 2}), [0.0, 1.0], atol=1e-7)
    assert _family("ant_goal").task_vector({"goal": [1.0, -2.0]}).tolist() == [1.0, -2.0]
    walker = _family("walker_params")
    task = walker.sample_params("train", np.random.default_rng(0))
    vector = walker.task_vector(task)
    assert vector.shape == (sum(np.size(task["scale_exponents"][f]) for f in walker.params.randomize),)
    assert _family("tabular_mdp").task_vector({}) is None  # its oracle is exact (value iteration)


def test_the_told_view_appends_the_task_vector_from_the_next_reset() -> None:
    base = _family("point_nav")
    told = TaskTold(base)
    env = told.make_env()
    assert env.observation_space.shape == (base.make_env().observation_space.shape[0] + 2,)
    first = Task("point_nav", "a", {"goal": [0.5, 0.25]})
    second = Task("point_nav", "b", {"goal": [-0.5, 0.75]})
    told.set_task(env, first)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[-2:], [0.5, 0.25])
    told.set_task(env, second)
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_allclose(obs[-2:], [0.5, 0.25])  # like the task, the vector changes at the next reset
    obs, _ = env.reset(seed=1)
    np.testing.assert_allclose(obs[-2:], [-0.5, 0.75])
    # through the harness's sampler: every step of a row carries that row's task
    tasks = [first, second]
    batch = Sampler(told, np.random.default_rng(0)).collect(_ZeroPolicy(), tasks, 2)
    np.testing.assert_allclose(batch.obs[0, :, -2:], np.tile([0.5, 0.25], (batch.obs.shape[1], 1)))
    np.testing.assert_allclose(batch.obs[1, :, -2:], np.tile([-0.5, 0.75], (batch.obs.shape[1], 1)))
    with pytest.raises(ValueError, match="no task vector"):
        TaskTold(_family("tabular_mdp"))


class _ZeroPolicy:
    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:  # fmt: skip
        return np.zeros((len(obs), 2), np.float32)


def test_every_family_offers_random_and_the_trained_references_when_named() -> None:
    cheetah = references_for(_family("halfcheetah_vel"))
    assert list(cheetah) == ["random", "multitask", "oracle"]
    assert isinstance(cheetah["oracle"], TrainedReference) and cheetah["oracle"].told
    assert not cheetah["multitask"].told
    assert selected_references(_family("halfcheetah_vel")) == {}  # none in the standard set: each costs training
    # a family's own references win: the bandit's oracle is told the arm means, not trained
    bandit = references_for(_family("bandit"))
    assert not isinstance(bandit["oracle"], TrainedReference) and isinstance(bandit["multitask"], TrainedReference)
    assert list(trained_references(_family("bandit"), ["oracle", "multitask", "random"])) == ["multitask"]
    # uniformly random actions within the bounds
    tasks = [Task("halfcheetah_vel", str(i), {"velocity": 1.0}) for i in range(3)]
    policy = cheetah["random"].policy(tasks, 1, np.random.default_rng(0))
    actions = policy.act(np.zeros((3, 17)), np.zeros((3, 6)), np.zeros(3), np.ones(3, bool), False)
    assert actions.shape == (3, 6) and (np.abs(actions) <= 1).all() and actions.std() > 0.3


def cheetah_suite(**family: Any) -> dict[str, Any]:
    entry = {"name": "halfcheetah_vel", "params": {"episode_steps": 20}, "split": {"train": 6, "test": 2},
             "tasks_per_iteration": 2, "references": ["random", "multitask", "oracle"],
             "reference_training": {"env_steps": 160, "config": {"epochs": 1, "minibatches": 2}}}
    entry.update(family)
    return {"name": "told", "seeds": [0], "families": [entry],
            "algorithms": [{"name": "rl2", "config": {"hidden_size": 8, "epochs": 1}}],
            "budget": {"env_steps": 80}, "evaluation": {"every_env_steps": 80, "train_tasks": 0}}


def test_suite_keys_for_the_trained_references_are_validated_and_hashed() -> None:
    suite = parse_suite(cheetah_suite())
    family = suite.families[0]
    assert family.reference_budget == (160, 80)  # the family's evaluation schedule by default
    assert family.reference_config.epochs == 1
    resolved = suite.resolved()["families"][0]["reference_training"]
    assert resolved["references"] == ["multitask", "oracle"] and resolved["budget"] == [160, 80]
    assert parse_suite(cheetah_suite(reference_training={"env_steps": 240})).spec_hash != suite.spec_hash
    # a suite without trained references hashes as before the key existed
    plain = cheetah_suite(references=["random"])
    del plain["families"][0]["reference_training"]
    assert "reference_training" not in parse_suite(plain).resolved()["families"][0]
    problems = {
        "reference_training.config.epochs: must be >= 1": {"reference_training": {"config": {"epochs": 0}}},
        "reference_training.config.widths: unknown key": {"reference_training": {"config": {"widths": 3}}},
        "reference_training.preset: unknown preset 'nope'": {"reference_training": {"preset": "nope"}},
        "reference_training.env_steps: 10 cannot hold one iteration": {"reference_training": {"env_steps": 10}},
        "reference_training: no trained reference": {"references": ["random"]},
    }
    for message, change in problems.items():
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_suite(cheetah_suite(**change))


def test_trained_references_run_as_reference_runs_with_curves_and_normalise_the_report(tmp_path: Path) -> None:
    data = cheetah_suite()
    outcome = run_local(parse_suite(data), tmp_path, workers=1, stream=io.StringIO())
    assert outcome.ok, outcome.failed
    manifests = {m["algorithm"]: m for m in SuiteDir(tmp_path).manifests()}
    assert {"ref-random", "ref-multitask", "ref-oracle", "rl2"} <= set(manifests)
    assert manifests["ref-oracle"]["kind"] == "reference" and manifests["ref-oracle"]["env_steps"] == 160
    rows = SuiteDir(tmp_path).results()
    test = rows[rows["split"] == "test"]
    steps = {a: sorted(set(g["env_steps"])) for a, g in test.groupby("algorithm")}
    assert steps["ref-oracle"] == steps["ref-multitask"] == [0, 80, 160]  # trained: a curve
    assert steps["ref-random"] == [0]  # evaluated once
    assert steps["rl2"] == [0, 80]
    # the oracle and multitask references run on the learners' evaluation trials: their untrained policies
    # differ only in the input width, so both see the same tasks
    assert set(test.loc[test["algorithm"] == "ref-oracle", "task_id"]) == set(test.loc[test["algorithm"] == "rl2",
                                                                                        "task_id"])
    training = rows[(rows["algorithm"] == "ref-oracle") & (rows["split"] == "training")]
    assert "train_return" in set(training["metric"])
    text = report(tmp_path).read_text()
    assert "### Across families" in text  # random = 0 and oracle = 1 normalise halfcheetah_vel
    assert "| halfcheetah_vel | oracle (reference) |" in text


def test_told_the_goal_the_trained_oracle_nears_the_exact_one_and_the_multitask_policy_the_non_adaptive_one() -> None:
    """On point navigation, where exact references exist: 8k env steps of PPO make the told policy nearly as
    good as the exact oracle (which steers straight to the goal) and leave the untold one at the level of the
    best non-adaptive policy (the exact ``non_adaptive`` reference), far below."""
    torch.set_num_threads(1)
    family = _family("point_nav")
    rng = np.random.default_rng(0)
    train = [Task("point_nav", f"train/{i}", family.sample_params("train", rng)) for i in range(200)]
    test = [Task("point_nav", f"test/{i}", family.sample_params("test", rng)) for i in range(50)]

    def trained(view: Any) -> float:
        sampler = Sampler(view, np.random.default_rng(1))
        cls = learner_class("mlp_ppo")
        info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 1, family.max_episode_steps)
        learner = cls(info, cls.Config(lr=3e-3, minibatches=4), seed=0)
        draws = np.random.default_rng(2)
        for _ in range(20):  # 20 iterations × 20 tasks × 20 steps
            learner.train_iteration(sampler, [train[i] for i in draws.choice(len(train), 20, replace=False)])
        policy = learner.exploration_policy(torch.Generator().manual_seed(0))
        return float(Sampler(view, np.random.default_rng(3)).collect(policy, test, 1, True).episode_returns.mean())

    def exact(name: str) -> float:
        policy = references_for(family)[name].policy(test, 1, np.random.default_rng(4))
        return float(Sampler(family, np.random.default_rng(3)).collect(policy, test, 1).episode_returns.mean())

    oracle, multitask = trained(TaskTold(family)), trained(family)
    exact_oracle, non_adaptive = exact("oracle"), exact("non_adaptive")
    # measured: trained oracle -4.35, exact oracle -3.83; multitask -15.1, non_adaptive -14.1
    assert oracle > non_adaptive + 0.7 * (exact_oracle - non_adaptive), (oracle, exact_oracle, non_adaptive)
    assert abs(multitask - non_adaptive) < 0.15 * abs(non_adaptive), (multitask, non_adaptive)
