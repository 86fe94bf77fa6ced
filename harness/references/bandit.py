"""The bandit family's analytic references: random, the oracle, textbook UCB1, Thompson sampling and the exact
Bayes-optimal DP (small k·H only); ``harness/references/bandit_paper.py`` adds the RL² paper's tuned ones.
"""

from __future__ import annotations

import bisect
import functools

import numpy as np


class BanditPolicy:
    """Per-environment Beta posterior counts rebuilt from ``prev_action``/``prev_reward``.

    Subclasses implement ``_choose``. ``successes``/``failures`` are ``[N, arms]`` int64 and count the
    pulls of the current trial (they carry across its episodes: knowledge of the arms is kept).
    """

    def __init__(self, num_envs: int, arms: int) -> None:
        self.arms = arms
        self.successes = np.zeros((num_envs, arms), np.int64)
        self.failures = np.zeros((num_envs, arms), np.int64)
        # False right after a reset: the sampler's zero prev_action/prev_reward is not a pull.
        self._has_prev = np.zeros(num_envs, bool)

    def reset(self, new_trial: np.ndarray) -> None:
        self.successes[new_trial] = 0
        self.failures[new_trial] = 0
        self._has_prev[new_trial] = False

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Arms ``[N]`` int64; ``episode_start`` is irrelevant (memory spans the trial)."""
        if len(obs) != len(self._has_prev):
            raise ValueError(f"act: {len(obs)} observations for a policy of {len(self._has_prev)} tasks")
        rows = np.flatnonzero(self._has_prev)
        arms = np.asarray(prev_action, np.int64).reshape(-1)[rows]
        won = np.rint(np.asarray(prev_reward)[rows]).astype(np.int64)  # Bernoulli rewards: 0 or 1
        self.successes[rows, arms] += won
        self.failures[rows, arms] += 1 - won
        self._has_prev[:] = True
        return self._choose()

    def _choose(self) -> np.ndarray:
        raise NotImplementedError


class RandomArm(BanditPolicy):
    def __init__(self, num_envs: int, arms: int, rng: np.random.Generator) -> None:
        super().__init__(num_envs, arms)
        self.rng = rng

    def _choose(self) -> np.ndarray:
        return self.rng.integers(0, self.arms, len(self.successes), dtype=np.int64)


class OracleArm(BanditPolicy):
    """Always the arm with the highest true mean (told the task)."""

    def __init__(self, means: np.ndarray) -> None:
        super().__init__(*means.shape)
        self.best = np.argmax(means, axis=1).astype(np.int64)

    def _choose(self) -> np.ndarray:
        return self.best.copy()


class UCB1(BanditPolicy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002, Fig. 1): each arm once, then argmax mean + sqrt(2 ln t / n_a)."""

    def _choose(self) -> np.ndarray:
        pulls = self.successes + self.failures  # [N, arms]
        total = pulls.sum(axis=1, keepdims=True)  # t: plays so far
        safe = np.maximum(pulls, 1)
        bound = self.successes / safe + np.sqrt(2.0 * np.log(np.maximum(total, 1)) / safe)
        # An unplayed arm scores +inf, so argmax (first maximum) plays the lowest-index unplayed arm.
        bound = np.where(pulls == 0, np.inf, bound)
        return np.argmax(bound, axis=1).astype(np.int64)


class Thompson(BanditPolicy):
    """Thompson sampling with Beta(1, 1) priors: one posterior draw per arm, play the largest."""

    def __init__(self, num_envs: int, arms: int, rng: np.random.Generator) -> None:
        super().__init__(num_envs, arms)
        self.rng = rng

    def _choose(self) -> np.ndarray:
        draws = self.rng.beta(1.0 + self.successes, 1.0 + self.failures)
        return np.argmax(draws, axis=1).astype(np.int64)


# --- bandit: the Bayes-optimal policy -------------------------------------------------------------

