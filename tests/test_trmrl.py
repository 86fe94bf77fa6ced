"""TrMRL: the released architecture's details, cached inference, memory semantics and learning."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from algorithms.base import MetaEnvInfo
from algorithms.registry import learner_class
from algorithms.trmrl import Config, TrMRL, TrMRLPolicy, gather_windows, span_positions, value_terms
from algorithms.trmrl_net import TrMRLNet, tfixup_scales
from benchmarks.baselines import UncachedSliding
from harness.run.executors import run_local
from harness.run.store import SuiteDir
from harness.spec.suite import parse_suite

OBS, ACT = 5, 3
BOX = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
SMALL = {"layers": 3, "heads": 4, "d_model": 32, "ff_size": 64}


def make_net(seed: int = 0, **overrides: Any) -> TrMRLNet:
    torch.manual_seed(seed)
    return TrMRLNet(OBS, BOX, Config(**{**SMALL, **overrides}))


def random_trials(
    net: TrMRLNet, starts: list[list[int]], steps: int = 30, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """Tokens ``[N, T, token_dim]`` of random trials and their episode-start flags (episodes start at ``starts``)."""
    rng = np.random.default_rng(seed)
    n = len(starts)
    start = np.zeros((n, steps), bool)
    for row, firsts in enumerate(starts):
        start[row, [0, *firsts]] = True
    tokens = net.tokens(torch.as_tensor(rng.normal(size=(n, steps, OBS)), dtype=torch.float32),
                        torch.as_tensor(rng.normal(size=(n, steps, ACT)), dtype=torch.float32),
                        torch.as_tensor(rng.normal(size=(n, steps)), dtype=torch.float32), torch.from_numpy(start))
    return tokens, start


def full_features(net: TrMRLNet, tokens: torch.Tensor, start: np.ndarray) -> torch.Tensor:
    """The training-time forward (all steps at once) for the net's attention mode: ``[N, T, head_in]``."""
    position, span = span_positions(start, net.config.memory_span == "episode")
    with torch.no_grad():
        if net.config.attention == "sliding":
            return net.sliding_forward(tokens, position, span)[0]
        n, t = start.shape
        rows, steps = (a.flatten() for a in torch.meshgrid(torch.arange(n), torch.arange(t), indexing="ij"))
        windows, count = gather_windows(tokens, position, rows, steps, net.config.working_memory)
        return net.window_forward(windows, count)[0].view(n, t, -1)


def stepwise_features(net: TrMRLNet, tokens: torch.Tensor, start: np.ndarray, cached: bool = True) -> torch.Tensor:
    """Features from the sampling-time memory, one step at a time, as the policy computes them."""
    policy = TrMRLPolicy(net, torch.Generator(), memory=None if cached else UncachedSliding(net))
    policy.reset(np.ones(len(start), bool))
    out = []
    with torch.no_grad():
        for t in range(start.shape[1]):
            if net.config.memory_span == "episode":
                policy.memory.reset(torch.from_numpy(start[:, t]))
            out.append(policy.memory.step(tokens[:, t]))
    return torch.stack(out, dim=1)


# --- initialisation ------------------------------------------------------------------------------


def test_tfixup_scales_match_the_released_formulas() -> None:
    """Empirical std of each weight against Xavier-uniform std × the T-Fixup factor (N = 4 layers)."""
    net = make_net(layers=4, heads=16, d_model=128, ff_size=512)
    d, ff, scales = 128, 512, tfixup_scales(4)
    assert scales["embedding"] == pytest.approx(36**-0.25)
    assert scales["ff_out"] == pytest.approx(0.67 / math.sqrt(2))
    assert scales["qkv"] == pytest.approx(0.67)

    def xavier_std(fan_in: int, fan_out: int) -> float:
        return math.sqrt(2.0 / (fan_in + fan_out))

    expected = {
        "embed": d**-0.5 * scales["embedding"],
        "qkv": xavier_std(d, 3 * d) * scales["qkv"],  # Xavier over the fused [3d, d] in-projection
        "out": xavier_std(d, d) * scales["ff_out"],
        "ff1": xavier_std(d, ff) * scales["ff_out"],
        "ff2": xavier_std(ff, d) * scales["ff_out"],
    }
    assert float(net.embed.weight.detach().std()) == pytest.approx(expected["embed"], rel=0.05)
    assert net.embed.bias is None
    for block in net.blocks:
        for name in ("qkv", "out", "ff1", "ff2"):
            assert float(getattr(block, name).weight.detach().std()) == pytest.approx(expected[name], rel=0.05), name
        assert (block.qkv.bias == 0).all() and (block.out.bias == 0).all()
        assert not any(isinstance(m, torch.nn.LayerNorm) for m in block.modules())  # no LayerNorm in the paper


