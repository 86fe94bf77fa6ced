"""Throughput benchmarks, as ratios to a baseline measured in the same process.

Shared by ``benchmarks/test_*.py`` (pytest-benchmark) and ``python -m harness bench``. Every case is
prepared once (``Case.build``) into a ``Measurement`` whose rounds alternate with its baseline's, so both
sides see the same machine load; each side's figure is its best round. Nothing asserts wall-clock time.

Cases (``CASES``):

* **sampling** — env steps/s of the harness ``Sampler`` driving a learner's exploration policy, built from
  its preset, over one trial per task, against a bare ``gymnasium.vector.SyncVectorEnv`` of as many envs
  stepping pre-drawn uniform random actions: ``random`` (a batched random policy: the sampler's own
  cost), ``mlp`` (MAML's ``halfcheetah_vel`` Gaussian MLP), ``gru`` (RL²), ``trmrl`` (TrMRL's
  ``halfcheetah_vel`` preset, the paper's window attention), ``trmrl_sliding`` (the same network with
  KV-cached sliding attention), ``pearl`` (the actor with its context) on ``halfcheetah_vel`` (20 tasks
  × 2 episodes × 200 steps; bare: ``HalfCheetah-v5`` from ``gymnasium.make``); ``mw_random``, ``mw_mlp``
  (MAML's ``metaworld`` MLP), ``mw_trmrl`` (TrMRL's ``metaworld`` preset) on ML1 ``reach-v3`` (10 tasks ×
  2 × 500 steps; bare: the family's own environments, set to the same tasks).
* **trmrl_cache** — one batched policy step over 20 tasks with trial-spanning memory and a 400-step
  window, timed over the second episode (the window holds 200–400 tokens): KV-cached against
  recomputed (``UncachedSliding``, timed at ``cache_samples`` evenly spaced steps, reached without
  computing the steps between). The ratio is a cost: cached seconds per step / uncached.
* **update** — one PPO update (``train_iteration`` on a batch collected once, state restored before
  each round) of RL² and of TrMRL at their ``halfcheetah_vel`` settings: samples/s is the batch's env
  steps over the update's seconds, and the ratio divides it by the bare env's steps/s: above 1 the
  update digests env steps faster than the bare simulator produces them.
* **pearl_iteration** — one ``train_iteration`` of PEARL's ``halfcheetah_vel`` preset (oyster's) after
  iteration 0, state restored before each round: 5 × 1000 env steps collected through the sampler, then
  gradient steps (meta-batch 16 × 256, networks 3 × 300). ``pearl_gradient_steps`` of them are timed and
  the preset's 2000 extrapolated: env steps/s of the whole iteration over the bare env's.
* **maml_trpo** — the TRPO outer step of MAML's ``halfcheetah_vel`` preset (ProMP's: MLP(64, 64), 20
  pooled one-episode trials per task, 10 conjugate-gradient iterations through the inner step, line
  search) on one meta-batch collected once, state restored before each round: samples/s is the pre- and
  post-update env steps over the step's seconds, over the bare env's steps/s.

PyTorch runs ``THREADS`` intra-op thread(s), as the harness's workers do (one worker per core). With
``--device cuda`` the learners train (and TrMRL acts) on the GPU, as a run with ``device: cuda`` does;
``--acting cpu|device`` overrides where every learner acts (``algorithms.device.acting_on``), to check
that each learner's own choice is the faster one.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from algorithms import device as devices
from algorithms.base import MetaEnvInfo, Policy, Task, TrialBatch
from algorithms.registry import learner_class
from harness import seeding
from harness.run.rollout import Sampler
from harness.tasks import TaskFamily, family_class, make_split

#: Intra-op threads for every measurement: one, as each harness worker (``harness.run.runner``).
THREADS = 1


@dataclass(frozen=True)
class Sizes:
    """How big the cases are, and where they run; the defaults are TrMRL's locomotion and ML1 settings
    (DESIGN.md §9), on the CPU."""

    tasks: int = field(default=20, metadata={"doc": "halfcheetah_vel tasks (one env each)"})
    episodes: int = field(default=2, metadata={"doc": "episodes per trial"})
    episode_steps: int = field(default=200, metadata={"doc": "halfcheetah_vel steps per episode"})
    metaworld_tasks: int = field(default=10, metadata={"doc": "ML1 reach tasks"})
    metaworld_episode_steps: int = field(default=500, metadata={"doc": "ML1 reach steps per episode"})
    cache_steps: int = field(default=200, metadata={"doc": "trmrl_cache: steps per episode (window: 2 episodes)"})
    cache_samples: int = field(default=5, metadata={"doc": "trmrl_cache: uncached steps timed per round"})
    update_epochs: int | None = field(default=None, metadata={"doc": "update cases: epochs (None: the preset's)"})
    pearl_gradient_steps: int = field(
        default=10, metadata={"doc": "pearl_iteration: gradient steps timed per round (the preset's are extrapolated)"}
    )
    maml_trials_per_task: int | None = field(
        default=None, metadata={"doc": "maml_trpo: pooled trials per task (None: the preset's 20)"}
    )
    device: str = field(default="cpu", metadata={"doc": "the learners' training device: cpu, cuda, cuda:N"})
    acting: devices.Acting | None = field(
        default=None, metadata={"doc": "where every learner acts: cpu, device, or None (each learner's own choice)"}
    )


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Attributes:
        case: the case's name.
        rate: the case's figure (its ``unit``), best round.
        baseline: the baseline's figure, best round.
        ratio: ``rate / baseline``; for a cost ratio (``trmrl_cache``) ``baseline / rate``.
        target: ``(comparison, value)``, e.g. ``(">=", 0.8)``; ``None`` where the issue sets none.
        unit: what ``rate`` and ``baseline`` count.
        note: the setting in words.
    """

    case: str
    rate: float
    baseline: float
    ratio: float
    target: tuple[str, float] | None
    unit: str
    note: str

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        comparison, value = self.target
        return self.ratio >= value if comparison == ">=" else self.ratio <= value


