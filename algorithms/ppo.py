"""PPO pieces shared by the on-policy learners: trial-aware GAE, the clipped loss, and the update.

Losses are pure functions returning named terms (torchrl style): the update sums the ``loss_*``
terms and logs the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor


def gae(rewards: Tensor, values: Tensor, cut: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over padded trials.

    Args:
        rewards: ``[N, T]``.
        values: ``[N, T]``, value estimates of the states the actions were taken in.
        cut: ``[N, T]`` bool, True where nothing is bootstrapped from step ``t + 1``: the end of a
            trial (RL² treats the trial as one episode, so episode ends inside a trial are *not*
            cuts), a terminal state when episodes are the unit, and every padding step.
        gamma: discount.
        lam: GAE λ.

    Returns:
        ``(advantages, returns)``, each ``[N, T]``; ``returns = advantages + values``.
    """
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    keep = (~cut).to(rewards.dtype)
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value * keep[:, t] - values[:, t]
        running = delta + gamma * lam * keep[:, t] * running
        advantages[:, t] = running
    return advantages, advantages + values


def trial_cuts(valid: np.ndarray) -> np.ndarray:
    """``[N, T]`` bool cuts for trial-level GAE: the last valid step of each trial and all padding."""
    cut = ~valid.copy()
    last = valid.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    cut[np.arange(valid.shape[0]), last] = True
    return cut


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def ppo_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    mask: Tensor,
    clip: float,
    value_coef: float,
    entropy_coef: float,
) -> dict[str, Tensor]:
    """The clipped PPO objective (Schulman et al. 2017), as named terms; all inputs share a shape.

    Returns:
        ``loss_policy``, ``loss_value``, ``loss_entropy`` (to be summed) and the detached
        diagnostics ``approx_kl`` (http://joschu.net/blog/kl-approx.html) and ``clip_fraction``.
    """
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip).float(), mask)
    return {
        "loss_policy": -masked_mean(surrogate, mask),
        "loss_value": value_coef * 0.5 * masked_mean((values - returns) ** 2, mask),
        "loss_entropy": -entropy_coef * masked_mean(entropy, mask),
        "approx_kl": approx_kl,
        "clip_fraction": clip_fraction,
    }


def normalise_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    mean = masked_mean(advantages, mask)
    std = masked_mean((advantages - mean) ** 2, mask).sqrt()
    return (advantages - mean) / (std + 1e-8)


def minibatches(count: int, num_minibatches: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index tensors splitting ``range(count)`` into ``num_minibatches`` shuffled parts."""
    order = torch.randperm(count, generator=generator)
    yield from torch.tensor_split(order, min(num_minibatches, count))


def ppo_update(
    loss_fn: Callable[[Tensor], dict[str, Tensor]],
    count: int,
    optimiser: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    epochs: int,
    num_minibatches: int,
    max_grad_norm: float,
    generator: torch.Generator,
    target_kl: float | None = None,
) -> dict[str, float]:
    """Epochs × minibatches of gradient steps on ``loss_fn(indices)``.

    With ``target_kl``, the remaining epochs are skipped once an epoch's mean ``approx_kl`` exceeds it
    (early stopping as in OpenAI Spinning Up and cleanrl's ``target_kl``).

    Returns:
        The mean of every term over the last epoch run, its ``grad_norm`` and ``epochs`` run.
    """
    logs: dict[str, list[float]] = {}
    epochs_run = 0
    for _ in range(epochs):
        logs = {}
        for index in minibatches(count, num_minibatches, generator):
            terms = loss_fn(index)
            loss = sum(v for k, v in terms.items() if k.startswith("loss_"))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
            optimiser.step()
            for key, value in terms.items():
                logs.setdefault(key, []).append(float(value.detach()))
            logs.setdefault("grad_norm", []).append(float(grad_norm))
        epochs_run += 1
        if target_kl is not None and "approx_kl" in logs and np.mean(logs["approx_kl"]) > target_kl:
            break
    return {**{key: float(np.mean(values)) for key, values in logs.items()}, "epochs": float(epochs_run)}
