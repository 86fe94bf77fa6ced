"""The RL² paper's other bandit baselines: Gittins index, UCB1 with a tuned constant, ε-greedy and greedy.

Duan et al. 2016 (RL², §4.1, Table 1) compare RL² on Bernoulli bandits with Random, Gittins, Thompson sampling,
UCB1, ε-greedy and greedy, grid-searching the baselines' hyperparameters. ``references/bandit.py`` holds random,
Thompson, textbook UCB1 and the exact Bayes-optimal DP (small k·H only); this module adds the rest:

- ``finite_horizon_gittins_table`` / ``_Gittins``: the finite-horizon Gittins index of each arm's Beta(1, 1)
  posterior for the pulls left in the trial, fast enough for H = 500 (a λ-grid calibration, see below);
- ``gittins_index_discounted``: the textbook discounted index (Gittins, Glazebrook & Weber 2011, ch. 8);
- ``_UCB1Scaled`` (mean + c sqrt(ln t / n_a)), ``_EpsilonGreedy`` (ε = 0: greedy);
- ``simulate_bandit`` and ``tune_bandit_parameter``: a numpy simulator that drives a policy exactly as the
  harness sampler does, and a grid search with common random numbers on training tasks' arm means;
- ``bandit_paper_references``: the four references as ``(tasks_count, rng) -> policy`` factories.

A trial is one bandit game of H = episodes_per_trial × pulls pulls (knowledge carries across its episodes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from algorithms.base import Policy
from harness.references.bandit import BanditPolicy
from harness.references.base import tune_by_grid

# --- Gittins index: finite horizon ----------------------------------------------------------------
#
# The index of an arm in state (s, f) (posterior Beta(1 + s, 1 + f)) with h pulls left is the calibrating
# rate λ at which pulling it now, then stopping optimally (retiring on λ per remaining pull), ties with
# retiring now. With W_λ(h, s, f) = max(0, F_λ(h, s, f)) the advantage of the arm over retiring and
#   F_λ(h, s, f) = p - λ + p W_λ(h - 1, s + 1, f) + (1 - p) W_λ(h - 1, s, f + 1),  p = (s + 1) / (s + f + 2),
# the index is the root of F_λ(h, s, f), a convex, decreasing, piecewise-linear function of λ: F_λ is the max
# over stopping rules τ >= 1 of E[R_τ] - λ E[τ], so the index is also max_τ E[R_τ] / E[τ].
#
# Bisecting λ state by state costs O(h²) per state and O(H^5) in all, too slow for H = 500. Instead, for a
# fixed λ one backward sweep gives F_λ of every state at once, so the table evaluates F on a fixed λ-grid:
# the sweep runs over diagonals m = s + f from H - 1 down to 0, vectorised over (grid λ, h, s), so the
# children (diagonal m + 1) are plain slices. For each state the grid brackets the root, λ_j < index <= λ_{j+1};
# the answer is the larger of the two tangent (Dinkelbach) roots, i.e. the reward rate E[R_τ] / E[τ] of the
# rule optimal at λ_j or λ_{j+1} (a lower bound, exact when no descendant's index lies in the bracket), and
# the chord root is an upper bound. ``GittinsTable.max_error`` is the widest such bracket. Work is grid × H³/6
# (float32: ~4x faster than float64 here, rounding ~1e-6). Measured: at H = 500 the 17-point grid
# (max_error 0.055) gives the same mean total reward as a 65-point one within noise (k = 10: 441.16 vs 441.17,
# SE 0.14 over 4000 tasks); at H = 100, 582 and 4097 points give identical games.

#: λ-grid points × states the default grid may cost (~1 s of numpy); H = 500 gets the minimum grid (17).
_GITTINS_GRID_WORK = 100_000_000
_GITTINS_GRID_MIN, _GITTINS_GRID_MAX = 17, 4097


@dataclass(frozen=True, eq=False)
class GittinsTable:
    """Finite-horizon Gittins indices of a Bernoulli arm with a Beta(1, 1) prior, for every state of an H-pull game.

    Attributes:
        horizon: pulls in the game, H; states have ``remaining + successes + failures <= horizon``.
        grid_points: λ-grid points of the calibration.
        max_error: certified bound on ``|stored - exact|`` over all states (widest bracket; plus float32
            rounding, ~1e-6).
        values: flat float32 indices; diagonal ``m = s + f`` is a ``[horizon - m, m + 1]`` block
            (``remaining - 1``, ``s``) at ``offsets[m]``. Read-only.
        offsets: ``[horizon]`` int64 start of each diagonal's block in ``values``.
    """

    horizon: int
    grid_points: int
    max_error: float
    values: np.ndarray
    offsets: np.ndarray

    def index(self, remaining: np.ndarray | int, successes: np.ndarray | int, failures: np.ndarray | int) -> np.ndarray:
        """Indices of arms with ``remaining >= 1`` pulls left in the game (broadcast arrays of ints)."""
        remaining, successes, failures = (np.asarray(x, np.int64) for x in (remaining, successes, failures))
        pulls = successes + failures
        if (remaining < 1).any() or (successes < 0).any() or (failures < 0).any():
            raise ValueError("GittinsTable.index: need remaining >= 1 and successes, failures >= 0")
        if (remaining + pulls > self.horizon).any():
            raise ValueError(f"GittinsTable.index: remaining + successes + failures exceeds the horizon {self.horizon}")
        return self.values[self.offsets[pulls] + (remaining - 1) * (pulls + 1) + successes]


def default_gittins_grid_points(horizon: int) -> int:
    """λ-grid size that keeps a table build near ``_GITTINS_GRID_WORK`` (4097 for H <= 50, 582 for H = 100, 17 for
    H = 500)."""
    states = horizon * (horizon + 1) * (horizon + 2) // 6
    return int(np.clip(_GITTINS_GRID_WORK // max(states, 1), _GITTINS_GRID_MIN, _GITTINS_GRID_MAX))


def finite_horizon_gittins_table(horizon: int, grid_points: int | None = None) -> GittinsTable:
    """The finite-horizon Gittins index table for an H-pull game (cached; H = 500 takes ~2 s and 84 MB).

    Args:
        horizon: pulls in the game, H >= 1.
        grid_points: λ-grid size (default: ``default_gittins_grid_points(horizon)``); more is finer and slower.
    """
    if horizon < 1:
        raise ValueError(f"finite_horizon_gittins_table: horizon must be >= 1, got {horizon}")
    grid_points = default_gittins_grid_points(horizon) if grid_points is None else grid_points
    if grid_points < 2:
        raise ValueError(f"finite_horizon_gittins_table: grid_points must be >= 2, got {grid_points}")
    return _gittins_table(horizon, grid_points)


@functools.lru_cache(maxsize=2)  # an H = 500 table holds 2.1e7 float32 (84 MB)
def _gittins_table(horizon: int, grid_points: int) -> GittinsTable:
    lam = np.linspace(0.0, 1.0, grid_points, dtype=np.float32)  # [G]; F > 0 at λ = 0 and F < 0 at λ = 1
    lam64 = lam.astype(np.float64)
    sizes = np.array([(horizon - m) * (m + 1) for m in range(horizon)], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    values = np.empty(int(sizes.sum()), np.float32)
    max_error = 0.0
    # W and E[τ] of diagonal m + 1, [G, horizon - m - 1, m + 2]; the last diagonal (m = H - 1) has no children.
    advantage = expected_pulls = np.empty((grid_points, 0, horizon + 1), np.float32)
    for m in range(horizon - 1, -1, -1):
        rows = horizon - m  # remaining pulls h = 1..rows
        mean = (np.arange(m + 1) + 1.0) / (m + 2.0)  # [m + 1] posterior means p
        mean32 = mean.astype(np.float32)
        # gain = F_λ (pull now, stop optimally later); pulls_now = E[τ] of that rule; both [G, rows, m + 1].
        gain = np.empty((grid_points, rows, m + 1), np.float32)
        pulls_now = np.empty_like(gain)
        gain[:, 0] = mean32 - lam[:, None]  # one pull left
        pulls_now[:, 0] = 1.0
        if rows > 1:  # children: won (s + 1) and lost (s) on diagonal m + 1, one pull fewer left
            won, lost = advantage[:, :, 1:], advantage[:, :, :-1]
            g = gain[:, 1:]
            np.subtract(won, lost, out=g)
            g += 1.0
            g *= mean32
            g += lost
            g -= lam[:, None, None]  # p (1 + W_won) + (1 - p) W_lost - λ
            won, lost = expected_pulls[:, :, 1:], expected_pulls[:, :, :-1]
            t = pulls_now[:, 1:]
            np.subtract(won, lost, out=t)
            t *= mean32
            t += lost
            t += 1.0  # 1 + p T_won + (1 - p) T_lost
        pull = gain > 0
        j = pull.sum(axis=0, keepdims=True) - 1  # [1, rows, m + 1]: λ_j < index <= λ_{j+1}
        f0, f1 = (np.take_along_axis(gain, i, 0)[0].astype(np.float64) for i in (j, j + 1))
        t0, t1 = (np.take_along_axis(pulls_now, i, 0)[0].astype(np.float64) for i in (j, j + 1))
        l0, l1 = lam64[j[0]], lam64[j[0] + 1]
        # Lower: the best reward rate of the two grid rules, and of "pull once" (the mean p).
        lower = np.maximum(np.maximum(l0 + f0 / t0, l1 + f1 / t1), mean)
        upper = l0 + (l1 - l0) * f0 / (f0 - f1)  # chord root: F is convex
        max_error = max(max_error, float((upper - lower).max()))
        values[offsets[m] : offsets[m] + sizes[m]] = lower.ravel()
        advantage = np.maximum(gain, 0.0, out=gain)
        expected_pulls = np.multiply(pulls_now, pull, out=pulls_now)  # 0 where retiring is optimal
    values.flags.writeable = False
    offsets.flags.writeable = False
    return GittinsTable(horizon, grid_points, max_error, values, offsets)


class _Gittins(BanditPolicy):
    """Finite-horizon Gittins index policy: the arm whose index for the pulls left in the trial is highest,
    lowest index on ties. Not Bayes-optimal for k >= 2 arms at a finite horizon, but close (within ~1%)."""

    def __init__(self, num_envs: int, arms: int, horizon: int) -> None:
        super().__init__(num_envs, arms)
        self.horizon = horizon
        self.table = finite_horizon_gittins_table(horizon)

    def _choose(self) -> np.ndarray:
        pulled = (self.successes + self.failures).sum(axis=1, keepdims=True)  # [N, 1] pulls so far
        if pulled.max() >= self.horizon:
            raise ValueError(f"gittins: more pulls than the trial horizon {self.horizon} it was built for")
        index = self.table.index(self.horizon - pulled, self.successes, self.failures)  # [N, arms]
        return np.argmax(index, axis=1).astype(np.int64)


# --- Gittins index: discounted (the textbook quantity) --------------------------------------------


def gittins_index_discounted(
    alpha: float, beta: float, gamma: float, tolerance: float = 1e-7, depth: int | None = None
) -> float:
    """Gittins index of a Bernoulli arm with posterior Beta(alpha, beta) and discount factor ``gamma``.

    Calibration (Gittins, Glazebrook & Weber 2011, ch. 8): the λ at which retiring on λ per step forever ties
    with pulling the arm and stopping optimally, ``λ = p + γ E[W_λ(next)]`` with
    ``W_λ(a, b) = max(0, p - λ + γ (p W_λ(a + 1, b) + (1 - p) W_λ(a, b + 1)))``, ``p = a / (a + b)``. States
    deeper than ``depth`` pulls keep their mean frozen (``W = max(0, p - λ) / (1 - γ)``), which moves λ by
    at most ``γ^depth / (1 - γ)``; the default depth makes that ``tolerance``. Each sweep evaluates 33 values
    of λ at once and narrows the bracket 32-fold.
    """
    if alpha <= 0 or beta <= 0 or not 0.0 < gamma < 1.0 or tolerance <= 0:
        raise ValueError(f"gittins_index_discounted: need alpha, beta > 0, 0 < gamma < 1 and tolerance > 0, got "
                         f"{alpha}, {beta}, {gamma}, {tolerance}")
    if depth is None:
        depth = max(1, math.ceil(math.log(tolerance * (1.0 - gamma)) / math.log(gamma)))
    lo, hi = alpha / (alpha + beta), 1.0  # the index is at least the mean and below 1
    while hi - lo > tolerance:
        lam = np.linspace(lo, hi, 33)[:, None]  # [G, 1]
        mean = (alpha + np.arange(depth + 1)) / (alpha + beta + depth)
        advantage = np.maximum(mean - lam, 0.0) / (1.0 - gamma)  # [G, depth + 1]: frozen beyond depth
        for d in range(depth - 1, -1, -1):
            mean = (alpha + np.arange(d + 1)) / (alpha + beta + d)
            gain = mean - lam + gamma * (mean * advantage[:, 1:] + (1.0 - mean) * advantage[:, :-1])
            advantage = np.maximum(gain, 0.0)
        # gain [G, 1] at the root decreases in λ: >= 0 at lo (the mean, then a previous bracket's lower end)
        # and < 0 at hi (1.0: every W is 0 there, then a previous bracket's upper end).
        j = max(int(np.count_nonzero(gain[:, 0] > 0)) - 1, 0)
        lo, hi = float(lam[j, 0]), float(lam[j + 1, 0])
    return 0.5 * (lo + hi)


# --- UCB1 with an exploration constant, ε-greedy ---------------------------------------------------


class _UCB1Scaled(BanditPolicy):
    """UCB1 with exploration constant c: each arm once (lowest index first), then argmax of
    ``mean + c sqrt(ln t / n_a)``. c = sqrt(2) is textbook UCB1 (Auer et al. 2002); the RL² paper tuned c.
    Not Auer et al.'s "UCB1-Tuned", which scales the bonus by a variance estimate."""

    def __init__(self, num_envs: int, arms: int, exploration: float) -> None:
        super().__init__(num_envs, arms)
        if exploration < 0:
            raise ValueError(f"ucb1: exploration constant must be >= 0, got {exploration}")
        self.exploration = exploration

    def _choose(self) -> np.ndarray:
        pulls = self.successes + self.failures  # [N, arms]
        total = pulls.sum(axis=1, keepdims=True)
        safe = np.maximum(pulls, 1)
        bound = self.successes / safe + self.exploration * np.sqrt(np.log(np.maximum(total, 1)) / safe)
        bound = np.where(pulls == 0, np.inf, bound)
        return np.argmax(bound, axis=1).astype(np.int64)


