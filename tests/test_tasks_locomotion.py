"""MuJoCo locomotion families: rewards by hand from the simulator state, what a task changes, splits,
determinism and no leakage between tasks on a reused environment."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pydantic
import pytest

from algorithms.base import Task
from harness import seeding
from harness.run.rollout import Sampler
from harness.spec import splits
from harness.spec.splits import check_splits
from harness.spec.suite import parse_suite
from harness.tasks import SplitError, TaskFamily, family_class, make_split
from harness.tasks.locomotion import SCALE_BASES, LocomotionEnv

FAMILIES = ["halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal", "humanoid_dir", "walker_params",
            "hopper_params"]
REWARD_FAMILIES = FAMILIES[:5]
PARAMS_FAMILIES = FAMILIES[5:]
OBS_ACT_DIMS = {"halfcheetah_vel": (17, 6), "halfcheetah_dir": (17, 6), "ant_dir": (27, 8), "ant_goal": (29, 8),
                "humanoid_dir": (348, 17), "walker_params": (17, 6), "hopper_params": (11, 3)}
#: Family parameters that declare an OOD region where the family has one (as a suite would).
WITH_OOD: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": {"ood_velocity_range": (3.0, 4.0)},
    "halfcheetah_dir": {},
    "ant_dir": {"convention": "uniform_angle", "angle_range_deg": (0.0, 270.0), "ood_angle_range_deg": (270.0, 360.0)},
    "ant_goal": {"radius": 2.5, "ood_radius_range": (2.5, 3.5)},
    "humanoid_dir": {"angle_range_deg": (90.0, 360.0), "ood_angle_range_deg": (0.0, 90.0)},
    "walker_params": {"ood_exponent_range": (3.0, 4.0)},
    "hopper_params": {"ood_exponent_range": (3.0, 4.0)},
}


def family(name: str, **params: Any) -> TaskFamily:
    cls = family_class(name)
    return cls(cls.Params(**params))


def a_task(fam: TaskFamily, seed: int = 0) -> dict[str, Any]:
    return fam.sample_params("train", seeding.generator(seed, "task", fam.name))


def actions_for(env: LocomotionEnv, steps: int, seed: int = 0, scale: float = 0.5) -> np.ndarray:
    """``[steps, act_dim]`` random actions inside the action bounds."""
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    return scale * seeding.generator(seed, "actions").uniform(low, high, (steps, len(low)))


def rollout(env: LocomotionEnv, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations ``[steps + 1, obs_dim]``, rewards ``[steps]``, terminated ``[steps]`` from ``reset(seed)``."""
    observations, rewards, terminated = [env.reset(seed=seed)[0]], [], []
    for action in actions:
        obs, reward, term, truncated, _ = env.step(action)
        assert not truncated
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
    return np.array(observations), np.array(rewards), np.array(terminated)


# --- rewards by hand -------------------------------------------------------------------------------------------


def com_xy(env: LocomotionEnv) -> np.ndarray:
    """Centre of mass in the plane, from the model masses and body positions."""
    model, data = env.base.model, env.base.data
    return (model.body_mass[:, None] * data.xipos).sum(axis=0)[:2] / model.body_mass.sum()


def ant_costs(env: LocomotionEnv, action: np.ndarray) -> float:
    """Ant: survive (1 while 0.2 ≤ z ≤ 1) − 0.5‖a‖² − 5e-4‖clip(cfrc_ext, −1, 1)‖²."""
    z = env.base.data.qpos[2]
    contact = 5e-4 * np.square(np.clip(env.base.data.cfrc_ext, -1.0, 1.0)).sum()
    return float(0.2 <= z <= 1.0) - 0.5 * np.square(action).sum() - contact


