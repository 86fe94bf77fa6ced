"""PPO pieces shared by the on-policy learners: trial-aware GAE, rllab's linear feature baseline, the
loss's terms, and the update (with gradient clipping that can keep the value's gradient off the policy's).

Losses are pure functions returning named terms (torchrl style): the update sums the ``loss_*``
terms and logs the rest.
"""

from __future__ import annotations

import math
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


def episode_cuts(valid: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
    """``[N, T]`` bool cuts for episode-level GAE: every episode end and all padding (ProMP's RL² and MAML)."""
    return episode_end | ~valid


def steps_since_start(start: np.ndarray) -> np.ndarray:
    """``[N, T]`` int64: each step's index since the last True of ``start`` (``[N, T]`` bool) in its row."""
    index = np.arange(start.shape[1])
    last_start = np.maximum.accumulate(np.where(start, index, 0), axis=1)
    return index - last_start


def fit_linear_baseline(features: Tensor, targets: Tensor, mask: Tensor, reg: float) -> Tensor:
    """Ridge least squares per row: ``w_i = (X_iᵀX_i + reg·I)⁻¹ X_iᵀ y_i`` over the valid steps, in float64.

    As rllab/garage, the ridge grows tenfold (up to 5 times) while the solution is not finite.

    Args:
        features: ``[N, T, F]``.
        targets: ``[N, T]`` (discounted returns).
        mask: ``[N, T]``, 1 on valid steps.
        reg: ridge coefficient.

    Returns:
        ``[N, F]`` coefficients, in ``features``' dtype.
    """
    x = features.double() * mask.double().unsqueeze(-1)
    gram = x.transpose(1, 2) @ x
    rhs = (x.transpose(1, 2) @ targets.double().unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=torch.float64, device=gram.device)
    for _ in range(5):
        coefficients, info = torch.linalg.solve_ex(gram + reg * eye, rhs)
        if not info.any() and torch.isfinite(coefficients).all():
            break
        reg = max(reg * 10.0, 1e-8)
    return coefficients.to(features.dtype)


def linear_feature_values(inputs: Tensor, step: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """rllab's ``LinearFeatureBaseline`` fitted to each row (task) on its own and evaluated on it: ``[N, T]``.

    Features ``[x, x², t, t², t³, 1]`` with ``x`` clipped to ±10 and ``t = step / 100``; ridge least
    squares ``(XᵀX + reg·I) w = Xᵀy`` over the row's valid steps in float64, the ridge growing tenfold (up
    to 5 times) while the solution is not finite (ProMP ``maml_zoo/baselines/linear_baseline.py``).

    Args:
        inputs: ``[N, T, F]`` what the baseline sees (ProMP's RL²: the augmented observation).
        step: ``[N, T]`` time index (within the episode, or the trial).
        returns: ``[N, T]`` targets (discounted returns).
        mask: ``[N, T]``, 1 on valid steps; padding gets 0.
    """
    x = inputs.double().clamp(-10.0, 10.0)
    t = (step.double() / 100.0).unsqueeze(-1)
    features = torch.cat([x, x**2, t, t**2, t**3, torch.ones_like(t)], dim=-1) * mask.double().unsqueeze(-1)
    weights = fit_linear_baseline(features, returns, mask, reg)
    return (features @ weights.unsqueeze(-1)).squeeze(-1).to(returns.dtype)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def clipped_surrogate(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor,
                      clip: float) -> dict[str, Tensor]:
    """PPO's clipped surrogate objective (Schulman et al. 2017) as named terms; all inputs share a shape.

    Returns:
        ``loss_policy`` and the detached diagnostics ``approx_kl`` (http://joschu.net/blog/kl-approx.html)
        and ``clip_fraction``.
    """
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip).float(), mask)
    return {"loss_policy": -masked_mean(surrogate, mask), "approx_kl": approx_kl, "clip_fraction": clip_fraction}


def value_loss(values: Tensor, returns: Tensor, mask: Tensor, coef: float) -> dict[str, Tensor]:
    """``loss_value``: ``coef`` times half the mean squared error of ``values`` against ``returns``."""
    return {"loss_value": coef * 0.5 * masked_mean((values - returns) ** 2, mask)}


def entropy_bonus(entropy: Tensor, mask: Tensor, coef: float) -> dict[str, Tensor]:
    """``loss_entropy``: minus ``coef`` times the mean entropy (a loss that rewards exploring)."""
    return {"loss_entropy": -coef * masked_mean(entropy, mask)}


def combine_terms(*parts: dict[str, Tensor]) -> dict[str, Tensor]:
    """The named terms of ``parts`` in one dict: the ``loss_*`` terms first, in the order given (the order
    ``ppo_update`` sums and logs them), then the diagnostics."""
    merged = {key: value for part in parts for key, value in part.items()}
    losses = {key: value for key, value in merged.items() if key.startswith("loss_")}
    return {**losses, **{key: value for key, value in merged.items() if key not in losses}}


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
    """The whole PPO objective: the clipped surrogate, the value loss and the entropy bonus; all inputs share
    a shape. A learner without a learned value, or with a value loss of its own, combines the terms it needs.

    Returns:
        ``loss_policy``, ``loss_value``, ``loss_entropy`` (to be summed), then ``approx_kl`` and
        ``clip_fraction`` (``clipped_surrogate``).
    """
    return combine_terms(clipped_surrogate(log_prob, old_log_prob, advantages, mask, clip),
                         value_loss(values, returns, mask, value_coef), entropy_bonus(entropy, mask, entropy_coef))


