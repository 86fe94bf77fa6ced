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

``base.py`` says what a reference is; ``bandit.py``, ``point_nav.py`` and ``tabular_mdp.py`` hold each family's
policies, ``bandit_paper.py`` and ``tabular_mdp_paper.py`` the RL² paper's tuned baselines; this module says which
references each family offers (``references_for``) and which a suite runs (``selected_references``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from algorithms.base import Policy, Task
from harness.references.bandit import (
    UCB1,
    BayesOptimal,
    OracleArm,
    RandomArm,
    Thompson,
    bayes_optimal_feasible,
)
from harness.references.bandit_paper import bandit_paper_references
from harness.references.base import (
    TRAINED_REFERENCE_LEARNER,
    DeferredReference,
    FactoryReference,
    Reference,
    TrainedReference,
    UniformActions,
)
from harness.references.point_nav import GoTo, RandomMove, non_adaptive_target
from harness.references.tabular_mdp import PSRL, OptimalTabular, RandomAction
from harness.references.tabular_mdp_paper import TUNING_TASKS, mdp_paper_references, mdp_tables
from harness.tasks.bandit import BanditParams
from harness.tasks.base import TaskFamily
from harness.tasks.point_nav import PointNavParams
from harness.tasks.tabular_mdp import TabularMDPParams

__all__ = ["TRAINED_REFERENCE_LEARNER", "Reference", "TrainedReference", "references_for", "selected_references",
           "trained_references"]


def _generic_references(family: TaskFamily) -> dict[str, Reference]:
    """Offered for every family (run when named): uniformly random actions, and the trained ``multitask`` and
    (where the family declares ``task_vector``) ``oracle`` policies."""
    if not isinstance(family, TaskFamily):
        return {}
    def random_actions(tasks: Sequence[Task], e: int, rng: np.random.Generator) -> Policy:
        return UniformActions(family.make_env().action_space, len(tasks), rng)

    refs: list[Reference] = [
        FactoryReference("random", "uniformly random actions from the action space", random_actions, standard=False),
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


# --- what each family offers ----------------------------------------------------------------------


def _bandit_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                        ) -> dict[str, Reference]:  # fmt: skip
    params: BanditParams = family.params  # type: ignore[assignment]
    arms, pulls = params.arms, params.pulls

    def means(tasks: Sequence[Task]) -> np.ndarray:
        return np.array([task.params["means"] for task in tasks], np.float64)  # [N, arms]

    refs: list[Reference] = [
        FactoryReference("random", "uniformly random arm", lambda tasks, e, rng: RandomArm(len(tasks), arms, rng)),
        FactoryReference(
            "ucb1",
            "UCB1 (Auer et al. 2002): each arm once, then mean + sqrt(2 ln t / n_a)",
            lambda tasks, e, rng: UCB1(len(tasks), arms),
        ),
        FactoryReference(
            "thompson",
            "Thompson sampling, Beta(1, 1) priors",
            lambda tasks, e, rng: Thompson(len(tasks), arms, rng),
        ),
        FactoryReference(
            "oracle",
            "told the task: always the arm with the highest mean",
            lambda tasks, e, rng: OracleArm(means(tasks)),
        ),
    ]
    # Offered where the DP for the whole trial is small; policy() still raises for a longer trial.
    if bayes_optimal_feasible(arms, episodes_per_trial * pulls):
        low, high = params.mean_range
        caveat = "" if (low, high) == (0.0, 1.0) else f" (not optimal here: means ~ U({low}, {high}))"
        refs.append(
            FactoryReference(
                "bayes_optimal",
                f"Bayes-optimal: exact DP over Beta(1, 1) posteriors for the trial; assumes means ~ U(0, 1){caveat}",
                lambda tasks, e, rng: BayesOptimal(len(tasks), arms, e * pulls),
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
    refs += [DeferredReference(name, description, build) for name, description in paper.items()]
    return {ref.name: ref for ref in refs}


#: The paper's bandit references built so far in this process, by (params JSON, episodes, training task ids).
_PAPER_BANDIT: dict[tuple[str, int, tuple[str, ...]], dict[str, Reference]] = {}


def _paper_bandit_references(arms: int, horizon: int, train_tasks: Sequence[Task]) -> dict[str, Reference]:
    """``bandit_paper.bandit_paper_references`` for trials of ``horizon`` pulls, tuned on the
    training tasks' arm means (or on means drawn from U(0, 1) where none are given), as ``Reference``s."""
    means = np.array([task.params["means"] for task in train_tasks], np.float64) if train_tasks else None
    built = bandit_paper_references(arms, horizon, means)
    return {name: FactoryReference(name, ref.description, lambda tasks, e, rng, make=ref.make: make(len(tasks), rng),
                             standard=False)
            for name, ref in built.items()}


def _point_nav_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                          ) -> dict[str, Reference]:  # fmt: skip
    params: PointNavParams = family.params  # type: ignore[assignment]
    step_size = params.step_size

    def goals(tasks: Sequence[Task]) -> np.ndarray:
        return np.array([task.params["goal"] for task in tasks], np.float64)  # [N, 2]

    def fixed_target(tasks: Sequence[Task]) -> np.ndarray:
        return np.tile(non_adaptive_target(family), (len(tasks), 1))  # [N, 2]

    refs: list[Reference] = [
        FactoryReference("random", "uniform actions in [-1, 1]^2", lambda tasks, e, rng: RandomMove(len(tasks), rng)),
        FactoryReference(
            "oracle",
            "told the goal: reaches it in the fewest steps (full speed per axis), then stays",
            lambda tasks, e, rng: GoTo(goals(tasks), step_size),
        ),
        FactoryReference(
            "non_adaptive",
            "ignores task and reward: goes to the point best on average over training goals, then stays",
            lambda tasks, e, rng: GoTo(fixed_target(tasks), step_size),
        ),
    ]
    return {ref.name: ref for ref in refs}


def _tabular_mdp_references(family: TaskFamily, episodes_per_trial: int, train_tasks: Sequence[Task]
                             ) -> dict[str, Reference]:  # fmt: skip
    params: TabularMDPParams = family.params  # type: ignore[assignment]
    horizon = params.episode_steps

    def tables(tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray]:
        transitions = np.array([task.params["transitions"] for task in tasks], np.float64)  # [N, S, A, S]
        reward_means = np.array([task.params["reward_means"] for task in tasks], np.float64)  # [N, S, A]
        return transitions, reward_means

    refs: list[Reference] = [
        FactoryReference(
            "random", "uniformly random action", lambda tasks, e, rng: RandomAction(len(tasks), params.actions, rng)
        ),
        FactoryReference(
            "psrl",
            "PSRL (Osband et al. 2013): an MDP drawn from the posterior under the family's prior at each episode "
            "start, followed optimally",
            lambda tasks, e, rng: PSRL(len(tasks), params, rng),
        ),
        FactoryReference(
            "oracle",
            "told the task: the optimal policy of the true MDP (finite-horizon value iteration)",
            lambda tasks, e, rng: OptimalTabular(*tables(tasks), horizon),
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
    refs += [DeferredReference(name, description, build) for name, description in paper.items()]
    return {ref.name: ref for ref in refs}


#: The paper's tuned MDP references built so far in this process, by (params JSON, episodes, training task ids).
_PAPER_MDP: dict[tuple[str, int, tuple[str, ...]], dict[str, Reference]] = {}


def _paper_mdp_references(params: TabularMDPParams, episodes: int, train_tasks: Sequence[Task]
                          ) -> dict[str, Reference]:  # fmt: skip
    """``tabular_mdp_paper.mdp_paper_references``, tuned on the first ``TUNING_TASKS`` training tasks (or on tasks
    drawn from the family where none are given). Unseen pairs are planned with reward 0, TabulaRL's
    convention and so likely the paper's code: with the prior's mean instead, greedy would beat PSRL."""
    train = list(train_tasks)[:TUNING_TASKS]
    return mdp_paper_references(params, episodes, mdp_tables(train) if train else None, unseen_reward=0.0)
