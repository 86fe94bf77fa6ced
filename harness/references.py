"""Reference policies: fixed baselines evaluated with the same protocol as learners.

A report shows them beside the learners (random = 0 and oracle = 1 of the normalised score, DESIGN.md
§7; Thompson sampling, UCB1 and the Bayes-optimal policy are the RL² paper's bandit references, §10, and
PSRL one of its tabular MDP references).
Each reference hands out a fresh batched ``Policy`` for a list of tasks; the sampler drives it exactly
as it drives a learner's policy, so its numbers come from the same environments, seeds and code path.

Policies that use feedback rebuild their per-environment history from ``prev_action``/``prev_reward``
(the previous step's, within the trial). References ignore ``deterministic``: the randomness of random
and Thompson sampling is part of the algorithm, and it is drawn from the ``rng`` they are given, so a
run is reproducible either way.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from algorithms.base import Policy, Task
from harness.tasks.bandit import BanditParams
from harness.tasks.base import TaskFamily
from harness.tasks.point_nav import PointNavFamily, PointNavParams
from harness.tasks.tabular_mdp import TabularMDPParams


class Reference(Protocol):
    """A baseline policy the harness evaluates like a learner.

    Attributes:
        name: short key, e.g. ``"thompson"``.
        description: one line for reports.
    """

    name: str
    description: str

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        """A fresh batched policy for ``tasks`` (row ``i`` of every ``act`` call is ``tasks[i]``).

        ``rng`` is its only source of randomness.
        """
        ...


PolicyFactory = Callable[[Sequence[Task], int, np.random.Generator], Policy]


@dataclass(frozen=True)
class _Reference:
    """A ``Reference`` built from a policy factory; ``standard``: evaluated on the family unless a suite's
    family entry names its own ``references`` (the others are offered, run only when named)."""

    name: str
    description: str
    make: PolicyFactory
    standard: bool = True

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        if not tasks:
            raise ValueError(f"reference {self.name!r}: tasks is empty")
        if episodes_per_trial < 1:
            raise ValueError(f"reference {self.name!r}: episodes_per_trial must be >= 1, got {episodes_per_trial}")
        return self.make(tasks, episodes_per_trial, rng)


@dataclass(frozen=True)
class _Deferred:
    """An offered reference whose policies come from references built on first use: those that tune a
    parameter on the training split (seconds to a minute), which listing, validating and counting the runs
    of a suite never pay for. ``build`` returns the built references by name (and caches them)."""

    name: str
    description: str
    build: Callable[[], dict[str, Reference]]
    standard: bool = False

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        return self.build()[self.name].policy(tasks, episodes_per_trial, rng)


@dataclass(frozen=True)
class TrainedReference:
    """A reference the harness trains within the suite, as a ``ref-*`` run with a training budget and curve
    (``harness.runner``): PPO with an MLP policy (``algorithms.mlp_ppo``), trained on the training tasks.
    ``told``: on the tasks told (``harness.tasks.told``: the task's vector appended to the observation), the
    ``oracle`` of VariBAD and AMAGO; else the ``multitask`` policy, the best a policy that cannot adapt does.
    Offered, run when named (its training costs env steps like a learner's)."""

    name: str
    description: str
    told: bool
    standard: bool = False

    def policy(self, tasks: Sequence[Task], episodes_per_trial: int, rng: np.random.Generator) -> Policy:
        raise TypeError(f"reference {self.name!r} is trained by the harness (harness.runner), not built from tasks")


#: The learner that trained references train (``algorithms.mlp_ppo``).
TRAINED_REFERENCE_LEARNER = "mlp_ppo"


def _generic_references(family: TaskFamily) -> dict[str, Reference]:
    """Offered for every family (run when named): uniformly random actions, and the trained ``multitask`` and
    (where the family declares ``task_vector``) ``oracle`` policies."""
    if not isinstance(family, TaskFamily):
        return {}
    def random_actions(tasks: Sequence[Task], e: int, rng: np.random.Generator) -> Policy:
        return _UniformActions(family.make_env().action_space, len(tasks), rng)

    refs: list[Reference] = [
        _Reference("random", "uniformly random actions from the action space", random_actions, standard=False),
        TrainedReference("multitask", "PPO with an MLP trained on the training tasks, not told the task "
                                      "(trained in the suite: reference_training)", told=False),
    ]
    if type(family).task_vector is not TaskFamily.task_vector:  # the family declares its task vector
        refs.append(TrainedReference("oracle", "PPO with an MLP told the task (its task vector appended to the "
                                               "observation; trained in the suite: reference_training)", told=True))
    return {ref.name: ref for ref in refs}


def references_for(family: TaskFamily, episodes_per_trial: int | None = None,
                   train_tasks: Sequence[Task] = ()) -> dict[str, Reference]:  # fmt: skip
    """Every reference policy offered for a family instance and trials of ``episodes_per_trial`` episodes
    (default: the family's), keyed by name: the family's own, then the generic ones it has no own version of
    (``_generic_references``). ``train_tasks``: the family's training split, on which the references that
    tune a parameter tune it (the first time they are used)."""
    builders: dict[str, Callable[[TaskFamily, int, Sequence[Task]], dict[str, Reference]]] = {
        "bandit": _bandit_references,
        "point_nav": _point_nav_references,
        "tabular_mdp": _tabular_mdp_references,
    }
    build = builders.get(family.name)
    own = build(family, episodes_per_trial or family.default_episodes_per_trial, train_tasks) if build else {}
    return {**own, **{name: ref for name, ref in _generic_references(family).items() if name not in own}}


def trained_references(family: TaskFamily, names: Sequence[str] | None) -> dict[str, TrainedReference]:
    """The trained references among ``names`` (a family entry's ``references``; none in the standard set)."""
    offered = references_for(family) if names else {}
    return {name: ref for name in names or () if isinstance(ref := offered.get(name), TrainedReference)}


class _UniformActions:
    """Uniformly random actions of any ``Discrete`` or bounded ``Box`` action space."""

    def __init__(self, space: object, num_envs: int, rng: np.random.Generator) -> None:
        self.space, self.num_envs, self.rng = space, num_envs, rng

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:  # fmt: skip
        space = self.space
        if hasattr(space, "n"):
            return self.rng.integers(int(space.n), size=len(obs))  # type: ignore[attr-defined]
        low, high = space.low, space.high  # type: ignore[attr-defined]
        return self.rng.uniform(low, high, size=(len(obs), *low.shape)).astype(np.float32)


def selected_references(family: TaskFamily, episodes_per_trial: int | None = None, names: Sequence[str] | None = None,
                        train_tasks: Sequence[Task] = ()) -> dict[str, Reference]:  # fmt: skip
    """The references a suite evaluates on a family: those ``names`` (a family entry's ``references``), in that
    order, or the standard set where ``names`` is ``None``.

    Raises:
        KeyError: a name the family does not offer (a suite is validated against this before it runs).
    """
    offered = references_for(family, episodes_per_trial, train_tasks)
    if names is None:
        return {name: ref for name, ref in offered.items() if getattr(ref, "standard", True)}
    unknown = [name for name in names if name not in offered]
    if unknown:
        raise KeyError(f"references {unknown} not offered for {family.name} (offered: {', '.join(offered)})")
    return {name: offered[name] for name in names}


# --- bandit: shared bookkeeping -------------------------------------------------------------------


class _BanditPolicy:
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


class _RandomArm(_BanditPolicy):
    def __init__(self, num_envs: int, arms: int, rng: np.random.Generator) -> None:
        super().__init__(num_envs, arms)
        self.rng = rng

    def _choose(self) -> np.ndarray:
        return self.rng.integers(0, self.arms, len(self.successes), dtype=np.int64)


class _OracleArm(_BanditPolicy):
    """Always the arm with the highest true mean (told the task)."""

    def __init__(self, means: np.ndarray) -> None:
        super().__init__(*means.shape)
        self.best = np.argmax(means, axis=1).astype(np.int64)

    def _choose(self) -> np.ndarray:
        return self.best.copy()


class _UCB1(_BanditPolicy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002, Fig. 1): each arm once, then argmax mean + sqrt(2 ln t / n_a)."""

    def _choose(self) -> np.ndarray:
        pulls = self.successes + self.failures  # [N, arms]
        total = pulls.sum(axis=1, keepdims=True)  # t: plays so far
        safe = np.maximum(pulls, 1)
        bound = self.successes / safe + np.sqrt(2.0 * np.log(np.maximum(total, 1)) / safe)
        # An unplayed arm scores +inf, so argmax (first maximum) plays the lowest-index unplayed arm.
        bound = np.where(pulls == 0, np.inf, bound)
        return np.argmax(bound, axis=1).astype(np.int64)


class _Thompson(_BanditPolicy):
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


class _BayesOptimal(_BanditPolicy):
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


def _bandit_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                        ) -> dict[str, Reference]:  # fmt: skip
    params: BanditParams = family.params  # type: ignore[assignment]
    arms, pulls = params.arms, params.pulls

    def means(tasks: Sequence[Task]) -> np.ndarray:
        return np.array([task.params["means"] for task in tasks], np.float64)  # [N, arms]

    refs: list[Reference] = [
        _Reference("random", "uniformly random arm", lambda tasks, e, rng: _RandomArm(len(tasks), arms, rng)),
        _Reference(
            "ucb1",
            "UCB1 (Auer et al. 2002): each arm once, then mean + sqrt(2 ln t / n_a)",
            lambda tasks, e, rng: _UCB1(len(tasks), arms),
        ),
        _Reference(
            "thompson",
            "Thompson sampling, Beta(1, 1) priors",
            lambda tasks, e, rng: _Thompson(len(tasks), arms, rng),
        ),
        _Reference(
            "oracle",
            "told the task: always the arm with the highest mean",
            lambda tasks, e, rng: _OracleArm(means(tasks)),
        ),
    ]
    # Offered where the DP for the whole trial is small; policy() still raises for a longer trial.
    if bayes_optimal_feasible(arms, episodes_per_trial * pulls):
        low, high = params.mean_range
        caveat = "" if (low, high) == (0.0, 1.0) else f" (not optimal here: means ~ U({low}, {high}))"
        refs.append(
            _Reference(
                "bayes_optimal",
                f"Bayes-optimal: exact DP over Beta(1, 1) posteriors for the trial; assumes means ~ U(0, 1){caveat}",
                lambda tasks, e, rng: _BayesOptimal(len(tasks), arms, e * pulls),
            )
        )
    # The RL² paper's other baselines (Table 1), run when a suite names them; UCB1's c and ε are tuned on the
    # training split's arm means the first time one of them is used (the Gittins table is built then too).
    key = (params.model_dump_json(), episodes_per_trial, tuple(task.task_id for task in train_tasks))

    def build() -> dict[str, Reference]:
        if key not in _PAPER_BANDIT:
            _PAPER_BANDIT[key] = _paper_bandit_references(arms, episodes_per_trial * pulls, train_tasks)
        return _PAPER_BANDIT[key]

    low, high = params.mean_range
    prior = "" if (low, high) == (0.0, 1.0) else f"; assumes means ~ U(0, 1), here U({low}, {high})"
    paper = {
        "gittins": f"Gittins index (finite horizon, Beta(1, 1) priors) for the pulls left in the trial{prior}",
        "ucb1_tuned": "UCB1 with its exploration constant c tuned on the training split: each arm once, then "
                      "mean + c sqrt(ln t / n_a)",
        "epsilon_greedy": "ε-greedy with ε tuned on the training split; else the best empirical mean (untried: 0.5)",
        "greedy": "greedy: the best empirical mean (untried: 0.5)",
    }
    refs += [_Deferred(name, description, build) for name, description in paper.items()]
    return {ref.name: ref for ref in refs}


#: The paper's bandit references built so far in this process, by (params JSON, episodes, training task ids).
_PAPER_BANDIT: dict[tuple[str, int, tuple[str, ...]], dict[str, Reference]] = {}


def _paper_bandit_references(arms: int, horizon: int, train_tasks: Sequence[Task]) -> dict[str, Reference]:
    """``harness.bandit_references.bandit_paper_references`` for trials of ``horizon`` pulls, tuned on the
    training tasks' arm means (or on means drawn from U(0, 1) where none are given), as ``Reference``s."""
    from harness.bandit_references import bandit_paper_references  # it builds on this module

    means = np.array([task.params["means"] for task in train_tasks], np.float64) if train_tasks else None
    built = bandit_paper_references(arms, horizon, means)
    return {name: _Reference(name, ref.description, lambda tasks, e, rng, make=ref.make: make(len(tasks), rng),
                             standard=False)
            for name, ref in built.items()}


# --- point_nav --------------------------------------------------------------------------------------


class _RandomMove:
    """Uniform actions in [-1, 1]^2."""

    def __init__(self, num_envs: int, rng: np.random.Generator) -> None:
        self.num_envs, self.rng = num_envs, rng

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
        """Actions ``[N, 2]`` float32."""
        return self.rng.uniform(-1.0, 1.0, (self.num_envs, 2)).astype(np.float32)


class _GoTo:
    """Moves each environment's point to its target in the fewest steps, then stays there.

    The move ``step_size * clip((target - p) / step_size)`` is the point of the reachable box nearest the
    target, so after ``t`` steps the point is the nearest to the target of all positions reachable in ``t``
    steps: for the goal as target this minimises every step's distance (optimal for dense and sparse).

    Args:
        targets: ``[N, 2]`` target positions.
        step_size: the family's largest move per step along each axis.
    """

    def __init__(self, targets: np.ndarray, step_size: float) -> None:
        self.targets = np.asarray(targets, np.float64)
        self.step_size = step_size

    def reset(self, new_trial: np.ndarray) -> None:
        pass  # memoryless: the position is in the observation

    def act(
        self,
        obs: np.ndarray,
        prev_action: np.ndarray,
        prev_reward: np.ndarray,
        episode_start: np.ndarray,
        deterministic: bool,
    ) -> np.ndarray:
        """Actions ``[N, 2]`` float32 for positions ``obs: [N, 2]``."""
        return np.clip((self.targets - obs) / self.step_size, -1.0, 1.0).astype(np.float32)


#: Fixed seed and sample size of the training goals that choose the non-adaptive target.
_NON_ADAPTIVE_SEED = 0
_NON_ADAPTIVE_GOALS = 2000
#: Points per axis of the coarse and of the fine grid search; odd, so a grid centred on the origin holds it.
_NON_ADAPTIVE_GRID = 41


def _mean_reward_at(points: np.ndarray, goals: np.ndarray, params: PointNavParams) -> np.ndarray:
    """Mean per-step reward of standing at each of ``points: [P, 2]`` over ``goals: [G, 2]``; ``[P]``."""
    distance = np.hypot(points[:, None, 0] - goals[None, :, 0], points[:, None, 1] - goals[None, :, 1])  # [P, G]
    if params.reward == "sparse":
        return (distance <= params.goal_radius).mean(axis=1)
    return -distance.mean(axis=1)


def _grid_search(center: np.ndarray, half: float, goals: np.ndarray, params: PointNavParams) -> np.ndarray:
    """The point ``[2]`` of a square grid (``center ± half``) with the highest mean reward; first on ties."""
    axis = np.linspace(-half, half, _NON_ADAPTIVE_GRID)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2) + center  # [P, 2]
    return points[int(np.argmax(_mean_reward_at(points, goals, params)))]


@functools.lru_cache(maxsize=16)
def _non_adaptive_target(params: PointNavParams) -> tuple[float, float]:
    family = PointNavFamily(params)
    rng = np.random.Generator(np.random.PCG64(_NON_ADAPTIVE_SEED))
    goals = np.array([family.sample_params("train", rng)["goal"] for _ in range(_NON_ADAPTIVE_GOALS)])  # [G, 2]
    # Coarse: a square centred on the origin (where episodes start) covering every goal's reward region;
    # fine: one coarse cell around the best coarse point (resolution half / 400, ~0.003 by default).
    half = float(np.linalg.norm(goals, axis=1).max()) + params.goal_radius
    coarse = _grid_search(np.zeros(2), half, goals, params)
    fine = _grid_search(coarse, 2 * half / (_NON_ADAPTIVE_GRID - 1), goals, params)
    return float(fine[0]), float(fine[1])


def non_adaptive_target(family: TaskFamily) -> np.ndarray:
    """The point ``[2]`` where the non-adaptive reference stands: the grid point with the highest mean
    per-step reward over training goals (a fixed sample, so the same for every call)."""
    return np.array(_non_adaptive_target(family.params), np.float64)  # type: ignore[arg-type]


def _point_nav_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                          ) -> dict[str, Reference]:  # fmt: skip
    params: PointNavParams = family.params  # type: ignore[assignment]
    step_size = params.step_size

    def goals(tasks: Sequence[Task]) -> np.ndarray:
        return np.array([task.params["goal"] for task in tasks], np.float64)  # [N, 2]

    def fixed_target(tasks: Sequence[Task]) -> np.ndarray:
        return np.tile(non_adaptive_target(family), (len(tasks), 1))  # [N, 2]

    refs: list[Reference] = [
        _Reference("random", "uniform actions in [-1, 1]^2", lambda tasks, e, rng: _RandomMove(len(tasks), rng)),
        _Reference(
            "oracle",
            "told the goal: reaches it in the fewest steps (full speed per axis), then stays",
            lambda tasks, e, rng: _GoTo(goals(tasks), step_size),
        ),
        _Reference(
            "non_adaptive",
            "ignores task and reward: goes to the point best on average over training goals, then stays",
            lambda tasks, e, rng: _GoTo(fixed_target(tasks), step_size),
        ),
    ]
    return {ref.name: ref for ref in refs}


