"""``harness estimate`` and the ETA of ``harness run``/``status``: the extrapolation arithmetic against hand-worked
numbers, the CLI on a tiny suite, the cache, and the ETA on a simulated pool of cheap and expensive run kinds
(the clock and the manifests are simulated: nothing sleeps, nothing asserts wall-clock time)."""

from __future__ import annotations

import heapq
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from harness.cli import main
from harness.run import estimate
from harness.run.estimate import KindCost, kind_key, makespan, predict_run, training_schedule
from harness.run.executors import Progress
from harness.run.store import RunKey, RunStore
from harness.spec.suite import parse_suite

# --- the arithmetic ----------------------------------------------------------------------------------


def test_training_schedule_counts_iterations_and_evaluations_as_the_runner_does() -> None:
    # 1000 steps an iteration, budget 5000, every 2000: evaluations at 0, 2000, 4000 and 5000 (the end)
    assert training_schedule(1000, 1000, 5000, 2000) == (5, 4)
    # the budget is reached mid-iteration: 3 iterations (9000 steps); evaluations at 0 and at the end only
    assert training_schedule(3000, 3000, 7000, 10000) == (3, 2)
    # a first iteration with initial data (PEARL): 4300 steps, then 300 each; one evaluation per iteration at most,
    # so the counter catches up one multiple of 1000 per iteration: after 4300, 4600, 4900 and 5200 (the end)
    assert training_schedule(4300, 300, 5000, 1000) == (4, 5)
    # iterations larger than the interval: an evaluation after every iteration
    assert training_schedule(2500, 2500, 10000, 1000) == (4, 5)
    with pytest.raises(ValueError):
        training_schedule(0, 100, 1000, 100)


def test_predict_run_adds_up_the_parts_by_hand() -> None:
    cost = KindCost(setup_s=2.0, first_iteration_s=5.0, first_sampling_s=4.0, first_env_steps=4300, iteration_s=1.5,
                    sampling_s=0.5, env_steps=300, evaluation_s=3.0, commit_s=0.1)
    run = predict_run(cost, budget=5000, every=1000, checkpoint_every_s=60.0)
    assert (run.iterations, run.evaluations) == (4, 5)
    assert run.sampling_s == pytest.approx(4.0 + 3 * 0.5)  # 5.5
    assert run.updating_s == pytest.approx(1.0 + 3 * 1.0)  # 4.0
    assert run.evaluating_s == pytest.approx(5 * 3.0)  # 15.0
    # setup + (5 evaluations' checkpoints + 24.5 s / 60 s of periodic ones) × 0.1 s
    assert run.other_s == pytest.approx(2.0 + (5 + 24.5 / 60) * 0.1)
    assert run.total_s == pytest.approx(5.5 + 4.0 + 15.0 + run.other_s)


def test_makespan_schedules_in_order_on_the_first_free_worker() -> None:
    assert makespan([5, 3, 3, 1], 2) == 6  # w1: 5 then 1; w2: 3 then 3
    assert makespan([1, 1, 4], 2) == 5  # the long run last, as the pool would start it
    assert makespan(sorted([1, 1, 4], reverse=True), 2) == 4  # longest first
    assert makespan([3, 3], 2, busy=[10]) == 10  # a run already running with 10 s left holds one worker
    assert makespan([2, 2, 2], 1) == 6
    assert makespan([], 4) == 0


# --- the CLI -----------------------------------------------------------------------------------------

TINY = """
name: tiny
seed: 0
seeds: [0, 1]
families:
  - name: bandit
    params: {arms: 3, pulls: 5}
    split: {train: 20, test: 4}
    tasks_per_iteration: 10
    env_steps: 1000
    eval_every_env_steps: 500
  - name: point_nav
    params: {reward: dense}
    split: {train: 20, test: 4, ood: 2}
    episodes_per_trial: 2
    tasks_per_iteration: 10
    env_steps: 2000
    eval_every_env_steps: 1000
algorithms:
  - name: rl2
    config: {hidden_size: 16}
  - name: maml
    preset: cheap
    only: [point_nav]
  - name: pearl
    preset: cheap
    only: [point_nav]
    config: {sample_own_tasks: true, gradient_steps: 40}   # initial data on every training task, as oyster
budget: {env_steps: 1000}
evaluation: {every_env_steps: 500, train_tasks: 2}
"""
KINDS = ("rl2/bandit", "rl2/point_nav", "maml/point_nav", "pearl/point_nav")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(estimate, "startup_seconds", lambda: 1.5)  # not a subprocess per test
    monkeypatch.setattr(estimate, "MIN_STEADY_S", 0.0)  # the iterations asked for, no more
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines() if line.split() and "/" in line.split()[0]}


