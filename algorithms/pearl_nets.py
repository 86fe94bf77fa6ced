"""PEARL's networks: the context encoder, the actor, the twin Qs and V, and the batched form in which the
gradient step runs them (``algorithms.pearl`` holds the losses and the learner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms.common import mlp

if TYPE_CHECKING:
    from algorithms.pearl import Config

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit's TanhGaussianPolicy bounds


# --- networks ------------------------------------------------------------------------------------


def relu_mlp(in_dim: int, out_dim: int, hidden_size: int, hidden_layers: int) -> nn.Sequential:
    """ReLU MLP; the output layer starts near zero (rlkit: uniform ±3e-3, drawn once every layer is built)."""
    net = mlp([in_dim, *[hidden_size] * hidden_layers, out_dim], nn.ReLU)
    nn.init.uniform_(net[-1].weight, -3e-3, 3e-3)
    nn.init.uniform_(net[-1].bias, -3e-3, 3e-3)
    return net


class ContextEncoder(nn.Module):
    """Per-transition Gaussian factors: ``[..., context_dim]`` → means and variances ``[..., latent]``."""

    def __init__(self, context_dim: int, latent_size: int, hidden_size: int, hidden_layers: int) -> None:
        super().__init__()
        self.net = relu_mlp(context_dim, 2 * latent_size, hidden_size, hidden_layers)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.factors(self.net(context))

    @staticmethod
    def factors(out: Tensor) -> tuple[Tensor, Tensor]:
        """The network's output ``[..., 2 latent]`` as factor means and variances (softplus)."""
        mean, raw = out.chunk(2, dim=-1)
        return mean, F.softplus(raw)


