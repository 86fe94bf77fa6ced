"""One run: train a learner on a family's training tasks within an env-step budget, evaluating on
schedule, checkpointing, and resuming from the last checkpoint. Also the one-off evaluation of a
reference policy.

The harness owns the budget (it counts env steps through the sampler), the evaluation schedule,
checkpoints, rows and seeds. Seed streams are named by (family, seed) and not by algorithm, so every
algorithm of a suite sees the same meta-batches' randomness, environment seeds and evaluation trials.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.base import MetaEnvInfo, Task
from algorithms.registry import learner_class
from harness import seeding
from harness.references import TRAINED_REFERENCE_LEARNER, selected_references, trained_references
from harness.run.evaluate import evaluate, evaluate_learner
from harness.run.rollout import Sampler
from harness.run.store import (
    REFERENCE_PREFIX,
    LockedError,
    RunKey,
    RunStatus,
    RunStore,
    SuiteDir,
    git_commit,
    package_versions,
)
from harness.spec.splits import family_split, train_eval_sample
from harness.spec.suite import Protocol, ResolvedFamily, Suite
from harness.tasks.base import TaskFamily
from harness.tasks.told import TaskTold


class RunInterrupted(Exception):
    """SIGTERM or SIGINT arrived; the run checkpointed at the end of its current iteration and stopped."""


@dataclass(frozen=True)
class RunContext:
    """What a worker needs to run one run; picklable. The suite travels as the validated object (never
    re-read or re-parsed), and the worker checks its spec hash against the results directory's before
    touching a run (``execute``)."""

    suite: Suite
    results_dir: str
    key: RunKey
    tasks_hash: str
    torch_threads: int = 1

    @property
    def spec_hash(self) -> str:
        return self.suite.spec_hash


@contextmanager
def _stop_requests() -> Iterator[list[str]]:
    """Turn SIGTERM and SIGINT into a request to stop at the next consistent point: the list it yields
    gets the signal's name. A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists).

    Handlers can only be set in the main thread; elsewhere (a thread pool) signals keep their defaults.
    """
    requests: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        if requests and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requests.append(signal.Signals(signum).name)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield requests
        return
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resolve_device(device: str) -> str:
    """The suite's ``device`` for this worker: ``auto`` is CUDA when this process sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _task_sets(suite: Suite, family: ResolvedFamily) -> tuple[dict[str, list[Task]], list[Task]]:
    split = family_split(suite, family)
    task_sets = {"test": split["test"], "ood": split["ood"],
                 "train": train_eval_sample(split, suite.spec.evaluation.train_tasks)}
    return task_sets, split["train"]


def _records_success(family: ResolvedFamily) -> bool:
    return family.family.records_success


@dataclass(frozen=True)
class Training:
    """What a training run trains: the learner class and config, the family's tasks as the learner sees
    them (told, for the trained ``oracle`` reference), the budget and evaluation schedule, the protocol."""

    view: TaskFamily
    cls: Any
    config: Any
    budget: int
    every: int
    protocol: Protocol


def training(suite: Suite, key: RunKey) -> Training:
    """A learner run's training, or a trained reference's (``harness.references.TrainedReference``)."""
    family = suite.family(key.family)
    if key.kind == "reference":
        name = key.algorithm.removeprefix(REFERENCE_PREFIX)
        reference = trained_references(family.family, family.spec.references)[name]
        budget, every = family.reference_budget or (family.env_steps, family.eval_every_env_steps)
        return Training(TaskTold(family.family) if reference.told else family.family,
                         learner_class(TRAINED_REFERENCE_LEARNER), family.reference_config, budget, every,
                         Protocol(family.episodes_per_trial, suite.spec.evaluation.deterministic))  # fmt: skip
    algorithm = suite.algorithm(key.algorithm)
    budget, every = algorithm.budget(family)
    return Training(family.family, learner_class(algorithm.learner), algorithm.config_for(family.key), budget,
                     every, algorithm.protocol_for(family.key))  # fmt: skip


class _EvalSamplers:
    """The evaluation sampler of each split of a (family, seed), rewound to the start of its stream
    every time it is handed out.

    So every evaluation of every algorithm, and every reference policy, runs the very same trials
    (environment seeds): differences along a curve and between algorithms are the policies', not the
    environments' noise. Each sampler is built once per run, so its environments are built once too.
    """

    def __init__(self, suite: Suite, family: ResolvedFamily, seed: int, view: TaskFamily | None = None) -> None:
        self._view, self._stream = view or family.family, (suite.spec.seed, "eval", family.key, seed)
        self._samplers: dict[str, Sampler] = {}

    def __call__(self, split: str) -> Sampler:
        rng = seeding.generator(*self._stream, split)
        if split not in self._samplers:
            self._samplers[split] = Sampler(self._view, rng)
        self._samplers[split].rng = rng
        return self._samplers[split]