class Measurement:
    """A prepared case: ``case()`` and ``baseline()`` each run one round and record its rate."""

    def __init__(self, name: str, unit: str, note: str, target: tuple[str, float] | None,
                 run_case: Callable[[], float], run_baseline: Callable[[], float], cost_ratio: bool = False,
                 close: Callable[[], None] | None = None, describe: Callable[[], str] | None = None) -> None:
        self.name, self.unit, self.note, self.target = name, unit, note, target
        self._run_case, self._run_baseline, self.cost_ratio = run_case, run_baseline, cost_ratio
        self._close, self._describe = close, describe  # describe: the note from the rounds run
        self.case_rates: list[float] = []
        self.baseline_rates: list[float] = []

    def case(self) -> None:
        self.case_rates.append(self._run_case())

    def baseline(self) -> None:  # returns None: pytest-benchmark's pedantic passes a setup's result on
        self.baseline_rates.append(self._run_baseline())

    def result(self, warmup: int = 0) -> Row:
        """The row from the best round of each side, after the first ``warmup`` rounds."""
        rate, baseline = max(self.case_rates[warmup:]), max(self.baseline_rates[warmup:])
        ratio = baseline / rate if self.cost_ratio else rate / baseline
        note = self.note if self._describe is None else self._describe()
        return Row(self.name, rate, baseline, ratio, self.target, self.unit, note)

    def close(self) -> None:
        if self._close is not None:
            self._close()


@dataclass(frozen=True)
class Case:
    """A named benchmark: ``build(sizes)`` prepares its ``Measurement`` (envs, learner, baseline).

    ``rounds`` and ``warmup`` are the CLI's defaults: long rounds (Meta-World's ~10 s, an update's up to a
    minute) get no warm-up and updates one round, so that the default run takes about two minutes.
    """

    name: str
    kind: str  # "sampling", "cache" or "update"
    build: Callable[[Sizes], Measurement]
    rounds: int = 2
    warmup: int = 1


# --- baselines and helpers ---------------------------------------------------------------------------