def test_estimate_prints_every_run_kind_then_reuses_the_cache(tiny: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert main(["estimate", str(tiny), "--workers", "2", "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    for kind in KINDS:
        assert kind in rows, out
        assert rows[kind][1] == "2"  # runs: 2 seeds
    assert "wall time on 2 workers" in out and "core-hours" in out and "dominant:" in out
    assert "references: 16 runs" in out  # bandit: 5 references, point_nav: 3; × 2 seeds
    # PEARL as released draws its own tasks: its first iteration's initial data is timed on a few and scaled
    assert "pearl/point_nav: first iteration's initial data timed on 1 of 20 training tasks" in out
    entries = json.loads((tiny.parent / "cache" / "metarl-harness" / "estimates.json").read_text())
    (host,) = entries
    pearl = next(e for e in entries[host].values() if e.get("kind") == "pearl/point_nav")["cost"]
    assert pearl["first_env_steps"] > pearl["env_steps"]  # the initial data, scaled to the 20 training tasks

    def no_timing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached cost was measured again")

    monkeypatch.setattr(estimate, "measure_kind", no_timing)
    monkeypatch.setattr(estimate, "measure_reference", no_timing)
    monkeypatch.setattr(estimate, "startup_seconds", no_timing)
    assert main(["estimate", str(tiny), "--workers", "2", "--cached"]) == 0
    cached = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind} (cached)" in cached
    # the same costs, so the same predictions
    assert [r[-2:] for r in _table_rows(cached).values()] == [r[-2:] for r in rows.values()]
    # a changed config is another kind: measured again
    tiny.write_text(TINY.replace("hidden_size: 16", "hidden_size: 32"))
    with pytest.raises(AssertionError, match="measured again"):
        main(["estimate", str(tiny), "--workers", "2", "--cached"])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread, as estimate_suite and the runner set (more on a busy machine only wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_fraction_of_an_iteration_scales_back_to_the_whole_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no time to spare every kind is timed on its least work; the env steps scaled back must be exactly a
    whole iteration's (point_nav episodes never end early)."""
    monkeypatch.setattr(estimate, "MIN_STEADY_S", 0.0)  # the iterations asked for, no more
    suite = parse_suite(yaml.safe_load(TINY))
    point_nav = suite.family("point_nav")
    rl2 = estimate.measure_kind(suite, suite.algorithm("rl2"), point_nav, budget_s=1e-9)
    assert rl2.env_steps == rl2.first_env_steps == 10 * 2 * 20  # tasks × episodes × steps
    assert "timed on 2 of 10 tasks × 1 of 2 episodes per trial" in rl2.notes and "1 of 4 epochs" in rl2.notes
    maml = estimate.measure_kind(suite, suite.algorithm("maml"), point_nav, budget_s=1e-9)
    assert maml.env_steps == 10 * 2 * 20  # a pre- and a post-update episode per task
    assert "timed on 2 of 10 tasks" in maml.notes
    # PEARL as released: 5 collected tasks × (a prior episode + 2 extra-RL episodes) of 20 steps per iteration,
    # and in the first, the initial data: 40 steps on each of the 20 training tasks
    pearl = estimate.measure_kind(suite, suite.algorithm("pearl"), point_nav, budget_s=1e-9)
    assert pearl.env_steps == 5 * 3 * 20
    assert pearl.first_env_steps == 5 * 3 * 20 + 20 * 40
    assert {"first iteration's initial data timed on 1 of 20 training tasks", "5 of 40 gradient steps",
            "1 of 5 collect tasks", "1 of 2 initial episodes"} <= set(pearl.notes)
    assert pearl.iteration_s > 0 and pearl.evaluation_s > 0


def test_kind_key_is_the_same_from_the_suite_and_from_its_results_directory() -> None:
    suite = parse_suite(yaml.safe_load(TINY))
    resolved = suite.resolved()
    written = yaml.safe_load(yaml.safe_dump({"spec": resolved}, sort_keys=False))["spec"]  # as suite.yaml holds it
    for algorithm in ("rl2", "maml", "pearl"):
        key = kind_key(resolved, algorithm, "point_nav", "cpu", 1)
        assert key == kind_key(written, algorithm, "point_nav", "cpu", 1)
    assert kind_key(resolved, "rl2", "point_nav", "cpu", 1) != kind_key(resolved, "rl2", "point_nav", "cpu", 2)
    assert kind_key(resolved, "rl2", "point_nav", "cpu", 1) != kind_key(resolved, "rl2", "bandit", "cpu", 1)


def test_a_malformed_suite_gets_the_same_errors_as_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    typo = "tasks_per_iteraton: 10\n    env_steps: 0"
    bad.write_text(TINY.replace("tasks_per_iteration: 10\n    env_steps: 1000", typo))
    assert main(["validate", str(bad)]) == 2
    expected = capsys.readouterr().err
    assert "tasks_per_iteraton: unknown key" in expected and "env_steps" in expected  # every problem, each named
    assert main(["estimate", str(bad)]) == 2
    assert capsys.readouterr().err == expected
    assert main(["estimate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- the ETA on a simulated pool -------------------------------------------------------------------


@dataclass(frozen=True)
class SimKind:
    """A run kind of the simulated suite: how its runs spend their time."""

    kind: tuple[str, str]
    runs: int
    budget: int
    every: int
    steps_per_iteration: int
    iteration_s: float
    first_extra_s: float  # the first iteration's extra (PEARL's initial data)
    eval_s: float
    setup_s: float
    drift: float = 0.0  # iterations get this much slower by the end of the run


# A quickstart-like mix: the seconds per env step differ 100-fold, and the expensive kind starts last.
MIX = (
    SimKind(("rl2", "bandit"), 3, 1_000_000, 100_000, 2500, 0.11, 0.0, 0.3, 1.0),
    SimKind(("trmrl", "bandit"), 3, 1_000_000, 100_000, 2500, 0.23, 0.0, 0.5, 1.5, drift=0.2),
    SimKind(("maml", "point_nav"), 3, 500_000, 50_000, 4000, 0.16, 0.0, 0.4, 1.0),
    SimKind(("pearl", "point_nav"), 3, 20_000, 4000, 300, 2.0, 10.0, 0.5, 1.0),
)


def _timeline(sim: SimKind, start: float, rng: np.random.Generator) -> list[tuple[float, dict[str, Any]]]:
    """The manifest of one run as the runner writes it: at its start, at every checkpoint (every evaluation and
    at least every 60 s) and when it is done; ``(time, manifest)`` pairs."""
    base = {"status": "running", "started_at": start, "attempts": 1}
    events = [(start, {**base, "updated_at": start, "env_steps": 0})]
    t = start + sim.setup_s + sim.eval_s  # the evaluation at 0, then a checkpoint
    events.append((t, {**base, "updated_at": t, "env_steps": 0}))
    steps, evaluations, last_commit, iteration = 0, 1, t, 0
    while steps < sim.budget:
        slower = 1.0 + sim.drift * steps / sim.budget
        t += sim.iteration_s * slower * rng.uniform(0.9, 1.1) + (sim.first_extra_s if iteration == 0 else 0.0)
        steps, iteration = steps + sim.steps_per_iteration, iteration + 1
        due = steps >= evaluations * sim.every or steps >= sim.budget
        if due:
            t += sim.eval_s
            evaluations += 1
        if due or t - last_commit >= 60:
            events.append((t, {**base, "updated_at": t, "env_steps": steps}))
            last_commit = t
    events.append((t, {**base, "status": "done", "updated_at": t, "finished_at": t, "env_steps": steps}))
    return events


def _simulate(workers: int) -> tuple[list[RunKey], dict[RunKey, list[tuple[float, dict[str, Any]]]], float]:
    """Runs started in the suite's order on the first free worker, as the local pool does."""
    rng = np.random.default_rng(0)
    keys = [RunKey(*sim.kind, seed) for sim in MIX for seed in range(sim.runs)]
    sims = {key: sim for sim in MIX for key in keys if (key.algorithm, key.family) == sim.kind}
    free = [0.0] * workers
    timelines = {}
    for key in keys:
        start = heapq.heappop(free)
        timelines[key] = _timeline(sims[key], start, rng)
        heapq.heappush(free, timelines[key][-1][0])
    return keys, timelines, max(free)


def _manifests_at(timelines: dict[RunKey, list[tuple[float, dict[str, Any]]]], now: float
                  ) -> dict[RunKey, dict[str, Any] | None]:  # fmt: skip
    return {key: next((m for t, m in reversed(events) if t <= now), None) for key, events in timelines.items()}


def _etas(priors: dict[tuple[str, str], float] | None, workers: int = 2) -> list[tuple[float, float, Any]]:
    """``(time, true remaining seconds, Eta)`` every 30 simulated seconds."""
    keys, timelines, end = _simulate(workers)
    budgets = {sim.kind: sim.budget for sim in MIX}
    progress = Progress(Path("/nonexistent"), keys, budgets, io.StringIO(), workers=workers, priors=priors)
    return [(now, end - now, progress.eta(_manifests_at(timelines, now), now))
            for now in np.arange(30.0, end, 30.0)]


def _true_run_seconds() -> dict[tuple[str, str], float]:
    _, timelines, _ = _simulate(2)
    seconds: dict[tuple[str, str], list[float]] = {}
    for key, events in timelines.items():
        seconds.setdefault((key.algorithm, key.family), []).append(events[-1][0] - events[0][0])
    return {kind: float(np.mean(s)) for kind, s in seconds.items()}


@pytest.mark.parametrize("slowdown", [1.0, 2.0])
def test_eta_with_cached_costs_never_underestimates_by_more_than_30_percent_after_a_minute(slowdown: float) -> None:
    # costs cached by `harness estimate`, each off by up to 20% (the expensive kind under-estimated), and measured
    # on an idle core while the runs here get half a core each (slowdown 2: a busy machine)
    errors = {("rl2", "bandit"): 1.2, ("trmrl", "bandit"): 0.85, ("maml", "point_nav"): 1.1,
              ("pearl", "point_nav"): 0.8}
    priors = {kind: seconds * errors[kind] / slowdown for kind, seconds in _true_run_seconds().items()}
    samples = _etas(priors)
    assert len(samples) > 10
    for now, remaining, eta in samples:
        assert eta.seconds is not None and not eta.guessed
        if now >= 60:
            assert eta.seconds >= 0.7 * remaining, (now, remaining, eta)
    # and it is not wildly pessimistic either
    assert all(eta.seconds <= 2.0 * remaining + 60 for now, remaining, eta in samples if now >= 60)


def test_eta_without_cached_costs_names_the_kinds_it_guesses_and_holds_once_every_kind_is_timed() -> None:
    samples = _etas(None)
    keys, timelines, _ = _simulate(2)
    pearl_started = min(timelines[k][0][0] for k in keys if k.algorithm == "pearl")
    guessed_before = [eta for now, _, eta in samples if 60 <= now < pearl_started]
    assert guessed_before and all(("pearl", "point_nav") in eta.guessed for eta in guessed_before)
    assert guessed_before[-1].text().endswith("(not timed yet: pearl/point_nav)")
    timed = [(now, remaining, eta) for now, remaining, eta in samples if now >= 60 and not eta.guessed]
    assert timed
    for now, remaining, eta in timed:
        assert eta.seconds >= 0.7 * remaining, (now, remaining, eta)
    # the old ETA (the fraction of env steps done) said "almost done" while PEARL's runs had most of their time
    # ahead: the env steps of the expensive kind are 1% of the suite's
    last_quarter = [(now, remaining, eta) for now, remaining, eta in timed if remaining > 100]
    assert last_quarter and all(eta.seconds >= 0.7 * remaining for _, remaining, eta in last_quarter)


# --- `harness status` --------------------------------------------------------------------------------


def test_status_prints_an_eta_from_the_running_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    suite = parse_suite(yaml.safe_load(TINY))
    results = tmp_path / "results"
    results.mkdir()
    (results / "suite.yaml").write_text(yaml.safe_dump({"spec_hash": suite.spec_hash, "spec": suite.resolved()}))
    now = time.time()
    done, running = RunStore(results, RunKey("rl2", "bandit", 0)), RunStore(results, RunKey("rl2", "bandit", 1))
    done.update_manifest(status="done", started_at=now - 100, finished_at=now - 50, env_steps=1000,
                         env_steps_budget=1000, attempts=1)  # 50 s per 1000 env steps
    running.update_manifest(status="running", started_at=now - 30, env_steps=500, env_steps_budget=1000, attempts=1)
    with running.lock():
        assert main(["status", str(results)]) == 0
    out = capsys.readouterr().out
    # the running run has ~25 s left; 6 pending runs (rl2/point_nav ×2 guessed at the same rate, maml, pearl)
    # follow on the one worker running now: ETA of minutes, marked as a guess for the kinds not started
    assert "ETA ~" in out and "not timed yet: rl2/point_nav" in out and "1 at a time" in out
    # the 6 learner runs with no manifest yet are counted and listed, not left out of the total
    assert "2 runs — 1 done, 1 running; 6 learner run(s) not started" in out
    assert "  not started rl2/point_nav/seed=1" in out and "  not started pearl/point_nav/seed=0" in out
    assert main(["status", str(results)]) == 0  # nobody holds the lock now
    assert "no run is being written now" in capsys.readouterr().out