def planar_walker_base(env: LocomotionEnv, before: dict[str, np.ndarray], action: np.ndarray, task: Any) -> float:
    """Walker2d/Hopper: v_x + 1 (healthy at these early steps) − 1e-3‖a‖²."""
    vx = (env.base.data.qpos[0] - before["qpos"][0]) / env.base.dt
    return vx + 1.0 - 1e-3 * np.square(action).sum()


def cheetah_vx(env: LocomotionEnv, before: dict[str, np.ndarray]) -> float:
    return (env.base.data.qpos[0] - before["qpos"][0]) / env.base.dt


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


HandReward = Callable[[LocomotionEnv, dict[str, np.ndarray], np.ndarray, dict[str, Any]], float]
HAND_REWARD: dict[str, HandReward] = {
    "halfcheetah_vel": lambda env, before, a, task: (
        -abs(cheetah_vx(env, before) - task["velocity"]) - 0.05 * np.square(a).sum()),
    "halfcheetah_dir": lambda env, before, a, task: (
        task["direction"] * cheetah_vx(env, before) - 0.05 * np.square(a).sum()),
    # v5 measures the torso by its body position xpos, computed before the last physics substep (as
    # mujoco-py's get_body_com was); qpos is a substep ahead.
    "ant_dir": lambda env, before, a, task: (
        (env.base.data.xpos[1, :2] - before["torso"]) / env.base.dt @ unit(task["angle_rad"]) + ant_costs(env, a)),
    "ant_goal": lambda env, before, a, task: (
        -np.linalg.norm(env.base.data.qpos[:2] - np.array(task["goal"])) + ant_costs(env, a)),
    "humanoid_dir": lambda env, before, a, task: (
        1.25 * (com_xy(env) - before["com"]) / env.base.dt @ unit(task["angle_rad"])
        + 5.0 * float(1.0 < env.base.data.qpos[2] < 2.0)
        - 0.1 * np.square(a).sum()
        - min(5e-7 * np.square(env.base.data.cfrc_ext).sum(), 10.0)),
    "walker_params": planar_walker_base,
    "hopper_params": planar_walker_base,
}
SCRIPTED_TASKS: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": {"velocity": 1.3},
    "halfcheetah_dir": {"direction": -1},
    "ant_dir": {"angle_rad": 0.7},
    "ant_goal": {"goal": [1.0, -2.0]},
    "humanoid_dir": {"angle_rad": 2.0},
}


@pytest.mark.parametrize("name", FAMILIES)
def test_reward_matches_the_formula_on_scripted_steps(name: str) -> None:
    fam = family(name)
    task = SCRIPTED_TASKS.get(name) or a_task(fam)
    env = fam.make_env()
    env.set_task(task)
    env.reset(seed=3)
    for action in actions_for(env, 6):
        before = {"qpos": env.base.data.qpos.copy(), "torso": env.base.data.xpos[1, :2].copy(), "com": com_xy(env)}
        _, reward, terminated, _, _ = env.step(action)
        assert not terminated
        assert isinstance(reward, float)
        assert reward == pytest.approx(HAND_REWARD[name](env, before, action, task), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_params_family_with_unit_factors_is_the_bare_v5_env(name: str) -> None:
    fam = family(name)
    env = fam.make_env()
    env.set_task({"scale_exponents": {f: [0.0] * n for f, n in fam.sizes.items()}})
    bare = fam.env_class()
    actions = actions_for(env, 20)
    observations, rewards, _ = rollout(env, 4, actions)
    bare_obs, bare_rewards = [bare.reset(seed=4)[0]], []
    for action in actions:
        obs, reward, *_ = bare.step(action)
        bare_obs.append(obs)
        bare_rewards.append(reward)
    np.testing.assert_array_equal(observations, bare_obs)
    np.testing.assert_array_equal(rewards, bare_rewards)


def test_halfcheetah_is_not_truncated_at_gymnasium_default_limit() -> None:
    # gym.make("HalfCheetah-v5") truncates at 1000 steps; the sampler owns the horizon here.
    env = family("halfcheetah_dir").make_env()
    env.set_task({"direction": 1})
    env.reset(seed=0)
    zero = np.zeros(6)
    assert not any(env.step(zero)[3] for _ in range(1001))


# --- what a task changes ---------------------------------------------------------------------------------------


TASK_PAIRS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "halfcheetah_vel": ({"velocity": 0.5}, {"velocity": 2.5}),
    "halfcheetah_dir": ({"direction": 1}, {"direction": -1}),
    "ant_dir": ({"angle_rad": 1.0}, {"angle_rad": -1.0}),
    "ant_goal": ({"goal": [2.0, 0.0]}, {"goal": [0.0, -2.0]}),
    "humanoid_dir": ({"angle_rad": 0.0}, {"angle_rad": math.pi}),
}


