"""Run directories, manifests, the tidy result table, checkpoints and resume (DESIGN.md §6).

``results/<suite>/runs/<algorithm>/<family>/seed=<k>/`` holds ``manifest.json``,
``progress.parquet`` and ``checkpoint.pt``. Every write is atomic (temporary file + ``os.replace``).
Rows are written before the checkpoint that covers them, so after a crash the rows with
``iteration <= checkpoint iteration`` are exactly the committed ones; resume drops the others and
recomputes them deterministically. No row is lost or duplicated.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from harness.spec.splits import INLINE_TASKS_LIMIT, elide_task_params

ROW_COLUMNS = ("env_steps", "iteration", "wall_s", "split", "task_id", "episode_index", "metric", "value")
_ROW_DTYPES = {"env_steps": "int64", "iteration": "int64", "wall_s": "float64", "split": "string",
               "task_id": "string", "episode_index": "int64", "metric": "string", "value": "float64"}
PACKAGES = ("metarl-harness", "torch", "numpy", "gymnasium", "pandas", "pyarrow", "pydantic", "PyYAML")

#: Name prefix of reference-policy runs in the results tree (``runs/ref-thompson/bandit/seed=0``).
REFERENCE_PREFIX = "ref-"


class RunStatus(StrEnum):
    """A run's status: in its manifest (``running`` to ``done``, ``failed`` or ``interrupted``), before it has
    one (``pending``), and as one attempt's outcome (``skipped``: already done under this spec; ``locked``:
    another process is writing it, so nothing was touched). Members are strings, so manifests hold plain text."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by SIGTERM/SIGINT after a checkpoint; re-running resumes it
    SKIPPED = "skipped"
    LOCKED = "locked"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A tidy frame with the store's columns and dtypes."""
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)).astype(_ROW_DTYPES)


#: Paths whose uncommitted changes do not make a run's commit ``+dirty``: they cannot change what a run computes
#: (results, suite files, whose spec every results directory records and hashes, tests and prose).
NOT_CODE_PATHSPECS = (":(top,exclude)results", ":(top,exclude)suites", ":(top,exclude)tests",
                      ":(top,exclude,glob)**/*.md")


def git_commit(here: Path | None = None) -> str | None:
    """The commit of the harness source tree, if a git checkout; ``+dirty`` when tracked files other than
    ``NOT_CODE_PATHSPECS`` have uncommitted changes. ``here``: a directory in the checkout (default: this one)."""
    here = here or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                *NOT_CODE_PATHSPECS], cwd=here, capture_output=True, text=True, timeout=10).stdout
        return commit.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class LockedError(RuntimeError):
    """Another process holds the lock (its holder is in the message)."""


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block, or raise ``LockedError`` at once.

    The kernel releases the lock when its holder exits, however it exits (even SIGKILL), so a stale
    lock never outlives a crash. The file records its holder (host, pid, since) for the message; it is
    left in place, since removing it would race with the next holder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Path(path).read_text().strip() or "another process"
        os.close(fd)
        raise LockedError(f"{what} is in use by {holder}") from None
    try:
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True)
class RunKey:
    """One run of a suite: a learner or a reference policy on a family with a seed."""

    algorithm: str
    family: str
    seed: int
    kind: str = "learner"  # or "reference"

    @property
    def label(self) -> str:
        return f"{self.algorithm}/{self.family}/seed={self.seed}"


