"""The learner and family registries: every built-in entry resolves to a class of that name, a look-up
imports nothing else, and ``registered``/``registered_family`` restore the registry however their block ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from algorithms.base import LearnerClass
from algorithms.registry import BUILTIN_LEARNERS, learner_class, learner_names, registered
from algorithms.rl2 import RL2
from harness.tasks.bandit import BanditFamily
from harness.tasks.registry import BUILTIN_FAMILIES, family_class, family_names, registered_family

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(BUILTIN_LEARNERS))
def test_every_builtin_learner_is_a_learner_class_of_its_name(name: str) -> None:
    cls = learner_class(name)
    assert cls.name == name and isinstance(cls, LearnerClass)
    assert f"{cls.__module__}:{cls.__qualname__}" == BUILTIN_LEARNERS[name]


@pytest.mark.parametrize("name", sorted(BUILTIN_FAMILIES))
def test_every_builtin_family_is_a_family_class_of_its_name(name: str) -> None:
    cls = family_class(name)
    assert cls.name == name
    assert f"{cls.__module__}:{cls.__qualname__}" == BUILTIN_FAMILIES[name]


def test_an_unknown_name_lists_the_known_ones_sorted() -> None:
    with pytest.raises(KeyError) as learner:
        learner_class("ppo2")
    assert learner.value.args[0] == "unknown algorithm 'ppo2'; known: maml, mlp_ppo, pearl, rl2, trmrl"
    with pytest.raises(KeyError) as family:
        family_class("cartpole")
    assert family.value.args[0] == f"unknown task family 'cartpole'; known: {', '.join(sorted(BUILTIN_FAMILIES))}"


class _Fake(RL2):
    name = "test_fake"


class _FakeFamily(BanditFamily):
    name = "test_fake_family"


def test_registered_adds_a_learner_for_its_block_only_even_when_the_block_raises() -> None:
    before = learner_names()
    with registered("test_fake", _Fake):
        assert learner_class("test_fake") is _Fake and learner_names() == sorted([*before, "test_fake"])
    assert learner_names() == before
    with pytest.raises(RuntimeError, match="inside"), registered("test_fake", _Fake):
        raise RuntimeError("inside")
    assert learner_names() == before
    with pytest.raises(KeyError, match="unknown algorithm 'test_fake'"):
        learner_class("test_fake")


def test_registered_refuses_a_taken_name_and_a_class_of_another_name() -> None:
    with pytest.raises(ValueError, match="'rl2' is registered twice"), registered("rl2", RL2):
        pass
    with registered("test_fake", _Fake):
        with pytest.raises(ValueError, match="'test_fake' is registered twice"), registered("test_fake", _Fake):
            pass
        assert learner_class("test_fake") is _Fake  # the refused registration left the first in place
    with pytest.raises(ValueError, match="its class's name is 'rl2'"), registered("test_rl2", RL2):
        pass
    assert learner_names() == sorted(BUILTIN_LEARNERS)


def test_registered_family_adds_a_family_for_its_block_only() -> None:
    with registered_family(_FakeFamily):
        assert family_class("test_fake_family") is _FakeFamily and "test_fake_family" in family_names()
        with pytest.raises(ValueError, match="'test_fake_family' is registered twice"), registered_family(_FakeFamily):
            pass
    with pytest.raises(RuntimeError), registered_family(_FakeFamily):
        raise RuntimeError
    assert family_names() == sorted(BUILTIN_FAMILIES)
    with pytest.raises(ValueError, match="'bandit' is registered twice"), registered_family(BanditFamily):
        pass


def test_the_contracts_and_registries_import_no_learner_and_no_family() -> None:
    """``algorithms.base`` is the contract, below every learner; the registries import a module on first use."""
    script = ("import sys, algorithms.registry, harness.tasks; "
              "print(sorted(m for m in sys.modules if m.startswith(('algorithms.', 'harness.'))))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=REPO)
    assert loaded.stdout.strip() == str(
        ["algorithms.base", "algorithms.registry", "harness.tasks", "harness.tasks.base", "harness.tasks.registry"]
    )
