"""Set-up every learner repeats: seeded network builds, MLPs, batch arrays as tensors, checkpoints.

Each helper does what the learners' own copies did, draw for draw: seeds come from the same generator in
the same order, layers are built (and their default initialisation drawn) in the same order, so a seed
gives the same weights, the same noise and the same results as before they were shared.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices

M = TypeVar("M", bound=nn.Module)


# --- seeding -------------------------------------------------------------------------------------


def torch_seeds(seed: int) -> Iterator[int]:
    """Seeds for a learner's torch generators, drawn one after another from a generator seeded with ``seed``.

    The learners take the first for their networks (``build_seeded``) and the second for their training
    generator, so the two never share a stream.
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield int(torch.randint(2**62, (1,), generator=generator))


def build_seeded(seed: int, build: Callable[[], M]) -> M:
    """``build()`` with torch's global generator seeded with ``seed`` and restored afterwards.

    Module constructors draw their initial weights from the global generator; forking it keeps a
    learner's weights a function of its seed alone and leaves every other draw in the process as it
    was. Called before the network moves to its device, so a seed gives the same weights on any device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# --- networks ------------------------------------------------------------------------------------


def action_size(space: gym.Space) -> tuple[bool, int]:
    """``(discrete, action_dim)``: a ``Discrete`` space's number of actions (the width of its logits), or
    the number of dimensions of a ``Box``."""
    discrete = isinstance(space, gym.spaces.Discrete)
    return discrete, int(space.n) if discrete else int(np.prod(space.shape))  # type: ignore[attr-defined, arg-type]


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.Tanh,
        init: Callable[[nn.Linear, bool], None] | None = None) -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with ``activation`` between them and none after the last.

    ``init(linear, is_last)`` runs on each layer right after it is built, before the next one is: a
    layer's own initialisation then draws between the default ones, as garage's modules draw them.
    Without it the layers keep PyTorch's default initialisation (a caller may re-initialise them
    afterwards, in its own order). The indices of the linear layers (``0, 2, 4, …``) name them in state dicts.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(fan_in, fan_out)
        last = i == len(sizes) - 2
        if init is not None:
            init(linear, last)
        layers += [linear] if last else [linear, activation()]
    return nn.Sequential(*layers)


# --- batches -------------------------------------------------------------------------------------


def tensor_on(device: torch.device | str) -> Callable[[np.ndarray], Tensor]:
    """``array ↦ torch.from_numpy(array).to(device)``: a batch's arrays where the update runs (on the CPU
    the tensor shares the array's memory: nothing is copied)."""
    return lambda array: torch.from_numpy(array).to(device)


# --- checkpoints ---------------------------------------------------------------------------------


class Stateful(Protocol):
    """An optimiser, or anything else whose state a checkpoint holds."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def config_state(config: Any) -> dict[str, Any]:
    """``asdict(config)`` with tuple fields as lists, as a suite's YAML gives them."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def learner_state(config: Any, net: nn.Module, generator: torch.Generator, iterations: int,
                  **optimisers: Stateful) -> dict[str, Any]:
    """A learner's checkpoint: its config, network, optimisers (each under its keyword), training generator
    and iteration count, every tensor on the CPU (``algorithms.device``)."""
    return {
        "config": config_state(config),
        "net": devices.cpu_state(net.state_dict()),
        **{name: devices.cpu_state(optimiser.state_dict()) for name, optimiser in optimisers.items()},
        "generator": generator.get_state(),
        "iterations": iterations,
    }


def load_learner_state(state: dict[str, Any], net: nn.Module, acting_net: nn.Module | None,
                       generator: torch.Generator, **optimisers: Stateful) -> int:
    """Restore what ``learner_state`` saved into the learner's own objects; returns the iteration count.

    The network's parameters are copied into wherever they live, then into its acting copy (``None``: the
    learner has none); the optimisers move their state to their parameters' device.
    """
    net.load_state_dict(state["net"])
    if acting_net is not None:
        devices.refresh(acting_net, net)
    for name, optimiser in optimisers.items():
        optimiser.load_state_dict(state[name])
    generator.set_state(state["generator"])
    return int(state["iterations"])
