"""TrMRL against its released code (luckeciano/transformers-metarl; issue 14 items 3–6 and 9, issue 18).

What each test pins, with the release's file it was read in:
- the shared value's update (``src/garage/torch/algos/vpg.py`` ``VPG._train``; the value optimiser wraps
  ``GaussianMLPValueFunction``, which holds the policy as ``_base_model``): policy epochs on the policy
  loss, then value epochs on the value loss, each with its own AdamW;
- the lr decay (``src/garage/torch/optimizers/optimizer_wrapper.py`` ``LRDecayOptimizerWrapper``; README
  launch commands; ``examples/torch/transformer_ppo_halfcheetah.py`` ``steps_per_epoch``);
- un-centred advantages and a Monte-Carlo, Gaussian-likelihood value (``vpg.py`` ``train_once``: the
  launch scripts' ``--center_adv`` is a click flag, never passed; ``GaussianMLPValueFunction.compute_loss``);
- ``[o, 0, 0, 0]`` at every episode start (``src/garage/torch/algos/rl2.py`` ``RL2Env.reset``);
- acting: deterministic evaluation (``OnlineMetaEvaluator`` samples with ``deterministic=True``), and a
  policy that draws only from the generator it is given (issue 18).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from algorithms.base import MetaEnvInfo, Task, TrialBatch
from algorithms.ppo import gae, trial_cuts
from algorithms.trmrl import PRESETS, Config, TrMRL, TrMRLPolicy, gather_windows, span_positions
from harness.run.rollout import Sampler
from harness.tasks import family_class

SMALL = {"layers": 3, "heads": 4, "d_model": 32, "ff_size": 64, "attention": "window", "memory_span": "episode"}


class RecordingSampler(Sampler):
    """The harness's sampler, keeping the last batch it collected."""

    batch: TrialBatch

    def collect(self, *args: Any, **kwargs: Any) -> TrialBatch:
        self.batch = super().collect(*args, **kwargs)
        return self.batch


def point_nav(episode_steps: int = 6, tasks: int = 4) -> tuple[RecordingSampler, MetaEnvInfo, list[Task]]:
    cls = family_class("point_nav")
    family = cls(cls.Params(episode_steps=episode_steps))
    sampler = RecordingSampler(family, np.random.default_rng(0))
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    task_list = [Task(family.name, f"train/{i}", family.sample_params("train", np.random.default_rng(i)))
                 for i in range(tasks)]
    return sampler, info, task_list


def batch_tensors(net: Any, batch: TrialBatch) -> tuple[torch.Tensor, ...]:
    """Tokens ``[N, T, token_dim]``, the valid samples' windows and counts, rows, steps and actions."""
    tokens = net.tokens(torch.from_numpy(batch.obs), torch.from_numpy(batch.previous(batch.actions)),
                        torch.from_numpy(batch.previous(batch.rewards)), torch.from_numpy(batch.episode_start))
    position, _ = span_positions(batch.episode_start, net.config.memory_span == "episode")
    rows, steps = (torch.from_numpy(a) for a in np.nonzero(batch.valid))
    windows, count = gather_windows(tokens, position, rows, steps, net.config.working_memory)
    return tokens, windows, count, rows, steps, torch.from_numpy(batch.actions)[rows, steps]


# --- item 3: the shared value's update -----------------------------------------------------------


