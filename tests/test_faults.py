"""Fault tolerance of the local executors: SIGKILL at seeded random points, retries from the last
checkpoint, SIGTERM checkpoint-and-stop, a dead pool worker, and the locks.

Every recovery is judged by the rows: a recovered suite must end with exactly the rows of an
uninterrupted one (wall-clock time aside), none lost, none duplicated.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from algorithms.registry import registered
from algorithms.rl2 import RL2
from harness.cli import main
from harness.run.executors import run_local
from harness.run.store import RunKey, RunStore, SuiteDir, exclusive_lock
from harness.spec.suite import parse_suite

REPO = Path(__file__).resolve().parents[1]
KEY = RunKey("rl2", "bandit", 0)


def bandit_suite(env_steps: int = 40_000, checkpoint_every_iterations: int | None = 3, **overrides: Any
                 ) -> dict[str, Any]:  # fmt: skip
    """One RL² run on 3-arm, 10-pull bandits: 1000 env steps per iteration, an evaluation every 2000."""
    suite = {
        "name": "faults",
        "seeds": [0],
        "references": False,
        "families": [{"name": "bandit", "params": {"arms": 3, "pulls": 10}, "split": {"train": 200, "test": 50},
                      "tasks_per_iteration": 100}],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 32}}],
        "budget": {"env_steps": env_steps},
        "evaluation": {"every_env_steps": 2_000, "train_tasks": 10},
        "execution": {"checkpoint_every_iterations": checkpoint_every_iterations},
    }
    suite.update(overrides)
    return suite


def comparable(results: Path, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """All rows except wall-clock time, in a canonical order."""
    rows = SuiteDir(results).results().drop(columns=["wall_s", *drop])
    return rows.sort_values(list(rows.columns)).reset_index(drop=True)


_UNINTERRUPTED: dict[str, pd.DataFrame] = {}


def uninterrupted(suite: dict[str, Any], tmp_path_factory: Any) -> pd.DataFrame:
    """The rows of an uninterrupted run of ``suite`` (computed once per spec hash per session: the
    checkpoint cadence is not part of it, and does not change the rows)."""
    spec_hash = parse_suite(suite).spec_hash
    if spec_hash not in _UNINTERRUPTED:
        results = tmp_path_factory.mktemp("uninterrupted")
        assert run(suite, results, workers=2).ok
        _UNINTERRUPTED[spec_hash] = comparable(results)
    return _UNINTERRUPTED[spec_hash]


def run(suite: dict[str, Any], results: Path, workers: int = 1, **kwargs: Any) -> Any:
    return run_local(parse_suite(suite), results, workers=workers, stream=kwargs.pop("stream", io.StringIO()),
                     **kwargs)


def suite_file(tmp_path: Path, suite: dict[str, Any]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def cli(path: Path, results: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--results", str(results), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(predicate: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def iteration(results: Path, key: RunKey = KEY) -> int:
    """The run's iteration at its last checkpoint (-1 before the first)."""
    return int((RunStore(results, key).manifest() or {}).get("iteration", -1))


@pytest.mark.slow
def test_sigkill_at_seeded_random_points_resumes_to_exactly_the_rows_of_an_uninterrupted_run(
    tmp_path: Path, tmp_path_factory: Any, capsys: Any
) -> None:
    """Four SIGKILLs of the whole `harness run` process. Each lands at a random point drawn from a seeded
    generator: after a random checkpointed iteration, plus a random delay, so most land between two
    checkpoints with uncommitted work that resume must drop and recompute."""
    suite = bandit_suite()
    path = suite_file(tmp_path, suite)

    rng = np.random.default_rng(20261121)
    points = sorted(rng.choice(np.arange(3, 30), size=4, replace=False).tolist())
    delays = rng.uniform(0.0, 0.4, size=4)
    interrupted = tmp_path / "interrupted"
    for point, delay in zip(points, delays, strict=True):
        process = cli(path, interrupted, "--workers", "1")
        wait_for(lambda point=point: iteration(interrupted) >= point, f"iteration {point}")
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert (RunStore(interrupted, KEY).manifest() or {})["status"] == "running"  # killed mid-run
    assert main(["status", str(interrupted)]) == 0
    assert "rl2/bandit/seed=0  env steps" in (out := capsys.readouterr().out) and "no process is running it" in out
    assert cli(path, interrupted, "--workers", "1").wait() == 0

    resumed = comparable(interrupted)
    assert not resumed.duplicated().any()
    pd.testing.assert_frame_equal(uninterrupted(suite, tmp_path_factory), resumed)
    assert SuiteDir(interrupted).manifests()[0]["attempts"] == len(points) + 1
    assert not list(interrupted.rglob("*.tmp"))  # atomic writes leave no partial files behind


class _CountingRaiser(RL2):
    """RL² whose 2nd iteration (counted over the run, so also after a resume) always raises."""

    name = "test_raises_2nd"
    calls = 0

    def train_iteration(self, sampler: Any, tasks: Any) -> dict[str, float]:
        type(self).calls += 1
        if self.iterations == 1:
            raise RuntimeError("deliberate failure in iteration 2")
        return super().train_iteration(sampler, tasks)


