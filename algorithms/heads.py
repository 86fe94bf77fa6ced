"""Pieces shared by the memory-based learners (RL², TrMRL): the augmented observation and the action head.

Both read ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]`` and act through a categorical (``Discrete``) or a
diagonal Gaussian with a state-independent log-std (``Box``) distribution. ``StepInputs`` builds one
step's augmented observations for acting; ``augmented_observation`` builds whole trials for training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def augmented_observation(obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor,
                          action_dim: int, discrete: bool) -> Tensor:
    """``[..., obs_dim + action_dim + 2]``: obs, previous action (one-hot if discrete), reward, done."""
    if discrete:
        prev_action = F.one_hot(prev_action.long(), action_dim).float()
    return torch.cat([obs, prev_action, prev_reward.unsqueeze(-1), episode_start.unsqueeze(-1).float()], dim=-1)


class StepInputs:
    """The augmented observations ``[N, obs_dim + action_dim + 2]`` of one step, in one reused buffer.

    Acting calls this once per env step: it writes obs, previous action (one-hot if discrete), previous
    reward and done into a float32 numpy buffer shared with a tensor, so a step costs one conversion and
    no tensor allocation (``augmented_observation`` costs four conversions and a ``cat``). The values
    are those of ``augmented_observation`` of the same arrays: copies of float32 inputs and exact 0/1.
    The returned tensor *is* the buffer: the next call overwrites it, so use it before then.
    """

    def __init__(self, action_dim: int, discrete: bool) -> None:
        self.action_dim, self.discrete = action_dim, discrete
        self.buffer = np.zeros((0, 0), np.float32)
        self.tensor = torch.from_numpy(self.buffer)

    def __call__(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray,
                 episode_start: np.ndarray) -> Tensor:
        """``obs [N, obs_dim]``, ``prev_action [N]`` (int, discrete) or ``[N, action_dim]``, ``prev_reward [N]``,
        ``episode_start [N]`` bool → the buffer as a tensor ``[N, obs_dim + action_dim + 2]``."""
        num, obs_dim = obs.shape[0], int(np.prod(obs.shape[1:]))
        if self.buffer.shape != (num, obs_dim + self.action_dim + 2):
            self.buffer = np.empty((num, obs_dim + self.action_dim + 2), np.float32)
            self.tensor = torch.from_numpy(self.buffer)
        buffer, actions = self.buffer, slice(obs_dim, obs_dim + self.action_dim)
        buffer[:, :obs_dim] = obs.reshape(num, obs_dim)
        if self.discrete:
            buffer[:, actions] = 0.0
            buffer[np.arange(num), obs_dim + prev_action] = 1.0
        else:
            buffer[:, actions] = prev_action.reshape(num, self.action_dim)
        buffer[:, -2] = prev_reward
        buffer[:, -1] = episode_start
        return self.tensor


def action_distribution(out: Tensor, log_std: Tensor, discrete: bool) -> torch.distributions.Distribution:
    """Categorical over logits ``out``, or Normal with mean ``out`` and std ``exp(log_std)``."""
    if discrete:
        return torch.distributions.Categorical(logits=out)
    return torch.distributions.Normal(out, log_std.exp().expand_as(out))


def per_action(values: Tensor, discrete: bool) -> Tensor:
    """Log-probabilities or entropies per action: summed over a Gaussian's action dimensions."""
    return values if discrete else values.sum(-1)


def sample_action(out: Tensor, log_std: Tensor, discrete: bool, deterministic: bool,
                  generator: torch.Generator, noise: Tensor | None = None) -> Tensor:
    """One action per row of ``out`` (the mode when ``deterministic``), drawn from ``generator``.

    ``noise``: a buffer of ``out``'s shape to draw the Gaussian noise into (acting reuses one per
    policy); the draw is the same as without it.
    """
    if discrete:
        if deterministic:
            return out.argmax(-1)
        return torch.multinomial(out.softmax(-1), 1, generator=generator)[:, 0]
    if deterministic:
        return out
    if noise is None or noise.shape != out.shape:
        return out + log_std.exp() * torch.randn(out.shape, generator=generator)
    return out + log_std.exp() * torch.randn(out.shape, generator=generator, out=noise)
