"""The conformance kit behind ``python -m harness check-learner``: does a learner keep the contract of
``algorithms/base.py`` well enough to be benchmarked beside the built-in ones?

Each check runs the learner on a cheap family (``bandit``: 5 arms, 10 pulls; ``point_nav`` for a learner
that cannot act on discrete actions) with a small config and budget, directly through the contract or
through the runner on a tiny suite in a temporary directory, and says pass, fail (with the reason) or skip:

* ``protocol``: the class is a ``LearnerClass``; its ``Config`` is a frozen dataclass with a docstring, a
  default, a type and a ``metadata={"doc": ...}`` for every field (as every built-in's); its presets
  build; it builds on the family's spaces into a ``MetaLearner``.
* ``batched acting``: its exploration policy (and an adapted one) acts on a batch of environments with one
  call per step, returning one valid action per environment.
* ``adapt isolation``: exploring and ``adapt`` leave the learner's ``state_dict`` (its generators
  included) and the policy they adapt untouched (``tests/test_evaluation_isolation.py`` checks the same
  on full runs).
* ``state_dict round trip``: ``state_dict`` → ``torch.save`` → ``torch.load(weights_only=True)`` →
  ``load_state_dict`` into a learner built with another seed, and the next iterations are bit-identical.
* ``seeding``: the same seed gives identical rows, also when the global generators are seeded otherwise;
  different seeds give different learners and rows.
* ``global RNG``: a whole run leaves ``random``, NumPy's legacy global generator and torch's global
  generators where they were.
* ``memory reset``: the first action of a trial does not depend on the previous trial (judged by the
  actions, as the harness sees a policy: a leak that barely moves an untrained policy's action
  probabilities can go unseen on discrete actions).
* ``resume``: a run stopped right after a checkpoint and resumed ends with the rows of an uninterrupted
  run (the runner's side, dropping work done after the checkpoint, is ``tests/test_faults.py``'s).
* ``learns`` (skipped with ``--quick``): within a small budget its final test score beats the family's
  random reference by a clear margin, on the very same evaluation trials.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import random
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from algorithms.base import LearnerClass, MetaEnvInfo, MetaLearner, Policy, Task, TrialBatch
from algorithms.registry import learner_class, learner_source
from harness.references import TrainedReference, references_for
from harness.run.executors import prepare, run_local
from harness.run.rollout import Sampler
from harness.run.runner import execute, state_differences
from harness.run.store import REFERENCE_PREFIX, SuiteDir
from harness.spec.splits import family_split
from harness.spec.suite import SpecError, Suite, build_config, parse_suite

CHECKS = ("protocol", "batched acting", "adapt isolation", "state_dict round trip", "seeding", "global RNG",
          "memory reset", "resume", "learns")  # in the order they run

#: The kit's cheap families, tried in this order when none is given: parameters and episodes per trial.
FAMILIES: dict[str, dict[str, Any]] = {
    "bandit": {"params": {"arms": 5, "pulls": 10}, "episodes_per_trial": 2},
    "point_nav": {"params": {"episode_steps": 10}, "episodes_per_trial": 2},
}

#: The built-in learners' small settings (preset, config), as ``tests/test_evaluation_isolation.py``'s, so that
#: the kit runs in seconds; another learner runs with its defaults unless ``--preset``/``--config`` say otherwise.
SMALL: dict[str, tuple[str | None, dict[str, Any]]] = {
    "maml": ("cheap", {"hidden_sizes": [16, 16]}),
    "mlp_ppo": (None, {"hidden_sizes": [16, 16], "epochs": 2, "minibatches": 2}),
    "pearl": ("cheap", {"hidden_size": 32, "encoder_hidden_size": 32, "meta_batch_tasks": 4, "batch_transitions": 16,
                        "context_transitions": 10, "gradient_steps": 2, "collect_tasks": 2, "initial_env_steps": 10,
                        "prior_env_steps": 10}),
    "rl2": (None, {"hidden_size": 16, "epochs": 2}),
    "trmrl": ("cheap", {"layers": 1, "d_model": 16, "ff_size": 32, "heads": 2, "working_memory": 10, "epochs": 2}),
}

#: The ``learns`` check's settings of the built-in learners (preset, config, budget, meta-batch), in place of their
#: ``SMALL`` ones: a setting that learns within a small budget.
LEARNING: dict[str, dict[str, Any]] = {
    # Measured on bandit (5 arms, 10 pulls, 2 episodes per trial; random ≈ 4.9, oracle ≈ 8.2, margin ≈ 0.65):
    # RL² 6.4, TrMRL 6.3, MAML's adapted episode 6.1 (random 4.7); PEARL's on point_nav (10 steps) -7.8 (random
    # -10.2, oracle -3.9, margin ≈ 1.3). About 20, 20, 5 and 13 s on one busy core.
    "maml": {"preset": "cheap", "config": {"hidden_sizes": [16, 16]}, "env_steps": 60_000, "tasks_per_iteration": 50},
    "pearl": {"preset": "cheap", "env_steps": 10_000, "tasks_per_iteration": 5},
    "rl2": {"config": {"hidden_size": 64, "lr": 3e-3}, "env_steps": 200_000, "tasks_per_iteration": 100},
    "trmrl": {"preset": "cheap", "config": {"working_memory": 20, "shared_value": True, "policy_lr": 1e-3},
              "env_steps": 200_000, "tasks_per_iteration": 100},
}
#: The ``learns`` check's budget and meta-batch where ``LEARNING`` does not say (another learner runs with the
#: kit's preset and config).
LEARNING_DEFAULT: dict[str, Any] = {"env_steps": 100_000, "tasks_per_iteration": 50}
#: The margin over random the ``learns`` check asks for, as a fraction of the gap from random to the family's
#: ``oracle`` reference (a policy told the task), where the family offers one that needs no training.
MARGIN = 0.2

#: Environments per batch in the direct checks (an odd number, unlike any default meta-batch).
BATCH = 5
#: Environments of the memory check: the more, the likelier a memory that moves an untrained policy's action
#: probabilities only a little changes some first action.
MEMORY_BATCH = 32


@dataclass(frozen=True)
class CheckResult:
    """One line of the kit's table: ``status`` is ``pass``, ``fail`` or ``skip``."""

    check: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class KitReport:
    """What ``check_learner`` found, and on what."""

    learner: str
    setting: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    def table(self) -> str:
        """The pass/fail table, one check a line, each failure with its reason."""
        width = max(len(c) for c in CHECKS)
        lines = [f"check-learner {self.learner}", f"  {self.setting}", "",
                 f"{'check':<{width}}  result  {'time':>6}  reason"]
        for r in self.results:
            seconds = f"{r.seconds:5.1f}s" if r.status != "skip" else ""
            lines.append(f"{r.check:<{width}}  {r.status:<6}  {seconds:>6}  {r.reason}".rstrip())
        counts = {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}
        lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"]
        return "\n".join(lines)