class _FailsOnce(RL2):
    """RL² whose first attempt raises in its 3rd iteration; the retry succeeds."""

    name = "test_fails_once"
    failed = False

    def train_iteration(self, sampler: Any, tasks: Any) -> dict[str, float]:
        if self.iterations == 2 and not type(self).failed:
            type(self).failed = True
            raise RuntimeError("transient failure")
        return super().train_iteration(sampler, tasks)


@pytest.fixture
def faulty_learners() -> Iterator[None]:
    with ExitStack() as stack:
        for cls in (_CountingRaiser, _FailsOnce):
            stack.enter_context(registered(cls.name, cls))
        yield


@pytest.mark.usefixtures("faulty_learners")
def test_a_learner_raising_on_its_2nd_iteration_is_retried_from_its_checkpoint_then_marked_failed(
    tmp_path: Path, capsys: Any
) -> None:
    suite = bandit_suite(env_steps=5_000, checkpoint_every_iterations=1,
                         algorithms=[{"name": "test_raises_2nd", "config": {"hidden_size": 8}},
                                     {"name": "rl2", "config": {"hidden_size": 8}}])
    _CountingRaiser.calls = 0
    code = main(["run", str(suite_file(tmp_path, suite)), "--workers", "1", "--results", str(tmp_path / "r"),
                 "--max-retries", "2"])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.err.count("retrying test_raises_2nd/bandit/seed=0 from its last checkpoint") == 2
    assert "FAILED test_raises_2nd/bandit/seed=0: RuntimeError: deliberate failure in iteration 2" in captured.out
    # each retry resumed from the checkpoint after iteration 1: 2 calls, then 1 per retry (4, not 6)
    assert _CountingRaiser.calls == 4
    manifests = {m["algorithm"]: m for m in SuiteDir(tmp_path / "r").manifests()}
    failed = manifests["test_raises_2nd"]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert "Traceback" in failed["error"] and "deliberate failure in iteration 2" in failed["error"]
    assert manifests["rl2"]["status"] == "done"  # the other run finished
    assert set(RunStore(tmp_path / "r", RunKey("test_raises_2nd", "bandit", 0)).rows()["iteration"]) == {0, 1}


@pytest.mark.usefixtures("faulty_learners")
def test_a_transient_failure_is_retried_and_ends_with_the_rows_of_an_uninterrupted_run(tmp_path: Path) -> None:
    config = {"hidden_size": 8}
    _FailsOnce.failed = False
    flaky = run(bandit_suite(env_steps=6_000, algorithms=[{"name": "test_fails_once", "config": config}]),
                tmp_path / "flaky")
    assert flaky.ok and _FailsOnce.failed and flaky.retries[RunKey("test_fails_once", "bandit", 0)] == 1
    assert run(bandit_suite(env_steps=6_000, algorithms=[{"name": "rl2", "config": config}]), tmp_path / "plain").ok
    # the same learner seed (seeds are per family and seed, not per algorithm): the very same rows
    pd.testing.assert_frame_equal(comparable(tmp_path / "flaky", drop=("algorithm",)),
                                  comparable(tmp_path / "plain", drop=("algorithm",)))


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "sig"), [(1, signal.SIGTERM), (2, signal.SIGTERM), (2, signal.SIGKILL)],
                         ids=["sigterm-in-process", "sigterm-pool", "sigkill-driver-of-pool"])
def test_a_signalled_driver_checkpoints_and_stops_its_runs_and_the_same_command_resumes_exactly(
    tmp_path: Path, tmp_path_factory: Any, workers: int, sig: signal.Signals
) -> None:
    """SIGTERM: the driver asks its runs to checkpoint and stop. SIGKILL of a pool's driver: Linux sends
    the orphaned workers SIGTERM (PR_SET_PDEATHSIG), and they do the same on their own."""
    suite = bandit_suite(env_steps=30_000, checkpoint_every_iterations=None, seeds=[0, 1])
    path = suite_file(tmp_path, suite)
    results = tmp_path / "stopped"
    process = cli(path, results, "--workers", str(workers))
    wait_for(lambda: iteration(results) >= 5, "iteration 5")
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert process.returncode == 130, err.decode()
        assert "run the same command again" in err.decode()
    key = RunStore(results, KEY)
    wait_for(lambda: (key.manifest() or {}).get("status") == "interrupted", "the run to checkpoint and stop")
    manifest = key.manifest() or {}
    # with no periodic checkpoint due, only the signal could have committed it mid-way
    assert "SIGTERM received; checkpointed" in manifest["error"] and 5_000 <= manifest["env_steps"] < 30_000
    assert cli(path, results, "--workers", str(workers)).wait() == 0
    pd.testing.assert_frame_equal(uninterrupted(suite, tmp_path_factory), comparable(results))


