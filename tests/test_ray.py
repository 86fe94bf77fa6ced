"""The Ray executor on a real local Ray instance (``ray.init(num_cpus=2)``): the same rows as the local
executor, and a Ray worker killed mid-run is rescheduled and resumes from its checkpoint."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
from test_external import EXAMPLE, LEARNER
from test_external import suite as external_suite
from test_faults import KEY, bandit_suite, comparable, iteration, uninterrupted, wait_for
from test_runner import tiny_suite

from harness.run.executors import run_local, run_ray
from harness.run.store import RunKey, RunStore, SuiteDir
from harness.spec.suite import parse_suite

# One worker runs this module under pytest-xdist (`--dist loadgroup`), so one Ray instance starts, not one per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_a_suite_gives_the_same_rows_under_ray_as_under_the_local_executor(tmp_path: Path, local_ray: None) -> None:
    suite = tiny_suite()  # rl2 on bandit and point_nav, 2 seeds, with the reference policies
    stream = io.StringIO()
    outcome = run_ray(parse_suite(suite), tmp_path / "ray", stream=stream)
    assert outcome.ok and len(outcome.done) == len(SuiteDir(tmp_path / "ray").manifests())
    assert "Ray cluster (2 CPUs)" in stream.getvalue()
    assert run_local(parse_suite(suite), tmp_path / "local", workers=1, stream=io.StringIO()).ok
    local = comparable(tmp_path / "local")
    assert len(local) > 0 and set(local["kind"]) == {"learner", "reference"}
    pd.testing.assert_frame_equal(comparable(tmp_path / "ray"), local)
    # a second invocation finds every run done
    again = run_ray(parse_suite(suite), tmp_path / "ray", stream=io.StringIO())
    assert again.ok and not again.done and len(again.skipped) == len(outcome.done)


def test_a_ray_worker_killed_mid_run_is_rescheduled_and_resumes_exactly(tmp_path: Path, tmp_path_factory: Any,
                                                                        local_ray: None) -> None:  # fmt: skip
    suite = bandit_suite(env_steps=30_000, seeds=[0, 1])

    results, stream, outcome = tmp_path / "killed", io.StringIO(), []

    def drive() -> None:
        outcome.append(run_ray(parse_suite(suite), results, stream=stream))

    driver = threading.Thread(target=drive)
    driver.start()
    wait_for(lambda: iteration(results) >= 4, "iteration 4")
    worker_pid = RunStore(results, KEY).manifest()["pid"]
    assert worker_pid != os.getpid()
    os.kill(worker_pid, signal.SIGKILL)
    driver.join(timeout=300)
    assert outcome and outcome[0].ok, stream.getvalue()
    assert outcome[0].retries == {KEY: 1}
    assert "Ray worker died during the run" in stream.getvalue()
    manifest = RunStore(results, KEY).manifest()
    assert manifest["attempts"] == 2 and manifest["pid"] != worker_pid  # rescheduled on another worker
    assert RunStore(results, RunKey("rl2", "bandit", 1)).manifest()["attempts"] == 1
    pd.testing.assert_frame_equal(uninterrupted(suite, tmp_path_factory), comparable(results))


def test_resources_become_the_ray_task_request_and_the_torch_threads(tmp_path: Path, local_ray: None) -> None:
    suite: dict[str, Any] = bandit_suite(env_steps=2_000)
    suite["algorithms"][0]["resources"] = {"cpus": 2}
    assert run_ray(parse_suite(suite), tmp_path, stream=io.StringIO()).ok
    assert RunStore(tmp_path, KEY).manifest()["torch_threads"] == 2
    too_big = bandit_suite(env_steps=2_000)
    too_big["algorithms"][0]["resources"] = {"cpus": 1, "gpus": 1}  # this cluster has no GPU
    # Ray would queue the task forever; the harness must not hang silently: it refuses up front
    with pytest.raises(ValueError, match=r"resources: each run asks for 1 GPU but the Ray cluster has 0"):
        run_ray(parse_suite(too_big), tmp_path / "gpu", stream=io.StringIO())


def test_ray_workers_import_an_external_learner_from_the_drivers_path(tmp_path: Path, local_ray: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package is on the driver's ``sys.path`` only (not ``PYTHONPATH``), put there after the Ray
    workers started: they get the driver's path entries with each run, before they unpickle it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert "metarl_example" not in os.environ.get("PYTHONPATH", "")
    outcome = run_ray(parse_suite(external_suite()), tmp_path, stream=io.StringIO())
    assert outcome.ok, outcome.failed
    manifest = RunStore(tmp_path, RunKey("reinforce_counts", "gaussian_bandit", 0)).manifest() or {}
    assert manifest["status"] == "done" and manifest["external_learner"]["import_path"] == LEARNER
