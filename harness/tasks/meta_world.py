"""Meta-World ML1, ML10 and ML45 (Yu et al., CoRL 2019; Meta-World 3.1.1 ``*-v3`` environments).

A task is one Meta-World task class (``reach-v3``, ``push-v3``, …) with one goal/object position
vector (``rand_vec``), taken from the official benchmark objects ``metaworld.ML1(name, seed)``,
``metaworld.ML10(seed)`` and ``metaworld.ML45(seed)``, never from ``gym.make_vec``: in 3.1.1
``gym.make_vec('Meta-World/ML1-train', …)`` hands out the *test* tasks (a late-bound loop variable in its
registration; DESIGN.md §11).

Splits (50 goals per class in every list, as Meta-World generates them):

- ``train``: the benchmark's ``train_tasks``.
- ``test`` (training classes, goals disjoint from train): ML1: ``ML1(name, seed).test_tasks``. ML10/ML45
  hold out whole classes, so their ``test_tasks`` are OOD; their ``test`` split is, for each training
  class ``c``, the goals of ``ML1(c, seed).test_tasks`` (Meta-World's own held-out goals of that class).
- ``ood`` (ML10/ML45 only): the benchmark's ``test_tasks`` — the held-out classes.

Meta-World 3.1.1 facts the environment relies on (checked in ``tests/test_tasks_metaworld.py``):
``SawyerXYZEnv.reset`` ignores its ``seed`` (it neither reseeds nor redraws anything); after
``set_task`` the goal vector is frozen, so every reset restores exactly the task's goal and object
positions; the ML tasks are partially observable, so the last 3 of the 39 observation entries (the
goal) are zeros. The dynamics have no noise: a task and an action sequence fix the trajectory.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, field_validator

from harness.tasks.base import FamilyParams, SplitError, TaskFamily

if TYPE_CHECKING:  # metaworld is imported lazily: it costs ~0.35 s and every env module of Meta-World
    import metaworld
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

#: Length of the goal vector of the oracle's task vector: the longest ``rand_vec`` of a Meta-World class
#: (object and goal positions, 6 numbers); shorter ones are zero-padded.
RAND_VEC_SIZE = 6

#: Goals Meta-World generates per task class in every task list (``metaworld._N_GOALS``); checked
#: whenever a list is read, so a Meta-World release that changes it fails loudly.
GOALS_PER_CLASS = 50
#: Meta-World's hard episode limit: ``step`` raises past ``max_path_length`` (500).
MAX_EPISODE_STEPS = 500
OBSERVATION_DIM = 39
ACTION_DIM = 4

RandVec = tuple[float, ...]
ClassGoals = dict[str, tuple[RandVec, ...]]


def task_class_names() -> list[str]:
    """Every Meta-World 3 task class name (``*-v3``), in Meta-World's order."""
    import metaworld

    return list(metaworld.ML1.ENV_NAMES)


def _ml_classes(kind: str) -> tuple[list[str], list[str]]:
    """(train classes, held-out test classes) of ``ML10`` or ``ML45``, in Meta-World's order."""
    from metaworld import env_dict

    classes = {"ML10": env_dict.ML10_V3, "ML45": env_dict.ML45_V3}[kind]
    return list(classes["train"]), list(classes["test"])


def benchmark(kind: str, seed: int, task: str | None = None) -> metaworld.Benchmark:
    """The official benchmark object, built once per process (cached on ``(kind, seed, task)``).

    Building it simulates 50 resets per class to draw the goals: on one core ML1 takes ~1 s, ML10
    ~8 s, ML45 ~26 s.

    Args:
        kind: ``"ML1"``, ``"ML10"`` or ``"ML45"``.
        seed: the seed given to the benchmark (Meta-World seeds the global ``np.random`` with it
            while drawing goals and restores the previous state afterwards).
        task: the task class of ``ML1``; ``None`` otherwise.
    """
    if (kind == "ML1") != (task is not None):
        raise ValueError(f"{kind}: a task class is needed for ML1 and only for ML1 (got {task!r})")
    return _benchmark(kind, seed, task)


@functools.cache
def _benchmark(kind: str, seed: int, task: str | None) -> metaworld.Benchmark:
    import metaworld

    if kind == "ML1":
        return metaworld.ML1(task, seed=seed)
    return {"ML10": metaworld.ML10, "ML45": metaworld.ML45}[kind](seed=seed)


