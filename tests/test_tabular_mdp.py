"""The tabular_mdp family (RL² paper §4.2) and its references: value iteration by hand, sampling against the
task tables, splits, determinism, and random < PSRL < oracle through the harness's own evaluator."""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from pydantic import ValidationError

from algorithms.base import Task
from harness import cli, seeding
from harness.references import references_for, selected_references
from harness.references.tabular_mdp import finite_horizon_q_values
from harness.run.evaluate import evaluate
from harness.run.rollout import Sampler
from harness.tasks import SplitError, TaskFamily, family_class, make_split
from harness.tasks.tabular_mdp import TabularMDPParams

TASKS = 200


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _family(**params: Any) -> TaskFamily:
    cls = family_class("tabular_mdp")
    return cls(cls.Params(**params))


def _tasks(family: TaskFamily, count: int, seed: int, split: str = "test") -> list[Task]:
    rng = _rng(seed)
    return [Task(family.name, f"{split}/{i:04d}", family.sample_params(split, rng)) for i in range(count)]


def _env(family: TaskFamily, task: dict[str, Any]) -> gym.Env:
    env = family.make_env()
    env.unwrapped.set_task(task)
    return env


def _state(obs: np.ndarray) -> int:
    assert obs.dtype == np.float32 and obs.sum() == 1.0 and set(np.unique(obs)) <= {0.0, 1.0}  # one-hot
    return int(np.argmax(obs))


# A 2-state, 2-action MDP solved by hand for horizon 2 (rows: state, columns: action).
# In s0, a0 stays (reward 1) and a1 moves to s1 (reward 0); in s1, a0 goes to either state (reward 3) and a1
# stays (reward 2.5).
TINY_TRANSITIONS = [[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, 1.0]]]
TINY_REWARDS = [[1.0, 0.0], [3.0, 2.5]]
# Last step: Q_1 = R, so V_1 = (1, 3). First step: Q_0(s0) = (1 + V_1(s0), 0 + V_1(s1)) = (2, 3);
# Q_0(s1) = (3 + (1 + 3) / 2, 2.5 + 3) = (5, 5.5). From s0 the optimum moves first (3), greedy earns 2.
TINY_Q = [[[2.0, 3.0], [5.0, 5.5]], [[1.0, 0.0], [3.0, 2.5]]]


# --- value iteration ---------------------------------------------------------------------------------


def test_value_iteration_by_hand() -> None:
    q = finite_horizon_q_values(np.array(TINY_TRANSITIONS), np.array(TINY_REWARDS), 2)
    np.testing.assert_allclose(q, TINY_Q, atol=1e-12)
    # Batched: one row per MDP, each solved on its own.
    swapped = np.array(TINY_REWARDS)[:, ::-1]
    batched = finite_horizon_q_values(np.stack([TINY_TRANSITIONS] * 2), np.stack([TINY_REWARDS, swapped]), 2)
    np.testing.assert_allclose(batched[0], TINY_Q, atol=1e-12)
    np.testing.assert_allclose(batched[1], finite_horizon_q_values(np.array(TINY_TRANSITIONS), swapped, 2))
    # Horizon 1 is the immediate reward.
    np.testing.assert_allclose(finite_horizon_q_values(np.array(TINY_TRANSITIONS), np.array(TINY_REWARDS), 1),
                               [TINY_REWARDS])
    with pytest.raises(ValueError, match="do not fit"):
        finite_horizon_q_values(np.ones((2, 2, 3)), np.zeros((2, 2)), 2)


def test_oracle_follows_the_hand_computed_plan() -> None:
    family = _family(states=2, actions=2, episode_steps=2, reward_noise_std=1e-9)
    tasks = [Task("tabular_mdp", f"test/{i}", {"transitions": TINY_TRANSITIONS, "reward_means": TINY_REWARDS})
             for i in range(8)]
    batch = Sampler(family, _rng(0)).collect(references_for(family)["oracle"].policy(tasks, 3, _rng(1)), tasks, 3)
    # Every episode starts in s0: move to s1 (a1, reward 0), then take a0 there (reward 3).
    np.testing.assert_array_equal(batch.actions, np.tile([1, 0], (8, 3)))
    np.testing.assert_allclose(batch.episode_returns, 3.0, atol=1e-6)