def _snapshot(learner: Any) -> dict[str, Any]:
    """A deep copy of the learner's state (tensors cloned), for ``execution.check_evaluation``."""
    return copy.deepcopy(learner.state_dict())


def state_differences(before: Any, after: Any, path: str = "") -> list[str]:
    """The key paths (``net.weight``, ``buffers[2]``) where two state dicts differ: tensors and arrays compared
    exactly, with their shapes and dtypes."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after), key=str)
        return [d for k in keys
                for d in state_differences(before.get(k), after.get(k), f"{path}.{k}" if path else str(k))]
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) and len(before) == len(after):
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (b, a) in pairs for d in state_differences(b, a, f"{path}[{i}]")]
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        same = before.shape == after.shape and before.dtype == after.dtype and torch.equal(before, after)
        return [] if same else [path]
    if isinstance(before, np.ndarray) and isinstance(after, np.ndarray):
        return [] if np.array_equal(before, after) else [path]
    return [] if before == after else [path]


class EvaluationChangedLearner(RuntimeError):
    """``execution.check_evaluation``: an evaluation changed the learner's state (it must only observe)."""


def _check_unchanged(before: dict[str, Any], after: dict[str, Any], key: RunKey, env_steps: int) -> None:
    changed = state_differences(before, after)
    if changed:
        raise EvaluationChangedLearner(
            f"{key.algorithm}: the evaluation at {env_steps} env steps changed the learner's state_dict at "
            f"{', '.join(changed[:5])}{' …' if len(changed) > 5 else ''}; evaluation must draw from the generator "
            "it is given and leave the learner untouched (algorithms/base.py, MetaLearner)"
        )


