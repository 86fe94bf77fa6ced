"""Random tabular MDPs, as in the RL² paper (Duan et al. 2016, §4.2).

The paper: MDPs with |S| = 10 states and |A| = 5 actions; transition distributions drawn from a flat
Dirichlet; Gaussian rewards with unit variance whose means are drawn independently from Normal(1, 1) (the
usual prior of Bayesian RL methods, which favours them); episodes of T = 10 steps that always start in
the first state; trials of n ∈ {10, 25, 50, 75, 100} episodes. The authors' code (rllab
``RandomTabularMDPEnv``: ``mu0=1, tau0=1, tau=1, alpha0=1``, state 0 at every reset) agrees.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from pydantic import Field, model_validator

from harness.tasks.base import FamilyParams, TaskFamily

#: Half-width of the training region of a task's average mean reward, in standard deviations of that
#: average under the training prior (``reward_mean_std / sqrt(states * actions)``). Training tasks fall
#: outside it with probability ~6e-5; OOD tasks are drawn outside it (``TabularMDPFamily.in_training_region``).
TRAINING_BAND_STDS = 4.0

#: Draws of the OOD sampler's rejection loop before it gives up (each draw is accepted with probability
#: at least 1/2, which the parameter check guarantees).
_MAX_OOD_DRAWS = 1000


class TabularMDPParams(FamilyParams):
    states: int = Field(10, ge=2, description="number of states |S| (RL² paper: 10)")
    actions: int = Field(5, ge=2, description="number of actions |A| (RL² paper: 5)")
    episode_steps: int = Field(10, ge=1, description="steps per episode, the horizon T (RL² paper: 10)")
    reward_mean: float = Field(1.0, description="mean rewards mu(s, a) ~ Normal(reward_mean, reward_mean_std²)")
    reward_mean_std: float = Field(1.0, gt=0, description="standard deviation of the mean rewards' prior")
    reward_noise_std: float = Field(1.0, gt=0, description="reward of a step ~ Normal(mu(s, a), reward_noise_std²)")
    dirichlet_concentration: float = Field(
        1.0, gt=0, description="P(.|s, a) ~ Dirichlet(dirichlet_concentration * ones(states)); 1 is flat"
    )
    # e.g. ood_reward_mean 0: poorer MDPs than any seen in training
    ood_reward_mean: float | None = Field(
        None,
        description="ood split: mean rewards ~ Normal(ood_reward_mean, reward_mean_std²), kept only where the "
        "task's average mean reward lies outside the training band; None: no ood split",
    )

    @property
    def training_band(self) -> float:
        """Half-width of the training region of a task's average mean reward (``TRAINING_BAND_STDS`` stds)."""
        return TRAINING_BAND_STDS * self.reward_mean_std / math.sqrt(self.states * self.actions)

    @model_validator(mode="after")
    def _ood_shift(self) -> TabularMDPParams:
        if self.ood_reward_mean is not None:
            shift = abs(self.ood_reward_mean - self.reward_mean)
            if shift <= self.training_band:
                raise ValueError(
                    f"ood_reward_mean: {self.ood_reward_mean} lies within {self.training_band:.3g} of reward_mean "
                    f"{self.reward_mean} (the training band, {TRAINING_BAND_STDS:g} × reward_mean_std / "
                    "sqrt(states × actions)); shift it further so that OOD tasks differ from training tasks"
                )
        return self


class TabularMDPEnv(gym.Env):
    """A finite MDP with one-hot state observations and Gaussian rewards.

    Every episode starts in state 0. A step in state ``s`` with action ``a`` draws the reward
    ``mu[s, a] + reward_noise_std * N(0, 1)``, then the next state ``s' ~ P[s, a]``, both from the env's
    ``np_random`` (seeded through ``reset(seed=...)``). The env never ends an episode itself: the time
    limit is the family's ``max_episode_steps``, which the sampler applies.

    Observation: ``[states]`` float32 one-hot of the current state. Action: ``Discrete(actions)``.
    """

    def __init__(self, params: TabularMDPParams) -> None:
        self.states, self.actions = params.states, params.actions
        self.reward_noise_std = params.reward_noise_std
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.states,), np.float32)
        self.action_space = gym.spaces.Discrete(self.actions)
        self._eye = np.eye(self.states, dtype=np.float32)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        # Until a task is set: uniform transitions and zero mean rewards.
        self._install(np.full((self.states, self.actions, self.states), 1.0 / self.states),
                      np.zeros((self.states, self.actions)))
        self.state = 0
        self._reset_done = False

    def set_task(self, params: dict[str, Any]) -> None:
        """Check and store a task (``{"transitions": [S][A][S], "reward_means": [S][A]}``); takes effect at the
        next reset."""
        transitions = np.asarray(params["transitions"], dtype=np.float64)
        reward_means = np.asarray(params["reward_means"], dtype=np.float64)
        shape = (self.states, self.actions)
        if transitions.shape != (*shape, self.states) or reward_means.shape != shape:
            raise ValueError(
                f"set_task: transitions {transitions.shape} and reward_means {reward_means.shape} do not fit "
                f"{self.states} states and {self.actions} actions"
            )
        if (transitions < 0).any() or not np.allclose(transitions.sum(axis=-1), 1.0, atol=1e-6):
            raise ValueError("set_task: every transitions[s][a] must be a probability vector")
        self._pending = (transitions, reward_means)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._pending is not None:
            self._install(*self._pending)
            self._pending = None
        self.state = 0  # RL² paper: an episode always starts in the first state
        self._reset_done = True
        return self._eye[self.state].copy(), {}

    def _install(self, transitions: np.ndarray, reward_means: np.ndarray) -> None:
        self.transitions, self.reward_means = transitions, reward_means  # [S, A, S], [S, A]
        self._cdf = np.cumsum(transitions, axis=-1)
        self._cdf[..., -1] = 1.0  # against rounding: a uniform draw in [0, 1) always lands on a state

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._reset_done:
            raise RuntimeError("step: call reset() first")
        s, a = self.state, int(action)
        reward = float(self.reward_means[s, a] + self.reward_noise_std * self.np_random.standard_normal())
        self.state = int(np.searchsorted(self._cdf[s, a], self.np_random.random(), side="right"))
        return self._eye[self.state].copy(), reward, False, False, {}