def normalise_advantages(advantages: Tensor, mask: Tensor, per_row: bool = False) -> Tensor:
    """Zero mean and unit (population) std over the valid entries: of the whole tensor, or of each row
    ``[N, T]`` on its own (``per_row``: one task's trial, as ProMP's sample processors)."""
    if not per_row:
        mean = masked_mean(advantages, mask)
        std = masked_mean((advantages - mean) ** 2, mask).sqrt()
        return (advantages - mean) / (std + 1e-8)
    count = mask.sum(1, keepdim=True).clamp_min(1.0)
    mean = (advantages * mask).sum(1, keepdim=True) / count
    std = (((advantages - mean) ** 2 * mask).sum(1, keepdim=True) / count).sqrt()
    return (advantages - mean) / (std + 1e-8)


def minibatches(count: int, num_minibatches: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index tensors splitting ``range(count)`` into ``num_minibatches`` shuffled parts."""
    order = torch.randperm(count, generator=generator)
    yield from torch.tensor_split(order, min(num_minibatches, count))


def clip_gradients_(grads: list[Tensor], max_norm: float | None) -> Tensor:
    """Scale ``grads`` in place to a global norm of at most ``max_norm`` (``None``: leave them); returns the
    norm before scaling. The same factor as ``torch.nn.utils.clip_grad_norm_``: ``max_norm / (norm + 1e-6)``."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads \
        else torch.tensor(0.0)
    if max_norm is not None and not math.isinf(max_norm):
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale)
    return norm


def _gradients(loss: Tensor, parameters: list[torch.nn.Parameter], retain_graph: bool) -> list[Tensor]:
    """``∂loss/∂p`` for every parameter, zeros where ``loss`` does not reach it."""
    found = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, parameters, strict=True)]


def ppo_update(
    loss_fn: Callable[[Tensor], dict[str, Tensor]],
    count: int,
    optimiser: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    epochs: int,
    num_minibatches: int,
    max_grad_norm: float | None,
    generator: torch.Generator,
    target_kl: float | None = None,
    clip_value_separately: bool = False,
) -> dict[str, float]:
    """Epochs × minibatches of gradient steps on ``loss_fn(indices)``.

    Gradients are clipped to a global norm of ``max_grad_norm`` (``None``: not clipped, as garage's and
    ProMP's RL²). With ``clip_value_separately``, the gradient of ``loss_value`` and that of the other
    ``loss_*`` terms are clipped each on its own and then summed, so a large value gradient (returns of
    hundreds) cannot shrink the policy's step: one clip over both would scale the policy gradient by
    ``max_grad_norm / ‖g_policy + g_value‖`` (issue 14, item 7). Where the value function has parameters of
    its own, that is clipping the policy's and the value's parameters separately.

    With ``target_kl``, the remaining epochs are skipped once an epoch's mean ``approx_kl`` exceeds it
    (early stopping as in OpenAI Spinning Up and cleanrl's ``target_kl``).

    Returns:
        The mean of every term over the last epoch run, ``grad_norm`` (before clipping; with
        ``clip_value_separately`` also ``grad_norm_policy`` and ``grad_norm_value``) and ``epochs`` run.
    """
    logs: dict[str, list[float]] = {}
    epochs_run = 0
    for _ in range(epochs):
        logs = {}
        for index in minibatches(count, num_minibatches, generator):
            terms = loss_fn(index)
            optimiser.zero_grad(set_to_none=True)
            if clip_value_separately and "loss_value" in terms:
                policy_loss = sum(v for k, v in terms.items() if k.startswith("loss_") and k != "loss_value")
                policy_grads = _gradients(policy_loss, parameters, retain_graph=True)  # type: ignore[arg-type]
                value_grads = _gradients(terms["loss_value"], parameters, retain_graph=False)
                with torch.no_grad():
                    grad_norm = clip_gradients_([p + v for p, v in zip(policy_grads, value_grads, strict=True)],
                                                None)
                    logs.setdefault("grad_norm_policy", []).append(float(clip_gradients_(policy_grads, max_grad_norm)))
                    logs.setdefault("grad_norm_value", []).append(float(clip_gradients_(value_grads, max_grad_norm)))
                for p, g_policy, g_value in zip(parameters, policy_grads, value_grads, strict=True):
                    p.grad = g_policy + g_value
            else:
                loss = sum(v for k, v in terms.items() if k.startswith("loss_"))
                loss.backward()  # type: ignore[union-attr]
                grads = [p.grad for p in parameters if p.grad is not None]
                with torch.no_grad():
                    grad_norm = clip_gradients_(grads, max_grad_norm)
            optimiser.step()
            for key, value in terms.items():
                logs.setdefault(key, []).append(float(value.detach()))
            logs.setdefault("grad_norm", []).append(float(grad_norm))
        epochs_run += 1
        if target_kl is not None and "approx_kl" in logs and np.mean(logs["approx_kl"]) > target_kl:
            break
    return {**{key: float(np.mean(values)) for key, values in logs.items()}, "epochs": float(epochs_run)}
