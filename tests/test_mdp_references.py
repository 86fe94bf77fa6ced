"""The RL² paper's OPSRL, UCRL2, ε-greedy and greedy references (harness.references.tabular_mdp_paper): UCRL2's inner
maximisation and extended value iteration by hand, OPSRL against PSRL draw for draw, the vectorised simulator
against the harness's sampler, tuning with common random numbers, and the ordering of every reference."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from algorithms.base import Task
from harness.references import tabular_mdp_paper as mdp_references
from harness.references.tabular_mdp import PSRL, OptimalTabular, RandomAction, finite_horizon_q_values
from harness.references.tabular_mdp_paper import (
    UCRL2,
    EpsilonGreedy,
    OptimisticPSRL,
    extended_value_iteration,
    mdp_paper_references,
    mdp_tables,
    optimistic_transitions,
    simulate_mdp,
    tune_mdp_parameter,
    ucrl2_widths,
)
from harness.run.rollout import Sampler
from harness.tasks import TaskFamily, family_class
from harness.tasks.tabular_mdp import TabularMDPParams

PARAMS = TabularMDPParams()  # the RL² paper's: 10 states, 5 actions, 10 steps, mu ~ N(1, 1), unit noise

# A 2-state, 2-action MDP (as in test_tabular_mdp.py): in s0, a0 stays (reward 1) and a1 moves to s1 (reward 0);
# in s1, a0 goes to either state (reward 3) and a1 stays (reward 2.5). Horizon 2: V_1 = (1, 3).
TINY_TRANSITIONS = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, 1.0]]])
TINY_REWARDS = np.array([[1.0, 0.0], [3.0, 2.5]])


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _family(**params: Any) -> TaskFamily:
    cls = family_class("tabular_mdp")
    return cls(cls.Params(**params))


def _tasks(family: TaskFamily, count: int, seed: int) -> list[Task]:
    rng = _rng(seed)
    return [Task(family.name, f"test/{i:04d}", family.sample_params("test", rng)) for i in range(count)]


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


# --- UCRL2 ----------------------------------------------------------------------------------------


def test_optimistic_transition_moves_exactly_the_allowed_mass_by_hand() -> None:
    p_hat, values = np.array([0.7, 0.3]), np.array([0.0, 1.0])  # s1 is the better next state
    # Radius d moves d/2 onto s1, taken from s0; at most all of s0's 0.7.
    for radius, expected in ((0.0, [0.7, 0.3]), (0.4, [0.5, 0.5]), (1.0, [0.2, 0.8]), (1.4, [0.0, 1.0]),
                             (2.0, [0.0, 1.0])):
        np.testing.assert_allclose(optimistic_transitions(p_hat, radius, values), expected, atol=1e-12)
    # Three states, the best (index 0) gains d/2 = 0.3, taken from the worst (index 2: all its 0.1) and
    # then the middle one (index 1: 0.2 of its 0.3).
    np.testing.assert_allclose(optimistic_transitions(np.array([0.6, 0.3, 0.1]), 0.6, np.array([2.0, 1.0, 0.0])),
                               [0.9, 0.1, 0.0], atol=1e-12)
    # Batched: every row treated alone, values broadcast over rows.
    batch = optimistic_transitions(np.array([[0.7, 0.3], [0.3, 0.7]]), np.array([0.4, 0.2]), values)
    np.testing.assert_allclose(batch, [[0.5, 0.5], [0.2, 0.8]], atol=1e-12)


def test_optimistic_transition_is_the_best_distribution_in_the_ball() -> None:
    # Against brute force over a fine grid of the 3-state simplex: no distribution within L1 radius d of p̂
    # has a larger expected value, and the returned one lies in the ball.
    rng = _rng(0)
    grid = np.array([(i, j, 200 - i - j) for i in range(201) for j in range(201 - i)]) / 200.0  # [G, 3]
    for _ in range(20):
        p_hat, values, radius = rng.dirichlet(np.ones(3)), rng.normal(size=3), rng.uniform(0.0, 2.0)
        best = optimistic_transitions(p_hat, radius, values)
        assert best.min() >= 0 and abs(best.sum() - 1) < 1e-12
        assert np.abs(best - p_hat).sum() <= radius + 1e-12
        inside = np.abs(grid - p_hat).sum(axis=1) <= radius
        assert best @ values >= (grid[inside] @ values).max() - 1e-12


def test_ucrl2_widths_follow_the_formula_and_shrink_with_counts() -> None:
    n = np.array([[0, 1, 4, 100]])  # [S=1, A=4] visit counts
    reward_width, radius = ucrl2_widths(n, n, np.array(10), PARAMS, delta=0.05)
    s, a = PARAMS.states, PARAMS.actions
    # Jaksch et al. with max(1, n): an unseen pair gets the width of one visit.
    expected_radius = np.sqrt(14 * s * math.log(2 * a * 10 / 0.05) / np.array([1, 1, 4, 100]))
    expected_reward = np.sqrt(14 * math.log(2 * s * a * 10 / 0.05) / np.array([1, 1, 4, 100]))  # σ = 1
    np.testing.assert_allclose(radius[0], expected_radius)
    np.testing.assert_allclose(reward_width[0], expected_reward)
    assert (np.diff(radius[0, 1:]) < 0).all() and (np.diff(reward_width[0, 1:]) < 0).all()
    np.testing.assert_allclose(radius[0, 2], radius[0, 1] / 2)  # 1/sqrt(n)
    # Linear in scale and in the noise std; growing (slowly) with the steps t.
    scaled_reward, scaled_radius = ucrl2_widths(n, n, np.array(10), PARAMS.model_copy(update={"reward_noise_std": 2.0}),
                                                delta=0.05, scale=0.1)
    np.testing.assert_allclose(scaled_reward, 0.2 * reward_width)
    np.testing.assert_allclose(scaled_radius, 0.1 * radius)
    assert (ucrl2_widths(n, n, np.array(1000), PARAMS)[1] > radius).all()


def test_extended_value_iteration_by_hand() -> None:
    # No slack: plain value iteration.
    np.testing.assert_allclose(extended_value_iteration(TINY_TRANSITIONS, TINY_REWARDS, np.zeros((2, 2)), 2),
                               finite_horizon_q_values(TINY_TRANSITIONS, TINY_REWARDS, 2))
    # Slack 0.4 on (s1, a0) only: its (0.5, 0.5) becomes (0.3, 0.7), so Q_0(s1, a0) = 3 + 0.3 · 1 + 0.7 · 3.
    radius = np.array([[0.0, 0.0], [0.4, 0.0]])
    np.testing.assert_allclose(extended_value_iteration(TINY_TRANSITIONS, TINY_REWARDS, radius, 2),
                               [[[2.0, 3.0], [5.4, 5.5]], [[1.0, 0.0], [3.0, 2.5]]])
    # Rewards raised by 0.5 (V_1 = (1.5, 3.5)) and slack 2 everywhere: every pair may jump to s1, Q_0 = R̃ + 3.5.
    np.testing.assert_allclose(extended_value_iteration(TINY_TRANSITIONS, TINY_REWARDS + 0.5, np.full((2, 2), 2.0), 2),
                               [[[5.0, 4.0], [7.0, 6.5]], [[1.5, 0.5], [3.5, 3.0]]])


def test_extended_value_iteration_bounds_the_true_values_when_the_mdp_is_in_the_set() -> None:
    rng = _rng(1)
    transitions = rng.dirichlet(np.ones(6), size=(20, 6, 3))  # [N, S, A, S], the true MDPs
    reward_means = rng.normal(1.0, 1.0, (20, 6, 3))
    p_hat = rng.dirichlet(np.ones(6), size=(20, 6, 3))  # arbitrary centres ...
    radius = np.abs(p_hat - transitions).sum(axis=-1)  # ... with radii that just hold the truth
    reward_upper = reward_means + rng.uniform(0.0, 0.5, reward_means.shape)
    q_true = finite_horizon_q_values(transitions, reward_means, 5)
    q_optimistic = extended_value_iteration(p_hat, reward_upper, radius, 5)
    assert (q_optimistic >= q_true - 1e-9).all()
    # Larger sets, larger values.
    assert (extended_value_iteration(p_hat, reward_upper, radius + 0.3, 5) >= q_optimistic - 1e-9).all()


def test_ucrl2_with_zero_widths_is_greedy() -> None:
    family = _family()
    transitions, reward_means = mdp_tables(_tasks(family, 30, seed=2))
    ucrl2 = simulate_mdp(UCRL2(30, PARAMS, scale=0.0), transitions, reward_means, PARAMS, 4, _rng(3))
    greedy = simulate_mdp(EpsilonGreedy(30, PARAMS, 0.0, _rng(4)), transitions, reward_means, PARAMS, 4, _rng(3))
    np.testing.assert_array_equal(ucrl2, greedy)


# --- the empirical MDP ----------------------------------------------------------------------------


@pytest.mark.parametrize("unseen_reward", [None, 0.0])
def test_empirical_mdp_rebuilds_the_history_from_the_sampler_inputs(unseen_reward: float | None) -> None:
    params = TabularMDPParams(states=2, actions=2, episode_steps=2)
    policy = EpsilonGreedy(1, params, 0.0, _rng(0), unseen_reward=unseen_reward)
    one_hot = np.eye(2, dtype=np.float32)

    def act(state: int, prev_action: int, prev_reward: float, start: bool) -> None:
        policy.act(one_hot[[state]], np.array([prev_action]), np.array([prev_reward], np.float32), np.array([start]),
                   False)

    policy.reset(np.ones(1, bool))
    act(0, 0, 0.0, True)  # trial start: the zero prev_action/prev_reward are no step
    act(1, 1, 0.5, False)  # (s0, a1) earned 0.5 and moved to s1
    act(0, 0, 2.0, True)  # (s1, a0) earned 2.0; its next state is unseen (the episode ended)
    # The plan of the episode that starts now is the optimal one of the empirical MDP so far.
    transitions, reward_means = policy.empirical_mdp(np.array([0]))
    np.testing.assert_allclose(policy.q[0], finite_horizon_q_values(transitions[0], reward_means[0], 2))
    act(1, 1, 1.5, False)  # (s0, a1) earned 1.5 and moved to s1 again
    transitions, reward_means = policy.empirical_mdp(np.array([0]))
    unseen = 1.0 if unseen_reward is None else unseen_reward  # the prior's mean reward_mean = 1 by default
    np.testing.assert_allclose(reward_means[0], [[unseen, 1.0], [2.0, unseen]])
    # Only (s0, a1) has a seen next state; the rest are uniform.
    np.testing.assert_allclose(transitions[0], [[[0.5, 0.5], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])


# --- OPSRL ----------------------------------------------------------------------------------------


def test_opsrl_with_one_sample_is_psrl_and_more_samples_are_more_optimistic() -> None:
    transitions, reward_means = mdp_tables(_tasks(_family(), 20, seed=5))
    psrl, opsrl = PSRL(20, PARAMS, _rng(6)), OptimisticPSRL(20, PARAMS, _rng(6), samples=1)
    totals = [simulate_mdp(policy, transitions, reward_means, PARAMS, 5, _rng(7)) for policy in (psrl, opsrl)]
    np.testing.assert_array_equal(totals[0], totals[1])
    np.testing.assert_array_equal(psrl.q, opsrl.q)
    # K = 10: the first of its draws is PSRL's, so its first plan is at least PSRL's everywhere.
    psrl, opsrl = PSRL(20, PARAMS, _rng(6)), OptimisticPSRL(20, PARAMS, _rng(6))
    for policy in (psrl, opsrl):
        policy.reset(np.ones(20, bool))
        policy.act(np.eye(10, dtype=np.float32)[np.zeros(20, int)], np.zeros(20, np.int64), np.zeros(20, np.float32),
                   np.ones(20, bool), False)
    assert (opsrl.q >= psrl.q).all() and (opsrl.q > psrl.q).mean() > 0.9
    with pytest.raises(ValueError, match="samples"):
        OptimisticPSRL(1, PARAMS, _rng(0), samples=0)


# --- the simulator and tuning ---------------------------------------------------------------------


class _Recorder:
    """Passes calls to a policy and keeps copies of every input and output."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.resets, self.calls = policy, [], []

    def reset(self, new_trial: np.ndarray) -> None:
        self.resets.append(np.array(new_trial))
        self.policy.reset(new_trial)

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        actions = self.policy.act(obs, prev_action, prev_reward, episode_start, deterministic)
        self.calls.append([np.array(x) for x in (obs, prev_action, prev_reward, episode_start, actions)])
        return actions


