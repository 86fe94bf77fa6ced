"""MAML's policy as a function of explicit parameter dicts (garage issue #1269: adaptation never writes
into the module), and the policy object that acts with them.

``PolicyNet`` holds the architecture and the meta-parameters θ. Everything else takes the parameters
as an argument: the meta-parameters, or per-task adapted ones stacked ``[N, ...]`` per tensor and run on
every task at once through ``torch.func.vmap`` over ``torch.func.functional_call`` (``policy_outputs``),
or by hand where that is faster or a derivative is needed (``forward_stacked``, ``outputs_and_tangents``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from algorithms.action_maps import ActionNormalization, KeptSamples
from algorithms.base import TrialBatch
from algorithms.common import action_size, mlp
from algorithms.heads import sample_action

Params = dict[str, Tensor]


class PolicyNet(nn.Module):
    """MLP (tanh hidden layers) to a Gaussian mean with a state-independent learned log-std (``Box``), or
    to categorical logits (``Discrete``)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_sizes: Sequence[int], init_std: float) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Box | gym.spaces.Discrete):
            raise TypeError(f"MAML supports Box and Discrete action spaces, not {action_space}")
        self.discrete, self.action_dim = action_size(action_space)
        self.body = mlp([obs_dim, *hidden_sizes, self.action_dim], nn.Tanh)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.action_dim,), math.log(init_std)))

    def forward(self, obs: Tensor) -> Tensor:
        """Mean or logits ``[..., action_dim]`` of observations ``[..., obs_dim]``."""
        return self.body(obs)

    def forward_with(self, params: Params, obs: Tensor) -> Tensor:
        """``forward`` with ``params`` (shaped as the module's own) in place of the module's parameters.

        The ops ``functional_call(self, params, (obs,))`` runs, without swapping tensors into the module
        (~0.2 ms a call, as much as the MLP itself on a batch of 20 observations).
        """
        x = obs
        for name, layer in self.body.named_children():
            linear = isinstance(layer, nn.Linear)
            x = F.linear(x, params[f"body.{name}.weight"], params[f"body.{name}.bias"]) if linear else torch.tanh(x)
        return x

    def forward_stacked(self, params: Params, obs: Tensor) -> Tensor:
        """One step under per-task parameters: ``obs [N, obs_dim]``, ``params`` stacked ``[N, ...]`` → ``[N, A]``.

        Equal, bit for bit, to ``policy_outputs(self, params, obs.unsqueeze(1))[0][:, 0]``: under ``vmap``
        each ``F.linear`` dispatches ``matmul(x, W.transpose(1, 2))`` plus the bias, and that is what runs
        here, without ``vmap``'s per-call overhead (~0.4 ms on a batch of 20; tests/test_maml.py checks it).
        """
        x = obs.unsqueeze(1)
        for name, layer in self.body.named_children():
            if isinstance(layer, nn.Linear):
                weight, bias = params[f"body.{name}.weight"], params[f"body.{name}.bias"]
                x = torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1)
            else:
                x = torch.tanh(x)
        return x[:, 0]


def stack(params: Params, tasks: int) -> Params:
    """One (expanded, not copied) row of ``params`` per task: ``[tasks, ...]`` per tensor."""
    return {name: value.unsqueeze(0).expand(tasks, *value.shape) for name, value in params.items()}


def policy_outputs(net: PolicyNet, params: Params, obs: Tensor) -> tuple[Tensor, Tensor | None]:
    """The action distribution's parameters under per-task parameters.

    Args:
        net: supplies the architecture; its own parameters are not used.
        params: stacked per-task parameters, ``[N, ...]`` per tensor.
        obs: ``[N, T, obs_dim]``.

    Returns:
        ``(out, log_std)``: mean or logits ``[N, T, A]``; log-std ``[N, 1, A]`` (``None`` if discrete).
    """
    out = vmap(lambda p, o: functional_call(net, p, (o,)))(params, obs)
    return out, (None if net.discrete else params["log_std"].unsqueeze(1))