def test_shared_value_policy_step_on_the_transformer_is_that_of_the_policy_loss_alone() -> None:
    """One minibatch, one epoch: the policy optimiser's step on the transformer equals an AdamW step on the
    policy loss alone (not on policy + value loss), and the value's own epoch then moves the transformer
    on the value loss alone: the release's Gaussian likelihood of the trial's discounted return."""
    sampler, info, tasks = point_nav()
    config = Config(**SMALL, shared_value=True, epochs=1, minibatch_size=10_000, normalise_advantages=False)
    learner, reference = TrMRL(info, config, seed=0), TrMRL(info, config, seed=0)
    transformer = [name for name, _ in learner.net.named_parameters() if name.startswith(("embed.", "blocks."))]
    captured: dict[str, dict[str, torch.Tensor]] = {}

    def capture(optimiser: Any, key: str) -> None:
        original = optimiser.step

        def step() -> None:
            named = dict(learner.net.named_parameters())
            captured[key + "_grad"] = {name: named[name].grad.clone() for name in transformer}
            original()
            captured[key] = {name: p.detach().clone() for name, p in learner.net.named_parameters()}

        optimiser.step = step

    capture(learner.optimisers.policy, "policy")
    capture(learner.optimisers.value, "value")
    learner.train_iteration(sampler, tasks)
    batch = sampler.batch

    # The policy loss alone at the initial parameters: at ratio 1, -mean(A · log π) in gradient.
    net = reference.net
    tokens, windows, count, rows, steps, actions = batch_tensors(net, batch)
    features, _ = net.window_forward(windows, count)
    with torch.no_grad():
        values = torch.zeros(batch.rewards.shape)
        values[rows, steps] = net.value(tokens[rows, steps], features)
        advantages, _ = gae(torch.from_numpy(batch.rewards), values, torch.from_numpy(trial_cuts(batch.valid)),
                            config.discount, config.gae_lambda)
    policy_loss = -(advantages[rows, steps] * net.log_prob(net.distribution(features), actions)).mean()
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(policy_loss, [params[name] for name in transformer])
    scale = max(float(g.abs().max()) for g in grads)
    for name, grad in zip(transformer, grads, strict=True):
        torch.testing.assert_close(captured["policy_grad"][name], grad, rtol=1e-4, atol=1e-6 * scale)
    adamw = torch.optim.AdamW([params[name] for name in transformer], lr=config.policy_lr)
    for name, grad in zip(transformer, grads, strict=True):
        params[name].grad = grad
    adamw.step()
    for name, grad in zip(transformer, grads, strict=True):
        # AdamW's first step is lr · g / (|g| + 1e-8): where |g| is near 1e-8, rounding in g decides it.
        clear = grad.abs() > 1e-4 * scale
        torch.testing.assert_close(captured["policy"][name][clear], params[name].detach()[clear], rtol=0,
                                   atol=0.01 * config.policy_lr)

    # Then the value's epoch, from the parameters the policy step left, on the value loss alone.
    assert "value" in captured, "no separate value step"
    net.load_state_dict(captured["policy"])
    tokens, windows, count, rows, steps, _ = batch_tensors(net, batch)
    features, _ = net.window_forward(windows, count)
    returns = torch.zeros(batch.rewards.shape)
    for row in range(batch.num_tasks):  # discounted return to the end of the trial (garage's discount_cumsum)
        running = 0.0
        for t in reversed(np.nonzero(batch.valid[row])[0]):
            running = float(batch.rewards[row, t]) + config.discount * running
            returns[row, t] = running
    value_dist = torch.distributions.Normal(net.value(tokens[rows, steps], features), net.value_log_std.exp())
    value_loss = -value_dist.log_prob(returns[rows, steps]).mean()
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(value_loss, [params[name] for name in transformer])
    scale = max(float(g.abs().max()) for g in grads)
    for name, grad in zip(transformer, grads, strict=True):
        torch.testing.assert_close(captured["value_grad"][name], grad, rtol=1e-4, atol=1e-6 * scale)
    assert not torch.equal(captured["value"]["blocks.0.qkv.weight"], captured["policy"]["blocks.0.qkv.weight"])


def test_a_separate_value_optimiser_holds_only_the_value() -> None:
    _, info, _ = point_nav()
    separate = TrMRL(info, Config(**SMALL, shared_value=False), seed=0)
    shared = TrMRL(info, Config(**SMALL, shared_value=True), seed=0)
    ids = {id(p) for p in separate.optimisers.value.parameters}
    assert ids == {id(p) for p in separate.net.value_parameters()}
    shared_ids = {id(p) for p in shared.optimisers.value.parameters}
    assert {id(p) for p in shared.net.parameters()} == shared_ids  # value + the whole policy, as released


# --- item 4: the lr decay --------------------------------------------------------------------------


def released_lr_factors(start: int, end: int, factor: float, steps_per_epoch: int, ks: list[int]) -> list[float]:
    """``LRDecayOptimizerWrapper``: a MultiStepLR with milestones ``arange(start·S, end·S, S)`` and
    ``γ = factor^(1/len)``, stepped with ``step(k)`` in the ``zero_grad`` before optimiser step ``k``."""
    optimiser = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
    milestones = np.arange(start * steps_per_epoch, end * steps_per_epoch, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones.tolist(),
                                                     gamma=factor ** (1 / len(milestones)))
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated; the release calls it so
        for k in ks:
            scheduler.step(k)
            out.append(optimiser.param_groups[0]["lr"])
    return out