def test_policy_head_gain_and_initial_std_are_configurable() -> None:
    small, large = make_net(output_gain=0.01), make_net(output_gain=1.0)
    small_std, large_std = (float(n.policy_head[-1].weight.detach().std()) for n in (small, large))
    assert small_std == pytest.approx(0.01 * large_std)
    assert torch.allclose(make_net(init_std=0.2).log_std.exp(), torch.full((ACT,), 0.2))
    assert any(isinstance(m, torch.nn.LayerNorm) for m in make_net(pre_ln=True).modules())


def test_scale_embedding_multiplies_the_token_embeddings_by_the_root_of_the_width() -> None:
    plain, scaled = make_net(), make_net(scale_embedding=True)
    scaled.load_state_dict(plain.state_dict())
    tokens, _ = random_trials(plain, [[]], steps=4)
    d_model = plain.config.d_model
    assert torch.allclose(scaled.embed_tokens(tokens), plain.embed_tokens(tokens) * d_model**0.5)
    assert torch.equal(plain.embed_tokens(tokens), plain.embed(tokens))


# --- attention semantics -------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_a_future_token_cannot_change_the_current_output(attention: str) -> None:
    net = make_net(attention=attention, working_memory=6)
    tokens, start = random_trials(net, [[]] * 2, steps=12)
    changed = tokens.clone()
    changed[:, 8:] += 5.0
    before, after = full_features(net, tokens, start), full_features(net, changed, start)
    assert torch.equal(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize("scale_embedding", [False, True])
@pytest.mark.parametrize("memory_span", ["episode", "trial"])
def test_cached_inference_equals_the_full_forward(memory_span: str, scale_embedding: bool) -> None:
    """Sliding attention: the KV cache (one token per step) against the banded full forward, with
    episodes starting at different steps in different rows and a span longer than the window."""
    net = make_net(attention="sliding", memory_span=memory_span, working_memory=7, scale_embedding=scale_embedding)
    tokens, start = random_trials(net, [[12], [12, 20], [25]], steps=40)
    full = full_features(net, tokens, start)
    assert (stepwise_features(net, tokens, start, cached=True) - full).abs().max() < 1e-5
    assert (stepwise_features(net, tokens, start, cached=False) - full).abs().max() < 1e-5
    chunked = net.sliding_forward(tokens, *span_positions(start, memory_span == "episode"), chunk=5)[0]
    assert (chunked - full).abs().max() < 1e-5


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_window_policy_matches_the_training_windows(scale_embedding: bool) -> None:
    """The paper's attention: the policy's rolling window equals the gathered training windows."""
    net = make_net(attention="window", working_memory=5, scale_embedding=scale_embedding)
    tokens, start = random_trials(net, [[12], [7, 20]], steps=30)
    assert (stepwise_features(net, tokens, start) - full_features(net, tokens, start)).abs().max() < 1e-5


def test_window_and_sliding_attention_agree_while_the_span_fits_the_window() -> None:
    window, sliding = make_net(attention="window", working_memory=20), make_net(attention="sliding", working_memory=20)
    tokens, start = random_trials(window, [[10], [15]], steps=30)  # episodes of at most 20 steps
    assert (full_features(window, tokens, start) - full_features(sliding, tokens, start)).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_memory_resets_at_episode_start_only_when_the_span_is_the_episode(attention: str) -> None:
    tokens_a, start = random_trials(make_net(), [[10]], steps=20, seed=1)
    tokens_b, _ = random_trials(make_net(), [[10]], steps=20, seed=2)
    tokens_b[:, 10:] = tokens_a[:, 10:]  # different first episodes, identical second episodes
    for memory_span, crosses in (("episode", False), ("trial", True)):
        net = make_net(attention=attention, memory_span=memory_span, working_memory=20)
        a, b = stepwise_features(net, tokens_a, start), stepwise_features(net, tokens_b, start)
        assert not torch.allclose(a[:, :10], b[:, :10])
        assert torch.allclose(a[:, 10:], b[:, 10:], atol=1e-6) != crosses, memory_span


def test_uncached_memory_skips_steps_to_the_state_stepping_would_reach() -> None:
    """``UncachedSliding.skip`` (benchmarks reach a long window with it) leaves the memory where stepping
    through the same tokens leaves it: the next step's features are the same."""
    net = make_net(attention="sliding", memory_span="trial", working_memory=6)
    tokens, _ = random_trials(net, [[], []], steps=12)
    stepped, skipped = UncachedSliding(net), UncachedSliding(net)
    for memory in (stepped, skipped):
        memory.reset(torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        for t in range(11):
            stepped.step(tokens[:, t])
        skipped.skip(tokens[:, :11].transpose(0, 1))
        assert torch.equal(stepped.position, skipped.position)
        assert torch.equal(stepped.step(tokens[:, 11]), skipped.step(tokens[:, 11]))


@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_a_new_trial_forgets_everything(attention: str) -> None:
    net = make_net(attention=attention, memory_span="trial", working_memory=20)
    tokens, _ = random_trials(net, [[]], steps=10)
    policy = TrMRLPolicy(net, torch.Generator())
    policy.reset(np.ones(1, bool))
    with torch.no_grad():
        first = [policy.memory.step(tokens[:, t]) for t in range(10)]
        policy.reset(np.ones(1, bool))
        again = [policy.memory.step(tokens[:, t]) for t in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


# --- learner -------------------------------------------------------------------------------------


def make_learner(seed: int = 0, action_space: gym.Space = BOX, **overrides: Any) -> TrMRL:
    env = MetaEnvInfo(gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32), action_space, 2, 6)
    return TrMRL(env, Config(**{**SMALL, **overrides}), seed=seed)


def test_policy_and_value_gradients_are_isolated_when_the_value_is_separate() -> None:
    learner = make_learner(shared_value=False)
    net = learner.net
    tokens, start = random_trials(net, [[6]], steps=12)
    features, _ = net.sliding_forward(tokens, *span_positions(start, True))
    net.zero_grad()
    net.log_prob(net.distribution(features), torch.zeros(1, 12, ACT)).sum().backward(retain_graph=True)
    assert all(p.grad is None for p in net.value_parameters())
    net.zero_grad()
    values = net.value(tokens, features)
    value_terms(values, torch.zeros(1, 12), torch.ones(1, 12), net.value_log_std)["loss_value"].backward()
    assert all(p.grad is None for p in net.policy_parameters())
    assert all(p.grad is not None for p in net.value_parameters())  # the value's log-std too (Gaussian likelihood)

    shared = make_learner(shared_value=True).net  # the shared value trains the transformer too
    features, _ = shared.sliding_forward(tokens, *span_positions(start, True))
    shared.value(tokens, features).sum().backward()
    assert shared.blocks[0].qkv.weight.grad is not None


def test_separate_adamw_optimisers_and_the_lr_decay_config() -> None:
    """Two AdamW optimisers with their own lrs; the schedule itself: tests/test_trmrl_fidelity.py."""
    learner = make_learner(policy_lr=3e-5, value_lr=2.5e-4)
    assert isinstance(learner.optimisers.policy.optimiser, torch.optim.AdamW)
    assert isinstance(learner.optimisers.value.optimiser, torch.optim.AdamW)
    assert learner.optimisers.policy.param_groups[0]["lr"] == 3e-5
    assert learner.optimisers.value.param_groups[0]["lr"] == 2.5e-4
    with pytest.raises(ValueError, match="lr_decay_end"):
        Config(lr_decay_start=500)
    with pytest.raises(ValueError, match="value_loss"):
        Config(value_loss="huber")  # type: ignore[arg-type]


def test_presets_follow_the_papers_table() -> None:
    cls = learner_class("trmrl")
    vel = Config(**cls.presets["halfcheetah_vel"])
    assert (vel.layers, vel.heads, vel.d_model, vel.ff_size, vel.working_memory) == (4, 16, 128, 512, 5)
    assert (vel.discount, vel.gae_lambda, vel.clip, vel.policy_lr, vel.value_lr) == (0.9, 0.8, 0.1, 3e-5, 2.5e-4)
    assert (vel.minibatch_size, vel.epochs, vel.init_std, vel.shared_value) == (256, 10, 0.2, False)
    assert (vel.attention, vel.memory_span, vel.pre_ln, vel.policy_input) == ("window", "episode", False,
                                                                               "latest_memory")
    assert Config(**cls.presets["ant_dir"]).output_gain == 0.01 and Config(**cls.presets["ant_dir"]).discount == 0.92
    world = Config(**cls.presets["metaworld"])
    assert (world.heads, world.d_model, world.ff_size, world.minibatch_size) == (4, 32, 128, 32)


@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_state_dict_round_trip_and_seeded_initialisation(attention: str) -> None:
    learner = make_learner(seed=3, attention=attention)
    learner.optimisers.policy.steps, learner.optimisers.value.steps = 7, 5  # where the lr schedule stands
    clone = make_learner(seed=99, attention=attention)
    clone.load_state_dict(learner.state_dict())
    assert (clone.optimisers.policy.steps, clone.optimisers.value.steps) == (7, 5)
    for a, b in zip(learner.net.state_dict().values(), clone.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(learner.generator.get_state(), clone.generator.get_state())
    twin = make_learner(seed=3, attention=attention)
    assert all(torch.equal(a, b) for a, b in zip(learner.net.parameters(), twin.net.parameters(), strict=True))


@pytest.mark.parametrize("action_space", [BOX, gym.spaces.Discrete(4)], ids=["box", "discrete"])
@pytest.mark.parametrize("attention", ["window", "sliding"])
def test_a_training_iteration_updates_the_networks(action_space: gym.Space, attention: str) -> None:
    """Protocol conformance with a scripted sampler: shapes, identity adapt, parameters move."""
    from harness.run.rollout import Sampler
    from harness.tasks import family_class

    family_name = "point_nav" if isinstance(action_space, gym.spaces.Box) else "bandit"
    cls = family_class(family_name)
    family = cls(cls.Params())
    sampler = Sampler(family, np.random.default_rng(0))
    env = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    learner = TrMRL(env, Config(**SMALL, attention=attention, minibatch_size=16, epochs=2), seed=0)
    tasks = [_task(family, i) for i in range(4)]
    before = [p.detach().clone() for p in learner.net.parameters()]
    logs = learner.train_iteration(sampler, tasks)
    assert {"loss_policy", "loss_value", "approx_kl", "train_return"} <= set(logs)
    assert all(math.isfinite(v) for v in logs.values())
    moved = [not torch.equal(a, b) for a, b in zip(before, learner.net.parameters(), strict=True)]
    assert sum(moved) >= len(moved) - 1  # log_std does not move for discrete actions
    policy = learner.exploration_policy()
    assert learner.adapt(policy, None) is policy  # type: ignore[arg-type]  # in-context: identity


def _task(family: Any, i: int) -> Any:
    from algorithms.base import Task

    return Task(family.name, f"train/{i:04d}", family.sample_params("train", np.random.default_rng(i)))


# --- learning ------------------------------------------------------------------------------------


def _final_scores(results: Path) -> pd.Series:
    rows = SuiteDir(results).results().query("metric == 'return' and split in ['test', 'ood']")
    final = rows.groupby("algorithm")["env_steps"].transform("max")
    return rows[rows["env_steps"] == final].groupby(["algorithm", "split", "episode_index"])["value"].mean()


def _run(tmp_path: Path, suite: dict[str, Any]) -> pd.Series:
    outcome = run_local(parse_suite(suite), tmp_path, workers=1, stream=io.StringIO())
    assert outcome.ok, outcome.failed
    return _final_scores(tmp_path)


@pytest.mark.slow
def test_trmrl_with_trial_memory_on_bandits_beats_thompson_sampling(tmp_path: Path) -> None:
    """k=5, n=10, 250k env steps (≈30 s; 6.47 against Thompson sampling's 5.97 and random's 5.09 since the
    `cheap` preset clips policy and value apart and scales its embeddings); RL²'s test's bars."""
    suite = {
        "name": "learning_bandit", "seeds": [0],
        "families": [{"name": "bandit", "params": {"arms": 5, "pulls": 10}, "split": {"train": 1000, "test": 200},
                      "tasks_per_iteration": 250}],
        "algorithms": [{"name": "trmrl", "preset": "cheap",
                        "config": {"working_memory": 10, "shared_value": True}}],
        "budget": {"env_steps": 250_000}, "evaluation": {"every_env_steps": 250_000, "train_tasks": 0},
    }
    scores = _run(tmp_path, suite)
    trmrl = scores[("trmrl", "test", 0)]
    thompson, random = scores[("ref-thompson", "test", 0)], scores[("ref-random", "test", 0)]
    assert trmrl > thompson, f"TrMRL {trmrl:.2f} does not beat Thompson sampling {thompson:.2f}"
    assert trmrl > random + 1.0


@pytest.mark.slow
def test_trmrl_with_trial_memory_adapts_on_point_nav(tmp_path: Path) -> None:
    """Dense point navigation, 2 episodes per trial, 500k env steps (≈60 s); the same bars as RL²'s test."""
    suite = {
        "name": "learning_point_nav", "seeds": [0],
        "families": [{"name": "point_nav", "split": {"train": 500, "test": 50, "ood": 20},
                      "tasks_per_iteration": 100}],
        "algorithms": [{"name": "trmrl", "preset": "cheap", "config": {"working_memory": 40}}],
        "budget": {"env_steps": 500_000}, "evaluation": {"every_env_steps": 250_000, "train_tasks": 0},
    }
    scores = _run(tmp_path, suite)
    first, last = scores[("trmrl", "test", 0)], scores[("trmrl", "test", 1)]
    non_adaptive, oracle = scores[("ref-non_adaptive", "test", 1)], scores[("ref-oracle", "test", 1)]
    assert last > first + 0.5, f"no adaptation: episode 1 {first:.2f}, episode 2 {last:.2f}"
    assert last > non_adaptive + 3.0, f"TrMRL {last:.2f} vs non-adaptive {non_adaptive:.2f}"
    assert last < oracle


@pytest.mark.parametrize("separately", [False, True])
def test_the_joint_update_clips_policy_and_value_gradients_apart_when_asked(separately: bool) -> None:
    """One summed loss under one clip scales the policy's step by max_grad_norm / ‖g_policy + g_value‖: with
    returns of tens (bandits of 100 pulls) the gradient norm runs at 14–40 against a clip of 0.5, and the
    policy barely moves. ``clip_value_separately`` clips each on its own (tests/test_ppo.py has the step)."""
    from harness.run.rollout import Sampler
    from harness.tasks import family_class

    family = family_class("point_nav")(family_class("point_nav").Params())
    sampler = Sampler(family, np.random.default_rng(0))
    env = MetaEnvInfo(sampler.observation_space, sampler.action_space, 2, family.max_episode_steps)
    config = Config(**{**SMALL, "value_update": "joint", "max_grad_norm": 0.5, "minibatch_size": 16, "epochs": 1,
                       "clip_value_separately": separately})  # fmt: skip
    logs = TrMRL(env, config, seed=0).train_iteration(sampler, [_task(family, i) for i in range(4)])
    assert ({"grad_norm_policy", "grad_norm_value"} <= set(logs)) == separately
