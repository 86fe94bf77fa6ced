"""Task families. Importing this package registers the built-in families."""

from harness.tasks import bandit, point_nav  # noqa: F401  (registration)
from harness.tasks import locomotion as locomotion  # (registration)
from harness.tasks import meta_world as meta_world  # (registration)
from harness.tasks import tabular_mdp as tabular_mdp  # (registration)
from harness.tasks.base import FAMILIES, SPLITS, SplitError, TaskFamily, family_class, make_split, tasks_hash

__all__ = ["FAMILIES", "SPLITS", "SplitError", "TaskFamily", "family_class", "make_split", "tasks_hash"]
