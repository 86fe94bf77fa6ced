"""Reusing the runs of an earlier results directory whose inputs a changed suite leaves unchanged: the suite
ends with exactly the rows a fresh run of it writes, and only the changed runs are run."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.run.executors import run_local
from harness.run.reuse import reuse, run_inputs
from harness.run.store import RunKey, RunStore, SuiteDir, SuiteMismatchError
from harness.spec.suite import parse_suite

REPO = Path(__file__).resolve().parents[1]


def suite(small_hidden: int = 8, point_nav_steps: int = 5, env_steps: int = 300, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": "reuse",
        "seeds": [0],
        "families": [
            {"name": "bandit", "params": {"arms": 3, "pulls": 5}, "split": {"train": 40, "test": 8},
             "tasks_per_iteration": 10},
            {"name": "point_nav", "params": {"episode_steps": point_nav_steps}, "split": {"train": 20, "test": 4},
             "tasks_per_iteration": 5},
        ],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 16, "epochs": 2}},
                       {"name": "rl2", "id": "rl2_small", "config": {"hidden_size": small_hidden, "epochs": 2}}],
        "budget": {"env_steps": env_steps},
        "evaluation": {"every_env_steps": 100, "train_tasks": 3},
    }
    data.update(overrides)
    return data


def run(spec: dict[str, Any], results: Path) -> Any:
    return run_local(parse_suite(spec), results, workers=1, stream=io.StringIO())


def comparable(results: Path) -> pd.DataFrame:
    rows = SuiteDir(results).results().drop(columns="wall_s")
    return rows.sort_values(list(rows.columns)).reset_index(drop=True)


def actions(outcome: list[Any]) -> dict[str, str]:
    return {entry.key.label: entry.action for entry in outcome}


def test_a_changed_learner_reruns_only_its_runs_and_the_suite_ends_with_a_fresh_runs_rows(tmp_path: Path) -> None:
    assert run(suite(), tmp_path / "before").ok
    changed = parse_suite(suite(small_hidden=12))
    outcome = reuse(changed, tmp_path / "after", tmp_path / "before")
    done = actions(outcome)
    assert {label for label, action in done.items() if action == "not reused"} == {
        "rl2_small/bandit/seed=0", "rl2_small/point_nav/seed=0"}
    assert done["rl2/bandit/seed=0"] == done["ref-random/point_nav/seed=0"] == "adopted"
    reason = next(e.detail for e in outcome if e.key.label == "rl2_small/bandit/seed=0")
    assert reason == "its algorithm's config changed"

    result = run_local(changed, tmp_path / "after", workers=1, stream=io.StringIO())
    assert {k.algorithm for k in result.done} == {"rl2_small"}  # the rest was adopted, not re-run
    assert run(suite(small_hidden=12), tmp_path / "fresh").ok
    pd.testing.assert_frame_equal(comparable(tmp_path / "after"), comparable(tmp_path / "fresh"))

    manifest = RunStore(tmp_path / "after", RunKey("rl2", "bandit", 0)).manifest() or {}
    assert manifest["spec_hash"] == changed.spec_hash
    assert manifest["reused_from"]["spec_hash"] == parse_suite(suite()).spec_hash
    assert not (tmp_path / "after" / "runs" / "rl2" / "bandit" / "seed=0" / "checkpoint.pt").exists()  # done: rows only


def test_a_changed_family_reuses_nothing_of_it_and_nothing_already_there_is_replaced(tmp_path: Path) -> None:
    assert run(suite(), tmp_path / "before").ok
    changed = parse_suite(suite(point_nav_steps=6))
    done = actions(reuse(changed, tmp_path / "after", tmp_path / "before"))
    assert all(action == "not reused" for label, action in done.items() if "/point_nav/" in label)
    assert all(action == "adopted" for label, action in done.items() if "/bandit/" in label)
    again = actions(reuse(changed, tmp_path / "after", tmp_path / "before"))
    assert all(action == "kept" for label, action in again.items() if "/bandit/" in label)


def test_run_inputs_leave_out_what_does_not_reach_a_run(tmp_path: Path) -> None:
    base = parse_suite(suite())
    other = parse_suite(suite(name="renamed", seeds=[0, 1], execution={"checkpoint_every_iterations": 7}))
    assert base.spec_hash != other.spec_hash
    from harness.spec.splits import build_splits, splits_payload

    key = RunKey("rl2", "bandit", 0)
    inputs = [run_inputs(s.resolved(), splits_payload(s, build_splits(s)), key) for s in (base, other)]
    assert inputs[0] is not None and inputs[0] == inputs[1]
    assert run_inputs(base.resolved(), splits_payload(base, build_splits(base)), RunKey("maml", "bandit", 0)) is None


def test_a_committed_export_whose_task_params_were_elided_is_reused_as_the_full_splits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from harness.run import store
    from harness.spec.splits import build_splits, elide_task_params, splits_payload

    base = parse_suite(suite())
    full = splits_payload(base, build_splits(base))
    key = RunKey("rl2", "bandit", 0)
    assert run_inputs(base.resolved(), elide_task_params(full), key) == run_inputs(base.resolved(), full, key)
    other = parse_suite(suite(seed=1))  # other task parameters under the same task ids
    assert run_inputs(base.resolved(), elide_task_params(splits_payload(other, build_splits(other))), key) != \
        run_inputs(base.resolved(), full, key)

    assert run(suite(), tmp_path / "before").ok
    monkeypatch.setattr(store, "INLINE_TASKS_LIMIT", 100)
    SuiteDir(tmp_path / "before").copy_to(SuiteDir(tmp_path / "export"), timings=True)
    assert "elided" in SuiteDir(tmp_path / "export").tasks()
    done = actions(reuse(parse_suite(suite(small_hidden=12)), tmp_path / "after", tmp_path / "export"))
    assert done["rl2/bandit/seed=0"] == done["ref-random/point_nav/seed=0"] == "adopted"
    assert done["rl2_small/bandit/seed=0"] == "not reused"


def test_the_cli_reports_each_run_and_refuses_a_directory_of_another_spec(tmp_path: Path, capsys: Any) -> None:
    assert run(suite(), tmp_path / "before").ok
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite(small_hidden=12)))
    assert main(["reuse", str(path), "--from", str(tmp_path / "before"), "--results", str(tmp_path / "after")]) == 0
    out = capsys.readouterr().out
    assert "adopted" in out and "rl2_small/bandit/seed=0" in out and "runs reused from" in out
    assert main(["reuse", str(path), "--from", str(tmp_path / "nowhere"), "--results", str(tmp_path / "x")]) == 2
    assert "holds no suite" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "after")]) == 0
    status = capsys.readouterr().out
    assert f"rl2/bandit/seed=0  env steps 300/300  [reused from spec {parse_suite(suite()).spec_hash}]" in status
    # the earlier directory is not the new suite's: refused, untouched
    with pytest.raises(SuiteMismatchError):
        reuse(parse_suite(suite(small_hidden=12)), tmp_path / "before", tmp_path / "after")


@pytest.mark.slow
def test_an_interrupted_run_is_adopted_with_its_checkpoint_and_resumes_to_a_fresh_runs_rows(tmp_path: Path) -> None:
    spec = suite(env_steps=10_000, references=False, families=[suite()["families"][0]],
                 evaluation={"every_env_steps": 500, "train_tasks": 3}, execution={"checkpoint_every_iterations": None})
    path = tmp_path / "before.yaml"
    path.write_text(yaml.safe_dump(spec))
    process = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results",
                                str(tmp_path / "before"), "--workers", "1"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    store = RunStore(tmp_path / "before", RunKey("rl2", "bandit", 0))
    deadline = time.monotonic() + 120
    while int((store.manifest() or {}).get("iteration", -1)) < 3:  # its first checkpoint after the start
        assert time.monotonic() < deadline, "timed out waiting for the run's first checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert (store.manifest() or {})["status"] == "interrupted"

    changed = {**spec, "algorithms": [spec["algorithms"][0], {**spec["algorithms"][1], "config": {"hidden_size": 12}}]}
    done = actions(reuse(parse_suite(changed), tmp_path / "after", tmp_path / "before"))
    assert done["rl2/bandit/seed=0"] == "adopted"
    assert (tmp_path / "after" / "runs" / "rl2" / "bandit" / "seed=0" / "checkpoint.pt").exists()
    assert run(changed, tmp_path / "after").ok
    assert run(changed, tmp_path / "fresh").ok
    pd.testing.assert_frame_equal(comparable(tmp_path / "after"), comparable(tmp_path / "fresh"))