class BareVectorEnv:
    """A bare ``gymnasium.vector.SyncVectorEnv`` stepping pre-drawn uniform random actions.

    Args:
        env_fns: one constructor per env.
        steps_per_env: vector steps per ``run``.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], steps_per_env: int) -> None:
        self.envs = gym.vector.SyncVectorEnv(list(env_fns))
        space = self.envs.action_space
        actions = np.random.default_rng(0).uniform(space.low, space.high, (steps_per_env, *space.shape))
        self.actions = actions.astype(np.float32)
        self.seconds: list[float] = []

    @property
    def env_steps(self) -> int:
        return self.actions.shape[0] * self.actions.shape[1]

    def run(self) -> None:
        """One round: reset (seeded by the round), then step every action; its time goes to ``seconds``."""
        self.envs.reset(seed=len(self.seconds))
        start = time.perf_counter()
        for action in self.actions:
            self.envs.step(action)
        self.seconds.append(time.perf_counter() - start)

    def rate(self) -> float:
        """One round (``run``); returns its env steps/s."""
        self.run()
        return self.env_steps / self.seconds[-1]

    def close(self) -> None:
        self.envs.close()


def halfcheetah_bare(num_envs: int, steps_per_env: int) -> BareVectorEnv:
    """``num_envs`` ``HalfCheetah-v5`` from ``gymnasium.make`` (its default wrappers, as users run it)."""
    return BareVectorEnv([lambda: gym.make("HalfCheetah-v5") for _ in range(num_envs)], steps_per_env)


def family_bare(family: TaskFamily, tasks: Sequence[Task], steps_per_env: int) -> BareVectorEnv:
    """The family's own environments, one per task and set to it: the sampler's simulator work, bare."""

    def make(task: Task) -> Callable[[], gym.Env]:
        def env() -> gym.Env:
            built = family.make_env()
            family.set_task(built, task)
            built.metadata = dict(built.metadata)  # SyncVectorEnv writes into it: not into the class's dict
            return built

        return env

    return BareVectorEnv([make(task) for task in tasks], steps_per_env)


class RandomPolicy:
    """Uniform random actions in a box, one batched draw per step (the ``Policy`` protocol)."""

    def __init__(self, space: gym.spaces.Box, seed: int = 0) -> None:
        self.low = space.low.astype(np.float32)
        self.width = (space.high - space.low).astype(np.float32)
        self.rng = np.random.default_rng(seed)

    def reset(self, new_trial: np.ndarray) -> None:
        pass

    def act(self, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray, episode_start: np.ndarray,
            deterministic: bool) -> np.ndarray:
        # rng.random + scale: uniform(low, high) with array bounds costs ~20 µs a call, as much as a step
        return self.low + self.width * self.rng.random((len(obs), len(self.low)), dtype=np.float32)


class TimedSampler:
    """The harness sampler, timing its ``collect`` calls (``seconds`` accumulates)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.seconds = sampler, 0.0

    def collect(self, policy: Policy, tasks: Sequence[Task], episodes_per_trial: int,
                deterministic: bool = False) -> TrialBatch:
        start = time.perf_counter()
        batch = self.sampler.collect(policy, tasks, episodes_per_trial, deterministic)
        self.seconds += time.perf_counter() - start
        return batch


class FixedBatch:
    """A ``Sampler`` that hands out one batch collected beforehand: an update without the sampling."""

    def __init__(self, batch: TrialBatch) -> None:
        self.batch = batch

    def collect(self, policy: Policy, tasks: Sequence[Task], episodes_per_trial: int,
                deterministic: bool = False) -> TrialBatch:
        return self.batch


@contextmanager
def torch_threads(threads: int = THREADS) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Setting:
    """A family, its tasks and a sampler over them, as the harness builds them (``make_split``)."""

    family: TaskFamily
    tasks: list[Task]
    sampler: Sampler
    info: MetaEnvInfo


