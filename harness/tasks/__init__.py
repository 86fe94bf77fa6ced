"""Task families. Which ones exist, and their classes, come from ``harness.tasks.registry``."""

from harness.tasks.base import SPLITS, SplitError, TaskFamily, make_split, tasks_hash
from harness.tasks.registry import family_class, family_names, family_source

__all__ = ["SPLITS", "SplitError", "TaskFamily", "family_class", "family_names", "family_source", "make_split",
           "tasks_hash"]
