"""The sampler, driven by a recording policy: what the policy sees, and what the batch holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest

from algorithms.base import Task, TrialBatch
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import TaskFamily, family_class
from harness.tasks.base import FamilyParams

ARMS, PULLS, EPISODES = 3, 4, 3
STEPS = PULLS * EPISODES


class RecordingPolicy:
    """Records every ``reset``/``act`` argument (copied) and returns ``action_fn(call_index, num_envs)``."""

    def __init__(self, action_fn: Callable[[int, int], np.ndarray]) -> None:
        self.action_fn = action_fn
        self.resets: list[np.ndarray] = []
        self.calls: list[dict[str, Any]] = []

    def reset(self, new_trial: np.ndarray) -> None:
        self.resets.append(np.array(new_trial, copy=True))

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        self.calls.append({
            "obs": np.array(obs, copy=True),
            "prev_action": np.array(prev_action, copy=True),
            "prev_reward": np.array(prev_reward, copy=True),
            "episode_start": np.array(episode_start, copy=True),
            "deterministic": deterministic,
        })
        return self.action_fn(len(self.calls) - 1, len(obs))

    def seen(self, key: str) -> np.ndarray:
        """``[N, calls, ...]``: one recorded argument over all calls."""
        return np.stack([c[key] for c in self.calls], axis=1)


def cycling_arms(t: int, num: int) -> np.ndarray:
    return (t + np.arange(num)) % ARMS  # row i pulls arm (t + i) mod 3


def bandit() -> TaskFamily:
    cls = family_class("bandit")
    return cls(cls.Params(arms=ARMS, pulls=PULLS))


def bandit_task(task_id: str, means: list[float]) -> Task:
    return Task("bandit", task_id, {"means": means})


# 0/1 means make every reward known in advance: reward = means[row][action].
DETERMINISTIC_MEANS = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]


@pytest.fixture
def bandit_run() -> tuple[Sampler, RecordingPolicy, TrialBatch]:
    sampler = Sampler(bandit(), seeding.generator(0, "sampler"))
    policy = RecordingPolicy(cycling_arms)
    tasks = [bandit_task(f"t{i}", m) for i, m in enumerate(DETERMINISTIC_MEANS)]
    return sampler, policy, sampler.collect(policy, tasks, EPISODES)


def test_bandit_batch_contents(bandit_run: tuple[Sampler, RecordingPolicy, TrialBatch]) -> None:
    sampler, _, batch = bandit_run
    n = len(DETERMINISTIC_MEANS)
    t = np.arange(STEPS)
    assert batch.obs.shape == (n, STEPS, 1)
    for array in (batch.actions, batch.rewards, batch.episode_start, batch.episode_end, batch.terminated,
                  batch.episode_index, batch.valid, batch.success):
        assert array.shape == (n, STEPS)
    assert batch.valid.all()  # fixed horizon: no padding
    assert batch.task_ids == ["t0", "t1", "t2"]

    expected_actions = np.stack([cycling_arms(step, n) for step in t], axis=1)
    np.testing.assert_array_equal(batch.actions, expected_actions)
    expected_rewards = np.take_along_axis(np.array(DETERMINISTIC_MEANS), expected_actions, axis=1)
    np.testing.assert_array_equal(batch.rewards, expected_rewards)

    np.testing.assert_array_equal(batch.episode_index, np.broadcast_to(t // PULLS, (n, STEPS)))
    np.testing.assert_array_equal(batch.episode_start, np.broadcast_to(t % PULLS == 0, (n, STEPS)))
    np.testing.assert_array_equal(batch.episode_end, np.broadcast_to(t % PULLS == PULLS - 1, (n, STEPS)))
    assert not batch.terminated.any()  # bandit episodes end by the time limit only
    np.testing.assert_array_equal(batch.episode_returns, expected_rewards.reshape(n, EPISODES, PULLS).sum(-1))
    np.testing.assert_array_equal(batch.episode_lengths, np.full((n, EPISODES), PULLS))
    assert not batch.episode_success.any()

    assert batch.env_steps == n * STEPS
    assert sampler.env_steps == n * STEPS


def test_policy_sees_trial_and_episode_boundaries(bandit_run: tuple[Sampler, RecordingPolicy, TrialBatch]) -> None:
    _, policy, batch = bandit_run
    n = len(DETERMINISTIC_MEANS)
    assert len(policy.resets) == 1  # once per trial, before the first act
    np.testing.assert_array_equal(policy.resets[0], np.ones(n, bool))
    assert len(policy.calls) == STEPS
    assert {c["deterministic"] for c in policy.calls} == {False}

    # episode_start is True exactly at the first step of each episode
    starts = policy.seen("episode_start")
    np.testing.assert_array_equal(starts, np.broadcast_to(np.arange(STEPS) % PULLS == 0, (n, STEPS)))

    # prev_action / prev_reward: zeros at the trial start, then the previous step's, across episodes too
    prev_action, prev_reward = policy.seen("prev_action"), policy.seen("prev_reward")
    np.testing.assert_array_equal(prev_action[:, 0], 0)
    np.testing.assert_array_equal(prev_reward[:, 0], 0)
    np.testing.assert_array_equal(prev_action[:, 1:], batch.actions[:, :-1])
    np.testing.assert_array_equal(prev_reward[:, 1:], batch.rewards[:, :-1])
    boundary = PULLS  # first step of episode 1: it sees the last action and reward of episode 0
    np.testing.assert_array_equal(prev_action[:, boundary], batch.actions[:, boundary - 1])
    assert prev_reward[:, boundary].any()  # a non-trivial check: some of those rewards are 1

    # TrialBatch.previous rebuilds exactly what the policy saw
    np.testing.assert_array_equal(batch.previous(batch.actions), prev_action)
    np.testing.assert_array_equal(batch.previous(batch.rewards), prev_reward)
    np.testing.assert_array_equal(batch.obs, policy.seen("obs"))


def test_previous_shifts_along_time_with_zeros_at_trial_start() -> None:
    batch = _empty_batch(2, 3)
    np.testing.assert_array_equal(batch.previous(np.array([[1, 2, 3], [4, 5, 6]])), [[0, 1, 2], [0, 4, 5]])
    actions = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_array_equal(batch.previous(actions)[:, 0], 0)
    np.testing.assert_array_equal(batch.previous(actions)[:, 1:], actions[:, :-1])


def _empty_batch(n: int, t: int) -> TrialBatch:
    zeros = np.zeros((n, t))
    return TrialBatch(zeros, zeros, zeros, zeros, zeros, zeros, zeros, np.ones((n, t), bool), zeros,
                      np.zeros((n, 1)), np.zeros((n, 1)), np.zeros((n, 1)), [str(i) for i in range(n)])


def test_same_sampler_seed_same_batch() -> None:
    tasks = [bandit_task(f"t{i}", [0.5, 0.5, 0.5]) for i in range(8)]

    def run(seed: int) -> list[TrialBatch]:
        sampler = Sampler(bandit(), seeding.generator(seed, "sampler"))
        return [sampler.collect(RecordingPolicy(cycling_arms), tasks, EPISODES) for _ in range(2)]

    first, second = run(0)
    again = run(0)
    for a, b in zip((first, second), again, strict=True):
        for field in ("obs", "actions", "rewards", "episode_returns", "episode_lengths", "valid"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(run(1)[0].rewards, first.rewards)  # the seed matters
    assert not np.array_equal(second.rewards, first.rewards)  # each trial draws fresh reset seeds
    episodes = first.rewards.reshape(len(tasks), EPISODES, PULLS)
    assert not np.array_equal(episodes[:, 0], episodes[:, 1])  # no re-seeding between a trial's episodes


def test_each_task_gets_its_own_rewards_and_envs_are_retargeted() -> None:
    sampler = Sampler(bandit(), seeding.generator(0, "sampler"))
    arm_zero = RecordingPolicy(lambda t, n: np.zeros(n, np.int64))
    good, bad = bandit_task("good", [1.0, 0.0, 0.0]), bandit_task("bad", [0.0, 1.0, 1.0])
    batch = sampler.collect(arm_zero, [good, bad], 1)
    np.testing.assert_array_equal(batch.rewards, [[1] * PULLS, [0] * PULLS])
    swapped = sampler.collect(arm_zero, [bad, good], 1)  # the same two envs, tasks swapped
    np.testing.assert_array_equal(swapped.rewards, [[0] * PULLS, [1] * PULLS])
    fewer = sampler.collect(arm_zero, [bad], 2)
    np.testing.assert_array_equal(fewer.rewards, [[0] * 2 * PULLS])
    assert sampler.env_steps == 2 * PULLS + 2 * PULLS + 2 * PULLS


def test_point_nav_obs_rewards_and_actions() -> None:
    cls = family_class("point_nav")
    point_nav = cls(cls.Params(reward="dense", step_size=0.1, episode_steps=3))
    goals = [[1.0, 0.0], [0.0, 1.0]]
    raw = np.array([[2.0, 0.0], [0.0, -0.5]], np.float32)  # row 0 is clipped to [1, 0]
    policy = RecordingPolicy(lambda t, n: raw.copy())
    sampler = Sampler(point_nav, seeding.generator(0, "sampler"))
    tasks = [Task("point_nav", f"t{i}", {"goal": g}) for i, g in enumerate(goals)]
    batch = sampler.collect(policy, tasks, 2, deterministic=True)

    assert batch.obs.shape == (2, 6, 2) and batch.actions.shape == (2, 6, 2)
    assert batch.valid.all()
    assert {c["deterministic"] for c in policy.calls} == {True}
    np.testing.assert_array_equal(batch.actions, np.broadcast_to(raw[:, None], (2, 6, 2)))
    # positions before each action: 0, 1, 2 moves into the episode, then the origin again
    moves = np.array([[0.1, 0.0], [0.0, -0.05]])  # step_size × clip(action)
    k = np.array([0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(batch.obs, k[None, :, None] * moves[:, None], atol=1e-6)
    after = (k + 1)[None, :, None] * moves[:, None]
    expected = -np.linalg.norm(after - np.array(goals)[:, None], axis=-1)
    np.testing.assert_allclose(batch.rewards, expected, atol=1e-6)
    # the same moves toward the other goal would earn different rewards: each row used its own task
    assert not np.allclose(expected[0], -np.linalg.norm(after[0] - goals[1], axis=-1))
    np.testing.assert_allclose(batch.episode_returns, expected.reshape(2, 2, 3).sum(-1), atol=1e-5)
    np.testing.assert_array_equal(policy.seen("prev_action")[:, 3], raw)  # carried over the boundary
    np.testing.assert_allclose(policy.seen("prev_reward")[:, 3], expected[:, 2], atol=1e-6)


# --- early termination ------------------------------------------------------------------------------------


class CountdownParams(FamilyParams):
    episode_steps: int = 4


class CountdownEnv(gym.Env):
    """Terminates after ``length`` steps; reward and observation are the step count within the episode."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.length, self.t, self.steps_taken = 1, 0, 0

    def set_task(self, params: dict[str, Any]) -> None:
        self.length = params["length"]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.steps_taken += 1
        return np.array([self.t], np.float32), float(self.t), self.t >= self.length, False, {}


