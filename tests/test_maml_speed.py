"""MAML-TRPO's faster outer step (issue 19) takes the step the plain one took.

``meta_linearisation`` factors the KL's Hessian through the inner steps as ``Σ_i J_iᵀ F_i J_i`` (valid
where the KL is at its minimum: at the parameters that sampled the post-update data, where TRPO
linearises), and ``conjugate_gradient`` hands back the product of its solution. The reference is
``autograd_linearisation``: Hessian-vector products by a second backward through the KL's gradient, as
the step was computed before.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import algorithms.maml as maml_module
from algorithms.base import MetaEnvInfo
from algorithms.maml import MAML, PRESETS, Config, Rollouts, adapt_parameters, meta_linearisation, meta_objective
from algorithms.maml_policy import PolicyNet, log_prob_from, policy_outputs, stack
from algorithms.trpo import autograd_linearisation, conjugate_gradient
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import family_class, make_split


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rollouts(net: PolicyNet, params: dict[str, torch.Tensor], seed: int, tasks: int = 3, steps: int = 9) -> Rollouts:
    """Random float64 trials as sampled by stacked ``params`` (Box or Discrete); row 1 ends early."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(tasks, steps, 3, generator=g, dtype=torch.float64)
    if net.discrete:
        actions = torch.randint(0, net.action_dim, (tasks, steps), generator=g)
    else:
        actions = torch.randn(tasks, steps, net.action_dim, generator=g, dtype=torch.float64)
    mask = torch.ones(tasks, steps, dtype=torch.float64)
    mask[1, -3:] = 0.0
    obs[1, -3:], actions[1, -3:] = 0.0, 0
    advantages = torch.randn(tasks, steps, generator=g, dtype=torch.float64) * mask
    with torch.no_grad():
        out, log_std = policy_outputs(net, params, obs)
    return Rollouts(obs, actions, mask, advantages, log_prob_from(out, log_std, actions), out, log_std)


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(4)], ids=["box", "discrete"])
@pytest.mark.parametrize("inner_objective", ["log_likelihood", "likelihood_ratio"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_factored_kl_hessian_and_gradient_equal_reverse_over_reverse(space: gym.Space, inner_objective: str,
                                                                     inner_steps: int) -> None:
    torch.manual_seed(0)
    net = PolicyNet(3, space, (5, 4), init_std=0.8).double()
    config = Config(inner_lr=0.3, inner_steps=inner_steps, inner_objective=inner_objective)
    theta = dict(net.named_parameters())
    start = stack({k: v.detach() for k, v in theta.items()}, 3)
    pre = _rollouts(net, start, seed=1)
    post = _rollouts(net, adapt_parameters(net, start, pre, config, create_graph=False)[-1], seed=2)

    reference = autograd_linearisation(list(net.parameters()),
                                       meta_objective(net, theta, pre, post, config, create_graph=True))
    factored = meta_linearisation(net, theta, pre, post, config)
    assert factored.loss == pytest.approx(reference.loss, rel=1e-12, abs=1e-15)
    assert reference.grad.abs().max() > 1e-3
    torch.testing.assert_close(factored.grad, reference.grad, rtol=1e-10, atol=1e-13)
    for seed in range(3):
        v = torch.randn(reference.grad.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        expected = reference.hessian_vector(v)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(factored.hessian_vector(v), expected, rtol=1e-9, atol=1e-12)


def test_conjugate_gradient_returns_its_solution_and_the_product_of_it() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a, b = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    for iters in (2, 6):
        x, ax = conjugate_gradient(lambda v: a @ v, b, iters)
        torch.testing.assert_close(ax, a @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)  # n iterations: exact


def test_trpo_step_equals_the_reverse_over_reverse_step_on_a_halfcheetah_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """One training iteration of the ``halfcheetah_vel`` preset (MLP(64, 64), ProMP's inner step and trust
    region; 4 tasks × 2 pooled one-episode trials of 100 steps, float32): its TRPO step from the same θ on
    the same batch with ``autograd_linearisation`` gives the same surrogates, KL, line search and new θ."""
    cls = family_class("halfcheetah_vel")
    family = cls(cls.Params(episode_steps=100))
    tasks = make_split(family, "speed", {"train": 4}, lambda split: seeding.generator(0, "speed", split))["train"]
    sampler = Sampler(family, seeding.generator(0, "speed", "sampler"))
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    learner = MAML(info, Config(**{**PRESETS["halfcheetah_vel"], "trials_per_task": 2}), seed=0)
    real_step, calls = maml_module.trpo_step, []

    def recording(parameters: list[torch.nn.Parameter], *args: Any) -> dict[str, float]:
        before = [p.detach().clone() for p in parameters]
        logs = real_step(parameters, *args)
        calls.append((before, [p.detach().clone() for p in parameters], logs, args))
        return logs

    monkeypatch.setattr(maml_module, "trpo_step", recording)
    learner.train_iteration(sampler, tasks)
    sampler.close()
    (before, fast_params, fast_logs, args), = calls
    assert args[-1] is not None  # the learner passed its factored linearisation
    parameters = list(learner.net.parameters())
    with torch.no_grad():
        for p, value in zip(parameters, before, strict=True):
            p.copy_(value)
    plain_logs = real_step(parameters, *args[:-1])  # objective, max_kl, ...: the autograd linearisation

    assert fast_logs["step_accepted"] == plain_logs["step_accepted"] == 1.0
    assert fast_logs["line_search_backtracks"] == plain_logs["line_search_backtracks"]
    for key in ("loss_surrogate_before", "loss_surrogate_after", "kl"):
        assert fast_logs[key] == pytest.approx(plain_logs[key], rel=1e-4, abs=1e-9), key
    step = max(float((after - start).abs().max()) for after, start in zip(fast_params, before, strict=True))
    assert step > 1e-3
    for fast, plain in zip(fast_params, parameters, strict=True):
        torch.testing.assert_close(fast, plain.detach(), rtol=0, atol=1e-4 * step)


def test_a_training_iteration_steps_within_the_trust_region_with_the_factored_hessian() -> None:
    """``point_nav`` with the cheap preset: the learner's step (factored) is accepted, inside the trust region."""
    cls = family_class("point_nav")
    family = cls(cls.Params())
    tasks = make_split(family, "speed", {"train": 3}, lambda split: seeding.generator(0, "speed", split))["train"]
    sampler = Sampler(family, np.random.default_rng(0))
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    learner = MAML(info, Config(**PRESETS["cheap"]), seed=0)
    before = [p.detach().clone() for p in learner.net.parameters()]
    logs = learner.train_iteration(sampler, tasks)
    assert logs["step_accepted"] == 1.0 and 0.0 < logs["kl"] <= learner.config.max_kl
    assert logs["loss_surrogate_after"] < logs["loss_surrogate_before"]
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.net.parameters(), strict=True))