class _EpsilonGreedy(BanditPolicy):
    """With probability ε a uniformly random arm, else the highest empirical mean (lowest index on ties).

    An untried arm counts as the prior mean 0.5 instead of being played first: with k = 50 arms and
    H = 10 pulls, "each arm once" would leave nothing to exploit. ε = 0 is greedy. Every step draws one
    uniform and one random arm per row whatever ε is, so runs with different ε share their random numbers.
    """

    def __init__(self, num_envs: int, arms: int, epsilon: float, rng: np.random.Generator) -> None:
        super().__init__(num_envs, arms)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon_greedy: epsilon must be in [0, 1], got {epsilon}")
        self.epsilon, self.rng = epsilon, rng

    def _choose(self) -> np.ndarray:
        pulls = self.successes + self.failures
        mean = np.where(pulls > 0, self.successes / np.maximum(pulls, 1), 0.5)
        greedy = np.argmax(mean, axis=1)
        explore = self.rng.random(len(pulls)) < self.epsilon
        random_arm = self.rng.integers(0, self.arms, len(pulls))
        return np.where(explore, random_arm, greedy).astype(np.int64)


# --- simulation and tuning on training tasks -------------------------------------------------------

#: UCB1 constants c searched (first wins ties): 0 is "each arm once, then greedy"; sqrt(2) is textbook UCB1.
UCB_EXPLORATION_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, math.sqrt(2.0), 2.0)
#: ε searched for ε-greedy (greedy, ε = 0, is its own reference).
EPSILON_GRID: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
#: Training tasks drawn (means ~ U(0, 1), the RL² paper's prior) when ``bandit_paper_references`` gets none.
DEFAULT_TUNING_TASKS = 1000


