"""The RL² paper's other tabular-MDP baselines (Duan et al. 2016, Table 2): OPSRL, UCRL2, ε-greedy and greedy.

``references/tabular_mdp.py`` holds random, PSRL and the oracle; this module adds the paper's remaining
model-based baselines (BEB aside), a fast vectorised simulator of the ``tabular_mdp`` family, and the grid
search that tunes their free parameter on training tasks (the paper grid-searched its baselines).

The paper names these baselines and their sources but not the variants it ran. The parameter names of its
MDP code (``alpha0``, ``mu0``, ``tau0``, ``tau``, see ``harness.tasks.tabular_mdp``) are those of Osband's
TabulaRL agents (github.com/iosband/TabulaRL, ``src/finite_tabular_agents.py``; its
``psrl_experiments_2016`` accompany Osband & Van Roy 2016, arXiv 1607.00215, the paper cited for OPSRL), so
where the literature leaves a choice open these agents follow TabulaRL's (described, not copied); each class
says where, and where it departs.

Every policy here plans at each episode start and then follows its plan's ``Q_t(s, .)`` (first action on
ties) for the episode, like ``PSRL``. The harness wires the references in with ``mdp_paper_references``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from algorithms.base import Policy, Task
from harness import seeding
from harness.references.base import FactoryReference, Reference, tune_by_grid
from harness.references.tabular_mdp import PSRL, CountingTabular, finite_horizon_q_values
from harness.tasks.tabular_mdp import TabularMDPFamily, TabularMDPParams

#: Posterior draws per episode of OPSRL (TabulaRL's ``OptimisticPSRL`` default, ``nSamp=10``).
OPSRL_SAMPLES = 10
#: UCRL2's confidence parameter δ (TabulaRL's default; Jaksch et al. leave it free).
UCRL2_DELTA = 0.05
#: Grid of ε for ε-greedy (ε > 0: greedy, ε = 0, is its own reference).
EPSILON_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
#: Grid of UCRL2's confidence-width scale; at 1 the theory's widths cover the whole simplex for hundreds of
#: visits of a pair (radius ``sqrt(14 S ln(2 A t / δ) / n) >= 2`` while ``n <~ 35 S``), so smaller scales matter.
UCRL2_SCALE_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: Training tasks drawn from the family when ``mdp_paper_references`` is given none to tune on.
TUNING_TASKS = 500


# --- shared bookkeeping ---------------------------------------------------------------------------


#: Action values this close to the best count as tied. Untried pairs of one state have equal values, which
#: BLAS may round differently row by row (``finite_horizon_q_values`` uses matmul); the first of them wins.
_TIE_TOLERANCE = 1e-9


def _greedy_actions(q: np.ndarray, states: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``argmax_a q[i, steps[i], states[i], a]`` per row of ``q: [N, H, S, A]``; first action on ties."""
    values = q[np.arange(len(states)), steps, states]  # [N, A]
    return np.argmax(values >= values.max(axis=1, keepdims=True) - _TIE_TOLERANCE, axis=1).astype(np.int64)


