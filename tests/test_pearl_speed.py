"""PEARL's faster gradient step (issue 19) computes what the plain one did.

``pearl_loss`` runs the networks through ``batched_mlp`` (hidden widths zero-padded to a multiple of
``ALIGN``, the twin Qs as one batched network) and backpropagates the actor's loss through the smaller of
the frozen twin Qs only. ``plain_pearl_loss`` below is the loss as it was written before: each network
a module call, the frozen Qs through ``torch.minimum``. On the same parameters, inputs and noise, every
term and every gradient must agree: to rounding in float64 (odd widths, so that padding happens), to
float32 tolerance at the locomotion preset's sizes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import algorithms.pearl_nets as pearl_nets
from algorithms.pearl import (
    PRESETS,
    Config,
    kl_to_unit_gaussian,
    pearl_loss,
    product_of_gaussians,
    tanh_gaussian_sample,
)
from algorithms.pearl_nets import ALIGN, PEARLNets, batched_mlp, min_of_frozen_twins, stacked_layers


def _frozen(mlp_: nn.Sequential, *inputs: Tensor) -> Tensor:
    x = torch.cat(inputs, dim=-1)
    for layer in mlp_:
        x = F.linear(x, layer.weight.detach(), layer.bias.detach()) if isinstance(layer, nn.Linear) else layer(x)
    return x


def plain_pearl_loss(nets: PEARLNets, context: Tensor, obs: Tensor, actions: Tensor, rewards: Tensor,
                     next_obs: Tensor, terminals: Tensor, config: Config, log_alpha: Tensor, target_entropy: float,
                     generator: torch.Generator) -> dict[str, Tensor]:
    """``pearl_loss`` before issue 19, verbatim: the reference."""
    mean, variance = product_of_gaussians(*nets.encoder(context))
    z = mean + variance.sqrt() * torch.randn(mean.shape, generator=generator).to(mean.device)
    z = z.unsqueeze(1).expand(*obs.shape[:2], z.shape[-1])
    kl = kl_to_unit_gaussian(mean, variance)
    q1, q2 = (q(torch.cat([obs, actions, z], -1)).squeeze(-1) for q in (nets.q1, nets.q2))
    with torch.no_grad():
        next_v = nets.target_v(torch.cat([next_obs, z], -1)).squeeze(-1)
        q_target = config.reward_scale * rewards + (1.0 - terminals) * config.discount * next_v
    loss_q = F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)
    z_detached = z.detach()
    policy_mean, log_std = nets.actor(torch.cat([obs, z_detached], -1))
    noise = torch.randn(policy_mean.shape, generator=generator).to(policy_mean.device)
    new_actions, log_pi = tanh_gaussian_sample(policy_mean, log_std, noise)
    min_q_new = torch.minimum(_frozen(nets.q1, obs, new_actions, z_detached),
                              _frozen(nets.q2, obs, new_actions, z_detached)).squeeze(-1)
    alpha = log_alpha.detach().exp()
    v_pred = nets.v(torch.cat([obs, z_detached], -1)).squeeze(-1)
    loss_v = F.mse_loss(v_pred, (min_q_new - alpha * log_pi).detach())
    loss_policy = (alpha * log_pi - min_q_new).mean()
    loss_policy = loss_policy + config.policy_mean_reg * policy_mean.square().mean()
    loss_policy = loss_policy + config.policy_std_reg * log_std.square().mean()
    out = {"loss_q": loss_q, "loss_v": loss_v, "loss_policy": loss_policy, "loss_kl": config.kl_lambda * kl.sum(),
           "kl": kl.detach(), "z_std": variance.detach().sqrt().mean(), "alpha": alpha,
           "log_pi": log_pi.detach().mean(), "q": q1.detach().mean()}
    if config.auto_entropy:
        out["loss_alpha"] = -(log_alpha * (log_pi.detach() + target_entropy)).mean()
    return out


def _setting(config: Config, tasks: int, dtype: torch.dtype, seed: int = 0) -> tuple[PEARLNets, tuple[Tensor, ...],
                                                                                     Tensor]:
    """Networks moved away from their near-zero output layers (so every term is far from zero) and a
    random meta-batch with some terminal transitions."""
    obs_dim, act_dim = 17, 6
    torch.manual_seed(seed)
    nets = PEARLNets(obs_dim, act_dim, obs_dim + act_dim + 1, config).to(dtype)
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(seed + 1)
    batch, context = config.batch_transitions, config.context_transitions

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    inputs = (randn(tasks, context, obs_dim + act_dim + 1), randn(tasks, batch, obs_dim),
              torch.rand(tasks, batch, act_dim, generator=g, dtype=dtype) * 2 - 1, randn(tasks, batch),
              randn(tasks, batch, obs_dim), (torch.rand(tasks, batch, generator=g) < 0.1).to(dtype))
    return nets, inputs, torch.nn.Parameter(torch.tensor(0.3, dtype=dtype), requires_grad=config.auto_entropy)


def _terms_and_grads(loss_fn: Any, nets: PEARLNets, inputs: tuple[Tensor, ...], config: Config,
                     log_alpha: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
    losses = loss_fn(nets, *inputs, config, log_alpha, -6.0, torch.Generator().manual_seed(7))
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    params = [p for p in [*nets.parameters(), log_alpha] if p.requires_grad]
    return losses, list(torch.autograd.grad(total, params))


@pytest.mark.parametrize("auto_entropy", [False, True])
def test_every_term_and_gradient_equals_the_plain_loss_in_float64_with_padded_widths(auto_entropy: bool) -> None:
    # 37 and 21 units: padded to 48 and 32 inside the step.
    config = Config(latent_size=3, hidden_size=37, hidden_layers=3, encoder_hidden_size=21, encoder_hidden_layers=2,
                    batch_transitions=24, context_transitions=9, auto_entropy=auto_entropy)
    nets, inputs, log_alpha = _setting(config, tasks=5, dtype=torch.float64)
    plain, plain_grads = _terms_and_grads(plain_pearl_loss, nets, inputs, config, log_alpha)
    fast, fast_grads = _terms_and_grads(pearl_loss, nets, inputs, config, log_alpha)
    assert fast.keys() == plain.keys() and ("loss_alpha" in fast) == auto_entropy
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-12, atol=1e-12, msg=key)
    assert len(fast_grads) == len(plain_grads)
    for fast_grad, plain_grad in zip(fast_grads, plain_grads, strict=True):
        assert plain_grad.abs().max() > 0
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-10, atol=1e-12)


def test_every_term_and_gradient_equals_the_plain_loss_at_the_locomotion_preset() -> None:
    """The preset's sizes (300 units, meta-batch 16 × 256, context 100), float32: float32 tolerance."""
    config = Config(**{**PRESETS["halfcheetah_vel"], "auto_entropy": True})
    nets, inputs, log_alpha = _setting(config, tasks=config.meta_batch_tasks, dtype=torch.float32)
    plain, plain_grads = _terms_and_grads(plain_pearl_loss, nets, inputs, config, log_alpha)
    fast, fast_grads = _terms_and_grads(pearl_loss, nets, inputs, config, log_alpha)
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-5, atol=1e-6, msg=key)
    for fast_grad, plain_grad in zip(fast_grads, plain_grads, strict=True):
        scale = plain_grad.abs().max()
        torch.testing.assert_close(fast_grad / scale, plain_grad / scale, rtol=0, atol=1e-4)