def test_simulator_drives_policies_exactly_as_the_sampler_does() -> None:
    # Deterministic MDPs and (nearly) noiseless rewards: both paths then see the same trajectories, so every
    # input a policy receives, and every action it takes, must agree.
    family = _family(states=4, actions=3, episode_steps=3, reward_noise_std=1e-9)
    params: TabularMDPParams = family.params  # type: ignore[assignment]
    rng = _rng(8)
    transitions = np.eye(4)[rng.integers(0, 4, size=(6, 4, 3))]  # [N, S, A, S] one-hot
    reward_means = rng.normal(1.0, 1.0, (6, 4, 3))
    tasks = [Task(family.name, f"test/{i}", {"transitions": transitions[i].tolist(),
                                             "reward_means": reward_means[i].tolist()}) for i in range(6)]
    makers = {
        "greedy": lambda: EpsilonGreedy(6, params, 0.0, _rng(9)),
        "epsilon_greedy": lambda: EpsilonGreedy(6, params, 0.3, _rng(9)),
        "ucrl2": lambda: UCRL2(6, params, scale=0.1),
        "opsrl": lambda: OptimisticPSRL(6, params, _rng(9), samples=3),
    }
    for name, make in makers.items():
        harness_run, simulated = _Recorder(make()), _Recorder(make())
        batch = Sampler(family, _rng(10)).collect(harness_run, tasks, 4)
        totals = simulate_mdp(simulated, transitions, reward_means, params, 4, _rng(11))
        np.testing.assert_allclose(totals, batch.episode_returns.sum(axis=1), atol=1e-6, err_msg=name)
        assert len(harness_run.resets) == len(simulated.resets) == 1 and simulated.resets[0].all(), name
        assert len(harness_run.calls) == len(simulated.calls) == 4 * 3, name
        for step, (ours, theirs) in enumerate(zip(simulated.calls, harness_run.calls, strict=True)):
            for label, x, y in zip(("obs", "prev_action", "prev_reward", "episode_start", "actions"), ours, theirs,
                                   strict=True):
                assert x.dtype == y.dtype and x.shape == y.shape, (name, step, label, x.dtype, y.dtype)
                np.testing.assert_allclose(x, y, atol=1e-6, err_msg=f"{name} step {step} {label}")