# --- the environment ----------------------------------------------------------------------------------


def test_rewards_and_transitions_match_the_task_tables() -> None:
    family = _family(states=3, actions=2)
    task = family.sample_params("train", _rng(0))
    transitions, reward_means = np.array(task["transitions"]), np.array(task["reward_means"])
    env = _env(family, task)
    obs, _ = env.reset(seed=5)
    assert _state(obs) == 0  # every episode starts in the first state
    actions = _rng(1).integers(0, 2, 30_000)
    rewards: dict[tuple[int, int], list[float]] = {}
    moves = np.zeros((3, 2, 3))
    state = 0
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        assert (terminated, truncated) == (False, False)  # the sampler applies the time limit
        rewards.setdefault((state, int(action)), []).append(reward)
        next_state = _state(obs)
        moves[state, action, next_state] += 1
        state = next_state
    for (s, a), seen in rewards.items():
        if len(seen) < 1000:
            continue  # a rarely visited pair: too few samples to test
        # Rewards ~ Normal(mu, 1): the mean within 4 standard errors, the std within 0.1.
        assert np.mean(seen) == pytest.approx(reward_means[s, a], abs=4 / math.sqrt(len(seen))), (s, a)
        assert np.std(seen) == pytest.approx(1.0, abs=0.1), (s, a)
        # Next-state frequencies: std of a frequency <= 0.5 / sqrt(1000) ≈ 0.016.
        np.testing.assert_allclose(moves[s, a] / moves[s, a].sum(), transitions[s, a], atol=0.06)
    assert sum(len(seen) >= 1000 for seen in rewards.values()) >= 4


def test_same_task_and_seed_give_the_same_trajectory() -> None:
    family = _family()
    task = family.sample_params("test", _rng(3))
    actions = _rng(4).integers(0, 5, 60)

    def trajectory(env: gym.Env, seed: int) -> tuple[list[int], list[float]]:
        obs, _ = env.reset(seed=seed)
        states, rewards = [_state(obs)], []
        for step, action in enumerate(actions):
            if step % 10 == 0 and step:
                obs, _ = env.reset()  # a new episode of the trial, without a seed (as the sampler does)
                states.append(_state(obs))
            obs, reward, *_ = env.step(action)
            states.append(_state(obs))
            rewards.append(reward)
        return states, rewards

    first, second = _env(family, task), _env(family, task)
    reference = trajectory(first, 7)
    assert trajectory(second, 7) == reference  # another env instance
    assert trajectory(first, 7) == reference  # the same env reused: nothing carried over
    assert trajectory(first, 8) != reference
    assert len(set(reference[0])) > 1  # the trajectory visits several states


def test_set_task_takes_effect_at_the_next_reset() -> None:
    family = _family(states=2, actions=2, reward_noise_std=1e-9)
    uniform = [[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]
    env = _env(family, {"transitions": uniform, "reward_means": [[0.0, 0.0], [0.0, 0.0]]})
    env.reset(seed=0)
    env.unwrapped.set_task({"transitions": uniform, "reward_means": [[5.0, 5.0], [5.0, 5.0]]})
    assert env.step(0)[1] == pytest.approx(0.0, abs=1e-6)  # the old task until the reset
    env.reset()
    assert env.step(0)[1] == pytest.approx(5.0, abs=1e-6)


def test_set_task_and_step_check_their_input() -> None:
    env = _family(states=2, actions=2).make_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match="do not fit 2 states and 2 actions"):
        env.unwrapped.set_task({"transitions": [[[1.0]]], "reward_means": [[0.0]]})
    with pytest.raises(ValueError, match="probability vector"):
        env.unwrapped.set_task({"transitions": [[[0.7, 0.7]] * 2] * 2, "reward_means": [[0.0, 0.0]] * 2})


# --- parameters and splits ------------------------------------------------------------------------------


