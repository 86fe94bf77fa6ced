"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning") with PPO.

A GRU reads the augmented observation ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]``; its hidden state is
kept across the episodes of a trial and reset between trials, so adaptation happens in memory and
``adapt`` is the identity. Policy and value heads share the GRU. The whole trial is one episode for
the return (GAE cuts only at the trial end), as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, register
from algorithms.heads import StepInputs, action_distribution, augmented_observation, per_action, sample_action
from algorithms.ppo import gae, normalise_advantages, ppo_loss, ppo_update, trial_cuts


@dataclass(frozen=True)
class Config:
    """RL² hyperparameters (defaults suit the cheap families; see ``presets`` for the papers')."""

    hidden_size: int = field(default=128, metadata={"doc": "GRU units"})
    lr: float = field(default=1e-3, metadata={"doc": "Adam learning rate"})
    discount: float = field(default=0.99, metadata={"doc": "γ over the whole trial"})
    gae_lambda: float = field(default=0.95, metadata={"doc": "GAE λ"})
    clip: float = field(default=0.2, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=4, metadata={"doc": "passes over each batch per iteration"})
    minibatches: int = field(default=4, metadata={"doc": "minibatches per epoch (split by trial)"})
    entropy_coef: float = field(default=0.01, metadata={"doc": "entropy bonus weight"})
    value_coef: float = field(default=0.5, metadata={"doc": "value loss weight"})
    max_grad_norm: float = field(default=1.0, metadata={"doc": "gradient clipping by global norm"})
    target_kl: float | None = field(
        default=None, metadata={"doc": "stop an update's epochs once their approx. KL exceeds this (None: never)"}
    )
    init_std: float = field(default=0.5, metadata={"doc": "initial std of Gaussian actions (Box spaces)"})
    shared_value: bool = field(
        default=False, metadata={"doc": "value head on the policy's GRU (True) or on a GRU of its own (False)"}
    )

    def __post_init__(self) -> None:
        for name in ("hidden_size", "epochs", "minibatches"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("lr", "clip", "max_grad_norm", "init_std"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", "must be > 0 or null")
        for name in ("entropy_coef", "value_coef"):
            check(getattr(self, name) >= 0, name, "must be >= 0")


class RL2Net(nn.Module):
    """GRU over augmented observations with a categorical or Gaussian policy head and a value head."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_size: int, init_std: float,
                 shared_value: bool) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))  # type: ignore[attr-defined]
        self.gru = nn.GRU(obs_dim + self.action_dim + 2, hidden_size, batch_first=True)
        # A separate value GRU keeps the large value-regression gradients (returns of tens) out of the
        # policy's memory; garage's RL² likewise fits a separate baseline.
        self.value_gru = None if shared_value else nn.GRU(obs_dim + self.action_dim + 2, hidden_size, batch_first=True)
        self.policy_head = nn.Linear(hidden_size, self.action_dim)
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.zeros_(self.policy_head.bias)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(np.log(init_std))))

    def augment(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor) -> Tensor:
        """``[..., obs_dim + action_dim + 2]``: obs, previous action (one-hot if discrete), reward, done."""
        return augmented_observation(obs, prev_action, prev_reward, episode_start, self.action_dim, self.discrete)

    def distribution(self, features: Tensor) -> torch.distributions.Distribution:
        return action_distribution(self.policy_head(features), self.log_std, self.discrete)

    def log_prob(self, dist: torch.distributions.Distribution, actions: Tensor) -> Tensor:
        return per_action(dist.log_prob(actions), self.discrete)

    def entropy(self, dist: torch.distributions.Distribution) -> Tensor:
        return per_action(dist.entropy(), self.discrete)


class RL2Policy:
    """Step-wise policy holding one GRU state per environment; shares the learner's (CPU) network.

    One batched GRU step per env step for all environments, under ``inference_mode``; the step's
    inputs go through one reused buffer (``StepInputs``) and the Gaussian noise into another.
    """

    def __init__(self, net: RL2Net, generator: torch.Generator) -> None:
        self.net = net
        self.generator = generator
        self.hidden: Tensor | None = None
        self.inputs = StepInputs(net.action_dim, net.discrete)
        self.noise = torch.empty(0)

    @torch.inference_mode()  # the state is an inference tensor after act: clear it in the same mode
    def reset(self, new_trial: np.ndarray) -> None:
        mask = torch.as_tensor(new_trial, dtype=torch.bool)
        if self.hidden is None or self.hidden.shape[1] != len(mask):
            self.hidden = torch.zeros(1, len(mask), self.net.gru.hidden_size)
            self.noise = torch.empty(len(mask), self.net.action_dim)
        else:
            self.hidden[:, mask] = 0.0

    @torch.inference_mode()
    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        x = self.inputs(obs, prev_action, prev_reward, episode_start)
        features, self.hidden = self.net.gru(x.unsqueeze(1), self.hidden)
        out = self.net.policy_head(features[:, 0])
        return sample_action(out, self.net.log_std, self.net.discrete, deterministic, self.generator,
                             self.noise).numpy()


@register("rl2")
class RL2:
    """RL² trained with PPO; see the module docstring."""

    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # garage's RL²-PPO Meta-World configuration (DESIGN.md §9); garage's Gaussian MLP baseline
        # is replaced by the shared GRU's value head.
        "metaworld": {"hidden_size": 256, "lr": 5e-4, "discount": 0.99, "gae_lambda": 0.95, "clip": 0.2,
                      "epochs": 10, "entropy_coef": 5e-6},
    }
    exploration_episodes: int | None = None

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        torch_seed = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # built on the CPU: the same initial weights on any device
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
            self.net = RL2Net(obs_dim, env.action_space, config.hidden_size, config.init_std, config.shared_value)
        self.net.to(self.device)
        # Acting stays on the CPU: one GRU step over a batch of ~20 environments is launch-latency bound
        # on a GPU. On a CPU device the acting network is the trained one (no copy).
        self.acting_net = devices.acting_copy(self.net, self.device)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5)
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=torch_seed)))
        self.iterations = 0

    def exploration_policy(self) -> Policy:
        return RL2Policy(self.acting_net, self.generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the GRU state

    def _sequence_inputs(self, batch: TrialBatch) -> dict[str, Tensor]:
        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(array).to(self.device)

        return {
            "inputs": self.net.augment(tensor(batch.obs), tensor(batch.previous(batch.actions)),
                                       tensor(batch.previous(batch.rewards)), tensor(batch.episode_start)),
            "actions": tensor(batch.actions),
            "mask": tensor(batch.valid).float(),
        }

    def _forward(self, inputs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features, _ = self.net.gru(inputs)  # a row is one whole trial: zero initial state
        dist = self.net.distribution(features)
        value_features = features if self.net.value_gru is None else self.net.value_gru(inputs)[0]
        values = self.net.value_head(value_features).squeeze(-1)
        return self.net.log_prob(dist, actions), values, self.net.entropy(dist)

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)
        data = self._sequence_inputs(batch)
        cfg = self.config
        with torch.no_grad():
            old_log_prob, old_values, _ = self._forward(data["inputs"], data["actions"])
            advantages, returns = gae(
                torch.from_numpy(batch.rewards).to(self.device), old_values,
                torch.from_numpy(trial_cuts(batch.valid)).to(self.device), cfg.discount, cfg.gae_lambda,
            )

        def loss_fn(index: Tensor) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            log_prob, values, entropy = self._forward(data["inputs"][index], data["actions"][index])
            mask = data["mask"][index]
            return ppo_loss(
                log_prob, old_log_prob[index], normalise_advantages(advantages[index], mask), values,
                returns[index], entropy, mask, cfg.clip, cfg.value_coef, cfg.entropy_coef,
            )

        logs = ppo_update(
            loss_fn, batch.num_tasks, self.optimiser, list(self.net.parameters()), cfg.epochs, cfg.minibatches,
            cfg.max_grad_norm, self.generator, cfg.target_kl,
        )
        devices.refresh(self.acting_net, self.net)
        self.iterations += 1
        logs["train_return"] = float(batch.episode_returns.mean())
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "net": devices.cpu_state(self.net.state_dict()),
            "optimiser": devices.cpu_state(self.optimiser.state_dict()),
            "generator": self.generator.get_state(),
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])  # copies into the parameters, wherever they live
        devices.refresh(self.acting_net, self.net)
        self.optimiser.load_state_dict(state["optimiser"])  # moves the moments to the parameters' device
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])