def test_simulator_and_sampler_agree_on_psrl_in_distribution() -> None:
    family = _family()
    tasks = _tasks(family, 100, seed=12)
    transitions, reward_means = mdp_tables(tasks)
    batch = Sampler(family, _rng(13)).collect(PSRL(100, PARAMS, _rng(14)), tasks, 5)
    simulated = simulate_mdp(PSRL(100, PARAMS, _rng(15)), transitions, reward_means, PARAMS, 5, _rng(16))
    difference = simulated - batch.episode_returns.sum(axis=1)
    assert abs(difference.mean()) <= 4 * _standard_error(difference), difference.mean()


def test_tuning_uses_common_random_numbers_and_picks_the_best() -> None:
    transitions, reward_means = mdp_tables(_tasks(_family(), 40, seed=17))
    # A policy that ignores the value sees the same streams for every candidate: identical scores.
    best, scores = tune_mdp_parameter(lambda value, n, rng: RandomAction(n, PARAMS.actions, rng), [0.1, 0.2, 0.3],
                                      transitions, reward_means, PARAMS, 3, _rng(18))
    assert len(set(scores.values())) == 1 and best == 0.1  # ties: the first
    # ε = 1 acts at random and earns the prior's mean reward; greedy earns more.
    make = lambda value, n, rng: EpsilonGreedy(n, PARAMS, value, rng)  # noqa: E731
    best, scores = tune_mdp_parameter(make, [1.0, 0.0], transitions, reward_means, PARAMS, 3, _rng(18))
    assert best == 0.0 and scores[0.0] > scores[1.0], scores
    assert tune_mdp_parameter(make, [1.0, 0.0], transitions, reward_means, PARAMS, 3, _rng(18)) == (best, scores)
    with pytest.raises(ValueError, match="grid is empty"):
        tune_mdp_parameter(make, [], transitions, reward_means, PARAMS, 3, _rng(18))