class _Failed(Exception):
    """A check failed; the message is its reason."""


class _Skipped(Exception):
    """A check was not run; the message says why."""


# --- the set-up --------------------------------------------------------------------------------------


@dataclass
class _Kit:
    """The learner under test, the family it runs on, and the helpers every check uses."""

    name: str
    cls: LearnerClass
    preset: str | None
    overrides: dict[str, Any]
    #: Whether the preset and config are the kit's own (``SMALL``), not the caller's.
    small: bool = False
    family: str = ""
    family_params: dict[str, Any] = field(default_factory=dict)
    episodes: int = 2
    suite: Suite | None = None
    config: Any = None
    #: Whether it built on the family: the checks after ``protocol`` need that, not a passed ``protocol``.
    built: bool = False
    workdir: Path = Path()

    @property
    def resolved_family(self) -> Any:
        assert self.suite is not None
        return self.suite.families[0]

    def suite_data(self, seeds: list[int], iterations: int = 4, every: int = 2, env_steps: int | None = None,
                   references: list[str] | None = None, split: tuple[int, int] = (32, 4), tasks_per_iteration: int = 4
                   ) -> dict[str, Any]:  # fmt: skip
        """A tiny suite of the learner on the kit's family: a budget of ``iterations`` of the harness's
        meta-batches and an evaluation every ``every`` of them, or a budget of ``env_steps`` evaluated at its
        start and end."""
        family: dict[str, Any] = {"name": self.family, "params": self.family_params,
                                  "episodes_per_trial": self.episodes, "split": {"train": split[0], "test": split[1]},
                                  "tasks_per_iteration": tasks_per_iteration, **({"references": references}
                                                                                 if references else {})}
        if env_steps is None:
            per_iteration = parse_suite(self._with(family, [0], 10**9, 10**9)).families[0].steps_per_iteration
            env_steps, every = iterations * per_iteration, every * per_iteration
        else:
            every = env_steps
        return self._with(family, seeds, env_steps, every)

    def _with(self, family: dict[str, Any], seeds: list[int], env_steps: int, every: int) -> dict[str, Any]:
        algorithm: dict[str, Any] = {"name": self.name, "id": "learner", "config": self.overrides}
        if self.preset:
            algorithm["preset"] = self.preset
        return {"name": "check-learner", "seeds": seeds, "references": "references" in family, "families": [family],
                "algorithms": [algorithm], "budget": {"env_steps": env_steps},
                "evaluation": {"every_env_steps": every, "train_tasks": min(2, family["split"]["train"])},
                "execution": {"checkpoint_every_iterations": 1, "max_retries": 0, "check_evaluation": True},
                "device": "cpu"}

    def info(self, sampler: Sampler) -> MetaEnvInfo:
        family = self.resolved_family
        return MetaEnvInfo(sampler.observation_space, sampler.action_space, family.episodes_per_trial,
                           family.family.max_episode_steps)

    def sampler(self, seed: int) -> Sampler:
        return Sampler(self.resolved_family.family, np.random.default_rng(seed))

    def build(self, seed: int) -> MetaLearner:
        return self.cls(self.info(self.sampler(0)), self.config, seed=seed, device="cpu")

    def tasks(self, count: int = BATCH) -> list[Task]:
        assert self.suite is not None
        return family_split(self.suite, self.resolved_family)["train"][:count]

    def meta_batch(self, learner: MetaLearner) -> list[Task]:
        assert self.suite is not None
        train = family_split(self.suite, self.resolved_family)["train"]
        return train if learner.samples_own_tasks else train[: self.resolved_family.spec.tasks_per_iteration]

    def run(self, data: dict[str, Any], name: str) -> pd.DataFrame:
        """Run a suite in this process (``run_local`` with one worker) and return its comparable rows."""
        results = self.workdir / name
        outcome = run_local(parse_suite(data), results, workers=1, stream=io.StringIO())
        if not outcome.ok:
            raise _Failed(f"the run failed: {_last_line(next(iter(outcome.failed.values()), 'unknown error'))}")
        return rows_of(results)


