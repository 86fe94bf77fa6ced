"""The learners' shared set-up (``algorithms.common``): seeds, seeded builds and MLPs draw exactly what the
learners' own copies drew, and a config with a ``Literal`` option rejects a value it does not allow."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

from algorithms.base import check_choices
from algorithms.common import build_seeded, config_state, mlp, torch_seeds


def test_torch_seeds_are_the_draws_of_one_generator_seeded_with_the_seed() -> None:
    generator = torch.Generator().manual_seed(7)
    expected = [int(torch.randint(2**62, (1,), generator=generator)) for _ in range(3)]
    assert list(itertools.islice(torch_seeds(7), 3)) == expected
    assert expected[0] != expected[1]


def test_a_seeded_build_depends_on_its_seed_only_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    first = build_seeded(5, lambda: nn.Linear(4, 3))
    after = torch.random.get_rng_state()
    torch.manual_seed(123)
    assert torch.equal(after, torch.random.get_rng_state())  # the build drew nothing from the global generator
    torch.randn(10)  # the global generator has moved on: the build is the same
    second = build_seeded(5, lambda: nn.Linear(4, 3))
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def test_mlp_initialises_each_layer_as_it_is_built() -> None:
    """``init`` draws between the layers' default initialisations, as garage's modules (and TrMRL's heads) do."""

    def init(linear: nn.Linear, last: bool) -> None:
        nn.init.xavier_uniform_(linear.weight, gain=0.5 if last else 1.0)
        nn.init.zeros_(linear.bias)

    torch.manual_seed(0)
    net = mlp([3, 5, 2], nn.Tanh, init)
    torch.manual_seed(0)
    first = nn.Linear(3, 5)
    init(first, False)
    second = nn.Linear(5, 2)
    init(second, True)
    assert [type(layer) for layer in net] == [nn.Linear, nn.Tanh, nn.Linear]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert torch.equal(net[0].weight, first.weight) and torch.equal(net[2].weight, second.weight)


@dataclass(frozen=True)
class _Config:
    cell: Literal["gru", "lstm"] = "gru"
    sizes: tuple[int, ...] = (4, 4)

    def __post_init__(self) -> None:
        check_choices(self)


def test_literal_options_are_checked_and_tuples_are_saved_as_lists() -> None:
    with pytest.raises(ValueError, match=r"^cell: must be one of gru, lstm$"):
        _Config(cell="rnn")  # type: ignore[arg-type]
    assert config_state(_Config(cell="lstm")) == {"cell": "lstm", "sizes": [4, 4]}
