"""Reference policies: exact DP values, Monte-Carlo returns through the real sampler, and protocol."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from algorithms.base import Task, TrialBatch
from harness.references import TrainedReference, references_for, selected_references
from harness.references.bandit import (
    MAX_BAYES_OPTIMAL_STATES,
    bayes_optimal_feasible,
    bayes_optimal_state_count,
    bayes_optimal_value,
)
from harness.references.point_nav import non_adaptive_target
from harness.run.rollout import Sampler
from harness.tasks import TaskFamily, family_class

ARMS, PULLS = 5, 10
BANDIT_TASKS = 2000


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _family(name: str, **params: Any) -> TaskFamily:
    cls = family_class(name)
    return cls(cls.Params(**params))


def _tasks(family: TaskFamily, count: int, seed: int) -> list[Task]:
    rng = _rng(seed)
    return [Task(family.name, f"test/{i:04d}", family.sample_params("test", rng)) for i in range(count)]


def _run(family: TaskFamily, name: str, tasks: list[Task], episodes_per_trial: int, seed: int = 0) -> TrialBatch:
    """One trial per task of reference ``name`` through the harness's own sampler."""
    policy = references_for(family)[name].policy(tasks, episodes_per_trial, _rng(seed))
    return Sampler(family, _rng(seed + 1)).collect(policy, tasks, episodes_per_trial)


# --- the exact DP ---------------------------------------------------------------------------------


def test_bayes_optimal_value_by_hand() -> None:
    # One pull: every arm's predictive success probability is E[U(0, 1)] = 1/2.
    assert bayes_optimal_value(2, 1) == pytest.approx(0.5, abs=1e-12)
    # k=2, H=2: pull arm 0 (p = 1/2). Won (1/2): its posterior Beta(2, 1) has mean 2/3 > 1/2, pull it again.
    # Lost (1/2): Beta(1, 2) has mean 1/3 < 1/2, pull the fresh arm. 1/2 + 1/2 * 2/3 + 1/2 * 1/2 = 13/12.
    assert bayes_optimal_value(2, 2) == pytest.approx(13 / 12, abs=1e-12)
    # One arm: no choice, and the predictive mean of every pull is 1/2 (martingale), so H/2.
    assert bayes_optimal_value(1, 7) == pytest.approx(3.5, abs=1e-12)


def test_bayes_optimal_value_matches_the_rl2_papers_gittins_figure() -> None:
    # RL² paper (Duan et al. 2016) Table 1, k=5, n=10: Gittins index 6.6 (Gittins is Bayes-optimal for
    # the discounted infinite-horizon problem; at this horizon the two agree to the table's precision).
    assert bayes_optimal_value(5, 10) == pytest.approx(6.66, abs=0.02)


def test_bayes_optimal_state_count_is_the_number_of_memoised_states() -> None:
    # k=2, H=2: states with < 2 pulls are {(0,0),(0,0)}, {(1,0),(0,0)}, {(0,1),(0,0)}.
    assert bayes_optimal_state_count(2, 2) == 3
    assert bayes_optimal_feasible(5, 10) and bayes_optimal_feasible(5, 20)
    assert not bayes_optimal_feasible(5, 100)
    assert bayes_optimal_state_count(5, 100) > MAX_BAYES_OPTIMAL_STATES
    with pytest.raises(ValueError, match="MAX_BAYES_OPTIMAL_STATES"):
        bayes_optimal_value(5, 100)


# --- bandit references through the sampler -------------------------------------------------------


@pytest.fixture(scope="module")
def bandit_returns() -> dict[str, np.ndarray]:
    """``[tasks]`` returns of every bandit reference on the same 2000 test tasks (k=5, n=10, one episode)."""
    family = _family("bandit", arms=ARMS, pulls=PULLS)
    tasks = _tasks(family, BANDIT_TASKS, seed=1)
    return {name: _run(family, name, tasks, 1).episode_returns[:, 0] for name in selected_references(family)}


