"""Pieces shared by the memory-based learners (RL², TrMRL): the augmented observation and the action head.

Both read ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]`` and act through a categorical (``Discrete``) or a
diagonal Gaussian with a state-independent log-std (``Box``) distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augmented_observation(obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor,
                          action_dim: int, discrete: bool) -> Tensor:
    """``[..., obs_dim + action_dim + 2]``: obs, previous action (one-hot if discrete), reward, done."""
    if discrete:
        prev_action = F.one_hot(prev_action.long(), action_dim).float()
    return torch.cat([obs, prev_action, prev_reward.unsqueeze(-1), episode_start.unsqueeze(-1).float()], dim=-1)


def action_distribution(out: Tensor, log_std: Tensor, discrete: bool) -> torch.distributions.Distribution:
    """Categorical over logits ``out``, or Normal with mean ``out`` and std ``exp(log_std)``."""
    if discrete:
        return torch.distributions.Categorical(logits=out)
    return torch.distributions.Normal(out, log_std.exp().expand_as(out))


def per_action(values: Tensor, discrete: bool) -> Tensor:
    """Log-probabilities or entropies per action: summed over a Gaussian's action dimensions."""
    return values if discrete else values.sum(-1)


def sample_action(out: Tensor, log_std: Tensor, discrete: bool, deterministic: bool,
                  generator: torch.Generator) -> Tensor:
    """One action per row of ``out`` (the mode when ``deterministic``), drawn from ``generator``."""
    if discrete:
        if deterministic:
            return out.argmax(-1)
        return torch.multinomial(out.softmax(-1), 1, generator=generator)[:, 0]
    if deterministic:
        return out
    return out + log_std.exp() * torch.randn(out.shape, generator=generator)
