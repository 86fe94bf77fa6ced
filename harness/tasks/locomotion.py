"""MuJoCo locomotion task families on Gymnasium's ``*-v5`` environments (DESIGN.md §8).

Two kinds of family share one environment class, ``LocomotionEnv``:

- reward families (``halfcheetah_vel``, ``halfcheetah_dir``, ``ant_dir``, ``ant_goal``, ``humanoid_dir``):
  the dynamics are the v5 environment's, the task changes the reward, and the family recomputes the
  reward every step from the environment's ``info`` (``x_velocity``, ``y_velocity``, ``x_position``,
  ``y_position`` and the v5 cost terms ``reward_survive``, ``reward_ctrl``, ``reward_contact``);
- dynamics families (``walker_params``, ``hopper_params``): the reward is the v5 environment's and the task
  scales physical parameters of its ``mujoco.MjModel`` (rand_param_envs, used by PEARL and VariBAD).

Environments are the v5 classes built directly, not through ``gym.make``: no ``TimeLimit``,
order-enforcing or checker wrapper sits in the step path. The sampler ends episodes after
``episode_steps`` itself and treats ``terminated`` (a v5 "unhealthy" state) as terminal.
Observations are Gymnasium v5's, not the 20-D observations of garage's old HalfCheetah; the family
``version`` names the observation size and enters the task hash.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from functools import cached_property
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from pydantic import Field, model_validator

from harness.tasks.base import FamilyParams, TaskFamily

_TOL = 1e-9  # slack for range checks on values that went through float arithmetic


def _check_range(key: str, lo_hi: tuple[float, float] | None, low: float = -math.inf, high: float = math.inf) -> None:
    if lo_hi is not None and not low <= lo_hi[0] <= lo_hi[1] <= high:
        raise ValueError(f"{key}: must satisfy {low} <= low <= high <= {high}, got {list(lo_hi)}")


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share more than an end point (a one-point range shares its point)."""
    if a[0] == a[1] or b[0] == b[1]:
        return a[0] <= b[1] and b[0] <= a[1]
    return a[0] < b[1] and b[0] < a[1]


def _in_range(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] - _TOL <= value <= lo_hi[1] + _TOL


class LocomotionEnv(gym.Env):
    """A Gymnasium v5 MuJoCo environment (``base``) whose task its family switches in place.

    ``set_task(params)`` takes effect at once (the sampler resets right after it). The family turns the
    parameters into the task (``family.apply_task``) and computes each step's reward from the base
    environment's ``info`` and reward (``family.reward``). ``pristine`` holds copies, taken at
    construction, of the model arrays the family may rescale: a task writes ``pristine × factors``, so
    nothing carries over from one task to the next.
    """

    def __init__(self, family: LocomotionFamily) -> None:
        self.family = family
        self.base: MujocoEnv = family.env_class(**family.env_kwargs)
        self.observation_space = self.base.observation_space
        self.action_space = self.base.action_space
        self.pristine = {field: getattr(self.base.model, field).copy() for field in family.model_fields}
        self.task: Any = None

    def set_task(self, params: dict[str, Any]) -> None:
        self.task = self.family.apply_task(self, params)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if self.task is None:
            raise RuntimeError(f"{self.family.name}: call set_task(params) before reset")
        return self.base.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.base.step(action)
        return obs, self.family.reward(self.task, info, reward), terminated, truncated, info

    def close(self) -> None:
        self.base.close()


class LocomotionParams(FamilyParams):
    episode_steps: int = Field(200, ge=1, description="max_episode_steps: the sampler ends an episode after it")


