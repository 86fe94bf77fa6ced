"""The tabular-MDP family's analytic references: random actions, PSRL and the oracle told the MDP (finite-horizon
value iteration); ``harness/references/tabular_mdp_paper.py`` adds the RL² paper's other baselines.
"""

from __future__ import annotations

import numpy as np

from harness.tasks.tabular_mdp import TabularMDPParams


def finite_horizon_q_values(transitions: np.ndarray, reward_means: np.ndarray, horizon: int) -> np.ndarray:
    """Optimal action values of an undiscounted finite-horizon MDP, by backward induction (value iteration).

    ``Q_{H-1} = R`` and ``Q_t(s, a) = R(s, a) + sum_s' P(s' | s, a) max_a' Q_{t+1}(s', a')``.

    Args:
        transitions: ``[..., S, A, S]`` probabilities ``P(s' | s, a)``.
        reward_means: ``[..., S, A]`` expected rewards ``R(s, a)``.
        horizon: steps per episode ``H``.

    Returns:
        ``[..., H, S, A]``: entry ``t`` is ``Q_t``, the expected return of taking ``a`` in ``s`` at step ``t``
        (0-based) of the episode and acting optimally after it.
    """
    if horizon < 1:
        raise ValueError(f"finite_horizon_q_values: horizon must be >= 1, got {horizon}")
    transitions, reward_means = np.asarray(transitions, np.float64), np.asarray(reward_means, np.float64)
    if transitions.shape != (*reward_means.shape, reward_means.shape[-2]):
        raise ValueError(f"finite_horizon_q_values: transitions {transitions.shape} do not fit reward_means "
                         f"{reward_means.shape} (expected [..., S, A, S] and [..., S, A])")
    q = np.empty((*reward_means.shape[:-2], horizon, *reward_means.shape[-2:]))
    q[..., horizon - 1, :, :] = reward_means
    for t in range(horizon - 2, -1, -1):
        value_next = q[..., t + 1, :, :].max(axis=-1)  # [..., S]
        q[..., t, :, :] = reward_means + (transitions @ value_next[..., None, :, None])[..., 0]
    return q


class TabularPolicy:
    """Tracks each environment's state (its one-hot observation) and step within the episode.

    Subclasses implement ``_choose`` and may implement ``_observe``, which receives the previous step's
    transition rebuilt from ``prev_action``/``prev_reward`` and the observations.
    """

    def __init__(self, num_envs: int, states: int, horizon: int) -> None:
        self.states, self.horizon = states, horizon
        self._step = np.zeros(num_envs, np.int64)  # step within the current episode
        self._prev_state = np.zeros(num_envs, np.int64)
        # False right after a reset: the sampler's zero prev_action/prev_reward is not a step.
        self._has_prev = np.zeros(num_envs, bool)

    def reset(self, new_trial: np.ndarray) -> None:
        self._has_prev[new_trial] = False

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N]`` int64 for one-hot observations ``obs: [N, states]``."""
        obs = np.asarray(obs)
        if obs.shape != (len(self._step), self.states):
            raise ValueError(f"act: observations {obs.shape} for a policy of {len(self._step)} tasks and "
                             f"{self.states} states")
        states = np.argmax(obs, axis=1)
        start = np.asarray(episode_start, bool) | ~self._has_prev
        rows = np.flatnonzero(self._has_prev)
        if len(rows):
            # The previous step's next state is this observation, unless an episode boundary reset it.
            self._observe(rows, self._prev_state[rows], np.asarray(prev_action, np.int64).reshape(-1)[rows],
                          np.asarray(prev_reward, np.float64)[rows], states[rows], ~start[rows])
        self._step = np.where(start, 0, self._step + 1)
        if self._step.max() >= self.horizon:
            raise ValueError(f"act: more than {self.horizon} steps in an episode (episode_start missing?)")
        self._prev_state = states
        self._has_prev[:] = True
        return self._choose(states, self._step, start)

    def _observe(self, rows: np.ndarray, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 next_states: np.ndarray, continued: np.ndarray) -> None:
        """Record step ``(states, actions, rewards)`` of ``rows``; ``next_states`` where ``continued``."""

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class RandomAction:
    """Uniformly random actions."""

    def __init__(self, num_envs: int, actions: int, rng: np.random.Generator) -> None:
        self.num_envs, self.actions, self.rng = num_envs, actions, rng

    def reset(self, new_trial: np.ndarray) -> None:
        pass  # memoryless

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N]`` int64."""
        return self.rng.integers(0, self.actions, self.num_envs, dtype=np.int64)