#: Largest number of posterior states (multisets of per-arm (successes, failures) with fewer than H pulls
#: in all) for which ``bayes_optimal`` is offered: the DP then takes at most ~2-4 s and ~100 MB in CPython
#: (~4-8 µs per state). Largest horizons offered: k=2 → H=68, k=3 → 33, k=5 → 21, k=10 → 19; k=5, H=100
#: would need ~3.6e11 states.
MAX_BAYES_OPTIMAL_STATES = 500_000


def _pair_code(successes: int | np.ndarray, failures: int | np.ndarray) -> int | np.ndarray:
    """Cantor code of an arm's (successes, failures): ``m (m + 1) / 2 + s`` with ``m = s + f``."""
    pulls = successes + failures
    return pulls * (pulls + 1) // 2 + successes


def bayes_optimal_state_count(arms: int, horizon: int) -> int:
    """Number of posterior states with fewer than ``horizon`` pulls, up to arm symmetry (the DP's memo).

    A state is a multiset of ``arms`` pairs ``(s, f)``; the count is the sum over totals ``t < horizon`` of
    the coefficient of ``y^arms x^t`` in ``prod_m (1 - y x^m)^-(m + 1)`` (``m + 1`` pairs have ``s + f = m``).
    Stops counting once above ``MAX_BAYES_OPTIMAL_STATES`` and then returns a number above it.
    """
    top = max(horizon - 1, 0)
    # ways[j][t]: multisets of j pairs with t pulls in all, over the pair types added so far.
    ways = [[0] * (top + 1) for _ in range(arms + 1)]
    ways[0][0] = 1
    for m in range(top + 1):
        for _ in range(m + 1):  # each of the m + 1 pair types with s + f = m
            for j in range(1, arms + 1):
                for t in range(m, top + 1):
                    ways[j][t] += ways[j - 1][t - m]
        # Pairs with more than m pulls cannot reach a total of m, so totals <= m are final here.
        so_far = sum(ways[arms][: m + 1])
        if so_far > MAX_BAYES_OPTIMAL_STATES:
            return so_far
    return sum(ways[arms])


def bayes_optimal_feasible(arms: int, horizon: int) -> bool:
    """Whether the exact DP for ``arms`` arms and ``horizon`` pulls is small enough to offer."""
    return bayes_optimal_state_count(arms, horizon) <= MAX_BAYES_OPTIMAL_STATES