def _setting(name: str, params: dict[str, Any], tasks: int, episodes: int) -> _Setting:
    cls = family_class(name)
    family = cls(cls.Params(**params))
    split = make_split(family, "bench", {"train": tasks}, lambda split: seeding.generator(0, "bench", split))
    sampler = Sampler(family, seeding.generator(0, "bench", "sampler"))
    sampler.prepare(split["train"])  # environments built now, not in the first timed round
    info = MetaEnvInfo(sampler.observation_space, sampler.action_space, episodes, family.max_episode_steps)
    return _Setting(family, split["train"], sampler, info)


def _learner(algorithm: str, info: MetaEnvInfo, preset: str | None, sizes: Sizes, **overrides: Any) -> Any:
    """A learner from its preset (``None`` or a preset it lacks: its default config), seed 0, on
    ``sizes.device``, acting where ``sizes.acting`` says."""
    cls = learner_class(algorithm)
    with devices.acting_on(sizes.acting):
        return cls(info, cls.Config(**{**cls.presets.get(preset or "", {}), **overrides}), seed=0, device=sizes.device)


def _synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a timer read after it counts that work (CUDA only)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


# --- cases -------------------------------------------------------------------------------------------


def _sampling(name: str, note: str, target: tuple[str, float] | None, metaworld: bool,
              policy_for: Callable[[MetaEnvInfo, Sizes], Callable[[], Policy]]) -> Case:
    """A sampling case on halfcheetah_vel, or on ML1 reach (``metaworld``)."""
    def build(sizes: Sizes) -> Measurement:
        if metaworld:
            setting = _setting("metaworld_ml1", {"task": "reach-v3", "episode_steps": sizes.metaworld_episode_steps},
                               sizes.metaworld_tasks, sizes.episodes)
            bare = family_bare(setting.family, setting.tasks, sizes.episodes * sizes.metaworld_episode_steps)
        else:
            setting = _setting("halfcheetah_vel", {"episode_steps": sizes.episode_steps}, sizes.tasks, sizes.episodes)
            bare = halfcheetah_bare(sizes.tasks, sizes.episodes * sizes.episode_steps)
        policy = policy_for(setting.info, sizes)

        def run_case() -> float:
            fresh = policy()  # a new exploration policy per trial, as training and evaluation make them
            start = time.perf_counter()
            batch = setting.sampler.collect(fresh, setting.tasks, sizes.episodes)
            return batch.env_steps / (time.perf_counter() - start)

        def close() -> None:
            bare.close()
            setting.sampler.close()

        return Measurement(name, "env steps/s (baseline: bare SyncVectorEnv)", note, target, run_case, bare.rate,
                           close=close)

    return Case(name, "sampling", build, rounds=2, warmup=0 if metaworld else 1)


def _random(info: MetaEnvInfo, sizes: Sizes) -> Callable[[], Policy]:
    policy = RandomPolicy(info.action_space)  # type: ignore[arg-type]
    return lambda: policy


def _exploration(algorithm: str, preset: str, **overrides: Any
                 ) -> Callable[[MetaEnvInfo, Sizes], Callable[[], Policy]]:  # fmt: skip
    def policy_for(info: MetaEnvInfo, sizes: Sizes) -> Callable[[], Policy]:
        return _learner(algorithm, info, preset, sizes, **overrides).exploration_policy

    return policy_for


