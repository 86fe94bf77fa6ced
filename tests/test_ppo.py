"""PPO pieces against hand-computed answers: trial-aware GAE, cuts, the clipped loss and its named terms,
gradient isolation, the update's gradient clipping, and the linear feature baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from algorithms.ppo import (
    clipped_surrogate,
    entropy_bonus,
    episode_cuts,
    gae,
    linear_feature_values,
    normalise_advantages,
    ppo_loss,
    ppo_update,
    steps_since_start,
    trial_cuts,
    value_loss,
)

GAMMA, LAM = 0.9, 0.8  # γλ = 0.72


def _t(values: list[list[float]] | list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_gae_by_hand_with_a_cut_and_padding() -> None:
    # Row 0: four valid steps, nothing bootstrapped after step 1 (a cut) or after step 3 (trial end).
    # Row 1: two valid steps then padding with junk rewards/values; cuts at its last valid step and on padding.
    rewards = _t([[1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 50.0, 50.0]])
    values = _t([[0.5, 1.0, 1.5, 2.0], [0.2, 0.4, -30.0, -30.0]])
    cut = torch.tensor([[False, True, False, True], [False, True, True, True]])
    advantages, returns = gae(rewards, values, cut, GAMMA, LAM)

    # Row 0, backwards (δ_t = r_t + γ V_{t+1} (1 − cut_t) − V_t;  A_t = δ_t + γλ (1 − cut_t) A_{t+1}):
    #   t=3 cut: δ = 4 − 2.0 = 2.0                     A3 = 2.0
    #   t=2:     δ = 3 + 0.9·2.0 − 1.5 = 3.3           A2 = 3.3 + 0.72·2.0 = 4.74
    #   t=1 cut: δ = 2 − 1.0 = 1.0                     A1 = 1.0
    #   t=0:     δ = 1 + 0.9·1.0 − 0.5 = 1.4           A0 = 1.4 + 0.72·1.0 = 2.12
    # Row 1 (the padding at t=2, 3 must not leak in):
    #   t=1 cut: δ = −1 − 0.4 = −1.4                   A1 = −1.4
    #   t=0:     δ = 1 + 0.9·0.4 − 0.2 = 1.16          A0 = 1.16 + 0.72·(−1.4) = 0.152
    torch.testing.assert_close(advantages[0], _t([2.12, 1.0, 4.74, 2.0]))
    torch.testing.assert_close(advantages[1, :2], _t([0.152, -1.4]))
    torch.testing.assert_close(returns[0], _t([2.62, 2.0, 6.24, 4.0]))  # A + V
    torch.testing.assert_close(returns[1, :2], _t([0.352, -1.0]))


def test_gae_without_the_cut_bootstraps_across_it() -> None:
    # Row 0 above with the cut at step 1 removed (an episode end inside an RL² trial is not a cut):
    #   A3 = 2.0, A2 = 4.74 as before
    #   t=1: δ = 2 + 0.9·1.5 − 1.0 = 2.35              A1 = 2.35 + 0.72·4.74 = 5.7628
    #   t=0: δ = 1 + 0.9·1.0 − 0.5 = 1.4               A0 = 1.4 + 0.72·5.7628 = 5.549216
    advantages, _ = gae(_t([[1.0, 2.0, 3.0, 4.0]]), _t([[0.5, 1.0, 1.5, 2.0]]),
                        torch.tensor([[False, False, False, True]]), GAMMA, LAM)
    torch.testing.assert_close(advantages, _t([[5.549216, 5.7628, 4.74, 2.0]]))


def test_trial_cuts_mark_last_valid_step_and_padding() -> None:
    valid = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    expected = np.array([[False, False, False, True], [False, True, True, True], [True, True, True, True]])
    before = valid.copy()
    np.testing.assert_array_equal(trial_cuts(valid), expected)
    np.testing.assert_array_equal(valid, before)  # the input is not modified


# --- the clipped loss -----------------------------------------------------------------------------------

CLIP, VALUE_COEF, ENTROPY_COEF = 0.2, 0.5, 0.01
RATIOS = [1.5, 0.5, 1.5, 0.5, 1.1]
ADVANTAGES = [1.0, 1.0, -1.0, -1.0, 2.0]
OLD_LOG_PROB = [-1.0, -0.5, -2.0, -0.3, -1.2]
VALUES = [1.0, 2.0, 0.0, -1.0, 0.5]
RETURNS = [0.0, 2.0, 1.0, 1.0, 0.5]
ENTROPY = [0.1, 0.2, 0.3, 0.4, 0.5]


def _loss_inputs(extra: int = 0) -> dict[str, Tensor]:
    """The five hand entries, then ``extra`` masked entries holding junk."""
    def junk(value: float) -> list[float]:
        return [value] * extra

    old = _t(OLD_LOG_PROB + junk(-3.0))
    return {
        "log_prob": (old + torch.log(_t(RATIOS + junk(5.0)))).requires_grad_(),
        "old_log_prob": old,
        "advantages": _t(ADVANTAGES + junk(100.0)),
        "values": _t(VALUES + junk(10.0)).requires_grad_(),
        "returns": _t(RETURNS + junk(-10.0)),
        "entropy": _t(ENTROPY + junk(7.0)),
        "mask": _t([1.0] * 5 + junk(0.0)),
    }


def _loss(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    return ppo_loss(**inputs, clip=CLIP, value_coef=VALUE_COEF, entropy_coef=ENTROPY_COEF)


def test_ppo_loss_by_hand() -> None:
    inputs = _loss_inputs()
    terms = _loss(inputs)
    # surrogate min(ρA, clip(ρ, 0.8, 1.2)A) per entry:
    #   ρ=1.5, A=+1 → 1.2 (clipped: no gradient)     ρ=0.5, A=+1 → 0.5 (unclipped, pessimistic)
    #   ρ=1.5, A=−1 → −1.5 (unclipped)               ρ=0.5, A=−1 → −0.8 (clipped: no gradient)
    #   ρ=1.1, A=+2 → 2.2 (inside the clip range)
    # loss_policy = −(1.2 + 0.5 − 1.5 − 0.8 + 2.2)/5 = −0.32
    torch.testing.assert_close(terms["loss_policy"], torch.tensor(-0.32, dtype=torch.float64))
    # loss_value = 0.5 · 0.5 · mean((V − R)²) = 0.25 · (1 + 0 + 1 + 4 + 0)/5 = 0.3
    torch.testing.assert_close(terms["loss_value"], torch.tensor(0.3, dtype=torch.float64))
    # loss_entropy = −0.01 · mean(entropy) = −0.01 · 0.3
    torch.testing.assert_close(terms["loss_entropy"], torch.tensor(-0.003, dtype=torch.float64))
    # approx_kl = mean((ρ − 1) − log ρ); clip_fraction: 4 of 5 ratios leave [0.8, 1.2]
    kl = sum((r - 1) - math.log(r) for r in RATIOS) / 5  # = 0.1160108...
    assert terms["approx_kl"].item() == pytest.approx(kl)
    assert terms["approx_kl"].item() == pytest.approx(0.1160108, abs=1e-6)
    assert terms["clip_fraction"].item() == pytest.approx(0.8)
    assert not terms["approx_kl"].requires_grad and not terms["clip_fraction"].requires_grad

    # ∂loss_policy/∂log_prob_i = −ρ_i A_i / 5 where unclipped, 0 where the clip is active
    (grad,) = torch.autograd.grad(terms["loss_policy"], inputs["log_prob"])
    torch.testing.assert_close(grad, _t([0.0, -0.1, 0.3, 0.0, -0.44]))


def test_ppo_loss_is_its_named_terms_the_losses_first_in_the_order_they_are_summed() -> None:
    """``ppo_loss`` composes ``clipped_surrogate``, ``value_loss`` and ``entropy_bonus`` (MAML's PPO outer step
    takes the surrogate alone); ``ppo_update`` sums the ``loss_*`` terms in the order they come."""
    inputs = _loss_inputs()
    terms = _loss(inputs)
    assert list(terms) == ["loss_policy", "loss_value", "loss_entropy", "approx_kl", "clip_fraction"]
    mask = inputs["mask"]
    parts = {
        **clipped_surrogate(inputs["log_prob"], inputs["old_log_prob"], inputs["advantages"], mask, CLIP),
        **value_loss(inputs["values"], inputs["returns"], mask, VALUE_COEF),
        **entropy_bonus(inputs["entropy"], mask, ENTROPY_COEF),
    }
    assert sorted(parts) == sorted(terms)
    for key, value in parts.items():
        assert torch.equal(terms[key], value), key


def test_ppo_loss_equal_log_probs() -> None:
    inputs = _loss_inputs()
    inputs["log_prob"] = inputs["old_log_prob"].clone().requires_grad_()
    terms = _loss(inputs)
    assert terms["approx_kl"].item() == 0.0
    assert terms["clip_fraction"].item() == 0.0
    torch.testing.assert_close(terms["loss_policy"], -_t(ADVANTAGES).mean())  # ρ = 1: the plain PG objective


def test_masked_entries_affect_no_term() -> None:
    plain, padded = _loss_inputs(), _loss_inputs(extra=3)
    plain_terms, padded_terms = _loss(plain), _loss(padded)
    for key in ("loss_policy", "loss_value", "loss_entropy", "approx_kl", "clip_fraction"):
        torch.testing.assert_close(padded_terms[key], plain_terms[key], msg=key)
    total = padded_terms["loss_policy"] + padded_terms["loss_value"]
    grad_log_prob, grad_values = torch.autograd.grad(total, [padded["log_prob"], padded["values"]])
    torch.testing.assert_close(grad_log_prob[5:], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(grad_values[5:], torch.zeros(3, dtype=torch.float64))


def test_gradient_isolation_between_policy_and_value_heads() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 3, generator=generator)
    policy_head = torch.nn.Parameter(torch.randn(3, 4, generator=generator))
    value_head = torch.nn.Parameter(torch.randn(3, 1, generator=generator))
    actions = torch.tensor([0, 1, 2, 3, 0, 1])

    dist = torch.distributions.Categorical(logits=features @ policy_head)
    log_prob = dist.log_prob(actions)
    terms = ppo_loss(
        log_prob=log_prob,
        old_log_prob=log_prob.detach() - 0.05,
        advantages=torch.randn(6, generator=generator),
        values=(features @ value_head).squeeze(-1),
        returns=torch.randn(6, generator=generator),
        entropy=dist.entropy(),
        mask=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]),
        clip=CLIP, value_coef=VALUE_COEF, entropy_coef=ENTROPY_COEF,
    )

    def grads(loss: Tensor) -> list[Tensor]:
        """[policy_head grad, value_head grad]; a parameter the loss does not reach gets zeros."""
        params = [policy_head, value_head]
        found = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]

    policy_grad, value_grad = grads(terms["loss_value"])
    assert torch.count_nonzero(policy_grad) == 0
    assert torch.count_nonzero(value_grad) > 0  # not vacuous: the value loss does train the value head
    for key in ("loss_policy", "loss_entropy"):
        policy_grad, value_grad = grads(terms[key])
        assert torch.count_nonzero(value_grad) == 0, key
        assert torch.count_nonzero(policy_grad) > 0, key


def test_normalise_advantages_masked_mean_zero_std_one() -> None:
    advantages = _t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, -50.0]])
    mask = _t([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    out = normalise_advantages(advantages, mask)
    valid = out[mask.bool()]
    # valid entries 1..5: mean 3, population std √2
    torch.testing.assert_close(valid, (_t([1.0, 2.0, 3.0, 4.0, 5.0]) - 3.0) / math.sqrt(2.0))
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert valid.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-7)


def test_normalise_advantages_per_row() -> None:
    advantages = _t([[1.0, 2.0, 3.0, 100.0], [10.0, 30.0, -50.0, -50.0]])
    mask = _t([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    out = normalise_advantages(advantages, mask, per_row=True)
    # row 0: mean 2, population std √(2/3); row 1: mean 20, std 10; padding ignored
    torch.testing.assert_close(out[0, :3], (_t([1.0, 2.0, 3.0]) - 2.0) / math.sqrt(2 / 3))
    torch.testing.assert_close(out[1, :2], _t([-1.0, 1.0]))


def test_episode_cuts_and_steps_since_start() -> None:
    valid = np.array([[True] * 5, [True, True, True, False, False]])
    end = np.array([[False, True, False, False, True], [False, False, True, False, False]])
    np.testing.assert_array_equal(episode_cuts(valid, end), [[0, 1, 0, 0, 1], [0, 0, 1, 1, 1]])
    start = np.array([[True, False, True, False, False], [True, False, False, False, False]])
    np.testing.assert_array_equal(steps_since_start(start), [[0, 1, 0, 1, 2], [0, 1, 2, 3, 4]])


# --- the update: gradient clipping ----------------------------------------------------------------


def _clipping_case(value_scale: float) -> tuple[list[torch.nn.Parameter], dict[str, Tensor]]:
    """A policy-only parameter ``a``, a value-only one ``b`` and a shared one ``s``:
    loss_policy = 3a + 4s (gradient (3, 4) on (a, s): norm 5); loss_value = value_scale · (12b + 5s)
    (gradient value_scale · (12, 5) on (b, s): norm 13 · value_scale)."""
    a, b, s = (torch.nn.Parameter(torch.zeros(())) for _ in range(3))
    terms = {"loss_policy": 3 * a + 4 * s, "loss_value": value_scale * (12 * b + 5 * s)}
    return [a, b, s], terms


def _one_step(value_scale: float, max_grad_norm: float | None, separately: bool) -> tuple[list[float], dict]:
    """The step that SGD with lr 1 takes on (a, b, s) from zeros, and the update's logs."""
    params, terms = _clipping_case(value_scale)
    logs = ppo_update(lambda index: terms, 1, torch.optim.SGD(params, lr=1.0), params, 1, 1, max_grad_norm,
                      torch.Generator().manual_seed(0), clip_value_separately=separately)
    return [-float(p.detach()) for p in params], logs