#: README launch commands: (--decay_epoch_init, --decay_epoch_end, --min_lr_factor, value decays too).
README_SCHEDULES = {"halfcheetah_vel": (100, 750, 0.1, False), "halfcheetah_dir": (100, 3700, 1e-4, True),
                    "ant_dir": (500, 3500, 1e-4, True)}


@pytest.mark.parametrize("preset", sorted(README_SCHEDULES))
def test_presets_lr_at_given_iterations_follow_the_readme_schedule(preset: str) -> None:
    start, end, factor, value_decays = README_SCHEDULES[preset]
    config = Config(**PRESETS[preset])
    assert (config.lr_decay_start, config.lr_decay_end, config.min_lr_factor) == (start, end, factor)
    assert (config.lr_decay_optimisers == "policy_and_value") == value_decays
    from algorithms.trmrl import lr_factor, steps_per_epoch

    per_epoch = steps_per_epoch(config, 20, 2, 200)
    assert per_epoch == 312  # 10 * (200 * 2 * 20) // 256 in the launch script

    def at_epoch(epoch: int) -> float:
        return lr_factor(config, epoch * per_epoch, per_epoch)

    gamma = factor ** (1 / (end - start))
    assert at_epoch(0) == at_epoch(start - 1) == 1.0
    assert at_epoch(start) == pytest.approx(gamma)  # the first step applies during epoch `start`
    assert at_epoch((start + end) // 2) == pytest.approx(gamma ** ((start + end) // 2 - start + 1))
    assert at_epoch(end - 1) == at_epoch(end) == at_epoch(5000) == pytest.approx(factor)

    # Step by step, the schedule is the released MultiStepLR's, milestones and all.
    ks = [0, start * per_epoch - 1, start * per_epoch, start * per_epoch + 1, (start + 1) * per_epoch - 1,
          (start + 1) * per_epoch, (start + end) // 2 * per_epoch + 7, (end - 1) * per_epoch - 1,
          (end - 1) * per_epoch, end * per_epoch, 2 * end * per_epoch]
    ours = [lr_factor(config, k, per_epoch) for k in ks]
    assert ours == pytest.approx(released_lr_factors(start, end, factor, per_epoch, ks), rel=1e-12)


def test_the_optimisers_follow_the_schedule_at_every_step() -> None:
    """The lr of every optimiser step of a few iterations is the schedule's at that step's count; the
    value's lr stays put when only the policy decays (HalfCheetahVel)."""
    from algorithms.trmrl import lr_factor

    sampler, info, tasks = point_nav(episode_steps=5)
    config = Config(**SMALL, epochs=2, minibatch_size=8, lr_decay_start=1, lr_decay_end=3, min_lr_factor=0.01,
                    lr_decay_optimisers="policy")
    learner = TrMRL(info, config, seed=0)
    lrs: dict[str, list[float]] = {"policy": [], "value": []}
    for key in lrs:
        adamw = getattr(learner.optimisers, key).optimiser
        original = adamw.step

        def step(original: Any = original, adamw: Any = adamw, key: str = key) -> None:
            lrs[key].append(adamw.param_groups[0]["lr"])
            original()

        adamw.step = step
    for _ in range(4):
        learner.train_iteration(sampler, tasks)
    per_epoch = learner.optimisers.policy.steps_per_epoch
    assert per_epoch == 2 * 4 * 2 * 5 // 8
    assert len(lrs["policy"]) == len(lrs["value"]) == 4 * 2 * math.ceil(4 * 2 * 5 / 8)
    assert lrs["policy"] == pytest.approx([config.policy_lr * lr_factor(config, k, per_epoch)
                                           for k in range(len(lrs["policy"]))], rel=1e-12)
    assert lrs["policy"][-1] == pytest.approx(0.01 * config.policy_lr)
    assert set(lrs["value"]) == {config.value_lr}


# --- item 5: advantages and the value's target and likelihood -------------------------------------


@pytest.mark.parametrize("preset", ["halfcheetah_vel", "halfcheetah_dir", "ant_dir", "metaworld"])
def test_paper_presets_train_as_released(preset: str) -> None:
    config = Config(**PRESETS[preset])
    assert config.normalise_advantages is False  # --center_adv is never passed
    assert (config.value_target, config.value_loss, config.value_update) == ("monte_carlo", "gaussian_nll",
                                                                             "separate_epochs")
    assert (config.attention, config.memory_span, config.max_grad_norm, config.entropy_coef) == (
        "window", "episode", None, 0.0)


def test_the_cheap_preset_keeps_the_harness_ppo() -> None:
    config = Config(**PRESETS["cheap"])
    assert config.normalise_advantages is True
    assert (config.value_target, config.value_loss, config.value_update) == ("lambda_return", "mse", "joint")
    # the policy's step is not shrunk by the value's gradient; the tokens are not outweighed by the positions
    assert (config.clip_value_separately, config.scale_embedding) == (True, True)


def test_discounted_returns_run_to_the_end_of_the_trial() -> None:
    from algorithms.trmrl import discounted_returns

    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    valid = np.array([[True, True, True, True, False], [True] * 5])  # an episode boundary inside is no cut
    returns = discounted_returns(rewards, torch.from_numpy(trial_cuts(valid)), 0.5)
    expected = torch.tensor([[1 + 1 + 0.75 + 0.5, 2 + 1.5 + 1, 3 + 2, 4, 0],
                             [1.9375, 1.875, 1.75, 1.5, 1]])
    torch.testing.assert_close(returns[torch.from_numpy(valid)], expected[torch.from_numpy(valid)])  # padding: masked


def test_value_loss_is_the_gaussian_negative_log_likelihood() -> None:
    from algorithms.trmrl import value_terms

    values, targets = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[1.0, 0.0, 2.5]])
    log_std = torch.tensor([0.3])
    terms = value_terms(values, targets, torch.ones(1, 3), log_std)
    expected = -torch.distributions.Normal(values, log_std.exp()).log_prob(targets).mean()
    torch.testing.assert_close(terms["loss_value"], expected)
    assert float(terms["value_std"]) == pytest.approx(math.exp(0.3))
    mse = value_terms(values, targets, torch.tensor([[1.0, 1.0, 0.0]]), None)["loss_value"]
    assert float(mse) == pytest.approx(0.5 * (0.25 + 1.0) / 2)


