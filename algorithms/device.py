"""Where a learner's tensors live: the ``device`` argument, CPU copies for acting, CPU checkpoints.

Every learner builds its networks on the CPU (so a seed gives the same initial weights on any device),
then moves them to ``device`` for its updates. Acting (one batched call per env step) happens on the
CPU where a learner says so, with a CPU copy of its acting network refreshed after every update; on a
CPU device that copy *is* the trained network, so nothing is copied and CPU runs stay bit-identical.
State dicts hold CPU tensors only, so a checkpoint saved on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)


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


def shares_cpu_tensors(device: torch.device) -> bool:
    """Whether CPU acting can use a learner's trained tensors themselves (they live on the CPU)."""
    return device.type == "cpu"


def acting_copy(module: M, device: torch.device) -> M:
    """The module used for acting on the CPU: ``module`` itself when it lives there, else a CPU copy."""
    return module if shares_cpu_tensors(device) else copy.deepcopy(module).cpu()


def cpu_tensors(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``tensors`` for acting on the CPU: themselves on a CPU device, else detached CPU copies."""
    if shares_cpu_tensors(device):
        return tensors
    return {name: value.detach().cpu() for name, value in tensors.items()}


def refresh(acting: nn.Module, module: nn.Module) -> None:
    """Copy ``module``'s parameters and buffers into its CPU acting copy (nothing to do if it is the same)."""
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
