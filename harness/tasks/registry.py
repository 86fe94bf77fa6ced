"""Which task families exist: suite names mapped to family classes.

The only module that knows the list. It imports a family's module the first time its class is asked for,
so importing it (or ``harness.tasks``) loads neither MuJoCo nor Meta-World. Tests add families of their own
with ``registered_family``, which restores the registry when its block ends.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from harness.tasks.base import TaskFamily

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

#: Families added for the length of a ``registered_family`` block (tests' fakes).
_added: dict[str, type[TaskFamily]] = {}


def family_names() -> list[str]:
    """The names ``family_class`` accepts, sorted."""
    return sorted({*BUILTIN_FAMILIES, *_added})


def family_class(name: str) -> type[TaskFamily]:
    """The family registered as ``name``, its module imported on first use.

    Raises:
        KeyError: ``name`` is not registered; the message lists the names that are.
    """
    if name in _added:
        return _added[name]
    try:
        module, _, attribute = BUILTIN_FAMILIES[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(family_names())}") from None
    return getattr(importlib.import_module(module), attribute)


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
