"""ReinforceCounts: an in-context bandit learner trained with REINFORCE (Williams 1992).

A learner of another kind than the harness's own: no recurrent network and no PPO. Its memory is the
sufficient statistics of a bandit trial, how often each arm was pulled and its mean reward; a small MLP
shared by the arms scores each arm from them, and the action is drawn from the softmax of the scores. Across
training tasks it learns how to trade exploring against exploiting; within a trial it adapts through its
counts (in context, like RL²: ``exploration_episodes = None``). It needs a ``Discrete`` action space (one
score per arm) and ignores observations: a learner for bandit-like families.

The file reads like one of ``algorithms/``: config, network, loss, the ``MetaLearner``. It imports only the
contract, ``algorithms.base``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from algorithms.base import MetaEnvInfo, Policy, Sampler, Task, TrialBatch, check


@dataclass(frozen=True)
class Config:
    """ReinforceCounts hyperparameters (the defaults learn a 5-arm bandit within about 100k env steps)."""

    hidden_size: int = field(default=32, metadata={"doc": "units of each of the arm scorer's two hidden layers"})
    lr: float = field(default=3e-3, metadata={"doc": "Adam learning rate"})
    discount: float = field(default=1.0, metadata={"doc": "γ of the returns-to-go, which run over the whole trial"})
    entropy_coef: float = field(default=0.01, metadata={"doc": "entropy bonus weight"})
    max_grad_norm: float = field(default=1.0, metadata={"doc": "gradient clipping by global norm"})

    def __post_init__(self) -> None:
        check(self.hidden_size > 0, "hidden_size", "must be > 0")
        check(self.lr > 0, "lr", "must be > 0")
        check(0 < self.discount <= 1, "discount", "must lie in (0, 1]")
        check(self.entropy_coef >= 0, "entropy_coef", "must be >= 0")
        check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")


# --- network ---------------------------------------------------------------------------------------

FEATURES = 4


def arm_features(counts: Tensor, sums: Tensor, step: Tensor, horizon: int) -> Tensor:
    """Per arm: its pulls so far / horizon, its mean reward (0 before its first pull), whether it is still
    unpulled, and the fraction of the trial left.

    Args:
        counts, sums: ``[..., arms]`` pulls of each arm and their summed rewards, before this step.
        step: ``[...]`` steps taken in the trial before this one.
        horizon: steps of a training trial.

    Returns:
        ``[..., arms, FEATURES]``.
    """
    mean = sums / counts.clamp_min(1.0)
    left = (1.0 - step / horizon).unsqueeze(-1).expand_as(counts)
    return torch.stack([counts / horizon, mean, (counts == 0).float(), left], dim=-1)


def arm_scorer(hidden_size: int) -> nn.Module:
    """An MLP from an arm's features to its score (a logit), shared by every arm."""
    return nn.Sequential(nn.Linear(FEATURES, hidden_size), nn.Tanh(), nn.Linear(hidden_size, hidden_size), nn.Tanh(),
                         nn.Linear(hidden_size, 1))


class CountsPolicy:
    """Holds each environment's pull counts and reward sums; one batched scorer call per env step. Its
    randomness comes from ``generator``."""

    def __init__(self, scorer: nn.Module, arms: int, horizon: int, generator: torch.Generator) -> None:
        self.scorer, self.arms, self.horizon, self.generator = scorer, arms, horizon, generator
        self.counts, self.sums = torch.zeros(0, arms), torch.zeros(0, arms)
        self.step = torch.zeros(0)
        self.first = torch.zeros(0, dtype=torch.bool)  # no previous pull to count at a trial's first step

    def reset(self, new_trial: np.ndarray) -> None:
        mask = torch.as_tensor(np.asarray(new_trial, bool))
        if len(mask) != len(self.counts):
            self.counts, self.sums = torch.zeros(len(mask), self.arms), torch.zeros(len(mask), self.arms)
            self.step, self.first = torch.zeros(len(mask)), torch.ones(len(mask), dtype=torch.bool)
            return
        self.counts[mask], self.sums[mask], self.step[mask] = 0.0, 0.0, 0.0
        self.first[mask] = True

    @torch.no_grad()
    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:  # fmt: skip
        rows = torch.nonzero(~self.first).squeeze(-1)  # prev_action/prev_reward carry across episodes: count them
        arms = torch.as_tensor(np.asarray(prev_action, np.int64))[rows]
        self.counts[rows, arms] += 1.0
        self.sums[rows, arms] += torch.as_tensor(np.asarray(prev_reward, np.float32))[rows]
        logits = self.scorer(arm_features(self.counts, self.sums, self.step, self.horizon)).squeeze(-1)
        if deterministic:
            actions = logits.argmax(-1)
        else:
            actions = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator).squeeze(-1)
        self.step += 1.0
        self.first[:] = False
        return actions.numpy()