@pytest.mark.slow
def test_a_pool_worker_killed_mid_run_is_replaced_and_its_run_retried_from_its_checkpoint(
    tmp_path: Path, tmp_path_factory: Any
) -> None:
    suite = bandit_suite(env_steps=30_000, seeds=[0, 1])

    results, stream = tmp_path / "killed", io.StringIO()
    import threading

    outcome: list[Any] = []
    driver = threading.Thread(target=lambda: outcome.append(run(suite, results, workers=2, stream=stream)))
    driver.start()
    wait_for(lambda: iteration(results) >= 4, "iteration 4")
    os.kill(RunStore(results, KEY).manifest()["pid"], signal.SIGKILL)
    driver.join(timeout=300)
    assert outcome and outcome[0].ok and outcome[0].retries == {KEY: 1}
    assert "worker process died (signal SIGKILL)" in stream.getvalue()
    assert RunStore(results, KEY).manifest()["attempts"] == 2
    pd.testing.assert_frame_equal(uninterrupted(suite, tmp_path_factory), comparable(results))


def test_a_second_invocation_on_the_same_results_is_refused_with_who_holds_it(tmp_path: Path, capsys: Any) -> None:
    suite = bandit_suite(env_steps=2_000)
    path, results = suite_file(tmp_path, suite), tmp_path / "r"
    with exclusive_lock(results / ".lock", f"results directory {results}"):  # another driver, as it were
        assert main(["run", str(path), "--workers", "1", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"results directory {results} is in use by pid {os.getpid()}" in err
    assert "wait for it to finish, or choose another --results directory" in err
    assert not (results / "runs").exists()  # nothing was written
    assert main(["run", str(path), "--workers", "1", "--results", str(results)]) == 0  # released: it runs


def test_a_run_being_written_by_another_process_is_left_alone_and_reported(tmp_path: Path, capsys: Any) -> None:
    suite = bandit_suite(env_steps=2_000, seeds=[0, 1])
    path, results = suite_file(tmp_path, suite), tmp_path / "r"
    with RunStore(results, KEY).lock():  # an orphaned worker of a dead driver, say
        assert main(["run", str(path), "--workers", "1", "--results", str(results)]) == 1
        out = capsys.readouterr().out
        assert f"NOT RUN rl2/bandit/seed=0: run rl2/bandit/seed=0 is in use by pid {os.getpid()}" in out
        assert RunStore(results, KEY).manifest() is None  # untouched
        assert RunStore(results, RunKey("rl2", "bandit", 1)).manifest()["status"] == "done"
    assert main(["run", str(path), "--workers", "1", "--results", str(results)]) == 0


def test_execution_resources_and_device_are_validated_and_left_out_of_the_spec_hash() -> None:
    from harness.spec.suite import SpecError

    base = bandit_suite()
    changed = bandit_suite(checkpoint_every_iterations=7)
    changed["execution"]["max_retries"] = 5
    changed["algorithms"][0]["resources"] = {"cpus": 2, "gpus": 0.5}
    changed["device"] = "cuda:1"
    assert parse_suite(base).spec_hash == parse_suite(changed).spec_hash  # resumable after changing them
    bad = bandit_suite()
    bad["execution"] = {"max_retries": -1, "checkpoint_every_s": 0, "retries": 1}
    bad["algorithms"][0]["resources"] = {"cpus": 0}
    bad["device"] = "gpu"
    with pytest.raises(SpecError) as error:
        parse_suite(bad)
    text = str(error.value)
    for key in ("execution.max_retries", "execution.checkpoint_every_s", "execution.retries",
                "algorithms[0].resources.cpus", "device"):
        assert key in text


def test_ray_executor_without_ray_installed_says_how_to_install_it(tmp_path: Path, monkeypatch: Any,
                                                                    capsys: Any) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    path = suite_file(tmp_path, bandit_suite(env_steps=2_000))
    assert main(["run", str(path), "--executor", "ray", "--results", str(tmp_path / "r")]) == 2
    assert "pip install -c constraints.txt -e '.[ray]'" in capsys.readouterr().err


def test_the_manifest_records_the_device_and_threads_a_run_used(tmp_path: Path, capsys: Any) -> None:
    import torch

    assert run(bandit_suite(env_steps=2_000), tmp_path / "r").ok
    manifest = RunStore(tmp_path / "r", KEY).manifest() or {}
    assert manifest["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and manifest["torch_threads"] == 1
    if not torch.cuda.is_available():  # asking for a GPU the machine lacks fails before anything runs
        path = suite_file(tmp_path, {**bandit_suite(env_steps=2_000), "device": "cuda"})
        assert main(["run", str(path), "--results", str(tmp_path / "cuda")]) == 2
        assert "device: cuda asked for, but this machine has no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "cuda").exists()


def test_a_pool_worker_that_died_while_idle_is_replaced_before_it_gets_a_run(tmp_path: Path) -> None:
    from harness.run.executors import _LocalPool, prepare

    suite = bandit_suite(env_steps=2_000)
    pool = _LocalPool(1)
    try:
        pool.workers[0].process.kill()  # e.g. the OOM killer, between two runs
        pool.workers[0].process.join()
        [context] = prepare(parse_suite(suite), tmp_path, retry_failed=False)
        pool.submit(context)
        results: list[Any] = []
        wait_for(lambda: results.extend(pool.poll(timeout=1.0)) or results, "the run")
        assert results[0][1]["status"] == "done"
    finally:
        pool.close(force=True)
