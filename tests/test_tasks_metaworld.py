"""Meta-World families: splits are the benchmark's own task lists, tasks rebuild exactly, rewards and
``success`` are Meta-World's, and a reused environment behaves like a fresh one."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import metaworld
import numpy as np
import pytest
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.policies import SawyerReachV3Policy
from pydantic import ValidationError

from algorithms.base import Task
from harness import seeding
from harness.run.rollout import Sampler
from harness.spec.splits import build_splits, check_splits, splits_payload
from harness.spec.suite import SpecError, parse_suite
from harness.tasks import SplitError, TaskFamily, family_class, make_split
from harness.tasks import meta_world as mw

SEED = 0
# Under pytest-xdist one worker runs this module and the ML10/ML45 suite checks of test_suites.py, so the
# benchmarks Meta-World builds (ML45 ~26 s, ML10 ~8 s; cached per process) are built once.
pytestmark = pytest.mark.xdist_group("metaworld")
Key = tuple[str, tuple[float, ...]]


def family(name: str, **params: Any) -> TaskFamily:
    cls = family_class(name)
    return cls(cls.Params(**params))


def keys_of_benchmark(tasks: list[metaworld.Task]) -> list[Key]:
    return [(t.env_name, tuple(pickle.loads(t.data)["rand_vec"].tolist())) for t in tasks]


def keys_of(params: list[dict[str, Any]]) -> list[Key]:
    return [(p["env_name"], tuple(p["rand_vec"])) for p in params]


def rng_for(split: str) -> np.random.Generator:
    return seeding.generator(SEED, "tasks", "mw-test", split)


def rollout(env: Any, params: dict[str, Any], reset_seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(obs [T+1, 39], rewards [T])`` of ``actions`` on ``params`` from a reset with ``reset_seed``."""
    env.unwrapped.set_task(params)
    obs, _ = env.reset(seed=reset_seed)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return np.array(observations), np.array(rewards)