# --- tabular_mdp ------------------------------------------------------------------------------------


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


class _TabularPolicy:
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


class _RandomAction:
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


class _OptimalTabular(_TabularPolicy):
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


class _CountingTabular(_TabularPolicy):
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


def tune_by_grid(score: Callable[[float, np.random.Generator, np.random.Generator], float], grid: Sequence[float],
                 rng: np.random.Generator, name: str) -> tuple[float, dict[float, float]]:  # fmt: skip
    """Grid search of one hyperparameter, as the RL² paper tuned its baselines: ``score(value, env_rng,
    policy_rng)`` of every candidate, each given generators from the same two seeds drawn once from ``rng``
    (common random numbers: the comparison is paired). Returns the best value (the first of equal best, in
    grid order) and every candidate's score. ``name`` names the caller in the error for an empty grid."""
    if not grid:
        raise ValueError(f"{name}: grid is empty")
    env_seed, policy_seed = (int(seed) for seed in rng.integers(0, 2**63 - 1, size=2))
    scores: dict[float, float] = {}
    for value in grid:
        scores[float(value)] = score(value, np.random.Generator(np.random.PCG64(env_seed)),
                                     np.random.Generator(np.random.PCG64(policy_seed)))
    best = max(scores, key=scores.__getitem__)  # max returns the first of equal maxima
    return best, scores