class OptimalTabular(TabularPolicy):
    """The optimal policy of each environment's true MDP (told the task): argmax of ``Q_t(s, .)``, first on ties.

    Args:
        transitions: ``[N, S, A, S]``.
        reward_means: ``[N, S, A]``.
        horizon: steps per episode.
    """

    def __init__(self, transitions: np.ndarray, reward_means: np.ndarray, horizon: int) -> None:
        super().__init__(len(reward_means), reward_means.shape[1], horizon)
        self.q = finite_horizon_q_values(transitions, reward_means, horizon)  # [N, H, S, A]

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        return np.argmax(self.q[np.arange(len(states)), steps, states], axis=1).astype(np.int64)


class CountingTabular(TabularPolicy):
    """The trial's counts per environment, and a plan ``q: [N, H, S, A]`` for subclasses to fill.

    ``visits`` counts every step of ``(s, a)`` (its reward was seen), ``reward_sums`` their rewards, and
    ``transition_counts`` only the steps whose next state was seen (not an episode's last step: the next
    observation is then the reset state).
    """

    def __init__(self, num_envs: int, params: TabularMDPParams) -> None:
        super().__init__(num_envs, params.states, params.episode_steps)
        states, actions = params.states, params.actions
        self.params = params
        self.visits = np.zeros((num_envs, states, actions), np.int64)  # [N, S, A] rewards seen
        self.reward_sums = np.zeros((num_envs, states, actions))  # [N, S, A]
        self.transition_counts = np.zeros((num_envs, states, actions, states), np.int64)  # [N, S, A, S]
        self.q = np.zeros((num_envs, params.episode_steps, states, actions))  # [N, H, S, A]

    def reset(self, new_trial: np.ndarray) -> None:
        super().reset(new_trial)
        self.visits[new_trial] = 0
        self.reward_sums[new_trial] = 0.0
        self.transition_counts[new_trial] = 0

    def _observe(self, rows: np.ndarray, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 next_states: np.ndarray, continued: np.ndarray) -> None:
        # One entry per row (rows are distinct), so fancy-index += counts each once.
        self.visits[rows, states, actions] += 1
        self.reward_sums[rows, states, actions] += rewards
        moved = np.flatnonzero(continued)
        self.transition_counts[rows[moved], states[moved], actions[moved], next_states[moved]] += 1


class PSRL(CountingTabular):
    """Posterior sampling for RL (Strens 2000; Osband, Russo & Van Roy 2013), one of the RL² paper's references.

    The prior is the family's own: ``P(.|s, a) ~ Dirichlet(dirichlet_concentration)``, ``mu(s, a) ~
    Normal(reward_mean, reward_mean_std²)``, reward noise of known std ``reward_noise_std``, so the
    posteriors are Dirichlet (concentration + transition counts) and Normal (precision ``1/σ0² + n/σ²``, mean
    ``(μ0/σ0² + sum r/σ²) / precision``). At each episode start it draws one MDP from the posterior of the trial
    so far and follows that MDP's optimal policy for the episode.
    """

    def __init__(self, num_envs: int, params: TabularMDPParams, rng: np.random.Generator) -> None:
        super().__init__(num_envs, params)  # q: the optimal plan of the sampled MDP
        self.rng = rng

    def _sample_mdps(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One posterior draw ``(transitions [M, S, A, S], reward_means [M, S, A])`` per row."""
        p = self.params
        # Dirichlet draws as normalised Gamma draws: numpy's dirichlet takes a single concentration vector.
        gammas = self.rng.standard_gamma(p.dirichlet_concentration + self.transition_counts[rows])
        transitions = gammas / np.maximum(gammas.sum(axis=-1, keepdims=True), np.finfo(np.float64).tiny)
        precision = 1.0 / p.reward_mean_std**2 + self.visits[rows] / p.reward_noise_std**2
        mean = (p.reward_mean / p.reward_mean_std**2 + self.reward_sums[rows] / p.reward_noise_std**2) / precision
        reward_means = mean + self.rng.standard_normal(mean.shape) / np.sqrt(precision)
        return transitions, reward_means

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(episode_start)
        if len(rows):
            self.q[rows] = finite_horizon_q_values(*self._sample_mdps(rows), self.horizon)
        return np.argmax(self.q[np.arange(len(states)), steps, states], axis=1).astype(np.int64)