class LocomotionFamily(TaskFamily):
    """Shared plumbing: the v5 environment a family wraps, its horizon, and ``describe``."""

    Params: ClassVar[type[FamilyParams]] = LocomotionParams
    default_episodes_per_trial = 2  # TrMRL's locomotion setting (DESIGN.md §9)
    env_id: ClassVar[str]
    env_class: ClassVar[type[MujocoEnv]]
    env_kwargs: ClassVar[dict[str, Any]] = {}
    #: ``mujoco.MjModel`` arrays the family rescales per task (copied pristine at env construction).
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: Convention name → what it means and where it comes from; empty where the family has none.
    conventions: ClassVar[dict[str, str]] = {}

    params: LocomotionParams

    @property
    def max_episode_steps(self) -> int:
        return self.params.episode_steps

    def make_env(self) -> LocomotionEnv:
        return LocomotionEnv(self)

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> Any:
        """Install ``params`` in ``env``; returns what ``reward`` needs per step (default: nothing)."""
        return params

    def reward(self, task: Any, info: dict[str, Any], base_reward: float) -> float:
        """The task's reward for a step, from the base environment's ``info`` (default: its reward)."""
        return float(base_reward)

    @property
    def distinct_tasks(self) -> int | None:
        """Number of distinct tasks where finite (``None``: a continuum)."""
        return None

    @abstractmethod
    def regions(self) -> dict[str, str]:
        """Plain-words description of the train/test (``train``) and OOD (``ood``) task distributions."""

    def describe(self) -> dict[str, Any]:
        env = self.make_env()
        info = super().describe()
        info.update(
            environment=self.env_id,
            env_kwargs=dict(self.env_kwargs),
            observation_dim=int(env.observation_space.shape[0]),  # type: ignore[index]
            action_dim=int(env.action_space.shape[0]),  # type: ignore[index]
            distinct_tasks=self.distinct_tasks or "infinite (continuous parameters)",
            test_disjoint_from_train=self.disjoint_test,
            **{f"{split}_region": text for split, text in self.regions().items()},
        )
        if self.conventions:
            info["conventions"] = dict(self.conventions)
        env.close()
        return info


# --- reward families ---------------------------------------------------------------------------------------


_CHEETAH_VELOCITY_RANGES = {"pearl": (0.0, 3.0), "garage": (0.0, 2.0)}


class HalfCheetahVelParams(LocomotionParams):
    convention: Literal["pearl", "garage"] = Field(
        "pearl", description="target velocity range unless velocity_range is set: pearl U[0,3] (PEARL/oyster, "
        "TrMRL), garage U[0,2]")
    velocity_range: tuple[float, float] | None = Field(
        None, description="target velocity range (m/s) for train/test; overrides the convention's range")
    ood_velocity_range: tuple[float, float] | None = Field(
        None, description="target velocity range for the ood split, e.g. [3, 4]; None: no ood split")

    @property
    def train_range(self) -> tuple[float, float]:
        return self.velocity_range or _CHEETAH_VELOCITY_RANGES[self.convention]

    @model_validator(mode="after")
    def _ranges(self) -> HalfCheetahVelParams:
        _check_range("velocity_range", self.velocity_range)
        _check_range("ood_velocity_range", self.ood_velocity_range)
        ood = self.ood_velocity_range
        if ood is not None and _overlap(ood, self.train_range):
            raise ValueError(f"ood_velocity_range: {list(ood)} overlaps the training range {list(self.train_range)}")
        return self


