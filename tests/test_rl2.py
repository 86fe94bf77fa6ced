"""RL²: acting consistent with the training forward (GRU and LSTM), the released-code options (ProMP's
truncated backprop, per-episode returns, linear feature baseline, zeroed inputs), gradient clipping that a
reward scale cannot turn against the policy (issue 14, item 7), and evaluation that never touches
training (issue 18)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from algorithms.base import MetaEnvInfo, TrialBatch
from algorithms.rl2 import RL2, Config, chunk_weights, run_rnn
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import family_class, make_split


def _point_nav(train: int = 4) -> tuple[Sampler, list, MetaEnvInfo]:
    cls = family_class("point_nav")
    family = cls(cls.Params())
    tasks = make_split(family, "pn", {"train": train}, lambda s: seeding.generator(0, "rl2", s))["train"]
    sampler = Sampler(family, seeding.generator(0, "rl2", "sampler"))
    return sampler, tasks, MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)


def _config(preset: str | None = None, **overrides: Any) -> Config:
    return Config(**{**(RL2.presets[preset] if preset else {}), **overrides})


def test_one_policy_collects_trial_after_trial_and_starts_each_from_a_zero_state() -> None:
    sampler, tasks, info = _point_nav()
    learner = RL2(info, Config(hidden_size=8), seed=0)
    policy = learner.exploration_policy()
    first = sampler.collect(policy, tasks, 2, deterministic=True)
    again = sampler.collect(policy, tasks, 2, deterministic=True)  # the GRU state is reset, in place
    rewound = Sampler(sampler.family, seeding.generator(0, "rl2", "sampler"))
    fresh = rewound.collect(learner.exploration_policy(), tasks, 2, deterministic=True)
    np.testing.assert_array_equal(first.actions, fresh.actions)
    assert again.actions.shape == first.actions.shape and np.isfinite(again.actions).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("reset_inputs", [False, True])
def test_acting_step_by_step_matches_the_training_forward_over_whole_trials(cell: str, reset_inputs: bool) -> None:
    sampler, tasks, info = _point_nav()
    config = Config(hidden_size=8, shared_value=True, cell=cell, reset_inputs_each_episode=reset_inputs)
    learner = RL2(info, config, seed=0)
    batch = sampler.collect(learner.exploration_policy(), tasks, 2, deterministic=True)
    inputs = learner._sequence_inputs(batch)["inputs"]
    with torch.no_grad():
        mean = learner.net.policy_head(learner.net.rnn(inputs)[0])  # [N, T, A]: a row is one trial
    # the deterministic actions stored are the means the policy computed one env step at a time
    torch.testing.assert_close(torch.from_numpy(batch.actions), mean, rtol=1e-5, atol=1e-6)


def test_zeroed_inputs_at_episode_start_as_promp_and_garage_rl2env() -> None:
    sampler, tasks, info = _point_nav()
    batch = sampler.collect(RL2(info, Config(hidden_size=8), seed=0).exploration_policy(), tasks, 2)
    second = int(np.flatnonzero(batch.episode_start[0])[1])  # first step of episode 2
    carried = RL2(info, Config(hidden_size=8), seed=0)._sequence_inputs(batch)["inputs"]
    zeroed = RL2(info, Config(hidden_size=8, reset_inputs_each_episode=True), seed=0)._sequence_inputs(batch)["inputs"]
    obs_dim = 2
    # RL2Env.reset returns [o, 0, 0, 0]: no previous action, reward or done, at the trial start and at episode 2
    for t in (0, second):
        torch.testing.assert_close(zeroed[:, t, :obs_dim], carried[:, t, :obs_dim])
        assert torch.count_nonzero(zeroed[:, t, obs_dim:]) == 0
    assert torch.count_nonzero(carried[:, second, obs_dim:]) > 0  # by default episode 1's last step carries over
    torch.testing.assert_close(zeroed[:, 1:second], carried[:, 1:second])  # other steps are the same


def test_truncated_backprop_keeps_the_forward_and_cuts_gradients_at_chunk_boundaries() -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    inputs = torch.randn(2, 10, 3, requires_grad=True)
    full, truncated = run_rnn(lstm, inputs, None), run_rnn(lstm, inputs, 4)
    torch.testing.assert_close(truncated, full)  # the state is carried from chunk to chunk
    (grad,) = torch.autograd.grad(truncated[:, 5].sum(), inputs)  # step 5 lies in the chunk 4..7
    assert torch.count_nonzero(grad[:, :4]) == 0 and torch.count_nonzero(grad[:, 4:6]) > 0
    (grad,) = torch.autograd.grad(full[:, 5].sum(), inputs)
    assert torch.count_nonzero(grad[:, :4]) > 0  # without truncation it reaches back to the start
    # ProMP averages the chunks' gradients: chunks of 4, 4 and 2 steps weigh 1/3 each
    weights = chunk_weights(torch.ones(2, 10), 4)
    torch.testing.assert_close(weights[0], torch.tensor([1 / 24] * 8 + [1 / 12] * 2))
    assert weights.sum().item() == pytest.approx(1.0)


def test_promp_returns_stop_at_episode_ends_and_the_baseline_is_fitted_per_task() -> None:
    sampler, tasks, info = _point_nav()
    learner = RL2(info, _config("mujoco"), seed=0)
    batch = sampler.collect(learner.exploration_policy(), tasks, 2)
    end = int(np.flatnonzero(batch.episode_end[0])[0])  # last step of episode 1
    inputs = learner._sequence_inputs(batch)["inputs"]
    advantages, returns = learner._advantages(batch, inputs, None)
    # λ = 1: advantage + baseline is each episode's own discounted reward-to-go (ProMP's per-path
    # discount_cumsum), so episode 1's returns do not see episode 2's rewards
    rewards = torch.from_numpy(batch.rewards).double()
    by_hand = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        after = 0.0 if batch.episode_end[0, t] or t + 1 == rewards.shape[1] else by_hand[:, t + 1]
        by_hand[:, t] = rewards[:, t] + 0.99 * after
    torch.testing.assert_close(returns.double(), by_hand, rtol=1e-4, atol=1e-4)
    # the baseline (returns − advantages) is one linear model per task over its two episodes' inputs:
    # a row's baseline does not depend on another row's data
    other = dataclasses.replace(batch, rewards=batch.rewards.copy())
    other.rewards[1:] += 3.0
    advantages_other, _ = learner._advantages(other, inputs, None)
    torch.testing.assert_close(advantages_other[0], advantages[0])
    assert not torch.allclose(advantages_other[1], advantages[1])
    # default: one return over the whole trial, so episode 1 sees episode 2's rewards
    default = RL2(info, Config(hidden_size=8), seed=0)
    values = torch.zeros_like(rewards).float()
    _, across = default._advantages(batch, inputs, values)
    assert (across[:, : end + 1] - returns[:, : end + 1]).min() < -1.0  # point_nav rewards are negative


class _FixedBatch:
    """A sampler that hands out the same trial batch, rewards scaled."""

    def __init__(self, batch: TrialBatch, scale: float) -> None:
        self.batch = dataclasses.replace(batch, rewards=batch.rewards * scale,
                                         episode_returns=batch.episode_returns * scale)

    def collect(self, policy: Any, tasks: Any, episodes_per_trial: int, deterministic: bool = False) -> TrialBatch:
        return self.batch


def _first_policy_step(config: Config, batch: TrialBatch, info: MetaEnvInfo, scale: float) -> torch.Tensor:
    """The gradient on the policy-only parameters (head and log-std; the RNN too when it is not shared with
    a value head) that the optimiser's first step applies, flattened, with rewards × ``scale``."""
    learner = RL2(info, config, seed=0)
    # The previous reward is an input: the RNNs ignore it here, so both scales run the same forward.
    reward_column = learner.net.obs_dim + learner.net.action_dim
    with torch.no_grad():
        for rnn in (learner.net.rnn, learner.net.value_rnn):
            if rnn is not None:
                rnn.weight_ih_l0[:, reward_column] = 0.0
    if learner.net.value_head is not None:  # values 0 at the first step: advantages exactly ∝ rewards
        torch.nn.init.zeros_(learner.net.value_head.weight), torch.nn.init.zeros_(learner.net.value_head.bias)
    params = [*learner.net.policy_head.parameters(), learner.net.log_std]
    if learner.net.value_rnn is not None or learner.net.value_head is None:
        params += list(learner.net.rnn.parameters())
    applied: list[torch.Tensor] = []
    step = learner.optimiser.step

    def record(*args: Any, **kwargs: Any) -> Any:
        if not applied:
            grads = [p.grad.clone() for p in params]
            for g, p in zip(grads, params, strict=True):
                if p is learner.net.rnn.weight_ih_l0:  # its reward-input column's gradient is ∝ the inputs
                    g[:, reward_column] = 0.0
            applied.append(torch.cat([g.flatten() for g in grads]))
        return step(*args, **kwargs)

    learner.optimiser.step = record  # type: ignore[method-assign]
    learner.train_iteration(_FixedBatch(batch, scale), [])  # type: ignore[arg-type]
    return applied[0]