def rows_of(results: Path) -> pd.DataFrame:
    """A results directory's rows without wall-clock time (the ``wall_s`` column, and training metrics named
    ``*_s`` or ``*seconds``), in a canonical order."""
    rows = SuiteDir(results).results().drop(columns=["wall_s", "source"])
    rows = rows[~((rows["split"] == "training") & rows["metric"].str.endswith(("_s", "seconds")))]
    return rows.sort_values(["kind", "algorithm", "seed", "env_steps", "iteration", "split", "task_id",
                             "episode_index", "metric"]).reset_index(drop=True)


def first_difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Where two canonical row tables first differ (values compared exactly, NaN equal to NaN), or None."""
    keys = [c for c in a.columns if c != "value"]
    both = a.merge(b, on=keys, how="outer", suffixes=("", "_other"), indicator=True)
    same = (both["value"] == both["value_other"]) | (both["value"].isna() & both["value_other"].isna())
    differing = both[(both["_merge"] != "both") | ~same]
    if differing.empty:
        return None
    row = differing.iloc[0]
    where = (f"{row['metric']} ({'training' if row['split'] == 'training' else f'{row.split} task {row.task_id}'}"
             f", episode {row['episode_index']}) at {row['env_steps']} env steps")
    if row["_merge"] != "both":
        return f"{where} is in {'one run' if row['_merge'] == 'left_only' else 'the other run'} only"
    return f"{where}: {float(row['value'])!r} vs {float(row['value_other'])!r}"


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "unknown error"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# --- global generators -------------------------------------------------------------------------------

_GLOBALS = {"random": "Python's random", "numpy": "NumPy's legacy global generator (np.random.*)",
            "torch": "torch's global CPU generator (torch.rand, nn.init, ... without a generator)",
            "torch.cuda": "torch's global CUDA generators"}


def _global_states() -> dict[str, Any]:
    states: dict[str, Any] = {"random": random.getstate(), "numpy": np.random.get_state(),  # noqa: NPY002
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_global_states(states: dict[str, Any]) -> None:
    random.setstate(states["random"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states:
        torch.cuda.set_rng_state_all(states["torch.cuda"])


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  # the legacy global generator, seeded so that using it shows
    torch.manual_seed(seed)


def _moved(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The global generators whose state differs between two ``_global_states``."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b)
        if isinstance(a, (tuple, list)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    return [_GLOBALS[name] for name in before if name not in after or not same(before[name], after[name])]


@contextmanager
def _process_state_restored() -> Iterator[None]:
    """Run on one torch thread, as a run does by default (``resources.cpus``); afterwards, leave this process's
    thread count and global generators as they were, whatever the checks did to them."""
    states, threads = _global_states(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        _set_global_states(states)
        torch.set_num_threads(threads)


# --- the checks --------------------------------------------------------------------------------------


def _config_problems(cls: Any) -> list[str]:
    """What ``cls.Config`` and ``cls.presets`` lack of what every built-in learner's have."""
    config = cls.Config
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
        return ["Config is not a frozen dataclass"]
    doc = (config.__doc__ or "").strip()  # a dataclass without a docstring gets its signature as one
    problems = [] if doc and not doc.startswith(f"{config.__name__}(") else ["Config has no docstring"]
    try:
        typing.get_type_hints(config)
    except Exception as e:  # a suite validates values against these types
        problems.append(f"Config's type hints do not resolve ({_first_line(e)})")
    fields = dataclasses.fields(config)
    missing = dataclasses.MISSING
    no_default = [f.name for f in fields if f.default is missing and f.default_factory is missing]
    no_doc = [f.name for f in fields if not str(f.metadata.get("doc", "")).strip()]
    if no_default:
        problems.append(f"Config fields without a default: {', '.join(no_default)}")
    if no_doc:
        problems.append(f"Config fields without metadata={{'doc': ...}}: {', '.join(no_doc)}")
    for preset, values in cls.presets.items():
        if not isinstance(values, dict):
            problems.append(f"presets[{preset!r}] is not a dict of config overrides")
            continue
        _, errors = build_config(config, values, f"presets.{preset}")
        problems += errors
    return problems


