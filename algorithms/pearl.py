"""PEARL (Rakelly et al. 2019, "Efficient Off-Policy Meta-Reinforcement Learning via Probabilistic Context
Variables"), following the authors' code (oyster, github.com/katerakelly/oyster).

* **Inference.** A context encoder maps each transition ``c_n = (s, a, r[, s'])`` of a task to a Gaussian
  factor ``N(μ_n, σ_n²)`` (``σ²`` through a softplus); the posterior over the latent task variable is their
  product, ``q(z|c) ∝ Π_n N(μ_n, σ_n²)``, with a KL term ``kl_lambda · KL(q(z|c) ‖ N(0, I))``.
* **SAC, oyster's structure.** Twin Q networks ``Q_i(s, a, z)``, a state value network ``V(s, z)`` with a soft
  target copy (no target Qs), and a tanh-squashed Gaussian actor ``π(a | s, z)``. The temperature is either
  fixed (``alpha``; oyster: 1, with ``reward_scale`` setting the trade-off) or tuned to a target entropy.
  The Q loss and the KL term train the encoder; the actor and V see ``z`` detached (oyster).
* **Data.** Per task, an RL replay buffer with everything collected on the task, and an encoder buffer
  with only the data collected with ``z`` from the prior or the posterior (not the "extra RL" posterior
  data), cleared before each collection on the task as in oyster, so the context is recent.
* **Collection, through the harness sampler** (which counts env steps), as oyster's ``train()``: every
  task the learner is given is collected on ``initial_env_steps`` with ``z`` from the prior the first
  time it is seen (oyster: every training task at iteration 0: with ``sample_own_tasks`` the learner asks the
  harness for the whole training split every iteration); then per iteration on ``collect_tasks``
  tasks drawn from those given (with replacement, as oyster's ``np.random.randint``; a task drawn twice is
  collected twice, one after the other) ``prior_env_steps`` (prior ``z``), ``posterior_env_steps`` and
  ``extra_rl_env_steps`` (RL buffer only), each rounded up to whole episodes. Like oyster's
  ``collect_data``, which clears ``z`` first, the posterior and extra-RL collections draw the first
  episode's ``z`` from the prior and later ones from the posterior of a fresh encoder-buffer context.
  Gradient steps draw their meta-batches from every task with data.
* **Acting, as oyster's evaluation** (``collect_paths``): the exploration policy draws ``z`` from the prior
  at every episode start (oyster infers the posterior only once ``num_exp_traj_eval`` exploration episodes
  are done); ``adapt`` infers the posterior from all the exploration episodes and returns a policy that
  samples from it, redrawing at every later episode start from the posterior of everything gathered so
  far. As in oyster, ``z`` is sampled even when actions are deterministic. Evaluation policies draw all
  their noise from the generator the harness gives (issue 18).

Transitions from a ``TrialBatch``: ``s'`` is the next step's observation within an episode. The
sampler does not keep the observation after an episode's last step, so a terminal last step is stored
with ``done = 1`` (no bootstrap; its ``s'`` is a placeholder) and a time-limit last step is left out of
the RL buffer (there is no ``s'`` to bootstrap from) but kept as context when the context does not use
``s'``. Actions are stored scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, check_choices
from algorithms.common import build_seeded, config_state
from algorithms.pearl_nets import (
    ContextEncoder,
    PEARLNets,
    TanhGaussianActor,
    batched_mlp,
    min_of_frozen_twins,
    stacked_layers,
)
from algorithms.pearl_replay import TaskReplay, trial_transitions

#: Where a policy draws ``z`` from (``PEARLPolicy``).
ZSource = Literal["prior", "trial", "buffer"]
MIN_FACTOR_VARIANCE = 1e-7  # oyster's clamp in _product_of_gaussians
INITIAL_CHUNK = 50  # tasks per sampler call for the initial data: bounds the environments and the batch's memory


@dataclass(frozen=True)
class Config:
    """PEARL hyperparameters; defaults are oyster's ``configs/default.py`` (see ``presets`` for the rest)."""

    latent_size: int = field(default=5, metadata={"doc": "dimension of the latent task variable z"})
    hidden_size: int = field(default=300, metadata={"doc": "units per hidden layer of the actor, Q and V networks"})
    hidden_layers: int = field(default=3, metadata={"doc": "hidden layers of the actor, Q and V networks"})
    encoder_hidden_size: int = field(default=200, metadata={"doc": "units per hidden layer of the context encoder"})
    encoder_hidden_layers: int = field(default=3, metadata={"doc": "hidden layers of the context encoder"})
    reward_scale: float = field(default=5.0, metadata={"doc": "factor on rewards in the Bellman target"})
    kl_lambda: float = field(default=0.1, metadata={"doc": "weight of KL(q(z|c) ‖ N(0, I)), summed over tasks"})
    discount: float = field(default=0.99, metadata={"doc": "γ per env step"})
    target_tau: float = field(default=0.005, metadata={"doc": "soft target-V update rate per gradient step"})
    policy_lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate of the actor"})
    q_lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate of the twin Q networks"})
    v_lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate of the V network"})
    encoder_lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate of the context encoder"})
    auto_entropy: bool = field(
        default=False, metadata={"doc": "tune the temperature to target_entropy (False: fixed alpha, as oyster)"}
    )
    alpha: float = field(default=1.0, metadata={"doc": "entropy temperature; the initial value when auto_entropy"})
    alpha_lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate of log alpha (auto_entropy)"})
    target_entropy: float | None = field(
        default=None, metadata={"doc": "target policy entropy in nats (None: -action_dim)"}
    )
    policy_mean_reg: float = field(default=1e-3, metadata={"doc": "weight of the actor's mean² penalty (oyster)"})
    policy_std_reg: float = field(default=1e-3, metadata={"doc": "weight of the actor's log_std² penalty (oyster)"})
    meta_batch_tasks: int = field(default=16, metadata={"doc": "tasks per gradient step (drawn with replacement)"})
    batch_transitions: int = field(default=256, metadata={"doc": "RL transitions per task per gradient step"})
    context_transitions: int = field(default=64, metadata={"doc": "context transitions per task per gradient step"})
    gradient_steps: int = field(default=2000, metadata={"doc": "gradient steps per iteration"})
    collect_tasks: int = field(
        default=5, metadata={"doc": "tasks collected on per iteration, drawn from those given (num_tasks_sample)"}
    )
    collect_with_replacement: bool = field(
        default=True, metadata={"doc": "draw the collect_tasks with replacement (oyster) or without"}
    )
    sample_own_tasks: bool = field(
        default=True, metadata={"doc": "take every training task from the harness each iteration and draw the tasks "
                                       "to collect on from them, initial data on all at once (oyster); False: "
                                       "the harness's meta-batch, initial data on a task when it is first "
                                       "collected on"}
    )
    initial_env_steps: int = field(
        default=2000, metadata={"doc": "env steps with prior z on every task the first time it is given"}
    )
    prior_env_steps: int = field(default=400, metadata={"doc": "env steps per collected task with prior z"})
    posterior_env_steps: int = field(default=0, metadata={"doc": "env steps per collected task with posterior z"})
    extra_rl_env_steps: int = field(
        default=400, metadata={"doc": "env steps per collected task with posterior z, RL buffer only"}
    )
    posterior_context: Literal["buffer", "trial"] = field(
        default="buffer",
        metadata={"doc": "where training collection's posterior comes from, after a first episode with prior z: "
                         "'buffer' (oyster: a context batch of the task's encoder buffer, redrawn per episode) or "
                         "'trial' (the trial's own context so far)"},
    )
    clear_encoder_buffer: bool = field(
        default=True, metadata={"doc": "empty a task's encoder buffer before each collection on it (oyster)"}
    )
    use_next_obs_in_context: bool = field(default=False, metadata={"doc": "context transitions include s'"})
    replay_capacity_per_task: int = field(
        default=1_000_000, metadata={"doc": "transitions per task buffer; the oldest are overwritten (FIFO)"}
    )
    exploration_episodes: int = field(
        default=1, metadata={"doc": "evaluation: episodes collected before adapt (oyster: num_exp_traj_eval)"}
    )

    def __post_init__(self) -> None:
        for name in ("latent_size", "hidden_size", "hidden_layers", "encoder_hidden_size", "encoder_hidden_layers",
                     "meta_batch_tasks", "batch_transitions", "context_transitions", "collect_tasks",
                     "replay_capacity_per_task", "exploration_episodes"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("gradient_steps", "initial_env_steps", "prior_env_steps", "posterior_env_steps",
                     "extra_rl_env_steps"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("reward_scale", "policy_lr", "q_lr", "v_lr", "encoder_lr", "alpha", "alpha_lr"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("kl_lambda", "policy_mean_reg", "policy_std_reg"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(0 <= self.discount <= 1, "discount", "must be in [0, 1]")
        check(0 < self.target_tau <= 1, "target_tau", "must be in (0, 1]")
        check_choices(self)
        check(self.target_entropy is None or self.auto_entropy, "target_entropy", "needs auto_entropy: true")
        encoder_steps = self.prior_env_steps + self.posterior_env_steps
        check(not self.clear_encoder_buffer or encoder_steps > 0, "clear_encoder_buffer",
              "needs prior_env_steps or posterior_env_steps > 0 (the cleared encoder buffer would stay empty)")
        check(encoder_steps + self.initial_env_steps > 0, "prior_env_steps",
              "initial, prior and posterior env steps are all 0: the encoder buffers would stay empty")


# --- losses --------------------------------------------------------------------------------------


def product_of_gaussians(means: Tensor, variances: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Normalised product of the Gaussian factors along dim -2 (oyster's ``_product_of_gaussians``).

    Args:
        means, variances: ``[..., n, latent]`` factors (variances clamped at 1e-7).
        mask: ``[..., n]``, 0 where a factor is left out; at least one factor per row must remain.

    Returns:
        ``(mean, variance)``, each ``[..., latent]``: ``σ² = 1 / Σ 1/σ_n²``, ``μ = σ² Σ μ_n/σ_n²``.
    """
    precision = 1.0 / variances.clamp_min(MIN_FACTOR_VARIANCE)
    if mask is not None:
        precision = precision * mask.unsqueeze(-1)
    variance = 1.0 / precision.sum(-2)
    return variance * (means * precision).sum(-2), variance


def kl_to_unit_gaussian(mean: Tensor, variance: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` ``[...]`` of ``[..., latent]`` parameters: ½ Σ (σ² + μ² − 1 − log σ²)."""
    return 0.5 * (variance + mean.square() - 1.0 - variance.log()).sum(-1)


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """A reparameterised action ``tanh(μ + σ ε)`` and its log-density ``[...]`` with the tanh correction.

    ``log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u))``, the stable form of rlkit's ``log(1 − a² + 1e-6)``.
    """
    pre_tanh = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prob = log_prob - (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
    return torch.tanh(pre_tanh), log_prob


def pearl_loss(
    nets: PEARLNets,
    context: Tensor,
    obs: Tensor,
    actions: Tensor,
    rewards: Tensor,
    next_obs: Tensor,
    terminals: Tensor,
    config: Config,
    log_alpha: Tensor,
    target_entropy: float,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """PEARL's losses on one meta-batch (oyster's ``_take_step``) as named terms; sum the ``loss_*`` terms.

    Each term reaches only its own parameters, so one backward of the sum trains everything:
    ``loss_q`` the Q networks and the encoder, ``loss_kl`` the encoder, ``loss_v`` V, ``loss_policy`` the
    actor (Q parameters and ``z`` detached), ``loss_alpha`` log α. All terms use the parameters before the
    step (oyster steps the Qs before computing the V and policy targets). The networks run through
    ``batched_mlp``; tests/test_pearl_speed.py checks every term and gradient against the plain modules.

    Args:
        context: ``[tasks, C, context_dim]`` encoder-buffer transitions.
        obs, next_obs: ``[tasks, B, obs_dim]``; actions ``[tasks, B, act_dim]`` in [-1, 1];
            rewards, terminals: ``[tasks, B]``.
        log_alpha: scalar log-temperature (a parameter when ``config.auto_entropy``).

    Returns:
        ``loss_q``, ``loss_v``, ``loss_policy``, ``loss_kl`` (and ``loss_alpha``), plus detached diagnostics
        ``kl`` (per task), ``z_std``, ``alpha``, ``log_pi``, ``q``.
    """
    tasks, batch = obs.shape[:2]
    encoded = batched_mlp(stacked_layers([nets.encoder.net]), context.flatten(0, 1))[0]
    mean, variance = product_of_gaussians(*ContextEncoder.factors(encoded.view(*context.shape[:2], -1)))
    # Noise from the CPU generator (then moved): the same draws on every device.
    z = mean + variance.sqrt() * torch.randn(mean.shape, generator=generator).to(mean.device)  # [tasks, latent]
    z = z.unsqueeze(1).expand(tasks, batch, z.shape[-1])
    kl = kl_to_unit_gaussian(mean, variance)  # [tasks]

    # Critic: z keeps its graph, so the Bellman error trains the encoder (oyster).
    q1, q2 = batched_mlp(stacked_layers([nets.q1, nets.q2]), torch.cat([obs, actions, z], -1).flatten(0, 1))
    q1, q2 = q1.view(tasks, batch), q2.view(tasks, batch)
    with torch.no_grad():
        next_v = batched_mlp(stacked_layers([nets.target_v]), torch.cat([next_obs, z], -1).flatten(0, 1))
        q_target = config.reward_scale * rewards + (1.0 - terminals) * config.discount * next_v.view(tasks, batch)
    loss_q = F.mse_loss(q1, q_target) + F.mse_loss(q2, q_target)

    # Actor and V see z detached.
    z_detached = z.detach()
    state = torch.cat([obs, z_detached], -1).flatten(0, 1)
    actor_out = batched_mlp(stacked_layers([nets.actor.net]), state)[0].view(tasks, batch, -1)
    policy_mean, log_std = TanhGaussianActor.gaussian(actor_out)
    noise = torch.randn(policy_mean.shape, generator=generator).to(policy_mean.device)
    new_actions, log_pi = tanh_gaussian_sample(policy_mean, log_std, noise)
    min_q_new = min_of_frozen_twins(stacked_layers([nets.q1, nets.q2], detach=True),
                                    torch.cat([obs, new_actions, z_detached], -1).flatten(0, 1)).view(tasks, batch)
    alpha = log_alpha.detach().exp()
    v_pred = batched_mlp(stacked_layers([nets.v]), state).view(tasks, batch)
    loss_v = F.mse_loss(v_pred, (min_q_new - alpha * log_pi).detach())
    loss_policy = (alpha * log_pi - min_q_new).mean()
    loss_policy = loss_policy + config.policy_mean_reg * policy_mean.square().mean()
    loss_policy = loss_policy + config.policy_std_reg * log_std.square().mean()

    out = {"loss_q": loss_q, "loss_v": loss_v, "loss_policy": loss_policy, "loss_kl": config.kl_lambda * kl.sum(),
           "kl": kl.detach(), "z_std": variance.detach().sqrt().mean(), "alpha": alpha,
           "log_pi": log_pi.detach().mean(), "q": q1.detach().mean()}
    if config.auto_entropy:  # SAC v2 (Haarnoja et al. 2018b), on log α
        out["loss_alpha"] = -(log_alpha * (log_pi.detach() + target_entropy)).mean()
    return out


# --- policies ------------------------------------------------------------------------------------


class PEARLPolicy:
    """The actor for a batch of environments, each with its own ``z``, redrawn at every episode start.

    ``mode``: ``"prior"`` draws from ``N(0, I)``; ``"trial"`` from the posterior of ``initial`` (the
    exploration context after ``adapt``) plus the context gathered in this trial so far, or the prior
    while both are empty; ``"buffer"`` from the prior in a trial's first episode, then from
    ``posterior(rows)`` (training collection: oyster's ``collect_data`` clears ``z`` before it starts).
    The context is kept as summed natural parameters ``Σ 1/σ_n²`` and ``Σ μ_n/σ_n²`` per environment;
    new transitions are encoded in one batch when a posterior is needed.
    """

    def __init__(self, nets: PEARLNets, generator: torch.Generator, low: np.ndarray, high: np.ndarray,
                 use_next_obs: bool, mode: ZSource = "trial", initial: tuple[Tensor, Tensor] | None = None,
                 posterior: Callable[[np.ndarray], tuple[Tensor, Tensor]] | None = None) -> None:
        self.nets, self.generator, self.mode = nets, generator, mode
        self.device = next(nets.parameters()).device  # where it acts; z, context and noise stay on the CPU
        self.low, self.high, self.use_next_obs = low, high, use_next_obs
        self.initial, self.posterior = initial, posterior
        self.latent_size = nets.encoder.net[-1].out_features // 2
        self.z: Tensor | None = None
        self.noise, self.actor_input = torch.empty(0), torch.empty(0)  # reused every step

    def reset(self, new_trial: np.ndarray) -> None:
        num, latent = len(new_trial), self.latent_size
        if self.z is None or len(self.z) != num:
            self.z = torch.zeros(num, latent)
            self.precision, self.weighted = torch.zeros(num, latent), torch.zeros(num, latent)
            self.started = np.zeros(num, bool)
            self.last_obs: Tensor | None = None
            self.pending: list[tuple[Tensor, Tensor]] = []
        if np.all(new_trial):
            self.pending = []  # the previous trial's context is dropped everywhere
        self._flush()
        rows = torch.from_numpy(np.asarray(new_trial, bool))
        self.precision[rows] = 0.0 if self.initial is None else self.initial[0][rows]
        self.weighted[rows] = 0.0 if self.initial is None else self.initial[1][rows]
        self.started[np.asarray(new_trial, bool)] = False

    def _flush(self) -> None:
        """Encode the pending transitions into the summed natural parameters."""
        if not self.pending:
            return
        context, mask = (torch.stack(parts) for parts in zip(*self.pending, strict=True))  # [P, N, ...]
        mean, variance = self.nets.encode(context)
        precision = mask.unsqueeze(-1) / variance.clamp_min(MIN_FACTOR_VARIANCE)
        self.precision += precision.sum(0)
        self.weighted += (mean * precision).sum(0)
        self.pending = []

    def _draw_z(self, rows: np.ndarray, first_episode: np.ndarray) -> None:
        """Redraw ``z`` of ``rows``; ``first_episode`` (``[len(rows)]`` bool) marks rows starting a trial."""
        mean, variance = torch.zeros(len(rows), self.latent_size), torch.ones(len(rows), self.latent_size)
        if self.mode == "buffer" and self.posterior is not None:
            later = torch.from_numpy(~np.asarray(first_episode, bool))
            if later.any():
                mean[later], variance[later] = self.posterior(rows[later.numpy()])
        elif self.mode == "trial":
            self._flush()
            precision = self.precision[rows]
            seen = (precision > 0).all(-1)  # the prior until a row has context
            variance[seen] = 1.0 / precision[seen]
            mean[seen] = variance[seen] * self.weighted[rows][seen]
        self.z[rows] = mean + variance.sqrt() * torch.randn(mean.shape, generator=self.generator)  # type: ignore[index]

    @torch.inference_mode()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        if self.z is None:
            self.reset(np.ones(len(obs), bool))
        obs_t = torch.from_numpy(obs).float().flatten(1)
        start = np.asarray(episode_start, bool)
        if self.started.any() and self.mode == "trial":
            # The previous step's transition; s' is unknown where an episode just ended (obs is a reset).
            action = torch.from_numpy(2.0 * (prev_action - self.low) / (self.high - self.low) - 1.0).float()
            parts = [self.last_obs, action, torch.from_numpy(prev_reward).float().unsqueeze(-1)]
            usable = self.started & ~start if self.use_next_obs else self.started
            self.pending.append((torch.cat([*parts, obs_t] if self.use_next_obs else parts, -1),
                                 torch.from_numpy(usable).float()))
        draw = np.flatnonzero(start | ~self.started)
        if len(draw):
            self._draw_z(draw, ~self.started[draw])
        self.started[:] = True
        # A copy: ``obs`` is the sampler's array, overwritten in place with the next observations, so a
        # view would pair each action and reward with the observation after it.
        self.last_obs = obs_t.clone()
        if self.actor_input.shape != (len(obs_t), obs_t.shape[1] + self.latent_size):
            self.actor_input = torch.empty(len(obs_t), obs_t.shape[1] + self.latent_size)
            self.noise = torch.empty(len(obs_t), self.high.size)
        inputs = torch.cat([obs_t, self.z], -1, out=self.actor_input)  # type: ignore[list-item]
        mean, log_std = (out.cpu() for out in self.nets.actor(inputs.to(self.device)))
        noise = torch.zeros_like(mean) if deterministic else torch.randn(mean.shape, generator=self.generator,
                                                                         out=self.noise)
        unit = torch.tanh(mean + log_std.exp() * noise).numpy()
        return (self.low + (unit + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)


# --- the learner ---------------------------------------------------------------------------------

_LOCOMOTION: dict[str, Any] = {
    "latent_size": 5, "hidden_size": 300, "hidden_layers": 3, "encoder_hidden_size": 200, "encoder_hidden_layers": 3,
    "reward_scale": 5.0, "kl_lambda": 0.1, "meta_batch_tasks": 16, "gradient_steps": 2000, "initial_env_steps": 2000,
    "prior_env_steps": 400, "posterior_env_steps": 0, "extra_rl_env_steps": 600, "context_transitions": 100,
    "batch_transitions": 256, "policy_lr": 3e-4, "q_lr": 3e-4, "v_lr": 3e-4, "encoder_lr": 3e-4, "discount": 0.99,
    "target_tau": 0.005, "collect_tasks": 5,
}

#: Sources: oyster ``configs/default.py`` with ``configs/cheetah-vel.json``, ``cheetah-dir.json`` and
#: ``ant-dir.json`` (DESIGN.md §9), and garage's ``examples/torch/pearl_metaworld_ml1_push.py`` (ML1/ML10/
#: ML45 use the same values). oyster's evaluation (cheetah-vel/-dir and ant-dir.json: num_exp_traj_eval 2,
#: num_steps_per_eval 600 = 3 episodes of 200, eval_deterministic True by default) explores 2 episodes and
#: scores the 3rd, deterministically: a suite sets that as PEARL's evaluation (episodes_per_trial 3,
#: exploration_episodes 2, deterministic). The presets keep exploration_episodes 1, which fits any trial of
#: 2 or more episodes.
PRESETS: dict[str, dict[str, Any]] = {
    "halfcheetah_vel": dict(_LOCOMOTION),
    # cheetah-dir.json: meta-batch 4 (two tasks), 1000 + 1000 steps per collection, context 256.
    "halfcheetah_dir": {**_LOCOMOTION, "meta_batch_tasks": 4, "prior_env_steps": 1000, "extra_rl_env_steps": 1000,
                        "context_transitions": 256},
    # ant-dir.json: meta-batch 4, 4000 gradient steps per iteration, context 256.
    "ant_dir": {**_LOCOMOTION, "meta_batch_tasks": 4, "gradient_steps": 4000, "context_transitions": 256},
    # garage: reward_scale=10 and batch_size=256 in every PEARL Meta-World example and its benchmark script
    # (DESIGN.md §9 says 1000 and 256/1000; garage's files disagree). Its 4000 "steps per epoch" are
    # gradient steps; episodes of 150 steps there, 500 in Meta-World 3.
    "metaworld": {"latent_size": 7, "hidden_size": 300, "hidden_layers": 3, "encoder_hidden_size": 200,
                  "encoder_hidden_layers": 3, "reward_scale": 10.0, "meta_batch_tasks": 16, "gradient_steps": 4000,
                  "initial_env_steps": 4000, "collect_tasks": 15, "prior_env_steps": 750, "posterior_env_steps": 0,
                  "extra_rl_env_steps": 750, "batch_transitions": 256, "context_transitions": 64},
    # Not from the paper: small networks and a high learning rate for point_nav (20-step episodes), so
    # that learning shows within a CI budget (tests/test_pearl.py); about 4 ms per gradient step on one core.
    "cheap": {"latent_size": 5, "hidden_size": 64, "hidden_layers": 2, "encoder_hidden_size": 64,
              "encoder_hidden_layers": 2, "reward_scale": 10.0, "discount": 0.9, "target_tau": 0.01,
              "policy_lr": 1e-3, "q_lr": 3e-3, "v_lr": 3e-3, "encoder_lr": 3e-3, "auto_entropy": True,
              "meta_batch_tasks": 8, "batch_transitions": 32, "context_transitions": 20, "gradient_steps": 100,
              "collect_tasks": 5, "collect_with_replacement": False, "initial_env_steps": 40, "prior_env_steps": 20,
              "posterior_env_steps": 0, "extra_rl_env_steps": 40,  # extra RL: a prior-z episode, a posterior one
              # The harness's meta-batches: initial data for every task of a 500-task split at once would take
              # all of a 20k-step CI budget.
              "sample_own_tasks": False},
}


class PEARL:
    """PEARL; see the module docstring. Gradient steps run on ``device``; acting (with CPU copies of the
    networks, refreshed after every training phase) and the replay buffers stay on the CPU."""

    name = "pearl"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    @staticmethod
    def acts_on(config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): the actor, and the encoder on new context, per env step;
        faster on the CPU (README, "Throughput and GPUs")."""
        return "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f"PEARL needs a Box action space (a squashed Gaussian actor); got {space}")
        self.low, self.high = space.low.astype(np.float64).ravel(), space.high.astype(np.float64).ravel()
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError(f"PEARL needs finite action bounds to squash into; got {space}")
        self.env, self.config, self.device = env, config, devices.resolve(device)
        self.exploration_episodes: int | None = config.exploration_episodes
        # oyster's train() draws its own tasks from every training task (initial data on all of them, then
        # num_tasks_sample per iteration, meta-batches from all): the harness then gives train_iteration the
        # whole training split instead of a meta-batch.
        self.samples_own_tasks: bool = config.sample_own_tasks
        self.obs_dim, self.action_dim = int(np.prod(env.observation_space.shape)), int(np.prod(space.shape))
        self.context_dim = self.obs_dim * (2 if config.use_next_obs_in_context else 1) + self.action_dim + 1
        self.row_width = 2 * self.obs_dim + self.action_dim + 2
        self.target_entropy = float(-self.action_dim if config.target_entropy is None else config.target_entropy)

        seeds = np.random.SeedSequence(seed).generate_state(4, np.uint64) >> np.uint64(1)
        self.rng = np.random.Generator(np.random.PCG64(int(seeds[0])))  # tasks and buffer indices
        self.generator = torch.Generator().manual_seed(int(seeds[1]))  # z, action and reparameterisation noise
        self.policy_seed = int(seeds[2])  # adapt's noise for a policy that brings no generator of its own
        self.nets = build_seeded(int(seeds[3]),  # initialisation
                                 lambda: PEARLNets(self.obs_dim, self.action_dim, self.context_dim, config))
        self.nets.to(self.device)  # the gradient steps run here; replay buffers stay on the CPU
        # Acting (actor and encoder, one small batch per env step) stays on the CPU (acts_on), where a GPU
        # would be launch-latency bound; on a CPU device these are the trained networks themselves.
        self.acting_device = devices.acting_device(self.device, self.acts_on(config))
        self.acting_nets = devices.acting_copy(self.nets, self.device, self.acting_device)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.alpha), device=self.device),
                                      requires_grad=config.auto_entropy)
        groups = [{"params": self.nets.actor.parameters(), "lr": config.policy_lr},
                  {"params": [*self.nets.q1.parameters(), *self.nets.q2.parameters()], "lr": config.q_lr},
                  {"params": self.nets.v.parameters(), "lr": config.v_lr},
                  {"params": self.nets.encoder.parameters(), "lr": config.encoder_lr}]
        if config.auto_entropy:
            groups.append({"params": [self.log_alpha], "lr": config.alpha_lr})
        # Adam is per parameter: one optimiser with one lr per network is oyster's five optimisers.
        self.optimiser = torch.optim.Adam(groups, fused=True)  # fused: ~10% of a small step on CPU
        self.rl_buffers: dict[str, TaskReplay] = {}
        self.encoder_buffers: dict[str, TaskReplay] = {}
        self.initialised: set[str] = set()
        self.iterations = 0
        self.gradient_steps_taken = 0

    # --- acting --------------------------------------------------------------------------------

    def _policy(self, generator: torch.Generator, mode: ZSource = "trial", initial: tuple[Tensor, Tensor] | None = None,
                posterior: Callable[[np.ndarray], tuple[Tensor, Tensor]] | None = None) -> PEARLPolicy:
        return PEARLPolicy(self.acting_nets, generator, self.low, self.high, self.config.use_next_obs_in_context, mode,
                           initial, posterior)

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """oyster's exploration episodes: ``z`` from the prior at every episode start (``collect_paths`` infers
        the posterior only after ``num_exp_traj_eval`` episodes). Noise from ``generator``, or from the
        training generator when ``None``."""
        return self._policy(self.generator if generator is None else generator, "prior")

    @torch.inference_mode()
    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        """A policy drawing ``z`` from the posterior of all the exploration episodes' transitions, then of
        everything gathered since. Its noise continues ``policy``'s generator from where it stands (a copy:
        ``policy`` is not advanced)."""
        rows, _, mask = trial_transitions(exploration, self.low, self.high, self.config.use_next_obs_in_context)
        mean, variance = self.acting_nets.encode(rows[..., : self.context_dim])
        precision = mask.float().unsqueeze(-1) / variance.clamp_min(MIN_FACTOR_VARIANCE)  # [N, T, latent]
        generator = torch.Generator()
        generator.set_state(policy.generator.get_state() if isinstance(policy, PEARLPolicy)
                            else torch.Generator().manual_seed(self.policy_seed).get_state())
        return self._policy(generator, "trial", (precision.sum(1), (mean * precision).sum(1)))

    # --- data ----------------------------------------------------------------------------------

    def _store(self, tasks: Sequence[Task], batch: TrialBatch, encoder: bool) -> None:
        rows, rl_mask, context_mask = trial_transitions(batch, self.low, self.high,
                                                        self.config.use_next_obs_in_context)
        capacity = self.config.replay_capacity_per_task
        for i, task in enumerate(tasks):
            self.rl_buffers.setdefault(task.task_id, TaskReplay(self.row_width, capacity)).add(rows[i][rl_mask[i]])
            enc = self.encoder_buffers.setdefault(task.task_id, TaskReplay(self.row_width, capacity))
            if encoder:
                enc.add(rows[i][context_mask[i]])

    def _sample(self, buffers: list[TaskReplay], count: int) -> Tensor:
        """``[len(buffers), count, row_width]`` rows drawn uniformly with replacement from each buffer."""
        sizes = np.array([b.size for b in buffers])
        index = torch.from_numpy(self.rng.integers(0, sizes[:, None], (len(buffers), count)))
        return torch.stack([b.data[i] for b, i in zip(buffers, index, strict=True)])

    def _buffer_posterior(self, tasks: Sequence[Task]) -> Callable[[np.ndarray], tuple[Tensor, Tensor]]:
        def posterior(rows: np.ndarray) -> tuple[Tensor, Tensor]:
            shape = (len(rows), self.config.latent_size)
            mean, variance = torch.zeros(shape), torch.ones(shape)
            filled = [i for i, row in enumerate(rows) if self.encoder_buffers[tasks[row].task_id].size]
            if filled:  # the prior for a task whose encoder buffer is still empty (oyster: the first episode)
                buffers = [self.encoder_buffers[tasks[rows[i]].task_id] for i in filled]
                context = self._sample(buffers, self.config.context_transitions)[..., : self.context_dim]
                mean[filled], variance[filled] = product_of_gaussians(*self.acting_nets.encode(context))
            return mean, variance

        return posterior

    def _collect(self, sampler: Sampler, tasks: Sequence[Task], env_steps: int, policy: PEARLPolicy,
                 encoder: bool) -> float:
        episodes = math.ceil(env_steps / self.env.max_episode_steps)
        batch = sampler.collect(policy, tasks, episodes)
        self._store(tasks, batch, encoder)
        return float(batch.episode_returns.mean())

    # --- training ------------------------------------------------------------------------------

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        """One iteration of oyster's ``train()`` on ``tasks`` (the harness gives the whole training split)."""
        cfg = self.config
        logs: dict[str, float] = {}
        if cfg.collect_with_replacement:  # oyster: np.random.randint(len(train_tasks)) per task
            picked = self.rng.integers(0, len(tasks), cfg.collect_tasks)
        else:
            picked = self.rng.choice(len(tasks), min(cfg.collect_tasks, len(tasks)), replace=False)
        # Initial data: oyster (sample_own_tasks) on every training task at iteration 0. On the harness's
        # meta-batches, on a task when it is first collected on: initial data on every task of a large
        # meta-batch would spend a small budget on prior-z episodes (the quickstart's 100 of 500 tasks).
        candidates = tasks if cfg.sample_own_tasks else [tasks[i] for i in sorted(set(picked.tolist()))]
        new = list({t.task_id: t for t in candidates if t.task_id not in self.initialised}.values())
        if new and cfg.initial_env_steps:
            chunks = [new[i: i + INITIAL_CHUNK] for i in range(0, len(new), INITIAL_CHUNK)]
            returns = [self._collect(sampler, chunk, cfg.initial_env_steps, self._policy(self.generator, "prior"),
                                     encoder=True) for chunk in chunks]
            logs["initial_return"] = float(np.average(returns, weights=[len(chunk) for chunk in chunks]))
        self.initialised.update(t.task_id for t in new)
        # A task drawn twice is collected on twice, one after the other (oyster's loop): rounds of distinct tasks.
        rounds: list[list[Task]] = []
        seen: dict[int, int] = {}
        for i in picked.tolist():
            seen[i] = seen.get(i, -1) + 1
            if seen[i] == len(rounds):
                rounds.append([])
            rounds[seen[i]].append(tasks[i])
        sums: dict[str, list[float]] = {}
        for collect in rounds:
            for key, value in self._collect_round(sampler, collect).items():
                sums.setdefault(key, []).extend([value] * len(collect))
        logs.update({key: float(np.mean(values)) for key, values in sums.items()})
        logs.update(self._train(cfg.gradient_steps))
        self.iterations += 1
        logs["tasks_with_data"] = float(len(self.rl_buffers))
        return logs

    def _collect_round(self, sampler: Sampler, collect: list[Task]) -> dict[str, float]:
        """oyster's per-task collection on distinct ``collect`` tasks: clear the encoder buffer, then prior,
        posterior and extra-RL data; mean episode returns of each."""
        cfg, logs = self.config, {}
        if cfg.clear_encoder_buffer:
            for task in collect:
                if task.task_id in self.encoder_buffers:
                    self.encoder_buffers[task.task_id].clear()
        if cfg.prior_env_steps:
            logs["prior_return"] = self._collect(sampler, collect, cfg.prior_env_steps,
                                                 self._policy(self.generator, "prior"), encoder=True)

        def posterior_policy() -> PEARLPolicy:  # the prior in the first episode (oyster clears z first)
            if cfg.posterior_context == "buffer":
                return self._policy(self.generator, "buffer", posterior=self._buffer_posterior(collect))
            return self._policy(self.generator, "trial")

        if cfg.posterior_env_steps:
            logs["posterior_return"] = self._collect(sampler, collect, cfg.posterior_env_steps, posterior_policy(),
                                                     encoder=True)
        if cfg.extra_rl_env_steps:
            logs["extra_rl_return"] = self._collect(sampler, collect, cfg.extra_rl_env_steps, posterior_policy(),
                                                    encoder=False)
        return logs

    def _train(self, steps: int) -> dict[str, float]:
        cfg = self.config
        ready = [k for k in self.rl_buffers if self.rl_buffers[k].size and self.encoder_buffers[k].size]
        if not ready or not steps:
            return {}
        sums: dict[str, Tensor] = {}
        targets, sources = list(self.nets.target_v.parameters()), list(self.nets.v.parameters())
        for _ in range(steps):
            picked = [ready[i] for i in self.rng.integers(0, len(ready), cfg.meta_batch_tasks)]
            context = self._sample([self.encoder_buffers[k] for k in picked], cfg.context_transitions).to(self.device)
            batch = self._sample([self.rl_buffers[k] for k in picked], cfg.batch_transitions).to(self.device)
            o, a = self.obs_dim, self.action_dim
            losses = pearl_loss(
                self.nets, context[..., : self.context_dim], batch[..., :o], batch[..., o: o + a],
                batch[..., o + a], batch[..., o + a + 1: 2 * o + a + 1], batch[..., -1], cfg, self.log_alpha,
                self.target_entropy, self.generator,
            )
            total = sum(v for k, v in losses.items() if k.startswith("loss_"))
            self.optimiser.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[union-attr]
            self.optimiser.step()
            with torch.no_grad():
                torch._foreach_lerp_(targets, sources, cfg.target_tau)
            for k, v in losses.items():  # tensors: no host sync inside the loop
                sums[k] = sums[k] + v.detach().mean() if k in sums else v.detach().mean()
            self.gradient_steps_taken += 1
        devices.refresh(self.acting_nets, self.nets)
        return {k: float(v) / steps for k, v in sums.items()}

    # --- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": config_state(self.config),
            "nets": devices.cpu_state(self.nets.state_dict()),
            "log_alpha": self.log_alpha.detach().clone().cpu(),
            "optimiser": devices.cpu_state(self.optimiser.state_dict()),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "iterations": self.iterations,
            "gradient_steps": self.gradient_steps_taken,
            "initialised": sorted(self.initialised),
            # Insertion order of the buffers fixes which task an index of the meta-batch draw means.
            "task_order": list(self.rl_buffers),
            "rl_buffers": {k: b.state_dict() for k, b in self.rl_buffers.items()},
            "encoder_buffers": {k: b.state_dict() for k, b in self.encoder_buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])  # copies into the parameters, wherever they live
        devices.refresh(self.acting_nets, self.nets)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.optimiser.load_state_dict(state["optimiser"])  # moves the moments to the parameters' device
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.iterations, self.gradient_steps_taken = int(state["iterations"]), int(state["gradient_steps"])
        self.initialised = set(state["initialised"])
        capacity = self.config.replay_capacity_per_task
        self.rl_buffers, self.encoder_buffers = {}, {}
        for key in state["task_order"]:
            for buffers, saved in ((self.rl_buffers, state["rl_buffers"]),
                                   (self.encoder_buffers, state["encoder_buffers"])):
                buffers[key] = TaskReplay(self.row_width, capacity)
                buffers[key].load_state_dict(saved[key])
