"""Running a suite's grid of runs: in this process, in a local pool of worker processes (default), or
as Ray tasks on a cluster; retries, interrupts and the progress display.

Each run is independent and writes only its own directory, so runs can execute in any order, in any
number of processes and on any machine that sees the results directory; the driver reads progress back
from the runs' manifests. One driver loop serves every backend, so they share their guarantees:

* a run that raises, or whose worker dies, is retried ``execution.max_retries`` times from its last
  checkpoint, then marked ``failed`` with its traceback, and the other runs go on;
* SIGINT/SIGTERM to the driver asks every running run to checkpoint at the end of its current iteration
  and stop (a second Ctrl-C stops at once); the same command resumes them;
* one driver at a time per results directory (a lock), and one writer at a time per run.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol, TextIO

from algorithms.registry import BUILTIN_LEARNERS, learner_class
from harness.references import trained_references
from harness.run.estimate import cached_run_seconds, format_seconds, makespan
from harness.run.runner import RunContext, execute, learner_keys, reference_keys, resolve_device
from harness.run.store import REFERENCE_PREFIX, RunKey, RunStatus, RunStore, SuiteDir, exclusive_lock
from harness.spec.splits import build_splits, splits_payload
from harness.spec.suite import Suite
from harness.tasks.registry import BUILTIN_FAMILIES, family_class

#: Seconds the driver waits, after SIGINT/SIGTERM, for running runs to checkpoint and stop.
STOP_GRACE_S = 120.0


@dataclass
class SuiteOutcome:
    """What happened to each run of a suite invocation."""

    done: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    failed: dict[RunKey, str] = field(default_factory=dict)
    locked: dict[RunKey, str] = field(default_factory=dict)  # being written by another process: untouched
    interrupted: list[RunKey] = field(default_factory=list)
    retries: Counter[RunKey] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.locked and not self.interrupted


def _format_steps(steps: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if steps >= scale:
            return f"{steps / scale:.1f}{unit}"
    return f"{steps:.0f}"


# --- the ETA -----------------------------------------------------------------------------------------
# Runs of different algorithms cost very differently per env step (PEARL's gradient steps against RL²'s
# cheap updates), so the ETA is not the fraction of env steps done: each run kind (algorithm, family) gets
# its own measured seconds per env step, from its runs' manifests (status, env steps at the last checkpoint,
# when the attempt started and when the manifest was last written), and the remaining runs are scheduled
# over the workers in the order they will start.


@dataclass(frozen=True)
class RunObservation:
    """What the manifests say of one run, for the ETA.

    Attributes:
        kind: ``(algorithm, family)``.
        reference: a reference run (one evaluation; no env-step budget).
        budget: the run's env-step budget (0 for a reference).
        status: ``pending`` (no manifest yet), ``running``, ``done``, ``failed`` or ``interrupted``.
        env_steps: env steps at the last checkpoint.
        measured_s: seconds the run took to make ``measured_steps`` env steps (a reference: to finish).
        measured_steps: env steps made in ``measured_s``.
        elapsed_s: a running run: seconds since its attempt started.
        since_update_s: a running run: seconds since its manifest was last written (work not yet counted).
    """

    kind: tuple[str, str]
    reference: bool
    budget: int
    status: str
    env_steps: int = 0
    measured_s: float = 0.0
    measured_steps: int = 0
    elapsed_s: float = 0.0
    since_update_s: float = 0.0


@dataclass(frozen=True)
class Eta:
    """Seconds until the last run ends (None before anything can be said), and the run kinds whose cost is
    a guess (not started yet, no cost cached by ``harness estimate``): the mean of the started kinds."""

    seconds: float | None
    guessed: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        if self.seconds is None:
            return "ETA -"
        if not self.guessed:
            return f"ETA {format_seconds(self.seconds)}"
        kinds = ", ".join("/".join(k) for k in self.guessed[:3]) + (", …" if len(self.guessed) > 3 else "")
        return f"ETA ~{format_seconds(self.seconds)} (not timed yet: {kinds})"


def observe(kind: tuple[str, str], reference: bool, budget: int, manifest: dict[str, Any] | None, now: float,
            steps_at_start: int | None = None, measured: tuple[float, int] | None = None
            ) -> RunObservation:  # fmt: skip
    """A run's observation from its manifest at wall-clock time ``now`` (``time.time()``).

    ``steps_at_start``: the env steps the current attempt resumed from (``None``: 0 for a first attempt,
    unknown for a resumed one). ``measured``: ``(seconds, env steps)`` known otherwise (a resumed run's
    rows), overriding the manifest's.
    """
    if not manifest:
        return RunObservation(kind, reference, budget, RunStatus.PENDING)
    status = RunStatus(manifest.get("status", RunStatus.PENDING))
    env_steps = min(int(manifest.get("env_steps", 0)), budget) if not reference else 0
    started, updated = manifest.get("started_at"), manifest.get("updated_at", now)
    if steps_at_start is None and int(manifest.get("attempts", 1)) == 1:
        steps_at_start = 0
    measured_s, measured_steps = 0.0, 0
    if measured is not None:
        measured_s, measured_steps = measured
    elif started is not None and steps_at_start is not None:
        end = manifest.get("finished_at", updated) if status == RunStatus.DONE else updated
        steps = (budget if status == RunStatus.DONE else env_steps) - steps_at_start
        if reference and status == RunStatus.DONE:
            measured_s, measured_steps = end - started, 0
        elif steps > 0:
            measured_s, measured_steps = end - started, steps
    elapsed = now - started if started is not None and status == RunStatus.RUNNING else 0.0
    since = now - updated if status == RunStatus.RUNNING else 0.0
    return RunObservation(kind, reference, budget, status, env_steps, measured_s, measured_steps, max(elapsed, 0.0),
                          max(since, 0.0))


def estimate_remaining(runs: list[RunObservation], workers: int,
                       priors: dict[tuple[str, str], float] | None = None) -> Eta:  # fmt: skip
    """Seconds until the last of ``runs`` (in the order they start) ends on ``workers`` workers.

    A run kind's seconds per env step come from its runs' measurements; a kind not measured yet takes its
    predicted seconds per run from ``priors`` (``harness estimate``'s cache, CPU seconds of a core of its own),
    times the slowdown the measured kinds show against their priors, else the mean rate of the measured kinds
    (and is named in ``Eta.guessed``). A running run has ``rate × (budget − env steps)`` left,
    less the time since its last checkpoint; a pending one ``rate × (budget − env steps)``.
    """
    priors = priors or {}
    sums: dict[tuple[str, str], list[float]] = {}
    reference_s: list[float] = []
    for run in runs:
        if run.reference and run.status == RunStatus.DONE and run.measured_s > 0:
            reference_s.append(run.measured_s)
        elif not run.reference and run.measured_steps > 0:
            total = sums.setdefault(run.kind, [0.0, 0.0])
            total[0] += run.measured_s
            total[1] += run.measured_steps
    rates = {kind: seconds / steps for kind, (seconds, steps) in sums.items()}
    budgets = {run.kind: run.budget for run in runs if not run.reference}
    prior_rates = {kind: seconds / budgets[kind] for kind, seconds in priors.items() if budgets.get(kind)}
    # The priors were measured on a core of their own: scaled by how much slower the measured kinds run here
    # now than their priors said (a busy machine, more workers than free cores).
    timed = [kind for kind in sums if kind in prior_rates]
    slowdown = (sum(sums[k][0] for k in timed) / sum(prior_rates[k] * sums[k][1] for k in timed)) if timed else 1.0
    for kind, rate in prior_rates.items():
        rates.setdefault(kind, rate * slowdown)
    measured_rates = [seconds / steps for seconds, steps in sums.values()]
    guess = sum(measured_rates) / len(measured_rates) if measured_rates else None
    reference_run = sum(reference_s) / len(reference_s) if reference_s else 0.0
    guessed: dict[tuple[str, str], None] = {}
    busy, queue = [], []
    for run in runs:
        if run.status in (RunStatus.DONE, RunStatus.FAILED):
            continue
        if run.reference:
            left = reference_run
        else:
            rate = rates.get(run.kind)
            if rate is None:
                if guess is None:
                    return Eta(None)
                rate, guessed[run.kind] = guess, None
            left = rate * (run.budget - run.env_steps)
        if run.status == RunStatus.RUNNING:
            busy.append(max(left - (run.elapsed_s if run.reference else run.since_update_s), 0.0))
        else:
            queue.append(left)
    return Eta(makespan(queue, workers, busy), tuple(guessed))


class Progress:
    """A one-line view of a suite's progress read from the runs' manifests: runs finished, env steps, and
    an ETA from each run kind's measured seconds per env step (``estimate_remaining``)."""

    def __init__(self, results_dir: Path, keys: list[RunKey], budgets: dict[tuple[str, str], int],
                 stream: TextIO, workers: int = 1, priors: dict[tuple[str, str], float] | None = None,
                 clock: Any = time.time) -> None:  # fmt: skip
        self.keys = keys  # in the order they start
        self.all_stores = [RunStore(results_dir, k) for k in keys]
        self.stores = [s for s in self.all_stores if (s.key.algorithm, s.key.family) in budgets]  # training runs
        self.budgets = budgets
        self.total_runs = len(keys)
        self.stream = stream
        self.workers = max(workers, 1)
        self.priors = priors or {}
        self.clock = clock
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_print = 0.0
        # per run: (started_at of the attempt seen running, env steps it resumed from)
        self._attempts: dict[RunKey, tuple[float, int | None]] = {}

    def eta(self, manifests: dict[RunKey, dict[str, Any] | None], now: float) -> Eta:
        """The ETA at ``now`` from the runs' manifests (a run without one is pending)."""
        runs = []
        for key in self.keys:
            manifest = manifests.get(key)
            reference = (key.algorithm, key.family) not in self.budgets  # one evaluation, no training
            budget = 0 if reference else self.budgets[(key.algorithm, key.family)]
            if manifest and manifest.get("status") == RunStatus.RUNNING and manifest.get("started_at") is not None:
                seen = self._attempts.get(key)
                if seen is None or seen[0] != manifest["started_at"]:  # a new attempt: where it resumed from
                    first = int(manifest.get("attempts", 1)) == 1
                    self._attempts[key] = (manifest["started_at"], 0 if first else int(manifest.get("env_steps", 0)))
            seen = self._attempts.get(key)
            steps_at_start = seen[1] if seen and manifest and seen[0] == manifest.get("started_at") else None
            runs.append(observe((key.algorithm, key.family), reference, budget, manifest, now, steps_at_start))
        return estimate_remaining(runs, self.workers, self.priors)

    def line(self, finished: int, failed: int) -> str:
        manifests = {store.key: store.manifest() for store in self.all_stores}
        total_steps = sum(self.budgets[(s.key.algorithm, s.key.family)] for s in self.stores)
        done_steps = 0
        for store in self.stores:
            manifest = manifests[store.key] or {}
            budget = self.budgets[(store.key.algorithm, store.key.family)]
            done = manifest.get("status") == RunStatus.DONE
            done_steps += budget if done else min(manifest.get("env_steps", 0), budget)
        elapsed = time.monotonic() - self.started
        fraction = done_steps / total_steps if total_steps else 1.0
        return (f"runs {finished}/{self.total_runs} finished, {failed} failed | env steps "
                f"{_format_steps(done_steps)}/{_format_steps(total_steps)} ({100 * fraction:.0f}%) | "
                f"elapsed {format_seconds(elapsed)} | {self.eta(manifests, self.clock()).text()}")

    def show(self, finished: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < (1.0 if self.tty else 15.0):
            return
        self.last_print = now
        self.message(self.line(finished, failed), end="\n" if force else "")

    def message(self, text: str, end: str = "\n") -> None:
        """A line of its own (a retry, a warning); on a terminal it replaces the progress line."""
        self.stream.write(("\r\033[K" + text + end) if self.tty else (text + "\n"))
        self.stream.flush()


def prepare(suite: Suite, results_dir: Path, retry_failed: bool) -> list[RunContext]:
    """Write the suite's spec and splits into ``results_dir`` and list the runs still to execute."""
    splits = build_splits(suite)
    payload = splits_payload(suite, splits)
    SuiteDir(results_dir).init(suite.resolved(), suite.spec_hash, payload)
    contexts = []
    for key in reference_keys(suite) + learner_keys(suite):
        manifest = RunStore(results_dir, key).manifest() or {}
        if manifest.get("status") == RunStatus.FAILED and not retry_failed:
            continue
        # A run uses as many torch threads as the cores it asks for (resources.cpus, default 1), not as
        # many as the machine has: N one-core workers on N cores must not start N×N threads.
        threads = 1 if key.kind == "reference" else suite.algorithm(key.algorithm).spec.resources.cpus
        contexts.append(RunContext(suite, str(results_dir), key, payload["hash"], threads))
    return contexts


class _Backend(Protocol):
    """Where runs execute. ``poll`` returns the results of finished attempts (``execute``'s dicts)."""

    def capacity(self) -> int: ...
    def submit(self, context: RunContext) -> None: ...
    def poll(self, timeout: float) -> list[tuple[RunContext, dict[str, Any]]]: ...
    def busy(self) -> int: ...
    def request_stop(self) -> None: ...
    def close(self, force: bool) -> None: ...


def _crashed(context: RunContext, error: str, stopping: bool) -> dict[str, Any]:
    """The result of an attempt whose worker died: recorded in the manifest like a raised error, unless
    the driver is stopping (then the death is its own doing and the run resumes next time)."""
    if stopping:
        return {"key": context.key, "status": RunStatus.INTERRUPTED, "error": error}
    store = RunStore(Path(context.results_dir), context.key)
    if (store.manifest() or {}).get("status") not in (RunStatus.DONE, RunStatus.INTERRUPTED):
        store.update_manifest(status=RunStatus.FAILED, error=error, finished_at=time.time())
    return {"key": context.key, "status": RunStatus.FAILED, "error": error}


class _InProcess:
    """Runs one after another in the driver's process (``--workers 1``): no pickling, pdb works."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.results: list[tuple[RunContext, dict[str, Any]]] = []

    def capacity(self) -> int:
        return 0 if self.results else 1

    def submit(self, context: RunContext) -> None:
        result = execute(context, self.progress)
        if result["status"] == RunStatus.INTERRUPTED:  # only this process's own SIGINT/SIGTERM can interrupt it
            raise KeyboardInterrupt
        self.results.append((context, result))

    def poll(self, timeout: float) -> list[tuple[RunContext, dict[str, Any]]]:
        results, self.results = self.results, []
        return results

    def busy(self) -> int:
        return len(self.results)

    def request_stop(self) -> None:
        pass

    def close(self, force: bool) -> None:
        pass


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when the driver dies, so a killed driver leaves no orphan
    writing on (it checkpoints and stops). Elsewhere the run lock still keeps a second writer out."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection) -> None:
    """A pool worker: execute the contexts the driver sends, one at a time, until the pipe closes."""
    _die_with_parent()
    # Import every learner and family now, while the driver prepares the suite.
    for name in BUILTIN_LEARNERS:
        learner_class(name)
    for name in BUILTIN_FAMILIES:
        family_class(name)

    def terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # outside a run's own handler: stop like Ctrl-C
    try:
        while True:
            context = conn.recv()
            try:
                result = execute(context)
            except KeyboardInterrupt:  # outside the run's checkpointing handler: its last checkpoint stands
                result = {"key": context.key, "status": RunStatus.INTERRUPTED, "error": "interrupted"}
            conn.send(result)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the driver is gone or stopping


class _Worker:
    def __init__(self, mp: Any) -> None:
        self.conn, child = mp.Pipe()
        self.process = mp.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.context: RunContext | None = None


class _LocalPool:
    """A pool of worker processes, each running one run at a time.

    Not ``concurrent.futures.ProcessPoolExecutor``: when one of its workers dies the whole pool breaks
    and every pending future fails with no way to tell which run killed it. Here each worker has its
    own pipe, so a death is charged to its run only, and the worker is replaced.
    """

    def __init__(self, workers: int) -> None:
        # spawn, not fork: a forked child would inherit the parent's torch thread pool state.
        self.mp = multiprocessing.get_context("spawn")
        self.workers = [_Worker(self.mp) for _ in range(workers)]
        self.stopping = False

    def capacity(self) -> int:
        return sum(w.context is None for w in self.workers)

    def submit(self, context: RunContext) -> None:
        i, worker = next((i, w) for i, w in enumerate(self.workers) if w.context is None)
        if not worker.process.is_alive():  # died while idle (e.g. the OOM killer): replace it first
            worker = self.workers[i] = _Worker(self.mp)
        worker.context = context
        worker.conn.send(context)

    def poll(self, timeout: float) -> list[tuple[RunContext, dict[str, Any]]]:
        busy = [w for w in self.workers if w.context is not None]
        if not busy:
            return []
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout)
        results = []
        for i, worker in enumerate(self.workers):
            context = worker.context
            if context is None:
                continue
            try:
                if worker.conn.poll():
                    results.append((context, worker.conn.recv()))
                    worker.context = None
                    continue
            except (EOFError, OSError):
                pass
            if not worker.process.is_alive():
                code = worker.process.exitcode or 0
                cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                results.append((context, _crashed(context, f"worker process died ({cause}) during the run",
                                                  self.stopping)))
                worker.context = None
                if not self.stopping:
                    self.workers[i] = _Worker(self.mp)
        return results

    def busy(self) -> int:
        return sum(w.context is not None for w in self.workers)

    def request_stop(self) -> None:
        # SIGTERM, not SIGINT: a worker that already got the terminal's SIGINT would take a second
        # SIGINT as "stop at once" and skip its final checkpoint.
        self.stopping = True
        for worker in self.workers:
            if worker.context is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)

    def close(self, force: bool) -> None:
        for worker in self.workers:
            if force and worker.process.is_alive():
                worker.process.kill()
            worker.conn.close()
        for worker in self.workers:
            worker.process.join(timeout=10)


class MissingRayError(RuntimeError):
    """``--executor ray`` without Ray installed."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingRayError("--executor ray needs Ray: pip install -c constraints.txt -e '.[ray]'") from None
    return ray


class InfeasibleResourcesError(ValueError):
    """A run asks for more than the whole Ray cluster has: Ray would queue it forever."""


def _check_feasible(suite: Suite, contexts: list[RunContext], cluster: dict[str, float]) -> None:
    for algorithm in {c.key.algorithm for c in contexts if c.key.kind == "learner"}:
        resources = suite.algorithm(algorithm).spec.resources
        for name, asked, unit in (("CPU", resources.cpus, "CPU"), ("GPU", resources.gpus, "GPU")):
            if asked > cluster.get(name, 0.0):
                raise InfeasibleResourcesError(
                    f"algorithms[{algorithm}].resources: each run asks for {asked:g} {unit}"
                    f"{'s' if asked != 1 else ''} but the Ray cluster has {cluster.get(name, 0.0):g} in all, so Ray "
                    "would queue it forever; lower the request, or add the nodes first (an autoscaling cluster too)"
                )


def _ray_execute(context: bytes, driver_path: list[str]) -> dict[str, Any]:
    """``execute`` in a Ray worker. The driver's ``sys.path`` entries the worker lacks are appended before the
    context is unpickled, as multiprocessing's spawn does for the local pool: a learner or family defined
    outside the repository (``module:Class``), importable in the driver, imports here the same way."""
    sys.path.extend(entry for entry in driver_path if entry not in sys.path)
    return execute(pickle.loads(context))


class _RayBackend:
    """Each run is a Ray task asking for its algorithm's ``resources`` (cpus, gpus).

    Ray's own retries are off (``max_retries=0``): the driver retries, so a crash and a raised error are
    counted, logged and resumed from the checkpoint the same way as in the local pool.
    """

    def __init__(self, ray: Any, suite: Suite) -> None:
        self.ray, self.suite = ray, suite
        self.remote = ray.remote(_ray_execute)
        self.refs: dict[Any, RunContext] = {}
        self.stopping = False

    def capacity(self) -> int:
        return sys.maxsize  # Ray queues the tasks until the cluster has the resources they ask for

    def submit(self, context: RunContext) -> None:
        cpus, gpus = 1, 0.0
        if context.key.kind == "learner":
            resources = self.suite.algorithm(context.key.algorithm).spec.resources
            cpus, gpus = resources.cpus, resources.gpus
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0, "name": context.key.label}
        self.refs[self.remote.options(**options).remote(pickle.dumps(context), list(sys.path))] = context

    def poll(self, timeout: float) -> list[tuple[RunContext, dict[str, Any]]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        results = []
        for ref in ready:
            context = self.refs.pop(ref)
            try:
                results.append((context, self.ray.get(ref)))
            except Exception as e:  # the worker process or its node died (execute catches the run's errors)
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                error = f"Ray worker died during the run: {type(e).__name__}: {first}"
                results.append((context, _crashed(context, error, self.stopping)))
        return results

    def busy(self) -> int:
        return len(self.refs)

    def request_stop(self) -> None:
        self.stopping = True
        for ref in self.refs:  # raises KeyboardInterrupt in the task (its run checkpoints, or keeps its last)
            self.ray.cancel(ref, force=False)

    def close(self, force: bool) -> None:
        if force:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """In the driver, SIGTERM (``scancel``, ``kill``) stops like Ctrl-C: runs checkpoint and stop."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record(outcome: SuiteOutcome, result: dict[str, Any]) -> None:
    key, status = result["key"], result["status"]
    if status == RunStatus.FAILED:
        outcome.failed[key] = result["error"] or ""
    elif status == RunStatus.LOCKED:
        outcome.locked[key] = result["error"] or ""
    elif status == RunStatus.INTERRUPTED:
        outcome.interrupted.append(key)
    elif status == "skipped":
        outcome.skipped.append(key)
    else:
        outcome.done.append(key)


def _last_line(error: str | None) -> str:
    return (error or "").strip().splitlines()[-1] if (error or "").strip() else "unknown error"


def _drive(backend: _Backend, contexts: list[RunContext], outcome: SuiteOutcome, max_retries: int,
           progress: Progress, finished: Any) -> None:  # fmt: skip
    """Feed ``contexts`` to ``backend``, retrying failed attempts, until every run has an outcome."""
    queue = deque(contexts)
    with _sigterm_as_interrupt():
        try:
            while queue or backend.busy():
                while queue and backend.capacity() > 0:
                    backend.submit(queue.popleft())
                for context, result in backend.poll(timeout=1.0):
                    key, status = context.key, result["status"]
                    if status in (RunStatus.FAILED, RunStatus.INTERRUPTED) and outcome.retries[key] < max_retries:
                        outcome.retries[key] += 1
                        progress.message(f"retrying {key.label} from its last checkpoint (retry "
                                         f"{outcome.retries[key]} of {max_retries}): {_last_line(result['error'])}")
                        queue.appendleft(context)  # first in line: its checkpoint is warm on disk
                        continue
                    _record(outcome, result)
                progress.show(finished(), len(outcome.failed))
        except KeyboardInterrupt:
            _stop(backend, outcome, progress)
            raise


def _stop(backend: _Backend, outcome: SuiteOutcome, progress: Progress) -> None:
    """Ask running runs to checkpoint and stop; wait for them (a second Ctrl-C stops at once)."""
    backend.request_stop()
    deadline = time.monotonic() + STOP_GRACE_S
    progress.message(f"stopping: waiting up to {STOP_GRACE_S:.0f}s for {backend.busy()} running run(s) to "
                     "checkpoint (Ctrl-C again to stop at once)")
    try:
        while backend.busy() and time.monotonic() < deadline:
            for _, result in backend.poll(timeout=1.0):
                _record(outcome, result)
        backend.close(force=bool(backend.busy()))
    except KeyboardInterrupt:
        backend.close(force=True)


def _run(suite: Suite, results_dir: Path, executor: str, workers: int,
         retry_failed: bool, max_retries: int | None, stream: TextIO | None, address: str | None = None,
         in_process: bool = False) -> SuiteOutcome:  # fmt: skip
    ray = _import_ray() if executor == "ray" else None  # before anything is written
    stream = stream or sys.stderr
    with exclusive_lock(results_dir / ".lock", f"results directory {results_dir}"):
        # Spawned first, so that the workers' imports overlap the driver's preparation.
        pool = _LocalPool(workers) if ray is None and not in_process else None
        try:
            return _prepare_and_drive(suite, results_dir, ray, address, pool, retry_failed,
                                      max_retries, stream)
        finally:
            if pool is not None:
                pool.close(force=False)


def _prepare_and_drive(suite: Suite, results_dir: Path, ray: Any, address: str | None,
                       pool: _LocalPool | None, retry_failed: bool, max_retries: int | None, stream: TextIO
                       ) -> SuiteOutcome:  # fmt: skip
    contexts = prepare(suite, results_dir, retry_failed)
    outcome = SuiteOutcome()
    pending = {c.key for c in contexts}
    previously_failed = [k for k in reference_keys(suite) + learner_keys(suite) if k not in pending]
    for key in previously_failed:
        outcome.failed[key] = (RunStore(results_dir, key).manifest() or {}).get("error") or "failed earlier"
    budgets = {(a.key, f.key): a.budget(f)[0] for a in suite.algorithms for f in suite.families}
    budgets.update({(REFERENCE_PREFIX + name, f.key): (f.reference_budget or (f.env_steps,))[0]
                    for f in suite.families for name in trained_references(f.family, f.spec.references)})
    if ray is not None:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        slots = int(ray.cluster_resources().get("CPU", 1)) // max(a.spec.resources.cpus for a in suite.algorithms)
    else:
        slots = 1 if pool is None else len(pool.workers)
    # Costs measured by `harness estimate` on this machine: an ETA for the run kinds not started yet.
    priors = cached_run_seconds(suite.resolved(), resolve_device(suite.spec.device),
                                checkpoint_every_s=suite.spec.execution.checkpoint_every_s)
    progress = Progress(results_dir, [c.key for c in contexts], budgets, stream, max(slots, 1), priors)

    def finished() -> int:
        counted = (len(outcome.done) + len(outcome.skipped) + len(outcome.failed) + len(outcome.locked)
                   + len(outcome.interrupted))
        return counted - len(previously_failed)

    retries = suite.spec.execution.max_retries if max_retries is None else max_retries
    if ray is not None:
        _check_feasible(suite, contexts, ray.cluster_resources())
        backend: _Backend = _RayBackend(ray, suite)
        where = f"Ray cluster ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
    elif pool is None:
        backend = _InProcess(lambda _: progress.show(finished(), len(outcome.failed)))
        where = "1 worker"
    else:
        backend = pool
        where = f"{len(pool.workers)} workers"
    stream.write(f"{suite.name}: {len(contexts)} runs ({where}, up to {retries} retries each) → {results_dir}\n")
    try:
        _drive(backend, contexts, outcome, retries, progress, finished)
    finally:
        backend.close(force=False)
    progress.show(finished(), len(outcome.failed), force=True)
    return outcome


def default_workers(suite: Suite) -> int:
    """One worker per ``resources.cpus`` cores of the hungriest algorithm (one per core by default)."""
    cpus = max(a.spec.resources.cpus for a in suite.algorithms)
    return max(1, (os.cpu_count() or 1) // cpus)


def run_local(
    suite: Suite,
    results_dir: Path,
    workers: int | None = None,
    retry_failed: bool = False,
    stream: TextIO | None = None,
    max_retries: int | None = None,
    in_process: bool | None = None,
) -> SuiteOutcome:
    """Run every pending run of ``suite`` in a pool of ``workers`` processes (default: one per core).

    ``in_process`` (default: ``workers == 1``) runs them one after another in this process instead.
    Runs marked failed by an earlier invocation are skipped unless ``retry_failed``. ``max_retries``
    overrides the suite's ``execution.max_retries``. Raises ``LockedError`` if another invocation holds
    ``results_dir``.
    """
    workers = workers or default_workers(suite)
    return _run(suite, results_dir, "local", workers, retry_failed, max_retries, stream,
                in_process=workers == 1 if in_process is None else in_process)


def run_ray(
    suite: Suite,
    results_dir: Path,
    address: str | None = None,
    retry_failed: bool = False,
    stream: TextIO | None = None,
    max_retries: int | None = None,
) -> SuiteOutcome:
    """Run every pending run of ``suite`` as Ray tasks, each asking for its algorithm's ``resources``.

    Connects to the cluster at ``address`` (``"auto"``: the one started on this machine with ``ray
    start``), starts a local Ray instance when ``address`` is None, or uses the one this process already
    initialised. Workers write their runs' directories themselves, so ``results_dir`` must be on a
    filesystem every node sees at the same path; it is made absolute here.
    """
    return _run(suite, Path(results_dir).resolve(), "ray", 0, retry_failed, max_retries, stream,
                address)