def _learner_problems(learner: Any, episodes: int) -> list[str]:
    if not isinstance(learner, MetaLearner):
        members = ("exploration_episodes", "samples_own_tasks", "exploration_policy", "adapt", "train_iteration",
                   "state_dict", "load_state_dict")
        missing = ", ".join(m for m in members if not hasattr(learner, m))
        return [f"the built learner is not a MetaLearner: it has no {missing}"]
    problems = []
    explore = learner.exploration_episodes
    if explore is not None and not (isinstance(explore, int) and 0 < explore < episodes):
        problems.append(f"exploration_episodes is {explore!r}: None (in context) or an int in [1, episodes per trial)")
    if not isinstance(learner.samples_own_tasks, bool):
        problems.append(f"samples_own_tasks is {learner.samples_own_tasks!r}, not a bool")
    return problems


def _setup(kit: _Kit, family: str | None) -> None:
    """Check the class, choose the family, build the suite and the learner (the ``protocol`` check)."""
    problems = [] if isinstance(kit.cls, LearnerClass) else ["the class is not a LearnerClass"]
    problems += _config_problems(kit.cls)
    if kit.preset is not None and kit.preset not in kit.cls.presets:
        raise _Failed(f"unknown preset {kit.preset!r}; known: {', '.join(sorted(kit.cls.presets)) or 'none'}")
    preset = kit.cls.presets[kit.preset] if kit.preset else {}
    config, errors = build_config(kit.cls.Config, {**preset, **kit.overrides}, "config")
    if errors:
        raise _Failed("; ".join(problems + errors))
    kit.config = config
    if kit.cls.acts_on(config) not in ("cpu", "device"):
        problems.append(f"acts_on returned {kit.cls.acts_on(config)!r}, not 'cpu' or 'device'")
    explore = getattr(config, "exploration_episodes", None)
    refused = []
    for name in [family] if family else list(FAMILIES):
        defaults = FAMILIES.get(name, {"params": {}, "episodes_per_trial": 2})
        kit.family, kit.family_params = name, defaults["params"]
        kit.episodes = max(defaults["episodes_per_trial"], (explore or 0) + 1)
        try:
            kit.suite = parse_suite(kit.suite_data([0]))
        except SpecError as e:
            raise _Failed("; ".join(problems + e.errors)) from None
        try:
            learner = kit.build(0)
        except Exception as e:  # e.g. a learner of continuous actions on the bandits
            refused.append(f"cannot be built on {name}'s spaces: {_first_line(e)}")
            continue
        kit.built = True
        problems += _learner_problems(learner, kit.episodes)
        break
    else:
        raise _Failed("; ".join(problems + refused))
    if problems:
        raise _Failed("; ".join(problems))


