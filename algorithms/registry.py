"""Which learners exist: suite names mapped to learner classes.

The only module that knows the list. It sits above the contract (``algorithms.base``) and the learners,
and imports a learner's module the first time its class is asked for, so importing the registry (or the
contract) imports no learner. Tests add learners of their own with ``registered``, which restores the
registry when its block ends.

A name is, in the order looked up: a built-in learner (``BUILTIN_LEARNERS``); a name an installed package
registers in the entry-point group ``metarl_harness.learners`` (``reinforce_counts =
"metarl_example.learner:ReinforceCounts"`` in its ``pyproject.toml``); or an import path
``"module:Class"`` of a class defined outside the repository, as Gymnasium's entry points are spelled.
``learner_source`` says which class an external name resolves to, so a suite can record it.
``resolve_name`` (the look-up itself) and ``entry_point_paths`` are shared with the task-family registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from algorithms.base import LearnerClass

#: Every built-in learner, as suite name → ``"module:Class"``; the class's ``name`` is its key here.
BUILTIN_LEARNERS: dict[str, str] = {
    "maml": "algorithms.maml:MAML",
    "mlp_ppo": "algorithms.mlp_ppo:MLPPPO",
    "pearl": "algorithms.pearl:PEARL",
    "rl2": "algorithms.rl2:RL2",
    "trmrl": "algorithms.trmrl:TrMRL",
}

#: The entry-point group through which installed packages register learners.
LEARNER_ENTRY_POINTS = "metarl_harness.learners"

#: Learners added for the length of a ``registered`` block (tests' fakes).
_added: dict[str, LearnerClass] = {}


class LookupFailed(KeyError):
    """A name names nothing usable: it is unknown, its module does not import, or what it names does not meet
    the protocol. ``args[0]`` is one line saying which (a ``KeyError``, so ``except KeyError`` catches it)."""

    def __str__(self) -> str:
        return str(self.args[0])


def is_import_path(name: str) -> bool:
    """Whether ``name`` is spelled ``"module:Class"`` (registered names have no colon)."""
    return ":" in name


def import_object(path: str) -> Any:
    """The object an import path ``"package.module:Attribute"`` names (``Attribute`` may be dotted).

    Raises:
        LookupFailed: the path is malformed, the module does not import (whatever it raised, on one line),
            or it has no such attribute.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise LookupFailed(f"{path!r} is not an import path 'package.module:Class'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as e:  # a missing module, or any error the module raises while it is imported
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kind = "" if isinstance(e, ImportError) else f"{type(e).__name__}: "
        raise LookupFailed(f"cannot import {module_name!r}: {kind}{reason}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise LookupFailed(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def entry_point_paths(group: str) -> dict[str, str]:
    """Every name registered in the entry-point ``group`` by an installed package, as name → ``"module:attr"``.

    Raises:
        LookupFailed: two packages register one name with different targets.
    """
    paths: dict[str, str] = {}
    for point in importlib.metadata.entry_points(group=group):
        path = f"{point.module}:{point.attr}"
        if paths.setdefault(point.name, path) != path:
            raise LookupFailed(f"{point.name!r} is registered twice in entry-point group {group}: "
                               f"{paths[point.name]} and {path}")
    return paths


def _learner_problem(cls: Any) -> str | None:
    """Why ``cls`` is not a learner class the harness can configure (``LearnerClass``), or None."""
    if not isinstance(cls, type):
        return f"is a {type(cls).__name__}, not a class"
    missing = [member for member in ("name", "Config", "presets", "acts_on") if not hasattr(cls, member)]
    if missing:
        return f"it has no {', '.join(missing)}"
    if not isinstance(cls.name, str) or not cls.name:
        return "its name is not a non-empty string"
    if not (isinstance(cls.Config, type) and dataclasses.is_dataclass(cls.Config)
            and cls.Config.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        return "its Config is not a frozen dataclass"
    if not isinstance(cls.presets, dict):
        return "its presets is not a dict of preset name → config overrides"
    return None


def resolve_name(name: str, added: dict[str, Any], builtin: dict[str, str], group: str,
                 problem: Callable[[Any], str | None], unknown: str, not_a: str) -> tuple[str | None, Any]:
    """What a registry's ``name`` names, as ``(import path, or None for a built-in or added one; the object)``:
    an added one, a built-in one (its module imported now), an import path, or an installed package's entry
    point in ``group``. Shared by the learner and the task-family registries.

    Raises:
        LookupFailed: ``"unknown {unknown} …"`` with the names that exist; the module does not import; or
            ``problem(obj)`` says why the object is not ``"{path} is not {not_a}: …"``; or an entry point's
            name is not its class's ``name``.
    """
    if name in added:
        return None, added[name]
    if name in builtin:
        module, _, attribute = builtin[name].partition(":")
        return None, getattr(importlib.import_module(module), attribute)
    if is_import_path(name):
        path = name
    else:
        registered_paths = entry_point_paths(group)
        if name not in registered_paths:
            known = sorted({*builtin, *added, *registered_paths})
            raise LookupFailed(f"unknown {unknown} {name!r}; known: {', '.join(known)}")
        path = registered_paths[name]
    obj = import_object(path)
    why = problem(obj)
    if why:
        raise LookupFailed(f"{path} is not {not_a}: {why}")
    if not is_import_path(name) and obj.name != name:
        raise LookupFailed(f"entry point {name!r} names {path}, whose name is {obj.name!r}; they must agree")
    return path, obj


def _resolve(name: str) -> tuple[str | None, LearnerClass]:
    """``(import path or None for a built-in or added learner, class)``."""
    def problem(cls: Any) -> str | None:
        why = _learner_problem(cls)
        return why and f"{why} (algorithms/base.py, LearnerClass)"

    return resolve_name(name, _added, BUILTIN_LEARNERS, LEARNER_ENTRY_POINTS, problem, "algorithm",
                        "a learner class")


def learner_names() -> list[str]:
    """The registered names ``learner_class`` accepts (built-in, added, and installed packages'), sorted; any
    ``"module:Class"`` import path of a learner class is accepted too."""
    return sorted({*BUILTIN_LEARNERS, *_added, *entry_point_paths(LEARNER_ENTRY_POINTS)})


def learner_class(name: str) -> LearnerClass:
    """The learner class ``name`` names (a registered name or a ``"module:Class"`` import path), its module
    imported on first use.

    Raises:
        LookupFailed: (a ``KeyError``) ``name`` is not registered (the message lists the names that are), its
            module does not import, or it names something that is not a learner class.
    """
    return _resolve(name)[1]


def learner_source(name: str) -> str | None:
    """The import path ``"module:Class"`` of an external learner (an installed package's entry point, or an
    import path itself); None for a built-in learner or one added by ``registered``.

    Raises:
        LookupFailed: as ``learner_class``.
    """
    return _resolve(name)[0]


@contextmanager
def registered(name: str, cls: LearnerClass) -> Iterator[LearnerClass]:
    """Register ``cls`` as ``name`` for the block; the registry is restored afterwards, also on an exception.

    Raises:
        ValueError: ``name`` is already registered, or ``cls.name`` is not ``name`` (a subclass of a built-in
            learner inherits its ``name``: set it).
    """
    if name in BUILTIN_LEARNERS or name in _added:
        raise ValueError(f"learner {name!r} is registered twice")
    if getattr(cls, "name", None) != name:
        raise ValueError(f"learner {name!r}: its class's name is {getattr(cls, 'name', None)!r}")
    _added[name] = cls
    try:
        yield cls
    finally:
        del _added[name]