class HalfCheetahVelFamily(LocomotionFamily):
    """HalfCheetah-v5 running at a target velocity: ``r = -|v_x - v_target| - 0.05·‖a‖²``.

    Task ``{"velocity": v_target}``, ``v_target ~ U(velocity_range)`` (convention ``pearl``: U[0,3],
    ``garage``: U[0,2]); OOD targets ``~ U(ood_velocity_range)``. ``v_x`` is v5's ``info["x_velocity"]``
    (root x displacement / dt); the control cost is v5's ``reward_ctrl`` with weight 0.05 (garage and
    oyster: ``0.5 * 1e-1``). Observation: HalfCheetah-v5's 17-D.
    """

    name = "halfcheetah_vel"
    Params = HalfCheetahVelParams
    version = "gymnasium-v5/obs17"
    env_id = "HalfCheetah-v5"
    env_class = HalfCheetahEnv
    env_kwargs: ClassVar[dict[str, Any]] = {"ctrl_cost_weight": 0.05}
    conventions: ClassVar[dict[str, str]] = {
        "pearl": "v_target ~ U[0, 3] (PEARL/oyster, TrMRL)",
        "garage": "v_target ~ U[0, 2] (garage)",
    }

    params: HalfCheetahVelParams

    @property
    def has_ood(self) -> bool:
        return self.params.ood_velocity_range is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        lo_hi = self.params.ood_velocity_range if split == "ood" else self.params.train_range
        return {"velocity": float(rng.uniform(*lo_hi))}  # type: ignore[misc]

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        return np.array([params["velocity"]], np.float32)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        return _in_range(params["velocity"], self.params.train_range)

    def regions(self) -> dict[str, str]:
        ood = self.params.ood_velocity_range
        return {"train": f"v_target ~ U{list(self.params.train_range)} m/s",
                "ood": f"v_target ~ U{list(ood)} m/s" if ood else "none (set ood_velocity_range)"}

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> float:
        return float(params["velocity"])

    def reward(self, task: float, info: dict[str, Any], base_reward: float) -> float:
        return float(-abs(info["x_velocity"] - task) + info["reward_ctrl"])


class HalfCheetahDirFamily(LocomotionFamily):
    """HalfCheetah-v5 running forward or backward: ``r = dir·v_x - 0.05·‖a‖²``, ``dir ∈ {-1, +1}``.

    Task ``{"direction": ±1}``, each with probability 1/2. Only two tasks exist, so test tasks coincide
    with training tasks (as in every published code); ``tasks.json`` and reports say so. No OOD region.
    Observation: HalfCheetah-v5's 17-D.
    """

    name = "halfcheetah_dir"
    version = "gymnasium-v5/obs17"
    env_id = "HalfCheetah-v5"
    env_class = HalfCheetahEnv
    env_kwargs: ClassVar[dict[str, Any]] = {"ctrl_cost_weight": 0.05}

    @property
    def has_ood(self) -> bool:
        return False

    @property
    def disjoint_test(self) -> bool:
        return False

    @property
    def distinct_tasks(self) -> int:
        return 2

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        return {"direction": int(rng.choice([-1, 1]))}

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        return np.array([params["direction"]], np.float32)

    def regions(self) -> dict[str, str]:
        return {"train": "direction ∈ {-1, +1}, each with probability 1/2 (test tasks coincide)", "ood": "none"}

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> float:
        if params["direction"] not in (-1, 1):
            raise ValueError(f"halfcheetah_dir: direction must be -1 or +1, got {params['direction']!r}")
        return float(params["direction"])

    def reward(self, task: float, info: dict[str, Any], base_reward: float) -> float:
        return float(task * info["x_velocity"] + info["reward_ctrl"])


class DirectionParams(LocomotionParams):
    angle_range_deg: tuple[float, float] = Field(
        (0.0, 360.0), description="direction angle ~ U(angle_range_deg), degrees counter-clockwise from +x")
    ood_angle_range_deg: tuple[float, float] | None = Field(
        None, description="direction angle for the ood split, degrees; None: no ood split")

    @model_validator(mode="after")
    def _angles(self) -> DirectionParams:
        _check_range("angle_range_deg", self.angle_range_deg, 0.0, 360.0)
        _check_range("ood_angle_range_deg", self.ood_angle_range_deg, 0.0, 360.0)
        if self.ood_angle_range_deg is not None and _overlap(self.ood_angle_range_deg, self.angle_range_deg):
            raise ValueError(f"ood_angle_range_deg: {list(self.ood_angle_range_deg)} overlaps angle_range_deg "
                             f"{list(self.angle_range_deg)}")
        return self


