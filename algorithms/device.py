"""Where a learner's tensors live: the ``device`` argument, CPU copies for acting, CPU checkpoints.

Every learner builds its networks on the CPU (so a seed gives the same initial weights on any device),
then moves them to ``device`` for its updates. Acting (one batched call per env step) happens where a
learner says (its ``acts_on(config)``: ``"cpu"`` or ``"device"``), with a copy of its acting network there refreshed
after every update; where acting and training share a device that copy *is* the trained network, so
nothing is copied and CPU runs stay bit-identical. ``acting_on`` overrides every learner's choice for
the learners built inside it (``harness bench --acting``, to check that each choice is the faster one).
State dicts hold CPU tensors only, so a checkpoint saved on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)

Acting = Literal["cpu", "device"]
_override: Acting | None = None


@contextmanager
def acting_on(where: Acting | None) -> Iterator[None]:
    """Learners built inside the block act on ``where`` (``"cpu"``, or ``"device"``: their training device)
    whatever their own choice; ``None`` leaves each learner's choice. Their results are the same up to
    floating-point rounding; only speed differs."""
    global _override
    if where not in (None, "cpu", "device"):
        raise ValueError(f"acting: {where!r} is not 'cpu' or 'device'")
    before, _override = _override, where
    try:
        yield
    finally:
        _override = before


def acting_device(device: torch.device, choice: Acting) -> torch.device:
    """Where a learner training on ``device`` acts: ``choice`` (its own), unless ``acting_on`` overrides it."""
    return device if (_override or choice) == "device" else torch.device("cpu")


def resolve(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (the harness resolves ``"auto"``).

    Raises:
        ValueError: ``"auto"`` (unresolved), an unknown name, or a CUDA device this machine does not have.
    """
    if isinstance(device, str) and device == "auto":
        raise ValueError("device: 'auto' must be resolved by the caller (to 'cpu' or 'cuda[:N]')")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device: {device!r} is not a torch device ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but CUDA is not available on this machine")
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= count:
        raise ValueError(f"device: {device!r} asked for, but this machine has {count} CUDA device(s)")
    return resolved


def shares_tensors(device: torch.device, acting: torch.device) -> bool:
    """Whether acting on ``acting`` can use a learner's trained tensors (on ``device``) themselves."""
    return acting == device


def acting_copy(module: M, device: torch.device, acting: torch.device) -> M:
    """The module used for acting on ``acting``: ``module`` itself when it lives on ``device`` and that is
    where it acts, else a copy there."""
    return module if shares_tensors(device, acting) else copy.deepcopy(module).to(acting)


def acting_tensors(tensors: dict[str, Tensor], device: torch.device, acting: torch.device) -> dict[str, Tensor]:
    """``tensors`` (on ``device``) for acting on ``acting``: themselves where the two are the same device,
    else detached copies there."""
    if shares_tensors(device, acting):
        return tensors
    return {name: value.detach().to(acting) for name, value in tensors.items()}


def refresh(acting: nn.Module, module: nn.Module) -> None:
    """Copy ``module``'s parameters and buffers into its acting copy (nothing to do if it is the same)."""
    if acting is not module:
        acting.load_state_dict(module.state_dict())


def cpu_state(state: Any) -> Any:
    """``state`` with every tensor on the CPU, through nested dicts, lists and tuples.

    On the CPU ``Tensor.cpu()`` returns the tensor itself: a CPU learner's checkpoint is unchanged.
    """
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: cpu_state(value) for key, value in state.items()}
    if isinstance(state, list):
        return [cpu_state(value) for value in state]
    if isinstance(state, tuple):
        return tuple(cpu_state(value) for value in state)
    return state