ACTIONS = np.random.default_rng(1).uniform(-1, 1, (30, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def ml1_reach() -> metaworld.ML1:
    """Built here, independently of the family's per-process cache."""
    return metaworld.ML1("reach-v3", seed=SEED)


@pytest.fixture(scope="module")
def ml1() -> TaskFamily:
    return family("metaworld_ml1", task="reach-v3", benchmark_seed=SEED)


@pytest.fixture(scope="module")
def ml10() -> TaskFamily:
    return family("metaworld_ml10", benchmark_seed=SEED)


@pytest.fixture(scope="module")
def ml10_split(ml10: TaskFamily) -> dict[str, list[Task]]:
    """Every task ML10 has: 500 train, 500 test, 250 ood."""
    return make_split(ml10, "ml10", {"train": 500, "test": 500, "ood": 250}, rng_for)


# --- splits -------------------------------------------------------------------------------------------


def test_ml1_train_tasks_are_the_benchmark_train_tasks(ml1: TaskFamily, ml1_reach: metaworld.ML1) -> None:
    # gym.make_vec('Meta-World/ML1-train') in Meta-World 3.1.1 hands out the test tasks: ours must not.
    split = make_split(ml1, "ml1", {"train": 50, "test": 50}, rng_for)
    train, test = keys_of([t.params for t in split["train"]]), keys_of([t.params for t in split["test"]])
    assert sorted(train) == sorted(keys_of_benchmark(ml1_reach.train_tasks))
    assert sorted(test) == sorted(keys_of_benchmark(ml1_reach.test_tasks))
    assert set(train).isdisjoint(keys_of_benchmark(ml1_reach.test_tasks))
    assert len(set(train)) == 50 and set(train).isdisjoint(test)


def test_stored_goals_round_trip_bit_for_bit(ml1: TaskFamily, ml1_reach: metaworld.ML1) -> None:
    params = ml1.sample_split("train", 50, rng_for("train"))
    again = json.loads(json.dumps(params))
    assert again == params
    by_goal = {tuple(v.tolist()): v for v in (pickle.loads(t.data)["rand_vec"] for t in ml1_reach.train_tasks)}
    for p in again:
        original = by_goal[tuple(p["rand_vec"])]
        rebuilt = np.asarray(p["rand_vec"], np.float64)
        assert rebuilt.dtype == original.dtype and rebuilt.tobytes() == original.tobytes()


def test_ml10_splits_follow_the_benchmark(ml10_split: dict[str, list[Task]], ml1_reach: metaworld.ML1) -> None:
    bench = mw.benchmark("ML10", SEED)
    train, test, ood = (keys_of([t.params for t in ml10_split[s]]) for s in ("train", "test", "ood"))
    assert sorted(train) == sorted(keys_of_benchmark(bench.train_tasks))
    assert sorted(ood) == sorted(keys_of_benchmark(bench.test_tasks))
    assert {name for name, _ in ood} == set(bench.test_classes) == set(mw._ml_classes("ML10")[1])
    assert {name for name, _ in train} == {name for name, _ in test} == set(bench.train_classes)
    assert set(train).isdisjoint(test) and len(set(test)) == 500
    # The test goals of a class are ML1(class, seed).test_tasks (reach: the fixture, built independently).
    reach_test = sorted(g for name, g in test if name == "reach-v3")
    assert reach_test == sorted(g for _, g in keys_of_benchmark(ml1_reach.test_tasks))


def test_split_prefixes_cover_every_class(ml10_split: dict[str, list[Task]]) -> None:
    first = {split: {t.params["env_name"] for t in ml10_split[split][:n]} for split, n in
             (("train", 10), ("test", 10), ("ood", 5))}
    assert len(first["train"]) == len(first["test"]) == 10 and len(first["ood"]) == 5


def test_splits_are_deterministic_and_grow_by_extension(ml1: TaskFamily) -> None:
    def draw(count: int, seed: int = 0) -> list[dict[str, Any]]:
        return ml1.sample_split("test", count, np.random.default_rng(seed))

    assert draw(30) == draw(30)
    assert draw(50)[:30] == draw(30)
    assert draw(30) != draw(30, seed=1)


def test_too_many_tasks_raise_split_error(ml1: TaskFamily, ml10: TaskFamily) -> None:
    with pytest.raises(SplitError, match=r"metaworld_ml1: split 'train' asks for 51 tasks but Meta-World has 50 "
                                         r"\(1 class\(es\) × 50 goals\)"):
        ml1.sample_split("train", 51, np.random.default_rng(0))
    with pytest.raises(SplitError, match=r"split 'ood' asks for 251 tasks but Meta-World has 250"):
        ml10.sample_split("ood", 251, np.random.default_rng(0))
    with pytest.raises(SplitError, match=r"metaworld_ml1: no 'ood' split"):
        ml1.sample_split("ood", 1, np.random.default_rng(0))
    with pytest.raises(SplitError, match="define no OOD region"):
        make_split(ml1, "ml1", {"train": 5, "test": 5, "ood": 5}, rng_for)


def test_params_are_validated() -> None:
    cls = family_class("metaworld_ml1")
    with pytest.raises(ValidationError, match=r"unknown Meta-World task class 'reach-v2'; valid: assembly-v3, "):
        cls.Params(task="reach-v2")
    with pytest.raises(ValidationError, match="less than or equal to 500"):
        cls.Params(episode_steps=501)
    with pytest.raises(ValidationError, match="'v1' or 'v2'"):
        cls.Params(reward_function_version="v3")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        family_class("metaworld_ml10").Params(task="reach-v3")


def test_suite_with_ml1_parses_and_writes_its_tasks() -> None:
    def suite(params: dict[str, Any], split: dict[str, int]) -> dict[str, Any]:
        return {"name": "mw", "seeds": [0], "algorithms": [{"name": "rl2"}], "budget": {"env_steps": 10**7},
                "evaluation": {"every_env_steps": 10**6, "train_tasks": 5},
                "families": [{"name": "metaworld_ml1", "params": params, "split": split, "tasks_per_iteration": 5}]}

    parsed = parse_suite(suite({"task": "push-v3", "episode_steps": 150}, {"train": 50, "test": 10}))
    check_splits(parsed)
    payload = splits_payload(parsed, build_splits(parsed))
    entry = json.loads(json.dumps(payload))["families"]["metaworld_ml1"]
    assert entry["params"]["reward_function_version"] == "v2"  # in the task hash
    assert {t["params"]["env_name"] for t in entry["splits"]["test"]} == {"push-v3"}
    with pytest.raises(SpecError, match="unknown Meta-World task class 'push'"):
        parse_suite(suite({"task": "push"}, {"train": 50, "test": 10}))
    with pytest.raises(SpecError, match="no OOD region"):
        parse_suite(suite({}, {"train": 50, "test": 10, "ood": 5}))


# --- environments -------------------------------------------------------------------------------------


def test_make_env_and_describe_build_nothing() -> None:
    cached = mw._benchmark.cache_info().currsize
    start = time.perf_counter()
    ml45 = family("metaworld_ml45")
    env, info = ml45.make_env(), ml45.describe()
    assert time.perf_counter() - start < 2.0
    assert mw._benchmark.cache_info().currsize == cached  # no benchmark object built
    assert ml45._env_pool is not None and ml45._env_pool.built == 0  # no Meta-World env built
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    assert info["tasks_available"] == {"train": 2250, "test": 2250, "ood": 250}
    assert info["ood_classes"] == ["bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3"]
    assert info["reward_function_version"] == "v2" and info["goal_observed"] is False
    with pytest.raises(RuntimeError, match="needs a task before reset"):
        env.reset(seed=0)


def test_reset_restores_the_task_goal_whatever_the_seed(ml1: TaskFamily) -> None:
    task = ml1.sample_split("test", 1, np.random.default_rng(3))[0]
    env, fresh = ml1.make_env(), family("metaworld_ml1", task="reach-v3").make_env()
    obs_a, rew_a = rollout(env, task, 1, ACTIONS)
    obs_b, rew_b = rollout(fresh, task, 2, ACTIONS)  # Meta-World ignores the reset seed
    obs_c, rew_c = rollout(env, task, 1, ACTIONS)  # and redraws nothing on a later reset
    assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)
    assert np.array_equal(obs_a, obs_c) and np.array_equal(rew_a, rew_c)
    assert not np.array_equal(obs_a[0], obs_a[-1])  # the actions did move the hand
    assert np.all(obs_a[:, -3:] == 0.0)  # goal hidden (ML protocol)
    inner = env.unwrapped.active_env  # type: ignore[attr-defined]
    goal = np.asarray(task["rand_vec"])  # reach: [object xyz, goal xyz]
    assert np.array_equal(inner._target_pos, goal[3:]) and np.array_equal(inner.model.site("goal").pos, goal[3:])
    assert np.array_equal(inner.obj_init_pos, goal[:3])
    with pytest.raises(RuntimeError, match="reset"):  # a new task takes effect at reset
        env.unwrapped.set_task(task)  # type: ignore[attr-defined]
        env.step(ACTIONS[0])


def test_switching_tasks_matches_a_fresh_env(ml10: TaskFamily, ml10_split: dict[str, list[Task]]) -> None:
    reach = [t.params for t in ml10_split["train"] if t.params["env_name"] == "reach-v3"][:2]
    push = next(t.params for t in ml10_split["train"] if t.params["env_name"] == "push-v3")
    shelf = next(t.params for t in ml10_split["ood"] if t.params["env_name"] == "shelf-place-v3")
    env = ml10.make_env()
    for params in (reach[0], push, shelf, reach[1], push):  # other classes, then the same class, new goal
        reused = rollout(env, params, 0, ACTIONS)
        fresh = rollout(family("metaworld_ml10", benchmark_seed=SEED).make_env(), params, 0, ACTIONS)
        assert np.array_equal(reused[0], fresh[0]) and np.array_equal(reused[1], fresh[1]), params["env_name"]
    other = ml10.make_env()  # envs of a class are shared through the family's pool, one per user at a time
    for params in (push, reach[0], shelf):
        rollout(other, params, 0, ACTIONS[:2])
        rollout(env, params, 0, ACTIONS[:2])
    assert ml10._env_pool is not None and ml10._env_pool.built == 6  # 3 classes × 2 environments
    with pytest.raises(ValueError, match="'reach-v3' is not part of this family"):
        family("metaworld_ml1", task="push-v3").make_env().unwrapped.set_task(reach[0])  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_rewards_and_observations_are_metaworld_s(ml1_reach: metaworld.ML1, version: str) -> None:
    ours = family("metaworld_ml1", task="reach-v3", reward_function_version=version).make_env()
    bench_task = ml1_reach.test_tasks[7]
    bare = ALL_V3_ENVIRONMENTS["reach-v3"](reward_function_version=version)
    bare.set_task(bench_task)
    params = {"env_name": "reach-v3", "rand_vec": pickle.loads(bench_task.data)["rand_vec"].tolist()}
    obs, rewards = rollout(ours, params, 0, ACTIONS)
    bare_obs = [bare.reset()[0]]
    for action in ACTIONS:
        o, r, _, _, _ = bare.step(action)
        bare_obs.append(o)
        assert r == rewards[len(bare_obs) - 2]
    assert np.array_equal(obs, np.array(bare_obs))
    assert (rewards.max() <= 10.0) == (version == "v2")  # v2 rewards lie in [0, 10]; v1's reach reward does not


class OracleReachPolicy:
    """Meta-World's scripted reach policy, told each task's goal (hidden from the observation)."""

    def __init__(self, goals: np.ndarray | None) -> None:
        self.goals, self.scripted = goals, SawyerReachV3Policy()

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        obs = np.array(obs, np.float64)
        if self.goals is not None:
            obs[:, -3:] = self.goals
        return np.stack([self.scripted.get_action(o) for o in obs]).astype(np.float32)


@pytest.mark.filterwarnings("ignore:Constant.*may be too high")
def test_sampler_records_success_of_a_scripted_policy() -> None:
    fam = family("metaworld_ml1", task="reach-v3", episode_steps=100)
    assert getattr(fam, "records_success", False) is True
    tasks = [Task("ml1", f"test/{i}", p) for i, p in enumerate(fam.sample_split("test", 3, np.random.default_rng(0)))]
    goals = np.array([t.params["rand_vec"][3:] for t in tasks])
    sampler = Sampler(fam, np.random.default_rng(0))
    batch = sampler.collect(OracleReachPolicy(goals), tasks, episodes_per_trial=2)
    assert batch.episode_success.all()
    assert not batch.success[:, 0].any()  # it is recorded per step, not constant
    assert (batch.episode_lengths == 100).all()  # the family's episode length, truncated by Meta-World itself
    assert batch.episode_end[:, [99, 199]].all() and not batch.terminated.any()
    blind = sampler.collect(OracleReachPolicy(None), tasks, episodes_per_trial=1)  # heads for the hidden zeros
    assert not blind.episode_success.any()


@pytest.mark.slow
def test_ml45_splits_and_every_class_in_a_reused_env() -> None:
    """ML45 (~26 s to build the benchmark, ~0.5 s per class the test split uses): the splits follow the
    benchmark, and for each of the 50 classes a reused environment matches a fresh one."""
    ml45 = family("metaworld_ml45", benchmark_seed=SEED)
    split = make_split(ml45, "ml45", {"train": 2250, "test": 10, "ood": 250}, rng_for)
    bench = mw.benchmark("ML45", SEED)
    train, test, ood = (keys_of([t.params for t in split[s]]) for s in ("train", "test", "ood"))
    assert sorted(train) == sorted(keys_of_benchmark(bench.train_tasks))
    assert sorted(ood) == sorted(keys_of_benchmark(bench.test_tasks))
    assert {name for name, _ in ood} == set(bench.test_classes)
    assert len({name for name, _ in test}) == 10 and set(test).isdisjoint(train)
    assert {name for name, _ in test} < set(bench.train_classes)
    env = ml45.make_env()
    for task in split["train"][:45] + split["ood"][:5]:  # one task of each of the 50 classes
        reused = rollout(env, task.params, 0, ACTIONS[:10])
        fresh = rollout(family("metaworld_ml45").make_env(), task.params, 0, ACTIONS[:10])
        assert np.array_equal(reused[0], fresh[0]) and np.array_equal(reused[1], fresh[1]), task.params["env_name"]
        assert np.all(reused[0][:, -3:] == 0.0)