def simulate_bandit(
    policy: Policy,
    means: np.ndarray,
    horizon: int,
    rng: np.random.Generator,
    episode_steps: int | None = None,
) -> np.ndarray:
    """Total reward ``[N]`` of one ``horizon``-pull trial per row of ``means: [N, arms]``.

    Drives ``policy`` like ``harness.run.rollout.Sampler``: ``reset`` of every row, then ``act`` with
    ``prev_action = 0``, ``prev_reward = 0`` and ``episode_start = True``, then the previous pull's arm and
    reward. ``episode_start`` is True every ``episode_steps`` pulls (default: only the first). The reward of a
    pull of arm ``a`` is ``u < means[i, a]`` with one uniform ``u`` per row and pull, drawn from ``rng``: the
    draws do not depend on the policy, so two policies given equal seeds see common random numbers.
    """
    means = np.asarray(means, np.float64)
    if means.ndim != 2 or horizon < 1:
        raise ValueError(f"simulate_bandit: need means [N, arms] and horizon >= 1, got {means.shape}, {horizon}")
    num = len(means)
    rows = np.arange(num)
    obs = np.zeros((num, 1), np.float32)
    prev_action = np.zeros(num, np.int64)
    prev_reward = np.zeros(num, np.float32)
    totals = np.zeros(num)
    policy.reset(np.ones(num, bool))
    for t in range(horizon):
        start = t == 0 or (episode_steps is not None and t % episode_steps == 0)
        actions = np.asarray(policy.act(obs, prev_action, prev_reward, np.full(num, start), False), np.int64)
        if actions.shape != (num,):
            raise ValueError(f"simulate_bandit: policy returned actions {actions.shape}, expected ({num},)")
        reward = (rng.random(num) < means[rows, actions]).astype(np.float32)
        totals += reward
        prev_action, prev_reward = actions, reward
    return totals


