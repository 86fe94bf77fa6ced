"""Import of legacy garage/dowel logs: a ``progress.csv`` becomes one run's result rows.

garage (and the TrMRL code, a garage fork) log meta-test evaluations through dowel into a
``progress.csv`` with one line per iteration. The columns used, first match wins:

- env steps: ``TotalEnvSteps`` (garage), ``Evaluation/TotalEnvSteps``;
- meta-test return: ``MetaTest/Average/AverageReturn`` (garage's ``log_multitask_performance``),
  ``MetaTest/AverageReturn``;
- meta-test success rate: ``MetaTest/Average/SuccessRate``, ``MetaTest/SuccessRate`` (Meta-World);
- iteration: ``Iteration``, ``Itr``, else the line number.

Lines without a meta-test value (garage evaluates every few iterations) are skipped. Each remaining
line gives rows for split ``test``, ``task_id`` ``"average"`` and ``episode_index`` 0: garage logs the
average over its test tasks and episodes, so the per-task and per-episode detail is not recoverable and
adaptation curves are not drawn for imported runs. The run's manifest says ``source: imported`` with
the file's name and SHA-256, and has no spec or tasks hash: its tasks are garage's, not the suite's.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pandas as pd

from harness.run.store import RunKey, RunStatus, RunStore, SuiteDir

STEP_COLUMNS = ("TotalEnvSteps", "Evaluation/TotalEnvSteps")
RETURN_COLUMNS = ("MetaTest/Average/AverageReturn", "MetaTest/AverageReturn")
SUCCESS_COLUMNS = ("MetaTest/Average/SuccessRate", "MetaTest/SuccessRate")
ITERATION_COLUMNS = ("Iteration", "Itr")
IMPORTED = "imported"


def _first(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def garage_rows(progress_csv: str | Path) -> list[dict[str, Any]]:
    """Result rows (``harness.run.store.ROW_COLUMNS``) from a garage/dowel ``progress.csv``.

    Raises:
        ValueError: the file lacks an env-steps column or any meta-test column (the message lists the
            columns looked for and those present), or has no meta-test line.
    """
    frame = pd.read_csv(progress_csv)
    steps = _first(frame, STEP_COLUMNS)
    metrics = {name: column for name, column in (("return", _first(frame, RETURN_COLUMNS)),
                                                   ("success", _first(frame, SUCCESS_COLUMNS))) if column}  # fmt: skip
    if steps is None or not metrics:
        wanted = ", ".join((*STEP_COLUMNS, *RETURN_COLUMNS, *SUCCESS_COLUMNS))
        present = ", ".join(frame.columns[:30]) + (" …" if len(frame.columns) > 30 else "")
        raise ValueError(f"{progress_csv}: need an env-steps column and a meta-test column ({wanted}); "
                         f"found: {present}")  # fmt: skip
    iteration = _first(frame, ITERATION_COLUMNS)
    rows: list[dict[str, Any]] = []
    for line, record in enumerate(frame.to_dict("records")):
        for metric, column in metrics.items():
            value = record[column]
            if pd.isna(value) or pd.isna(record[steps]):
                continue
            rows.append({
                "env_steps": int(record[steps]), "iteration": int(record[iteration]) if iteration else line,
                "wall_s": 0.0, "split": "test", "task_id": "average", "episode_index": 0, "metric": metric,
                "value": float(value),
            })  # fmt: skip
    if not rows:
        raise ValueError(f"{progress_csv}: no line has a meta-test value in {', '.join(metrics.values())}")
    return rows


def import_garage(
    progress_csv: str | Path, results_dir: str | Path, algorithm: str, family: str, seed: int, force: bool = False
) -> tuple[RunStore, int]:
    """Write a garage ``progress.csv`` as the run ``algorithm/family/seed`` of ``results_dir``.

    Returns:
        The run's store and the number of rows written.

    Raises:
        FileExistsError: the run exists already (unless ``force``): an import never overwrites a run.
    """
    progress_csv, results_dir = Path(progress_csv), Path(results_dir)
    rows = garage_rows(progress_csv)
    store = RunStore(results_dir, RunKey(algorithm, family, seed))
    if store.manifest() is not None and not force:
        raise FileExistsError(
            f"{store.dir} exists; import under another --algorithm name (e.g. {algorithm}-garage) or pass --force"
        )
    if not SuiteDir(results_dir).exists():  # a directory of imported runs only: reportable too
        SuiteDir(results_dir).init({"name": results_dir.name, "seeds": [], "families": [], "algorithms": []},
                       None, {"families": {}, "hash": None})  # fmt: skip
    store.truncate_rows(-1)
    store.append_rows(rows)
    digest = hashlib.sha256(progress_csv.read_bytes()).hexdigest()
    store.update_manifest(
        status=RunStatus.DONE, source=IMPORTED, imported_from=progress_csv.name, imported_sha256=digest,
        imported_at=time.time(), spec_hash=None, tasks_hash=None, commit=None, error=None,
    )  # fmt: skip
    return store, len(rows)
