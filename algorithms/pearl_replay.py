"""PEARL's data: each task's transitions in a FIFO replay buffer, packed from the harness's trial batches
(see ``algorithms.pearl``'s docstring for which transitions the RL and the encoder buffers keep).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from algorithms.base import TrialBatch


class TaskReplay:
    """One task's transitions as packed rows ``[obs, action, reward, next_obs, done]``.

    A FIFO ring: storage grows (doubling) as rows arrive, up to ``capacity``, then overwrites the oldest.
    """

    def __init__(self, width: int, capacity: int) -> None:
        self.capacity = capacity
        self.data = torch.empty(0, width)
        self.size = 0
        self.position = 0  # where the next row goes

    def add(self, rows: Tensor) -> None:
        rows = rows[-self.capacity:]
        n = len(rows)
        if self.size + n > len(self.data) and len(self.data) < self.capacity:
            grown = torch.empty(min(self.capacity, max(self.size + n, 2 * len(self.data))), self.data.shape[1])
            grown[: self.size] = self.data[: self.size]  # not yet full: rows 0..size-1 hold the data
            self.data = grown
        self.data[(self.position + torch.arange(n)) % self.capacity] = rows
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def clear(self) -> None:
        self.size = self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data[: self.size].clone(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = state["data"].clone()
        self.size, self.position = len(self.data), int(state["position"])


def trial_transitions(batch: TrialBatch, low: np.ndarray, high: np.ndarray,
                      use_next_obs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Packed transitions of a trial batch and where they may be used (see the module docstring).

    Returns:
        ``rows [N, T, 2 obs + act + 2]`` (actions scaled to [-1, 1]), ``rl_mask [N, T]`` (has a usable
        ``s'`` or is terminal) and ``context_mask [N, T]``.
    """
    obs = torch.from_numpy(batch.obs).flatten(2)
    actions = torch.from_numpy(2.0 * (batch.actions - low) / (high - low) - 1.0).float()
    valid, end = torch.from_numpy(batch.valid), torch.from_numpy(batch.episode_end)
    terminated = torch.from_numpy(batch.terminated)
    has_next = valid & ~end  # the next step of the same episode holds s'
    next_obs = torch.where(has_next.unsqueeze(-1), torch.roll(obs, -1, dims=1), obs)
    rows = torch.cat([obs, actions, torch.from_numpy(batch.rewards).unsqueeze(-1), next_obs,
                      terminated.float().unsqueeze(-1)], dim=-1)
    return rows, has_next | (valid & terminated), has_next if use_next_obs else valid
