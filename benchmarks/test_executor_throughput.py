"""Suite throughput of the executors, as ratios measured in the same process.

Run with ``pytest benchmarks/test_executor_throughput.py --benchmark-only -s`` (needs the ``ray``
extra for the second benchmark). Both time whole suites, start to finish, as a user sees them: worker
start-up and imports included.

* ``test_two_local_workers_vs_one``: a suite of 16 short RL² bandit runs (about 3.5 s each on one core)
  with a pool of 1 worker, a pool of 2, and ``--workers 1`` (runs in the driver's process, imports
  already paid). The speed-up is the pool-of-1 time over the pool-of-2 time (both pay worker start-up:
  the scaling of the pool); the in-process time over the pool-of-2 time is reported too (what a user
  gains going from ``--workers 1`` to ``--workers 2``). Target (the scale-out issue): ≥ 1.8 on 2 cores.
  Nothing else may run on the machine meanwhile. The manifests then split the time: the workers'
  start-up (suite time minus the span from the first run's start to the last run's end), and how much
  slower one run gets when both cores are busy (mean run time with 2 workers over 1: the hardware's
  share, e.g. a shared VM's second vCPU).
* ``test_ray_per_run_overhead``: 12 tiny runs on a local Ray instance with 2 CPUs (started once, its
  start-up reported apart) against the local pool of 2 workers; the per-run overhead is the difference
  in suite time × 2 workers / 12 runs.

Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from harness.run import executors
from harness.run.store import SuiteDir
from harness.spec.suite import parse_suite

RUNS = 16


def short_runs(runs: int, env_steps: int) -> dict[str, Any]:
    return {
        "name": "bench_executors",
        "seeds": list(range(runs)),
        "references": False,
        "families": [{"name": "bandit", "params": {"arms": 3, "pulls": 10}, "split": {"train": 200, "test": 50},
                      "tasks_per_iteration": 100}],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 32}}],
        "budget": {"env_steps": env_steps},
        "evaluation": {"every_env_steps": env_steps // 2, "train_tasks": 10},
    }


def run_times(results: Path) -> tuple[float, float]:
    """``(mean seconds per run, seconds from the first run's start to the last one's end)`` from the manifests."""
    manifests = SuiteDir(results).manifests()
    durations = [m["finished_at"] - m["started_at"] for m in manifests]
    span = max(m["finished_at"] for m in manifests) - min(m["started_at"] for m in manifests)
    return sum(durations) / len(durations), span


def timed(run: Any) -> float:
    start = time.perf_counter()
    outcome = run()
    assert outcome.ok, outcome.failed
    return time.perf_counter() - start


def test_two_local_workers_vs_one(benchmark: Any, tmp_path: Path) -> None:
    data = short_runs(RUNS, 40_000)
    suite = parse_suite(data)
    seconds: dict[str, float] = {}

    def local(label: str, workers: int, in_process: bool = False) -> None:
        seconds[label] = timed(lambda: executors.run_local(suite, tmp_path / label, workers=workers,
                                                           stream=io.StringIO(), in_process=in_process))

    local("in_process", 1, in_process=True)
    local("pool_1", 1)
    benchmark.pedantic(lambda: local("pool_2", 2), rounds=1, iterations=1)
    speedup = seconds["pool_1"] / seconds["pool_2"]
    versus_in_process = seconds["in_process"] / seconds["pool_2"]
    (run_1, span_1), (run_2, span_2) = run_times(tmp_path / "pool_1"), run_times(tmp_path / "pool_2")
    info = {"speedup": speedup, "speedup_vs_in_process": versus_in_process, "startup_pool_1_s":
            seconds["pool_1"] - span_1, "startup_pool_2_s": seconds["pool_2"] - span_2, "speedup_of_runs":
            span_1 / span_2, "run_slowdown_with_2": run_2 / run_1}
    benchmark.extra_info.update({f"{k}_s": round(v, 2) for k, v in seconds.items()},
                                **{k: round(v, 3) for k, v in info.items()})
    print(f"\n{RUNS} runs: pool of 1 {seconds['pool_1']:.1f}s, pool of 2 {seconds['pool_2']:.1f}s, in-process "
          f"{seconds['in_process']:.1f}s; speed-up with 2 workers {speedup:.2f}× (target ≥ 1.8), "
          f"{versus_in_process:.2f}× over --workers 1 in-process. Worker start-up {info['startup_pool_1_s']:.1f}s "
          f"/ {info['startup_pool_2_s']:.1f}s; runs alone {info['speedup_of_runs']:.2f}× faster with 2 workers, "
          f"each run {info['run_slowdown_with_2']:.2f}× slower when both cores are busy")


def test_ray_per_run_overhead(benchmark: Any, tmp_path: Path) -> None:
    import ray  # the ray extra
    runs = 12
    data = short_runs(runs, 2_000)
    suite = parse_suite(data)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    init_s = time.perf_counter() - start
    try:
        seconds: dict[str, float] = {}
        seconds["ray"] = timed(lambda: executors.run_ray(suite, tmp_path / "ray", stream=io.StringIO()))
        benchmark.pedantic(lambda: seconds.update(local=timed(lambda: executors.run_local(
            suite, data, tmp_path / "local", workers=2, stream=io.StringIO()))), rounds=1, iterations=1)
    finally:
        ray.shutdown()
    overhead = (seconds["ray"] - seconds["local"]) * 2 / runs
    benchmark.extra_info.update(ray_init_s=round(init_s, 2), ray_s=round(seconds["ray"], 2),
                                local_s=round(seconds["local"], 2), overhead_per_run_s=round(overhead, 3))
    print(f"\n{runs} tiny runs on 2 CPUs: Ray {seconds['ray']:.1f}s (after ray.init {init_s:.1f}s), local pool "
          f"{seconds['local']:.1f}s; Ray overhead {overhead:+.2f}s per run")