@pytest.mark.parametrize("name", REWARD_FAMILIES)
def test_reward_task_changes_the_reward_not_the_dynamics(name: str) -> None:
    fam = family(name)
    env = fam.make_env()
    actions = actions_for(env, 10)
    runs = []
    for task in TASK_PAIRS[name]:
        env.set_task(task)
        runs.append(rollout(env, 11, actions))
    (obs_a, rew_a, term_a), (obs_b, rew_b, term_b) = runs
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(term_a, term_b)
    assert np.all(np.abs(rew_a - rew_b) > 1e-6)


def scale_task(fam: TaskFamily, field: str, exponent: float) -> dict[str, Any]:
    """A task that scales only ``field``, every element by ``base**exponent``."""
    return {"scale_exponents": {field: [exponent] * fam.sizes[field]}}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_params_task_writes_pristine_times_factors(name: str) -> None:
    fam = family(name)
    env = fam.make_env()
    task = a_task(fam)
    env.set_task(task)
    for field, base in SCALE_BASES.items():
        exponents = np.array(task["scale_exponents"][field])
        pristine = getattr(fam.env_class().model, field)
        expected = pristine * base ** exponents.reshape(pristine.shape)
        np.testing.assert_array_equal(getattr(env.base.model, field), expected)
    doubled = math.log(2.0) / math.log(1.5)
    env.set_task(scale_task(fam, "body_mass", doubled))
    np.testing.assert_allclose(env.base.model.body_mass, 2.0 * fam.env_class().model.body_mass, rtol=1e-12)


@pytest.mark.parametrize("field", list(SCALE_BASES))
@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_each_scaled_array_changes_the_next_states(name: str, field: str) -> None:
    fam = family(name)
    env = fam.make_env()
    actions = actions_for(env, 12, scale=1.0)
    env.set_task(scale_task(fam, field, 0.0))
    reference, reference_rewards, _ = rollout(env, 5, actions)
    env.set_task(scale_task(fam, field, 2.0))
    scaled, scaled_rewards, _ = rollout(env, 5, actions)
    np.testing.assert_array_equal(scaled[0], reference[0])  # same start state
    assert not np.allclose(scaled[-1], reference[-1], atol=1e-6), f"{field} left the dynamics unchanged"
    assert not np.allclose(scaled_rewards, reference_rewards)


@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_params_task_rejects_wrong_sizes_and_unknown_arrays(name: str) -> None:
    fam = family(name)
    env = fam.make_env()
    with pytest.raises(ValueError, match="body_mass needs"):
        env.set_task({"scale_exponents": {"body_mass": [0.0]}})
    with pytest.raises(ValueError, match="unknown model arrays"):
        env.set_task({"scale_exponents": {"body_masses": [0.0]}})


def test_reset_before_set_task_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="set_task"):
        family("halfcheetah_vel").make_env().reset(seed=0)


