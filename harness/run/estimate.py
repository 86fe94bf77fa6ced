"""``python -m harness estimate``: what a suite will cost on this machine, measured before it runs.

For every run kind of a suite (an algorithm on a family) the estimate builds the learner exactly as
``harness.run.runner.run_learner`` does (its resolved config, the family's spaces, the run's device and
``resources.cpus`` torch threads), times a few training iterations through a sampler that times its
``collect`` calls (sampling; the rest of an iteration is updating) and one evaluation by the algorithm's
protocol on every split the runner evaluates (``test``, ``ood``, the ``train`` sample), then extrapolates
to the run's budget and evaluation schedule by the runner's own rules (``training_schedule``). Reference
runs (one evaluation each) are timed whole. The runs are then scheduled over ``--workers`` in the order
the local pool starts them (``makespan``).

Times are this process's CPU seconds on a CPU device (``clock_for``): what a run needs of a core of its own,
whatever else the machine runs while it is measured; the wall time then assumes a core per worker.

Each kind is first timed on the least work (a probe), then on the most work whose iteration fits
``ITERATION_BUDGET_S``, cut in this order where a whole iteration would take longer (each cut is named in
the kind's note, and the time scaled back up):

* **fewer episodes per trial** (RL², TrMRL: they collect the family's trial whole, and their collection and
  update are linear in its length);
* **lower knobs**: config fields an iteration is linear in (``_KNOBS``: PPO epochs, PEARL's gradient steps,
  collected tasks and initial data, MAML's trials per task), scaled back in proportion (an upper bound: a
  fixed part of the update is scaled with the rest);
* **fewer tasks** of the meta-batch (RL², TrMRL, MAML): one more iteration on about half as many gives the
  cost of an added task (a recurrent update batched over tasks has a part that does not grow with them).
* A learner that draws its own tasks (PEARL as released: initial data on every training task in its first
  iteration) is timed on one training task; its first iteration's extra (the initial data) is scaled to the
  whole split, and a later iteration is timed after it.
* Evaluation runs a few tasks of a large split (the later splits take its seconds per task) and fewer
  episodes of a long trial.

Environment steps of an iteration are what the sampler counts: terminations shorten episodes, and an
untrained Ant falls early, so its iterations look shorter than a trained one's (the note says so). A
learner whose update costs the same however many env steps an iteration took (PEARL) then looks dearer.
Measured costs are cached per machine (``cache_file``), keyed by what they depend on (``kind_key``), so
that ``harness run``'s and ``harness status``'s ETA know the kinds that have not started yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import io
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

#: Seconds one timed training iteration should take at most: longer ones are timed on a fraction.
ITERATION_BUDGET_S = 1.5
#: Steady iterations are timed until they add up to this many seconds (short iterations are noisy) ...
MIN_STEADY_S = 1.0
#: ... or until this many were timed.
MAX_STEADY_ITERATIONS = 30
#: Env steps of one split's evaluation timed at most (at least one task's trial): larger splits are scaled.
EVAL_STEPS = 2000
#: Training tasks a learner that draws its own tasks (PEARL) is timed on.
OWN_TASKS = 1
#: Fewest tasks of a meta-batch timed (MAML's TRPO step fails on a meta-batch of one task).
MIN_TASKS = 2
#: Learners whose collection and update are both linear in the meta-batch's tasks: timed on a few of them.
_TASKS_LINEAR = {"rl2", "trmrl", "maml", "mlp_ppo"}
#: ... and in the episodes of the family's trial, which they collect whole: timed on fewer episodes per trial.
_TRIAL_LINEAR = {"rl2", "trmrl", "mlp_ppo"}
#: Config fields an iteration's cost is linear in, per learner: field -> (what it scales: ``sampling`` (with the
#: env steps), ``update``, ``both``, or ``first``: the first iteration's extra of a learner drawing its own tasks;
#: the fewest units it is lowered to; whether it counts env steps, in whole episodes).
_KNOBS: dict[str, dict[str, tuple[str, int, bool]]] = {
    "pearl": {"gradient_steps": ("update", 5, False), "collect_tasks": ("sampling", 1, False),
              "initial_env_steps": ("first", 1, True)},
    "trmrl": {"epochs": ("update", 1, False)},
    "rl2": {"epochs": ("update", 1, False)},
    "maml": {"trials_per_task": ("both", 1, False)},  # one-episode trials per task, pooled into its inner step
}


# --- extrapolation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindCost:
    """What one run of a kind costs on this machine (seconds), as measured by ``measure_kind``.

    Attributes:
        setup_s: building the run's samplers (every evaluation environment too) and learner.
        first_iteration_s: the first training iteration (PEARL: with its initial data), of which
            ``first_sampling_s`` in the sampler, taking ``first_env_steps``.
        iteration_s: every later iteration, of which ``sampling_s`` in the sampler, taking ``env_steps``.
        evaluation_s: one evaluation, every split.
        commit_s: one checkpoint and rows write.
        notes: what was timed on a fraction and scaled.
    """

    setup_s: float
    first_iteration_s: float
    first_sampling_s: float
    first_env_steps: float
    iteration_s: float
    sampling_s: float
    env_steps: float
    evaluation_s: float
    commit_s: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunPrediction:
    """One run's predicted wall time, split by where it goes (seconds)."""

    iterations: int
    evaluations: int
    sampling_s: float
    updating_s: float
    evaluating_s: float
    other_s: float  # setup and checkpoints

    @property
    def total_s(self) -> float:
        return self.sampling_s + self.updating_s + self.evaluating_s + self.other_s


