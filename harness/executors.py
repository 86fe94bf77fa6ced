"""Running a suite's grid of runs: the local process pool (default) and its progress display.

Each run is independent and writes only its own directory, so runs can execute in any order and in
any number of processes; the driver reads progress back from the runs' manifests.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.runner import RunContext, execute, learner_keys, reference_keys
from harness.spec import Suite
from harness.splits import build_splits, splits_payload
from harness.store import DONE, FAILED, RunKey, RunStore, init_suite_dir


@dataclass
class SuiteOutcome:
    """What happened to each run of a suite invocation."""

    done: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    failed: dict[RunKey, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _format_steps(steps: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if steps >= scale:
            return f"{steps / scale:.1f}{unit}"
    return f"{steps:.0f}"


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A one-line view of a suite's progress read from the runs' manifests."""

    def __init__(self, results_dir: Path, keys: list[RunKey], budgets: dict[tuple[str, str], int],
                 stream: TextIO) -> None:  # fmt: skip
        self.stores = [RunStore(results_dir, k) for k in keys if k.kind == "learner"]
        self.budgets = budgets
        self.total_runs = len(keys)
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_print = 0.0

    def line(self, finished: int, failed: int) -> str:
        total_steps = sum(self.budgets[(s.key.algorithm, s.key.family)] for s in self.stores)
        done_steps = 0
        for store in self.stores:
            manifest = store.manifest() or {}
            budget = self.budgets[(store.key.algorithm, store.key.family)]
            done_steps += budget if manifest.get("status") == DONE else min(manifest.get("env_steps", 0), budget)
        elapsed = time.monotonic() - self.started
        fraction = done_steps / total_steps if total_steps else 1.0
        eta = f"ETA {_format_seconds(elapsed * (1 - fraction) / fraction)}" if 0 < fraction < 1 else "ETA -"
        return (f"runs {finished}/{self.total_runs} finished, {failed} failed | env steps "
                f"{_format_steps(done_steps)}/{_format_steps(total_steps)} ({100 * fraction:.0f}%) | "
                f"elapsed {_format_seconds(elapsed)} | {eta}")

    def show(self, finished: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < (1.0 if self.tty else 15.0):
            return
        self.last_print = now
        text = self.line(finished, failed)
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if force else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def prepare(suite: Suite, suite_data: dict[str, Any], results_dir: Path, retry_failed: bool) -> list[RunContext]:
    """Write the suite's spec and splits into ``results_dir`` and list the runs still to execute."""
    splits = build_splits(suite)
    payload = splits_payload(suite, splits)
    init_suite_dir(results_dir, suite.resolved(), suite.spec_hash, payload)
    contexts = []
    for key in reference_keys(suite) + learner_keys(suite):
        manifest = RunStore(results_dir, key).manifest() or {}
        if manifest.get("status") == FAILED and not retry_failed:
            continue
        contexts.append(RunContext(suite_data, str(results_dir), key, suite.spec_hash, payload["hash"]))
    return contexts


def _record(outcome: SuiteOutcome, result: dict[str, Any]) -> None:
    key, status = result["key"], result["status"]
    if status == FAILED:
        outcome.failed[key] = result["error"] or ""
    elif status == "skipped":
        outcome.skipped.append(key)
    else:
        outcome.done.append(key)


def run_local(
    suite: Suite,
    suite_data: dict[str, Any],
    results_dir: Path,
    workers: int | None = None,
    retry_failed: bool = False,
    stream: TextIO = sys.stderr,
) -> SuiteOutcome:
    """Run every pending run of ``suite`` in a pool of ``workers`` processes (default: one per core).

    With ``workers == 1`` runs execute one after another in this process. A run that raises is marked
    failed with its traceback and the others go on. Runs marked failed by an earlier invocation are
    skipped unless ``retry_failed``.
    """
    workers = workers or os.cpu_count() or 1
    contexts = prepare(suite, suite_data, results_dir, retry_failed)
    outcome = SuiteOutcome()
    previously_failed = [k for k in reference_keys(suite) + learner_keys(suite)
                         if k not in {c.key for c in contexts}]
    for key in previously_failed:
        outcome.failed[key] = (RunStore(results_dir, key).manifest() or {}).get("error") or "failed earlier"
    budgets = {(a.key, f.key): a.budget(f)[0] for a in suite.algorithms for f in suite.families}
    progress = Progress(results_dir, [c.key for c in contexts], budgets, stream)
    stream.write(f"{suite.name}: {len(contexts)} runs ({workers} worker{'s' if workers > 1 else ''}) → {results_dir}\n")

    def finished() -> int:
        return len(outcome.done) + len(outcome.skipped) + len(outcome.failed) - len(previously_failed)

    if workers == 1:
        for context in contexts:
            _record(outcome, execute(context, lambda _: progress.show(finished(), len(outcome.failed))))
            progress.show(finished(), len(outcome.failed))
    else:
        _run_pool(contexts, workers, outcome, lambda: progress.show(finished(), len(outcome.failed)))
    progress.show(finished(), len(outcome.failed), force=True)
    return outcome


def _run_pool(contexts: list[RunContext], workers: int, outcome: SuiteOutcome, tick: Any) -> None:
    # spawn, not fork: a forked child would inherit the parent's torch thread pool state.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        keys: dict[Future[dict[str, Any]], RunContext] = {pool.submit(execute, c): c for c in contexts}
        pending = set(keys)
        try:
            while pending:
                completed, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in completed:
                    try:
                        _record(outcome, future.result())
                    except Exception as e:  # a worker process that died (e.g. killed by the OS)
                        context = keys[future]
                        error = f"worker process died: {e!r}"
                        RunStore(Path(context.results_dir), context.key).update_manifest(status=FAILED, error=error)
                        outcome.failed[context.key] = error
                tick()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