def test_stacked_layers_pad_hidden_units_with_zeros_and_keep_the_function() -> None:
    torch.manual_seed(0)
    config = Config(hidden_size=37, hidden_layers=2)
    nets = PEARLNets(4, 2, 7, config)  # Q input: 4 + 2 + latent 5
    layers = stacked_layers([nets.q1, nets.q2])
    assert [tuple(w.shape) for w, _ in layers] == [(2, 11, 48), (2, 48, 48), (2, 48, 1)]
    assert all(w.shape[2] % ALIGN == 0 for w, _ in layers[:-1])
    for k, q in enumerate((nets.q1, nets.q2)):
        assert torch.equal(layers[0][0][k, :, :37], q[0].weight.t()) and not layers[0][0][k, :, 37:].any()
        assert not layers[1][0][k, 37:].any() and not layers[1][1][k, :, 37:].any()
    x = torch.randn(10, 11)
    out = batched_mlp(layers, x)
    torch.testing.assert_close(out[0], nets.q1(x))
    torch.testing.assert_close(out[1], nets.q2(x))
    assert all(not w.requires_grad for w, _ in stacked_layers([nets.v], detach=True))


@pytest.mark.parametrize("gathers", [True, False], ids=["cpu_rows", "accelerator_masked"])
def test_min_of_frozen_twins_backpropagates_as_torch_minimum_ties_included(gathers: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pearl_nets, "gathers_rows", lambda device: gathers)
    torch.manual_seed(0)
    config = Config(hidden_size=20, hidden_layers=3)
    nets = PEARLNets(3, 2, 6, config).double()  # Q input: 3 + 2 + latent 5
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(12, 10, dtype=torch.float64, requires_grad=True)

    def reference(x: Tensor) -> Tensor:
        return torch.minimum(_frozen(nets.q1, x), _frozen(nets.q2, x)).squeeze(-1)

    q = batched_mlp(stacked_layers([nets.q1, nets.q2]), x).squeeze(-1)
    assert (q[0] < q[1]).any() and (q[1] < q[0]).any()  # both branches carry gradient
    weights = torch.randn(12, dtype=torch.float64)
    fast = min_of_frozen_twins(stacked_layers([nets.q1, nets.q2], detach=True), x)
    torch.testing.assert_close(fast, reference(x), rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(fast @ weights, x)
    (expected,) = torch.autograd.grad(reference(x) @ weights, x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # Identical twins: every row ties, and torch.minimum sends half the gradient through each.
    nets.q2.load_state_dict(nets.q1.state_dict())
    (grad,) = torch.autograd.grad(min_of_frozen_twins(stacked_layers([nets.q1, nets.q2], detach=True), x) @ weights, x)
    (expected,) = torch.autograd.grad(reference(x) @ weights, x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # Frozen: no gradient reaches the networks.
    assert all(p.grad is None for p in [*nets.q1.parameters(), *nets.q2.parameters()])
