"""Which learners exist: suite names mapped to learner classes.

The only module that knows the list. It sits above the contract (``algorithms.base``) and the learners,
and imports a learner's module the first time its class is asked for, so importing the registry (or the
contract) imports no learner. Tests add learners of their own with ``registered``, which restores the
registry when its block ends.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from algorithms.base import LearnerClass

#: Every built-in learner, as suite name → ``"module:Class"``; the class's ``name`` is its key here.
BUILTIN_LEARNERS: dict[str, str] = {
    "maml": "algorithms.maml:MAML",
    "mlp_ppo": "algorithms.mlp_ppo:MLPPPO",
    "pearl": "algorithms.pearl:PEARL",
    "rl2": "algorithms.rl2:RL2",
    "trmrl": "algorithms.trmrl:TrMRL",
}

#: Learners added for the length of a ``registered`` block (tests' fakes).
_added: dict[str, LearnerClass] = {}


def learner_names() -> list[str]:
    """The names ``learner_class`` accepts, sorted."""
    return sorted({*BUILTIN_LEARNERS, *_added})


def learner_class(name: str) -> LearnerClass:
    """The learner class registered as ``name``, its module imported on first use.

    Raises:
        KeyError: ``name`` is not registered; the message lists the names that are.
    """
    if name in _added:
        return _added[name]
    try:
        module, _, attribute = BUILTIN_LEARNERS[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(learner_names())}") from None
    return getattr(importlib.import_module(module), attribute)


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
