"""The suite's fixed task lists: one train/test/ood split per family, identical for every algorithm."""

from __future__ import annotations

import json
from typing import Any

from algorithms.base import Task
from harness import seeding
from harness.spec.suite import ResolvedFamily, SpecError, Suite
from harness.tasks.base import SplitError, make_split, tasks_hash


def family_split(suite: Suite, family: ResolvedFamily) -> dict[str, list[Task]]:
    """The family's split, drawn from the suite's root seed (one stream per family and split)."""
    sizes = family.spec.split.model_dump()
    return make_split(
        family.family, family.key, sizes, lambda split: seeding.generator(suite.spec.seed, "tasks", family.key, split)
    )


def build_splits(suite: Suite) -> dict[str, dict[str, list[Task]]]:
    """``{family_id: {split: [Task, ...]}}`` for every family of the suite."""
    return {family.key: family_split(suite, family) for family in suite.families}


def train_eval_sample(split: dict[str, list[Task]], count: int) -> list[Task]:
    """The fixed sample of train tasks also evaluated (the first ``count``: train tasks are i.i.d.)."""
    return split["train"][:count]


def shares_train_tasks(split: dict[str, list[Task]]) -> bool:
    """Whether any test task is also a training task (only families with ``disjoint_test=False``)."""
    train = {json.dumps(t.params, sort_keys=True) for t in split["train"]}
    return any(json.dumps(t.params, sort_keys=True) in train for t in split["test"])


def splits_payload(suite: Suite, splits: dict[str, dict[str, list[Task]]]) -> dict[str, Any]:
    """What ``tasks.json`` holds: every task of every split, the family definitions, and the hash."""
    families = {}
    for family in suite.families:
        families[family.key] = {
            "family": family.family.name,
            "version": family.family.version,
            "params": family.family.params.model_dump(mode="json"),
            "test_coincides_with_train": shares_train_tasks(splits[family.key]),
            "splits": {
                name: [{"task_id": t.task_id, "params": t.params} for t in tasks]
                for name, tasks in splits[family.key].items()
            },
        }
    return {"families": families, "hash": tasks_hash(families)}


#: ``tasks.json`` in a copy of a results directory (``harness export``) larger than this keeps each split's
#: task ids and a digest of their parameters, not the parameters: random tabular MDPs are 550 numbers a task,
#: 46 MiB of JSON for the RL² paper's MDP table. The suite re-draws the parameters exactly (seeded streams).
INLINE_TASKS_LIMIT = 4 * 2**20


def _digest(splits: dict[str, Any]) -> str:
    return tasks_hash(json.loads(json.dumps(splits)))  # one spelling of plain data (tuples vs lists)


def elide_task_params(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` (``splits_payload``) with each family's ``splits`` replaced by ``task_ids`` and
    ``splits_digest``. The top-level ``hash`` is kept: it names the splits as drawn."""
    families = {}
    for key, family in payload["families"].items():
        if "splits" not in family:  # elided already
            families[key] = family
            continue
        rest = {k: v for k, v in family.items() if k != "splits"}
        families[key] = {**rest, "task_ids": {name: [t["task_id"] for t in tasks]
                                              for name, tasks in family["splits"].items()},
                         "splits_digest": _digest(family["splits"])}  # fmt: skip
    return {**payload, "families": families,
            "elided": "task parameters left out (too large to commit); the suite in suite.yaml re-draws them, "
                      "and their hash is `hash`"}  # fmt: skip


def family_tasks_identity(family: dict[str, Any]) -> dict[str, Any]:
    """One family's entry of ``tasks.json`` with its splits as a digest: equal for the full and the elided
    form of the same splits."""
    if "splits" not in family:
        return {k: v for k, v in family.items() if k != "task_ids"}
    rest = {k: v for k, v in family.items() if k != "splits"}
    return {**rest, "splits_digest": _digest(family["splits"])}


def check_splits(suite: Suite) -> None:
    """Build every family's splits once, so a family that cannot supply them fails before any run."""
    try:
        build_splits(suite)
    except SplitError as e:
        raise SpecError(suite.name, [f"families: {e}"]) from None