def _goals_by_class(tasks: Sequence[metaworld.Task]) -> ClassGoals:
    """The goal vectors of a benchmark task list, grouped by class, in list order."""
    goals: dict[str, list[RandVec]] = {}
    for task in tasks:
        data = pickle.loads(task.data)
        if not data["partially_observable"]:
            raise RuntimeError(f"{task.env_name}: expected a Meta-Learning task (goal hidden from the observation)")
        # float64 → Python float is exact, and JSON writes floats with repr: stored goals round-trip bit for bit.
        goals.setdefault(task.env_name, []).append(tuple(float(x) for x in np.asarray(data["rand_vec"], np.float64)))
    for name, vecs in goals.items():
        if len(vecs) != GOALS_PER_CLASS:
            raise RuntimeError(f"{name}: Meta-World generated {len(vecs)} goals, expected {GOALS_PER_CLASS}")
    return {name: tuple(vecs) for name, vecs in goals.items()}


@functools.cache
def _benchmark_goals(kind: str, seed: int, task: str | None) -> dict[str, ClassGoals]:
    """``{"train": ..., "test": ...}``: the goals of the benchmark's ``train_tasks`` and ``test_tasks``."""
    bench = benchmark(kind, seed, task)
    return {"train": _goals_by_class(bench.train_tasks), "test": _goals_by_class(bench.test_tasks)}


@functools.cache
def heldout_goals(env_name: str, seed: int) -> tuple[RandVec, ...]:
    """The goals of ``metaworld.ML1(env_name, seed).test_tasks``, built per class on first use.

    ``ML1`` draws its test goals with seed ``seed + 1``; ``CustomML([env_name], [], seed + 1)`` draws the
    same goals without also drawing ML1's training goals (half the cost: ~0.5 s per class). The tests
    check the two agree.
    """
    import metaworld

    return _goals_by_class(metaworld.CustomML([env_name], [], seed=seed + 1).train_tasks)[env_name]


class _EnvPool:
    """Idle Meta-World environments by task class, shared by the environments one family makes.

    One Meta-World env takes ~0.1–0.2 s and ~24 MB to build. An environment switched to another class
    returns its env here and takes one of the new class, so the envs built are bounded by the most
    used at once per class, not by (environments × classes): for ML45 with 25 environments that is
    tens of envs instead of up to 1125 (~27 GB).
    """

    def __init__(self, classes: Sequence[str], reward_function_version: str, episode_steps: int) -> None:
        self.classes = tuple(classes)
        self.reward_function_version = reward_function_version
        self.episode_steps = episode_steps
        self.built = 0
        self._idle: dict[str, list[SawyerXYZEnv]] = {name: [] for name in self.classes}

    def acquire(self, env_name: str) -> SawyerXYZEnv:
        if env_name not in self._idle:
            raise ValueError(f"task class {env_name!r} is not part of this family; its classes: "
                             f"{', '.join(self.classes)}")
        if self._idle[env_name]:
            return self._idle[env_name].pop()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        env = ALL_V3_ENVIRONMENTS[env_name](reward_function_version=self.reward_function_version)
        # Meta-World truncates at ``max_path_length`` (an attribute it reads in ``step``): with the
        # family's episode length the env itself reports ``truncated`` at the harness's time limit.
        env.max_path_length = self.episode_steps
        self.built += 1
        return env

    def release(self, env_name: str, env: SawyerXYZEnv) -> None:
        self._idle[env_name].append(env)