def test_the_value_fits_the_trials_discounted_return_with_a_gaussian_likelihood() -> None:
    """A separate value's first loss is -log N(discounted return to the trial's end; v(token), σ = 1)."""
    sampler, info, tasks = point_nav()
    config = Config(**SMALL, epochs=1, minibatch_size=10_000)
    learner, reference = TrMRL(info, config, seed=0), TrMRL(info, config, seed=0)
    logs = learner.train_iteration(sampler, tasks)
    batch = sampler.batch
    tokens, *_ = batch_tensors(reference.net, batch)
    rewards, valid = torch.from_numpy(batch.rewards), torch.from_numpy(batch.valid)
    discounts = config.discount ** torch.arange(rewards.shape[1], dtype=torch.float32)
    returns = torch.stack([(rewards[:, t:] * discounts[: rewards.shape[1] - t]).sum(1)
                           for t in range(rewards.shape[1])], dim=1)
    with torch.no_grad():
        values = reference.net.value(tokens, None)
    nll = 0.5 * (returns - values) ** 2 + 0.5 * math.log(2 * math.pi)
    assert logs["loss_value"] == pytest.approx(float(nll[valid].mean()), rel=1e-5)


# --- item 6: every episode starts from [o, 0, 0, 0] ------------------------------------------------