class _CheckedPolicy:
    """Passes every call on to ``policy``, checking the actions of each ``act`` (the sampler's one call per step
    for the whole batch)."""

    def __init__(self, policy: Policy, space: gym.Space, batch: int) -> None:
        self.policy, self.space, self.batch = policy, space, batch
        self.problems: list[str] = []

    def reset(self, new_trial: np.ndarray) -> None:
        self.policy.reset(new_trial)

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:  # fmt: skip
        actions = self.policy.act(obs, prev_action, prev_reward, episode_start, deterministic)
        if not self.problems:
            self.problems += _action_problems(actions, self.space, self.batch)
        return actions


def _action_problems(actions: Any, space: gym.Space, batch: int) -> list[str]:
    if not isinstance(actions, np.ndarray):
        return [f"act returned a {type(actions).__name__}, not a numpy array"]
    if isinstance(space, gym.spaces.Discrete):
        if actions.shape != (batch,) or not np.issubdtype(actions.dtype, np.integer):
            return [f"act returned {actions.dtype} actions of shape {actions.shape} for {batch} environments, "
                    f"not ({batch},) integers"]
        if ((actions < space.start) | (actions >= space.start + space.n)).any():
            return [f"act returned actions outside {space}"]
        return []
    shape = (batch, *(space.shape or ()))
    if actions.shape != shape:
        return [f"act returned actions of shape {actions.shape} for {batch} environments, not {shape}"]
    if not np.isfinite(actions).all():
        return ["act returned non-finite actions"]
    return []


def _check_batched_acting(kit: _Kit) -> None:
    learner, sampler = kit.build(0), kit.sampler(1)
    tasks = kit.tasks()
    explore = learner.exploration_episodes
    policy = _CheckedPolicy(learner.exploration_policy(torch.Generator().manual_seed(0)), sampler.action_space,
                            len(tasks))
    batch = sampler.collect(policy, tasks, explore or kit.episodes)
    if policy.problems:
        raise _Failed(f"exploration policy: {policy.problems[0]}")
    if explore is not None:
        adapted = _CheckedPolicy(learner.adapt(policy.policy, batch), sampler.action_space, len(tasks))
        sampler.collect(adapted, tasks, kit.episodes - explore)
        if adapted.problems:
            raise _Failed(f"adapted policy: {adapted.problems[0]}")