@pytest.mark.parametrize("setting", [
    {}, {"shared_value": True}, {"normalise_value_targets": True},
    {"normalise_value_targets": True, "shared_value": True}, {"preset": "mujoco"}, {"preset": "metaworld"},
])
def test_policy_gradient_does_not_shrink_when_rewards_are_scaled(setting: dict[str, Any]) -> None:
    """Issue 14, item 7: one clip over the policy's and the value's gradients together lets the value loss
    (returns ×100 → value gradient ×100) scale the policy's step down ~×100. Each preset, and the defaults
    with a separate or a shared value, apply the same policy gradient whatever the reward scale."""
    setting = dict(setting)
    config = _config(setting.pop("preset", None), **{"hidden_size": 16, "epochs": 1, **setting})
    sampler, tasks, info = _point_nav(train=8)
    batch = sampler.collect(RL2(info, config, seed=1).exploration_policy(), tasks, 2)
    plain = _first_policy_step(config, batch, info, 1.0)
    scaled = _first_policy_step(config, batch, info, 100.0)
    ratio = (scaled.norm() / plain.norm()).item()
    if config.baseline == "value":  # advantages exactly ∝ rewards, normalised: the very same step
        assert 0.99 < ratio < 1.01, f"the policy gradient changed ×{ratio:.3f} with rewards ×100"
        assert torch.nn.functional.cosine_similarity(plain, scaled, dim=0) > 0.999
    else:  # ProMP's baseline clips its (reward-carrying) input features at ±10: close, not equal
        assert 0.8 < ratio < 1.25, f"the policy gradient changed ×{ratio:.3f} with rewards ×100"