# Expected returns for k=5, n=10 under means ~ U(0, 1). random: 10 * E[U] = 5. oracle: 10 * E[max of 5
# uniforms] = 10 * 5/6. bayes_optimal: the DP. thompson and ucb1 have no closed form: measured with 100,000
# tasks through the sampler (SE 0.006 each), so each figure carries up to ~0.03 of its own error. The RL²
# paper's Table 1 lists Thompson 5.7 and UCB1 6.7 (its UCB1 figure is not the textbook sqrt(2 ln t / n_a)).
EXPECTED_BANDIT = {
    "random": (5.0, 0.0),
    "oracle": (PULLS * ARMS / (ARMS + 1), 0.0),
    "bayes_optimal": (bayes_optimal_value(ARMS, PULLS), 0.0),
    "thompson": (5.83, 0.03),
    "ucb1": (5.66, 0.03),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_BANDIT))
def test_bandit_reference_mean_return(bandit_returns: dict[str, np.ndarray], name: str) -> None:
    returns = bandit_returns[name]
    expected, figure_error = EXPECTED_BANDIT[name]
    standard_error = returns.std(ddof=1) / math.sqrt(len(returns))  # ~0.045 for 2000 tasks
    assert abs(returns.mean() - expected) <= 4 * standard_error + figure_error, (name, returns.mean(), expected)


def test_bandit_reference_ordering(bandit_returns: dict[str, np.ndarray]) -> None:
    mean = {name: returns.mean() for name, returns in bandit_returns.items()}
    assert mean["oracle"] > mean["bayes_optimal"] > mean["thompson"] > mean["random"]
    assert mean["ucb1"] > mean["random"]


def test_bayes_optimal_monte_carlo_matches_its_dp_value() -> None:
    family = _family("bandit", arms=ARMS, pulls=PULLS)
    returns = _run(family, "bayes_optimal", _tasks(family, 20_000, seed=2), 1).episode_returns[:, 0]
    standard_error = returns.std(ddof=1) / math.sqrt(len(returns))  # ~0.016
    assert abs(returns.mean() - bayes_optimal_value(ARMS, PULLS)) <= 4 * standard_error


def test_bayes_optimal_plans_over_the_whole_trial() -> None:
    # Two episodes of 5 pulls form one 10-pull horizon: the same value as one 10-pull episode.
    family = _family("bandit", arms=ARMS, pulls=5)
    batch = _run(family, "bayes_optimal", _tasks(family, 20_000, seed=3), 2)
    returns = batch.episode_returns.sum(axis=1)
    standard_error = returns.std(ddof=1) / math.sqrt(len(returns))
    assert abs(returns.mean() - bayes_optimal_value(ARMS, 10)) <= 4 * standard_error
    # Knowledge carries across the episode boundary, so the second episode earns more than the first.
    assert batch.episode_returns[:, 1].mean() > batch.episode_returns[:, 0].mean()


def test_bayes_optimal_is_offered_only_where_feasible() -> None:
    assert "bayes_optimal" in references_for(_family("bandit", arms=5, pulls=10))
    assert "bayes_optimal" not in references_for(_family("bandit", arms=5, pulls=100))
    family = _family("bandit", arms=5, pulls=10)
    with pytest.raises(ValueError, match="MAX_BAYES_OPTIMAL_STATES"):
        references_for(family)["bayes_optimal"].policy(_tasks(family, 2, seed=0), 10, _rng(0))


def _step(policy: Any, prev_action: list[int], prev_reward: list[float]) -> np.ndarray:
    n = len(prev_action)
    return policy.act(
        np.zeros((n, 1), np.float32),
        np.array(prev_action, np.int64),
        np.array(prev_reward, np.float32),
        np.zeros(n, bool),
        False,
    )


def test_bayes_optimal_tie_breaking_and_choices_by_hand() -> None:
    family = _family("bandit", arms=2, pulls=2)
    policy = references_for(family)["bayes_optimal"].policy(_tasks(family, 2, seed=0), 1, _rng(0))
    policy.reset(np.ones(2, bool))
    assert _step(policy, [0, 0], [0.0, 0.0]).tolist() == [0, 0]  # all arms tie: the lowest index
    # Row 0 won on arm 0 (stay), row 1 lost on arm 0 (switch): the k=2, H=2 plan above.
    assert _step(policy, [0, 0], [1.0, 0.0]).tolist() == [0, 1]