class CountdownFamily(TaskFamily):
    """Task = episode length; episodes shorter than ``episode_steps`` end by termination."""

    name: ClassVar[str] = "countdown"
    Params = CountdownParams

    def __init__(self, params: CountdownParams) -> None:
        super().__init__(params)
        self.envs: list[CountdownEnv] = []  # in creation order = row order in the sampler

    @property
    def max_episode_steps(self) -> int:
        return self.params.episode_steps  # type: ignore[attr-defined]

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        return {"length": int(rng.integers(1, 6))}

    def make_env(self) -> gym.Env:
        self.envs.append(CountdownEnv())
        return self.envs[-1]


def _countdown_run(lengths: list[int]) -> tuple[CountdownFamily, Sampler, RecordingPolicy, TrialBatch]:
    family = CountdownFamily(CountdownParams(episode_steps=4))
    sampler = Sampler(family, seeding.generator(0, "sampler"))
    policy = RecordingPolicy(lambda t, n: np.ones(n, np.int64))
    tasks = [Task("countdown", f"t{i}", {"length": n}) for i, n in enumerate(lengths)]
    return family, sampler, policy, sampler.collect(policy, tasks, 2)


def _at(*steps: int) -> list[bool]:
    return [t in steps for t in range(8)]


def test_early_termination_pads_with_invalid_steps() -> None:
    # lengths 2 and 3 terminate inside the horizon (4); length 10 is cut by the time limit
    family, sampler, policy, batch = _countdown_run([2, 3, 10])
    assert batch.rewards.shape == (3, 8)  # 2 episodes × 4 steps
    np.testing.assert_array_equal(batch.valid, [_at(0, 1, 2, 3), _at(0, 1, 2, 3, 4, 5), [True] * 8])
    np.testing.assert_array_equal(batch.episode_start, [_at(0, 2), _at(0, 3), _at(0, 4)])
    np.testing.assert_array_equal(batch.episode_end, [_at(1, 3), _at(2, 5), _at(3, 7)])
    np.testing.assert_array_equal(batch.terminated, [_at(1, 3), _at(2, 5), _at()])
    np.testing.assert_array_equal(batch.episode_lengths, [[2, 2], [3, 3], [4, 4]])
    np.testing.assert_array_equal(batch.episode_returns, [[3, 3], [6, 6], [10, 10]])  # 1+2(+3(+4))

    valid_rewards = [batch.rewards[i][batch.valid[i]].tolist() for i in range(3)]
    assert valid_rewards == [[1, 2, 1, 2], [1, 2, 3, 1, 2, 3], [1, 2, 3, 4, 1, 2, 3, 4]]  # reset between
    valid_episodes = [batch.episode_index[i][batch.valid[i]].tolist() for i in range(3)]
    assert valid_episodes == [[0, 0, 1, 1], [0, 0, 0, 1, 1, 1], [0] * 4 + [1] * 4]
    np.testing.assert_array_equal(batch.obs[0, :4, 0], [0, 1, 0, 1])  # fresh obs after the reset
    for i in range(3):  # returns and lengths agree with the valid steps
        for e in range(2):
            in_episode = batch.valid[i] & (batch.episode_index[i] == e)
            assert batch.episode_returns[i, e] == batch.rewards[i][in_episode].sum()
            assert batch.episode_lengths[i, e] == in_episode.sum()

    # no env is stepped after its trial ended, and only real steps are counted
    assert [env.steps_taken for env in family.envs] == [4, 6, 8]
    assert sampler.env_steps == batch.env_steps == 18
    # the policy's view across the early episode boundary of row 0 (step 2)
    assert policy.seen("episode_start")[0, 2]
    assert policy.seen("prev_reward")[0, 2] == 2.0


def test_sampling_stops_when_every_trial_has_ended() -> None:
    family, sampler, policy, batch = _countdown_run([1, 2])
    assert len(policy.calls) == 4  # the longer trial is 2 × 2 steps; the buffer has 8
    np.testing.assert_array_equal(batch.valid, [_at(0, 1), _at(0, 1, 2, 3)])
    assert [env.steps_taken for env in family.envs] == [2, 4]
    assert sampler.env_steps == 6
