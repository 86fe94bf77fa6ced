"""The results directory API: ``SuiteDir`` and ``RunStore`` are the only code that reads or writes one."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.run.executors import prepare, run_local
from harness.run.runner import execute
from harness.run.store import RunKey, RunStatus, SuiteDir, SuiteMismatchError, git_commit
from harness.spec.splits import build_splits, splits_payload
from harness.spec.suite import parse_suite


def bandit_suite(env_steps: int = 2_000) -> dict[str, Any]:
    """One small RL² run on 3-arm bandits: 1000 env steps per iteration, a checkpoint every iteration."""
    return {
        "name": "store", "seeds": [0], "references": False,
        "families": [{"name": "bandit", "params": {"arms": 3, "pulls": 10}, "split": {"train": 100, "test": 20},
                      "tasks_per_iteration": 100}],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 8}}],
        "budget": {"env_steps": env_steps},
        "evaluation": {"every_env_steps": 2_000, "train_tasks": 0},
        "execution": {"checkpoint_every_iterations": 1},
    }  # fmt: skip


def test_a_worker_refuses_a_suite_other_than_the_results_directorys_and_touches_nothing(tmp_path: Path) -> None:
    [context] = prepare(parse_suite(bandit_suite(env_steps=2_000)), tmp_path, retry_failed=False)
    other = parse_suite(bandit_suite(env_steps=4_000))
    assert other.spec_hash != context.spec_hash
    outcome = execute(dataclasses.replace(context, suite=other))
    assert outcome["status"] == RunStatus.FAILED
    assert f"holds spec {context.spec_hash}, this worker's suite is {other.spec_hash}" in outcome["error"]
    assert not SuiteDir(tmp_path).run_dirs()  # no manifest, no rows: the run directory was not touched
    assert execute(context)["status"] == RunStatus.DONE  # the driver's own suite runs


def test_init_refuses_another_spec_or_split(tmp_path: Path) -> None:
    suite = parse_suite(bandit_suite())
    payload = splits_payload(suite, build_splits(suite))
    suite_dir = SuiteDir(tmp_path / "r")
    suite_dir.init(suite.resolved(), suite.spec_hash, payload)
    suite_dir.init(suite.resolved(), suite.spec_hash, payload)  # the same suite again: resumable
    assert (suite_dir.spec_hash(), suite_dir.tasks_hash()) == (suite.spec_hash, payload["hash"])
    with pytest.raises(SuiteMismatchError, match="holds results of another spec"):
        suite_dir.init(suite.resolved(), "0" * 16, payload)
    with pytest.raises(SuiteMismatchError, match="holds results for other task splits"):
        suite_dir.init(suite.resolved(), suite.spec_hash, {**payload, "hash": "other"})


def test_copy_to_keeps_the_numbers_and_drops_checkpoints_and_timings(tmp_path: Path) -> None:
    source = SuiteDir(tmp_path / "run")
    assert run_local(parse_suite(bandit_suite(env_steps=4_000)), source.path, workers=1).ok
    assert list(source.path.glob("runs/**/checkpoint.pt"))
    target = SuiteDir(tmp_path / "copy")
    assert source.copy_to(target) == len(source.run_dirs())
    assert not list(target.path.glob("runs/**/checkpoint.pt"))
    assert (target.spec_hash(), target.tasks_hash()) == (source.spec_hash(), source.tasks_hash())
    assert target.tasks() == source.tasks() and "\n" not in target.tasks_path.read_text().strip()
    copied, original = target.results(), source.results()
    assert (copied["wall_s"] == 0).all()
    assert copied.drop(columns="wall_s").equals(original.drop(columns="wall_s"))
    [manifest] = target.manifests()
    assert manifest["status"] == RunStatus.DONE and not {"started_at", "finished_at", "updated_at"} & set(manifest)
    assert json.loads((target.run_dirs()[0] / "manifest.json").read_text())["status"] == "done"  # plain text


def test_copy_to_leaves_out_task_params_past_the_limit_and_keeps_their_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from harness.analysis.report import read_meta
    from harness.run import store
    from harness.spec.splits import family_tasks_identity

    source = SuiteDir(tmp_path / "run")
    assert run_local(parse_suite(bandit_suite(env_steps=2_000)), source.path, workers=1).ok
    monkeypatch.setattr(store, "INLINE_TASKS_LIMIT", 1_000)
    target = SuiteDir(tmp_path / "copy")
    source.copy_to(target)
    full, elided = source.tasks()["families"]["bandit"], target.tasks()["families"]["bandit"]
    assert "splits" not in elided and "elided" in target.tasks()
    assert elided["task_ids"] == {name: [t["task_id"] for t in tasks] for name, tasks in full["splits"].items()}
    assert family_tasks_identity(elided) == family_tasks_identity(full)
    assert target.tasks_hash() == source.tasks_hash() and read_meta(target.path)["tasks_hash"] == source.tasks_hash()
    assert target.results().drop(columns="wall_s").equals(source.results().drop(columns="wall_s"))
    # the suite runs on in the copy: its splits are re-drawn and match the hash
    assert run_local(parse_suite(bandit_suite(env_steps=2_000)), target.path, workers=1).ok


def test_export_copies_a_finished_suite_with_its_timings_and_refuses_an_unfinished_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    source = SuiteDir(tmp_path / "run")
    assert run_local(parse_suite(bandit_suite(env_steps=2_000)), source.path, workers=1).ok
    assert main(["export", str(source.path), str(tmp_path / "out")]) == 0
    assert "1 runs exported" in capsys.readouterr().out
    out = SuiteDir(tmp_path / "out")
    assert out.results().equals(source.results())  # wall_s kept: what the runs cost
    assert "finished_at" in out.manifests()[0] and not list(out.path.glob("runs/**/checkpoint.pt"))

    source.run(RunKey("rl2", "bandit", 0)).update_manifest(status=RunStatus.RUNNING)
    assert main(["export", str(source.path), str(tmp_path / "out")]) == 2
    assert "1 run(s) not done (e.g. rl2/bandit/seed=0: running)" in capsys.readouterr().err
    assert main(["export", str(source.path), str(tmp_path / "out"), "--partial"]) == 0
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2


def test_a_commit_is_dirty_only_when_code_has_uncommitted_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    files = {"harness/run/x.py": "a = 1\n", "README.md": "# r\n", "results/reference/s/rows.txt": "1\n",
             "suites/s.yaml": "name: s\n", "tests/test_x.py": "\n", "docs/notes.md": "n\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    inside = tmp_path / "harness" / "run"
    clean = git_commit(inside)
    assert clean is not None and len(clean) == 40
    for name in ("README.md", "results/reference/s/rows.txt", "suites/s.yaml", "tests/test_x.py", "docs/notes.md"):
        (tmp_path / name).write_text("changed\n")
    (tmp_path / "untracked.py").write_text("b = 2\n")
    assert git_commit(inside) == clean  # prose, results, specs, tests and untracked files: not the code
    (tmp_path / "harness/run/x.py").write_text("a = 2\n")
    assert git_commit(inside) == clean + "+dirty"
    assert git_commit(tmp_path.parent) is None  # not a checkout