class _PSRL(_CountingTabular):
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


def _tabular_mdp_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                             ) -> dict[str, Reference]:  # fmt: skip
    params: TabularMDPParams = family.params  # type: ignore[assignment]
    horizon = params.episode_steps

    def tables(tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray]:
        transitions = np.array([task.params["transitions"] for task in tasks], np.float64)  # [N, S, A, S]
        reward_means = np.array([task.params["reward_means"] for task in tasks], np.float64)  # [N, S, A]
        return transitions, reward_means

    refs: list[Reference] = [
        _Reference(
            "random", "uniformly random action", lambda tasks, e, rng: _RandomAction(len(tasks), params.actions, rng)
        ),
        _Reference(
            "psrl",
            "PSRL (Osband et al. 2013): an MDP drawn from the posterior under the family's prior at each episode "
            "start, followed optimally",
            lambda tasks, e, rng: _PSRL(len(tasks), params, rng),
        ),
        _Reference(
            "oracle",
            "told the task: the optimal policy of the true MDP (finite-horizon value iteration)",
            lambda tasks, e, rng: _OptimalTabular(*tables(tasks), horizon),
        ),
    ]
    # The RL² paper's other baselines (Table 2), run when a suite names them; UCRL2's width scale and ε are
    # tuned on (the first TUNING_TASKS of) the training split the first time one of them is used.
    key = (params.model_dump_json(), episodes_per_trial, tuple(task.task_id for task in train_tasks))

    def build() -> dict[str, Reference]:
        if key not in _PAPER_MDP:
            _PAPER_MDP[key] = _paper_mdp_references(params, episodes_per_trial, train_tasks)
        return _PAPER_MDP[key]

    paper = {
        "opsrl": "OPSRL (Osband & Van Roy 2016, TabulaRL): the max of 10 posterior MDPs' Q-values, redrawn at "
                 "each episode start",
        "ucrl2": "UCRL2 (Jaksch et al. 2010), episodic: extended value iteration; confidence-width scale tuned on "
                 "the training split",
        "epsilon_greedy": "ε-greedy on the empirical MDP replanned at each episode start; ε tuned on the training "
                          "split",
        "greedy": "greedy: the optimal plan of the empirical MDP, replanned at each episode start",
    }
    refs += [_Deferred(name, description, build) for name, description in paper.items()]
    return {ref.name: ref for ref in refs}


#: The paper's tuned MDP references built so far in this process, by (params JSON, episodes, training task ids).
_PAPER_MDP: dict[tuple[str, int, tuple[str, ...]], dict[str, Reference]] = {}


def _paper_mdp_references(params: TabularMDPParams, episodes: int, train_tasks: Sequence[Task]
                          ) -> dict[str, Reference]:  # fmt: skip
    """``harness.mdp_references.mdp_paper_references``, tuned on the first ``TUNING_TASKS`` training tasks (or on
    tasks drawn from the family where none are given). Unseen pairs are planned with reward 0, TabulaRL's
    convention and so likely the paper's code: with the prior's mean instead, greedy would beat PSRL."""
    from harness.mdp_references import TUNING_TASKS, mdp_paper_references, mdp_tables  # it builds on this module

    train = list(train_tasks)[:TUNING_TASKS]
    return mdp_paper_references(params, episodes, mdp_tables(train) if train else None, unseen_reward=0.0)