class TanhGaussianActor(nn.Module):
    """``π(a | s, z)``: a Gaussian over pre-tanh actions, ``[..., obs + latent]`` → mean, log-std ``[..., act]``."""

    def __init__(self, in_dim: int, action_dim: int, hidden_size: int, hidden_layers: int) -> None:
        super().__init__()
        self.net = relu_mlp(in_dim, 2 * action_dim, hidden_size, hidden_layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.gaussian(self.net(x))

    @staticmethod
    def gaussian(out: Tensor) -> tuple[Tensor, Tensor]:
        """The network's output ``[..., 2 act]`` as mean and clamped log-std."""
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class PEARLNets(nn.Module):
    """Encoder, actor, twin Q ``(s, a, z)``, V ``(s, z)`` and its target (never trained by gradient)."""

    def __init__(self, obs_dim: int, action_dim: int, context_dim: int, config: Config) -> None:
        super().__init__()
        latent, hidden, layers = config.latent_size, config.hidden_size, config.hidden_layers
        self.encoder = ContextEncoder(context_dim, latent, config.encoder_hidden_size, config.encoder_hidden_layers)
        self.actor = TanhGaussianActor(obs_dim + latent, action_dim, hidden, layers)
        self.q1 = relu_mlp(obs_dim + action_dim + latent, 1, hidden, layers)
        self.q2 = relu_mlp(obs_dim + action_dim + latent, 1, hidden, layers)
        self.v = relu_mlp(obs_dim + latent, 1, hidden, layers)
        self.target_v = relu_mlp(obs_dim + latent, 1, hidden, layers)
        self.target_v.load_state_dict(self.v.state_dict())
        self.target_v.requires_grad_(False)

    def encode(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's factors ``(mean, variance)`` of CPU ``context``, as CPU tensors, wherever the nets are."""
        device = next(self.encoder.parameters()).device
        mean, variance = self.encoder(context.to(device))
        return mean.cpu(), variance.cpu()


# --- the batched networks of the gradient step ----------------------------------------------------
#
# A gradient step at the locomotion presets is ~85% matrix products of [4096, 300] activations (meta-batch
# 16 × 256 transitions) with 300 × 300 weights (issue 19), ~32 of them after the changes below, which
# leave the function as it was: hidden widths are computed zero-padded to a multiple of ALIGN (on one core
# MKL runs the forward and input-gradient products of [4096, 300] × [300, 300] at ~60 GFLOP/s, of
# [4096, 304] × [304, 304] at ~90), the twin Qs run as one batched network (``torch.baddbmm`` over stacked
# weights), and the actor's gradient goes through the smaller frozen Q of each row only. The modules keep
# their own parameters, so the optimiser and the state dict are those of the plain networks.

ALIGN = 16
Layers = list[tuple[Tensor, Tensor]]


def stacked_layers(mlps: Sequence[nn.Sequential], detach: bool = False) -> Layers:
    """The linear layers of ``mlps`` (one architecture) for ``batched_mlp``: per layer a weight
    ``[k, in, out]`` (transposed) and a bias ``[k, 1, out]``, differentiable copies of the parameters.

    Hidden widths are zero-padded to a multiple of ``ALIGN``: a padded unit has zero weights in and out
    and a zero bias, so it outputs ``relu(0) = 0``, adds exactly nothing downstream and gets no gradient;
    only the products' summation order changes. Copying costs ~0.2% of a step. ``detach``: constants.
    """
    linears = [[layer for layer in mlp_ if isinstance(layer, nn.Linear)] for mlp_ in mlps]
    layers: Layers = []
    for depth, group in enumerate(zip(*linears, strict=True)):
        pad_in = 0 if depth == 0 else -group[0].in_features % ALIGN
        pad_out = 0 if depth == len(linears[0]) - 1 else -group[0].out_features % ALIGN
        weight = torch.stack([F.pad(linear.weight.t(), (0, pad_out, 0, pad_in)) for linear in group])
        bias = torch.stack([F.pad(linear.bias, (0, pad_out)) for linear in group]).unsqueeze(1)
        layers.append((weight.detach(), bias.detach()) if detach else (weight, bias))
    return layers


def batched_mlp(layers: Layers, x: Tensor) -> Tensor:
    """The ReLU MLPs of ``stacked_layers`` on ``x`` ``[M, in]`` (the same rows for each) → ``[k, M, out]``."""
    x = x.expand(layers[0][0].shape[0], *x.shape)
    for i, (weight, bias) in enumerate(layers):
        x = torch.baddbmm(bias, x, weight)
        if i < len(layers) - 1:
            x = x.relu_()  # in place: baddbmm's backward does not need its output
    return x


def gathers_rows(device: torch.device) -> bool:
    """Whether ``_MinOfFrozenTwins``' backward takes only the rows where each Q is the minimum (the CPU) or
    all rows, masked (an accelerator, where counting the rows would be a host sync inside the step)."""
    return device.type == "cpu"


class _MinOfFrozenTwins(torch.autograd.Function):
    """``min(Q1(x), Q2(x))`` ``[M]`` of twin networks taken as constants (``stacked_layers(..., detach=True)``),
    differentiable in ``x`` ``[M, in]``. The backward runs through the smaller Q of each row only (half
    through each on a tie, as ``torch.minimum``): half the products of running through both."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, *flat: Tensor) -> Tensor:
        layers = list(zip(flat[::2], flat[1::2], strict=True))
        h, hidden = x.expand(2, *x.shape), []
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight)
            if i < len(layers) - 1:
                h = h.relu_()
                hidden.append(h)
        q = h.squeeze(-1)  # [2, M]
        ctx.save_for_backward(q, *flat[::2], *hidden)
        return torch.minimum(q[0], q[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, *saved = ctx.saved_tensors
        weights, hidden = saved[: (len(saved) + 1) // 2], saved[(len(saved) + 1) // 2:]
        grad_x = grad.new_zeros(grad.shape[0], weights[0].shape[1])
        share = torch.where(q[0] == q[1], 0.5 * grad, grad)
        every_row = torch.arange(len(grad), device=grad.device)
        for k in (0, 1):
            chosen = q[k] <= q[1 - k]
            rows = chosen.nonzero().squeeze(1) if gathers_rows(grad.device) else every_row
            d = torch.where(chosen, share, 0.0)[rows].unsqueeze(1) * weights[-1][k, :, 0]  # [rows, hidden]
            for h, weight in zip(reversed(hidden), reversed(weights[:-1]), strict=True):
                d = (d * (h[k, rows] > 0)) @ weight[k].t()
            grad_x.index_add_(0, rows, d)
        return grad_x, *([None] * (2 * len(weights)))


def min_of_frozen_twins(layers: Layers, x: Tensor) -> Tensor:
    """``min(Q1(x), Q2(x))`` ``[M]``; gradients reach ``x`` only (``_MinOfFrozenTwins``)."""
    return _MinOfFrozenTwins.apply(x, *(t for layer in layers for t in layer))
