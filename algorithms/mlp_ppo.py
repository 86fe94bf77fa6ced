"""Memoryless PPO: an MLP policy and an MLP value function that see the current observation only.

The harness trains it for the two reference policies of VariBAD- and AMAGO-style comparisons:
``multitask`` (trained on the training tasks without being told the task: the best a policy that cannot
adapt does) and ``oracle`` (the same learner on environments whose observation ends with the task's
parameters; the harness does that wrapping). With no memory, ``adapt`` is the identity and returns and
GAE stop at every episode end.

It follows cleanrl's ``ppo_continuous_action.py``: a diagonal Gaussian with a state-independent log-std
(``Box`` actions) or a categorical (``Discrete``), separate tanh MLPs for policy and value, orthogonal
init, GAE, the clipped surrogate, Adam, advantages normalised per minibatch, gradient clipping, and
optionally the wrappers of its ``make_env``: running observation and reward normalisation (gymnasium's
``NormalizeObservation`` and ``NormalizeReward``) and actions clipped to their bounds at the environment
(``ClipAction``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.action_maps import ActionClip, ActionMap, KeptSamples
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check
from algorithms.common import action_size, build_seeded, learner_state, load_learner_state, mlp, tensor_on, torch_seeds
from algorithms.heads import action_distribution, per_action, sample_action
from algorithms.ppo import episode_cuts, gae, normalise_advantages, ppo_loss, ppo_update


@dataclass(frozen=True)
class Config:
    """Memoryless PPO hyperparameters; the defaults are cleanrl's ``ppo_continuous_action.py``."""

    hidden_sizes: tuple[int, ...] = field(default=(64, 64), metadata={"doc": "units of the tanh hidden layers "
                                                                             "of the policy and the value MLPs"})
    lr: float = field(default=3e-4, metadata={"doc": "Adam learning rate"})
    adam_eps: float = field(default=1e-5, metadata={"doc": "Adam epsilon"})
    discount: float = field(default=0.99, metadata={"doc": "γ"})
    gae_lambda: float = field(default=0.95, metadata={"doc": "GAE λ"})
    clip: float = field(default=0.2, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=10, metadata={"doc": "passes over each batch per iteration"})
    minibatches: int = field(default=32, metadata={"doc": "minibatches per epoch (split by env step)"})
    entropy_coef: float = field(default=0.0, metadata={"doc": "entropy bonus weight"})
    value_coef: float = field(default=0.5, metadata={"doc": "value loss weight"})
    max_grad_norm: float | None = field(default=0.5, metadata={"doc": "gradient clipping by global norm "
                                                                      "(None: no clipping)"})
    clip_value_separately: bool = field(
        default=True, metadata={"doc": "clip the value MLP's gradient and the policy's each on its own, so large "
                                       "returns cannot shrink the policy's step (False: one clip, as cleanrl)"}
    )
    target_kl: float | None = field(
        default=None, metadata={"doc": "stop an update's epochs once their approx. KL exceeds this (None: never)"}
    )
    init_std: float = field(default=1.0, metadata={"doc": "initial std of Gaussian actions (Box spaces)"})
    normalise_observations: bool = field(
        default=False, metadata={"doc": "scale observations by a running mean and std, clipped to ±10 "
                                        "(gymnasium's NormalizeObservation, as cleanrl's MuJoCo runs)"}
    )
    normalise_rewards: bool = field(
        default=False, metadata={"doc": "divide training rewards by the running std of their discounted return, "
                                        "clipped to ±10 (gymnasium's NormalizeReward and cleanrl's clip, as "
                                        "cleanrl's MuJoCo runs); evaluation rows keep the raw rewards",
                                 "added": True}
    )
    clip_actions: bool = field(
        default=False, metadata={"doc": "clip Box actions to the action bounds at the environment, which then "
                                        "charges its control cost on the clipped action; log-probabilities are of "
                                        "the unclipped samples (cleanrl's ClipAction wrapper)",
                                 "added": True}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # YAML gives lists
        check(all(h >= 1 for h in self.hidden_sizes), "hidden_sizes", "every layer needs >= 1 unit")
        for name in ("epochs", "minibatches"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("lr", "adam_eps", "clip", "init_std"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        for name in ("entropy_coef", "value_coef"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", "must be > 0 or null")


def merge_moments(batch: Tensor, mean: Tensor, var: Tensor, count: Tensor) -> None:
    """Merge ``batch [M, ...]`` (float64) into a running ``mean``, ``var`` and ``count`` in place (Chan et al.'s
    parallel update, as gymnasium's ``RunningMeanStd``)."""
    batch_count = float(batch.shape[0])
    delta, total = batch.mean(0) - mean, count + batch_count
    m2 = var * count + batch.var(0, unbiased=False) * batch_count + delta**2 * count * batch_count / total
    mean += delta * batch_count / total
    var.copy_(m2 / total)
    count.copy_(total)


def orthogonal_mlp(sizes: Sequence[int], out_gain: float) -> nn.Sequential:
    """Linear layers with tanh between them; orthogonal weights (gain √2, the output layer's ``out_gain``)
    and zero biases, as cleanrl's ``layer_init``: drawn once every layer is built."""
    net = mlp(sizes, nn.Tanh)
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    for linear in linears:
        nn.init.orthogonal_(linear.weight, gain=out_gain if linear is linears[-1] else float(np.sqrt(2)))
        nn.init.zeros_(linear.bias)
    return net


class MLPNet(nn.Module):
    """Policy MLP (means or logits), log-std, value MLP, and the observation statistics (buffers)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: Config) -> None:
        super().__init__()
        self.discrete, self.action_dim = action_size(action_space)
        hidden = list(config.hidden_sizes)
        self.actor = orthogonal_mlp([obs_dim, *hidden, self.action_dim], out_gain=0.01)
        self.critic = orthogonal_mlp([obs_dim, *hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(np.log(config.init_std))))  # Box only
        self.normalising = config.normalise_observations
        # gymnasium's RunningMeanStd: count starts at 1e-4; float64 so that the count and sums stay exact
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))
        if config.normalise_rewards:  # the running variance of the discounted return; only then, so that
            # checkpoints of runs without the option keep their keys
            self.register_buffer("return_mean", torch.zeros((), dtype=torch.float64))
            self.register_buffer("return_var", torch.ones((), dtype=torch.float64))
            self.register_buffer("return_count", torch.tensor(1e-4, dtype=torch.float64))

    def normalise(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim]`` → what the MLPs read: itself, or standardised and clipped to ±10."""
        if not self.normalising:
            return obs
        scaled = (obs - self.obs_mean) / torch.sqrt(self.obs_var + 1e-8)
        return scaled.clamp(-10.0, 10.0).to(obs.dtype)

    @torch.no_grad()
    def update_statistics(self, obs: Tensor) -> None:
        """Merge a batch ``[M, obs_dim]`` into the running mean and variance (Chan et al.'s parallel update)."""
        merge_moments(obs.double(), self.obs_mean, self.obs_var, self.obs_count)

    @torch.no_grad()
    def scale_rewards(self, rewards: Tensor, episode_start: Tensor, valid: Tensor, discount: float) -> Tensor:
        """``rewards [N, T]`` divided by the running std of the discounted return, clipped to ±10.

        The return ``G_t = γ G_{t-1} + r_t`` restarts at every episode start (gymnasium's wrapper restarts it at
        terminations only, so across time limits; here every episode is a time limit or a termination). The
        batch's returns are merged into the statistics before they scale it, as the wrapper does step by step.
        """
        returns = torch.zeros_like(rewards, dtype=torch.float64)
        running = torch.zeros(rewards.shape[0], dtype=torch.float64, device=rewards.device)
        for t in range(rewards.shape[1]):
            running = torch.where(episode_start[:, t], 0.0, discount * running) + rewards[:, t].double()
            returns[:, t] = running
        merge_moments(returns[valid], self.return_mean, self.return_var, self.return_count)
        return (rewards / torch.sqrt(self.return_var + 1e-8)).clamp(-10.0, 10.0).to(rewards.dtype)

    def distribution(self, x: Tensor) -> torch.distributions.Distribution:
        return action_distribution(self.actor(x), self.log_std, self.discrete)


class MLPPolicy:
    """Acts on the current observations only: one forward pass for all N environments per step, on the
    network's device; the action noise is drawn on the CPU from ``generator``. With an ``action_map`` the
    environment gets the mapped samples and the policy keeps the samples of its current trial
    (``in_policy_units``)."""

    def __init__(self, net: MLPNet, generator: torch.Generator, action_map: ActionMap | None = None) -> None:
        self.net = net
        self.device = net.log_std.device
        self.generator = generator
        self.noise = torch.empty(0)
        self.kept = None if action_map is None else KeptSamples(action_map)

    def reset(self, new_trial: np.ndarray) -> None:
        if self.kept is not None:  # no memory: only the kept samples restart
            self.kept.restart(new_trial)

    def in_policy_units(self, batch: TrialBatch) -> TrialBatch:
        """``batch`` (this policy's last trial) with the samples the policy drew as its actions."""
        return batch if self.kept is None else self.kept.in_policy_units(batch)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        """Actions ``[N, ...]`` from ``obs [N, *obs_shape]`` alone; the previous action, reward and done are ignored."""
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1).to(self.device)
        out = self.net.actor(self.net.normalise(x)).cpu()
        if self.noise.shape != out.shape:
            self.noise = torch.empty_like(out)
        actions = sample_action(out, self.net.log_std.cpu(), self.net.discrete, deterministic, self.generator,
                                self.noise).numpy()  # a fresh array every call: safe to keep
        return actions if self.kept is None else self.kept.keep(actions)


class MLPPPO:
    """PPO with memoryless MLP policy and value; see the module docstring."""

    name = "mlp_ppo"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # cleanrl's ppo_continuous_action.py MuJoCo settings (its defaults, which Config's follow) with the
        # wrappers of its make_env: ClipAction, NormalizeObservation and NormalizeReward. Not reproduced:
        # value-loss clipping and learning-rate annealing (which needs the run's budget, the harness's to know).
        "mujoco": {"hidden_sizes": (64, 64), "lr": 3e-4, "adam_eps": 1e-5, "discount": 0.99,
                   "gae_lambda": 0.95, "clip": 0.2, "epochs": 10, "minibatches": 32, "entropy_coef": 0.0,
                   "value_coef": 0.5, "max_grad_norm": 0.5, "init_std": 1.0, "normalise_observations": True,
                   "normalise_rewards": True, "clip_actions": True},
    }
    exploration_episodes: int | None = None
    samples_own_tasks = False

    @staticmethod
    def acts_on(config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): one small MLP forward per env step, no slower on the CPU."""
        return "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        seeds = torch_seeds(seed)
        self.net = build_seeded(next(seeds), lambda: MLPNet(obs_dim, env.action_space, config)).to(self.device)
        self.acting_net = devices.acting_copy(self.net, self.device, devices.acting_device(self.device, "cpu"))
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=config.adam_eps)
        self.generator = torch.Generator().manual_seed(next(seeds))
        self.action_map = ActionClip.of(env.action_space) if config.clip_actions else None
        self.iterations = 0

    def exploration_policy(self, generator: torch.Generator | None = None) -> MLPPolicy:
        """A policy acting with the current network, drawing its action noise from ``generator`` (the
        harness's evaluation generator), or from the training generator when ``None``."""
        return MLPPolicy(self.acting_net, self.generator if generator is None else generator, self.action_map)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # no memory and no task inference: nothing to adapt

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        policy = self.exploration_policy()
        batch = policy.in_policy_units(sampler.collect(policy, tasks, self.env.episodes_per_trial))
        cfg, net, tensor = self.config, self.net, tensor_on(self.device)
        obs, valid = tensor(batch.obs).flatten(2), tensor(batch.valid)
        # Returns stop at every episode end, time limits included: the batch holds no observation after a
        # truncation to bootstrap from, so a time limit is treated as a terminal state (as RL² and ProMP).
        cut = tensor(episode_cuts(batch.valid, batch.episode_end))
        rewards = tensor(batch.rewards)
        if cfg.normalise_rewards:
            rewards = net.scale_rewards(rewards, tensor(batch.episode_start), valid, cfg.discount)
        with torch.no_grad():
            x = net.normalise(obs)  # the statistics the batch was collected with; updated after the epochs
            values = net.critic(x).squeeze(-1) * valid
            advantages, returns = gae(rewards, values, cut, cfg.discount, cfg.gae_lambda)
            # no memory: the valid steps of every trial are one flat batch [M], shuffled step by step
            steps = {"x": x[valid], "actions": tensor(batch.actions)[valid], "advantages": advantages[valid],
                     "returns": returns[valid], "values": values[valid]}
            steps["log_prob"] = per_action(net.distribution(steps["x"]).log_prob(steps["actions"]), net.discrete)

        def loss_fn(index: Tensor) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            x_i = steps["x"][index]
            dist = net.distribution(x_i)
            log_prob = per_action(dist.log_prob(steps["actions"][index]), net.discrete)
            ones = torch.ones_like(log_prob)
            return ppo_loss(
                log_prob, steps["log_prob"][index], normalise_advantages(steps["advantages"][index], ones),
                net.critic(x_i).squeeze(-1), steps["returns"][index], per_action(dist.entropy(), net.discrete),
                ones, cfg.clip, cfg.value_coef, cfg.entropy_coef,
            )

        logs = ppo_update(
            loss_fn, len(steps["x"]), self.optimiser, list(net.parameters()), cfg.epochs, cfg.minibatches,
            cfg.max_grad_norm, self.generator, cfg.target_kl, cfg.clip_value_separately,
        )
        if cfg.normalise_observations:
            net.update_statistics(obs[valid])
        devices.refresh(self.acting_net, net)
        self.iterations += 1
        # explained variance of the returns by the values before the update (cleanrl logs it)
        explained = 1.0 - (steps["returns"] - steps["values"]).var() / steps["returns"].var().clamp_min(1e-8)
        return {**logs, "explained_variance": float(explained), "train_return": float(batch.episode_returns.mean())}

    def state_dict(self) -> dict[str, Any]:
        return learner_state(self.config, self.net, self.generator, self.iterations, optimiser=self.optimiser)

    def load_state_dict(self, state: dict[str, Any]) -> None:  # the observation statistics are the net's buffers
        self.iterations = load_learner_state(state, self.net, self.acting_net, self.generator,
                                             optimiser=self.optimiser)