class RunStore:
    """The directory of one run."""

    def __init__(self, results_dir: Path, key: RunKey) -> None:
        self.key = key
        self.dir = Path(results_dir) / "runs" / key.algorithm / key.family / f"seed={key.seed}"
        self.manifest_path = self.dir / "manifest.json"
        self.progress_path = self.dir / "progress.parquet"
        self.checkpoint_path = self.dir / "checkpoint.pt"
        self.lock_path = self.dir / ".lock"

    def lock(self) -> Any:
        """Exclusive right to write this run (``LockedError`` if another process is writing it)."""
        return exclusive_lock(self.lock_path, f"run {self.key.label}")

    def writer(self) -> str | None:
        """Who holds this run's lock right now (``"pid … on … since …"``), or None if nobody does."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.lock_path.read_text().strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files of writes cut short by a crash; call only while holding ``lock()``."""
        stale = list(self.dir.glob(".*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    # manifest
    def manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.manifest() or {
            "algorithm": self.key.algorithm, "family": self.key.family, "seed": self.key.seed, "kind": self.key.kind,
        }
        manifest.update(fields, updated_at=time.time())
        write_json(self.manifest_path, manifest)
        return manifest

    # rows
    def rows(self) -> pd.DataFrame:
        if not self.progress_path.exists():
            return rows_frame([])
        return pd.read_parquet(self.progress_path)

    def _write_rows(self, frame: pd.DataFrame) -> None:
        _atomic_write(self.progress_path, lambda tmp: frame.to_parquet(tmp, index=False))

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._write_rows(pd.concat([self.rows(), rows_frame(rows)], ignore_index=True))

    def truncate_rows(self, last_iteration: int) -> int:
        """Drop rows written after the checkpoint at ``last_iteration``; returns how many were dropped."""
        frame = self.rows()
        keep = frame["iteration"] <= last_iteration
        if not keep.all():
            self._write_rows(frame[keep].reset_index(drop=True))
        return int((~keep).sum())

    # checkpoints
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, weights_only=True)


class SuiteMismatchError(RuntimeError):
    """The results directory holds results of a different suite spec or task split."""


class SuiteDir:
    """A results directory: ``suite.yaml`` (the resolved spec and its hash), ``tasks.json`` (the task splits and
    their hash) and ``runs/``, one ``RunStore`` per run. With ``RunStore``, the only code that reads or writes
    one (``results/<suite>/`` by default; a committed reference under ``results/reference/`` is one too)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.suite_path = self.path / "suite.yaml"
        self.tasks_path = self.path / "tasks.json"

    def __repr__(self) -> str:
        return f"SuiteDir({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether a suite was run here (``suite.yaml`` written); imported legacy runs alone have none."""
        return self.suite_path.exists()

    def init(self, resolved: dict[str, Any], spec_hash: str | None, tasks_payload: dict[str, Any]) -> None:
        """Write ``suite.yaml`` and ``tasks.json``, or check they match what is already there
        (``SuiteMismatchError`` where they do not)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.exists() and self.spec_hash() != spec_hash:
            raise SuiteMismatchError(
                f"{self.path} holds results of another spec (hash {self.spec_hash()}, this one "
                f"{spec_hash}); choose another --results directory or remove the old results"
            )
        if self.tasks_path.exists() and self.tasks_hash() != tasks_payload["hash"]:
            raise SuiteMismatchError(
                f"{self.path} holds results for other task splits (hash {self.tasks_hash()}, this suite "
                f"{tasks_payload['hash']}); choose another --results directory"
            )
        text = yaml.safe_dump({"spec_hash": spec_hash, "spec": resolved}, sort_keys=False)
        _atomic_write(self.suite_path, lambda tmp: Path(tmp).write_text(text))
        write_json(self.tasks_path, tasks_payload)

    def _suite_file(self) -> dict[str, Any]:
        return yaml.safe_load(self.suite_path.read_text()) or {}

    def spec_hash(self) -> str | None:
        """The hash of the spec the runs here were run under (``Suite.spec_hash``)."""
        return self._suite_file().get("spec_hash")

    def resolved_spec(self) -> dict[str, Any]:
        """The resolved spec written by ``init`` (``Suite.resolved()``; a ``suite.yaml`` without a ``spec`` key is
        read as the spec itself)."""
        data = self._suite_file()
        return data.get("spec", data) or {}

    def tasks(self) -> dict[str, Any]:
        """The task splits (``tasks.json``: ``hash`` and each family's splits)."""
        return json.loads(self.tasks_path.read_text())

    def tasks_hash(self) -> str | None:
        return self.tasks().get("hash") if self.tasks_path.exists() else None

    def run(self, key: RunKey) -> RunStore:
        return RunStore(self.path, key)

    def run_dirs(self) -> list[Path]:
        """Every run's directory (those with a manifest), sorted."""
        return sorted(p.parent for p in self.path.glob("runs/*/*/seed=*/manifest.json"))

    def manifests(self) -> list[dict[str, Any]]:
        """Every run's manifest."""
        return [json.loads((d / "manifest.json").read_text()) for d in self.run_dirs()]

    def copy_to(self, target: SuiteDir, timings: bool = False) -> int:
        """Copy the spec, splits, manifests and rows to ``target`` (replacing what is there), without checkpoints,
        to be committed: ``tasks.json`` without indentation (half the size), and past ``INLINE_TASKS_LIMIT``
        with each split's task ids and a digest in place of the task parameters (``elide_task_params``); rows
        compressed with zstd (about 30% smaller than the runs' own snappy, read the same way).

        ``timings``: keep the manifests' start/finish times and the rows' ``wall_s`` (what a run cost); without
        them (regression references) a committed copy changes only with its numbers.
        Returns the number of runs copied."""
        if target.path.exists():
            shutil.rmtree(target.path)
        target.path.mkdir(parents=True)
        shutil.copy2(self.suite_path, target.suite_path)
        tasks = self.tasks()
        text = json.dumps(tasks, sort_keys=True, separators=(",", ":"))
        if len(text) > INLINE_TASKS_LIMIT:
            text = json.dumps(elide_task_params(tasks), sort_keys=True, separators=(",", ":"))
        target.tasks_path.write_text(text + "\n")
        run_dirs = self.run_dirs()
        for run_dir in run_dirs:
            copy = target.path / run_dir.relative_to(self.path)
            copy.mkdir(parents=True)
            manifest = json.loads((run_dir / "manifest.json").read_text())
            for volatile in () if timings else ("started_at", "finished_at", "updated_at"):
                manifest.pop(volatile, None)
            (copy / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            if (run_dir / "progress.parquet").exists():
                rows = pd.read_parquet(run_dir / "progress.parquet")
                if not timings:
                    rows["wall_s"] = 0.0
                rows.to_parquet(copy / "progress.parquet", index=False, compression="zstd", compression_level=19)
        return len(run_dirs)

    def results(self) -> pd.DataFrame:
        """All stored rows with the run's identity: ``kind, algorithm, family, seed`` + ``ROW_COLUMNS`` +
        ``source`` (``"harness"``, or ``"imported"`` for legacy logs, ``harness.analysis.legacy``)."""
        frames = []
        for run_dir in self.run_dirs():
            progress = run_dir / "progress.parquet"
            if not progress.exists():
                continue
            manifest = json.loads((run_dir / "manifest.json").read_text())
            frame = pd.read_parquet(progress)
            frame.insert(0, "seed", int(manifest["seed"]))
            frame.insert(0, "family", manifest["family"])
            frame.insert(0, "algorithm", manifest["algorithm"])
            frame.insert(0, "kind", manifest.get("kind", "learner"))
            frame["source"] = manifest.get("source", "harness")
            frames.append(frame)
        if not frames:
            empty = rows_frame([])
            for i, column in enumerate(("kind", "algorithm", "family", "seed")):
                empty.insert(i, column, pd.Series(dtype="int64" if column == "seed" else "string"))
            empty["source"] = pd.Series(dtype="string")
            return empty
        return pd.concat(frames, ignore_index=True)