def trial_features(batch: TrialBatch, arms: int, horizon: int) -> Tensor:
    """The features the policy saw at every step of ``batch``: ``[N, T, arms, FEATURES]``."""
    valid = torch.from_numpy(batch.valid).float()
    pulled = nn.functional.one_hot(torch.from_numpy(batch.actions), arms).float() * valid.unsqueeze(-1)  # [N, T, k]
    paid = pulled * torch.from_numpy(batch.rewards).unsqueeze(-1)

    def before(x: Tensor) -> Tensor:  # sums over the steps before each step
        return torch.cat([torch.zeros_like(x[:, :1]), torch.cumsum(x, 1)[:, :-1]], dim=1)

    step = torch.arange(batch.valid.shape[1], dtype=torch.float32).expand(batch.valid.shape)
    return arm_features(before(pulled), before(paid), step, horizon)


# --- loss ------------------------------------------------------------------------------------------


def returns_to_go(rewards: Tensor, mask: Tensor, discount: float) -> Tensor:
    """``[N, T]`` discounted sums of the rewards from each step to the end of the trial."""
    out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] * mask[:, t] + discount * running
        out[:, t] = running
    return out


def reinforce_loss(logits: Tensor, actions: Tensor, advantages: Tensor, mask: Tensor, entropy_coef: float
                   ) -> dict[str, Tensor]:  # fmt: skip
    """REINFORCE with a baseline: ``loss_policy`` and ``loss_entropy`` (the update sums the ``loss_*`` terms)."""
    dist = torch.distributions.Categorical(logits=logits)
    steps = mask.sum().clamp_min(1.0)
    entropy = (dist.entropy() * mask).sum() / steps
    return {"loss_policy": -(dist.log_prob(actions) * advantages * mask).sum() / steps,
            "loss_entropy": -entropy_coef * entropy, "entropy": entropy.detach()}


# --- the learner -----------------------------------------------------------------------------------


class ReinforceCounts:
    """The ``MetaLearner`` (``algorithms/base.py``); its class is a ``LearnerClass``."""

    name = "reinforce_counts"
    Config = Config
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # a smaller scorer that learns a little slower per step but acts faster
        "small": {"hidden_size": 16, "lr": 5e-3},
    }
    exploration_episodes: int | None = None
    samples_own_tasks = False

    @staticmethod
    def acts_on(config: Config) -> Literal["cpu", "device"]:
        """It acts, and trains, on the CPU whatever ``device`` says: its network has about 1,200 parameters."""
        return "cpu"

    def __init__(self, env: MetaEnvInfo, config: Config, seed: int, device: str | torch.device = "cpu") -> None:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise TypeError(f"ReinforceCounts needs a Discrete action space (a score per arm), not {env.action_space}")
        self.env, self.config = env, config
        self.arms = int(env.action_space.n)
        self.horizon = env.episodes_per_trial * env.max_episode_steps
        seeds = np.random.SeedSequence(seed).generate_state(2)
        self.generator = torch.Generator().manual_seed(int(seeds[0]))  # action noise of its training trials
        with torch.random.fork_rng(devices=[]):  # initialisation, without touching the global generator
            torch.manual_seed(int(seeds[1]))
            self.scorer = arm_scorer(config.hidden_size)
        self.optimiser = torch.optim.Adam(self.scorer.parameters(), lr=config.lr)
        self.iterations = 0

    def exploration_policy(self, generator: torch.Generator | None = None) -> Policy:
        return CountsPolicy(self.scorer, self.arms, self.horizon, self.generator if generator is None else generator)

    def adapt(self, policy: Policy, exploration: TrialBatch) -> Policy:
        return policy  # adaptation is in the policy's counts; nothing is drawn

    def train_iteration(self, sampler: Sampler, tasks: Sequence[Task]) -> dict[str, float]:
        batch = sampler.collect(self.exploration_policy(), tasks, self.env.episodes_per_trial)
        mask = torch.from_numpy(batch.valid).float()
        returns = returns_to_go(torch.from_numpy(batch.rewards), mask, self.config.discount)
        baseline = (returns * mask).sum(0) / mask.sum(0).clamp_min(1.0)  # per step, over the tasks
        advantages = (returns - baseline) * mask
        advantages = advantages / (advantages[mask.bool()].std() + 1e-8)
        logits = self.scorer(trial_features(batch, self.arms, self.horizon)).squeeze(-1)  # [N, T, arms]
        terms = reinforce_loss(logits, torch.from_numpy(batch.actions), advantages, mask, self.config.entropy_coef)
        self.optimiser.zero_grad()
        sum(value for name, value in terms.items() if name.startswith("loss_")).backward()
        nn.utils.clip_grad_norm_(self.scorer.parameters(), self.config.max_grad_norm)
        self.optimiser.step()
        self.iterations += 1
        return {**{name: float(value.detach()) for name, value in terms.items()},
                "train_return": float(batch.episode_returns.mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "scorer": self.scorer.state_dict(),
                "optimiser": self.optimiser.state_dict(), "generator": self.generator.get_state(),
                "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scorer.load_state_dict(state["scorer"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.generator.set_state(state["generator"])
        self.iterations = int(state["iterations"])