class DirectionFamily(LocomotionFamily):
    """Progress along a direction ``u = (cos θ, sin θ)``: ``r = w·(v_x, v_y)·u + survive - ctrl - contact``.

    Task ``{"angle_rad": θ}``. Subclasses set the environment and the forward weight ``w``.
    """

    forward_weight: ClassVar[float]
    params: DirectionParams

    @property
    def has_ood(self) -> bool:
        return self.params.ood_angle_range_deg is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        lo_hi = self.params.ood_angle_range_deg if split == "ood" else self.params.angle_range_deg
        return {"angle_rad": math.radians(float(rng.uniform(*lo_hi)))}  # type: ignore[misc]

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        """The direction as a unit vector (cos θ, sin θ): continuous across the wrap at ±π."""
        return np.array([math.cos(params["angle_rad"]), math.sin(params["angle_rad"])], np.float32)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        degrees = math.degrees(params["angle_rad"]) % 360.0
        return any(_in_range(d, self.params.angle_range_deg) for d in (degrees, degrees + 360.0))

    def regions(self) -> dict[str, str]:
        ood = self.params.ood_angle_range_deg
        return {"train": f"θ ~ U{list(self.params.angle_range_deg)} degrees",
                "ood": f"θ ~ U{list(ood)} degrees" if ood else "none (set ood_angle_range_deg)"}

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> tuple[float, float]:
        angle = float(params["angle_rad"])
        return self.forward_weight * math.cos(angle), self.forward_weight * math.sin(angle)

    def reward(self, task: tuple[float, float], info: dict[str, Any], base_reward: float) -> float:
        return float(info["x_velocity"] * task[0] + info["y_velocity"] * task[1]
                     + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"])


_ANT_DIR_CONVENTIONS = {
    "forward_backward": "θ ∈ {0, π}: forward or backward along x (oyster's forward_backward, MAML/ProMP)",
    "two_angles": "θ ∈ {-1, +1} radians (≈ ±57°): the ±1 direction used as an angle (TrMRL, VariBAD)",
    "uniform_angle": "θ ~ U(angle_range_deg), default [0°, 360°) (oyster draws its tasks this way)",
}


class AntDirParams(DirectionParams):
    convention: Literal["forward_backward", "two_angles", "uniform_angle"] = Field(
        "two_angles", description="; ".join(f"{k}: {v}" for k, v in _ANT_DIR_CONVENTIONS.items()))

    @model_validator(mode="after")
    def _convention(self) -> AntDirParams:
        if self.convention != "uniform_angle":
            for key in ("angle_range_deg", "ood_angle_range_deg"):
                if key in self.model_fields_set:
                    raise ValueError(f"{key}: only used with convention uniform_angle, not {self.convention}")
        return self


class AntDirFamily(DirectionFamily):
    """Ant-v5 walking in a direction: ``r = (v_x, v_y)·(cos θ, sin θ) + survive - ctrl - contact``.

    ``v`` is v5's torso velocity (``info``: the change of the torso body position over ``dt``); survive
    (1 while healthy), ctrl (``0.5·‖a‖²``) and contact (``5e-4·‖clip(cfrc_ext, -1, 1)‖²``) are Ant-v5's own
    terms, the same as the old Ant used by TrMRL and VariBAD. Task ``{"angle_rad": θ}`` by ``convention``:
    ``forward_backward`` (θ ∈ {0, π}), ``two_angles`` (θ ∈ {-1, 1} rad, the default: TrMRL's),
    ``uniform_angle`` (θ ~ U(angle_range_deg), OOD from ``ood_angle_range_deg``). The two-task
    conventions cannot give test tasks disjoint from train.
    Observation: Ant-v5 without contact forces, 27-D. Episodes terminate when the torso leaves z ∈ [0.2, 1].
    """

    name = "ant_dir"
    Params = AntDirParams
    version = "gymnasium-v5/obs27"
    env_id = "Ant-v5"
    env_class = AntEnv
    env_kwargs: ClassVar[dict[str, Any]] = {"include_cfrc_ext_in_observation": False}
    conventions = _ANT_DIR_CONVENTIONS
    forward_weight = 1.0

    params: AntDirParams

    @property
    def disjoint_test(self) -> bool:
        return self.params.convention == "uniform_angle"

    @property
    def distinct_tasks(self) -> int | None:
        return None if self.params.convention == "uniform_angle" else 2

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        if self.params.convention == "forward_backward":
            return {"angle_rad": float(rng.choice([0.0, math.pi]))}
        if self.params.convention == "two_angles":
            return {"angle_rad": float(rng.choice([-1.0, 1.0]))}
        return super().sample_params(split, rng)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        if self.params.convention == "uniform_angle":
            return super().in_training_region(params)
        allowed = (0.0, math.pi) if self.params.convention == "forward_backward" else (-1.0, 1.0)
        return params["angle_rad"] in allowed

    def regions(self) -> dict[str, str]:
        if self.params.convention == "uniform_angle":
            return super().regions()
        return {"train": _ANT_DIR_CONVENTIONS[self.params.convention] + ", each with probability 1/2 "
                "(test tasks coincide)", "ood": "none"}


class HumanoidDirFamily(DirectionFamily):
    """Humanoid-v5 walking in a direction: ``r = 1.25·(v_x, v_y)·(cos θ, sin θ) + survive - ctrl - contact``.

    ``v`` is the velocity of the centre of mass (v5's ``info``); the weight 1.25, survive (5 while healthy),
    ctrl (``0.1·‖ctrl‖²``) and contact (``min(5e-7·‖cfrc_ext‖², 10)``) are Humanoid-v5's own terms, and equal
    the garage/VariBAD HumanoidDir's (``0.25·progress/timestep``, alive bonus 5, impact cost).
    Task ``{"angle_rad": θ}``, ``θ ~ U(angle_range_deg)`` (default [0°, 360°)); OOD from
    ``ood_angle_range_deg``. Observation: Humanoid-v5's default 348-D. Episodes terminate when z ∉ (1, 2).
    """

    name = "humanoid_dir"
    Params = DirectionParams
    version = "gymnasium-v5/obs348"
    env_id = "Humanoid-v5"
    env_class = HumanoidEnv
    forward_weight = 1.25


class AntGoalParams(LocomotionParams):
    radius: float = Field(3.0, gt=0, description="train/test goals are uniform in the disk of this radius "
                          "(PEARL/oyster: 3)")
    ood_radius_range: tuple[float, float] | None = Field(
        None, description="ood goals are uniform in this annulus, e.g. [2.5, 3.5] with radius 2.5; None: no ood")

    @model_validator(mode="after")
    def _radii(self) -> AntGoalParams:
        ood = self.ood_radius_range
        _check_range("ood_radius_range", ood, 0.0)
        if ood is not None and (ood[0] < self.radius or ood[1] <= self.radius):
            raise ValueError(f"ood_radius_range: {list(ood)} must be an annulus outside radius {self.radius}")
        return self


class AntGoalFamily(LocomotionFamily):
    """Ant-v5 walking to a goal: ``r = -‖(x, y) - g‖ + survive - ctrl - contact``.

    ``(x, y)`` is the torso's position after the step (v5's ``info`` ``x_position``, ``y_position``: the
    free joint's qpos); survive, ctrl and contact are Ant-v5's terms (see ``ant_dir``). PEARL/oyster's
    AntGoal uses the L1 distance, ctrl weight 0.1 and no survive bonus; here the Euclidean distance (as
    DESIGN.md §8) and v5's terms. Task ``{"goal": [x, y]}`` uniform in the disk of ``radius``
    (default 3, PEARL's); OOD goals uniform in the annulus ``ood_radius_range``. The agent must see where
    it is, so the observation keeps the torso's x, y: Ant-v5 with positions and without contact forces,
    29-D (qpos 15 + qvel 14).
    """

    name = "ant_goal"
    Params = AntGoalParams
    version = "gymnasium-v5/obs29"
    env_id = "Ant-v5"
    env_class = AntEnv
    env_kwargs: ClassVar[dict[str, Any]] = {
        "include_cfrc_ext_in_observation": False,
        "exclude_current_positions_from_observation": False,
    }

    params: AntGoalParams

    @property
    def has_ood(self) -> bool:
        return self.params.ood_radius_range is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        lo, hi = self.params.ood_radius_range if split == "ood" else (0.0, self.params.radius)  # type: ignore[misc]
        radius = math.sqrt(rng.uniform(lo**2, hi**2))  # uniform in area, not in radius
        angle = rng.uniform(0.0, 2.0 * math.pi)
        return {"goal": [radius * math.cos(angle), radius * math.sin(angle)]}

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        return np.asarray(params["goal"], np.float32)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        return math.hypot(*params["goal"]) <= self.params.radius + _TOL

    def regions(self) -> dict[str, str]:
        ood = self.params.ood_radius_range
        return {"train": f"goal uniform in the disk ‖g‖ ≤ {self.params.radius}",
                "ood": f"goal uniform in the annulus {ood[0]} ≤ ‖g‖ ≤ {ood[1]}" if ood else "none"}

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> tuple[float, float]:
        x, y = params["goal"]
        return float(x), float(y)

    def reward(self, task: tuple[float, float], info: dict[str, Any], base_reward: float) -> float:
        distance = math.hypot(info["x_position"] - task[0], info["y_position"] - task[1])
        return float(-distance + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"])


# --- dynamics families -----------------------------------------------------------------------------------

#: Base of the scale factors per model array, as in rand_param_envs (``dof_damping`` uses 1.3, not 1.5).
SCALE_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
_Field = Literal["body_mass", "body_inertia", "dof_damping", "geom_friction"]


class RandomParamsParams(LocomotionParams):
    log_scale_limit: float = Field(3.0, gt=0, description="train/test exponents e ~ U[-limit, limit] "
                                   "(rand_param_envs: 3)")
    randomize: tuple[_Field, ...] = Field(
        tuple(SCALE_BASES), min_length=1, description="model arrays to rescale; the others keep the v5 values")
    ood_exponent_range: tuple[float, float] | None = Field(
        None, description="ood exponents: magnitude ~ U(range) with a random sign, e.g. [3, 4]; beyond "
        "log_scale_limit. None: no ood split")

    @model_validator(mode="after")
    def _ranges(self) -> RandomParamsParams:
        if len(set(self.randomize)) != len(self.randomize):
            raise ValueError(f"randomize: duplicate entries in {list(self.randomize)}")
        ood = self.ood_exponent_range
        _check_range("ood_exponent_range", ood, 0.0)
        if ood is not None and (ood[0] < self.log_scale_limit or ood[1] <= self.log_scale_limit):
            raise ValueError(f"ood_exponent_range: {list(ood)} must lie beyond log_scale_limit "
                             f"{self.log_scale_limit}")
        return self


class RandomParamsFamily(LocomotionFamily):
    """Dynamics randomisation: the model arrays are ``v5 value × base**e`` per element; reward: v5's.

    Task ``{"scale_exponents": {array: [e, ...]}}``, one exponent per element of each array of ``randomize``
    (flattened, rounded to 4 decimals to keep ``tasks.json`` small), ``e ~ U[-log_scale_limit,
    log_scale_limit]``; bases per ``SCALE_BASES``. OOD: every ``|e| ~ U(ood_exponent_range)`` with a random
    sign, so a task is OOD when any ``|e|`` exceeds the limit.
    """

    Params = RandomParamsParams
    model_fields = tuple(SCALE_BASES)
    params: RandomParamsParams

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Number of elements of each model array (one exponent each)."""
        env = self.env_class(**self.env_kwargs)
        sizes = {field: int(getattr(env.model, field).size) for field in SCALE_BASES}
        env.close()
        return sizes

    @property
    def has_ood(self) -> bool:
        return self.params.ood_exponent_range is not None

    def sample_params(self, split: str, rng: np.random.Generator) -> dict[str, Any]:
        exponents = {}
        for field in self.params.randomize:
            size = self.sizes[field]
            if split == "ood":
                magnitude = rng.uniform(*self.params.ood_exponent_range, size)  # type: ignore[misc]
                values = magnitude * rng.choice([-1.0, 1.0], size)
            else:
                values = rng.uniform(-self.params.log_scale_limit, self.params.log_scale_limit, size)
            exponents[field] = np.round(values, 4).tolist()
        return {"scale_exponents": exponents}

    def task_vector(self, params: dict[str, Any]) -> np.ndarray:
        """The scale exponents of every randomised array, flattened in the order of ``randomize``."""
        exponents = params["scale_exponents"]
        return np.concatenate([np.ravel(exponents[field]) for field in self.params.randomize]).astype(np.float32)

    def in_training_region(self, params: dict[str, Any]) -> bool:
        for field, values in params["scale_exponents"].items():
            limit = self.params.log_scale_limit if field in self.params.randomize else 0.0
            if np.abs(values).max(initial=0.0) > limit + _TOL:
                return False
        return True

    def regions(self) -> dict[str, str]:
        arrays = ", ".join(f"{f} ({self.sizes[f]}, base {SCALE_BASES[f]})" for f in self.params.randomize)
        limit, ood = self.params.log_scale_limit, self.params.ood_exponent_range
        return {"train": f"factor base**e per element, e ~ U[-{limit}, {limit}], for {arrays}",
                "ood": f"|e| ~ U{list(ood)} with a random sign" if ood else "none (set ood_exponent_range)"}

    def apply_task(self, env: LocomotionEnv, params: dict[str, Any]) -> dict[str, Any]:
        exponents = params["scale_exponents"]
        unknown = set(exponents) - set(SCALE_BASES)
        if unknown:
            raise ValueError(f"{self.name}: unknown model arrays {sorted(unknown)}; known: {list(SCALE_BASES)}")
        for field, base in SCALE_BASES.items():
            pristine = env.pristine[field]
            target = getattr(env.base.model, field)
            if field not in exponents:
                target[:] = pristine
                continue
            e = np.asarray(exponents[field], dtype=np.float64)
            if e.size != pristine.size:
                raise ValueError(f"{self.name}: {field} needs {pristine.size} exponents, got {e.size}")
            target[:] = pristine * base ** e.reshape(pristine.shape)
        return params


class WalkerParamsFamily(RandomParamsFamily):
    """Walker2d-v5 with randomised body mass, inertia, joint damping and friction (rand_param_envs).

    Reward: Walker2d-v5's ``v_x + 1 (healthy) - 1e-3·‖a‖²`` (rand_param_envs' Walker2dRandParams has the
    same terms). Arrays: body_mass (8), body_inertia (8×3), dof_damping (9), geom_friction (8×3): 65
    exponents per task. v5 gives both feet friction 0.9 (v4: left foot 1.9). Observation: 17-D.
    """

    name = "walker_params"
    version = "gymnasium-v5/obs17"
    env_id = "Walker2d-v5"
    env_class = Walker2dEnv


class HopperParamsFamily(RandomParamsFamily):
    """Hopper-v5 with randomised body mass, inertia, joint damping and friction (rand_param_envs).

    Reward: Hopper-v5's ``v_x + 1 (healthy) - 1e-3·‖a‖²``. Arrays: body_mass (5), body_inertia (5×3),
    dof_damping (6), geom_friction (5×3): 41 exponents per task. Observation: 11-D.
    """

    name = "hopper_params"
    version = "gymnasium-v5/obs11"
    env_id = "Hopper-v5"
    env_class = HopperEnv