class TabularMDPFamily(TaskFamily):
    """Random tabular MDPs (RL² paper §4.2): P(.|s, a) ~ Dirichlet(1) (flat), mu(s, a) ~ Normal(1, 1).

    Reward of a step in ``s`` with action ``a``: ``r ~ Normal(mu(s, a), 1)``; episodes of ``T = 10`` steps
    always start in state 0; observations are one-hot states. The paper runs trials of n ∈ {10, 25, 50,
    75, 100} episodes; the default here is its smallest, n = 10. Task parameters:
    ``{"transitions": [S][A][S], "reward_means": [S][A]}``. OOD (``ood_reward_mean``): mean rewards from a
    shifted Normal, kept where the task's average mean reward lies outside the training band
    (``reward_mean`` ± ``TRAINING_BAND_STDS`` standard deviations of that average).
    """

    name = "tabular_mdp"
    Params = TabularMDPParams
    default_episodes_per_trial = 10

    params: TabularMDPParams

    @property
    def max_episode_steps(self) -> int:
        return self.params.episode_steps

    @property
    def has_ood(self) -> bool:
        return self.params.ood_reward_mean is not None

    def _draw(self, reward_mean: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        alpha = np.full(p.states, p.dirichlet_concentration)
        transitions = rng.dirichlet(alpha, size=(p.states, p.actions))  # [S, A, S]
        reward_means = rng.normal(reward_mean, p.reward_mean_std, size=(p.states, p.actions))  # [S, A]
        return transitions, reward_means

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        p = self.params
        if split != "ood":
            transitions, reward_means = self._draw(p.reward_mean, rng)
        else:
            if p.ood_reward_mean is None:
                raise ValueError("tabular_mdp: no ood split (ood_reward_mean is None)")
            for _ in range(_MAX_OOD_DRAWS):
                transitions, reward_means = self._draw(p.ood_reward_mean, rng)
                if abs(reward_means.mean() - p.reward_mean) > p.training_band:
                    break
            else:
                raise RuntimeError(f"tabular_mdp: no OOD task outside the training band in {_MAX_OOD_DRAWS} draws")
        return {"transitions": transitions.tolist(), "reward_means": reward_means.tolist()}

    def in_training_region(self, params: dict[str, Any]) -> bool:
        """Whether the task's average mean reward lies within the training band around ``reward_mean``.

        The Normal prior has unbounded support, so the region is defined on this statistic.
        """
        return abs(float(np.mean(params["reward_means"])) - self.params.reward_mean) <= self.params.training_band

    def make_env(self) -> gym.Env:
        return TabularMDPEnv(self.params)

    def describe(self) -> dict[str, Any]:
        p = self.params
        info = super().describe()
        info.update(
            source="Duan et al. 2016, RL²: Fast Reinforcement Learning via Slow Reinforcement Learning, §4.2",
            observation=f"one-hot state, Box(0, 1, ({p.states},), float32)",
            action=f"Discrete({p.actions})",
            initial_state=0,
            reward=f"r ~ Normal(mu(s, a), {p.reward_noise_std:g}²), mu(s, a) ~ Normal({p.reward_mean:g}, "
            f"{p.reward_mean_std:g}²)",
            transitions=f"P(.|s, a) ~ Dirichlet({p.dirichlet_concentration:g} · 1_{p.states})",
            task_params="{transitions: [S][A][S] floats, reward_means: [S][A] floats}",
            ood=(
                f"mu(s, a) ~ Normal({p.ood_reward_mean:g}, {p.reward_mean_std:g}²) with |mean(mu) - "
                f"{p.reward_mean:g}| > {p.training_band:.3g}"
                if p.ood_reward_mean is not None
                else "none (set ood_reward_mean)"
            ),
        )
        return info