def log_prob_from(out: Tensor, log_std: Tensor | None, actions: Tensor) -> Tensor:
    """Log-probabilities ``[...]`` of ``actions`` under categorical logits (``log_std is None``) or a
    diagonal Gaussian, summed over action dimensions.

    Written out rather than through ``torch.distributions``: a line-search candidate whose inner steps
    diverge must yield a non-finite loss (and be rejected), not an argument-validation error.
    """
    if log_std is None:
        return out.log_softmax(-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    z = (actions - out) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_prob_of(net: PolicyNet, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
    """``[N, T]`` log-probabilities of ``actions`` under per-task parameters (stacked)."""
    return log_prob_from(*policy_outputs(net, params, obs), actions)


def outputs_and_tangents(net: PolicyNet, params: Params, obs: Tensor) -> tuple[Tensor, Callable[[Params], Tensor]]:
    """``policy_outputs``' mean or logits ``[N, T, A]`` (differentiable in ``params``) and the map
    ``u ↦ ∂out/∂params · u`` (forward mode by hand, reusing this forward's activations: ``tanh' = 1 − y²``).

    Args:
        params: stacked per-task parameters, ``[N, ...]`` per tensor.
        obs: ``[N, T, obs_dim]``.
    """
    x, layers = obs, []  # per layer: (its input, its weight) or (None, tanh's derivative)
    for name, layer in net.body.named_children():
        if isinstance(layer, nn.Linear):
            weight, bias = params[f"body.{name}.weight"], params[f"body.{name}.bias"]
            layers.append((name, x.detach(), weight.detach()))
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.mT)
        else:
            x = torch.tanh(x)
            layers.append((None, 1.0 - x.detach().square(), None))

    def tangent(u: Params) -> Tensor:
        r: Tensor | None = None
        for name, saved, weight in layers:
            if name is None:
                r = saved * r
            else:
                direct = torch.baddbmm(u[f"body.{name}.bias"].unsqueeze(1), saved, u[f"body.{name}.weight"].mT)
                r = direct if r is None else torch.baddbmm(direct, r, weight.mT)
        assert r is not None
        return r

    return x, tangent


class MAMLPolicy:
    """Acts with the meta-parameters θ on every environment, or with one adapted θ'_i per environment
    (``stacked``: row ``i`` of the batch of environments is task ``i`` of the adaptation).

    An exploring policy (``explores``) samples even when asked for deterministic actions: the inner
    policy gradient needs the exploration noise (with ``a = μ(s)`` it vanishes). Every draw comes from
    ``generator``.

    With an ``action_map`` the policy returns env-unit actions (rescaled and clipped) and keeps its own
    pre-clip samples of the current trial, one ``[N, A]`` array per ``act`` call since the last
    ``reset``: the sampler calls ``act`` once per step of a trial for every environment
    (``harness.run.rollout``), and ``in_policy_units`` checks that the samples it hands out map onto the
    batch's actions.
    """

    def __init__(self, net: PolicyNet, params: Params, stacked: bool, generator: torch.Generator,
                 explores: bool = False, action_map: ActionNormalization | None = None) -> None:
        self.net, self.params, self.stacked, self.generator = net, params, stacked, generator
        self.device = next(iter(params.values())).device  # where it acts: its parameters' device
        self.explores = explores
        self.noise = torch.empty(0)  # reused for the Gaussian noise of every step
        self.kept = None if action_map is None else KeptSamples(action_map)  # pre-clip samples of the trial

    def reset(self, new_trial: np.ndarray) -> None:
        # Memoryless: adaptation lives in the parameters; only the kept samples restart.
        if self.kept is not None:
            self.kept.restart(new_trial)

    @torch.inference_mode()
    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        x = torch.from_numpy(obs).to(self.device)
        if self.stacked:
            tasks = next(iter(self.params.values())).shape[0]
            if len(x) != tasks:
                raise ValueError(f"this policy was adapted to {tasks} tasks; got {len(x)} environments")
            out = self.net.forward_stacked(self.params, x)
        else:
            out = self.net.forward_with(self.params, x)
        out = out.cpu()
        if self.noise.shape != out.shape:
            self.noise = torch.empty(out.shape)
        log_std = None if self.net.discrete else self.params["log_std"].cpu()
        deterministic = deterministic and not self.explores
        actions = sample_action(out, log_std, self.net.discrete, deterministic, self.generator,  # type: ignore[arg-type]
                                self.noise).numpy()  # a fresh tensor every call: safe to keep
        return actions if self.kept is None else self.kept.keep(actions)

    def in_policy_units(self, batch: TrialBatch) -> TrialBatch:
        """``batch`` (this policy's last trial) with its actions replaced by the policy's pre-clip samples,
        zero on padding: what the log-probabilities are of. Without an action map, ``batch`` itself.

        Raises:
            ValueError: the batch is not the trial this policy last ran.
        """
        return batch if self.kept is None else self.kept.in_policy_units(batch)