def _probe(batch: TrialBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs of one more step after ``batch``'s last: its last observation, action and reward, mid-episode."""
    return (batch.obs[:, -1].copy(), batch.actions[:, -1].copy(), batch.rewards[:, -1].copy(),
            np.zeros(batch.num_tasks, bool))


def _explore(kit: _Kit, learner: MetaLearner, seed: int, tasks: int = BATCH
             ) -> tuple[Policy, torch.Generator, TrialBatch]:  # fmt: skip
    """A trial of an exploration policy drawing from a generator seeded with ``seed``, on ``tasks`` tasks."""
    _seed_globals(seed)
    generator = torch.Generator().manual_seed(seed)
    policy = learner.exploration_policy(generator)
    batch = kit.sampler(seed).collect(policy, kit.tasks(tasks), learner.exploration_episodes or kit.episodes)
    return policy, generator, batch


def _check_adapt_isolation(kit: _Kit) -> None:
    learner = kit.build(0)
    learner.train_iteration(kit.sampler(2), kit.meta_batch(learner))  # an optimiser state, buffers, ...
    before = copy.deepcopy(learner.state_dict())
    policy, generator, batch = _explore(kit, learner, 3)
    if changed := state_differences(before, copy.deepcopy(learner.state_dict())):
        raise _Failed(f"acting with an exploration policy changed the learner's state_dict at {_some(changed)}")
    adapted = learner.adapt(policy, batch)
    if changed := state_differences(before, copy.deepcopy(learner.state_dict())):
        raise _Failed(f"adapt changed the learner's state_dict at {_some(changed)}")
    if learner.exploration_episodes is not None:
        kit.sampler(4).collect(adapted, kit.tasks(), kit.episodes - learner.exploration_episodes)
        if changed := state_differences(before, copy.deepcopy(learner.state_dict())):
            raise _Failed(f"acting with an adapted policy changed the learner's state_dict at {_some(changed)}")
    # The same exploration without adapt: the policy adapt was given must act as this one, memory included.
    twin, twin_generator, twin_batch = _explore(kit, learner, 3)
    if not np.array_equal(batch.actions, twin_batch.actions):
        raise _Failed("two explorations with equal generators and environment seeds acted differently")
    state = torch.Generator().manual_seed(5).get_state()
    generator.set_state(state)
    twin_generator.set_state(state)
    for deterministic in (False, True):
        if not np.array_equal(_seeded(policy.act, *_probe(batch), deterministic),
                              _seeded(twin.act, *_probe(twin_batch), deterministic)):
            raise _Failed("adapt changed the policy it was given: it acts differently afterwards")


def _seeded(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` with the global generators in one fixed state: the two sides of a comparison see the
    same global state, so that a learner drawing from it fails ``seeding`` and ``global RNG``, not this check."""
    _seed_globals(0)
    return function(*args)


def _some(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (" …" if len(paths) > 3 else "")


def _check_round_trip(kit: _Kit) -> None:
    original, sampler = kit.build(0), kit.sampler(6)
    tasks = kit.meta_batch(original)
    _seeded(original.train_iteration, sampler, tasks)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as e:  # checkpoints hold tensors, dicts and counters, never pickled objects
        raise _Failed(f"torch.load(weights_only=True) refuses its state_dict: {_first_line(e)}") from None
    restored, twin_sampler = kit.build(1), kit.sampler(0)  # another seed: everything must come from the state
    restored.load_state_dict(state)
    twin_sampler.load_state_dict(copy.deepcopy(sampler.state_dict()))
    for iteration in (1, 2):
        logs = _seeded(original.train_iteration, sampler, tasks)
        twin_logs = _seeded(restored.train_iteration, twin_sampler, tasks)
        if changed := state_differences(original.state_dict(), restored.state_dict()):
            raise _Failed(f"iteration {iteration} after loading: the state_dicts differ at {_some(changed)}")
        differing = [k for k in logs if not _same_float(logs[k], twin_logs.get(k))]
        if differing:
            raise _Failed(f"iteration {iteration} after loading: its logs differ at {_some(differing)}")


def _same_float(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _check_memory_reset(kit: _Kit) -> None:
    learner = kit.build(0)
    tasks = kit.tasks(MEMORY_BATCH)
    used, used_generator, batch = _explore(kit, learner, 7, MEMORY_BATCH)  # a whole trial of memory
    fresh_generator = torch.Generator()
    fresh = learner.exploration_policy(fresh_generator)
    state = torch.Generator().manual_seed(8).get_state()
    used_generator.set_state(state)
    fresh_generator.set_state(state)
    used.reset(np.ones(len(tasks), bool))  # a new trial everywhere, as the sampler starts one
    fresh.reset(np.ones(len(tasks), bool))
    first = (batch.obs[:, 0].copy(), np.zeros_like(batch.actions[:, 0]), np.zeros(len(tasks), np.float32),
             np.ones(len(tasks), bool))
    for deterministic in (False, True):
        if not np.array_equal(_seeded(used.act, *first, deterministic), _seeded(fresh.act, *first, deterministic)):
            raise _Failed("after reset, the first action of a trial still depends on the previous trial")


def _check_seeding(kit: _Kit, runs: dict[str, Any]) -> None:
    """The rows of seeds 0 and 1 with the global generators seeded one way, and of seed 0 alone with them
    seeded another way (recording, for ``global RNG``, which generators the first run moved)."""
    data = kit.suite_data([0, 1])
    _seed_globals(1)
    before = _global_states()
    runs["seeds 0 and 1"] = both = kit.run(data, "seeds-0-1")
    runs["moved"] = _moved(before, _global_states())
    _seed_globals(2)
    runs["seed 0"] = alone = kit.run(kit.suite_data([0]), "seed-0")
    first = both[both["seed"] == 0].reset_index(drop=True)
    if difference := first_difference(first, alone):
        raise _Failed(f"the same seed gave different rows (the global generators were seeded differently): "
                      f"{difference}")
    one, other = kit.build(0), kit.build(1)
    if not state_differences(one.state_dict(), other.state_dict()):
        acted = [kit.sampler(9).collect(learner.exploration_policy(), kit.tasks(), kit.episodes).actions
                 for learner in (one, other)]  # its own training generator, which the seed must set
        if np.array_equal(*acted):
            raise _Failed("seeds 0 and 1 built identical learners (state_dict and actions)")
    second = both[both["seed"] == 1].reset_index(drop=True)
    if first_difference(first.drop(columns="seed"), second.drop(columns="seed")) is None:
        raise _Failed("seeds 0 and 1 gave identical rows")


def _check_resume(kit: _Kit, data: dict[str, Any], uninterrupted: pd.DataFrame) -> None:
    results = kit.workdir / "resumed"
    [context] = prepare(parse_suite(data), results, retry_failed=False)
    commits = 0

    class Killed(Exception):
        pass

    def kill_after_second_checkpoint(_progress: dict[str, Any]) -> None:
        nonlocal commits
        commits += 1
        if commits == 3:  # the untrained evaluation's, then those of iterations 1 and 2
            raise Killed("stopped after a checkpoint")

    stopped = execute(context, kill_after_second_checkpoint)
    if "Killed" not in (stopped["error"] or ""):
        raise _Failed(f"the run to be stopped ended {stopped['status']}: {_last_line(stopped['error'] or '')}")
    resumed = execute(context)
    if resumed["status"] != "done":
        raise _Failed(f"the resumed run ended {resumed['status']}: {_last_line(resumed['error'] or '')}")
    if difference := first_difference(rows_of(results), uninterrupted):
        raise _Failed(f"the resumed run's rows differ from an uninterrupted run's: {difference}")


def _check_learns(kit: _Kit, env_steps: int | None) -> str:
    settings = {**LEARNING_DEFAULT, **(LEARNING.get(kit.name, {}) if kit.small else {})}
    if "preset" in settings or "config" in settings:
        kit = dataclasses.replace(kit, preset=settings.get("preset"), overrides=settings.get("config", {}))
    family = kit.resolved_family
    offered = references_for(family.family, family.episodes_per_trial)
    oracle = "oracle" in offered and not isinstance(offered["oracle"], TrainedReference)
    budget = env_steps or settings["env_steps"]
    data = kit.suite_data([0], env_steps=budget, references=["random", "oracle"] if oracle else ["random"],
                          split=(200, 200), tasks_per_iteration=settings["tasks_per_iteration"])
    rows = kit.run(data, "learns")
    explored = parse_suite(data).algorithms[0].protocol_for(family.key).exploration_episodes or 0
    test = rows[(rows["split"] == "test") & (rows["metric"] == "return") & (rows["episode_index"] >= explored)]
    final = test[test["env_steps"] == test.groupby("algorithm")["env_steps"].transform("max")]
    per_task = final.groupby(["algorithm", "task_id"])["value"].mean()
    score = {name: per_task[name] for name in per_task.index.get_level_values(0).unique()}
    learned, baseline = score["learner"], score[REFERENCE_PREFIX + "random"]
    gap = learned.mean() - baseline.mean()
    noise = 3 * math.sqrt(learned.var() / len(learned) + baseline.var() / len(baseline))
    margin = max(noise, MARGIN * (score[REFERENCE_PREFIX + "oracle"].mean() - baseline.mean()) if oracle else 0.0)
    text = (f"{learned.mean():.2f} vs random {baseline.mean():.2f}"
            + (f" (oracle {score[REFERENCE_PREFIX + 'oracle'].mean():.2f})" if oracle else "")
            + f", margin asked {margin:.2f}; after {budget} env steps")
    if kit.name in LEARNING and kit.small:
        text += f" with {kit.preset or 'no'} preset and config {kit.overrides}"
    if gap <= margin:
        raise _Failed(text)
    return text


# --- the kit -----------------------------------------------------------------------------------------


def check_learner(name: str, family: str | None = None, quick: bool = False, preset: str | None = None,
                  config: dict[str, Any] | None = None, learn_env_steps: int | None = None,
                  log: Callable[[CheckResult], None] | None = None) -> KitReport:  # fmt: skip
    """Run the kit on the learner ``name`` (a registered name or a ``"module:Class"`` import path).

    Args:
        family: the family to run on (default: the first of ``FAMILIES`` the learner can be built on).
        quick: skip the ``learns`` check (seconds instead of a minute or so).
        preset, config: the learner's settings (default: ``SMALL``'s for a built-in learner, else its defaults).
        learn_env_steps: the ``learns`` check's budget (default: ``LEARNING``'s, else ``LEARNING_DEFAULT``'s).
        log: called with each result as it comes.

    Raises:
        KeyError: ``name`` names no learner class (``algorithms.registry.LookupFailed``: one line).
    """
    cls = learner_class(name)
    small = preset is None and config is None and name in SMALL
    if small:
        preset, config = SMALL[name]
    kit = _Kit(name, cls, preset, dict(config or {}), small)
    source = learner_source(name) or f"{cls.__module__}:{cls.__qualname__}"
    report = KitReport(name if source == name else f"{name} ({source})", "")

    def record(check: str, run: Callable[[], str | None]) -> None:
        start = time.monotonic()
        if check != "protocol" and not kit.built:
            result = CheckResult(check, "skip", "no learner was built (see protocol)")
        else:
            try:
                result = CheckResult(check, "pass", run() or "")
            except _Failed as e:
                result = CheckResult(check, "fail", str(e))
            except _Skipped as e:
                result = CheckResult(check, "skip", str(e))
            except Exception as e:  # a learner raising is a failure of the check, with what it raised
                result = CheckResult(check, "fail", f"raised {_first_line(e)}")
        report.results.append(dataclasses.replace(result, seconds=time.monotonic() - start))
        if log:
            log(report.results[-1])

    runs: dict[str, Any] = {}  # the seeding check's runs: its rows, and the global generators a run moved

    def global_rng() -> None:
        if "moved" not in runs:
            raise _Skipped("the seeding check's run failed")
        if runs["moved"]:
            raise _Failed(f"a run moved {'; '.join(runs['moved'])}: draw only from generators the learner is given "
                          "or seeds itself")

    def resume() -> None:
        if "seed 0" not in runs:
            raise _Skipped("the seeding check's runs failed")
        _check_resume(kit, kit.suite_data([0]), runs["seed 0"])

    with tempfile.TemporaryDirectory(prefix="check-learner-") as workdir, _process_state_restored():
        kit.workdir = Path(workdir)
        record("protocol", lambda: _setup(kit, family))
        if kit.suite is not None:
            report.setting = (f"on {kit.family} ({', '.join(f'{k}={v}' for k, v in kit.family_params.items())}; "
                              f"{kit.episodes} episodes per trial), preset {kit.preset or 'none'}, config "
                              f"{kit.overrides or 'defaults'}")
        record("batched acting", lambda: _check_batched_acting(kit))
        record("adapt isolation", lambda: _check_adapt_isolation(kit))
        record("state_dict round trip", lambda: _check_round_trip(kit))
        record("seeding", lambda: _check_seeding(kit, runs))
        record("global RNG", global_rng)
        record("memory reset", lambda: _check_memory_reset(kit))
        record("resume", resume)
        if quick:
            report.results.append(CheckResult("learns", "skip", "--quick"))
        else:
            record("learns", lambda: _check_learns(kit, learn_env_steps))
    return report