def test_renormalising_the_value_targets_leaves_every_prediction_unchanged() -> None:
    """PopArt's output preservation: new target statistics rescale the value head's output layer, so the
    values in return units (which GAE uses) do not jump when the statistics change."""
    sampler, tasks, info = _point_nav()
    learner = RL2(info, _config(hidden_size=16, normalise_value_targets=True), seed=0)
    net, batch = learner.net, sampler.collect(learner.exploration_policy(), tasks, 2)
    data = learner._sequence_inputs(batch)

    def predictions() -> torch.Tensor:
        _, values, _ = learner._forward(data["inputs"], data["actions"])
        return values * net.value_std + net.value_mean

    before = predictions()
    returns = torch.as_tensor(batch.rewards) * 100.0 + 40.0
    net.renormalise_values(returns, data["mask"])
    valid = data["mask"].bool()
    assert net.value_mean.item() == pytest.approx(returns[valid].mean().item(), rel=1e-5)
    assert net.value_std.item() == pytest.approx(returns[valid].std(unbiased=False).item(), rel=1e-5)
    torch.testing.assert_close(predictions(), before, rtol=1e-5, atol=1e-4)
    assert {"value_mean", "value_std"} <= set(learner.state_dict()["net"])
    assert not {"value_mean", "value_std"} & set(RL2(info, _config(hidden_size=16), seed=0).net.state_dict())


