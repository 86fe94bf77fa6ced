"""Metrics against hand-computed answers (rliable's own tests are the model for IQM and P(X > Y))."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics as rly_metrics

from harness.analysis import metrics


def _scores(curves: dict[tuple[str, str, int], list[tuple[int, float]]], kind: str = "learner") -> pd.DataFrame:
    """``run_scores``-shaped rows from ``{(algorithm, split, seed): [(env_steps, score), ...]}`` on family "f"."""
    rows = [
        {"kind": kind, "algorithm": algorithm, "family": "f", "seed": seed, "split": split, "env_steps": x, "score": y}
        for (algorithm, split, seed), points in curves.items()
        for x, y in points
    ]
    return pd.DataFrame(rows)


def test_iqm_is_the_mean_of_the_middle_half():
    assert metrics.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    assert metrics.iqm(np.array([[0.0, 100.0], [1.0, 2.0]])) == pytest.approx(1.5)  # all entries: mean(1, 2)
    assert metrics.iqm(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)  # 3 values trim nothing
    for n in range(1, 23):  # the same cut as rliable's (scipy's trim_mean) at every size
        x = np.random.default_rng(n).normal(size=(n, 2))
        assert metrics.iqm(x) == pytest.approx(rly_metrics.aggregate_iqm(x), abs=1e-12)


def test_stratified_bootstrap_is_rliables_on_a_fixed_seed_and_leaves_numpy_alone():
    scores = {"a": np.array([[0.1, 0.9], [0.4, 0.7], [0.3, 0.2], [0.8, 0.5], [0.6, 0.6]])}
    np.random.seed(123)  # noqa: NPY002 - rliable resamples with numpy's global generator
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    ours = metrics.interval_estimates(scores, "iqm", reps=500, seed=7)
    assert (np.random.get_state()[1] == before).all()  # noqa: NPY002 - the caller's generator is untouched
    again = metrics.interval_estimates(scores, "iqm", reps=500, seed=7)
    pd.testing.assert_frame_equal(ours, again)  # reproducible
    other = metrics.interval_estimates(scores, "iqm", reps=500, seed=8)
    assert (other["low"] != ours["low"]).any() or (other["high"] != ours["high"]).any()

    np.random.seed(7)  # noqa: NPY002 - rliable resamples with the global generator: what our wrapper seeds
    _, cis = rly.get_interval_estimates(scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=500)
    row = ours.iloc[0]
    assert (row["low"], row["high"]) == pytest.approx(tuple(cis["a"][:, 0]))
    # sorted: .1 .2 | .3 .4 .5 .6 .6 .7 | .8 .9 — trim_mean(0.25) drops int(2.5) = 2 at each end
    assert row["estimate"] == pytest.approx(np.mean([0.3, 0.4, 0.5, 0.6, 0.6, 0.7]))
    assert row["low"] <= row["estimate"] <= row["high"]


def test_bootstrap_of_constant_scores_is_a_point_and_one_run_has_no_interval():
    point = metrics.interval_estimates({"a": np.full((4, 2), 0.3)}, "mean", reps=200).iloc[0]
    assert (point["estimate"], point["low"], point["high"]) == pytest.approx((0.3, 0.3, 0.3))
    one = metrics.interval_estimates({"a": np.array([[0.5, 0.7]])}, "mean", reps=200).iloc[0]
    assert one["estimate"] == pytest.approx(0.6) and np.isnan(one["low"]) and one["runs"] == 1


def test_probability_of_improvement_on_tiny_matrices():
    x, y = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[2.0, 1.0], [0.0, 5.0]])
    # family 0: {1, 3} vs {2, 0}: 3 of 4 pairs; family 1: {2, 4} vs {1, 5}: 2 of 4 → mean 0.625
    table = metrics.probability_of_improvement({"x": x, "y": y}, reps=200).set_index(["x", "y"])
    assert table.loc[("x", "y"), "probability"] == pytest.approx(0.625)
    assert table.loc[("y", "x"), "probability"] == pytest.approx(0.375)
    always = metrics.probability_of_improvement({"a": x + 10, "b": x}, reps=200).set_index(["x", "y"])
    assert always.loc[("a", "b"), "probability"] == 1.0
    assert always.loc[("a", "b"), "low"] == 1.0  # every resample still has a above b
    ties = metrics.probability_of_improvement({"a": x, "b": x.copy()}, reps=200)
    assert ties["probability"].tolist() == [0.5, 0.5]
    rng = np.random.default_rng(0)
    for _ in range(20):  # the vectorised form is rliable's Mann-Whitney form, ties included
        a, b = rng.integers(0, 4, (rng.integers(1, 6), 3)), rng.integers(0, 4, (rng.integers(1, 6), 3))
        assert metrics.improvement_probability(a, b) == pytest.approx(rly_metrics.probability_of_improvement(a, b))


def test_normalised_auc_is_the_time_averaged_score():
    scores = _scores({("a", "test", 0): [(0, 0.0), (100, 1.0), (300, 1.0)],  # (50 + 200) / 300
                      ("a", "test", 1): [(300, 2.0), (0, 2.0)],  # unsorted input; constant
                      ("a", "ood", 0): [(50, 4.0)]})  # one evaluation: its score  # fmt: skip
    auc = metrics.normalised_auc(scores).set_index(["seed", "split"])["score"]
    assert auc[(0, "test")] == pytest.approx(250 / 300)
    assert auc[(1, "test")] == pytest.approx(2.0)
    assert auc[(0, "ood")] == pytest.approx(4.0)


def test_asymptotic_max_over_training_and_ood_gap():
    scores = _scores({("a", "test", 0): [(100, 1.0), (200, 5.0), (300, 3.0), (400, 4.0)],
                      ("a", "ood", 0): [(100, 0.0), (400, 1.0)]})  # fmt: skip
    asym = metrics.asymptotic(scores, last_k=3).set_index("split")
    assert asym.loc["test", "score"] == pytest.approx(4.0)  # mean(5, 3, 4)
    assert asym.loc["ood", "score"] == pytest.approx(0.5)  # only two evaluations
    assert metrics.asymptotic(scores, last_k=1).set_index("split").loc["test", "score"] == 4.0
    assert metrics.max_over_training(scores).set_index("split").loc["test", "score"] == 5.0
    assert metrics.ood_gap(metrics.asymptotic(scores, 3))["gap"].tolist() == pytest.approx([3.5])
    with pytest.raises(ValueError, match="last_k"):
        metrics.asymptotic(scores, last_k=0)


def test_steps_to_threshold_measures_from_the_random_reference_or_the_untrained_score():
    learners = _scores({("a", "test", 0): [(0, -10.0), (100, -6.0), (200, -3.0), (300, -2.0)],
                        ("a", "test", 1): [(0, -10.0), (100, -9.0), (200, -8.0), (300, -8.0)],
                        ("b", "test", 0): [(0, -10.0), (100, -4.0), (200, -4.0), (300, -4.0)]})  # fmt: skip
    random = _scores({("ref-random", "test", 0): [(0, -12.0)]}, kind="reference")
    scores = pd.concat([learners, random], ignore_index=True)
    asym = metrics.asymptotic(scores, last_k=1)
    # best mean asymptote: b −4 (a: mean(−2, −8) = −5); floor −12 → threshold −12 + 0.8 · 8 = −5.6
    levels = metrics.thresholds(scores, asym, 0.8).iloc[0]
    assert (levels["floor"], levels["best"], levels["threshold"]) == pytest.approx((-12.0, -4.0, -5.6))
    steps = metrics.steps_to_threshold(scores, metrics.thresholds(scores, asym)).set_index(["algorithm", "seed"])
    assert steps.loc[("a", 0), "env_steps"] == 200
    assert np.isnan(steps.loc[("a", 1), "env_steps"])  # never reaches it
    assert steps.loc[("b", 0), "env_steps"] == 100
    # without a random reference the floor is the learners' mean untrained score (−10)
    alone = metrics.thresholds(learners, metrics.asymptotic(learners, 1), 0.5).iloc[0]
    assert (alone["floor"], alone["threshold"]) == pytest.approx((-10.0, -7.0))


def test_normalised_scores_put_random_at_zero_and_oracle_at_one():
    runs = pd.DataFrame({"kind": ["learner", "learner", "reference", "reference", "reference"],
                         "algorithm": ["a", "a", "ref-random", "ref-oracle", "ref-oracle"],
                         "family": ["f"] * 5, "seed": [0, 1, 0, 0, 1], "split": ["test"] * 5,
                         "score": [-6.0, -2.0, -10.0, 0.0, 0.0]})  # fmt: skip
    out = metrics.normalised(runs[runs["kind"] == "learner"], runs)
    assert out["score"].tolist() == pytest.approx([0.4, 0.8])
    assert metrics.normalised(runs, runs[runs["algorithm"] != "ref-oracle"]).empty  # no oracle: no score


def test_score_matrices_are_runs_by_families_and_performance_profiles_count_scores_above_tau():
    table = pd.DataFrame({"algorithm": ["a"] * 4 + ["b"] * 2, "family": ["f", "f", "g", "g", "f", "g"],
                          "seed": [0, 1, 0, 1, 0, 0], "score": [0.1, 0.2, 0.3, 0.4, 0.9, 0.8]})  # fmt: skip
    matrices = metrics.score_matrices(table)
    np.testing.assert_array_equal(matrices["a"], [[0.1, 0.3], [0.2, 0.4]])
    np.testing.assert_array_equal(matrices["b"], [[0.9, 0.8]])
    profile = metrics.performance_profiles(matrices, np.array([0.0, 0.25, 0.85]), reps=100)
    a = profile[profile["algorithm"] == "a"]["fraction"].tolist()
    assert a == pytest.approx([1.0, 0.5, 0.0])
    assert profile[profile["algorithm"] == "b"]["fraction"].tolist() == pytest.approx([1.0, 1.0, 0.5])


def test_adaptation_scores_each_episode_at_the_final_evaluation():
    rows = pd.DataFrame([
        {"kind": "learner", "algorithm": "a", "family": "f", "seed": 0, "env_steps": steps, "split": "test",
         "task_id": task, "episode_index": episode, "metric": "return", "value": value}
        for steps, task, episode, value in [(0, "t0", 0, -9.0), (0, "t0", 1, -9.0), (10, "t0", 0, -5.0),
                                            (10, "t0", 1, -1.0), (10, "t1", 0, -3.0), (10, "t1", 1, -2.0)]
    ])  # fmt: skip
    out = metrics.adaptation(rows).set_index("episode_index")["score"]
    assert out.tolist() == pytest.approx([-4.0, -1.5])


def test_adaptation_gain_is_the_last_episode_minus_the_first_per_run() -> None:
    per_episode = pd.DataFrame({
        "family": "f", "kind": "learner", "algorithm": "a", "seed": [0, 0, 0, 1, 1, 1],
        "episode_index": [2, 0, 1, 0, 1, 2], "score": [5.0, 1.0, 3.0, 2.0, 2.5, 1.5],
    })  # fmt: skip
    gain = metrics.adaptation_gain(per_episode).set_index("seed")["score"]
    assert gain.to_dict() == {0: 4.0, 1: -0.5}  # seed 0 adapts; seed 1 scores worse after adapting
    assert metrics.adaptation_gain(per_episode[per_episode["episode_index"] == 0]).empty  # one episode: no gain