class _EmpiricalPolicy(CountingTabular):
    """The trial's counts (``CountingTabular``) and a plan ``q`` made at each episode start by ``_plan``.

    ``unseen_reward``: the mean reward ``empirical_mdp`` gives a pair never tried (None: the prior's mean).
    """

    def __init__(self, num_envs: int, params: TabularMDPParams, unseen_reward: float | None = None) -> None:
        super().__init__(num_envs, params)
        self.unseen_reward = params.reward_mean if unseen_reward is None else unseen_reward

    def empirical_mdp(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The maximum-likelihood MDP ``(transitions [M, S, A, S], reward_means [M, S, A])`` of ``rows``.

        A pair whose next state was never seen gets uniform transitions, one whose reward was never seen
        ``unseen_reward``: by default the prior's ``reward_mean``, the certainty-equivalent guess. TabulaRL's
        ε-greedy and UCRL2 use a vanishing prior of mean 0 instead (``unseen_reward=0``), under which an
        untried action looks worse than most tried ones here, where mean rewards are ~1, so greedy explores less.
        """
        p = self.params
        counts = self.transition_counts[rows]
        seen = counts.sum(axis=-1, keepdims=True)  # [M, S, A, 1]
        transitions = np.where(seen > 0, counts / np.maximum(seen, 1), 1.0 / p.states)
        visits = self.visits[rows]
        reward_means = np.where(visits > 0, self.reward_sums[rows] / np.maximum(visits, 1), self.unseen_reward)
        return transitions, reward_means

    def _plan(self, rows: np.ndarray) -> np.ndarray:
        """The plan ``[M, H, S, A]`` of ``rows`` for the episode that starts now."""
        raise NotImplementedError

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(episode_start)
        if len(rows):
            self.q[rows] = self._plan(rows)
        return _greedy_actions(self.q, states, steps)


# --- OPSRL ----------------------------------------------------------------------------------------


class OptimisticPSRL(PSRL):
    """Optimistic PSRL (OPSRL), a column of the RL² paper's Table 2, which cites Osband & Van Roy 2016 for it.

    At each episode start it draws ``samples`` MDPs from ``PSRL``'s posterior (the family's own prior),
    solves each by finite-horizon value iteration, and acts greedily on the elementwise maximum of their
    action values, ``Q_t(s, a) = max_k Q^k_t(s, a)``: the definition of ``OptimisticPSRL`` in TabulaRL
    (default ``nSamp=10``), whose parameters the RL² paper's MDPs use. ``samples=1`` is PSRL, draw for draw.
    (Agrawal & Jia 2017 take the maximum inside each Bellman backup instead; that paper is later than RL².)

    Args:
        num_envs: environments of the batch.
        params: the family's parameters (prior, horizon).
        rng: the only source of randomness.
        samples: posterior draws per episode, ``K >= 1``.
    """

    def __init__(self, num_envs: int, params: TabularMDPParams, rng: np.random.Generator,
                 samples: int = OPSRL_SAMPLES) -> None:
        if samples < 1:
            raise ValueError(f"OptimisticPSRL: samples must be >= 1, got {samples}")
        super().__init__(num_envs, params, rng)
        self.samples = samples

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(episode_start)
        if len(rows):
            q = finite_horizon_q_values(*self._sample_mdps(rows), self.horizon)
            for _ in range(self.samples - 1):
                np.maximum(q, finite_horizon_q_values(*self._sample_mdps(rows), self.horizon), out=q)
            self.q[rows] = q
        return _greedy_actions(self.q, states, steps)


# --- UCRL2 ----------------------------------------------------------------------------------------


def ucrl2_widths(reward_visits: np.ndarray, transition_visits: np.ndarray, steps: np.ndarray,
                 params: TabularMDPParams, delta: float = UCRL2_DELTA, scale: float = 1.0,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """UCRL2's confidence widths (Jaksch, Ortner & Auer 2010, Fig. 1) for Gaussian rewards.

    Transitions: the L1 radius ``sqrt(14 S ln(2 A t / δ) / max(1, n))`` of the paper. Rewards: the paper's
    ``sqrt(7 ln(2 S A t / δ) / (2 max(1, n)))`` is Hoeffding's bound for rewards in [0, 1], i.e. with variance
    proxy 1/4; the rewards here are Gaussian with the family's known std σ, so σ² replaces 1/4 and the width
    is ``σ sqrt(14 ln(2 S A t / δ) / max(1, n))`` (a σ-sub-Gaussian mean obeys Hoeffding's tail with σ²).
    Both are multiplied by ``scale`` (tuned, as the RL² paper tuned its baselines; 1 is the theory's).

    Args:
        reward_visits: ``[..., S, A]`` rewards seen per pair, ``n`` of the reward width.
        transition_visits: ``[..., S, A]`` next states seen per pair, ``n`` of the transition radius.
        steps: ``[...]`` steps ``t`` of the trial so far (the paper's ``t_k``; at least 1 is used).
        params: the family's parameters (``S``, ``A``, σ).
        delta: confidence parameter δ.
        scale: factor on both widths.

    Returns:
        ``(reward_width [..., S, A], transition_radius [..., S, A])``.
    """
    s, a = params.states, params.actions
    t = np.maximum(np.asarray(steps, np.float64), 1.0)[..., None, None]
    reward_width = params.reward_noise_std * np.sqrt(14.0 * np.log(2 * s * a * t / delta)
                                                     / np.maximum(reward_visits, 1))
    transition_radius = np.sqrt(14.0 * s * np.log(2 * a * t / delta) / np.maximum(transition_visits, 1))
    return scale * reward_width, scale * transition_radius


def optimistic_transitions(transitions: np.ndarray, radius: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The distribution within L1 distance ``radius`` of ``transitions`` that maximises the expected value.

    The inner maximisation of extended value iteration (Jaksch et al. 2010, Fig. 2): put
    ``min(1, p(s*) + radius / 2)`` on the best next state ``s*``, then take the added mass from the worst
    states first until the distribution sums to 1 again.

    Args:
        transitions: ``[..., S]`` probability vectors.
        radius: ``[...]`` L1 radii (2 or more: all mass on ``s*``).
        values: ``[..., S]`` (broadcastable to ``transitions``) values of the next states; ties: any order.

    Returns:
        ``[..., S]``, the optimistic probability vectors.
    """
    transitions = np.asarray(transitions, np.float64)
    order = np.broadcast_to(np.argsort(values, axis=-1), transitions.shape)  # worst ... best
    ranked = np.take_along_axis(transitions, order, axis=-1)
    added = np.minimum(np.asarray(radius) / 2.0, 1.0 - ranked[..., -1])  # [...]
    # Mass removed from the worst states up to and including each one: min(its cumulative mass, added).
    removed = np.minimum(np.cumsum(ranked[..., :-1], axis=-1), added[..., None])
    removed = np.diff(removed, axis=-1, prepend=0.0)
    ranked = np.concatenate([np.maximum(ranked[..., :-1] - removed, 0.0), (ranked[..., -1] + added)[..., None]],
                            axis=-1)
    result = np.empty_like(ranked)
    np.put_along_axis(result, order, ranked, axis=-1)
    return result


def extended_value_iteration(transitions: np.ndarray, reward_upper: np.ndarray, radius: np.ndarray,
                             horizon: int) -> np.ndarray:
    """Optimistic action values over the MDPs within the confidence set, by backward induction.

    ``Q_{H-1} = R̃`` and ``Q_t(s, a) = R̃(s, a) + max_{‖p - P̂(s, a)‖_1 <= d(s, a)} p · V_{t+1}`` with
    ``V_{t+1} = max_a Q_{t+1}``: UCRL2's extended value iteration (Jaksch et al. 2010) made finite
    horizon, so it needs no convergence test. If every true ``P(s, a)`` and ``R(s, a)`` lies in the set, the
    result is at least the true ``finite_horizon_q_values``.

    Args:
        transitions: ``[..., S, A, S]`` centre ``P̂`` of the transition sets.
        reward_upper: ``[..., S, A]`` upper confidence bounds ``R̃`` of the mean rewards.
        radius: ``[..., S, A]`` L1 radii ``d``.
        horizon: steps per episode ``H``.

    Returns:
        ``[..., H, S, A]``, like ``finite_horizon_q_values``.
    """
    if horizon < 1:
        raise ValueError(f"extended_value_iteration: horizon must be >= 1, got {horizon}")
    reward_upper = np.asarray(reward_upper, np.float64)
    q = np.empty((*reward_upper.shape[:-2], horizon, *reward_upper.shape[-2:]))
    q[..., horizon - 1, :, :] = reward_upper
    for t in range(horizon - 2, -1, -1):
        value_next = q[..., t + 1, :, :].max(axis=-1)[..., None, None, :]  # [..., 1, 1, S]
        best = optimistic_transitions(transitions, radius, value_next)
        q[..., t, :, :] = reward_upper + (best * value_next).sum(axis=-1)
    return q


class UCRL2(_EmpiricalPolicy):
    """UCRL2 (Jaksch, Ortner & Auer 2010) for finite-horizon episodes, replanned at each episode start.

    The plan is ``extended_value_iteration`` over the confidence sets of ``ucrl2_widths`` around the
    empirical MDP of the trial so far (``empirical_mdp``: a pair never seen is centred on the prior's means
    and gets ``n = 1``, as the paper's ``max(1, n)``), with ``t`` the steps of the trial before the episode.
    The paper's doubling trick (a new policy when some count doubles) is for one endless episode; with resets
    every ``H`` steps the natural episode is the env's, as in TabulaRL's finite-horizon agents. Constants
    are the paper's (TabulaRL's UCRL2 uses ``4 ln(2 S A (t + 1) / δ)`` in both widths).

    Args:
        num_envs: environments of the batch.
        params: the family's parameters.
        scale: factor on the confidence widths (1: the theory's).
        delta: confidence parameter δ.
        unseen_reward: centre of an untried pair's reward interval (None: the prior's mean).
    """

    def __init__(self, num_envs: int, params: TabularMDPParams, scale: float = 1.0, delta: float = UCRL2_DELTA,
                 unseen_reward: float | None = None) -> None:
        if scale < 0 or not 0 < delta < 1:
            raise ValueError(f"UCRL2: need scale >= 0 and 0 < delta < 1, got {scale}, {delta}")
        super().__init__(num_envs, params, unseen_reward)
        self.scale, self.delta = scale, delta

    def _plan(self, rows: np.ndarray) -> np.ndarray:
        transitions, reward_means = self.empirical_mdp(rows)
        visits = self.visits[rows]
        reward_width, radius = ucrl2_widths(visits, self.transition_counts[rows].sum(axis=-1),
                                            visits.sum(axis=(-2, -1)), self.params, self.delta, self.scale)
        return extended_value_iteration(transitions, reward_means + reward_width, radius, self.horizon)


# --- ε-greedy and greedy --------------------------------------------------------------------------


class EpsilonGreedy(_EmpiricalPolicy):
    """Certainty equivalence with ε-random actions: at each episode start, the optimal plan of the trial's
    empirical MDP (``empirical_mdp``); each step, a uniformly random action with probability ε, else the plan's.

    ε = 0 is greedy and draws nothing from ``rng``. (TabulaRL's ``EpsilonGreedy`` plans the same way on a
    near-empirical MDP; its unseen pairs have mean reward 0, see ``empirical_mdp``.)

    Args:
        num_envs: environments of the batch.
        params: the family's parameters.
        epsilon: probability of a random action, in [0, 1].
        rng: source of the random actions.
        unseen_reward: mean reward of an untried pair in the plan (None: the prior's mean).
    """

    def __init__(self, num_envs: int, params: TabularMDPParams, epsilon: float, rng: np.random.Generator,
                 unseen_reward: float | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"EpsilonGreedy: epsilon must lie in [0, 1], got {epsilon}")
        super().__init__(num_envs, params, unseen_reward)
        self.epsilon, self.rng = epsilon, rng

    def _plan(self, rows: np.ndarray) -> np.ndarray:
        return finite_horizon_q_values(*self.empirical_mdp(rows), self.horizon)

    def _choose(self, states: np.ndarray, steps: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        actions = super()._choose(states, steps, episode_start)
        if self.epsilon > 0:
            explore = self.rng.random(len(actions)) < self.epsilon
            random_actions = self.rng.integers(0, self.params.actions, len(actions), dtype=np.int64)
            actions = np.where(explore, random_actions, actions)
        return actions


# --- simulation and tuning ------------------------------------------------------------------------


def simulate_mdp(policy: Policy, transitions: np.ndarray, reward_means: np.ndarray, params: TabularMDPParams,
                 episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Total reward of one trial of ``episodes`` episodes per MDP, vectorised over the MDPs.

    Drives ``policy`` exactly as ``harness.run.rollout.Sampler`` does: ``reset`` of every row, then one ``act`` per
    step with the previous step's action and float32 reward (zeros at the trial's first step),
    ``episode_start`` at each episode's first step, one-hot float32 states; every episode starts in state 0
    (``TabularMDPEnv.reset``). The env's randomness differs: one reward noise and one uniform (the next state,
    by the inverse CDF as the env does) per step and row from ``rng``.

    Args:
        policy: a fresh policy for ``N`` environments.
        transitions: ``[N, S, A, S]``.
        reward_means: ``[N, S, A]``.
        params: the family's parameters (``S``, ``H``, reward noise).
        episodes: episodes per trial.
        rng: the environments' randomness.

    Returns:
        ``[N]`` total reward of each trial.
    """
    transitions, reward_means = np.asarray(transitions, np.float64), np.asarray(reward_means, np.float64)
    num, states = len(reward_means), params.states
    if reward_means.shape != (num, states, params.actions) or transitions.shape != (*reward_means.shape, states):
        raise ValueError(f"simulate_mdp: transitions {transitions.shape} and reward_means {reward_means.shape} do "
                         f"not fit {states} states and {params.actions} actions")
    cdf = np.cumsum(transitions, axis=-1)
    cdf[..., -1] = 1.0  # as TabularMDPEnv: a uniform draw in [0, 1) always lands on a state
    one_hot = np.eye(states, dtype=np.float32)
    rows = np.arange(num)
    totals = np.zeros(num)
    policy.reset(np.ones(num, bool))
    prev_action, prev_reward = np.zeros(num, np.int64), np.zeros(num, np.float32)
    for _ in range(episodes):
        state = np.zeros(num, np.int64)
        for step in range(params.episode_steps):
            start = np.full(num, step == 0)
            action = np.asarray(policy.act(one_hot[state], prev_action, prev_reward, start, False), np.int64)
            reward = reward_means[rows, state, action] + params.reward_noise_std * rng.standard_normal(num)
            # searchsorted(cdf, u, side="right") row by row: the number of CDF entries <= u.
            state = (cdf[rows, state, action] <= rng.random(num)[:, None]).sum(axis=-1)
            totals += reward
            prev_action, prev_reward = action, reward.astype(np.float32)
    return totals


def tune_mdp_parameter(make_policy: Callable[[float, int, np.random.Generator], Policy], grid: Sequence[float],
                       transitions: np.ndarray, reward_means: np.ndarray, params: TabularMDPParams, episodes: int,
                       rng: np.random.Generator) -> tuple[float, dict[float, float]]:
    """The grid value whose policy earns the most reward per trial on the given MDPs.

    Every candidate sees the same environment and policy random streams (common random numbers: two seeds
    drawn once from ``rng``), so the comparison is paired.

    Args:
        make_policy: ``(value, num_envs, rng) -> policy``.
        grid: candidate values, non-empty; the first of equal best wins.
        transitions: ``[N, S, A, S]`` training MDPs.
        reward_means: ``[N, S, A]``.
        params: the family's parameters.
        episodes: episodes per trial.
        rng: source of the two seeds.

    Returns:
        ``(best value, {value: mean total reward per trial})``.
    """
    def score(value: float, env_rng: np.random.Generator, policy_rng: np.random.Generator) -> float:
        policy = make_policy(value, len(reward_means), policy_rng)
        return float(simulate_mdp(policy, transitions, reward_means, params, episodes, env_rng).mean())

    return tune_by_grid(score, grid, rng, "tune_mdp_parameter")


# --- references -----------------------------------------------------------------------------------


def mdp_tables(tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray]:
    """``(transitions [N, S, A, S], reward_means [N, S, A])`` of ``tabular_mdp`` tasks."""
    transitions = np.array([task.params["transitions"] for task in tasks], np.float64)
    reward_means = np.array([task.params["reward_means"] for task in tasks], np.float64)
    return transitions, reward_means


def mdp_paper_references(params: TabularMDPParams, episodes: int,
                         train_tables: tuple[np.ndarray, np.ndarray] | None = None,
                         rng_seed: int = 0, unseen_reward: float | None = None) -> dict[str, Reference]:
    """The RL² paper's OPSRL, UCRL2, ε-greedy and greedy references for trials of ``episodes`` episodes.

    UCRL2's width scale (``UCRL2_SCALE_GRID``) and ε (``EPSILON_GRID``) are tuned by ``tune_mdp_parameter``
    on ``train_tables`` (``(transitions [N, S, A, S], reward_means [N, S, A])`` of training tasks; ``None``:
    ``TUNING_TASKS`` draws of the family's train split), with generators named under ``rng_seed``. Tuning is
    for ``episodes``; a policy made for another trial length keeps these values. ``unseen_reward`` goes to
    UCRL2 and (ε-)greedy (None: the prior's mean; 0: TabulaRL's convention, see ``empirical_mdp``).

    Returns:
        ``{"opsrl", "ucrl2", "epsilon_greedy", "greedy"}`` → a ``Reference`` each (its ``make`` is a
        ``references.base.PolicyFactory``), in that order.
    """
    if episodes < 1:
        raise ValueError(f"mdp_paper_references: episodes must be >= 1, got {episodes}")
    if train_tables is None:
        family = TabularMDPFamily(params)
        rng = seeding.generator(rng_seed, "mdp_references", "tasks")
        train_tables = mdp_tables([Task(family.name, f"train/{i:04d}", family.sample_params("train", rng))
                                   for i in range(TUNING_TASKS)])
    transitions, reward_means = train_tables
    def tune(make_policy: Callable[[float, int, np.random.Generator], Policy], grid: Sequence[float],
             name: str) -> float:
        rng = seeding.generator(rng_seed, "mdp_references", name)
        return tune_mdp_parameter(make_policy, grid, transitions, reward_means, params, episodes, rng)[0]

    scale = tune(lambda value, n, rng: UCRL2(n, params, value, unseen_reward=unseen_reward), UCRL2_SCALE_GRID,
                 "ucrl2")
    epsilon = tune(lambda value, n, rng: EpsilonGreedy(n, params, value, rng, unseen_reward), EPSILON_GRID,
                   "epsilon_greedy")
    refs = [
        FactoryReference(
            "opsrl",
            f"OPSRL (Osband & Van Roy 2016, TabulaRL): the max of {OPSRL_SAMPLES} posterior MDPs' Q-values, "
            "redrawn at each episode start",
            lambda tasks, e, rng: OptimisticPSRL(len(tasks), params, rng),
        ),
        FactoryReference(
            "ucrl2",
            f"UCRL2 (Jaksch et al. 2010), episodic: extended value iteration, confidence widths ×{scale:g} "
            f"(tuned for {episodes} episodes)",
            lambda tasks, e, rng: UCRL2(len(tasks), params, scale, unseen_reward=unseen_reward),
        ),
        FactoryReference(
            "epsilon_greedy",
            f"ε-greedy, ε = {epsilon:g} (tuned for {episodes} episodes), on the empirical MDP replanned each episode",
            lambda tasks, e, rng: EpsilonGreedy(len(tasks), params, epsilon, rng, unseen_reward),
        ),
        FactoryReference(
            "greedy",
            "greedy: the optimal plan of the empirical MDP, replanned at each episode start",
            lambda tasks, e, rng: EpsilonGreedy(len(tasks), params, 0.0, rng, unseen_reward),
        ),
    ]
    return {ref.name: ref for ref in refs}