@pytest.mark.parametrize("shared_value", [False, True])
def test_normalised_value_targets_make_the_value_loss_independent_of_the_reward_scale(shared_value: bool) -> None:
    """Returns of hundreds (the RL² paper's tabular MDPs: ~1 per step over 100 steps) give value losses and
    gradients of thousands, which the clip then cuts to a crawl; fitted to standardised returns, the value
    head sees the same loss whatever the scale."""
    sampler, tasks, info = _point_nav(train=8)
    batch = RL2(info, _config(hidden_size=16), seed=1)
    batch = sampler.collect(batch.exploration_policy(), tasks, 2)

    def first_value_loss(normalise: bool, scale: float) -> float:
        learner = RL2(info, _config(hidden_size=16, epochs=1, minibatches=1, shared_value=shared_value,
                                    normalise_value_targets=normalise), seed=0)
        reward_column = learner.net.obs_dim + learner.net.action_dim  # the same forward at both scales
        with torch.no_grad():
            for rnn in (learner.net.rnn, learner.net.value_rnn):
                if rnn is not None:
                    rnn.weight_ih_l0[:, reward_column] = 0.0
        return learner.train_iteration(_FixedBatch(batch, scale), [])["loss_value"]  # type: ignore[arg-type]

    assert first_value_loss(True, 100.0) == pytest.approx(first_value_loss(True, 1.0), rel=0.05)
    assert first_value_loss(False, 100.0) > 1000 * first_value_loss(False, 1.0)


def test_presets_are_valid_and_released_settings() -> None:
    mujoco, metaworld = _config("mujoco"), _config("metaworld")
    assert (mujoco.cell, mujoco.hidden_size, mujoco.max_grad_norm, mujoco.minibatches) == ("lstm", 64, None, 1)
    assert mujoco.baseline == "linear_feature" and not mujoco.gae_across_episodes and mujoco.bptt_steps == 32
    assert (metaworld.cell, metaworld.hidden_size, metaworld.max_grad_norm, metaworld.minibatches) == \
        ("gru", 256, None, 1)
    with pytest.raises(ValueError, match=r"^cell:"):
        Config(cell="rnn")
    with pytest.raises(ValueError, match=r"^max_grad_norm:"):
        Config(max_grad_norm=0.0)


@pytest.mark.parametrize("preset", [None, "mujoco"])
def test_a_training_iteration_runs_and_logs_finite_terms(preset: str | None) -> None:
    """Smoke test of both kinds of update (a learned value with separate clipping; ProMP's settings)."""
    sampler, tasks, info = _point_nav()
    learner = RL2(info, _config(preset, hidden_size=8, epochs=2), seed=0)
    logs = learner.train_iteration(sampler, tasks)
    assert all(np.isfinite(v) for v in logs.values())
    assert ("grad_norm_value" in logs) == (preset is None)
    assert ("loss_value" in logs) == (preset is None)


def _state(learner: RL2) -> dict[str, Any]:
    return {k: v.clone() for k, v in learner.net.state_dict().items()} | {"generator": learner.generator.get_state()}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_draws_from_its_own_generator_and_never_touches_training() -> None:
    """Issue 18: the evaluation policy's noise comes from the generator it is given; evaluating changes
    neither the learner's state nor what the next training iteration does."""
    sampler, tasks, info = _point_nav()
    learner = RL2(info, Config(hidden_size=8), seed=0)
    learner.train_iteration(sampler, tasks)
    before = _state(learner)

    def evaluate(seed: int) -> np.ndarray:
        eval_sampler = Sampler(sampler.family, seeding.generator(0, "eval"))
        policy = learner.exploration_policy(torch.Generator().manual_seed(seed))
        batch = eval_sampler.collect(policy, tasks, 1)
        adapted = learner.adapt(policy, batch)
        return np.concatenate([batch.actions, eval_sampler.collect(adapted, tasks, 1).actions], axis=1)

    first = evaluate(7)
    assert _same(_state(learner), before)  # nothing drawn from the training generator, nothing trained
    learner.generator.manual_seed(123)  # the evaluation does not depend on the training generator either
    np.testing.assert_array_equal(evaluate(7), first)
    assert not np.array_equal(evaluate(8), first)

    # the next iteration is the same whether or not an evaluation ran before it
    twin, twin_sampler = RL2(info, Config(hidden_size=8), seed=0), _point_nav()[0]
    learner, sampler = RL2(info, Config(hidden_size=8), seed=0), _point_nav()[0]
    learner.train_iteration(sampler, tasks), twin.train_iteration(twin_sampler, tasks)
    evaluate(7)
    assert learner.train_iteration(sampler, tasks) == twin.train_iteration(twin_sampler, tasks)
    assert _same(_state(learner), _state(twin))