def training_schedule(first_env_steps: float, env_steps: float, budget: int, every: int) -> tuple[int, int]:
    """``(iterations, evaluations)`` of a run by the runner's rules: iterations until the budget is reached
    (the first takes ``first_env_steps``, later ones ``env_steps``); an evaluation at 0, after any iteration
    that reaches the next multiple of ``every`` (one per iteration at most) and after the last one."""
    if first_env_steps <= 0 or env_steps <= 0:
        raise ValueError("an iteration must take env steps")
    steps, iterations, evaluations = 0.0, 0, 1
    while steps < budget:
        steps += first_env_steps if iterations == 0 else env_steps
        iterations += 1
        if steps >= evaluations * every or steps >= budget:
            evaluations += 1
    return iterations, evaluations


def predict_run(cost: KindCost, budget: int, every: int, checkpoint_every_s: float = 60.0) -> RunPrediction:
    """One run's wall time from its kind's measured costs, its budget and its evaluation interval."""
    iterations, evaluations = training_schedule(cost.first_env_steps, cost.env_steps, budget, every)
    later = iterations - 1
    sampling = cost.first_sampling_s + later * cost.sampling_s
    updating = (cost.first_iteration_s - cost.first_sampling_s) + later * (cost.iteration_s - cost.sampling_s)
    evaluating = evaluations * cost.evaluation_s
    # a checkpoint at every evaluation and at least every checkpoint_every_s
    commits = evaluations + (sampling + updating + evaluating) / checkpoint_every_s
    other = cost.setup_s + commits * cost.commit_s
    return RunPrediction(iterations, evaluations, sampling, updating, evaluating, other)


def makespan(durations: Sequence[float], workers: int, busy: Sequence[float] = ()) -> float:
    """When the last of ``durations`` ends, started in order, each on the first worker to be free (the local
    pool); ``busy`` holds the remaining seconds of runs already running (each on a worker of its own)."""
    loads = [*busy, *[0.0] * max(workers - len(busy), 0)]
    heapq.heapify(loads)
    for duration in durations:
        heapq.heappush(loads, heapq.heappop(loads) + duration)
    return max(loads, default=0.0)


# --- the cache ---------------------------------------------------------------------------------------