def test_the_first_token_of_every_episode_carries_nothing_of_the_previous_one() -> None:
    sampler, info, tasks = point_nav()
    learner = TrMRL(info, Config(**SMALL), seed=0)
    batch = sampler.collect(learner.exploration_policy(), tasks, 2)
    assert batch.episode_start[:, 1:].any()  # second episodes inside the trials
    tokens, *_ = batch_tensors(learner.net, batch)
    obs_dim = batch.obs.shape[-1]
    starts = torch.from_numpy(batch.episode_start)
    assert (tokens[starts][:, obs_dim:] == 0).all()  # [o, 0, 0, 0]: no action, reward or done
    torch.testing.assert_close(tokens[starts][:, :obs_dim], torch.from_numpy(batch.obs)[starts])
    assert (tokens[..., -1] == 0).all()  # the release's done flag is never 1 on a token the policy reads

    trial = TrMRL(info, Config(**{**SMALL, "memory_span": "trial", "attention": "sliding"}), seed=0)
    tokens, *_ = batch_tensors(trial.net, batch)
    second = starts.clone()
    second[:, 0] = False
    assert (tokens[second][:, -1] == 1).all()  # trial-spanning memory keeps the boundary and the carry
    torch.testing.assert_close(tokens[second][:, -2], torch.from_numpy(batch.previous(batch.rewards))[second])


@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_trmrls_first_action_of_episode_two_does_not_depend_on_episode_one(attention: str) -> None:
    """Acting with ``memory_span: episode``: two different first episodes, then the same first observation
    of episode 2: the same (deterministic) action, which is that of a fresh trial's first step."""
    _, info, _ = point_nav()
    learner = TrMRL(info, Config(**{**SMALL, "attention": attention}), seed=0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 2)).astype(np.float32)
    first_obs = obs[:1].repeat(2, 0)

    def episode_two(seed: int) -> np.ndarray:
        policy = TrMRLPolicy(learner.net, torch.Generator().manual_seed(0))
        policy.reset(np.ones(2, bool))
        episode = np.random.default_rng(seed)
        prev_action, prev_reward, start = np.zeros((2, 2), np.float32), np.zeros(2, np.float32), np.ones(2, bool)
        for _ in range(4):
            action = policy.act(episode.normal(size=(2, 2)).astype(np.float32), prev_action, prev_reward, start, False)
            prev_action, prev_reward = action.astype(np.float32), episode.normal(size=2).astype(np.float32)
            start = np.zeros(2, bool)
        return policy.act(first_obs, prev_action, prev_reward, np.ones(2, bool), True)

    fresh = TrMRLPolicy(learner.net, torch.Generator())
    fresh.reset(np.ones(2, bool))
    first = fresh.act(first_obs, np.zeros((2, 2), np.float32), np.zeros(2, np.float32), np.ones(2, bool), True)
    np.testing.assert_array_equal(episode_two(1), episode_two(2))
    np.testing.assert_allclose(episode_two(1), first, rtol=0, atol=1e-6)


# --- item 9 and issue 18: acting reads the learner and draws only from the generator it is given --


def _tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in _tensors(value)]
    if isinstance(state, list | tuple):
        return [t for value in state for t in _tensors(value)]
    return []


@pytest.mark.parametrize(("attention", "memory_span"), [("window", "episode"), ("sliding", "trial")])
def test_exploration_policy_draws_from_its_generator_and_changes_nothing(attention: str, memory_span: str) -> None:
    sampler, info, tasks = point_nav()
    config = Config(**{**SMALL, "attention": attention, "memory_span": memory_span, "epochs": 1})
    learner = TrMRL(info, config, seed=0)
    learner.train_iteration(sampler, tasks)  # optimiser states exist
    before = copy.deepcopy(learner.state_dict())
    training_generator = learner.generator.get_state()

    def trial(generator: torch.Generator | None, deterministic: bool) -> np.ndarray:
        evaluation = Sampler(sampler.family, np.random.default_rng(1))
        return evaluation.collect(learner.exploration_policy(generator), tasks, 2, deterministic).actions

    stochastic = trial(torch.Generator().manual_seed(7), False)
    np.testing.assert_array_equal(stochastic, trial(torch.Generator().manual_seed(7), False))
    assert not np.array_equal(stochastic, trial(torch.Generator().manual_seed(8), False))
    generator = torch.Generator().manual_seed(7)
    mean = trial(generator, True)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(7).get_state())  # nothing drawn
    np.testing.assert_array_equal(mean, trial(torch.Generator().manual_seed(8), True))
    policy = learner.exploration_policy(generator)
    assert learner.adapt(policy, None) is policy  # type: ignore[arg-type]  # in-context: nothing to draw

    assert torch.equal(learner.generator.get_state(), training_generator)
    after = learner.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(_tensors(before), _tensors(after), strict=True))
    assert before["iterations"] == after["iterations"]