def tune_bandit_parameter(
    make_policy: Callable[[float, int, np.random.Generator], Policy],
    grid: Sequence[float],
    means: np.ndarray,
    horizon: int,
    rng: np.random.Generator,
) -> tuple[float, dict[float, float]]:
    """Grid search of one hyperparameter on training tasks, as the RL² paper tuned its baselines.

    Every candidate runs on the same tasks with the same environment and policy seeds (common random numbers),
    so differences come from the parameter alone.

    Args:
        make_policy: ``(value, tasks_count, rng) -> policy``.
        grid: candidate values; the first of equally good ones wins.
        means: ``[N, arms]`` training tasks' arm means.
        horizon: pulls per trial.
        rng: source of the two seeds shared by all candidates.

    Returns:
        The best value, and the mean total reward of every candidate.
    """
    def score(value: float, env_rng: np.random.Generator, policy_rng: np.random.Generator) -> float:
        return float(simulate_bandit(make_policy(value, len(means), policy_rng), means, horizon, env_rng).mean())

    return tune_by_grid(score, grid, rng, "tune_bandit_parameter")


# --- the references -------------------------------------------------------------------------------

BanditPolicyFactory = Callable[[int, np.random.Generator], Policy]


@dataclass(frozen=True)
class BanditPaperReference:
    """One RL²-paper baseline for a fixed arm count and trial horizon.

    Attributes:
        name: short key, e.g. ``"gittins"``.
        description: one line for reports (names the tuned value).
        make: ``(tasks_count, rng) -> policy``; ``rng`` is its only source of randomness.
        parameter: the tuned c or ε, the fixed ε = 0 of greedy, or None (gittins).
        tuning: mean training total reward of each grid value searched; None where nothing was tuned.
    """

    name: str
    description: str
    make: BanditPolicyFactory
    parameter: float | None = None
    tuning: dict[float, float] | None = None