def _cache(sizes: Sizes) -> Measurement:
    from algorithms.trmrl import PRESETS, Config, TrMRL, TrMRLPolicy
    from benchmarks.baselines import UncachedSliding

    steps, tasks, episodes = sizes.cache_steps, sizes.tasks, 2
    info = MetaEnvInfo(gym.spaces.Box(-np.inf, np.inf, (17,), np.float32), gym.spaces.Box(-1, 1, (6,), np.float32),
                       episodes, steps)
    config = replace(Config(**PRESETS["halfcheetah_vel"]), attention="sliding", memory_span="trial",
                     working_memory=episodes * steps)
    net = TrMRL(info, config, seed=0, device=sizes.device).net
    tokens = torch.randn(episodes * steps, tasks, net.token_dim, generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(net.device)
    timed = np.linspace(steps, episodes * steps - 1, min(sizes.cache_samples, steps)).astype(int)

    @torch.inference_mode()
    def cached() -> float:
        policy = TrMRLPolicy(net, torch.Generator())
        policy.reset(np.ones(tasks, bool))
        for t in range(steps):  # the first episode fills the memory
            policy.memory.step(tokens[t])
        _synchronize(sizes.device)
        start = time.perf_counter()
        for t in range(steps, episodes * steps):
            policy.memory.step(tokens[t])
        _synchronize(sizes.device)
        return steps / (time.perf_counter() - start)

    @torch.inference_mode()
    def uncached() -> float:
        memory = UncachedSliding(net)
        memory.reset(torch.ones(tasks, dtype=torch.bool))
        seconds, position = 0.0, 0
        for t in timed:  # reach step t without computing the steps before it, then time that one step
            memory.skip(tokens[position:t])
            _synchronize(sizes.device)
            start = time.perf_counter()
            memory.step(tokens[t])
            _synchronize(sizes.device)
            seconds += time.perf_counter() - start
            position = t + 1
        return len(timed) / seconds

    note = f"{tasks} tasks, {episodes * steps}-step window, 2nd episode; ratio: cost cached / uncached"
    return Measurement("trmrl_cache", "policy steps/s (baseline: uncached)", note, ("<=", 0.2), cached, uncached,
                       cost_ratio=True)


def _update(name: str, algorithm: str) -> Case:
    def build(sizes: Sizes) -> Measurement:
        setting = _setting("halfcheetah_vel", {"episode_steps": sizes.episode_steps}, sizes.tasks, sizes.episodes)
        overrides = {} if sizes.update_epochs is None else {"epochs": sizes.update_epochs}
        learner = _learner(algorithm, setting.info, "halfcheetah_vel", sizes, **overrides)
        batch = setting.sampler.collect(learner.exploration_policy(), setting.tasks, sizes.episodes)
        initial = copy.deepcopy(learner.state_dict())
        bare = halfcheetah_bare(sizes.tasks, sizes.episodes * sizes.episode_steps)
        replay = FixedBatch(batch)

        def run_case() -> float:
            learner.load_state_dict(copy.deepcopy(initial))  # every round the same update, from the same state
            _synchronize(sizes.device)
            start = time.perf_counter()
            learner.train_iteration(replay, setting.tasks)
            _synchronize(sizes.device)
            return batch.env_steps / (time.perf_counter() - start)

        cfg = learner.config
        minibatch = (f"minibatch {cfg.minibatch_size} samples" if hasattr(cfg, "minibatch_size")
                     else f"{cfg.minibatches} minibatches of whole trials")
        preset = "halfcheetah_vel preset" if "halfcheetah_vel" in learner.presets else "default config"
        note = f"{batch.env_steps} samples, {cfg.epochs} epochs, {minibatch}; {type(learner).__name__} {preset}"
        def close() -> None:
            bare.close()
            setting.sampler.close()

        return Measurement(name, "samples/s (baseline: bare env steps/s)", note, None, run_case, bare.rate,
                           close=close)

    return Case(name, "update", build, rounds=1, warmup=0)


def _pearl_iteration(sizes: Sizes) -> Measurement:
    setting = _setting("halfcheetah_vel", {"episode_steps": sizes.episode_steps}, sizes.tasks, sizes.episodes)
    learner = _learner("pearl", setting.info, "halfcheetah_vel", sizes, gradient_steps=sizes.pearl_gradient_steps)
    preset_steps = int(learner.presets["halfcheetah_vel"]["gradient_steps"])
    learner.train_iteration(setting.sampler, setting.tasks)  # iteration 0: initial data on every task
    initial = copy.deepcopy(learner.state_dict())
    bare = halfcheetah_bare(sizes.tasks, sizes.episodes * sizes.episode_steps)
    timings: list[tuple[float, float, float]] = []  # per round: env steps, collection s, s per gradient step

    def run_case() -> float:
        learner.load_state_dict(copy.deepcopy(initial))  # every round the same iteration, from the same state
        sampler, env_steps = TimedSampler(setting.sampler), setting.sampler.env_steps
        _synchronize(sizes.device)
        start = time.perf_counter()
        learner.train_iteration(sampler, setting.tasks)
        _synchronize(sizes.device)
        seconds = time.perf_counter() - start
        step_s = (seconds - sampler.seconds) / sizes.pearl_gradient_steps  # storing the data counts as training
        timings.append((setting.sampler.env_steps - env_steps, sampler.seconds, step_s))
        return timings[-1][0] / (sampler.seconds + preset_steps * step_s)

    def describe() -> str:
        env_steps, collect_s, step_s = min(timings, key=lambda t: t[1] + preset_steps * t[2])
        return (f"PEARL halfcheetah_vel preset, {sizes.tasks} tasks: {env_steps} env steps ({collect_s:.2f} s) + "
                f"{preset_steps} gradient steps at {1e3 * step_s:.0f} ms (from {sizes.pearl_gradient_steps} timed)")

    def close() -> None:
        bare.close()
        setting.sampler.close()

    return Measurement("pearl_iteration", "env steps/s (baseline: bare env steps/s)",
                       "PEARL halfcheetah_vel preset", None, run_case, bare.rate, close=close, describe=describe)


def _maml_trpo(sizes: Sizes) -> Measurement:
    setting = _setting("halfcheetah_vel", {"episode_steps": sizes.episode_steps}, sizes.tasks, sizes.episodes)
    overrides = {} if sizes.maml_trials_per_task is None else {"trials_per_task": sizes.maml_trials_per_task}
    learner = _learner("maml", setting.info, "halfcheetah_vel", sizes, **overrides)
    pre, post, _ = learner.collect_meta_batch(setting.sampler, setting.tasks)
    setting.sampler.close()
    initial = copy.deepcopy(learner.state_dict())
    samples = int(pre.mask.sum()) + int(post.mask.sum())
    bare = halfcheetah_bare(sizes.tasks, sizes.episodes * sizes.episode_steps)

    def run_case() -> float:
        learner.load_state_dict(copy.deepcopy(initial))  # every round the same step, from the same θ
        _synchronize(sizes.device)
        start = time.perf_counter()
        learner.outer_step(pre, post)
        _synchronize(sizes.device)
        return samples / (time.perf_counter() - start)

    cfg = learner.config
    note = (f"MAML halfcheetah_vel preset: {sizes.tasks} tasks × {cfg.trials_per_task} pooled trials, pre + post "
            f"{samples} samples; {cfg.cg_iters} CG iterations, line search")
    return Measurement("maml_trpo", "samples/s (baseline: bare env steps/s)", note, None, run_case, bare.rate,
                       close=bare.close)


CASES: dict[str, Case] = {case.name: case for case in (
    _sampling("random", "batched random policy: the sampler's own cost", None, False, _random),
    _sampling("mlp", "MAML halfcheetah_vel preset: Gaussian MLP(64, 64)", (">=", 0.8), False,
              _exploration("maml", "halfcheetah_vel")),
    _sampling("gru", "RL² (no halfcheetah_vel preset: default config, GRU 128)", (">=", 0.6), False,
              _exploration("rl2", "halfcheetah_vel")),
    _sampling("trmrl", "TrMRL halfcheetah_vel preset: paper window attention, 4 × d128, window 5", (">=", 0.4),
              False, _exploration("trmrl", "halfcheetah_vel")),
    _sampling("trmrl_sliding", "TrMRL halfcheetah_vel preset with KV-cached sliding attention", None, False,
              _exploration("trmrl", "halfcheetah_vel", attention="sliding")),
    _sampling("pearl", "PEARL halfcheetah_vel preset: actor 3 × 300 with its trial context", None, False,
              _exploration("pearl", "halfcheetah_vel")),
    _sampling("mw_random", "ML1 reach, batched random policy", None, True, _random),
    _sampling("mw_mlp", "ML1 reach, MAML metaworld preset: Gaussian MLP(128, 128)", (">=", 0.8), True,
              _exploration("maml", "metaworld")),
    _sampling("mw_trmrl", "ML1 reach, TrMRL metaworld preset: window attention, 4 × d32", None, True,
              _exploration("trmrl", "metaworld")),
    Case("trmrl_cache", "cache", _cache),
    _update("update_rl2", "rl2"),
    _update("update_trmrl", "trmrl"),
    Case("pearl_iteration", "update", _pearl_iteration, rounds=1, warmup=0),
    Case("maml_trpo", "update", _maml_trpo, rounds=1, warmup=0),
)}


# --- running -----------------------------------------------------------------------------------------


def measure(case: Case, sizes: Sizes, rounds: int, warmup: int,
            progress: Callable[[str], None] = lambda line: None) -> Row:
    """Build ``case`` and run ``warmup + rounds`` alternating rounds (baseline, then case) at ``THREADS``."""
    with torch_threads():
        measurement = case.build(sizes)
        try:
            for i in range(warmup + rounds):
                measurement.baseline()
                measurement.case()
                label = "warm-up" if i < warmup else f"round {i - warmup + 1}/{rounds}"
                progress(f"{case.name}: {label}: {measurement.case_rates[-1]:,.0f} vs "
                         f"{measurement.baseline_rates[-1]:,.0f} {measurement.unit.split(' (')[0]}")
            return measurement.result(warmup)
        finally:
            measurement.close()


def run_pytest_benchmark(benchmark: Any, name: str, sizes: Sizes | None = None, rounds: int = 3,
                         warmup: int = 1) -> Row:
    """One case under pytest-benchmark: rounds of the case, each after a round of its baseline (pedantic's
    untimed setup); the row goes to ``benchmark.extra_info`` and is printed."""
    with torch_threads():
        measurement = CASES[name].build(sizes or Sizes())
        try:
            benchmark.pedantic(measurement.case, setup=measurement.baseline, rounds=rounds, iterations=1,
                               warmup_rounds=warmup)
            row = measurement.result(warmup)
        finally:
            measurement.close()
    benchmark.extra_info.update(rate=round(row.rate, 1), baseline=round(row.baseline, 1), unit=row.unit,
                                ratio=round(row.ratio, 4), target=row.target, met=row.met, threads=THREADS,
                                note=row.note)
    print(f"\ntorch threads: {THREADS}; {describe_machine()}\n" + format_table([row]))
    return row


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: case, rate, baseline, ratio, target, met, unit and note."""
    header = ("case", "rate", "baseline", "ratio", "target", "met", "unit", "setting")
    lines = [header]
    for row in rows:
        target = "—" if row.target is None else f"{'≥' if row.target[0] == '>=' else '≤'} {row.target[1]:g}"
        met = "—" if row.met is None else ("yes" if row.met else "no")
        ratio = f"{row.ratio:.3f}" if row.ratio >= 0.01 else f"{row.ratio:.2e}"  # PEARL's: ~1e-3
        lines.append((row.case, _rate(row.rate), _rate(row.baseline), ratio, target, met, row.unit, row.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1]
                     for line in lines)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"  # 2.9, not 3, for slow baselines


def describe_machine(device: str = "cpu") -> str:
    """One line: the CPU, its cores, the GPU where ``device`` is one, and PyTorch's version and threads during
    measurements."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f"; {device}: {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} with {THREADS} intra-op thread(s)"


# --- the `bench` subcommand --------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to ``python -m harness``'s subparsers (``handler`` runs it)."""
    bench = subparsers.add_parser(
        "bench", help="throughput of sampling and updates, as ratios to a bare vectorised env on this machine",
        description=(__doc__ or "").split("\n\n")[0] + " Cases: " + ", ".join(CASES) + ".")
    bench.add_argument("--cases", default="all",
                       help="comma-separated case names, or 'all' (default): " + ", ".join(CASES))
    bench.add_argument("--rounds", type=int, default=None,
                       help="measured rounds of every case but the updates (default: 2; after a warm-up round "
                       "except on Meta-World)")
    bench.add_argument("--update-rounds", type=int, default=1,
                       help="measured rounds of the update cases, no warm-up (default: %(default)s)")
    defaults = Sizes()
    bench.add_argument("--tasks", type=int, default=defaults.tasks, help="halfcheetah_vel tasks (default: %(default)s)")
    bench.add_argument("--episode-steps", type=int, default=defaults.episode_steps,
                       help="halfcheetah_vel steps per episode (default: %(default)s)")
    bench.add_argument("--metaworld-tasks", type=int, default=defaults.metaworld_tasks,
                       help="ML1 reach tasks (default: %(default)s)")
    bench.add_argument("--metaworld-episode-steps", type=int, default=defaults.metaworld_episode_steps,
                       help="ML1 reach steps per episode (default: %(default)s)")
    bench.add_argument("--cache-steps", type=int, default=defaults.cache_steps,
                       help="trmrl_cache: steps per episode, the window is two episodes (default: %(default)s)")
    bench.add_argument("--update-epochs", type=int, default=None,
                       help="update cases: PPO epochs (default: the preset's); fewer is faster but not one update")
    bench.add_argument("--pearl-gradient-steps", type=int, default=defaults.pearl_gradient_steps,
                       help="pearl_iteration: gradient steps timed per round; the preset's 2000 are extrapolated "
                       "(default: %(default)s)")
    bench.add_argument("--maml-trials-per-task", type=int, default=None,
                       help="maml_trpo: pooled trials per task (default: the preset's 20)")
    bench.add_argument("--device", default="cpu",
                       help="the learners' training device: cpu (default), cuda or cuda:N (TrMRL acts there too)")
    bench.add_argument("--acting", default=None, choices=("cpu", "device"),
                       help="where every learner acts, overriding each one's own choice (default: its own)")
    bench.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``python -m harness bench``: measure the chosen cases, print progress to stderr and the table to stdout."""
    names = list(CASES) if args.cases == "all" else [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        print(f"error: --cases: unknown case(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    for option in ("rounds", "update_rounds", "tasks", "episode_steps", "metaworld_tasks",
                   "metaworld_episode_steps", "cache_steps", "pearl_gradient_steps", "maml_trials_per_task"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            print(f"error: --{option.replace('_', '-')}: must be >= 1", file=sys.stderr)
            return 2
    if args.update_epochs is not None and args.update_epochs < 1:
        print("error: --update-epochs: must be >= 1", file=sys.stderr)
        return 2
    try:
        device = str(devices.resolve(args.device))
    except ValueError as error:
        print(f"error: --{error}", file=sys.stderr)
        return 2
    sizes = Sizes(tasks=args.tasks, episode_steps=args.episode_steps, metaworld_tasks=args.metaworld_tasks,
                  metaworld_episode_steps=args.metaworld_episode_steps, cache_steps=args.cache_steps,
                  update_epochs=args.update_epochs, pearl_gradient_steps=args.pearl_gradient_steps,
                  maml_trials_per_task=args.maml_trials_per_task, device=device, acting=args.acting)
    print(f"bench: {describe_machine(device)}", file=sys.stderr)
    rows = []
    started = time.perf_counter()
    for i, name in enumerate(names, 1):
        case = CASES[name]
        if case.kind == "update":
            rounds = args.update_rounds
        else:
            rounds = case.rounds if args.rounds is None else args.rounds

        def progress(line: str, i: int = i) -> None:
            print(f"bench [{i}/{len(names)}, {time.perf_counter() - started:.0f} s] {line}", file=sys.stderr,
                  flush=True)

        rows.append(measure(case, sizes, rounds, case.warmup, progress))
    print(f"{describe_machine(device)}; acting: {args.acting or 'each learner where it says (acts_on)'}")
    print(f"sizes: {sizes}")
    print(format_table(rows))
    missed = [row.case for row in rows if row.met is False]
    print(f"{len(rows)} cases in {time.perf_counter() - started:.0f} s; targets missed: {', '.join(missed) or 'none'}")
    return 0