def test_reset_forgets_only_the_masked_rows() -> None:
    family = _family("bandit", arms=3, pulls=10)
    policy = references_for(family)["ucb1"].policy(_tasks(family, 2, seed=0), 1, _rng(0))
    policy.reset(np.ones(2, bool))
    assert _step(policy, [0, 0], [0.0, 0.0]).tolist() == [0, 0]  # the first pulls play untried arms in order
    assert _step(policy, [0, 0], [1.0, 1.0]).tolist() == [1, 1]
    policy.reset(np.array([True, False]))
    # Row 0 starts a new trial (its prev_action/prev_reward are no pull); row 1 goes on to its third arm.
    assert _step(policy, [0, 1], [0.0, 1.0]).tolist() == [0, 2]


def test_oracle_arm_is_the_best_mean() -> None:
    family = _family("bandit", arms=ARMS, pulls=PULLS)
    tasks = _tasks(family, 50, seed=4)
    batch = _run(family, "oracle", tasks, 1)
    best = np.argmax([task.params["means"] for task in tasks], axis=1)
    assert (batch.actions == best[:, None]).all()


# --- point_nav ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reward", ["dense", "sparse"])
def test_point_nav_reference_ordering(reward: str) -> None:
    family = _family("point_nav", reward=reward)
    tasks = _tasks(family, 200, seed=5)
    mean = {name: _run(family, name, tasks, 2).episode_returns.mean() for name in _policies(family)}
    assert mean["oracle"] > mean["non_adaptive"] > mean["random"], mean


def test_point_nav_oracle_reaches_the_goal_as_early_as_possible() -> None:
    family = _family("point_nav")
    step_size, episode_steps = family.params.step_size, family.params.episode_steps  # type: ignore[attr-defined]
    tasks = _tasks(family, 100, seed=6)
    batch = _run(family, "oracle", tasks, 2)
    distance = -batch.rewards  # dense reward = -distance after the move, [tasks, steps]
    # Each step moves at most step_size along each axis, so no policy arrives before
    # ceil(max(|g_x|, |g_y|) / step_size) steps; the oracle arrives then and stays, in both episodes.
    goals = np.array([task.params["goal"] for task in tasks])  # [tasks, 2]
    earliest = np.ceil(np.abs(goals).max(axis=1) / step_size - 1e-6).astype(int)  # [tasks]
    step_in_episode = np.arange(distance.shape[1]) % episode_steps  # [steps]
    arrived = step_in_episode[None, :] >= earliest[:, None] - 1  # [tasks, steps]
    assert distance[arrived].max() < 1e-4
    assert distance[:, -1].max() <= step_size


def test_non_adaptive_target_is_the_geometric_median_of_the_arc() -> None:
    target = non_adaptive_target(_family("point_nav"))
    assert abs(target[0]) < 0.05 and 0.0 < target[1] < 1.0
    # Under the true goal distribution (angle ~ U(0, π) on the unit circle) the expected distance is
    # symmetric in x, so the best point lies on the y-axis; find it by quadrature and compare costs.
    angles = np.linspace(0.0, math.pi, 20_001)
    goals = np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def expected_distance(point: np.ndarray) -> float:
        return float(np.linalg.norm(goals - point, axis=1).mean())

    best_y = min(np.linspace(0.0, 1.0, 1001), key=lambda y: expected_distance(np.array([0.0, y])))
    assert 0.7 < best_y < 0.85
    assert expected_distance(target) - expected_distance(np.array([0.0, best_y])) < 2e-3


