"""End-to-end behaviour of runs: determinism, resume after SIGKILL, failure isolation, skipping."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from algorithms.registry import registered
from algorithms.rl2 import RL2
from harness.cli import main
from harness.run.executors import run_local
from harness.run.store import RunKey, RunStore, SuiteDir
from harness.spec.suite import parse_suite

REPO = Path(__file__).resolve().parents[1]


def tiny_suite(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    suite = {
        "name": name,
        "seeds": [0, 1],
        "families": [
            {"name": "bandit", "params": {"arms": 3, "pulls": 5}, "split": {"train": 40, "test": 8},
             "tasks_per_iteration": 10},
            {"name": "point_nav", "params": {"episode_steps": 5}, "split": {"train": 20, "test": 4, "ood": 4},
             "tasks_per_iteration": 5},
        ],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 16, "epochs": 2}}],
        "budget": {"env_steps": 300},
        "evaluation": {"every_env_steps": 100, "train_tasks": 3},
    }
    suite.update(overrides)
    return suite


def run(suite: dict[str, Any], results: Path, workers: int = 1) -> Any:
    return run_local(parse_suite(suite), results, workers=workers, stream=io.StringIO())


def comparable(results: Path) -> pd.DataFrame:
    """All rows except wall-clock time, in a canonical order."""
    rows = SuiteDir(results).results().drop(columns="wall_s")
    return rows.sort_values(list(rows.columns)).reset_index(drop=True)


def test_same_seed_gives_identical_tables_in_process_and_in_a_pool(tmp_path: Path) -> None:
    suite = tiny_suite()
    assert run(suite, tmp_path / "a").ok
    assert run(suite, tmp_path / "b").ok
    assert run(suite, tmp_path / "c", workers=2).ok
    a = comparable(tmp_path / "a")
    assert len(a) > 0 and set(a["split"]) == {"test", "ood", "train", "training"}
    pd.testing.assert_frame_equal(a, comparable(tmp_path / "b"))
    pd.testing.assert_frame_equal(a, comparable(tmp_path / "c"))
    # every learner run has evaluations at 0, at each multiple of the interval it passed, and at the end
    steps = SuiteDir(tmp_path / "a").results().query("kind == 'learner' and split == 'test'").groupby(
        ["family", "seed"])["env_steps"].unique()
    for values in steps:
        assert values[0] == 0 and values[-1] >= 300 and len(values) >= 4


def test_different_seeds_differ_and_algorithms_share_evaluation_tasks(tmp_path: Path) -> None:
    suite = tiny_suite(algorithms=[{"name": "rl2", "config": {"hidden_size": 16}},
                                   {"name": "rl2", "id": "rl2_small", "config": {"hidden_size": 8}}])
    assert run(suite, tmp_path).ok
    rows = SuiteDir(tmp_path).results().query("split == 'test' and metric == 'return' and env_steps == 0")
    by_seed = rows.query("algorithm == 'rl2'").groupby("seed")["value"].apply(list)
    assert by_seed[0] != by_seed[1]
    tasks = rows.groupby("algorithm")["task_id"].apply(lambda s: sorted(set(s)))
    assert tasks["rl2"] == tasks["rl2_small"]


def test_a_done_run_is_skipped_and_a_changed_spec_is_refused(tmp_path: Path) -> None:
    suite = tiny_suite(seeds=[0], references=False)
    first = run(suite, tmp_path)
    assert len(first.done) == 2
    again = run(suite, tmp_path)
    assert len(again.skipped) == 2 and not again.done
    changed = tiny_suite(seeds=[0], references=False, budget={"env_steps": 400})
    from harness.run.store import SuiteMismatchError

    with pytest.raises(SuiteMismatchError, match="another spec"):
        run(changed, tmp_path)


class _FailingLearner(RL2):
    """RL² that raises on its second training iteration."""

    name = "test_failing"

    def train_iteration(self, sampler: Any, tasks: Any) -> dict[str, float]:
        if self.iterations == 1:
            raise RuntimeError("deliberate failure in iteration 2")
        return super().train_iteration(sampler, tasks)


@pytest.fixture
def failing_learner() -> Iterator[None]:
    with registered(_FailingLearner.name, _FailingLearner):
        yield


@pytest.mark.usefixtures("failing_learner")
def test_a_failing_run_is_marked_failed_and_the_others_finish(tmp_path: Path, capsys: Any) -> None:
    suite = tiny_suite(seeds=[0], references=False,
                       algorithms=[{"name": "test_failing", "config": {"hidden_size": 8}},
                                   {"name": "rl2", "config": {"hidden_size": 8}}])
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    code = main(["run", str(path), "--workers", "1", "--results", str(tmp_path / "results")])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED test_failing/bandit/seed=0: RuntimeError: deliberate failure in iteration 2" in out
    manifests = {(m["algorithm"], m["family"]): m for m in SuiteDir(tmp_path / "results").manifests()}
    assert manifests[("rl2", "bandit")]["status"] == "done"
    assert manifests[("rl2", "point_nav")]["status"] == "done"
    failed = manifests[("test_failing", "bandit")]
    assert failed["status"] == "failed" and "Traceback" in failed["error"]
    assert failed["spec_hash"] and failed["tasks_hash"] and "torch" in failed["versions"]
    # the failed run kept its rows up to the failure (the evaluation at 0) and is not retried by default
    assert set(RunStore(tmp_path / "results", RunKey("test_failing", "bandit", 0)).rows()["iteration"]) == {0}
    assert main(["run", str(path), "--workers", "1", "--results", str(tmp_path / "results")]) == 1
    assert "1 already done" not in capsys.readouterr().out  # nothing re-ran: failed ones are skipped


def test_a_suite_run_leaves_every_global_random_generator_untouched(tmp_path: Path) -> None:
    """Randomness is explicit: a whole suite (learners and references) never draws from, or reseeds,
    the global numpy, torch or ``random`` generators."""
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()  # noqa: NPY002 - the global state is what this test watches
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    assert run(tiny_suite(seeds=[0]), tmp_path).ok
    after = np.random.get_state()  # noqa: NPY002
    assert np_state[0] == after[0] and (np_state[1] == after[1]).all() and np_state[2:] == after[2:]
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert py_state == random.getstate()
