"""Evaluating a learner never changes how it trains (issue: evaluation must observe, not intervene).

For every registered learner, the same run evaluated every N env steps, every 2N env steps, and every 2N
with an extra OOD split has identical training rows, and identical evaluation rows at the env steps the
runs share. ``execution.check_evaluation`` also verifies on every evaluation that the learner's
``state_dict`` (its training generators included) is what it was before.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from algorithms.registry import BUILTIN_LEARNERS, learner_class
from harness.run.executors import run_local
from harness.run.runner import EvaluationChangedLearner
from harness.run.store import SuiteDir
from harness.spec.suite import parse_suite

#: A few iterations of each learner on point navigation (continuous actions: every learner runs on it).
CONFIGS: dict[str, dict[str, Any]] = {
    "rl2": {"config": {"hidden_size": 16, "epochs": 2}},
    "trmrl": {"preset": "cheap", "config": {"layers": 1, "d_model": 16, "ff_size": 32, "heads": 2,
                                            "working_memory": 10, "epochs": 2}},
    "maml": {"preset": "cheap", "config": {"hidden_sizes": [16, 16]}},
    "mlp_ppo": {"config": {"hidden_sizes": [16, 16], "epochs": 2, "minibatches": 2}},
    "pearl": {"preset": "cheap", "config": {"hidden_size": 32, "encoder_hidden_size": 32, "meta_batch_tasks": 4,
                                            "batch_transitions": 16, "context_transitions": 10, "gradient_steps": 2,
                                            "collect_tasks": 2, "initial_env_steps": 10, "prior_env_steps": 10}},
}


def _suite(algorithm: str, every: int, ood: int) -> dict[str, Any]:
    return {
        "name": f"isolation-{algorithm}",
        "seeds": [0],
        "references": False,
        "families": [{"name": "point_nav", "params": {"episode_steps": 5}, "episodes_per_trial": 2,
                      "split": {"train": 12, "test": 4, "ood": ood}, "tasks_per_iteration": 4}],
        "algorithms": [{"name": algorithm, **CONFIGS[algorithm]}],
        "budget": {"env_steps": 320},
        "evaluation": {"every_env_steps": every, "train_tasks": 2},
        "execution": {"check_evaluation": True},
    }


def _rows(suite: dict[str, Any], results: Path) -> pd.DataFrame:
    outcome = run_local(parse_suite(suite), results, workers=1, stream=io.StringIO())
    assert outcome.ok, "\n".join(outcome.failed.values())
    rows = SuiteDir(results).results().drop(columns="wall_s")
    return rows.sort_values(list(rows.columns)).reset_index(drop=True)


def _pick(rows: pd.DataFrame, query: str, steps: set[int] | None = None) -> pd.DataFrame:
    picked = rows.query(query)
    if steps is not None:
        picked = picked[picked["env_steps"].isin(steps)]
    return picked.reset_index(drop=True)


def test_every_builtin_learner_has_a_config_here() -> None:
    builtin = set(BUILTIN_LEARNERS)
    assert builtin <= set(CONFIGS), f"add a tiny config for {sorted(builtin - set(CONFIGS))}"


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(CONFIGS))
def test_evaluation_schedule_and_splits_do_not_change_training(algorithm: str, tmp_path: Path) -> None:
    often = _rows(_suite(algorithm, every=80, ood=0), tmp_path / "often")
    rarely = _rows(_suite(algorithm, every=160, ood=0), tmp_path / "rarely")
    with_ood = _rows(_suite(algorithm, every=160, ood=3), tmp_path / "ood")

    training = "split == 'training' and metric != 'seconds'"
    pd.testing.assert_frame_equal(_pick(often, training), _pick(rarely, training))
    pd.testing.assert_frame_equal(_pick(rarely, training), _pick(with_ood, training))

    shared = set(rarely.query("split == 'test'")["env_steps"])
    assert len(shared) >= 3 and shared < set(often.query("split == 'test'")["env_steps"])
    for split in ("test", "train"):
        evaluated = f"split == '{split}'"
        pd.testing.assert_frame_equal(_pick(often, evaluated, shared), _pick(rarely, evaluated, shared))
        pd.testing.assert_frame_equal(_pick(rarely, evaluated), _pick(with_ood, evaluated))
    assert len(_pick(with_ood, "split == 'ood'")) > 0


@pytest.mark.slow
def test_check_evaluation_fails_a_learner_whose_evaluation_draws_from_its_training_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = learner_class("rl2")
    original = cls.exploration_policy

    def leaky(self: Any, generator: torch.Generator | None = None) -> Any:
        return original(self, None)  # ignores the evaluation's generator

    monkeypatch.setattr(cls, "exploration_policy", leaky)
    suite = _suite("rl2", every=160, ood=0)
    suite["execution"]["max_retries"] = 0
    outcome = run_local(parse_suite(suite), tmp_path, workers=1, stream=io.StringIO())
    assert not outcome.ok
    manifest = (tmp_path / "runs" / "rl2" / "point_nav" / "seed=0" / "manifest.json").read_text()
    assert EvaluationChangedLearner.__name__ in manifest and "generator" in manifest


@pytest.mark.slow
def test_each_algorithm_runs_its_own_evaluation_protocol_and_the_report_reads_both(tmp_path: Path) -> None:
    """Issue 14, item 9: PEARL evaluated as oyster (explore 2 episodes, score the 3rd, deterministically)
    beside RL² on the family's 2-episode trials, in one suite and one report."""
    from harness.analysis.report import report

    suite = _suite("rl2", every=160, ood=0)
    suite["algorithms"].append({"name": "pearl", **CONFIGS["pearl"],
                                "evaluation": {"deterministic": True, "episodes_per_trial": 3,
                                               "exploration_episodes": 2}})
    rows = _rows(suite, tmp_path)
    evaluated = rows.query("split == 'test' and metric == 'return'")
    episodes = evaluated.groupby("algorithm")["episode_index"].max() + 1
    assert episodes.to_dict() == {"rl2": 2, "pearl": 3}
    final = evaluated[evaluated["env_steps"] == evaluated.groupby("algorithm")["env_steps"].transform("max")]
    assert final.groupby(["algorithm", "task_id"]).size().to_dict() == {
        **{("pearl", t): 3 for t in final["task_id"].unique()}, **{("rl2", t): 2 for t in final["task_id"].unique()}}
    text = report(tmp_path).read_text()
    assert "| pearl |" in text and "| rl2 |" in text
