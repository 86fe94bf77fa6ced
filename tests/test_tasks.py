"""Task families and splits: determinism, disjointness, OOD regions, and the reward formulas by hand."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import yaml

from algorithms.base import Task
from harness import seeding
from harness.spec.splits import build_splits, check_splits, splits_payload
from harness.spec.suite import SpecError, Suite, parse_suite
from harness.tasks import SplitError, TaskFamily, family_class, make_split
from harness.tasks.base import FamilyParams

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml").read_text())


def suite(mutate: Callable[[dict[str, Any]], object] | None = None) -> Suite:
    """The quickstart suite, optionally changed in place by ``mutate`` before parsing."""
    data = copy.deepcopy(BASE)
    if mutate is not None:
        mutate(data)
    return parse_suite(data)


def family(name: str, **params: Any) -> TaskFamily:
    cls = family_class(name)
    return cls(cls.Params(**params))


def params_of(tasks: list[Task]) -> list[dict[str, Any]]:
    return [t.params for t in tasks]


def angle_deg(goal: list[float]) -> float:
    return math.degrees(math.atan2(goal[1], goal[0])) % 360.0


# --- splits -------------------------------------------------------------------------------------------


def test_splits_are_deterministic_in_the_root_seed() -> None:
    first, again = build_splits(suite()), build_splits(suite())
    other = build_splits(suite(lambda d: d.update(seed=1)))
    for key, splits in first.items():
        for name, tasks in splits.items():
            assert tasks == again[key][name]
            if tasks:
                assert params_of(tasks) != params_of(other[key][name]), (key, name)
    assert [t.task_id for t in first["point_nav"]["test"][:2]] == ["test/0000", "test/0001"]


def test_growing_one_split_leaves_the_others_unchanged() -> None:
    base = build_splits(suite())["point_nav"]
    more_test = build_splits(suite(lambda d: d["families"][1]["split"].update(test=80)))["point_nav"]
    more_train = build_splits(suite(lambda d: d["families"][1]["split"].update(train=700)))["point_nav"]
    assert more_test["train"] == base["train"]
    assert more_test["ood"] == base["ood"]
    assert more_test["test"][:50] == base["test"]  # the same stream, drawn further
    assert more_train["test"] == base["test"]
    assert more_train["train"][:500] == base["train"]


def test_test_tasks_are_disjoint_from_train_tasks() -> None:
    for key, splits in build_splits(suite()).items():
        train = {str(p) for p in params_of(splits["train"])}
        assert train.isdisjoint(str(p) for p in params_of(splits["test"])), key
        assert len(train) == len(splits["train"]), key  # and train tasks are distinct


def test_point_nav_ood_goals_lie_on_the_lower_half_circle() -> None:
    splits = build_splits(suite())["point_nav"]
    for task in splits["ood"]:
        assert 180.0 < angle_deg(task.params["goal"]) < 360.0
        assert math.hypot(*task.params["goal"]) == pytest.approx(1.0)
    for task in splits["train"] + splits["test"]:
        assert 0.0 <= angle_deg(task.params["goal"]) <= 180.0


def test_bandit_ood_arm_means_lie_in_the_ood_range() -> None:
    def ood_bandit(d: dict[str, Any]) -> None:
        d["families"][0]["params"].update(mean_range=[0.0, 0.5], ood_mean_range=[0.5, 1.0])
        d["families"][0]["split"]["ood"] = 100

    splits = build_splits(suite(ood_bandit))["bandit"]
    assert len(splits["ood"]) == 100
    train_means = np.array([p["means"] for p in params_of(splits["train"] + splits["test"])])
    ood_means = np.array([p["means"] for p in params_of(splits["ood"])])
    assert ood_means.shape == (100, 5)
    assert ood_means.min() >= 0.5 and ood_means.max() <= 1.0
    assert train_means.min() >= 0.0 and train_means.max() <= 0.5
    assert ood_means.mean() > 0.7 and train_means.mean() < 0.3  # filled, not stuck on the boundary


class ConstantParams(FamilyParams):
    pass


class ConstantFamily(TaskFamily):
    """Every task is the same MDP: no disjoint test split exists."""

    name: ClassVar[str] = "constant"
    Params = ConstantParams

    @property
    def max_episode_steps(self) -> int:
        return 1

    @property
    def has_ood(self) -> bool:
        return False

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        return {"value": 1.0}

    def make_env(self) -> gym.Env:
        raise NotImplementedError("never built")


def _rng_for(split: str) -> np.random.Generator:
    return seeding.generator(0, "tasks", "constant", split)


def test_make_split_raises_when_test_tasks_coincide_with_train() -> None:
    with pytest.raises(SplitError, match=r"const: 3 test task\(s\) coincide with training tasks"):
        make_split(ConstantFamily(ConstantParams()), "const", {"train": 5, "test": 3}, _rng_for)


def test_make_split_raises_for_ood_without_region() -> None:
    with pytest.raises(SplitError, match="define no OOD region"):
        make_split(ConstantFamily(ConstantParams()), "const", {"train": 1, "test": 0, "ood": 2}, _rng_for)


def test_check_splits_fails_before_any_run_for_a_degenerate_family() -> None:
    # A single goal (radius 1, angle 90°) parses fine but cannot give test tasks disjoint from train.
    degenerate = suite(lambda d: d["families"][1]["params"].update(angle_range_deg=[90, 90]))
    with pytest.raises(SpecError) as info:
        check_splits(degenerate)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("families: point_nav: 50 test task(s) coincide")


def test_tasks_json_hash_tracks_family_params() -> None:
    base = suite()
    changed = suite(lambda d: d["families"][0]["params"].update(pulls=11))
    base_splits, changed_splits = build_splits(base), build_splits(changed)
    assert base_splits["bandit"] == changed_splits["bandit"]  # premise: pulls does not enter sampling
    base_hash = splits_payload(base, base_splits)["hash"]
    assert splits_payload(suite(), build_splits(suite()))["hash"] == base_hash
    assert splits_payload(changed, changed_splits)["hash"] != base_hash


# --- bandit ---------------------------------------------------------------------------------------------


def test_bandit_arm_frequencies_match_the_means() -> None:
    means = [0.1, 0.5, 0.85]
    env = family("bandit", arms=3).make_env()
    env.unwrapped.set_task({"means": means})
    obs, _ = env.reset(seed=123)
    pulls = 4000  # std of a frequency ≤ 0.5/√4000 ≈ 0.008; 0.03 is almost 4 std
    for arm, mean in enumerate(means):
        rewards = [env.step(arm)[1] for _ in range(pulls)]
        assert set(rewards) <= {0.0, 1.0}
        assert np.mean(rewards) == pytest.approx(mean, abs=0.03)
    np.testing.assert_array_equal(obs, [0.0])  # the observation carries no information


def test_bandit_is_deterministic_given_the_reset_seed() -> None:
    bandit = family("bandit", arms=3)
    task = {"means": [0.3, 0.5, 0.7]}
    actions = [0, 1, 2, 2, 1, 0] * 5

    def rewards(env: gym.Env, seed: int) -> list[float]:
        env.reset(seed=seed)
        return [env.step(a)[1] for a in actions]

    first, second = bandit.make_env(), bandit.make_env()
    for env in (first, second):
        env.unwrapped.set_task(task)
    reference = rewards(first, 7)
    assert rewards(second, 7) == reference  # a different env instance, same task and seed
    assert rewards(first, 7) == reference  # the same env reused: no state carried over
    assert rewards(first, 8) != reference


def test_bandit_set_task_changes_the_reward() -> None:
    env = family("bandit", arms=2).make_env()
    env.unwrapped.set_task({"means": [1.0, 0.0]})
    env.reset(seed=0)
    assert [env.step(0)[1], env.step(1)[1]] == [1.0, 0.0]
    env.unwrapped.set_task({"means": [0.0, 1.0]})
    env.reset(seed=0)
    assert [env.step(0)[1], env.step(1)[1]] == [0.0, 1.0]


# --- point_nav ------------------------------------------------------------------------------------------


def test_point_nav_dense_reward_after_clipped_scaled_move() -> None:
    env = family("point_nav", reward="dense", step_size=0.3).make_env()
    env.unwrapped.set_task({"goal": [0.6, 0.1]})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    # action → clipped → position after the move (step 0.3) → reward −‖p − g‖
    steps = [
        ([2.0, -1.5], [0.3, -0.3], -0.5),  # g − p = (0.3, 0.4): a 3-4-5 triangle
        ([0.5, 0.5], [0.45, -0.15], -math.hypot(0.15, 0.25)),
        ([-1.0, 3.0], [0.15, 0.15], -math.hypot(0.45, 0.05)),
    ]
    for action, position, reward in steps:
        obs, r, terminated, truncated, info = env.step(np.array(action))
        np.testing.assert_allclose(obs, position, atol=1e-6)
        assert r == pytest.approx(reward)
        assert info["distance"] == pytest.approx(-reward)
        assert (terminated, truncated) == (False, False)


def test_point_nav_sparse_reward_inside_goal_radius_only() -> None:
    env = family("point_nav", reward="sparse", goal_radius=0.25, step_size=0.1).make_env()
    env.unwrapped.set_task({"goal": [0.5, 0.0]})
    env.reset(seed=0)
    # x = 0.1 … 0.8: distances 0.4 0.3 0.2 0.1 0.0 0.1 0.2 0.3
    rewards = [env.step(np.array([1.0, 0.0]))[1] for _ in range(8)]
    assert rewards == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_point_nav_set_task_changes_the_reward_and_reset_returns_to_origin() -> None:
    env = family("point_nav", reward="dense", step_size=0.1).make_env()
    env.unwrapped.set_task({"goal": [1.0, 0.0]})
    env.reset(seed=0)
    assert env.step(np.array([1.0, 0.0]))[1] == pytest.approx(-0.9)
    env.unwrapped.set_task({"goal": [-1.0, 0.0]})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    assert env.step(np.array([1.0, 0.0]))[1] == pytest.approx(-1.1)


def test_point_nav_same_task_same_trajectory() -> None:
    point_nav = family("point_nav")
    task = Task("point_nav", "test/0000", point_nav.sample_params("test", seeding.generator(3, "goal")))
    actions = seeding.generator(3, "actions").uniform(-2, 2, (20, 2))

    def trajectory() -> list[tuple[list[float], float]]:
        env = point_nav.make_env()
        point_nav.set_task(env, task)
        env.reset(seed=5)
        steps = [env.step(a) for a in actions]
        return [(obs.tolist(), reward) for obs, reward, *_ in steps]

    first = trajectory()
    assert trajectory() == first
    assert len({tuple(obs) for obs, _ in first}) == len(actions)  # it moved every step
