"""Reuse the runs of an earlier results directory whose own inputs a changed suite leaves unchanged.

A results directory belongs to one spec hash (``SuiteDir.init``), so changing one learner's config
starts every run of the suite again, the other learners and the references included. ``reuse`` copies
into the new suite's results directory each earlier run that would compute the same thing: the same run
(algorithm, family, seed, kind) with equal **run inputs**, which are

- the family's resolved entry (parameters, split sizes, trial shape, budget, evaluation schedule, its
  references and their training) and its task splits as drawn (``tasks.json``);
- for a learner, its resolved config, budget and evaluation protocol on that family (its name and
  import path too); for a reference, nothing more (its name is part of the run);
- the suite-wide settings that reach a run (root seed, default budget and evaluation, references),
  not its name, seed list, ``execution`` or ``device`` (the spec hash leaves out the last two as well).

Seed streams are named by (family, seed) and never by suite or algorithm (``harness.seeding``), so a run
whose inputs are equal draws the same randomness in either suite. Finished runs are copied with their
rows and manifest; interrupted ones with their checkpoint as well, and resume under the new suite. A
copied manifest keeps the commit and package versions that computed its rows, takes the new spec hash
(so ``harness run`` counts it as done, or resumes it) and records the earlier one in ``reused_from``.
Nothing already in the new directory is replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run.runner import learner_keys, reference_keys
from harness.run.store import LockedError, RunKey, RunStatus, SuiteDir, exclusive_lock, write_json
from harness.spec.splits import build_splits, family_tasks_identity, splits_payload
from harness.spec.suite import Suite

#: Top-level spec keys that do not reach a run: how the suite is named, which seeds it lists, where and
#: how it executes.
_NOT_RUN_INPUTS = ("name", "seeds", "families", "algorithms", "execution", "device")
#: Per-family entries of a resolved algorithm: only the run's own family is one of its inputs.
_PER_FAMILY = ("configs", "budgets", "evaluation")
#: Statuses whose rows (and, for an interrupted run, checkpoint) are worth adopting.
_ADOPTABLE = (RunStatus.DONE, RunStatus.INTERRUPTED)


def run_inputs(resolved: dict[str, Any], tasks: dict[str, Any], key: RunKey) -> dict[str, Any] | None:
    """What run ``key`` computes from, as plain data (``None`` if the spec has no such run): see the module
    docstring. Two runs with equal inputs compute the same rows."""
    family = next((f for f in resolved.get("families", []) if f.get("id") == key.family), None)
    splits = tasks.get("families", {}).get(key.family)
    if family is None or splits is None:
        return None
    inputs: dict[str, Any] = {
        "run": dataclasses.asdict(key),
        "suite": {k: v for k, v in resolved.items() if k not in _NOT_RUN_INPUTS},
        "family": family,
        "tasks": family_tasks_identity(splits),  # a committed export may hold the digest alone
    }
    if key.kind == "learner":
        algorithm = next((a for a in resolved.get("algorithms", []) if a.get("id") == key.algorithm), None)
        if algorithm is None or key.family not in algorithm.get("configs", {}):
            return None
        inputs["algorithm"] = {k: (v.get(key.family) if k in _PER_FAMILY else v)
                               for k, v in algorithm.items() if k not in ("resources", "only")}  # fmt: skip
    # one spelling of plain data: YAML (the stored spec) and the live spec differ in tuples vs lists
    return json.loads(json.dumps(inputs, sort_keys=True))


#: How a differing key of the run inputs is named in a message (the per-family entries in the singular).
_KEY_NAMES = {"configs": "config", "budgets": "budget", "evaluation": "evaluation protocol"}


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first part of the run inputs that differs, for the message."""
    for part in ("run", "suite", "family", "tasks", "algorithm"):
        before, after = old.get(part), new.get(part)
        if before == after:
            continue
        if part == "tasks" or not isinstance(before, dict) or not isinstance(after, dict):
            return f"its {part} changed"
        keys = sorted(_KEY_NAMES.get(k, k) for k in {*before, *after} if before.get(k) != after.get(k))
        return f"its {'suite-wide settings' if part == 'suite' else part}'s {', '.join(keys)} changed"
    return "unchanged"