# --- determinism and leakage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_same_task_same_trajectory_under_the_same_reset_seed(name: str) -> None:
    fam = family(name)
    task = Task(name, "test/0000", a_task(fam, seed=1))
    first, second = fam.make_env(), fam.make_env()
    for env in (first, second):
        fam.set_task(env, task)
    actions = actions_for(first, 15)
    reference = rollout(first, 7, actions)
    for again in (rollout(second, 7, actions), rollout(first, 7, actions)):
        for got, want in zip(again, reference, strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(rollout(first, 8, actions)[0], reference[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_set_task_after_another_task_equals_a_fresh_env(name: str) -> None:
    fam = family(name)
    previous, task = a_task(fam, seed=2), a_task(fam, seed=3)
    if name == "halfcheetah_dir":
        previous, task = {"direction": 1}, {"direction": -1}
    reused = fam.make_env()
    reused.set_task(previous)
    rollout(reused, 1, actions_for(reused, 10, seed=1, scale=1.0))
    reused.set_task(task)
    fresh = fam.make_env()
    fresh.set_task(task)
    actions = actions_for(fresh, 15, seed=2)
    for got, want in zip(rollout(reused, 9, actions), rollout(fresh, 9, actions), strict=True):
        np.testing.assert_array_equal(got, want)
    for field in fam.model_fields:  # type: ignore[attr-defined]
        np.testing.assert_array_equal(getattr(reused.base.model, field), getattr(fresh.base.model, field))


@pytest.mark.parametrize("name", PARAMS_FAMILIES)
def test_arrays_a_task_leaves_out_return_to_the_v5_values(name: str) -> None:
    fam = family(name)
    env = fam.make_env()
    env.set_task(a_task(fam))  # scales all four arrays
    env.set_task(scale_task(fam, "dof_damping", 1.0))
    pristine = fam.env_class().model
    for field in ("body_mass", "body_inertia", "geom_friction"):
        np.testing.assert_array_equal(getattr(env.base.model, field), getattr(pristine, field))


# --- splits ----------------------------------------------------------------------------------------------------


def split_of(fam: TaskFamily, sizes: dict[str, int], root: int = 0) -> dict[str, list[Task]]:
    return make_split(fam, fam.name, sizes, lambda split: seeding.generator(root, "tasks", fam.name, split))


@pytest.mark.parametrize("name", FAMILIES)
def test_splits_are_deterministic_and_ood_lies_outside_training(name: str) -> None:
    fam = family(name, **WITH_OOD[name])
    sizes = {"train": 40, "test": 20, "ood": 20 if fam.has_ood else 0}
    split = split_of(fam, sizes)
    assert split == split_of(fam, sizes)
    assert split["train"] != split_of(fam, sizes, root=1)["train"]
    assert all(fam.in_training_region(t.params) for t in split["train"] + split["test"])
    assert all(not fam.in_training_region(t.params) for t in split["ood"])
    if fam.disjoint_test:
        assert not splits.shares_train_tasks(split)
        assert len({str(t.params) for t in split["train"]}) == len(split["train"])
    else:
        assert splits.shares_train_tasks(split)  # two tasks: make_split accepts the coincidence
        assert len({str(t.params) for t in split["train"] + split["test"]}) == 2


def test_split_values_fill_their_declared_ranges() -> None:
    vel = split_of(family("halfcheetah_vel", **WITH_OOD["halfcheetah_vel"]), {"train": 200, "test": 1, "ood": 200})
    train_v = np.array([t.params["velocity"] for t in vel["train"]])
    ood_v = np.array([t.params["velocity"] for t in vel["ood"]])
    assert 0.0 <= train_v.min() < 0.2 and 2.8 < train_v.max() <= 3.0
    assert 3.0 <= ood_v.min() < 3.1 and 3.9 < ood_v.max() <= 4.0
    garage = split_of(family("halfcheetah_vel", convention="garage"), {"train": 200, "test": 1})
    assert 1.8 < max(t.params["velocity"] for t in garage["train"]) <= 2.0

    goals = split_of(family("ant_goal", **WITH_OOD["ant_goal"]), {"train": 400, "test": 1, "ood": 200})
    radii = np.array([math.hypot(*t.params["goal"]) for t in goals["train"]])
    assert radii.max() <= 2.5 and np.mean(radii < 2.5 / math.sqrt(2)) == pytest.approx(0.5, abs=0.1)  # uniform area
    assert all(2.5 <= math.hypot(*t.params["goal"]) <= 3.5 for t in goals["ood"])

    walker = split_of(family("walker_params", **WITH_OOD["walker_params"]), {"train": 20, "test": 1, "ood": 20})
    train_e = np.concatenate([np.ravel(v) for t in walker["train"] for v in t.params["scale_exponents"].values()])
    ood_e = np.concatenate([np.ravel(v) for t in walker["ood"] for v in t.params["scale_exponents"].values()])
    assert np.abs(train_e).max() <= 3.0 and np.abs(train_e).max() > 2.9 and np.abs(train_e).min() < 0.1
    assert np.abs(ood_e).min() >= 3.0 and np.abs(ood_e).max() <= 4.0 and (ood_e < 0).any() and (ood_e > 0).any()
    assert len(walker["train"][0].params["scale_exponents"]["geom_friction"]) == 24


@pytest.mark.parametrize(("convention", "angles"), [("forward_backward", {0.0, math.pi}),
                                                    ("two_angles", {-1.0, 1.0})])
def test_ant_dir_two_task_conventions(convention: str, angles: set[float]) -> None:
    fam = family("ant_dir", convention=convention)
    assert not fam.disjoint_test and not fam.has_ood
    split = split_of(fam, {"train": 20, "test": 10})
    assert {t.params["angle_rad"] for t in split["train"] + split["test"]} == angles
    assert splits.shares_train_tasks(split)
    assert not fam.in_training_region({"angle_rad": 0.5})


def test_uniform_angle_ood_region_wraps_around_zero() -> None:
    fam = family("humanoid_dir", angle_range_deg=(30.0, 330.0), ood_angle_range_deg=(330.0, 360.0))
    assert fam.in_training_region({"angle_rad": math.radians(100.0)})
    assert not fam.in_training_region({"angle_rad": math.radians(-10.0)})  # ≡ 350°
    assert not fam.in_training_region({"angle_rad": math.radians(15.0)})
    assert family("humanoid_dir", angle_range_deg=(90.0, 360.0)).in_training_region({"angle_rad": 0.0})  # 0° ≡ 360°


@pytest.mark.parametrize("name", ["halfcheetah_vel", "halfcheetah_dir", "ant_dir", "ant_goal", "walker_params"])
def test_ood_split_without_a_region_is_refused(name: str) -> None:
    with pytest.raises(SplitError, match="define no OOD region"):
        split_of(family(name), {"train": 2, "test": 2, "ood": 2})


@pytest.mark.parametrize(("name", "params", "key"), [
    ("halfcheetah_vel", {"ood_velocity_range": (2.5, 4.0)}, "ood_velocity_range"),
    ("halfcheetah_vel", {"convention": "garage", "ood_velocity_range": (1.0, 1.0)}, "ood_velocity_range"),
    ("halfcheetah_vel", {"velocity_range": (2.0, 1.0)}, "velocity_range"),
    ("ant_dir", {"angle_range_deg": (0.0, 180.0)}, "angle_range_deg"),  # two_angles by default
    ("ant_dir", {"convention": "uniform_angle", "ood_angle_range_deg": (0.0, 10.0)}, "ood_angle_range_deg"),
    ("humanoid_dir", {"angle_range_deg": (0.0, 400.0)}, "angle_range_deg"),
    ("ant_goal", {"radius": 2.5, "ood_radius_range": (2.0, 3.5)}, "ood_radius_range"),
    ("walker_params", {"ood_exponent_range": (2.0, 4.0)}, "ood_exponent_range"),
    ("hopper_params", {"randomize": ["body_mass", "body_mass"]}, "randomize"),
    ("hopper_params", {"episode_step": 100}, "episode_step"),
])
def test_invalid_params_name_their_key(name: str, params: dict[str, Any], key: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=key):
        family(name, **params)


# --- through the harness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_family_contract_and_description(name: str) -> None:
    fam = family(name)
    assert (fam.max_episode_steps, fam.default_episodes_per_trial) == (200, 2)
    env = fam.make_env()
    assert env.unwrapped is env  # no wrapper between the sampler and the family's env
    assert (env.observation_space.shape, env.action_space.shape) == tuple((d,) for d in OBS_ACT_DIMS[name])
    assert fam.version == f"gymnasium-v5/obs{OBS_ACT_DIMS[name][0]}"
    info = fam.describe()
    assert (info["observation_dim"], info["action_dim"]) == OBS_ACT_DIMS[name]
    assert info["train_region"] and info["ood_region"] and info["environment"].endswith("-v5")
    two_tasks = name in ("halfcheetah_dir", "ant_dir")  # ant_dir's default convention is two_angles
    assert info["distinct_tasks"] == (2 if two_tasks else "infinite (continuous parameters)")


class RandomPolicy:
    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int) -> None:
        self.low, self.high, self.rng = low, high, np.random.default_rng(seed)

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, (len(obs), len(self.low))).astype(np.float32)


@pytest.mark.parametrize("name", ["halfcheetah_vel", "ant_goal", "hopper_params"])
def test_sampler_collects_trials_with_the_family_horizon(name: str) -> None:
    fam = family(name, episode_steps=8)
    split = split_of(fam, {"train": 3, "test": 1})
    sampler = Sampler(fam, seeding.generator(0, "sampler"))
    space = sampler.action_space
    batch = sampler.collect(RandomPolicy(space.low, space.high, 0), split["train"], episodes_per_trial=2)
    assert batch.obs.shape == (3, 16, OBS_ACT_DIMS[name][0])
    assert np.all(batch.episode_lengths <= 8) and batch.env_steps == batch.episode_lengths.sum()
    if name == "halfcheetah_vel":  # never terminates: both episodes end at the family's horizon
        np.testing.assert_array_equal(batch.episode_lengths, 8)
    np.testing.assert_allclose(batch.episode_returns.sum(axis=1), (batch.rewards * batch.valid).sum(axis=1), rtol=1e-5)


def locomotion_suite(families: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "locomotion-test", "seeds": [0], "families": families,
        "algorithms": [{"name": "rl2"}], "budget": {"env_steps": 100_000},
        "evaluation": {"every_env_steps": 50_000, "train_tasks": 2},
    }


def test_suite_records_coinciding_tests_and_hashes_the_convention() -> None:
    entries = [
        {"name": "halfcheetah_dir", "split": {"train": 20, "test": 4}},
        {"name": "ant_dir", "params": {"convention": "two_angles"}, "split": {"train": 20, "test": 4}},
        {"name": "halfcheetah_vel", "params": {"ood_velocity_range": [3, 4]}, "split": {"train": 20, "test": 4,
                                                                                        "ood": 4}},
    ]
    suite = parse_suite(locomotion_suite(entries))
    check_splits(suite)  # the two-task families pass: they declare that they cannot be disjoint
    payload = splits.splits_payload(suite, splits.build_splits(suite))
    assert payload["families"]["halfcheetah_dir"]["test_coincides_with_train"] is True
    assert payload["families"]["halfcheetah_vel"]["test_coincides_with_train"] is False
    assert payload["families"]["ant_dir"]["version"] == "gymnasium-v5/obs27"

    entries[1]["params"] = {"convention": "forward_backward"}
    other = parse_suite(locomotion_suite(entries))
    assert splits.splits_payload(other, splits.build_splits(other))["hash"] != payload["hash"]