# --- protocol -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family_name", "params", "episodes_per_trial"),
    [("bandit", {"arms": 5, "pulls": 10}, 1), ("point_nav", {}, 2)],
)
def test_same_seed_same_actions_and_no_global_randomness(
    family_name: str, params: dict[str, Any], episodes_per_trial: int
) -> None:
    family = _family(family_name, **params)
    tasks = _tasks(family, 64, seed=7)
    # The legacy global generator must not move: references draw only from the rng they are given.
    global_state = np.random.get_state()[1].copy()  # type: ignore[index]  # noqa: NPY002
    for name in _policies(family):
        first = _run(family, name, tasks, episodes_per_trial, seed=11)
        second = _run(family, name, tasks, episodes_per_trial, seed=11)
        np.testing.assert_array_equal(first.actions, second.actions, err_msg=name)
        np.testing.assert_array_equal(first.rewards, second.rewards, err_msg=name)
        expected_dtype = np.int64 if family_name == "bandit" else np.float32
        policy = references_for(family)[name].policy(tasks, episodes_per_trial, _rng(0))
        policy.reset(np.ones(len(tasks), bool))
        n = len(tasks)
        prev_action = np.zeros(n, np.int64) if family_name == "bandit" else np.zeros((n, 2), np.float32)
        obs = np.zeros((n, 1 if family_name == "bandit" else 2), np.float32)
        actions = policy.act(obs, prev_action, np.zeros(n, np.float32), np.ones(n, bool), False)
        assert actions.dtype == expected_dtype and actions.shape == prev_action.shape, name
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # type: ignore[index]  # noqa: NPY002


def test_random_references_use_their_rng() -> None:
    family = _family("bandit", arms=5, pulls=10)
    tasks = _tasks(family, 64, seed=8)
    for name in ("random", "thompson"):
        actions = []
        for policy_seed in (11, 12):  # same environment seeds, different policy generators
            policy = references_for(family)[name].policy(tasks, 1, _rng(policy_seed))
            actions.append(Sampler(family, _rng(0)).collect(policy, tasks, 1).actions)
        assert not np.array_equal(*actions), name


def _policies(family: Any) -> dict[str, Any]:
    """The references built from tasks (not those the harness trains: tests/test_trained_references.py)."""
    return {name: ref for name, ref in references_for(family).items() if not isinstance(ref, TrainedReference)}


def test_references_for_dispatch() -> None:
    assert set(selected_references(_family("bandit"))) == {"random", "ucb1", "thompson", "bayes_optimal", "oracle"}
    assert list(references_for(_family("bandit")))[5:] == ["gittins", "ucb1_tuned", "epsilon_greedy", "greedy",
                                                          "multitask"]
    assert set(selected_references(_family("point_nav"))) == {"random", "oracle", "non_adaptive"}
    assert set(references_for(_family("point_nav"))) == {"random", "oracle", "non_adaptive", "multitask"}
    assert references_for(SimpleNamespace(name="no_such_family")) == {}  # type: ignore[arg-type]
    for ref in references_for(_family("bandit")).values():
        assert ref.description and "\n" not in ref.description
    assert "U(0, 1)" in references_for(_family("bandit"))["bayes_optimal"].description


def test_the_rl2_papers_bandit_baselines_run_when_named_and_are_tuned_once_on_the_training_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gittins, tuned UCB1, ε-greedy and greedy (``harness.references.bandit_paper``) are offered, not standard; listing
    builds nothing, and the first policy made builds them once from the training tasks' arm means. Gittins
    matches the Bayes-optimal DP at k=5, n=10 on the same trials."""
    from harness import references as module

    monkeypatch.setattr(module, "_PAPER_BANDIT", {})
    family = _family("bandit", arms=5, pulls=10)
    train = _tasks(family, 300, seed=40)
    offered = references_for(family, 1, train)
    assert not module._PAPER_BANDIT  # nothing built by listing
    assert all(not offered[name].standard for name in ("gittins", "ucb1_tuned", "epsilon_greedy", "greedy"))
    tasks = _tasks(family, 2000, seed=41)
    returns = {}
    for name in ("gittins", "bayes_optimal", "greedy", "random"):
        policy = offered[name].policy(tasks, 1, _rng(42))
        returns[name] = Sampler(family, _rng(43)).collect(policy, tasks, 1).episode_returns[:, 0].mean()
    assert len(module._PAPER_BANDIT) == 1  # built once for all four
    assert abs(returns["gittins"] - returns["bayes_optimal"]) < 0.05, returns  # both ≈ 6.66 (exact: 6.660)
    assert returns["gittins"] > returns["greedy"] > returns["random"], returns