# --- ordering and the references ------------------------------------------------------------------


def test_reference_ordering_on_random_mdps() -> None:
    # 100 random MDPs of the RL² paper, 10-episode trials. A policy that ignores the task earns E[mu] = 1 per
    # step, 100 per trial (random's level), so beating random by a margin means learning within the trial.
    tasks = 100
    transitions, reward_means = mdp_tables(_tasks(_family(), tasks, seed=19))
    makers = {
        "random": lambda rng: RandomAction(tasks, PARAMS.actions, rng),
        "psrl": lambda rng: PSRL(tasks, PARAMS, rng),
        "opsrl": lambda rng: OptimisticPSRL(tasks, PARAMS, rng),
        "ucrl2": lambda rng: UCRL2(tasks, PARAMS, scale=0.05),
        "epsilon_greedy": lambda rng: EpsilonGreedy(tasks, PARAMS, 0.05, rng),
        "greedy": lambda rng: EpsilonGreedy(tasks, PARAMS, 0.0, rng),
        "oracle": lambda rng: OptimalTabular(transitions, reward_means, PARAMS.episode_steps),
    }
    totals = {name: simulate_mdp(make(_rng(20)), transitions, reward_means, PARAMS, 10, _rng(21))
              for name, make in makers.items()}
    # Measured with these seeds: random ≈ 99, PSRL ≈ 130, OPSRL ≈ 136, UCRL2 ≈ 148, ε-greedy ≈ 147,
    # greedy ≈ 148, oracle ≈ 220.
    assert abs(totals["random"].mean() - 100.0) <= 4 * _standard_error(totals["random"])
    for low, high, margin in itertools.chain(
        [("random", "psrl", 20.0), ("psrl", "oracle", 40.0)],
        [("random", name, 20.0) for name in ("opsrl", "ucrl2", "epsilon_greedy", "greedy")],
        [(name, "oracle", 40.0) for name in ("opsrl", "ucrl2", "epsilon_greedy", "greedy")],
    ):
        gap = totals[high] - totals[low]
        assert gap.mean() > max(margin, 4 * _standard_error(gap)), (low, high, gap.mean())
    # OPSRL is PSRL made optimistic: not worse, beyond noise.
    gap = totals["opsrl"] - totals["psrl"]
    assert gap.mean() > -2 * _standard_error(gap), gap.mean()