def cache_file() -> Path:
    """Where measured costs are kept: ``$XDG_CACHE_HOME/metarl-harness/estimates.json`` (``~/.cache`` by
    default), one section per host."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metarl-harness" / "estimates.json"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _entry(resolved: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    return next(e for e in resolved[key] if e["id"] == name)


def _family_payload(resolved: Mapping[str, Any], family: str) -> dict[str, Any]:
    entry = _entry(resolved, "families", family)
    return {**{k: entry[k] for k in ("name", "params", "split", "episodes_per_trial", "tasks_per_iteration")},
            "train_tasks": resolved["evaluation"]["train_tasks"]}


def kind_key(resolved: Mapping[str, Any], algorithm: str, family: str, device: str, threads: int) -> str:
    """The cache key of a run kind: what its cost depends on (learner, resolved config, evaluation protocol,
    the family's parameters, trial, meta-batch and split sizes; device, torch threads), not its seeds or
    budget. ``resolved`` is ``Suite.resolved()`` or a results directory's ``suite.yaml`` spec."""
    entry = _entry(resolved, "algorithms", algorithm)
    payload = {"learner": entry["name"], "config": entry["configs"][family], "evaluation": entry["evaluation"][family],
               "family": _family_payload(resolved, family), "device": device, "threads": threads}
    return _digest(json.loads(json.dumps(payload, default=str)))  # tuples and lists alike


def trained_kind_key(resolved: Mapping[str, Any], reference: str, family: str, device: str) -> str:
    """The cache key of a trained reference's run kind (``harness.references.TrainedReference``)."""
    training = _entry(resolved, "families", family)["reference_training"]
    payload = {"reference": reference, "learner": training["learner"], "config": training["config"],
               "family": _family_payload(resolved, family), "device": device, "threads": 1}
    return _digest(json.loads(json.dumps(payload, default=str)))


@dataclass(frozen=True)
class TrainedKind:
    """A trained reference's training (``harness.run.runner.training``) in the shape of the ``ResolvedAlgorithm``
    that ``measure_kind`` times; with ``view`` (its family as the learner sees it) in place of the family's."""

    key: str
    training: Any

    @property
    def spec(self) -> Any:
        return SimpleNamespace(name=self.training.cls.name, resources=SimpleNamespace(cpus=1, gpus=0.0))

    def config_for(self, _family: str) -> Any:
        return self.training.config

    def protocol_for(self, _family: str) -> Any:
        return self.training.protocol

    def budget(self, _family: Any) -> tuple[int, int]:
        return self.training.budget, self.training.every


def reference_key(resolved: Mapping[str, Any], reference: str, family: str) -> str:
    """The cache key of a reference run's cost."""
    return _digest({"reference": reference, "family": _family_payload(resolved, family)})


def load_cache(path: Path | None = None) -> dict[str, Any]:
    """This host's cached entries (key -> entry); empty when there are none or the file is unreadable."""
    try:
        data = json.loads((path or cache_file()).read_text())
    except (OSError, ValueError):
        return {}
    return data.get(socket.gethostname(), {}) if isinstance(data, dict) else {}


def save_cache(entries: Mapping[str, Any], path: Path | None = None) -> None:
    """Add ``entries`` to this host's section of the cache."""
    from harness.run.store import write_json

    path = path or cache_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(socket.gethostname(), {}).update(entries)
    write_json(path, data)


def cost_from_entry(entry: Mapping[str, Any]) -> KindCost:
    fields = {f.name for f in dataclasses.fields(KindCost)}
    cost = {k: v for k, v in entry["cost"].items() if k in fields}
    return KindCost(**{**cost, "notes": tuple(cost.get("notes", ()))})


def cached_run_seconds(resolved: Mapping[str, Any], device: str, cache: Mapping[str, Any] | None = None,
                       checkpoint_every_s: float = 60.0) -> dict[tuple[str, str], float]:  # fmt: skip
    """Predicted seconds per run of every run kind of a resolved suite with a cached cost on this host
    (for ``harness run``'s and ``harness status``'s ETA before a kind has started)."""
    cache = load_cache() if cache is None else cache
    seconds = {}
    for entry in resolved["algorithms"]:
        threads = int(entry.get("resources", {}).get("cpus", 1))
        for family, (budget, every) in entry["budgets"].items():
            cached = cache.get(kind_key(resolved, entry["id"], family, device, threads))
            if cached:
                seconds[(entry["id"], family)] = predict_run(cost_from_entry(cached), budget, every,
                                                             checkpoint_every_s).total_s
    return seconds


# --- measuring ---------------------------------------------------------------------------------------


class _TimingSampler:
    """The run's sampler, timing its ``collect`` calls: the learner's sampling, apart from its updating."""

    def __init__(self, sampler: Any, clock: Callable[[], float]) -> None:
        self.sampler, self.clock, self.seconds = sampler, clock, 0.0
        self.most_env_steps = 0  # had no episode ended early

    def episode_length_share(self) -> float:
        """The share of the episodes' time limits the collected episodes ran (below 1: they ended early)."""
        return self.env_steps / self.most_env_steps if self.most_env_steps else 1.0

    @property
    def env_steps(self) -> int:
        return int(self.sampler.env_steps)

    def collect(self, policy: Any, tasks: Sequence[Any], episodes_per_trial: int, deterministic: bool = False) -> Any:
        start = self.clock()
        batch = self.sampler.collect(policy, tasks, episodes_per_trial, deterministic)
        self.seconds += self.clock() - start
        self.most_env_steps += len(tasks) * episodes_per_trial * self.sampler.family.max_episode_steps
        return batch


@dataclass
class _Timed:
    seconds: float
    sampling_s: float
    env_steps: float


def clock_for(device: str) -> Callable[[], float]:
    """What the estimate times with: this process's CPU time on a CPU device (the seconds a run needs of a core
    of its own, whatever else the machine runs meanwhile), wall-clock time on a GPU (which CPU time misses)."""
    return time.perf_counter if device.startswith("cuda") else time.process_time


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@dataclass(frozen=True)
class _Knob:
    """A config field an iteration is linear in, counted in units (env steps round up to whole episodes)."""

    full: int  # the config's value
    part: str  # what it scales: sampling (with the env steps), update, both, or first (the first iteration's extra)
    lowest: int  # the fewest units it is lowered to
    per: int = 1  # env steps per unit: the episode length for env-step counts, else 1

    def units(self, value: int) -> int:
        return math.ceil(value / self.per)

    def lowered(self, scale: float) -> int | None:
        """The config value at ``scale`` of its units (None: not lowered)."""
        units = max(self.lowest, round(self.units(self.full) * scale))
        return units * self.per if units < self.units(self.full) else None


def _knobs(learner: str, config: Any, horizon: int, own: bool) -> dict[str, _Knob]:
    knobs = {}
    for name, (part, lowest, steps) in _KNOBS.get(learner, {}).items():
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0 and (part != "first" or own):
            knobs[name] = _Knob(value, part, lowest, horizon if steps else 1)
    return knobs


def _factors(knobs: Mapping[str, _Knob], lowered: Mapping[str, int]) -> dict[str, float]:
    """Factors from the lowered config fields back to the real ones, per part: sampling, update, first."""
    factors = {"sampling": 1.0, "update": 1.0, "first": 1.0}
    for name, value in lowered.items():
        knob = knobs[name]
        for part in ("sampling", "update") if knob.part == "both" else (knob.part,):
            factors[part] *= knob.units(knob.full) / knob.units(value)
    return factors


def _lower(knobs: Mapping[str, _Knob], scale: float) -> dict[str, int]:
    lowered = {name: knob.lowered(scale) for name, knob in knobs.items()}
    return {name: value for name, value in lowered.items() if value is not None}


@dataclass(frozen=True)
class _Level:
    """How much of an iteration is timed: tasks of the meta-batch, episodes per trial, lowered config fields."""

    tasks: int
    episodes: int
    lowered: dict[str, int]

    def covers(self, other: _Level, knobs: Mapping[str, _Knob]) -> bool:
        """At least as much work as ``other`` in every respect."""
        return self.tasks >= other.tasks and self.episodes >= other.episodes and all(
            self.lowered.get(k, knob.full) >= other.lowered.get(k, knob.full) for k, knob in knobs.items())


def measure_kind(suite: Any, algorithm: Any, family: Any, device: str = "cpu", iterations: int = 2,
                 budget_s: float = ITERATION_BUDGET_S, eval_steps: int = EVAL_STEPS,
                 split: Mapping[str, Sequence[Any]] | None = None) -> KindCost:  # fmt: skip
    """Time one run kind of ``suite`` (a ``ResolvedAlgorithm`` on a ``ResolvedFamily``, or a trained reference as
    ``TrainedKind``) in this process with ``clock_for(device)``; the caller sets torch's threads. ``split``: the
    family's split, if already drawn. See the module docstring for what is timed on a fraction."""
    import torch

    from algorithms.base import MetaEnvInfo
    from algorithms.registry import learner_class
    from harness import seeding
    from harness.run.rollout import Sampler
    from harness.run.store import rows_frame
    from harness.spec.splits import family_split

    clock = clock_for(device)
    root, seed = suite.spec.seed, suite.spec.seeds[0]
    split = split or family_split(suite, family)
    train_tasks = list(split["train"])
    cls, config = learner_class(algorithm.spec.name), algorithm.config_for(family.key)
    trial, horizon = family.episodes_per_trial, family.family.max_episode_steps
    notes: list[str] = []

    def build(level: _Level) -> tuple[Any, _TimingSampler, float]:
        start = clock()
        sampler = Sampler(family.family, seeding.generator(root, "train", family.key, seed))
        info = MetaEnvInfo(sampler.observation_space, sampler.action_space, level.episodes, horizon)
        learner = cls(info, dataclasses.replace(config, **level.lowered),
                      seed=seeding.int_seed(root, "learner", family.key, seed), device=device)
        return learner, _TimingSampler(sampler, clock), clock() - start

    def iterate(learner: Any, sampler: _TimingSampler, tasks: Sequence[Any]) -> _Timed:
        sampling, steps = sampler.seconds, sampler.env_steps
        start = clock()
        learner.train_iteration(sampler, tasks)
        _synchronize(device)
        return _Timed(clock() - start, sampler.seconds - sampling, sampler.env_steps - steps)

    learner, sampler, setup_s = build(_Level(0, trial, {}))  # as the run builds it
    own = bool(learner.samples_own_tasks)  # it gets every training task and draws its own (PEARL as released)
    knobs = _knobs(cls.name, config, horizon, own)
    tasks_linear, trial_linear = not own and cls.name in _TASKS_LINEAR, not own and cls.name in _TRIAL_LINEAR
    full = _Level(len(train_tasks) if own else family.spec.tasks_per_iteration, trial, {})
    least = _Level(min(full.tasks, OWN_TASKS if own else MIN_TASKS if tasks_linear else full.tasks),
                   1 if trial_linear else trial, _lower(knobs, 0.0))
    meta_batch_rng = seeding.generator(root, "meta_batch", family.key, seed)

    def meta_batch(count: int) -> list[Any]:
        if own:
            return train_tasks[:count]
        indices = meta_batch_rng.choice(len(train_tasks), family.spec.tasks_per_iteration, replace=False)
        return [train_tasks[i] for i in indices[:count]]

    def fraction(level: _Level) -> float:
        """The share of a real iteration's tasks × episodes that ``level`` collects and updates on."""
        return (level.tasks / full.tasks if tasks_linear else 1.0) * level.episodes / trial

    # The probe: the least work, to size the timed iterations. Then the most work whose iteration fits budget_s,
    # cut in this order: episodes per trial, then the knobs, then tasks (a recurrent update batched over fewer
    # tasks costs more per task); re-planned from each measurement (a fixed cost weighs less as the timed work
    # grows), never less work than already timed.
    level = least
    if (level.episodes, level.lowered) != (trial, {}):  # not the learner built above
        learner, sampler, setup_s = build(level)
    first = iterate(learner, sampler, meta_batch(level.tasks))
    grid = (0.75, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.0)
    for _ in range(0 if own else 3):
        factors, share = _factors(knobs, level.lowered), fraction(level)
        sampling_whole = first.sampling_s * factors["sampling"] / share
        update_whole = (first.seconds - first.sampling_s) * factors["update"] / share

        def cost(candidate: _Level, sampling_whole: float = sampling_whole, update_whole: float = update_whole
                 ) -> float:  # fmt: skip
            lowered = _factors(knobs, candidate.lowered)
            return fraction(candidate) * (sampling_whole / lowered["sampling"] + update_whole / lowered["update"])

        candidates = [full]
        candidates += [_Level(full.tasks, e, {}) for e in range(trial - 1, least.episodes - 1, -1)]
        candidates += [_Level(full.tasks, least.episodes, _lower(knobs, q)) for q in grid]
        candidates += [_Level(m, least.episodes, least.lowered) for m in range(full.tasks - 1, least.tasks, -1)]
        planned = next((c for c in candidates if cost(c) <= budget_s), least)
        if planned == level or not planned.covers(level, knobs):
            break
        level = planned
        learner, sampler, setup_s = build(level)
        first = iterate(learner, sampler, meta_batch(level.tasks))
    steady: list[_Timed] = []
    while len(steady) < max(iterations - 1, 1 if own else 0) or (
            0 < len(steady) < MAX_STEADY_ITERATIONS and sum(t.seconds for t in steady) < MIN_STEADY_S):
        steady.append(iterate(learner, sampler, meta_batch(level.tasks)))
    if own and iterations < 2:
        notes.append("a second iteration timed after the first's initial data")
    later = _Timed(*(float(np.mean([getattr(t, k) for t in steady])) for k in ("seconds", "sampling_s", "env_steps"))) \
        if steady else first
    # Fewer tasks than the meta-batch: one more iteration on about half as many, for the cost per added task
    # (an update batched over tasks has a part that does not grow with them).
    fewer = max(least.tasks, level.tasks // 2)
    half = iterate(learner, sampler, meta_batch(fewer)) if tasks_linear and fewer < level.tasks < full.tasks \
        else None

    # Scale the timed fraction back to the real iteration: to the meta-batch's tasks (affine where half is
    # known, the added tasks costing between 20% and 100% of the timed ones' mean), then the episodes per
    # trial and the knobs (in proportion).
    factors = _factors(knobs, level.lowered)
    per_trial = trial / level.episodes

    def all_tasks(timed_value: float, half_value: float | None) -> float:
        if not tasks_linear or level.tasks == full.tasks:
            return timed_value
        mean = timed_value / level.tasks
        slope = mean if half_value is None else min(max((timed_value - half_value) / (level.tasks - fewer),
                                                        0.2 * mean), mean)
        return timed_value + slope * (full.tasks - level.tasks)

    def scaled(timed: _Timed, half: _Timed | None) -> _Timed:
        sampling = all_tasks(timed.sampling_s, half and half.sampling_s) * per_trial * factors["sampling"]
        update = all_tasks(timed.seconds - timed.sampling_s, half and half.seconds - half.sampling_s) * per_trial \
            * factors["update"]
        return _Timed(sampling + update, sampling, timed.env_steps / fraction(level) * factors["sampling"])

    later_full = scaled(later, half)
    # the first iteration (warm-up; PEARL's initial data below) in proportion to a later one
    first_full = _Timed(*(getattr(later_full, k) * getattr(first, k) / getattr(later, k) if getattr(later, k) else
                          getattr(later_full, k) for k in ("seconds", "sampling_s", "env_steps")))
    if own:  # the first iteration's extra (initial data on every training task) scales with the split
        extra = full.tasks / level.tasks * factors["first"]
        extra_sampling = max(first.sampling_s - later.sampling_s, 0.0) * extra
        extra_update = max((first.seconds - first.sampling_s) - (later.seconds - later.sampling_s), 0.0)
        first_full = _Timed(later_full.seconds + extra_sampling + extra_update, later_full.sampling_s + extra_sampling,
                            later_full.env_steps + max(first.env_steps - later.env_steps, 0.0) * extra)
        if level.tasks < full.tasks:
            notes.append(f"first iteration's initial data timed on {level.tasks} of {full.tasks} training tasks")
    else:
        fractions = [f"{level.tasks} of {full.tasks} tasks"] if level.tasks < full.tasks else []
        fractions += [f"{level.episodes} of {trial} episodes per trial"] if level.episodes < trial else []
        if fractions:
            notes.append(f"timed on {' × '.join(fractions)}")
    if sampler.episode_length_share() < 0.9:
        notes.append(f"episodes ended early ({100 * sampler.episode_length_share():.0f}% of their time limit, as an "
                     "untrained policy's do): iterations counted from these lengths")
    notes += [f"{knobs[name].units(value)} of {knobs[name].units(knobs[name].full)} "
              + name.replace("_env_steps", " episodes").replace("_", " ") for name, value in level.lowered.items()]

    evaluation_s, eval_setup_s, rows, note = _time_evaluation(learner, suite, algorithm, family, split, device,
                                                              eval_steps)
    setup_s += eval_setup_s
    notes += [note] if note else []

    # One commit: the checkpoint and an evaluation's rows.
    start = clock()
    torch.save({"learner": learner.state_dict()}, io.BytesIO())
    rows_frame([{"env_steps": 0, "iteration": 0, "wall_s": 0.0, "split": "test", "task_id": "t", "episode_index": 0,
                 "metric": "return", "value": 0.0}] * max(1, round(rows))).to_parquet(io.BytesIO(), index=False)
    commit_s = clock() - start
    sampler.sampler.close()
    return KindCost(setup_s=setup_s, first_iteration_s=first_full.seconds, first_sampling_s=first_full.sampling_s,
                    first_env_steps=first_full.env_steps, iteration_s=later_full.seconds,
                    sampling_s=later_full.sampling_s, env_steps=later_full.env_steps, evaluation_s=evaluation_s,
                    commit_s=commit_s, notes=tuple(notes))


def _time_evaluation(learner: Any, suite: Any, algorithm: Any, family: Any, split: Mapping[str, Sequence[Any]],
                     device: str, eval_steps: int) -> tuple[float, float, float, str]:  # fmt: skip
    """One evaluation by the algorithm's protocol on every split: ``(seconds, seconds building its environments,
    rows, note)``. A split larger than ``eval_steps`` is timed on a few of its tasks, and the later splits take
    its seconds per task; a trial longer than ``eval_steps`` is timed on fewer episodes (as many explored before
    adapting, in proportion) and scaled to the whole trial."""
    from harness import seeding
    from harness.run.evaluate import evaluate_learner
    from harness.run.rollout import Sampler
    from harness.spec.splits import train_eval_sample

    clock = clock_for(device)
    root, seed, horizon = suite.spec.seed, suite.spec.seeds[0], family.family.max_episode_steps
    protocol = algorithm.protocol_for(family.key)
    records_success = family.family.records_success
    task_sets = {"test": split["test"], "ood": split["ood"],
                 "train": train_eval_sample(dict(split), suite.spec.evaluation.train_tasks)}
    episodes = timed = protocol.episodes_per_trial
    if episodes * horizon > eval_steps:
        adapts = protocol.exploration_episodes is not None
        timed = min(episodes, max(2 if adapts else 1, eval_steps // horizon))
        explore = min(timed - 1, max(1, round(protocol.exploration_episodes * timed / episodes))) if adapts else None
        protocol = dataclasses.replace(protocol, episodes_per_trial=timed, exploration_episodes=explore)
    count = max(1, eval_steps // (timed * horizon))
    seconds, setup_s, rows, per_task, reused = 0.0, 0.0, 0.0, None, []
    for name, split_tasks in task_sets.items():
        if not split_tasks:
            continue
        subset = split_tasks[:count]
        start = clock()
        sampler = Sampler(family.family, seeding.generator(root, "eval", family.key, seed, name))
        sampler.prepare(subset)
        setup_s += (clock() - start) * len(split_tasks) / len(subset)  # the run builds them once
        if per_task is None:
            start = clock()
            split_rows = evaluate_learner(
                learner, lambda _split, s=sampler: s, {name: subset}, protocol, records_success,
                lambda split_name: seeding.torch_generator(root, "eval_policy", family.key, seed, split_name, 0),
            )
            _synchronize(device)
            split_s, split_rows_count = (clock() - start) * episodes / timed, len(split_rows) * episodes / timed
            seconds += split_s * len(split_tasks) / len(subset)
            rows += split_rows_count * len(split_tasks) / len(subset)
            if len(subset) < len(split_tasks):
                per_task = (f"{len(subset)} of {len(split_tasks)} {name} tasks", split_s / len(subset),
                            split_rows_count / len(subset))
        else:
            seconds += per_task[1] * len(split_tasks)
            rows += per_task[2] * len(split_tasks)
            reused.append(name)
        sampler.close()
    parts = [per_task[0] + (f" ({' and '.join(reused)} at their seconds per task)" if reused else "")] \
        if per_task else []
    parts += [f"{timed} of {episodes} episodes per trial"] if timed < episodes else []
    return seconds, setup_s, rows, f"evaluation timed on {', '.join(parts)}" if parts else ""


def measure_reference(suite: Any, key: Any) -> float:
    """CPU seconds of one reference run (one evaluation, its rows written), run whole in a scratch directory."""
    from harness.run.runner import run_reference

    with tempfile.TemporaryDirectory() as scratch:
        start = time.process_time()
        run_reference(suite, Path(scratch), key)
        return time.process_time() - start


def startup_seconds() -> float:
    """CPU seconds a fresh interpreter takes to do what a worker does once, before its first run's own work:
    import the runner, every learner and every family, and build a first optimiser (PyTorch imports its compiler
    then, ~2 s). Drawing the suite's splits comes on top (``estimate_suite``'s ``splits_s``)."""
    script = ("import torch, harness.run.runner; from algorithms.registry import BUILTIN_LEARNERS, learner_class; "
              "from harness.tasks.registry import BUILTIN_FAMILIES, family_class; "
              "[learner_class(name) for name in BUILTIN_LEARNERS]; [family_class(name) for name in BUILTIN_FAMILIES]; "
              "torch.optim.Adam([torch.zeros(1, requires_grad=True)])")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parents[1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# --- a suite's estimate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindEstimate:
    """A run kind's measured cost and one run's prediction."""

    algorithm: str
    family: str
    runs: int
    budget: int
    cpus: int
    gpus: float
    cost: KindCost
    run: RunPrediction
    cached: bool


@dataclass(frozen=True)
class SuiteEstimate:
    """What ``estimate_suite`` found; ``order`` holds every run's predicted seconds in the pool's order."""

    name: str
    device: str
    workers: int
    kinds: list[KindEstimate]
    references: dict[tuple[str, str], float]  # (reference, family) -> seconds per run
    reference_runs: int
    startup_s: float
    order: list[float] = field(default_factory=list)
    load: float | None = None  # the machine's load average when the estimate began timing (None: all cached)

    @property
    def wall_s(self) -> float:
        """The suite's wall time: start-up (the driver's, then its workers') and the runs on ``workers``."""
        return self.startup_s * (1 if self.workers == 1 else 2) + makespan(self.order, self.workers)

    @property
    def wall_longest_first_s(self) -> float:
        return self.startup_s * (1 if self.workers == 1 else 2) + makespan(sorted(self.order, reverse=True),
                                                                           self.workers)

    def core_hours(self) -> float:
        """Core-hours: each learner run holds ``resources.cpus`` cores, each reference run one."""
        return (sum(k.run.total_s * k.runs * k.cpus for k in self.kinds) + self.reference_s) / 3600

    def gpu_hours(self) -> float:
        """GPU-hours on a CUDA device: each run holds ``resources.gpus`` (a whole GPU where it asks for none)."""
        return sum(k.run.total_s * k.runs * (k.gpus or 1.0) for k in self.kinds) / 3600

    @property
    def reference_s(self) -> float:
        """Seconds of every reference run together."""
        return sum(self.order) - sum(k.run.total_s * k.runs for k in self.kinds)


def estimate_suite(suite: Any, workers: int, device: str, iterations: int = 2, cached: bool = False,
                   log: Callable[[str], None] = lambda _line: None, cache_path: Path | None = None,
                   splits_s: float = 0.0) -> SuiteEstimate:  # fmt: skip
    """Measure (or, with ``cached``, look up) every run kind and reference of ``suite`` and predict its runs;
    fresh measurements are written to the cache. ``splits_s``: CPU seconds this process took to draw the suite's
    splits the first time (every worker does it once too: ML45's take a minute)."""
    import torch

    from harness.run.runner import is_trained, learner_keys, reference_keys, training
    from harness.run.store import RunKey
    from harness.spec.splits import build_splits

    resolved = suite.resolved()
    load = os.getloadavg()[0]
    cache = load_cache(cache_path)
    fresh: dict[str, Any] = {}
    kinds: list[KindEstimate] = []
    trained = [k for k in reference_keys(suite) if is_trained(suite, k)]
    learners = trained + learner_keys(suite)  # every run that trains
    splits = build_splits(suite)  # drawn once here (cached by the families after the first time)
    threads_before = torch.get_num_threads()
    pairs = list(dict.fromkeys((k.algorithm, k.family, k.kind) for k in learners))
    try:
        for i, (algorithm_id, family_id, kind) in enumerate(pairs, 1):
            algorithm: Any = suite.algorithm(algorithm_id) if kind == "learner" else None
            family = suite.family(family_id)
            if algorithm is None:  # a trained reference: timed on its family as it sees it (told, for the oracle)
                run = training(suite, RunKey(algorithm_id, family_id, suite.spec.seeds[0], kind="reference"))
                algorithm, family = TrainedKind(algorithm_id, run), dataclasses.replace(family, family=run.view)
                key = trained_kind_key(resolved, algorithm_id, family_id, device)
            else:
                key = kind_key(resolved, algorithm_id, family_id, device, algorithm.spec.resources.cpus)
            threads = algorithm.spec.resources.cpus
            entry = cache.get(key) if cached else None
            if entry is None:
                log(f"[{i}/{len(pairs)}] timing {algorithm_id}/{family_id}")
                torch.set_num_threads(threads)
                start = time.perf_counter()
                cost = measure_kind(suite, algorithm, family, device, iterations, split=splits[family_id])
                log(f"[{i}/{len(pairs)}] {algorithm_id}/{family_id}: {time.perf_counter() - start:.1f} s")
                fresh[key] = {"kind": f"{algorithm_id}/{family_id}", "cost": dataclasses.asdict(cost),
                              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "iterations": iterations}
            else:
                cost = cost_from_entry(entry)
            budget, every = algorithm.budget(family)
            runs = sum(1 for k in learners if (k.algorithm, k.family) == (algorithm_id, family_id))
            kinds.append(KindEstimate(algorithm_id, family_id, runs, budget, threads, algorithm.spec.resources.gpus,
                                      cost, predict_run(cost, budget, every, suite.spec.execution.checkpoint_every_s),
                                      entry is not None))
        torch.set_num_threads(1)
        references: dict[tuple[str, str], float] = {}
        for key in reference_keys(suite):
            pair = (key.algorithm, key.family)
            if pair in references or key in trained:
                continue
            cache_key = reference_key(resolved, *pair)
            entry = cache.get(cache_key) if cached else None
            if entry is None:
                log(f"timing reference {key.algorithm}/{key.family}")
                references[pair] = measure_reference(suite, key)
                fresh[cache_key] = {"kind": f"{key.algorithm}/{key.family}", "seconds": references[pair]}
            else:
                references[pair] = float(entry["seconds"])
    finally:
        torch.set_num_threads(threads_before)
    startup_key = "startup-" + _digest([_family_payload(resolved, f.key) for f in suite.families])
    startup = cache.get(startup_key) if cached else None
    startup_s = float(startup["seconds"]) if startup else startup_seconds() + splits_s
    fresh.setdefault(startup_key, {"seconds": startup_s})
    save_cache(fresh, cache_path)
    per_kind = {(k.algorithm, k.family): k.run.total_s for k in kinds}
    order = [references[(k.algorithm, k.family)] for k in reference_keys(suite) if k not in trained]
    order += [per_kind[(k.algorithm, k.family)] for k in learners]
    return SuiteEstimate(suite.name, device, workers, kinds, references, len(reference_keys(suite)) - len(trained),
                         startup_s, order,
                         load if fresh.keys() - {startup_key} else None)


# --- the table ---------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    seconds = round(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _number(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def format_estimate(estimate: SuiteEstimate) -> str:
    """The per-kind table, the suite's totals, the dominant kinds and the notes on what was scaled."""
    header = ("run kind", "runs", "env steps", "iters", "steps/s", "s/iter", "sampling", "updating", "evaluating",
              "per run", "all runs")
    lines: list[tuple[str, ...]] = [header]
    for k in estimate.kinds:
        run, cost = k.run, k.cost
        total = run.total_s or 1.0
        lines.append((f"{k.algorithm}/{k.family}" + (" (cached)" if k.cached else ""), str(k.runs), _number(k.budget),
                      str(run.iterations), _number(cost.env_steps / cost.iteration_s if cost.iteration_s else 0.0),
                      f"{cost.iteration_s:.3g}", f"{100 * run.sampling_s / total:.0f}%",
                      f"{100 * run.updating_s / total:.0f}%", f"{100 * run.evaluating_s / total:.0f}%",
                      format_seconds(run.total_s), format_seconds(run.total_s * k.runs)))
    from harness.run.store import REFERENCE_PREFIX

    trained = sum(k.runs for k in estimate.kinds if k.algorithm.startswith(REFERENCE_PREFIX))
    runs = f"{sum(k.runs for k in estimate.kinds) - trained} learner runs"
    runs += f" and {trained} trained reference runs" if trained else ""
    out = [f"{estimate.name}: {runs} of {len(estimate.kinds)} kinds and "
           f"{estimate.reference_runs} reference runs, measured on {socket.gethostname()} ({os.cpu_count()} cores), "
           f"device {estimate.device}, resources.cpus torch threads per run", "", _table(lines)]
    if estimate.references:
        slowest = max(estimate.references.items(), key=lambda item: item[1])
        out.append(f"references: {estimate.reference_runs} runs of one evaluation each, "
                   f"{format_seconds(estimate.reference_s)} in all (slowest: {'/'.join(slowest[0])} "
                   f"{slowest[1]:.1f}s)")
    core = estimate.core_hours()
    processes = 1 if estimate.workers == 1 else estimate.workers + 1
    out += ["", f"run time: {format_seconds(sum(estimate.order))} in all = {core:.3g} core-hours"
            + (f", {estimate.gpu_hours():.3g} GPU-hours" if estimate.device.startswith("cuda") else "")
            + f" (and {estimate.startup_s:.1f}s of start-up in each of {processes} processes)"]
    out.append(f"wall time on {estimate.workers} worker{'s' if estimate.workers != 1 else ''}: "
               f"{format_seconds(estimate.wall_s)} (runs started in the suite's order, as the local pool does; "
               f"longest first: {format_seconds(estimate.wall_longest_first_s)}; start-up "
               f"{estimate.startup_s:.1f}s)")
    longest = max((k.run.total_s for k in estimate.kinds), default=0.0)
    if estimate.workers > 1 and longest >= 0.9 * makespan(estimate.order, estimate.workers):
        out.append(f"  bounded by the longest run ({format_seconds(longest)}): more workers do not shorten it")
    total = sum(k.run.total_s * k.runs * k.cpus for k in estimate.kinds) or 1.0
    ranked = sorted(estimate.kinds, key=lambda k: k.run.total_s * k.runs * k.cpus, reverse=True)
    out.append("dominant: " + ", ".join(
        f"{k.algorithm}/{k.family} {100 * k.run.total_s * k.runs * k.cpus / total:.0f}% "
        f"({_dominant_part(k.run)})" for k in ranked[:3]))
    if estimate.load is not None and estimate.load > 0.5 and not estimate.device.startswith("cuda"):
        out.append(f"the machine was busy when measured (load average {estimate.load:.1f} on {os.cpu_count()} cores): "
                   "times are CPU seconds, so the wall time assumes each worker gets a core to itself")
    noted = [k for k in estimate.kinds if k.cost.notes]
    if noted:
        out += ["", "how each kind was timed (fractions scaled up: upper bounds):"]
        out += [f"  {k.algorithm}/{k.family}: {'; '.join(k.cost.notes)}" for k in noted]
    return "\n".join(out)


def _dominant_part(run: RunPrediction) -> str:
    parts = {"sampling": run.sampling_s, "updating": run.updating_s, "evaluating": run.evaluating_s}
    name = max(parts, key=lambda p: parts[p])
    return f"{100 * parts[name] / (run.total_s or 1.0):.0f}% {name}"
