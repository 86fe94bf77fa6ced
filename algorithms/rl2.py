"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning") with PPO.

A GRU (or LSTM) reads the augmented observation ``[o_t, a_{t-1}, r_{t-1}, done_{t-1}]``; its state is
kept across the episodes of a trial and reset between trials, so adaptation happens in memory and
``adapt`` is the identity. By default the whole trial is one episode for the return (GAE cuts only at
the trial end), as in the paper, and a value RNN of its own fits the returns.

Presets reproduce released code (issue 14, item 7):

* ``mujoco`` — the TrMRL paper's MuJoCo RL² baseline, ProMP's ``full_code`` branch
  (``configs/rl2_config.json``, ``run_scripts/rl2_run.py``): LSTM 64, PPO clip 0.2, Adam 1e-3, 5 epochs of
  one full-batch step, no gradient clipping, no entropy bonus, no value network but rllab's linear feature
  baseline fitted per task, returns and GAE (γ 0.99, λ 1) per episode, advantages normalised per task,
  backpropagation truncated every 32 steps (``rl2_first_order_optimizer.py``), and the previous action,
  reward and done zeroed at every episode start (``maml_zoo/envs/rl2_env.py``).
* ``metaworld`` — garage's RL²-PPO Meta-World launchers (the Meta-World paper's reproduction the TrMRL
  README points to): GRU 256, lr 5e-4, 10 epochs of one minibatch (32 trials ≥ 25 tasks), no gradient
  clipping, returns over the whole trial, inputs zeroed at every episode start (garage's ``RL2Env``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check, check_choices
from algorithms.common import action_size, build_seeded, learner_state, load_learner_state, tensor_on, torch_seeds
from algorithms.heads import StepInputs, action_distribution, augmented_observation, per_action, sample_action
from algorithms.ppo import (
    clipped_surrogate,
    combine_terms,
    entropy_bonus,
    episode_cuts,
    gae,
    linear_feature_values,
    masked_mean,
    normalise_advantages,
    ppo_update,
    steps_since_start,
    trial_cuts,
    value_loss,
)

Cell = Literal["gru", "lstm"]
Baseline = Literal["value", "linear_feature"]
AdvantageNormalisation = Literal["minibatch", "task", "none"]
CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
State = Tensor | tuple[Tensor, Tensor]  # a GRU's h, or an LSTM's (h, c); each [1, N, hidden]


@dataclass(frozen=True)
class Config:
    """RL² hyperparameters (defaults suit the cheap families; see ``presets`` for the papers')."""

    hidden_size: int = field(default=128, metadata={"doc": "units of the recurrent cell"})
    cell: Cell = field(default="gru", metadata={"doc": "recurrent cell: 'gru' or 'lstm' (ProMP's RL²)"})
    lr: float = field(default=1e-3, metadata={"doc": "Adam learning rate"})
    adam_eps: float = field(default=1e-5, metadata={"doc": "Adam epsilon (garage and ProMP: TensorFlow's 1e-8)"})
    discount: float = field(default=0.99, metadata={"doc": "γ"})
    gae_lambda: float = field(default=0.95, metadata={"doc": "GAE λ"})
    gae_across_episodes: bool = field(
        default=True, metadata={"doc": "returns and GAE run over the whole trial (RL² paper, garage) or stop at "
                                        "every episode end (False: ProMP)"}
    )
    clip: float = field(default=0.2, metadata={"doc": "PPO ratio clip"})
    epochs: int = field(default=4, metadata={"doc": "passes over each batch per iteration"})
    minibatches: int = field(default=4, metadata={"doc": "minibatches per epoch (split by trial)"})
    entropy_coef: float = field(default=0.01, metadata={"doc": "entropy bonus weight"})
    baseline: Baseline = field(
        default="value", metadata={"doc": "'value': a value head trained with the PPO value loss; 'linear_feature': "
                                          "rllab's linear feature baseline fitted per task each iteration (ProMP)"}
    )
    value_coef: float = field(default=0.5, metadata={"doc": "value loss weight (baseline 'value')"})
    advantage_normalisation: AdvantageNormalisation = field(
        default="minibatch", metadata={"doc": "advantages to zero mean, unit std per 'minibatch', per 'task' "
                                              "(ProMP) or 'none' (garage's center_adv=False)"}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"doc": "gradient clipping by global norm (None: no clipping, as garage and ProMP)"}
    )
    clip_value_separately: bool = field(
        default=True, metadata={"doc": "clip the value loss's gradient and the policy's each on its own (so value "
                                       "gradients cannot shrink the policy step), not their sum"}
    )
    bptt_steps: int | None = field(
        default=None, metadata={"doc": "truncate backpropagation through time every this many steps, the chunks' "
                                       "gradients averaged (ProMP: 32; None: whole trials)"}
    )
    reset_inputs_each_episode: bool = field(
        default=False, metadata={"doc": "zero the previous action, reward and done at every episode start, as the "
                                        "RL2Env wrappers of ProMP and garage (False: they carry across the trial)"}
    )
    target_kl: float | None = field(
        default=None, metadata={"doc": "stop an update's epochs once their approx. KL exceeds this (None: never)"}
    )
    init_std: float = field(default=0.5, metadata={"doc": "initial std of Gaussian actions (Box spaces)"})
    shared_value: bool = field(
        default=False, metadata={"doc": "value head on the policy's RNN (True) or on an RNN of its own (False)"}
    )
    normalise_value_targets: bool = field(
        default=False, metadata={"doc": "fit the value head to the batch's returns standardised by their mean and "
                                        "std, rescaling its output layer so that its predictions do not jump "
                                        "(PopArt); rllab's regression baselines standardise their targets at every fit",
                                 "added": True}
    )

    def __post_init__(self) -> None:
        for name in ("hidden_size", "epochs", "minibatches"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("lr", "adam_eps", "clip", "init_std"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("discount", "gae_lambda"):
            check(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "must be > 0 or null")
        check(self.target_kl is None or self.target_kl > 0, "target_kl", "must be > 0 or null")
        check(self.bptt_steps is None or self.bptt_steps >= 1, "bptt_steps", "must be >= 1 or null")
        for name in ("entropy_coef", "value_coef"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check_choices(self)


class RL2Net(nn.Module):
    """An RNN over augmented observations with a categorical or Gaussian policy head, and (baseline
    ``value``) a value head on the same RNN or on one of its own."""

    def __init__(self, obs_dim: int, action_space: gym.Space, config: Config) -> None:
        super().__init__()
        self.discrete, self.action_dim = action_size(action_space)
        self.obs_dim = obs_dim
        input_size, cell = obs_dim + self.action_dim + 2, CELLS[config.cell]
        self.rnn = cell(input_size, config.hidden_size, batch_first=True)
        # A separate value RNN keeps the large value-regression gradients (returns of tens) out of the
        # policy's memory; garage's RL² likewise fits a separate baseline.
        learned = config.baseline == "value"
        self.value_rnn = cell(input_size, config.hidden_size, batch_first=True) \
            if learned and not config.shared_value else None
        self.value_head = nn.Linear(config.hidden_size, 1) if learned else None
        if learned and config.normalise_value_targets:  # the head predicts (return - mean) / std
            self.register_buffer("value_mean", torch.zeros(()))
            self.register_buffer("value_std", torch.ones(()))
        self.policy_head = nn.Linear(config.hidden_size, self.action_dim)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.zeros_(self.policy_head.bias)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(np.log(config.init_std))))
        self.reset_inputs = config.reset_inputs_each_episode

    def augment(self, obs: Tensor, prev_action: Tensor, prev_reward: Tensor, episode_start: Tensor) -> Tensor:
        """``[..., obs_dim + action_dim + 2]``: obs, previous action (one-hot if discrete), reward, done."""
        x = augmented_observation(obs, prev_action, prev_reward, episode_start, self.action_dim, self.discrete)
        if self.reset_inputs:  # ProMP/garage RL2Env.reset: [o, 0, 0, 0] at every episode start
            x[..., self.obs_dim:] *= (~episode_start.bool()).unsqueeze(-1).to(x.dtype)
        return x

    def distribution(self, features: Tensor) -> torch.distributions.Distribution:
        return action_distribution(self.policy_head(features), self.log_std, self.discrete)

    @torch.no_grad()
    def renormalise_values(self, returns: Tensor, mask: Tensor) -> None:
        """Set the value targets' mean and std to those of ``returns`` over ``mask`` and rescale the value
        head's output layer so that every prediction, in return units, stays what it was (PopArt's
        output preservation, van Hasselt et al. 2016)."""
        mean = masked_mean(returns, mask)
        std = masked_mean((returns - mean) ** 2, mask).sqrt().clamp_min(1e-4)
        head = self.value_head
        head.weight.mul_(self.value_std / std)
        head.bias.copy_((self.value_std * head.bias + self.value_mean - mean) / std)
        self.value_mean.copy_(mean)
        self.value_std.copy_(std)

    def log_prob(self, dist: torch.distributions.Distribution, actions: Tensor) -> Tensor:
        return per_action(dist.log_prob(actions), self.discrete)

    def entropy(self, dist: torch.distributions.Distribution) -> Tensor:
        return per_action(dist.entropy(), self.discrete)


def run_rnn(rnn: nn.Module, inputs: Tensor, bptt_steps: int | None) -> Tensor:
    """Outputs ``[N, T, hidden]`` of ``rnn`` over whole trials from a zero state; with ``bptt_steps``, the
    state is carried from chunk to chunk but no gradient flows back across a chunk boundary."""
    if bptt_steps is None or bptt_steps >= inputs.shape[1]:
        return rnn(inputs)[0]
    outputs, state = [], None
    for chunk in inputs.split(bptt_steps, dim=1):
        out, state = rnn(chunk, state)
        outputs.append(out)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return torch.cat(outputs, dim=1)


def chunk_weights(mask: Tensor, bptt_steps: int | None) -> Tensor:
    """``[N, T]`` weights for ``masked_mean`` that give every time chunk of ``bptt_steps`` the same weight, as
    ProMP's optimiser averages the chunks' gradients (a short last chunk weighs as much as a full one);
    ``mask`` itself without truncation."""
    if bptt_steps is None or bptt_steps >= mask.shape[1]:
        return mask
    chunks = [m / m.sum().clamp_min(1.0) for m in mask.split(bptt_steps, dim=1)]
    return torch.cat(chunks, dim=1) / len(chunks)


class RL2Policy:
    """Step-wise policy holding one RNN state per environment; shares the learner's acting network.

    One batched RNN step per env step for all environments, under ``inference_mode``, on the network's
    device; the step's inputs are built on the CPU in one reused buffer (``StepInputs``), and the action
    head's output comes back to the CPU, where the Gaussian noise is drawn into another reused buffer.
    All its randomness comes from ``generator`` (a CPU generator: the same noise on every device).
    """

    def __init__(self, net: RL2Net, generator: torch.Generator) -> None:
        self.net = net
        self.device = net.log_std.device
        self.generator = generator
        self.hidden: State | None = None
        self.inputs = StepInputs(net.action_dim, net.discrete)
        self.noise = torch.empty(0)

    @torch.inference_mode()  # the state is an inference tensor after act: clear it in the same mode
    def reset(self, new_trial: np.ndarray) -> None:
        mask = torch.as_tensor(new_trial, dtype=torch.bool).to(self.device)
        states = self.hidden if isinstance(self.hidden, tuple) else (self.hidden,)
        if states[0] is None or states[0].shape[1] != len(mask):
            lstm = isinstance(self.net.rnn, nn.LSTM)
            zeros = [torch.zeros(1, len(mask), self.net.rnn.hidden_size, device=self.device)
                     for _ in range(2 if lstm else 1)]
            self.hidden = (zeros[0], zeros[1]) if lstm else zeros[0]
            self.noise = torch.empty(len(mask), self.net.action_dim)
        else:
            for state in states:
                state[:, mask] = 0.0

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
        if self.net.reset_inputs:  # the same zeros as RL2Net.augment, written into the step's buffer
            self.inputs.buffer[np.asarray(episode_start, bool), self.net.obs_dim:] = 0.0
        features, self.hidden = self.net.rnn(x.to(self.device).unsqueeze(1), self.hidden)
        out = self.net.policy_head(features[:, 0]).cpu()
        return sample_action(out, self.net.log_std.cpu(), self.net.discrete, deterministic, self.generator,
                             self.noise).numpy()


class RL2:
    """RL² trained with PPO; see the module docstring."""

    name = "rl2"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # ProMP full_code configs/rl2_config.json (the TrMRL paper's MuJoCo RL² baseline) with the defaults
        # its run script leaves in place: PPO clip_eps 0.2, no entropy term, GaussianRNNPolicy init_std 1,
        # RL2FirstOrderOptimizer (TF Adam, eps 1e-8, one step per epoch, backprop_steps 32, no clipping),
        # LinearFeatureBaseline, RL2SampleProcessor (per-episode GAE, per-task normalisation). Its
        # meta_batch_size 200, rollouts_per_meta_task 2 and max_path_length 100 are the suite's to set.
        "mujoco": {"cell": "lstm", "hidden_size": 64, "lr": 1e-3, "adam_eps": 1e-8, "discount": 0.99,
                   "gae_lambda": 1.0, "gae_across_episodes": False, "clip": 0.2, "epochs": 5, "minibatches": 1,
                   "entropy_coef": 0.0, "baseline": "linear_feature", "advantage_normalisation": "task",
                   "max_grad_norm": None, "bptt_steps": 32, "reset_inputs_each_episode": True, "init_std": 1.0},
        # garage's RL²-PPO Meta-World launchers (metaworld_launchers/ml1|ml10|ml45/rl2_ppo_metaworld_*.py on
        # its avnish-new-metaworld-results-mt1 branch): GaussianGRUPolicy(256, init_std 1), FirstOrderOptimizer
        # (TF Adam lr 5e-4, batch_size 32 trials: one minibatch of the 25, 10 epochs, no clipping),
        # discount 0.99, GAE λ 0.95 over the concatenated trial, clip 0.2, entropy 5e-6, RL2Env's zeroed
        # inputs at reset. Its GaussianMLPBaseline(128, 128) is replaced by a value GRU of its own.
        "metaworld": {"hidden_size": 256, "lr": 5e-4, "adam_eps": 1e-8, "discount": 0.99, "gae_lambda": 0.95,
                      "clip": 0.2, "epochs": 10, "minibatches": 1, "entropy_coef": 5e-6, "max_grad_norm": None,
                      "init_std": 1.0, "reset_inputs_each_episode": True},
    }
    exploration_episodes: int | None = None
    samples_own_tasks = False

    @staticmethod
    def acts_on(config: Config) -> devices.Acting:
        """Where acting runs (``algorithms.device``): one GRU/LSTM step per env step, no slower on the CPU
        (README, "Throughput and GPUs")."""
        return "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        self.env = env
        self.config = config
        self.device = devices.resolve(device)
        obs_dim = int(np.prod(env.observation_space.shape))
        seeds = torch_seeds(seed)
        self.net = build_seeded(next(seeds), lambda: RL2Net(obs_dim, env.action_space, config)).to(self.device)
        # Acting stays on the CPU (acts_on): one RNN step over a batch of ~20 environments is launch-latency
        # bound on a GPU. Where acting and training share a device the acting network is the trained one.
        self.acting_device = devices.acting_device(self.device, self.acts_on(config))
        self.acting_net = devices.acting_copy(self.net, self.device, self.acting_device)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=config.adam_eps)
        self.generator = torch.Generator().manual_seed(next(seeds))
        self.iterations = 0

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        """A policy acting with the current network, drawing its action noise from ``generator`` (the
        harness's evaluation generator), or from the training generator when ``None``."""
        return RL2Policy(self.acting_net, self.generator if generator is None else generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the RNN state; nothing is drawn

    def _sequence_inputs(self, batch: TrialBatch) -> dict[str, Tensor]:
        tensor = tensor_on(self.device)
        return {
            "inputs": self.net.augment(tensor(batch.obs).flatten(2), tensor(batch.previous(batch.actions)),
                                       tensor(batch.previous(batch.rewards)), tensor(batch.episode_start)),
            "actions": tensor(batch.actions),
            "mask": tensor(batch.valid).float(),
        }

    def _forward(self, inputs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Log-probs, values (``None`` without a value head) and entropies ``[N, T]``; a row is one whole trial."""
        bptt = self.config.bptt_steps
        features = run_rnn(self.net.rnn, inputs, bptt)
        dist = self.net.distribution(features)
        values = None
        if self.net.value_head is not None:
            value_features = features if self.net.value_rnn is None else run_rnn(self.net.value_rnn, inputs, bptt)
            values = self.net.value_head(value_features).squeeze(-1)
        return self.net.log_prob(dist, actions), values, self.net.entropy(dist)

    def _advantages(self, batch: TrialBatch, inputs: Tensor, values: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(advantages, returns)`` ``[N, T]`` by GAE over trials or episodes, against the value head or a
        linear feature baseline fitted per task (row) to its discounted returns."""
        cfg, tensor = self.config, tensor_on(self.device)
        rewards, mask = tensor(batch.rewards), tensor(batch.valid).float()
        cut = tensor(trial_cuts(batch.valid) if cfg.gae_across_episodes
                     else episode_cuts(batch.valid, batch.episode_end))
        if values is None:
            discounted, _ = gae(rewards, torch.zeros_like(rewards), cut, cfg.discount, 1.0)  # reward-to-go
            start = np.zeros_like(batch.episode_start) if cfg.gae_across_episodes else batch.episode_start
            start[:, 0] = True
            values = linear_feature_values(inputs, tensor(steps_since_start(start)), discounted, mask)
        return gae(rewards, values * mask, cut, cfg.discount, cfg.gae_lambda)

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)
        data = self._sequence_inputs(batch)
        cfg = self.config
        mask = data["mask"]
        with torch.no_grad():
            old_log_prob, old_values, _ = self._forward(data["inputs"], data["actions"])
            normalised = old_values is not None and cfg.normalise_value_targets
            if normalised:  # the head's outputs in return units
                old_values = old_values * self.net.value_std + self.net.value_mean
            advantages, returns = self._advantages(batch, data["inputs"], old_values)
            if cfg.advantage_normalisation == "task":  # once, before the epochs (ProMP's sample processor)
                advantages = normalise_advantages(advantages, mask, per_row=True)
            if normalised:  # the head is fitted to the standardised returns of this batch
                self.net.renormalise_values(returns, mask)
                returns = (returns - self.net.value_mean) / self.net.value_std
        weights = chunk_weights(mask, cfg.bptt_steps)

        def loss_fn(index: Tensor) -> dict[str, Tensor]:
            index = index.to(self.device)  # minibatch indices come from the CPU generator
            log_prob, values, entropy = self._forward(data["inputs"][index], data["actions"][index])
            adv = advantages[index]
            if cfg.advantage_normalisation == "minibatch":
                adv = normalise_advantages(adv, mask[index])
            weight = weights[index]
            terms = [clipped_surrogate(log_prob, old_log_prob[index], adv, weight, cfg.clip)]
            if values is not None:  # the linear baseline is fitted by least squares, not by gradient
                terms.append(value_loss(values, returns[index], weight, cfg.value_coef))
            return combine_terms(*terms, entropy_bonus(entropy, weight, cfg.entropy_coef))

        logs = ppo_update(
            loss_fn, batch.num_tasks, self.optimiser, list(self.net.parameters()), cfg.epochs, cfg.minibatches,
            cfg.max_grad_norm, self.generator, cfg.target_kl, cfg.clip_value_separately,
        )
        devices.refresh(self.acting_net, self.net)
        self.iterations += 1
        logs["train_return"] = float(batch.episode_returns.mean())
        return logs

    def state_dict(self) -> dict[str, Any]:
        return learner_state(self.config, self.net, self.generator, self.iterations, optimiser=self.optimiser)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iterations = load_learner_state(state, self.net, self.acting_net, self.generator,
                                             optimiser=self.optimiser)