def test_params_default_to_the_rl2_paper_and_reject_bad_values() -> None:
    family = _family()
    assert (family.params.states, family.params.actions, family.max_episode_steps) == (10, 5, 10)
    assert family.default_episodes_per_trial == 10 and not family.has_ood
    cases = [
        ({"states": 1}, "states"),
        ({"actions": 0}, "actions"),
        ({"episode_steps": 0}, "episode_steps"),
        ({"reward_mean_std": 0.0}, "reward_mean_std"),
        ({"reward_noise_std": -1.0}, "reward_noise_std"),
        ({"dirichlet_concentration": 0.0}, "dirichlet_concentration"),
        ({"state": 10}, "Extra inputs are not permitted"),
        # The training band of the average mean reward is 4 / sqrt(50) ≈ 0.566 by default.
        ({"ood_reward_mean": 1.5}, "ood_reward_mean: 1.5 lies within 0.566 of reward_mean 1.0"),
    ]
    for params, message in cases:
        with pytest.raises(ValidationError, match=message):
            TabularMDPParams(**params)
    assert TabularMDPParams(ood_reward_mean=0.4).training_band == pytest.approx(4 / math.sqrt(50))


def test_splits_are_deterministic_json_able_and_disjoint() -> None:
    family = _family(states=4, actions=3)
    sizes = {"train": 50, "test": 20}

    def split(root_seed: int) -> dict[str, list[Task]]:
        return make_split(family, "tabular_mdp", sizes,
                          lambda name: seeding.generator(root_seed, "tasks", "tabular_mdp", name))

    global_state = np.random.get_state()[1].copy()  # type: ignore[index]  # noqa: NPY002
    first, again, other = split(0), split(0), split(1)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # type: ignore[index]  # noqa: NPY002
    assert first == again
    assert [t.params for t in first["test"]] != [t.params for t in other["test"]]
    train_keys = {json.dumps(t.params, sort_keys=True) for t in first["train"]}
    assert len(train_keys) == 50
    assert train_keys.isdisjoint(json.dumps(t.params, sort_keys=True) for t in first["test"])
    for task in first["train"] + first["test"]:
        assert json.loads(json.dumps(task.params)) == task.params  # plain lists of floats
        transitions, reward_means = np.array(task.params["transitions"]), np.array(task.params["reward_means"])
        assert transitions.shape == (4, 3, 4) and reward_means.shape == (4, 3)
        np.testing.assert_allclose(transitions.sum(axis=-1), 1.0)
    # The prior: mean rewards ~ Normal(1, 1) (mean and std over 70 tasks × 12 pairs) and flat Dirichlet rows.
    means = np.array([t.params["reward_means"] for t in first["train"] + first["test"]])
    assert means.mean() == pytest.approx(1.0, abs=0.15) and means.std() == pytest.approx(1.0, abs=0.1)
    probabilities = np.array([t.params["transitions"] for t in first["train"]])
    assert probabilities.mean() == pytest.approx(0.25) and probabilities.std() == pytest.approx(
        math.sqrt(3 / 80), abs=0.02)  # Dirichlet(1, 1, 1, 1) marginals: Beta(1, 3), variance 3 / 80
    with pytest.raises(SplitError, match="define no OOD region"):
        make_split(family, "tabular_mdp", {"train": 2, "ood": 2}, lambda name: _rng(0))


def test_ood_tasks_lie_outside_the_training_band() -> None:
    family = _family(ood_reward_mean=-1.0)
    split = make_split(family, "tabular_mdp", {"train": 100, "test": 20, "ood": 50},
                       lambda name: seeding.generator(0, "tasks", "tabular_mdp", name))
    band = family.params.training_band  # type: ignore[attr-defined]
    ood_means = np.array([np.mean(t.params["reward_means"]) for t in split["ood"]])
    assert (ood_means < 1.0 - band).all() and ood_means.mean() == pytest.approx(-1.0, abs=0.1)
    assert all(family.in_training_region(t.params) for t in split["train"] + split["test"])
    assert not any(family.in_training_region(t.params) for t in split["ood"])


def test_describe_and_the_tasks_command(capsys: pytest.CaptureFixture[str]) -> None:
    info = _family(ood_reward_mean=3.0).describe()
    assert info["family"] == "tabular_mdp" and info["default_episodes_per_trial"] == 10
    assert info["observation"] == "one-hot state, Box(0, 1, (10,), float32)" and info["initial_state"] == 0
    assert "Normal(3," in info["ood"] and "Dirichlet(1" in info["transitions"]
    assert cli.main(["tasks", "tabular_mdp"]) == 0
    out = capsys.readouterr().out
    assert "Duan et al. 2016" in out and "dirichlet_concentration" in out and "one-hot" in out
    assert cli.main(["tasks"]) == 0
    assert "tabular_mdp  Random tabular MDPs" in capsys.readouterr().out