def test_mdp_paper_references_are_tuned_deterministic_and_run_in_the_harness(monkeypatch: pytest.MonkeyPatch,
                                                                              ) -> None:
    family = _family()
    train = mdp_tables(_tasks(family, 40, seed=22))
    refs = mdp_paper_references(PARAMS, 3, train, rng_seed=0)
    assert list(refs) == ["opsrl", "ucrl2", "epsilon_greedy", "greedy"]
    for name, ref in refs.items():
        assert ref.name == name and ref.description and "\n" not in ref.description
    assert "ε = " in refs["epsilon_greedy"].description and "×" in refs["ucrl2"].description
    assert [r.description for r in mdp_paper_references(PARAMS, 3, train, 0).values()] == [
        r.description for r in refs.values()]  # the same tuning every time
    tasks = _tasks(family, 8, seed=23)
    for name, ref in refs.items():
        runs = [Sampler(family, _rng(0)).collect(ref.policy(tasks, 3, _rng(seed)), tasks, 3) for seed in (1, 1, 2)]
        np.testing.assert_array_equal(runs[0].actions, runs[1].actions, err_msg=name)
        assert runs[0].actions.dtype == np.int64 and runs[0].actions.shape == (8, 30), name
        # OPSRL and ε-greedy draw from their generator; UCRL2 and greedy need none.
        uses_rng = name in ("opsrl", "epsilon_greedy")
        assert np.array_equal(runs[0].actions, runs[2].actions) != uses_rng, name
    # Without training tables it tunes on draws of the family's train split.
    monkeypatch.setattr(mdp_references, "TUNING_TASKS", 10)
    assert set(mdp_paper_references(PARAMS, 2, None, rng_seed=1)) == set(refs)