@dataclass(frozen=True)
class Reused:
    """What ``reuse`` did with one run of the new suite."""

    key: RunKey
    action: str  # "adopted", "kept" (the new directory has it already) or "not reused"
    detail: str


def reuse(suite: Suite, results_dir: Path | str, earlier: Path | str) -> list[Reused]:
    """Copy into ``results_dir`` (the results directory of ``suite``, created if need be) every run of the
    results directory ``earlier`` whose run inputs equal its counterpart's in ``suite``. Returns one entry
    per run of ``suite``. Raises ``SuiteMismatchError`` where ``results_dir`` holds another spec, and
    ``LockedError`` where a suite is running in it."""
    results_dir, source = Path(results_dir), SuiteDir(earlier)
    if not source.exists():
        raise FileNotFoundError(f"{source.path} holds no suite (no suite.yaml)")
    if source.path.resolve() == results_dir.resolve():
        raise ValueError(f"{source.path} is the suite's own results directory: nothing to reuse")
    old_resolved, old_tasks, old_hash = source.resolved_spec(), source.tasks(), source.spec_hash()
    payload = splits_payload(suite, build_splits(suite))
    # each family's splits digested once, not once per run (random MDPs' splits are tens of MB of JSON)
    old_tasks, compared = ({**tasks, "families": {k: family_tasks_identity(v) for k, v in tasks["families"].items()}}
                           for tasks in (old_tasks, payload))  # fmt: skip
    new_resolved, target = suite.resolved(), SuiteDir(results_dir)
    outcome = []
    with exclusive_lock(results_dir / ".lock", f"results directory {results_dir}"):
        target.init(new_resolved, suite.spec_hash, payload)
        for key in reference_keys(suite) + learner_keys(suite):
            outcome.append(_reuse_one(key, source, target, old_resolved, old_tasks, old_hash, new_resolved,
                                      compared, suite.spec_hash))  # fmt: skip
    return outcome


def _reuse_one(key: RunKey, source: SuiteDir, target: SuiteDir, old_resolved: dict[str, Any],
               old_tasks: dict[str, Any], old_hash: str | None, new_resolved: dict[str, Any],
               payload: dict[str, Any], new_hash: str) -> Reused:  # fmt: skip
    here, there = target.run(key), source.run(key)
    if here.manifest() is not None:
        return Reused(key, "kept", f"already in {target.path} ({here.manifest().get('status')})")
    old_manifest = there.manifest()
    if old_manifest is None:
        return Reused(key, "not reused", f"{source.path} has no such run")
    if old_manifest.get("status") not in _ADOPTABLE:
        return Reused(key, "not reused", f"it is {old_manifest.get('status')} in {source.path}")
    old_inputs, new_inputs = run_inputs(old_resolved, old_tasks, key), run_inputs(new_resolved, payload, key)
    if old_inputs is None or new_inputs is None or old_inputs != new_inputs:
        return Reused(key, "not reused", "its inputs are not in the earlier spec" if old_inputs is None
                      else _difference(old_inputs, new_inputs))  # fmt: skip
    try:
        # not while another process writes it; a run never written here (a committed export) has no lock file,
        # and none is left behind in it
        with there.lock() if there.lock_path.exists() else contextlib.nullcontext():
            old_manifest = there.manifest() or {}  # as it is now that nobody else writes it
            status = old_manifest.get("status")
            if status not in _ADOPTABLE:
                return Reused(key, "not reused", f"it is {status} in {source.path}")
            here.dir.mkdir(parents=True, exist_ok=True)
            names = ["progress.parquet"] + (["checkpoint.pt"] if status != RunStatus.DONE else [])
            for name in names:
                if (there.dir / name).exists():
                    shutil.copy2(there.dir / name, here.dir / name)
            manifest = {**old_manifest, "spec_hash": new_hash, "tasks_hash": payload["hash"],
                        "reused_from": {"spec_hash": old_hash, "tasks_hash": old_manifest.get("tasks_hash")}}
            write_json(here.manifest_path, manifest)  # last: a run without its manifest is not there
    except LockedError as e:
        return Reused(key, "not reused", str(e))
    steps = old_manifest.get("env_steps")
    detail = status if steps is None else f"{status} at {steps:,} env steps"
    return Reused(key, "adopted", detail)


__all__ = ["Reused", "reuse", "run_inputs"]