class _BetaBernoulliDP:
    """Exact finite-horizon DP for a Bernoulli bandit with independent Beta(1, 1) priors on the arms.

    ``V(state) = max_a p_a (1 + V(state | a won)) + (1 - p_a) V(state | a lost)`` with the posterior mean
    ``p_a = (s_a + 1) / (s_a + f_a + 2)`` and ``V = 0`` once ``horizon`` pulls are made. Arms are
    exchangeable, so a state is the sorted tuple of per-arm pair codes (``_pair_code``), memoised.
    """

    def __init__(self, arms: int, horizon: int) -> None:
        self.arms, self.horizon = arms, horizon
        size = (horizon + 2) * (horizon + 3) // 2  # codes of every pair with at most horizon + 1 pulls
        self._pulls = [0] * size
        self._mean = [0.0] * size
        self._won = [0] * size
        self._lost = [0] * size
        for m in range(horizon + 2):
            for s in range(m + 1):
                code = int(_pair_code(s, m - s))
                self._pulls[code], self._mean[code] = m, (s + 1) / (m + 2)
                if m <= horizon:
                    self._won[code], self._lost[code] = int(_pair_code(s + 1, m - s)), int(_pair_code(s, m - s + 1))
        self._values: dict[tuple[int, ...], float] = {}
        self._best: dict[tuple[int, ...], frozenset[int]] = {}

    def value(self, state: tuple[int, ...]) -> float:
        """Expected reward of the remaining pulls from ``state`` (sorted pair codes) under optimal play."""
        return self._value(state, sum(self._pulls[c] for c in state))

    def _value(self, state: tuple[int, ...], pulls: int) -> float:
        if pulls >= self.horizon:
            return 0.0
        cached = self._values.get(state)
        if cached is not None:
            return cached
        best = max(self._q_values(state, pulls).values())
        self._values[state] = best
        return best

    def _q_values(self, state: tuple[int, ...], pulls: int) -> dict[int, float]:
        """Q of pulling an arm of each distinct pair code in ``state``."""
        q: dict[int, float] = {}
        for i, code in enumerate(state):
            if code in q:
                continue  # identical arms have identical values
            rest = state[:i] + state[i + 1 :]
            won, lost = self._won[code], self._lost[code]
            i_won, i_lost = bisect.bisect(rest, won), bisect.bisect(rest, lost)
            value_won = self._value((*rest[:i_won], won, *rest[i_won:]), pulls + 1)
            value_lost = self._value((*rest[:i_lost], lost, *rest[i_lost:]), pulls + 1)
            mean = self._mean[code]
            q[code] = mean * (1.0 + value_won) + (1.0 - mean) * value_lost
        return q

    def best_codes(self, state: tuple[int, ...]) -> frozenset[int]:
        """The pair codes whose arms are optimal to pull in ``state`` (ties within 1e-9)."""
        best = self._best.get(state)
        if best is None:
            q = self._q_values(state, sum(self._pulls[c] for c in state))
            top = max(q.values())
            best = frozenset(code for code, value in q.items() if value >= top - 1e-9)
            self._best[state] = best
        return best


@functools.lru_cache(maxsize=2)  # each solved DP may hold ~100 MB of memo
def _solved_dp(arms: int, horizon: int) -> _BetaBernoulliDP:
    if not bayes_optimal_feasible(arms, horizon):
        raise ValueError(
            f"bayes_optimal: {arms} arms and horizon {horizon} exceed MAX_BAYES_OPTIMAL_STATES="
            f"{MAX_BAYES_OPTIMAL_STATES} posterior states; the exact DP is not offered there"
        )
    dp = _BetaBernoulliDP(arms, horizon)
    dp.value((0,) * arms)  # fills the memo for every reachable state
    return dp


def bayes_optimal_value(arms: int, horizon: int) -> float:
    """Expected total reward of the Bayes-optimal policy over ``horizon`` pulls, arm means iid U(0, 1).

    The limit of any learner on that prior; ``bayes_optimal_value(5, 10) ≈ 6.66`` (the RL² paper's
    Gittins figure for k=5, n=10 is 6.6).

    Raises:
        ValueError: the DP is larger than ``MAX_BAYES_OPTIMAL_STATES`` states.
    """
    if arms < 1 or horizon < 0:
        raise ValueError(f"bayes_optimal_value: need arms >= 1 and horizon >= 0, got {arms}, {horizon}")
    return _solved_dp(arms, horizon).value((0,) * arms)


class BayesOptimal(BanditPolicy):
    """Plays an optimal arm of the solved DP; among optimal arms, the lowest index."""

    def __init__(self, num_envs: int, arms: int, horizon: int) -> None:
        super().__init__(num_envs, arms)
        self.dp = _solved_dp(arms, horizon)

    def _choose(self) -> np.ndarray:
        if (self.successes + self.failures).sum(axis=1).max() >= self.dp.horizon:
            raise ValueError(f"bayes_optimal: more pulls than the trial horizon {self.dp.horizon} it was solved for")
        codes = _pair_code(self.successes, self.failures).tolist()  # [N][arms]
        actions = np.empty(len(codes), np.int64)
        for row, arm_codes in enumerate(codes):
            best = self.dp.best_codes(tuple(sorted(arm_codes)))
            actions[row] = next(arm for arm, code in enumerate(arm_codes) if code in best)
        return actions