def test_ppo_update_without_max_grad_norm_applies_the_raw_gradient() -> None:
    step, logs = _one_step(100.0, None, separately=False)  # garage's and ProMP's RL²: no clipping
    assert step == pytest.approx([3.0, 1200.0, 504.0])
    assert logs["grad_norm"] == pytest.approx(math.hypot(3.0, 1200.0, 504.0))


def test_one_clip_over_both_losses_shrinks_the_policy_step_as_the_value_loss_grows() -> None:
    # grad (3, 12k, 4 + 5k) for a value scale k; one clip at norm 1 divides it by its norm
    for k in (1.0, 100.0):
        step, _ = _one_step(k, 1.0, separately=False)
        norm = math.hypot(3.0, 12 * k, 4 + 5 * k)
        assert step == pytest.approx([3 / norm, 12 * k / norm, (4 + 5 * k) / norm], rel=1e-5)
    # the policy-only parameter's step: 3/15.3 with the value loss ×1, 3/1301.6 with it ×100 (×0.012)
    assert _one_step(100.0, 1.0, separately=False)[0][0] < 0.02 * _one_step(1.0, 1.0, separately=False)[0][0]


def test_clipping_value_separately_keeps_the_policy_step_whatever_the_value_scale() -> None:
    for k in (1.0, 100.0):
        step, logs = _one_step(k, 1.0, separately=True)
        # policy gradient (3, 0, 4) clipped to norm 1: (0.6, 0, 0.8); value gradient k(0, 12, 5) to (0, 12/13, 5/13)
        assert step == pytest.approx([0.6, 12 / 13, 0.8 + 5 / 13], rel=1e-5)
        assert logs["grad_norm_policy"] == pytest.approx(5.0)
        assert logs["grad_norm_value"] == pytest.approx(13 * k)
        assert logs["grad_norm"] == pytest.approx(math.hypot(3.0, 12 * k, 4 + 5 * k))
    step, _ = _one_step(100.0, None, separately=True)  # without a norm to clip to, the plain sum
    assert step == pytest.approx([3.0, 1200.0, 504.0])