# --- references through the sampler and the evaluator -------------------------------------------------


@pytest.fixture(scope="module")
def reference_returns() -> dict[str, np.ndarray]:
    """Returns ``[tasks, episodes]`` of each reference on 200 test tasks, one 10-episode trial each, through
    ``harness.run.evaluate`` with one evaluation sampler per split (the same environment seeds for every reference)."""
    family = _family()
    tasks = _tasks(family, TASKS, seed=10)
    returns = {}
    for name, reference in selected_references(family).items():
        rows = evaluate(lambda split: Sampler(family, seeding.generator(0, "eval", split)), {"test": tasks}, 10,
                        lambda _split, ts, ref=reference: ref.policy(ts, 10, _rng(11)), False, False)
        table = np.zeros((TASKS, 10))
        index = {task.task_id: i for i, task in enumerate(tasks)}
        for row in rows:
            if row["metric"] == "return":
                table[index[row["task_id"]], row["episode_index"]] = row["value"]
        returns[name] = table
    return returns


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def test_random_earns_the_prior_mean_reward(reference_returns: dict[str, np.ndarray]) -> None:
    # Actions independent of the task: every step's expected reward is E[mu] = 1, so 100 per trial.
    trial = reference_returns["random"].sum(axis=1)
    assert abs(trial.mean() - 100.0) <= 4 * _standard_error(trial)


def test_reference_ordering_and_psrl_learns_within_the_trial(reference_returns: dict[str, np.ndarray]) -> None:
    trial = {name: returns.sum(axis=1) for name, returns in reference_returns.items()}  # [tasks] each
    # Measured on these tasks: random ≈ 100, PSRL ≈ 134, oracle ≈ 218 per 10-episode trial.
    for low, high in (("random", "psrl"), ("psrl", "oracle")):
        gap = trial[high] - trial[low]
        assert gap.mean() > max(20.0, 4 * _standard_error(gap)), (low, high, gap.mean())
    assert (reference_returns["oracle"].mean(axis=0) > reference_returns["psrl"].mean(axis=0)).all()
    # PSRL's first episode follows a draw from the prior; by the last it has learnt much of the MDP.
    psrl = reference_returns["psrl"]
    improvement = psrl[:, -1] - psrl[:, 0]
    assert improvement.mean() > max(3.0, 4 * _standard_error(improvement)), improvement.mean()
    # The oracle has nothing to learn: its episodes are alike.
    oracle_change = reference_returns["oracle"][:, -1] - reference_returns["oracle"][:, 0]
    assert abs(oracle_change.mean()) <= 4 * _standard_error(oracle_change)


def test_oracle_earns_the_value_iteration_value(reference_returns: dict[str, np.ndarray]) -> None:
    family = _family()
    tasks = _tasks(family, TASKS, seed=10)
    transitions = np.array([t.params["transitions"] for t in tasks])
    reward_means = np.array([t.params["reward_means"] for t in tasks])
    value = finite_horizon_q_values(transitions, reward_means, 10)[:, 0, 0].max(axis=1)  # V_0(s0), [tasks]
    trial_error = reference_returns["oracle"].sum(axis=1) - 10 * value
    assert abs(trial_error.mean()) <= 4 * _standard_error(trial_error)


@pytest.mark.slow
def test_psrl_approaches_the_oracle_over_a_long_trial() -> None:
    family = _family()
    tasks = _tasks(family, TASKS, seed=12)
    late = {}
    for name in ("psrl", "oracle"):
        policy = references_for(family, 100)[name].policy(tasks, 100, _rng(13))
        late[name] = Sampler(family, _rng(14)).collect(policy, tasks, 100).episode_returns[:, -20:].mean()
    # Measured: PSRL ≈ 21.2 per episode over the last 20 of 100 episodes, the oracle ≈ 22.1.
    assert 0.9 * late["oracle"] < late["psrl"] < late["oracle"], late