def run_learner(
    suite: Suite, results_dir: Path, key: RunKey, progress: Callable[[dict[str, Any]], None] | None = None
) -> str:
    """Train and evaluate one learner run (or a trained reference's, ``key.kind == "reference"``), resuming
    from its checkpoint; returns the final status.

    Raises whatever the learner raises: the caller marks the run failed.
    """
    store = RunStore(results_dir, key)
    family, plan = suite.family(key.family), training(suite, key)
    root = suite.spec.seed
    task_sets, train_tasks = _task_sets(suite, family)

    train_sampler = Sampler(plan.view, seeding.generator(root, "train", family.key, key.seed))
    meta_batch_rng = seeding.generator(root, "meta_batch", family.key, key.seed)
    info = MetaEnvInfo(train_sampler.observation_space, train_sampler.action_space,
                       family.episodes_per_trial, family.family.max_episode_steps)
    device = resolve_device(suite.spec.device)
    store.update_manifest(device=device)  # the device this run computes on, recorded where it is chosen
    learner = plan.cls(info, plan.config, seed=seeding.int_seed(root, "learner", family.key, key.seed),
                           device=device)

    counters = {"iteration": 0, "evaluations": 0, "wall_s": 0.0}
    checkpoint = store.load_checkpoint()
    if checkpoint is not None:
        learner.load_state_dict(checkpoint["learner"])
        train_sampler.load_state_dict(checkpoint["sampler"])
        meta_batch_rng.bit_generator.state = checkpoint["meta_batch_rng"]
        counters = checkpoint["counters"]
        store.truncate_rows(counters["iteration"])
    else:
        store.truncate_rows(-1)  # rows without a checkpoint were never committed

    budget, every = plan.budget, plan.every
    execution = suite.spec.execution
    eval_samplers = _EvalSamplers(suite, family, key.seed, plan.view)
    pending: list[dict[str, Any]] = []  # training diagnostics since the last write
    started = time.monotonic() - counters["wall_s"]
    last_checkpoint = time.monotonic()

    def stamp(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        extra = {"env_steps": train_sampler.env_steps, "iteration": counters["iteration"],
                 "wall_s": counters["wall_s"]}
        return [{**extra, **row} for row in rows]

    def commit() -> None:
        nonlocal pending, last_checkpoint
        counters["wall_s"] = time.monotonic() - started
        store.append_rows(pending)
        pending = []
        store.save_checkpoint({
            "learner": learner.state_dict(),
            "sampler": train_sampler.state_dict(),
            "meta_batch_rng": meta_batch_rng.bit_generator.state,
            "counters": dict(counters),
        })
        last_checkpoint = time.monotonic()
        store.update_manifest(status=RunStatus.RUNNING, env_steps=train_sampler.env_steps, env_steps_budget=budget,
                              iteration=counters["iteration"])
        if progress:
            progress({"key": key, "env_steps": train_sampler.env_steps, "budget": budget})

    protocol = plan.protocol

    def evaluate_now() -> None:
        counters["wall_s"] = time.monotonic() - started
        # The evaluation's own randomness, named by where it happens (split, env step) and not by how many
        # evaluations came before: evaluating more often or on more splits changes no other evaluation.
        env_steps = train_sampler.env_steps
        before = _snapshot(learner) if execution.check_evaluation else None
        rows = evaluate_learner(
            learner, eval_samplers, task_sets, protocol, _records_success(family),
            lambda split: seeding.torch_generator(root, "eval_policy", family.key, key.seed, split, env_steps),
        )
        if before is not None:
            _check_unchanged(before, _snapshot(learner), key, env_steps)
        pending.extend(stamp(rows))
        counters["evaluations"] += 1

    with _stop_requests() as stop:
        if checkpoint is None:
            evaluate_now()  # the untrained learner: the first point of every curve
            commit()
        while train_sampler.env_steps < budget:
            if stop:  # everything up to the last iteration is committed: stopping here loses nothing
                raise RunInterrupted(f"{stop[0]} received; checkpointed at {train_sampler.env_steps} env steps")
            # drawn either way, so that the meta-batch stream does not depend on the learner
            indices = meta_batch_rng.choice(len(train_tasks), family.spec.tasks_per_iteration, replace=False)
            tasks = train_tasks if learner.samples_own_tasks else [train_tasks[i] for i in indices]
            logs = learner.train_iteration(train_sampler, tasks)
            counters["iteration"] += 1
            counters["wall_s"] = time.monotonic() - started
            pending.extend(stamp([{"split": "training", "task_id": "", "episode_index": -1, "metric": name,
                                   "value": float(value)} for name, value in logs.items()]))
            due = train_sampler.env_steps >= counters["evaluations"] * every or train_sampler.env_steps >= budget
            if due:
                evaluate_now()
            periodic = execution.checkpoint_every_iterations
            if (due or stop or time.monotonic() - last_checkpoint >= execution.checkpoint_every_s
                    or (periodic and counters["iteration"] % periodic == 0)):
                commit()
    return RunStatus.DONE


def is_trained(suite: Suite, key: RunKey) -> bool:
    """Whether ``key`` is a run that trains: a learner's, or a trained reference's (``TrainedReference``)."""
    if key.kind != "reference":
        return True
    family = suite.family(key.family)
    return key.algorithm.removeprefix(REFERENCE_PREFIX) in trained_references(family.family, family.spec.references)


def run_reference(suite: Suite, results_dir: Path, key: RunKey) -> str:
    """Evaluate one reference policy by the learners' protocol, on the learners' evaluation trials."""
    store = RunStore(results_dir, key)
    family = suite.family(key.family)
    task_sets, train = _task_sets(suite, family)
    reference = selected_references(family.family, family.episodes_per_trial, family.spec.references,
                                    train)[key.algorithm.removeprefix(REFERENCE_PREFIX)]
    rng = seeding.generator(suite.spec.seed, "reference", family.key, key.seed, reference.name)
    rows = evaluate(
        _EvalSamplers(suite, family, key.seed), task_sets, family.episodes_per_trial,
        lambda _split, tasks: reference.policy(tasks, family.episodes_per_trial, rng),
        suite.spec.evaluation.deterministic, _records_success(family),
    )
    store.truncate_rows(-1)
    store.append_rows([{"env_steps": 0, "iteration": 0, "wall_s": 0.0, **row} for row in rows])
    return RunStatus.DONE


def reference_keys(suite: Suite) -> list[RunKey]:
    """The reference runs of a suite: every family's references × every seed."""
    if not suite.spec.references:
        return []
    return [
        RunKey(REFERENCE_PREFIX + name, family.key, seed, kind="reference")
        for family in suite.families
        for name in selected_references(family.family, family.episodes_per_trial, family.spec.references)
        for seed in suite.spec.seeds
    ]


def learner_keys(suite: Suite) -> list[RunKey]:
    """The learner runs of a suite: algorithms × families × seeds."""
    return [
        RunKey(algorithm.key, family.key, seed)
        for algorithm in suite.algorithms
        for family in suite.families
        if algorithm.runs_on(family.key)
        for seed in suite.spec.seeds
    ]


def _origin(path: str) -> dict[str, Any]:
    """Where the class at ``path`` (``"module:Class"``) came from: the path, the module's file, and the installed
    distribution that provides its top-level package (``"name version"``), if one does."""
    module = path.partition(":")[0]
    top = module.split(".")[0]
    distributions = importlib.metadata.packages_distributions().get(top, [])
    return {"import_path": path, "file": getattr(importlib.import_module(module), "__file__", None),
            "distribution": " ".join((distributions[0], importlib.metadata.version(distributions[0])))
            if distributions else None}


def external_origins(suite: Suite, key: RunKey) -> dict[str, Any]:
    """What a run's manifest records of the learner and family it runs when they are defined outside the
    repository (``external_learner``, ``external_family``: ``_origin``); nothing for built-in ones."""
    origins = {}
    family = suite.family(key.family)
    if family.source is not None:
        origins["external_family"] = _origin(family.source)
    if key.kind == "learner" and (source := suite.algorithm(key.algorithm).source) is not None:
        origins["external_learner"] = _origin(source)
    return origins


def execute(context: RunContext, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one attempt of one run in this process, isolating failures.

    Returns ``{"key", "status", "error"}``: ``done``; ``skipped`` (already done under this spec);
    ``failed`` (it raised: ``error`` holds the traceback, also written to the manifest; or the results
    directory holds another spec, and nothing was touched);
    ``interrupted`` (SIGTERM/SIGINT: checkpointed and stopped); or ``locked`` (another process is
    writing this run, so nothing was touched). Retrying is the executor's decision.
    """
    key, suite_dir = context.key, SuiteDir(context.results_dir)
    if not suite_dir.exists():  # e.g. a Ray node without the shared filesystem
        error = (f"{suite_dir.suite_path} is not visible on {socket.gethostname()}: runs write to the results "
                 "directory directly, so every worker must see it at the same path (a shared filesystem)")
        return {"key": key, "status": RunStatus.FAILED, "error": error}
    if suite_dir.spec_hash() != context.spec_hash:  # the suite this worker got is not the one the driver wrote
        error = (f"{suite_dir.path} holds spec {suite_dir.spec_hash()}, this worker's suite is {context.spec_hash}: "
                 "not run (another suite was started in the same results directory)")
        return {"key": key, "status": RunStatus.FAILED, "error": error}
    store = suite_dir.run(key)
    try:
        with store.lock():
            return _execute_locked(context, store, progress)
    except LockedError as e:
        return {"key": key, "status": RunStatus.LOCKED, "error": str(e)}


def _execute_locked(context: RunContext, store: RunStore, progress: Callable[[dict[str, Any]], None] | None
                    ) -> dict[str, Any]:  # fmt: skip
    # The suite's resources.cpus (default 1): N one-core workers on N cores must not start N×N threads.
    torch.set_num_threads(context.torch_threads)
    key, results_dir = context.key, Path(context.results_dir)
    store.remove_stale_temporaries()  # a SIGKILL mid-write leaves one; the lock says nobody else is writing
    manifest = store.manifest()
    if manifest and manifest.get("status") == RunStatus.DONE and manifest.get("spec_hash") == context.spec_hash:
        return {"key": key, "status": RunStatus.SKIPPED, "error": None}
    store.update_manifest(
        status=RunStatus.RUNNING, spec_hash=context.spec_hash, tasks_hash=context.tasks_hash, commit=git_commit(),
        versions=package_versions(), started_at=time.time(), error=None,
        attempts=(manifest or {}).get("attempts", 0) + 1, host=socket.gethostname(), pid=os.getpid(),
        torch_threads=context.torch_threads, **external_origins(context.suite, key),
    )
    try:
        if not is_trained(context.suite, key):
            status = run_reference(context.suite, results_dir, key)
        else:
            status = run_learner(context.suite, results_dir, key, progress)
    except RunInterrupted as e:
        store.update_manifest(status=RunStatus.INTERRUPTED, error=str(e))
        return {"key": key, "status": RunStatus.INTERRUPTED, "error": str(e)}
    except Exception:
        error = traceback.format_exc()
        store.update_manifest(status=RunStatus.FAILED, error=error, finished_at=time.time())
        return {"key": key, "status": RunStatus.FAILED, "error": error}
    store.update_manifest(status=status, finished_at=time.time())
    return {"key": key, "status": status, "error": None}
