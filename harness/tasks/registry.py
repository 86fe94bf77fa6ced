"""Which task families exist: suite names mapped to family classes.

The only module that knows the list. It imports a family's module the first time its class is asked for,
so importing it (or ``harness.tasks``) loads neither MuJoCo nor Meta-World. Tests add families of their own
with ``registered_family``, which restores the registry when its block ends.

As for learners (``algorithms.registry``), a name is a built-in family, a name an installed package
registers in the entry-point group ``metarl_harness.families``, or an import path ``"module:Class"`` of a
``TaskFamily`` subclass defined outside the repository; ``family_source`` says which class an external
name resolves to.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from algorithms.registry import entry_point_paths, resolve_name
from harness.tasks.base import FamilyParams, TaskFamily

#: Every built-in family, as suite name → ``"module:Class"``; the class's ``name`` is its key here.
BUILTIN_FAMILIES: dict[str, str] = {
    "ant_dir": "harness.tasks.locomotion:AntDirFamily",
    "ant_goal": "harness.tasks.locomotion:AntGoalFamily",
    "bandit": "harness.tasks.bandit:BanditFamily",
    "halfcheetah_dir": "harness.tasks.locomotion:HalfCheetahDirFamily",
    "halfcheetah_vel": "harness.tasks.locomotion:HalfCheetahVelFamily",
    "hopper_params": "harness.tasks.locomotion:HopperParamsFamily",
    "humanoid_dir": "harness.tasks.locomotion:HumanoidDirFamily",
    "metaworld_ml1": "harness.tasks.meta_world:MetaWorldML1Family",
    "metaworld_ml10": "harness.tasks.meta_world:MetaWorldML10Family",
    "metaworld_ml45": "harness.tasks.meta_world:MetaWorldML45Family",
    "point_nav": "harness.tasks.point_nav:PointNavFamily",
    "tabular_mdp": "harness.tasks.tabular_mdp:TabularMDPFamily",
    "walker_params": "harness.tasks.locomotion:WalkerParamsFamily",
}

#: The entry-point group through which installed packages register task families.
FAMILY_ENTRY_POINTS = "metarl_harness.families"

#: Families added for the length of a ``registered_family`` block (tests' fakes).
_added: dict[str, type[TaskFamily]] = {}


def _family_problem(cls: Any) -> str | None:
    """Why ``cls`` is not a usable ``TaskFamily`` subclass, or None."""
    if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
        return "not a subclass of harness.tasks.base.TaskFamily"
    if inspect.isabstract(cls):
        return f"it does not implement {', '.join(sorted(cls.__abstractmethods__))}"
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        return "its name is not a non-empty string"
    if not (isinstance(getattr(cls, "Params", None), type) and issubclass(cls.Params, FamilyParams)):
        return "its Params is not a subclass of harness.tasks.base.FamilyParams"
    return None


def _resolve(name: str) -> tuple[str | None, type[TaskFamily]]:
    """``(import path or None for a built-in or added family, class)``."""
    return resolve_name(name, _added, BUILTIN_FAMILIES, FAMILY_ENTRY_POINTS, _family_problem, "task family",
                        "a task family")


def family_names() -> list[str]:
    """The registered names ``family_class`` accepts (built-in, added, and installed packages'), sorted; any
    ``"module:Class"`` import path of a family class is accepted too."""
    return sorted({*BUILTIN_FAMILIES, *_added, *entry_point_paths(FAMILY_ENTRY_POINTS)})


def family_class(name: str) -> type[TaskFamily]:
    """The family ``name`` names (a registered name or a ``"module:Class"`` import path), its module imported on
    first use.

    Raises:
        LookupFailed: (a ``KeyError``) ``name`` is not registered (the message lists the names that are), its
            module does not import, or it names something that is not a task family.
    """
    return _resolve(name)[1]


def family_source(name: str) -> str | None:
    """The import path ``"module:Class"`` of an external family; None for a built-in or added one.

    Raises:
        LookupFailed: as ``family_class``.
    """
    return _resolve(name)[0]


@contextmanager
def registered_family(cls: type[TaskFamily]) -> Iterator[type[TaskFamily]]:
    """Register ``cls`` under its ``name`` for the block; the registry is restored afterwards, also on an
    exception.

    Raises:
        ValueError: a family named ``cls.name`` is already registered.
    """
    if cls.name in BUILTIN_FAMILIES or cls.name in _added:
        raise ValueError(f"task family {cls.name!r} is registered twice")
    _added[cls.name] = cls
    try:
        yield cls
    finally:
        del _added[cls.name]