def test_psrl_rebuilds_its_history_from_the_sampler_inputs() -> None:
    family = _family(states=2, actions=2, episode_steps=2)
    policy: Any = references_for(family)["psrl"].policy(_tasks(family, 1, seed=0), 2, _rng(0))
    one_hot = np.eye(2, dtype=np.float32)

    def act(state: int, prev_action: int, prev_reward: float, start: bool) -> None:
        action = policy.act(one_hot[[state]], np.array([prev_action]), np.array([prev_reward], np.float32),
                            np.array([start]), False)
        assert action.dtype == np.int64 and action.shape == (1,)

    policy.reset(np.ones(1, bool))
    act(0, 0, 0.0, True)  # trial start: the zero prev_action/prev_reward are no step
    assert policy.visits.sum() == 0 and policy.transition_counts.sum() == 0
    act(1, 1, 0.5, False)  # step (s0, a1) earned 0.5 and moved to s1
    act(0, 0, 2.0, True)  # step (s1, a0) earned 2.0; s0 is the next episode's start, not where it led
    np.testing.assert_array_equal(policy.visits[0], [[0, 1], [1, 0]])
    np.testing.assert_allclose(policy.reward_sums[0], [[0.0, 0.5], [2.0, 0.0]])
    np.testing.assert_array_equal(policy.transition_counts[0], [[[0, 0], [0, 1]], [[0, 0], [0, 0]]])
    policy.reset(np.ones(1, bool))  # a new trial forgets
    act(0, 1, 1.0, True)
    assert policy.visits.sum() == 0 and policy.transition_counts.sum() == 0
    act(1, 0, 0.0, False)  # the episode's second and last step
    with pytest.raises(ValueError, match="more than 2 steps"):
        act(1, 0, 0.0, False)  # a third step without episode_start


def test_references_are_deterministic_batched_and_use_their_rng() -> None:
    family = _family()
    assert set(selected_references(family)) == {"random", "psrl", "oracle"}
    for reference in selected_references(family).values():
        assert reference.description and "\n" not in reference.description
    tasks = _tasks(family, 32, seed=20)
    global_state = np.random.get_state()[1].copy()  # type: ignore[index]  # noqa: NPY002
    for name, reference in selected_references(family).items():
        runs = [Sampler(family, _rng(0)).collect(reference.policy(tasks, 3, _rng(seed)), tasks, 3)
                for seed in (1, 1, 2)]
        np.testing.assert_array_equal(runs[0].actions, runs[1].actions, err_msg=name)
        np.testing.assert_array_equal(runs[0].rewards, runs[1].rewards, err_msg=name)
        assert runs[0].actions.dtype == np.int64 and runs[0].actions.shape == (32, 30), name
        # Random and PSRL draw from their generator; the oracle needs none.
        assert np.array_equal(runs[0].actions, runs[2].actions) == (name == "oracle"), name
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # type: ignore[index]  # noqa: NPY002


def test_the_rl2_papers_mdp_baselines_are_offered_named_only_and_tuned_on_first_use(monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:  # fmt: skip
    """OPSRL, UCRL2, ε-greedy and greedy (``references/tabular_mdp_paper.py``) are offered for the family but run only
    when a suite names them; listing them tunes nothing, and the first policy made tunes once, on the training split
    given, for all four."""
    from harness import references as module

    monkeypatch.setattr(module, "_PAPER_MDP", {})
    calls: list[int] = []
    real = module._paper_mdp_references
    monkeypatch.setattr(module, "_paper_mdp_references",
                        lambda params, episodes, train: calls.append(len(train)) or real(params, episodes, train))
    family = _family()
    train = _tasks(family, 40, seed=30)
    offered = references_for(family, 3, train)
    assert list(offered) == ["random", "psrl", "oracle", "opsrl", "ucrl2", "epsilon_greedy", "greedy", "multitask"]
    assert list(selected_references(family, 3, ["greedy", "opsrl"], train)) == ["greedy", "opsrl"]
    assert calls == []  # nothing tuned by listing or selecting
    tasks = _tasks(family, 8, seed=31)
    for name in ("ucrl2", "epsilon_greedy", "greedy", "opsrl"):
        batch = Sampler(family, _rng(0)).collect(offered[name].policy(tasks, 3, _rng(1)), tasks, 3)
        assert batch.episode_returns.shape == (8, 3)
    assert calls == [40]  # tuned once, on the 40 training tasks, for all four
    with pytest.raises(KeyError, match=r"'bayes_optimal'.* not offered for tabular_mdp"):
        selected_references(family, 3, ["bayes_optimal"])
