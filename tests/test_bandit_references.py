"""RL² paper bandit baselines: Gittins indices against hand-worked and independent computations, the Gittins
policy against the exact Bayes-optimal value, UCB1 and ε-greedy by hand, tuning with common random numbers,
and the numpy simulator against the harness sampler."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest

from algorithms.base import Task
from harness.references.bandit import UCB1, BayesOptimal, Thompson, bayes_optimal_value
from harness.references.bandit_paper import (
    EPSILON_GRID,
    UCB_EXPLORATION_GRID,
    _EpsilonGreedy,
    _Gittins,
    _UCB1Scaled,
    bandit_paper_references,
    finite_horizon_gittins_table,
    gittins_index_discounted,
    simulate_bandit,
    tune_bandit_parameter,
)
from harness.run.rollout import Sampler
from harness.tasks import family_class


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _step(policy: Any, prev_action: list[int], prev_reward: list[float], start: bool = False) -> np.ndarray:
    n = len(prev_action)
    return policy.act(np.zeros((n, 1), np.float32), np.array(prev_action, np.int64),
                      np.array(prev_reward, np.float32), np.full(n, start), False)


def _feed(policy: Any, history: list[tuple[int, float]]) -> np.ndarray:
    """One row: reset, then feed ``(arm, reward)`` pulls as prev_action/prev_reward; the arm chosen after them."""
    policy.reset(np.ones(1, bool))
    chosen = _step(policy, [0], [0.0], start=True)
    for arm, reward in history:
        chosen = _step(policy, [arm], [reward])
    return chosen


def _exact_expected_total(policy: Any, arms: int, horizon: int) -> float:
    """Expected total reward of a deterministic policy when arm means are iid U(0, 1), exactly.

    One row per reward sequence (2^H rows); the sequence's probability is the product of the predictive
    success probabilities ``(s + 1) / (s + f + 2)`` of the pulled arm (independent Beta(1, 1) posteriors).
    """
    rows = 2**horizon
    row = np.arange(rows)
    won_at = (row[:, None] >> np.arange(horizon)) & 1  # [rows, H]
    successes = np.zeros((rows, arms), np.int64)
    failures = np.zeros((rows, arms), np.int64)
    probability, total = np.ones(rows), np.zeros(rows)
    policy.reset(np.ones(rows, bool))
    prev_action, prev_reward = np.zeros(rows, np.int64), np.zeros(rows, np.float32)
    for t in range(horizon):
        arm = policy.act(np.zeros((rows, 1), np.float32), prev_action, prev_reward, np.full(rows, t == 0), False)
        s, f, won = successes[row, arm], failures[row, arm], won_at[:, t]
        probability *= np.where(won == 1, (s + 1) / (s + f + 2), (f + 1) / (s + f + 2))
        successes[row, arm] += won
        failures[row, arm] += 1 - won
        total += won
        prev_action, prev_reward = arm, won.astype(np.float32)
    assert probability.sum() == pytest.approx(1.0, abs=1e-9)
    return float(probability @ total)


# --- finite-horizon Gittins index table -----------------------------------------------------------


def _exact_finite_horizon_index(remaining: int, s: int, f: int) -> float:
    """The index from its definition, independently of the module: bisection on λ, plain recursion."""

    def gain(lam: float) -> float:
        @functools.cache
        def advantage(h: int, s: int, f: int) -> float:  # W_λ: value of the arm over retiring, h pulls left
            return 0.0 if h == 0 else max(0.0, pull(h, s, f))

        def pull(h: int, s: int, f: int) -> float:
            p = (s + 1) / (s + f + 2)
            return p - lam + p * advantage(h - 1, s + 1, f) + (1 - p) * advantage(h - 1, s, f + 1)

        return pull(remaining, s, f)

    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gain(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _states(horizon: int) -> list[tuple[int, int, int]]:
    return [(h, s, f) for h in range(1, horizon + 1) for s in range(horizon) for f in range(horizon)
            if h + s + f <= horizon]


def test_gittins_index_by_hand() -> None:
    table = finite_horizon_gittins_table(12)
    # Two pulls left, Beta(1, 1): pulling earns p - λ = 1/2 - λ now; then with one pull left the arm is worth
    # max(2/3 - λ, 0) after a success (prob. 1/2) and max(1/3 - λ, 0) after a failure. For 1/3 <= λ <= 2/3 the
    # gain is 1/2 - λ + (2/3 - λ)/2 = 5/6 - 3λ/2, zero at λ = 5/9 (inside [1/3, 2/3]).
    assert table.index(2, 0, 0) == pytest.approx(5 / 9, abs=1e-6)
    # In general, two pulls left: λ = p (1 + p_won) / (1 + p), p_won = (s + 2) / (s + f + 3) (same algebra:
    # the failure branch's mean (s + 1) / (s + f + 3) is below λ, the success branch's above it).
    for s in range(11):
        for f in range(11 - s):
            p, p_won = (s + 1) / (s + f + 2), (s + 2) / (s + f + 3)
            assert table.index(2, s, f) == pytest.approx(p * (1 + p_won) / (1 + p), abs=1e-6), (s, f)
    # One pull left: nothing to learn for, the index is the posterior mean.
    h1 = np.array([(1, s, f) for s in range(12) for f in range(12 - s)])
    np.testing.assert_allclose(table.index(*h1.T), (h1[:, 1] + 1) / (h1[:, 1] + h1[:, 2] + 2), atol=1e-7)


def test_gittins_table_matches_an_independent_exact_computation() -> None:
    horizon = 8
    table = finite_horizon_gittins_table(horizon)  # the default grid here is 4097 points
    assert table.max_error < 1e-4
    for h, s, f in _states(horizon):
        exact = _exact_finite_horizon_index(h, s, f)
        assert abs(float(table.index(h, s, f)) - exact) <= table.max_error + 1e-6, (h, s, f, exact)


def test_coarse_gittins_grid_stays_within_its_certified_error() -> None:
    # H = 500 uses the 17-point grid; check that grid's bound against a fine table at a horizon we can afford.
    coarse, fine = finite_horizon_gittins_table(40, grid_points=17), finite_horizon_gittins_table(40)
    states = np.array(_states(40))
    error = np.abs(coarse.index(*states.T).astype(np.float64) - fine.index(*states.T))
    assert 1e-3 < error.max() <= coarse.max_error + fine.max_error + 1e-6
    assert coarse.max_error < 0.06


def test_gittins_index_properties() -> None:
    table = finite_horizon_gittins_table(30)
    tol = table.max_error + 1e-6
    states = np.array(_states(30))
    h, s, f = states.T
    index = table.index(h, s, f).astype(np.float64)
    assert (index >= (s + 1) / (s + f + 2) - 1e-7).all()  # at least the posterior mean
    assert (index < 1).all()
    more_time = h + s + f < 30  # the same arm state with one more pull left
    assert (table.index(h[more_time] + 1, s[more_time], f[more_time]) >= index[more_time] - tol).all()
    # One more success raises the index, one more failure lowers it (same pulls left).
    room = h + s + f < 30
    assert (table.index(h[room], s[room] + 1, f[room]) > index[room] - tol).all()
    assert (table.index(h[room], s[room], f[room] + 1) < index[room] + tol).all()
    with pytest.raises(ValueError, match="horizon"):
        table.index(30, 1, 0)


@pytest.mark.slow
def test_gittins_table_for_500_pulls() -> None:
    # The RL² paper's longest games (n = 500): the table builds in seconds (~2 s here) on the 17-point grid.
    table = finite_horizon_gittins_table(500)
    assert table.grid_points == 17 and table.max_error < 0.06
    s = np.arange(499)
    np.testing.assert_allclose(table.index(1, s, 498 - s), (s + 1) / 500, atol=1e-6)
    assert table.index(500, 0, 0) > table.index(10, 0, 0) > table.index(2, 0, 0) > 0.5
    # Smoke run: a short batch of k = 50 games finishes and lands between random (250) and oracle (~490).
    means = _rng(0).uniform(size=(20, 50))
    totals = simulate_bandit(_Gittins(20, 50, 500), means, 500, _rng(1))
    assert 250 < totals.mean() <= 500


# --- discounted Gittins index ---------------------------------------------------------------------


def test_discounted_gittins_index_properties() -> None:
    grid = [1, 2, 3, 5]
    index = np.array([[gittins_index_discounted(a, b, 0.9) for b in grid] for a in grid])  # [alpha, beta]
    means = np.array([[a / (a + b) for b in grid] for a in grid])
    assert (index > means).all()
    assert (np.diff(index, axis=0) > 0).all()  # increasing in alpha
    assert (np.diff(index, axis=1) < 0).all()  # decreasing in beta
    by_gamma = [gittins_index_discounted(2, 3, g) for g in (0.5, 0.7, 0.9, 0.95)]
    assert (np.diff(by_gamma) > 0).all()  # a longer future is worth more exploration


def test_discounted_gittins_index_as_gamma_vanishes() -> None:
    # To first order in γ the arm is worth one look ahead: λ = p + γ p (p_won - p) (the failure branch's mean
    # is below λ), so (λ - p) / γ -> p (p_won - p) = 1/2 (2/3 - 1/2) = 1/12 for Beta(1, 1).
    for alpha, beta in [(1, 1), (2, 5), (4, 1)]:
        p, p_won = alpha / (alpha + beta), (alpha + 1) / (alpha + beta + 1)
        gamma = 1e-4
        index = gittins_index_discounted(alpha, beta, gamma, tolerance=1e-13)
        assert (index - p) / gamma == pytest.approx(p * (p_won - p), abs=1e-3)


def test_discounted_gittins_index_is_the_reward_rate_of_its_stopping_rule() -> None:
    # The index is max over stopping rules of E[discounted reward] / E[discounted time]; the rule optimal at
    # λ = index ("go on while W_λ > 0") must attain it. Evaluated here by plain recursion on the same
    # truncated tree (means frozen below depth 150, 0.9^150 ~ 1e-7).
    gamma, depth = 0.9, 150
    index = gittins_index_discounted(1, 1, gamma, tolerance=1e-10, depth=depth)

    @functools.cache
    def node(a: int, b: int, d: int) -> tuple[float, float, float]:
        """(W, discounted reward, discounted time) from state Beta(a, b), d pulls deep, pulling now."""
        p = a / (a + b)
        if d == depth:  # frozen mean: pull forever
            return max(0.0, p - index) / (1 - gamma), p / (1 - gamma), 1 / (1 - gamma)
        won, lost = node(a + 1, b, d + 1), node(a, b + 1, d + 1)
        gain = p - index + gamma * (p * won[0] + (1 - p) * lost[0])
        go_on = [branch if branch[0] > 0 else (0.0, 0.0, 0.0) for branch in (won, lost)]
        reward = p + gamma * (p * go_on[0][1] + (1 - p) * go_on[1][1])
        time = 1 + gamma * (p * go_on[0][2] + (1 - p) * go_on[1][2])
        return max(0.0, gain), reward, time

    _, reward, time = node(1, 1, 0)
    assert reward / time == pytest.approx(index, abs=1e-6)


# --- the Gittins policy against the exact Bayes-optimal value -------------------------------------


@pytest.mark.parametrize(("arms", "horizon"), [(2, 10), (5, 10)])
def test_gittins_policy_is_nearly_bayes_optimal(arms: int, horizon: int) -> None:
    optimal = bayes_optimal_value(arms, horizon)
    # The evaluator is exact: it reproduces the DP's value for the DP's own policy.
    assert _exact_expected_total(BayesOptimal(2**horizon, arms, horizon), arms, horizon) == pytest.approx(
        optimal, abs=1e-9)
    gittins = _exact_expected_total(_Gittins(2**horizon, arms, horizon), arms, horizon)
    assert optimal + 1e-9 >= gittins >= 0.99 * optimal  # measured: 6.0215 of 6.0218 (k=2), equal (k=5)
    # Thompson sampling: Monte Carlo over 20,000 tasks (~5.83 for k=5, SE ~0.02); Gittins is well above it.
    means = _rng(arms).uniform(size=(20_000, arms))
    thompson = simulate_bandit(Thompson(20_000, arms, _rng(1)), means, horizon, _rng(2))
    assert gittins > thompson.mean() + 4 * thompson.std() / math.sqrt(len(thompson)) + 0.1


def test_gittins_plays_the_highest_index_for_the_pulls_left() -> None:
    policy = _Gittins(1, 2, 3)
    # Fresh arms tie: the lowest index. After arm 0 failed once with 2 pulls left, arm 1's index (5/9) beats
    # arm 0's (in state (0, 1) with 2 left: 1/3 (1 + 1/2) / (4/3) = 3/8).
    assert _feed(policy, []).tolist() == [0]
    assert _feed(policy, [(0, 0.0)]).tolist() == [1]
    assert _feed(policy, [(0, 1.0)]).tolist() == [0]
    with pytest.raises(ValueError, match="horizon 3"):
        _feed(policy, [(0, 1.0)] * 3)


# --- UCB1 with a constant, ε-greedy ---------------------------------------------------------------


def test_ucb1_scaled_by_hand() -> None:
    # Arm 0: 2 successes in 3 pulls, arm 1: 0 in 1; t = 4. Bounds 2/3 + c sqrt(ln 4 / 3) and c sqrt(ln 4):
    # equal at c = (2/3) / (sqrt(ln 4) - sqrt(ln 4 / 3)) ~ 1.34, so c = 1 exploits and c = 2 explores.
    history = [(0, 1.0), (0, 1.0), (0, 0.0), (1, 0.0)]
    assert _feed(_UCB1Scaled(1, 2, 1.0), history).tolist() == [0]
    assert _feed(_UCB1Scaled(1, 2, 2.0), history).tolist() == [1]
    assert _feed(_UCB1Scaled(1, 2, 0.0), history).tolist() == [0]
    # Each arm once first, lowest index first, whatever the rewards.
    assert _feed(_UCB1Scaled(1, 3, 0.0), [(0, 1.0)]).tolist() == [1]
    assert _feed(_UCB1Scaled(1, 3, 0.0), [(0, 1.0), (1, 1.0)]).tolist() == [2]


def test_ucb1_scaled_with_sqrt2_is_textbook_ucb1() -> None:
    n, arms, horizon = 256, 4, 60
    means, env = _rng(3).uniform(size=(n, arms)), _rng(4)
    ours, textbook = _UCB1Scaled(n, arms, math.sqrt(2.0)), UCB1(n, arms)
    for policy in (ours, textbook):
        policy.reset(np.ones(n, bool))
    prev_action, prev_reward = np.zeros(n, np.int64), np.zeros(n, np.float32)
    for t in range(horizon):
        args = (np.zeros((n, 1), np.float32), prev_action, prev_reward, np.full(n, t == 0), False)
        action = ours.act(*args)
        np.testing.assert_array_equal(action, textbook.act(*args))
        prev_action = action
        prev_reward = (env.random(n) < means[np.arange(n), action]).astype(np.float32)


def test_greedy_by_hand() -> None:
    greedy = _EpsilonGreedy(1, 3, 0.0, _rng(0))
    assert _feed(greedy, []).tolist() == [0]  # every arm counts as 0.5: the lowest index
    assert _feed(greedy, [(0, 1.0)]).tolist() == [0]  # 1 > 0.5
    # Arm 0 at 0, arm 1 untried (0.5), arm 2 at 1/2: arms 1 and 2 tie, the lowest index wins.
    assert _feed(greedy, [(0, 0.0), (2, 1.0), (2, 0.0)]).tolist() == [1]


def test_epsilon_greedy_explores_with_probability_epsilon() -> None:
    n, arms, epsilon = 40_000, 5, 0.2
    policy = _EpsilonGreedy(n, arms, epsilon, _rng(5))
    policy.reset(np.ones(n, bool))
    _step(policy, [0] * n, [0.0] * n, start=True)
    chosen = _step(policy, [0] * n, [1.0] * n)  # arm 0 won: greedy picks it; exploration is uniform over 5
    share = np.bincount(chosen, minlength=arms) / n
    expected = np.array([1 - epsilon + epsilon / arms] + [epsilon / arms] * (arms - 1))
    assert np.abs(share - expected).max() < 4 * math.sqrt(0.25 / n)


def test_epsilon_greedy_randomness_comes_only_from_its_rng() -> None:
    means = _rng(6).uniform(size=(64, 5))
    global_state = np.random.get_state()[1].copy()  # type: ignore[index]  # noqa: NPY002
    first = simulate_bandit(_EpsilonGreedy(64, 5, 0.3, _rng(7)), means, 50, _rng(8))
    again = simulate_bandit(_EpsilonGreedy(64, 5, 0.3, _rng(7)), means, 50, _rng(8))
    other = simulate_bandit(_EpsilonGreedy(64, 5, 0.3, _rng(9)), means, 50, _rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # type: ignore[index]  # noqa: NPY002


# --- tuning on training tasks ---------------------------------------------------------------------


def test_tuning_uses_common_random_numbers() -> None:
    means = _rng(10).uniform(size=(200, 5))

    def same_policy_for_every_value(value: float, n: int, rng: np.random.Generator) -> Any:
        return _EpsilonGreedy(n, 5, 0.3, rng)  # random, but ignores the value

    best, scores = tune_bandit_parameter(same_policy_for_every_value, [3.0, 1.0, 2.0], means, 20, _rng(11))
    assert len(set(scores.values())) == 1  # same env and policy seeds for every candidate: identical runs
    assert best == 3.0  # ties go to the first in grid order
    assert tune_bandit_parameter(same_policy_for_every_value, [3.0, 1.0, 2.0], means, 20, _rng(11)) == (best, scores)
    with pytest.raises(ValueError, match="empty"):
        tune_bandit_parameter(same_policy_for_every_value, [], means, 20, _rng(11))


def test_tuned_ucb1_beats_textbook_ucb1_on_held_out_tasks() -> None:
    arms, horizon = 5, 100

    def ucb(c: float, n: int, rng: np.random.Generator) -> Any:
        return _UCB1Scaled(n, arms, c)

    best, scores = tune_bandit_parameter(ucb, UCB_EXPLORATION_GRID, _rng(12).uniform(size=(300, arms)), horizon,
                                         _rng(13))
    assert set(scores) == set(UCB_EXPLORATION_GRID) and scores[best] == max(scores.values())
    assert best < math.sqrt(2.0)  # Bernoulli rewards have variance <= 1/4: textbook UCB1 over-explores
    test_means = _rng(14).uniform(size=(2000, arms))
    gain = (simulate_bandit(ucb(best, 2000, _rng(0)), test_means, horizon, _rng(15))
            - simulate_bandit(ucb(math.sqrt(2.0), 2000, _rng(0)), test_means, horizon, _rng(15)))
    assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain))


# --- the references -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def references_5x10() -> dict[str, Any]:
    return bandit_paper_references(5, 10, _rng(16).uniform(size=(500, 5)), rng_seed=0)


def test_paper_references_interface(references_5x10: dict[str, Any]) -> None:
    refs = references_5x10
    assert set(refs) == {"gittins", "ucb1_tuned", "epsilon_greedy", "greedy"}
    for ref in refs.values():
        assert ref.description and "\n" not in ref.description
    assert refs["ucb1_tuned"].parameter in UCB_EXPLORATION_GRID
    assert set(refs["ucb1_tuned"].tuning) == set(UCB_EXPLORATION_GRID)
    assert refs["epsilon_greedy"].parameter in EPSILON_GRID and refs["epsilon_greedy"].parameter > 0
    assert refs["greedy"].parameter == 0.0 and refs["gittins"].tuning is None
    assert f"{refs['ucb1_tuned'].parameter:.3g}" in refs["ucb1_tuned"].description
    # Without training tasks it tunes on tasks drawn from U(0, 1) with the seed.
    drawn = bandit_paper_references(3, 6, rng_seed=1)
    assert drawn["ucb1_tuned"].tuning == bandit_paper_references(3, 6, rng_seed=1)["ucb1_tuned"].tuning
    with pytest.raises(ValueError, match="train_means"):
        bandit_paper_references(5, 10, np.zeros((10, 4)))


def test_paper_references_ordering(references_5x10: dict[str, Any]) -> None:
    # k=5, n=10, exact for the deterministic ones: Gittins 6.660 (= Bayes-optimal), greedy 6.555, UCB1 with
    # each arm first at most 6.045 (c = 0: half the pulls go to trying every arm once).
    refs = references_5x10
    exact = {name: _exact_expected_total(refs[name].make(1024, _rng(0)), 5, 10)
             for name in ("gittins", "greedy", "ucb1_tuned")}
    assert exact["gittins"] == pytest.approx(bayes_optimal_value(5, 10), abs=1e-9)
    assert exact["gittins"] > exact["greedy"] > exact["ucb1_tuned"]
    means = _rng(17).uniform(size=(20_000, 5))
    gap = (simulate_bandit(refs["gittins"].make(20_000, _rng(0)), means, 10, _rng(18))
           - simulate_bandit(refs["epsilon_greedy"].make(20_000, _rng(0)), means, 10, _rng(18)))
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap))


class _Recorder:
    """Passes a policy through and keeps the arms it chose, ``[N, steps]``."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.actions = policy, []

    def reset(self, new_trial: np.ndarray) -> None:
        self.policy.reset(new_trial)

    def act(self, *args: Any) -> np.ndarray:
        self.actions.append(np.asarray(self.policy.act(*args)).copy())
        return self.actions[-1]


def test_simulator_matches_the_harness_sampler() -> None:
    # Means of 0 or 1 make rewards deterministic, so the two paths must agree pull for pull, including across
    # the episode boundary of a two-episode trial (5 pulls each).
    arms, pulls, episodes = 3, 5, 2
    family = family_class("bandit")(family_class("bandit").Params(arms=arms, pulls=pulls))
    means = (_rng(19).uniform(size=(32, arms)) < 0.5).astype(np.float64)
    tasks = [Task("bandit", f"test/{i:02d}", {"means": row.tolist()}) for i, row in enumerate(means)]
    for name, ref in bandit_paper_references(arms, pulls * episodes, rng_seed=2).items():
        harness = _Recorder(ref.make(len(tasks), _rng(20)))
        batch = Sampler(family, _rng(21)).collect(harness, tasks, episodes)
        ours = _Recorder(ref.make(len(tasks), _rng(20)))
        totals = simulate_bandit(ours, means, pulls * episodes, _rng(22), episode_steps=pulls)
        np.testing.assert_array_equal(np.stack(ours.actions, 1), batch.actions, err_msg=name)
        np.testing.assert_array_equal(totals, batch.episode_returns.sum(axis=1), err_msg=name)