def bandit_paper_references(
    arms: int, horizon: int, train_means: np.ndarray | None = None, rng_seed: int = 0
) -> dict[str, BanditPaperReference]:
    """Gittins, UCB1 (tuned c), ε-greedy (tuned ε > 0) and greedy for ``arms`` arms and ``horizon`` pulls a trial.

    Args:
        arms: k.
        horizon: pulls per trial, H = episodes_per_trial × pulls (Gittins plans for exactly this many).
        train_means: ``[N, arms]`` arm means of training tasks to tune on; None draws
            ``DEFAULT_TUNING_TASKS`` from U(0, 1).
        rng_seed: root seed of the tuning (and of the drawn training tasks).
    """
    if arms < 1 or horizon < 1:
        raise ValueError(f"bandit_paper_references: need arms >= 1 and horizon >= 1, got {arms}, {horizon}")
    draw_ss, ucb_ss, epsilon_ss = np.random.SeedSequence(rng_seed).spawn(3)
    if train_means is None:
        train_means = np.random.Generator(np.random.PCG64(draw_ss)).uniform(0.0, 1.0, (DEFAULT_TUNING_TASKS, arms))
    train_means = np.asarray(train_means, np.float64)
    if train_means.ndim != 2 or train_means.shape[1] != arms or not len(train_means):
        raise ValueError(f"bandit_paper_references: train_means must be [N >= 1, {arms}], got {train_means.shape}")

    def ucb(c: float, n: int, rng: np.random.Generator) -> Policy:
        return _UCB1Scaled(n, arms, c)

    def epsilon_greedy(eps: float, n: int, rng: np.random.Generator) -> Policy:
        return _EpsilonGreedy(n, arms, eps, rng)

    c, c_scores = tune_bandit_parameter(ucb, UCB_EXPLORATION_GRID, train_means, horizon,
                                        np.random.Generator(np.random.PCG64(ucb_ss)))
    eps, eps_scores = tune_bandit_parameter(epsilon_greedy, EPSILON_GRID, train_means, horizon,
                                            np.random.Generator(np.random.PCG64(epsilon_ss)))
    refs = [
        BanditPaperReference(
            "gittins",
            "Gittins index (finite horizon, Beta(1, 1) priors): the arm with the highest index for the pulls left",
            lambda n, rng: _Gittins(n, arms, horizon),
        ),
        BanditPaperReference(
            "ucb1_tuned",
            f"UCB1 with c tuned on training tasks (c = {c:.3g}): each arm once, then mean + c sqrt(ln t / n_a)",
            lambda n, rng: _UCB1Scaled(n, arms, c),
            c,
            c_scores,
        ),
        BanditPaperReference(
            "epsilon_greedy",
            f"ε-greedy with ε tuned on training tasks (ε = {eps:g}): else the best empirical mean (untried: 0.5)",
            lambda n, rng: _EpsilonGreedy(n, arms, eps, rng),
            eps,
            eps_scores,
        ),
        BanditPaperReference(
            "greedy",
            "greedy: the best empirical mean (untried arms count as 0.5), lowest index on ties",
            lambda n, rng: _EpsilonGreedy(n, arms, 0.0, rng),
            0.0,
        ),
    ]
    return {ref.name: ref for ref in refs}