class MetaWorldEnv(gym.Env):
    """A Meta-World environment whose task class and goal are switched in place by ``set_task``.

    Holds one Meta-World env of the current task's class at a time, taken from its family's pool of
    idle envs (built on first use, reused afterwards). Observations are Meta-World's: ``[39]`` float64
    (hand position, gripper opening, object poses, the same for the previous frame, and the goal,
    which is zeros in the ML benchmarks); actions ``[4]`` in ``[-1, 1]`` (hand displacement, gripper).
    Rewards and ``info`` are Meta-World's, except that ``info["success"]`` is made a ``bool``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, pool: _EnvPool) -> None:
        # The bounds of Meta-World's own space differ by whether the goal is observed; the hidden goal
        # reads as zeros here, so a plain unbounded box of the same shape is exact enough and needs no env.
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBSERVATION_DIM,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._pool = pool
        self._env: SawyerXYZEnv | None = None
        self._env_name: str | None = None
        self._needs_reset = True

    @property
    def active_env(self) -> SawyerXYZEnv:
        """The Meta-World env of the current task (after ``set_task``)."""
        if self._env is None:
            raise RuntimeError("no task set: call set_task(params) first")
        return self._env

    def set_task(self, params: dict[str, Any]) -> None:
        """Switch to the task ``{"env_name": ..., "rand_vec": [...]}``; takes effect at the next reset."""
        import metaworld

        name = params["env_name"]
        if name != self._env_name:
            env = self._pool.acquire(name)
            if self._env is not None and self._env_name is not None:
                self._pool.release(self._env_name, self._env)
            self._env, self._env_name = env, name
        assert self._env is not None
        data = {"rand_vec": np.asarray(params["rand_vec"], np.float64), "env_cls": type(self._env),
                "partially_observable": True}
        self._env.set_task(metaworld.Task(env_name=name, data=pickle.dumps(data)))
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._env is None:
            raise RuntimeError("Meta-World needs a task before reset: call set_task(params) first")
        # SawyerXYZEnv.reset ignores ``seed``; the goal vector is frozen by set_task, so the task's goal
        # and object positions are restored exactly whatever the seed.
        obs, info = self._env.reset()
        self._needs_reset = False
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("reset() after set_task(): the new task takes effect at reset")
        obs, reward, terminated, truncated, info = self.active_env.step(action)
        info["success"] = bool(info["success"])  # Meta-World gives 0.0/1.0
        return obs, reward, terminated, truncated, info  # type: ignore[return-value]

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env, self._env_name = None, None


class MetaWorldParams(FamilyParams):
    benchmark_seed: int = Field(0, ge=0, description="seed given to the Meta-World benchmark object (fixes its goals)")
    episode_steps: int = Field(
        MAX_EPISODE_STEPS, ge=1, le=MAX_EPISODE_STEPS,
        description="steps per episode; Meta-World truncates at 500 and raises when stepped past it",
    )
    reward_function_version: Literal["v1", "v2"] = Field(
        "v2", description="Meta-World reward: v2 (shaped rewards of Meta-World v2+, the default) or v1 (original)"
    )


class MetaWorldML1Params(MetaWorldParams):
    task: str = Field("reach-v3", description="Meta-World task class, e.g. reach-v3, push-v3, pick-place-v3")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        names = task_class_names()
        if task not in names:
            raise ValueError(f"unknown Meta-World task class {task!r}; valid: {', '.join(names)}")
        return task


class _MetaWorldFamily(TaskFamily):
    """Shared by the three Meta-World families; subclasses set ``benchmark_kind``."""

    benchmark_kind: ClassVar[str]
    default_episodes_per_trial = 10  # TrMRL / RL² Meta-World configs: 10 episodes per trial
    #: Meta-World v3 task classes, 39-D observations with the goal hidden (ML protocol).
    version = "mw3-v3envs-obs39-goal-hidden"
    #: The runner records the ``success`` metric (true at any step of an episode) for this family.
    records_success: ClassVar[bool] = True

    params: MetaWorldParams

    def __init__(self, params: FamilyParams) -> None:
        super().__init__(params)
        self._env_pool: _EnvPool | None = None

    @property
    def max_episode_steps(self) -> int:
        return self.params.episode_steps

    @property
    def train_classes(self) -> list[str]:
        """The task classes of the train and test splits."""
        task = self._task_arg()
        return [task] if task is not None else _ml_classes(self.benchmark_kind)[0]

    @property
    def ood_classes(self) -> list[str]:
        """The held-out task classes (the ood split); none for ML1."""
        return [] if self.benchmark_kind == "ML1" else _ml_classes(self.benchmark_kind)[1]

    @property
    def has_ood(self) -> bool:
        return bool(self.ood_classes)

    def _task_arg(self) -> str | None:
        return None

    def _split_classes(self, split: str) -> list[str]:
        if split in ("train", "test"):
            return self.train_classes
        if split == "ood" and self.ood_classes:
            return self.ood_classes
        raise SplitError(f"{self.name}: no {split!r} split (splits: train, test{', ood' if self.has_ood else ''})")

    def _goals(self, split: str, env_name: str) -> tuple[RandVec, ...]:
        kind, seed = self.benchmark_kind, self.params.benchmark_seed
        if split == "test" and self.has_ood:
            return heldout_goals(env_name, seed)
        lists = _benchmark_goals(kind, seed, self._task_arg())
        return lists["train" if split == "train" else "test"][env_name]

    def available(self, split: str) -> int:
        """How many distinct tasks ``split`` has."""
        try:
            return len(self._split_classes(split)) * GOALS_PER_CLASS
        except SplitError:
            return 0

    def sample_split(self, split: str, count: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``count`` distinct tasks of ``split``, classes interleaved so a prefix covers every class.

        The class order and the goal order within each class are permutations drawn from ``rng``
        whatever ``count`` is, so a larger split extends a smaller one.

        Raises:
            SplitError: ``count`` exceeds the tasks the split has.
        """
        classes = self._split_classes(split)
        available = len(classes) * GOALS_PER_CLASS
        if count > available:
            raise SplitError(
                f"{self.name}: split {split!r} asks for {count} tasks but Meta-World has {available} "
                f"({len(classes)} class(es) × {GOALS_PER_CLASS} goals); ask for at most {available}"
            )
        class_order = rng.permutation(len(classes))
        goal_orders = [rng.permutation(GOALS_PER_CLASS) for _ in classes]
        tasks = []
        for i in range(count):
            c = int(class_order[i % len(classes)])
            goal = self._goals(split, classes[c])[int(goal_orders[c][i // len(classes)])]
            tasks.append({"env_name": classes[c], "rand_vec": list(goal)})
        return tasks

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        """One task of ``split`` drawn uniformly over classes, then goals."""
        classes = self._split_classes(split)
        name = classes[int(rng.integers(len(classes)))]
        return {"env_name": name, "rand_vec": list(self._goals(split, name)[int(rng.integers(GOALS_PER_CLASS))])}

    def in_training_region(self, params: dict[str, Any]) -> bool:
        return params["env_name"] in self.train_classes

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        """The goal vector (``rand_vec``, zero-padded to ``RAND_VEC_SIZE``), after a one-hot of the task class
        over the train and held-out classes where the family has several."""
        classes = self.train_classes + self.ood_classes
        goal = np.zeros(RAND_VEC_SIZE, np.float32)
        rand_vec = np.asarray(params["rand_vec"], np.float32)[:RAND_VEC_SIZE]
        goal[: len(rand_vec)] = rand_vec
        if len(classes) == 1:
            return goal
        return np.concatenate([np.eye(len(classes), dtype=np.float32)[classes.index(params["env_name"])], goal])

    def make_env(self) -> gym.Env:
        """An environment over every class of the family; Meta-World envs are built on first use."""
        if self._env_pool is None:
            self._env_pool = _EnvPool(self.train_classes + self.ood_classes, self.params.reward_function_version,
                                      self.params.episode_steps)
        return MetaWorldEnv(self._env_pool)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            benchmark=self.benchmark_kind,
            train_classes=self.train_classes,
            ood_classes=self.ood_classes,
            tasks_available={split: self.available(split) for split in ("train", "test", "ood")},
            test_split=("the benchmark's test_tasks (same class, new goals)" if not self.has_ood else
                        "per training class c: the goals of metaworld.ML1(c, benchmark_seed).test_tasks"),
            observation_dim=OBSERVATION_DIM,
            action_dim=ACTION_DIM,
            goal_observed=False,
            reward_function_version=self.params.reward_function_version,
        )
        return info


class MetaWorldML1Family(_MetaWorldFamily):
    """Meta-World ML1: one task class, tasks = its goal/object positions (``metaworld.ML1``).

    Train: ``ML1(task, benchmark_seed).train_tasks``; test: its ``test_tasks`` (new goals, same class);
    no OOD split. Reward: Meta-World's (v2 by default, in [0, 10] per step); ``success`` is recorded
    per episode (true at any step)."""

    name = "metaworld_ml1"
    Params = MetaWorldML1Params
    benchmark_kind = "ML1"

    params: MetaWorldML1Params

    def _task_arg(self) -> str | None:
        return self.params.task


class MetaWorldML10Family(_MetaWorldFamily):
    """Meta-World ML10: 10 training task classes; the 5 held-out classes are the OOD split (``metaworld.ML10``).

    Train: ``ML10(benchmark_seed).train_tasks``; test: goals of ``ML1(c, benchmark_seed).test_tasks`` for
    each training class ``c``; ood: ``ML10(benchmark_seed).test_tasks``. Reward: Meta-World's (v2 by
    default); ``success`` is recorded per episode."""

    name = "metaworld_ml10"
    Params = MetaWorldParams
    benchmark_kind = "ML10"


class MetaWorldML45Family(_MetaWorldFamily):
    """Meta-World ML45: 45 training task classes; the 5 held-out classes are the OOD split (``metaworld.ML45``).

    Splits as for ML10. Building the benchmark takes ~26 s per process (cached), and the test split
    ~0.5 s more per training class it uses."""

    name = "metaworld_ml45"
    Params = MetaWorldParams
    benchmark_kind = "ML45"
