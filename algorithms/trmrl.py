"""TrMRL (Melo, ICML 2022, "Transformers are Meta-Reinforcement Learners") with PPO.

The released implementation (a garage fork, DESIGN.md §9), layer by layer:

* each step's *working memory* is the augmented observation ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]``,
  embedded by one bias-free linear layer into ``d_model``, plus fixed sinusoidal positions;
* a causal window of the last ``working_memory`` steps, reset at every episode start;
* encoder blocks **without LayerNorm**: ``x + MHA(x)``, then ``x + FF(x)``, ReLU, dropout 0, with
  T-Fixup-style initialisation (``trmrl_net.tfixup_scales``);
* a Gaussian policy head MLP(64, 64, tanh) on the last block's output at the current position, with a
  learnable state-independent log-std; a value MLP(64, 64, tanh) on the current augmented observation
  (separate) or on the transformer output (shared);
* PPO with the clipped objective only (no entropy bonus) and un-centred GAE advantages across the
  episodes of a trial; the policy's minibatch epochs, then the value's, each with its own AdamW on its
  own loss (with a shared value the value optimiser holds the transformer too); the value fitted to
  the trial's discounted Monte-Carlo return with a Gaussian likelihood (learned std); the released
  step-wise learning-rate decay (``lr_factor``);
* the first token of every episode is ``[o, 0, 0, 0]`` (the release's ``RL2Env.reset``).

Each of these is the paper presets' setting; ``Config`` keeps the alternatives (joint update,
standardised advantages, λ-returns with MSE, trial-spanning memory) as options, which the ``cheap``
preset uses.

The transformer and the two attention modes (``window``, the paper's, and a KV-cached ``sliding``
window) are in ``algorithms.trmrl_net``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, check_choices
from algorithms.common import build_seeded, learner_state, load_learner_state, tensor_on, torch_seeds
from algorithms.heads import StepInputs, sample_action
from algorithms.ppo import (
    clipped_surrogate,
    combine_terms,
    entropy_bonus,
    gae,
    masked_mean,
    normalise_advantages,
    ppo_update,
    trial_cuts,
)
from algorithms.trmrl_net import SlidingCache, StepMemory, TrMRLNet, WindowMemory


@dataclass(frozen=True)
class Config:
    """TrMRL hyperparameters; defaults are the paper's HalfCheetahVel settings (DESIGN.md §9)."""

    layers: int = field(default=4, metadata={"doc": "encoder blocks N"})
    heads: int = field(default=16, metadata={"doc": "attention heads"})
    d_model: int = field(default=128, metadata={"doc": "token width"})
    ff_size: int = field(default=512, metadata={"doc": "feed-forward hidden units"})
    working_memory: int = field(default=5, metadata={"doc": "attention window, in steps"})
    memory_span: Literal["episode", "trial"] = field(
        default="episode",
        metadata={"doc": "where the window restarts: 'episode' (paper) or 'trial' (memory spans the trial's episodes)"},
    )
    attention: Literal["window", "sliding"] = field(
        default="window",
        metadata={"doc": "'window' (paper: window re-read each step) or 'sliding' (KV-cached sliding window)"},
    )
    pre_ln: bool = field(default=False, metadata={"doc": "add pre-LayerNorm blocks (the paper has no LayerNorm)"})
    scale_embedding: bool = field(
        default=False, metadata={"doc": "multiply token embeddings by sqrt(d_model) before adding the positions "
                                        "(Vaswani et al. 2017, 3.4; the release comments it out, so at T-Fixup's "
                                        "initial scale the positions outweigh the tokens)", "added": True}
    )
    policy_input: Literal["latest_memory", "mixed_memory", "full_memory"] = field(
        default="latest_memory",
        metadata={"doc": "policy head input: 'latest_memory' (paper), 'mixed_memory' (+ current embedding), "
                         "'full_memory' (all window outputs; window attention only)"},
    )
    shared_value: bool = field(
        default=False, metadata={"doc": "value MLP on the transformer output (True) or on the current token (False)"}
    )
    init_std: float = field(default=0.2, metadata={"doc": "initial std of Gaussian actions"})
    output_gain: float = field(default=1.0, metadata={"doc": "Xavier gain of the policy head's output layer"})
    policy_lr: float = field(default=3e-5, metadata={"doc": "AdamW learning rate of the policy"})
    value_lr: float = field(default=2.5e-4, metadata={"doc": "AdamW learning rate of the value function"})
    lr_decay_start: int | None = field(
        default=None, metadata={"doc": "epoch (iteration) of the released step decay's first lr step (None: "
                                       "constant lr); epochs are counted in optimiser steps as released (lr_factor)"}
    )
    lr_decay_end: int | None = field(
        default=None, metadata={"doc": "epoch from which the lr stays at min_lr_factor (its last step is at end - 1)"}
    )
    min_lr_factor: float = field(default=0.1, metadata={"doc": "final lr as a fraction of the initial lr"})
    lr_decay_optimisers: Literal["policy", "policy_and_value"] = field(
        default="policy_and_value",
        metadata={"doc": "which optimisers the decay applies to (README launch commands: HalfCheetahVel 'policy', "
                         "HalfCheetahDir and AntDir 'policy_and_value')"},
    )
    discount: float = field(default=0.9, metadata={"doc": "γ over the whole trial"})
    gae_lambda: float = field(default=0.8, metadata={"doc": "GAE λ (across the episodes of a trial)"})
    clip: float = field(default=0.1, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=10, metadata={"doc": "passes over each batch per iteration (policy's, value's)"})
    minibatch_size: int = field(
        default=256, metadata={"doc": "samples (env steps) per minibatch; sliding attention rounds to whole trials"}
    )
    entropy_coef: float = field(default=0.0, metadata={"doc": "entropy bonus (the paper: none)"})
    max_grad_norm: float | None = field(default=None, metadata={"doc": "global gradient clipping (None: none)"})
    clip_value_separately: bool = field(
        default=False, metadata={"doc": "with value_update 'joint': clip the value loss's gradient and the policy "
                                        "loss's each on its own, so that a large value gradient (returns of tens or "
                                        "hundreds) cannot shrink the policy's step (False: one clip over the summed "
                                        "loss, as before)",
                                 "added": True}
    )
    normalise_advantages: bool = field(
        default=False, metadata={"doc": "standardise advantages per minibatch (the release: no, --center_adv unset)"}
    )
    value_update: Literal["separate_epochs", "joint"] = field(
        default="separate_epochs",
        metadata={"doc": "'separate_epochs' (release): the policy's epochs on the policy loss, then the value's "
                         "epochs on the value loss, each AdamW on its own loss (a shared value's optimiser holds "
                         "the transformer too); 'joint': one summed loss per minibatch, both optimisers stepped"},
    )
    value_target: Literal["monte_carlo", "lambda_return"] = field(
        default="monte_carlo",
        metadata={"doc": "the value's regression target: the discounted return to the end of the trial (release) "
                         "or the GAE λ-return"},
    )
    value_loss: Literal["gaussian_nll", "mse"] = field(
        default="gaussian_nll",
        metadata={"doc": "'gaussian_nll' (release): -log N(target; value, σ) with a learned σ (initially 1); "
                         "'mse': 0.5 (value - target)²"},
    )

    def __post_init__(self) -> None:
        for name in ("layers", "heads", "d_model", "ff_size", "working_memory", "epochs", "minibatch_size"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.d_model % self.heads == 0, "heads", f"must divide d_model ({self.d_model})")
        check_choices(self)
        check(self.policy_input != "full_memory" or self.attention == "window", "policy_input",
              "full_memory needs attention: window")
        for name in ("init_std", "output_gain", "policy_lr", "value_lr", "clip"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        check(0 < self.min_lr_factor <= 1, "min_lr_factor", "must be in (0, 1]")
        check((self.lr_decay_start is None) == (self.lr_decay_end is None), "lr_decay_end",
              "set both lr_decay_start and lr_decay_end, or neither")
        if self.lr_decay_start is not None and self.lr_decay_end is not None:
            check(0 <= self.lr_decay_start < self.lr_decay_end, "lr_decay_end", "must be > lr_decay_start >= 0")
        check(self.entropy_coef >= 0, "entropy_coef", "must be >= 0")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")


class TrMRLPolicy:
    """Step-wise policy over the learner's network; one batched forward per step for all tasks.

    It runs on the network's device: the step's inputs are built on the CPU in one reused buffer
    (``StepInputs``) and copied over once, the action head's output comes back once, and actions are
    drawn on the CPU from ``generator`` (a CPU generator), so a seed gives the same noise on every
    device. Acting reads the network and changes nothing of the learner; ``deterministic`` acts with the
    mean (the release's evaluation) and draws nothing.

    ``memory``: what it steps (``None``: the attention mode's own, ``WindowMemory`` or ``SlidingCache``);
    tests and benchmarks give it a reference to compare with (``benchmarks.baselines.UncachedSliding``).
    """

    def __init__(self, net: TrMRLNet, generator: torch.Generator, memory: StepMemory | None = None) -> None:
        self.net = net
        self.generator = generator
        self.device = net.device
        cfg = net.config
        if memory is None:
            memory = WindowMemory(net) if cfg.attention == "window" else SlidingCache(net)
        self.memory = memory
        self._span_per_episode = cfg.memory_span == "episode"
        self.inputs = StepInputs(net.action_dim, net.discrete)
        self.noise = torch.empty(0)

    def reset(self, new_trial: np.ndarray) -> None:
        self.memory.reset(torch.as_tensor(new_trial, dtype=torch.bool))

    @torch.inference_mode()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        token = self.inputs(obs, prev_action, prev_reward, episode_start)
        if self._span_per_episode and episode_start.any():
            starts = torch.from_numpy(episode_start)
            self.memory.reset(starts)
            token = self.net.forget_previous_episode(token, starts)
        token = token.to(self.device)
        out = self.net.policy_head(self.memory.step(token)).cpu()
        if self.noise.shape != out.shape:
            self.noise = torch.empty(out.shape)
        return sample_action(out, self.net.log_std.cpu(), self.net.discrete, deterministic, self.generator,
                             self.noise).numpy()


# --- training ------------------------------------------------------------------------------------


def span_positions(episode_start: np.ndarray, per_episode: bool) -> tuple[Tensor, Tensor]:
    """``(position, span)`` ``[N, T]`` of every step: steps since its memory span began, and a span id.

    A span is the whole trial, or each episode when ``per_episode``.
    """
    steps = episode_start.shape[1]
    if per_episode:
        span = np.cumsum(episode_start, axis=1)
        first = np.where(episode_start, np.arange(steps), 0)
        first = np.maximum.accumulate(first, axis=1)
        position = np.arange(steps) - first
    else:
        span = np.zeros_like(episode_start, dtype=np.int64)
        position = np.broadcast_to(np.arange(steps), episode_start.shape)
    return torch.as_tensor(np.ascontiguousarray(position), dtype=torch.int64), torch.as_tensor(span, dtype=torch.int64)


def gather_windows(tokens: Tensor, position: Tensor, rows: Tensor, steps: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """The paper's left-aligned window of each selected step.

    Args:
        tokens: ``[N, T, token_dim]``; position: ``[N, T]`` steps since the span start.
        rows, steps: ``[M]`` int64, the selected samples.

    Returns:
        ``(windows [M, W, token_dim], count [M])``.
    """
    slots = torch.arange(window, device=tokens.device).unsqueeze(0)
    count = (position[rows, steps] + 1).clamp_max(window)
    index = (steps - count + 1).unsqueeze(1) + slots  # [M, W]
    filled = slots < count.unsqueeze(1)
    windows = tokens[rows.unsqueeze(1), index.clamp(0, tokens.shape[1] - 1)] * filled.unsqueeze(-1)
    return windows, count


def lr_factor(config: Config, optimiser_step: int, steps_per_epoch: int) -> float:
    """The lr of optimiser step ``optimiser_step`` (counted from 0 over the run) as a fraction of the initial lr.

    The released ``LRDecayOptimizerWrapper`` is a ``MultiStepLR`` stepped with the count of optimiser
    steps, with a milestone every ``steps_per_epoch`` steps from epoch ``lr_decay_start`` up to (not
    including) ``lr_decay_end``, each multiplying the lr by ``γ = min_lr_factor^(1 / (end - start))``:
    step ``k`` runs at ``γ^clamp(⌊k / steps_per_epoch⌋ - start + 1, 0, end - start)``. So the first
    decay applies during epoch ``start`` and the last from epoch ``end - 1`` on. ``steps_per_epoch`` is
    the launch script's ``epochs * (tasks * episodes * max_steps) // minibatch_size`` (312 on
    MuJoCo), while an iteration takes ``epochs * ceil(env_steps / minibatch_size)`` steps (320 without
    terminations): epochs in this schedule run slightly ahead of iterations, and behind them when
    episodes terminate early (AntDir), as in the release.
    """
    start, end = config.lr_decay_start, config.lr_decay_end
    if start is None or end is None:
        return 1.0
    gamma = config.min_lr_factor ** (1 / (end - start))
    return float(gamma ** min(max(optimiser_step // steps_per_epoch - start + 1, 0), end - start))


def steps_per_epoch(config: Config, num_tasks: int, episodes_per_trial: int, max_episode_steps: int) -> int:
    """The launch scripts' ``steps_per_epoch``: ``epochs * (tasks * episodes * max_steps) // minibatch_size``
    (10 * 8000 // 256 = 312 on MuJoCo), the optimiser steps the lr schedule counts as one epoch."""
    return max(1, config.epochs * num_tasks * episodes_per_trial * max_episode_steps // config.minibatch_size)


class ScheduledAdamW:
    """An AdamW optimiser whose lr follows ``lr_factor``, set at every ``zero_grad`` as the released wrapper does.

    ``zero_grad`` leaves zero gradients, not ``None`` (the release's torch 1.7 default): AdamW's weight
    decay then also acts on the parameters a loss does not reach, e.g. the policy head in a shared
    value's epochs, as in the release.
    """

    def __init__(self, parameters: list[nn.Parameter], lr: float, decays: bool, config: Config) -> None:
        self.optimiser = torch.optim.AdamW(parameters, lr=lr)
        self.lr, self.decays, self.config = lr, decays, config
        self.steps = 0  # optimiser steps so far: the released wrapper's ``_epoch``
        self.steps_per_epoch = 1  # set by the learner from its batch size

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimiser.param_groups

    @property
    def parameters(self) -> list[nn.Parameter]:
        return list(self.optimiser.param_groups[0]["params"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        del set_to_none  # always zeros, see the class docstring
        factor = lr_factor(self.config, self.steps, self.steps_per_epoch) if self.decays else 1.0
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr * factor
        self.optimiser.zero_grad(set_to_none=False)

    def step(self) -> None:
        self.optimiser.step()
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": devices.cpu_state(self.optimiser.state_dict()), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimiser.load_state_dict(state["adamw"])  # moves the state to its parameters' device
        self.steps = int(state["steps"])


class _Optimisers:
    """Both optimisers stepped together by ``ppo_update`` (``value_update: joint``)."""

    def __init__(self, policy: ScheduledAdamW, value: ScheduledAdamW) -> None:
        self.policy, self.value = policy, value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.policy.zero_grad(set_to_none)
        self.value.zero_grad(set_to_none)

    def step(self) -> None:
        self.policy.step()
        self.value.step()


# --- losses --------------------------------------------------------------------------------------


def discounted_returns(rewards: Tensor, cut: Tensor, gamma: float) -> Tensor:
    """``[N, T]`` discounted return of every step to its trial's end (garage's ``discount_cumsum`` per trial);
    ``cut`` as for ``gae``, which with zero values and λ = 1 computes exactly this sum."""
    return gae(rewards, torch.zeros_like(rewards), cut, gamma, 1.0)[0]


def value_terms(values: Tensor, targets: Tensor, mask: Tensor, log_std: Tensor | None) -> dict[str, Tensor]:
    """The value loss as named terms: with ``log_std`` (``[1]``), the release's Gaussian negative
    log-likelihood (``GaussianMLPValueFunction.compute_loss``: ``-log N(target; value, exp(log_std))``),
    else ``0.5 (value - target)²``. ``values``, ``targets`` and ``mask`` share a shape."""
    if log_std is None:
        return {"loss_value": 0.5 * masked_mean((values - targets) ** 2, mask)}
    nll = 0.5 * ((targets - values) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
    return {"loss_value": masked_mean(nll, mask), "value_std": log_std.detach().exp().squeeze()}


_LOCOMOTION: dict[str, Any] = {"layers": 4, "heads": 16, "d_model": 128, "ff_size": 512, "working_memory": 5,
                               "epochs": 10, "minibatch_size": 256}

#: DESIGN.md §9 and the release's README launch commands (the lr decay flags: --decay_epoch_init,
#: --decay_epoch_end, --min_lr_factor, --policy_lr_schedule / --vf_lr_schedule). The other fields keep
#: their defaults, which are the release's: un-centred advantages, Monte-Carlo value targets with a
#: Gaussian likelihood, separate policy and value epochs, episode memory.
PRESETS: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.1, "policy_lr": 3e-5,
                        "value_lr": 2.5e-4, "init_std": 0.2, "output_gain": 1.0, "shared_value": False,
                        "lr_decay_start": 100, "lr_decay_end": 750, "min_lr_factor": 0.1,
                        "lr_decay_optimisers": "policy"},
    "halfcheetah_dir": {**_LOCOMOTION, "discount": 0.9, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                        "value_lr": 3e-5, "init_std": 0.5, "output_gain": 1.0, "shared_value": True,
                        "lr_decay_start": 100, "lr_decay_end": 3700, "min_lr_factor": 1e-4,
                        "lr_decay_optimisers": "policy_and_value"},
    "ant_dir": {**_LOCOMOTION, "discount": 0.92, "gae_lambda": 0.8, "clip": 0.2, "policy_lr": 3e-5,
                "value_lr": 3e-5, "init_std": 0.5, "output_gain": 0.01, "shared_value": True,
                "lr_decay_start": 500, "lr_decay_end": 3500, "min_lr_factor": 1e-4,
                "lr_decay_optimisers": "policy_and_value"},
    # --policy_lr_schedule=no_schedule --vf_lr_schedule=no_schedule: constant lrs.
    "metaworld": {"layers": 4, "heads": 4, "d_model": 32, "ff_size": 128, "working_memory": 5, "discount": 0.9,
                  "gae_lambda": 0.95, "clip": 0.2, "policy_lr": 5e-5, "value_lr": 5e-5, "minibatch_size": 32,
                  "epochs": 10, "init_std": 1.0, "output_gain": 0.01, "shared_value": False},
    # Not from the paper: a small transformer whose memory spans the trial, for the cheap families
    # (bandit, point_nav, tabular_mdp). Set working_memory to at least the trial length in the suite.
    # It keeps the harness's earlier PPO (one summed loss, standardised advantages, λ-returns with MSE),
    # with which it beats Thompson sampling on bandits (tests/test_trmrl.py), but clips the policy's and
    # the value's gradients apart (under one clip at 0.5 a value gradient of 14-40 stalled it on bandits
    # of 100 pulls) and scales its token embeddings by sqrt(d_model) (README, "The RL² paper's tables").
    "cheap": {"layers": 2, "heads": 4, "d_model": 64, "ff_size": 128, "working_memory": 64, "memory_span": "trial",
              "attention": "sliding", "policy_lr": 3e-4, "value_lr": 1e-3, "discount": 0.9, "gae_lambda": 0.8,
              "clip": 0.2, "epochs": 4, "minibatch_size": 1000, "init_std": 0.5, "max_grad_norm": 0.5,
              "clip_value_separately": True, "scale_embedding": True,
              "normalise_advantages": True, "value_update": "joint", "value_target": "lambda_return",
              "value_loss": "mse"},
}
PRESETS["paper"] = PRESETS["halfcheetah_vel"]


class TrMRL:
    """TrMRL trained with PPO; see the module docstring."""

    name = "trmrl"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    exploration_episodes: int | None = None
    samples_own_tasks = False
    #: Transformers at least this wide act on the training device, narrower ones on the CPU (``acts_on``).
    DEVICE_ACTING_WIDTH: ClassVar[int] = 64

    @classmethod
    def acts_on(cls, config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): a transformer pass over every task's window per env
        step. On an H200 the paper's locomotion width (128) sampled 1.8× faster acting on the GPU, and
        the Meta-World width (32) 1.1× faster on the CPU, where launch latency outweighs its small
        products (README, "Throughput and GPUs"); the threshold lies between the two."""
        return "device" if config.d_model >= cls.DEVICE_ACTING_WIDTH else "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        seeds = torch_seeds(seed)
        self.net = build_seeded(next(seeds), lambda: TrMRLNet(obs_dim, env.action_space, config)).to(self.device)
        # Acting runs on this device too at the paper's width (acts_on): its step re-reads 20 windows × 5
        # tokens through 4 blocks of width 128 (~80 M multiply-adds), compute that a GPU does in a fraction
        # of the ~4 ms one CPU core needs, for one host-device round trip per env step.
        self.acting_device = devices.acting_device(self.device, self.acts_on(config))
        self.acting_net = devices.acting_copy(self.net, self.device, self.acting_device)
        value_parameters = self.net.value_parameters()
        if config.shared_value and config.value_update == "separate_epochs":
            # The release's GaussianMLPValueFunction holds the policy as a submodule: its optimiser
            # steps the embedding and blocks on the value loss (and weight-decays the policy head).
            value_parameters += self.net.policy_parameters()
        self.optimisers = _Optimisers(
            ScheduledAdamW(self.net.policy_parameters(), config.policy_lr, True, config),
            ScheduledAdamW(value_parameters, config.value_lr, config.lr_decay_optimisers == "policy_and_value",
                           config),
        )
        self.generator = torch.Generator().manual_seed(next(seeds))
        self.iterations = 0

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """A policy drawing its action noise from ``generator`` (None: the training generator)."""
        return TrMRLPolicy(self.acting_net, self.generator if generator is None else generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the attention memory

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        cfg, tensor = self.config, tensor_on(self.device)
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)
        tokens = self.net.tokens(tensor(batch.obs), tensor(batch.previous(batch.actions)),
                                 tensor(batch.previous(batch.rewards)), tensor(batch.episode_start))
        actions = tensor(batch.actions)
        position, span = (x.to(self.device) for x in span_positions(batch.episode_start, cfg.memory_span == "episode"))
        net = self.net
        if cfg.attention == "window":  # every sample with its own window
            rows, steps = (tensor(a) for a in np.nonzero(batch.valid))
            count, num_minibatches = len(rows), math.ceil(len(rows) / cfg.minibatch_size)

            def select(part: Tensor) -> tuple[Any, Tensor, Tensor]:
                r, s = rows[part], steps[part]
                return (lambda: net.window_forward(*gather_windows(tokens, position, r, s, cfg.working_memory))[0],
                        tokens[r, s], actions[r, s])

            forward = self._forward(select, lambda index: torch.ones(len(index), device=self.device), 8192)
        else:  # whole trials with the banded mask
            count = batch.num_tasks
            num_minibatches = min(count, math.ceil(batch.env_steps / cfg.minibatch_size))
            valid = tensor(batch.valid)

            def select(part: Tensor) -> tuple[Any, Tensor, Tensor]:
                return (lambda: net.sliding_forward(tokens[part], position[part], span[part])[0], tokens[part],
                        actions[part])

            forward = self._forward(select, lambda index: valid[index].float(), 16)

        with torch.no_grad():
            old = forward(torch.arange(count, device=self.device), chunked=True)
            old_log_prob = old["log_prob"]
            # GAE over the whole trial: values per step in [N, T] layout.
            values = torch.zeros(batch.rewards.shape, device=self.device)
            if cfg.attention == "window":
                values[rows, steps] = old["value"]
            else:
                values = old["value"]
            rewards, cut = tensor(batch.rewards), tensor(trial_cuts(batch.valid))
            advantages, returns = gae(rewards, values, cut, cfg.discount, cfg.gae_lambda)
            if cfg.value_target == "monte_carlo":
                returns = discounted_returns(rewards, cut, cfg.discount)
            if cfg.attention == "window":
                advantages, returns = advantages[rows, steps], returns[rows, steps]

        value_log_std = self.net.value_log_std if cfg.value_loss == "gaussian_nll" else None

        def policy_terms(index: Tensor, value: bool) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            out = forward(index, chunked=False, value=value)
            mask = out["mask"]
            adv = normalise_advantages(advantages[index], mask) if cfg.normalise_advantages else advantages[index]
            surrogate = clipped_surrogate(out["log_prob"], old_log_prob[index], adv, mask, cfg.clip)
            entropy = entropy_bonus(out["entropy"], mask, cfg.entropy_coef)
            if not value:  # the value's own epochs fit it
                return combine_terms(surrogate, entropy)
            # One summed loss (value_update: joint). The value term is built last, as before the loss was split
            # into terms, so that the backward pass runs in the same order and gives the same bits.
            return combine_terms(surrogate, value_terms(out["value"], returns[index], mask, value_log_std), entropy)

        def value_loss(index: Tensor) -> dict[str, Tensor]:
            out = forward(index.to(self.device), chunked=False, policy=False)
            return value_terms(out["value"], returns[index.to(self.device)], out["mask"], value_log_std)

        policy_optimiser, value_optimiser = self.optimisers.policy, self.optimisers.value
        policy_optimiser.steps_per_epoch = value_optimiser.steps_per_epoch = steps_per_epoch(
            cfg, len(tasks), self.env.episodes_per_trial, self.env.max_episode_steps)
        max_grad_norm = cfg.max_grad_norm or math.inf
        if cfg.value_update == "joint":
            logs = ppo_update(lambda index: policy_terms(index, value=True), count, self.optimisers,  # type: ignore[arg-type]
                              list(self.net.parameters()), cfg.epochs, num_minibatches, max_grad_norm, self.generator,
                              clip_value_separately=cfg.clip_value_separately)
        else:
            # The release's VPG._train: all policy minibatch epochs, then all value epochs.
            logs = ppo_update(lambda index: policy_terms(index, value=False), count, policy_optimiser,  # type: ignore[arg-type]
                              self.net.policy_parameters(), cfg.epochs, num_minibatches, max_grad_norm, self.generator)
            value_logs = ppo_update(value_loss, count, value_optimiser, value_optimiser.parameters,  # type: ignore[arg-type]
                                    cfg.epochs, num_minibatches, max_grad_norm, self.generator)
            logs.update(loss_value=value_logs["loss_value"], value_grad_norm=value_logs["grad_norm"])
            if "value_std" in value_logs:
                logs["value_std"] = value_logs["value_std"]
        self.iterations += 1
        devices.refresh(self.acting_net, self.net)
        logs["train_return"] = float(batch.episode_returns.mean())
        logs["policy_lr"] = policy_optimiser.param_groups[0]["lr"]
        logs["value_lr"] = value_optimiser.param_groups[0]["lr"]
        return logs

    def _forward(self, select: Any, mask: Any, chunk: int) -> Any:
        """``forward(index, chunked, policy, value)``: ``log_prob`` and ``entropy`` (if ``policy``), ``value`` (if
        ``value``) and ``mask`` of the samples ``index``; ``select(part)`` gives a part's features (a thunk: a
        separate value needs no transformer pass), tokens and actions, ``mask(index)`` the valid steps."""
        net = self.net

        def forward(index: Tensor, chunked: bool, policy: bool = True, value: bool = True) -> dict[str, Tensor]:
            outputs: dict[str, list[Tensor]] = {}
            for part in torch.split(index, chunk if chunked else len(index)):
                features_of, tokens, actions = select(part)
                features = features_of() if policy or self.config.shared_value else None
                if policy:
                    dist = net.distribution(features)
                    outputs.setdefault("log_prob", []).append(net.log_prob(dist, actions))
                    outputs.setdefault("entropy", []).append(net.entropy(dist))
                if value:
                    outputs.setdefault("value", []).append(net.value(tokens, features))
            return {**{key: torch.cat(parts) for key, parts in outputs.items()}, "mask": mask(index)}

        return forward

    def state_dict(self) -> dict[str, Any]:
        return learner_state(self.config, self.net, self.generator, self.iterations,
                             policy_optimiser=self.optimisers.policy, value_optimiser=self.optimisers.value)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iterations = load_learner_state(state, self.net, self.acting_net, self.generator,
                                             policy_optimiser=self.optimisers.policy,
                                             value_optimiser=self.optimisers.value)