# --- the linear feature baseline ------------------------------------------------------------------


def test_linear_feature_baseline_is_rllab_s_ridge_fit_per_row() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 12, 3, generator=generator, dtype=torch.float64) * 4  # some beyond ±10 after scaling
    inputs[1, :, 0] *= 5
    step = torch.arange(12).repeat(2, 1)
    returns = torch.randn(2, 12, generator=generator, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.float64)
    mask[1, 9:] = 0.0  # padding
    values = linear_feature_values(inputs, step, returns, mask)
    for row, n in ((0, 12), (1, 9)):  # numpy, as ProMP's LinearBaseline.fit/_features, on the valid steps
        x = np.clip(inputs[row, :n].numpy(), -10, 10)
        t = np.arange(n).reshape(-1, 1) / 100.0
        features = np.concatenate([x, x**2, t, t**2, t**3, np.ones((n, 1))], axis=1)
        coeffs = np.linalg.lstsq(features.T @ features + 1e-5 * np.eye(features.shape[1]),
                                 features.T @ returns[row, :n].numpy(), rcond=-1)[0]
        np.testing.assert_allclose(values[row, :n].numpy(), features @ coeffs, rtol=1e-6, atol=1e-8)
    assert torch.count_nonzero(values[1, 9:]) == 0
    # returns that are a linear function of the features are fitted (almost) exactly
    exact = 2.0 * inputs[..., 1].clamp(-10.0, 10.0) - 0.5 + step / 100.0
    torch.testing.assert_close(linear_feature_values(inputs, step, exact, torch.ones(2, 12)), exact, atol=1e-3, rtol=0)
