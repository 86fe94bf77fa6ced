"""Suite specs: YAML → frozen, typed, fully resolved objects, validated before anything runs.

Validation is strict: unknown keys, wrong types, empty lists, non-positive budgets, duplicate seeds,
unknown families/algorithms/presets, invalid family parameters or learner configs, a budget that
cannot hold one iteration and splits a family cannot supply are all errors, reported together, each
naming its key path (``algorithms[1].config.lr: must be > 0``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from algorithms.registry import is_import_path, learner_class, learner_source
from harness import tasks as task_families
from harness.references import TRAINED_REFERENCE_LEARNER, references_for, trained_references
from harness.tasks.base import FamilyParams, TaskFamily


class SpecError(ValueError):
    """A suite spec is invalid; ``errors`` holds one ``"key.path: reason"`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{source}: invalid suite spec\n" + "\n".join(f"  {e}" for e in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SplitSpec(_Strict):
    train: PositiveInt = Field(description="number of training tasks")
    test: PositiveInt = Field(description="number of test tasks (same distribution, disjoint from train)")
    ood: int = Field(0, ge=0, description="number of out-of-distribution tasks")


class ReferenceTrainingSpec(_Strict):
    """How the references the harness trains (``oracle`` and ``multitask``: PPO with an MLP,
    ``algorithms.mlp_ppo``) train on a family; only where the family's ``references`` names one."""

    env_steps: PositiveInt | None = Field(None, description="training env steps of each trained reference run "
                                          "(default: the family's budget)")
    eval_every_env_steps: PositiveInt | None = Field(None, description="default: the family's")
    preset: str | None = Field(None, description="preset of the trained references' learner (mlp_ppo)")
    config: dict[str, Any] = Field(default_factory=dict, description="config overrides on top of the preset")


class FamilySpec(_Strict):
    name: str = Field(description="registered task family name, or the import path 'module:Class' of one defined "
                      "outside the repository")
    id: str | None = Field(None, description="unique id within the suite (default: name; for an import path, the "
                           "class's name)")
    params: dict[str, Any] = Field(default_factory=dict, description="the family's parameters")
    split: SplitSpec
    episodes_per_trial: PositiveInt | None = Field(None, description="default: the family's")
    tasks_per_iteration: PositiveInt = Field(20, description="meta-batch size: tasks per training iteration")
    env_steps: PositiveInt | None = Field(None, description="training budget per run (default: budget.env_steps)")
    eval_every_env_steps: PositiveInt | None = Field(None, description="default: evaluation.every_env_steps")
    references: list[str] | None = Field(
        None, min_length=1, description="reference policies evaluated on this family (default: the family's "
        "standard set; `harness tasks FAMILY` lists every one offered, e.g. the RL² paper's tuned baselines)"
    )
    reference_training: ReferenceTrainingSpec | None = Field(
        None, description="budget and config of the trained references named in `references` (oracle, multitask)"
    )

    @property
    def key(self) -> str:
        return self.id or self.name


class AlgorithmEvaluation(_Strict):
    """How an algorithm's evaluation trials run, where it differs from the suite's ``evaluation``; e.g. a
    paper's released protocol (README, "Evaluation protocols"). Part of the spec hash."""

    deterministic: bool | None = Field(None, description="act deterministically (default: evaluation.deterministic)")
    episodes_per_trial: PositiveInt | None = Field(
        None, description="episodes of one evaluation trial (default: the family's episodes_per_trial)"
    )
    exploration_episodes: PositiveInt | None = Field(
        None, description="learners that adapt after exploring (MAML, PEARL): episodes collected before adapting "
        "(default: the learner config's exploration_episodes); fewer than the evaluation trial's episodes"
    )


class AlgorithmOverride(_Strict):
    preset: str | None = Field(None, description="preset for this family (replaces the entry's preset)")
    config: dict[str, Any] = Field(default_factory=dict, description="overrides on top of the entry's config")
    env_steps: PositiveInt | None = Field(
        None, description="this algorithm's training budget on this family (default: the family's); e.g. an "
        "off-policy learner that needs far fewer env steps"
    )
    eval_every_env_steps: PositiveInt | None = Field(None, description="default: the family's")
    evaluation: AlgorithmEvaluation | None = Field(None, description="evaluation settings on this family only")


class ResourcesSpec(_Strict):
    """What each run of an algorithm asks of a machine. Not part of the spec hash: it changes where and
    how fast a run computes, not what it computes."""

    cpus: PositiveInt = Field(1, description="CPU cores per run: the run's torch threads, and its Ray num_cpus")
    gpus: float = Field(0, ge=0, description="GPUs per run (Ray num_gpus; a fraction shares one GPU)")


class AlgorithmSpec(_Strict):
    name: str = Field(description="registered algorithm name, or the import path 'module:Class' of a learner "
                      "defined outside the repository")
    id: str | None = Field(None, description="unique id within the suite (default: name; for an import path, the "
                           "class's name)")
    preset: str | None = Field(None, description="named hyperparameter preset of the algorithm")
    config: dict[str, Any] = Field(default_factory=dict, description="overrides on top of the preset")
    families: dict[str, AlgorithmOverride] = Field(
        default_factory=dict, description="per family id: a preset and config overrides for that family only"
    )
    only: list[str] | None = Field(
        None, description="run only on these family ids (default: every family of the suite), e.g. an ablation"
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="per run: cpus, gpus")
    evaluation: AlgorithmEvaluation = Field(
        default_factory=AlgorithmEvaluation, description="this algorithm's evaluation settings (every family)"
    )

    @property
    def key(self) -> str:
        return self.id or self.name


class BudgetSpec(_Strict):
    env_steps: PositiveInt = Field(description="training env steps per run")


class EvaluationSpec(_Strict):
    every_env_steps: PositiveInt = Field(description="evaluate whenever training passes a multiple of this")
    train_tasks: int = Field(10, ge=0, description="size of the fixed sample of train tasks also evaluated")
    deterministic: bool = Field(False, description="evaluate with deterministic actions")


class ExecutionSpec(_Strict):
    """Fault tolerance. Not part of the spec hash: it changes how a run survives, not what it computes."""

    max_retries: int = Field(
        2, ge=0, description="a run that fails (raises, or its worker dies) is retried this many times from its "
        "last checkpoint, then marked failed with its traceback"
    )
    checkpoint_every_iterations: PositiveInt | None = Field(
        None, description="also checkpoint every N training iterations (always: at every evaluation, every "
        "checkpoint_every_s, and on SIGTERM/SIGINT)"
    )
    checkpoint_every_s: PositiveFloat = Field(60.0, description="checkpoint at least this often (seconds)")
    check_evaluation: bool = Field(
        False, description="debugging: compare the learner's state_dict before and after every evaluation and fail "
        "the run if evaluating changed it (costs two state_dict copies per evaluation)"
    )


class SuiteSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="suite name; results go to results/<name>")
    seed: int = Field(0, ge=0, description="root seed: task splits, environment and learner seeds derive from it")
    seeds: list[int] = Field(min_length=1, description="run seeds; each (algorithm, family) runs once per seed")
    families: list[FamilySpec] = Field(min_length=1)
    algorithms: list[AlgorithmSpec] = Field(min_length=1)
    budget: BudgetSpec
    evaluation: EvaluationSpec
    references: bool = Field(True, description="also evaluate each family's reference policies")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description="retries and checkpoints")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="where learners keep networks and run updates: auto (CUDA when the worker sees a GPU), cpu, "
        "cuda or cuda:N. Not part of the spec hash; each run's manifest records the device it used",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds):
            raise ValueError("must be non-negative")
        duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate seeds {duplicates}")
        return seeds


@dataclass(frozen=True)
class Protocol:
    """How one learner's evaluation trials run on one family (DESIGN.md §5).

    Attributes:
        episodes_per_trial: episodes of one evaluation trial.
        deterministic: act deterministically (the mode of each action distribution).
        exploration_episodes: for learners that adapt after exploring, the episodes collected before
            ``adapt``; ``None`` for in-context learners (the whole trial runs with one policy).
    """

    episodes_per_trial: int
    deterministic: bool
    exploration_episodes: int | None = None


@dataclass(frozen=True)
class ResolvedFamily:
    """A family entry with defaults filled in and its parameters validated."""

    spec: FamilySpec
    family: TaskFamily
    episodes_per_trial: int
    env_steps: int
    eval_every_env_steps: int
    #: The trained references' learner config and (env steps, eval every), where ``references`` names one.
    reference_config: Any = None
    reference_budget: tuple[int, int] | None = None
    #: An external family's class as ``"module:Class"`` (``harness.tasks.registry.family_source``); None for
    #: a built-in one.
    source: str | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def steps_per_iteration(self) -> int:
        """Upper bound of env steps one training iteration takes."""
        return self.spec.tasks_per_iteration * self.episodes_per_trial * self.family.max_episode_steps


@dataclass(frozen=True)
class ResolvedAlgorithm:
    """An algorithm entry with its learner config resolved per family.

    Resolution order: the config's defaults ← preset (the family's, else the entry's) ← the entry's
    ``config`` ← the family's ``config``.
    """

    spec: AlgorithmSpec
    configs: dict[str, Any]  # family id -> learner config
    protocols: dict[str, Protocol]  # family id -> evaluation protocol
    #: An external learner's class as ``"module:Class"`` (``algorithms.registry.learner_source``); None for a
    #: built-in one. Workers import the learner from it, so they run the class the suite was validated with.
    source: str | None = None

    @property
    def learner(self) -> str:
        """What ``learner_class`` is asked for: the import path of an external learner, else its name."""
        return self.source or self.spec.name

    @property
    def key(self) -> str:
        return self.spec.key

    def config_for(self, family_key: str) -> Any:
        return self.configs[family_key]

    def protocol_for(self, family_key: str) -> Protocol:
        """How this algorithm's evaluation trials run on the family."""
        return self.protocols[family_key]

    def budget(self, family: ResolvedFamily) -> tuple[int, int]:
        """``(env_steps, eval_every_env_steps)`` of this algorithm's runs on ``family``."""
        override = self.spec.families.get(family.key)
        env_steps = (override.env_steps if override else None) or family.env_steps
        every = (override.eval_every_env_steps if override else None) or family.eval_every_env_steps
        return env_steps, every

    def runs_on(self, family_key: str) -> bool:
        """Whether the suite runs this algorithm on that family (``only``)."""
        return self.spec.only is None or family_key in self.spec.only


@dataclass(frozen=True)
class Suite:
    """A validated suite: what to run, and the resolved settings every run uses."""

    spec: SuiteSpec
    families: tuple[ResolvedFamily, ...]
    algorithms: tuple[ResolvedAlgorithm, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def family(self, key: str) -> ResolvedFamily:
        return next(f for f in self.families if f.key == key)

    def algorithm(self, key: str) -> ResolvedAlgorithm:
        return next(a for a in self.algorithms if a.key == key)

    def resolved(self) -> dict[str, Any]:
        """The fully resolved spec as plain data (what is written to ``suite.yaml``)."""
        data = self.spec.model_dump(mode="json")
        for entry, family in zip(data["families"], self.families, strict=True):
            if entry["references"] is None:
                del entry["references"]  # the standard set: a spec written before the key existed hashes alike
            del entry["reference_training"]  # as resolved below, where a trained reference runs
            if family.reference_config is not None:
                entry["reference_training"] = {"learner": TRAINED_REFERENCE_LEARNER,
                                               "references": list(trained_references(family.family,
                                                                                     family.spec.references)),
                                               "config": dataclasses.asdict(family.reference_config),
                                               "budget": list(family.reference_budget or ())}
            if family.source is not None:  # external names only: built-in suites hash as they always did
                entry["import_path"] = family.source
            entry.update(
                id=family.key,
                params=family.family.params.model_dump(mode="json"),
                episodes_per_trial=family.episodes_per_trial,
                env_steps=family.env_steps,
                eval_every_env_steps=family.eval_every_env_steps,
            )
        for entry, algorithm in zip(data["algorithms"], self.algorithms, strict=True):
            # the learner configs as resolved, not as spelled (``1e-3`` and ``0.001`` are one spec)
            # per-family overrides as resolved: configs, budgets and evaluation protocols
            entry.pop("config")
            entry.pop("families")
            entry.pop("evaluation")
            if algorithm.source is not None:  # external names only: built-in suites hash as they always did
                entry["import_path"] = algorithm.source
            entry.update(
                id=algorithm.key,
                configs={k: config_data(c) for k, c in algorithm.configs.items()},
                budgets={f.key: list(algorithm.budget(f)) for f in self.families if algorithm.runs_on(f.key)},
                evaluation={k: dataclasses.asdict(p) for k, p in algorithm.protocols.items()},
            )
        return data

    @property
    def spec_hash(self) -> str:
        """Hash of what the runs compute: the resolved spec without ``execution``, ``resources`` and
        ``device``, so changing retries, checkpoint cadence or hardware keeps a results directory resumable."""
        data = self.resolved()
        data.pop("execution")
        data.pop("device")
        for entry in data["algorithms"]:
            entry.pop("resources")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_data(config: Any) -> dict[str, Any]:
    """A learner config as plain data for the resolved spec. An option whose field is marked
    ``metadata={"added": True}`` is left out while it holds its default: its default computes what the
    learner computed before the option existed, so specs written then keep their hash and their results
    directories stay resumable."""
    data = dataclasses.asdict(config)
    for option in dataclasses.fields(config):
        if option.metadata.get("added") and data[option.name] == option.default:
            del data[option.name]
    return data


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pydantic_errors(error: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in error.errors():
        path = _path(tuple(e["loc"]))
        path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        message = e["msg"].removeprefix("Value error, ")
        field, _, reason = message.partition(": ")
        if e["type"] == "value_error" and reason and field.isidentifier():
            # a model-level validator names its field as "field: reason"; put it in the path
            path, message = f"{path}.{field}" if path else field, reason
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        elif e["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path or '<root>'}: {message}")
    return lines


def _family_errors(name: str, params: dict[str, Any], path: str) -> tuple[TaskFamily | None, list[str]]:
    try:
        cls = task_families.family_class(name)
    except KeyError as e:
        return None, [f"{path}.name: {e.args[0]}"]
    try:
        validated: FamilyParams = cls.Params.model_validate(params)
    except ValidationError as e:
        lines = _pydantic_errors(e, f"{path}.params")
        allowed = ", ".join(cls.Params.model_fields)
        return None, [line + (f" (allowed: {allowed})" if line.endswith("unknown key") else "") for line in lines]
    return cls(validated), []


def _non_finite(value: Any) -> bool:
    """Whether ``value`` is (or holds) an infinite or NaN float (YAML's ``.inf``, ``.nan``)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def build_config(config_cls: type, overrides: dict[str, Any], path: str) -> tuple[Any, list[str]]:
    """A learner config dataclass from ``overrides``; errors name ``path.key`` and the reason."""
    hints = typing.get_type_hints(config_cls)
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    errors, values = [], {}
    for key, value in overrides.items():
        if key not in hints:
            errors.append(f"{path}.{key}: unknown key (allowed: {', '.join(allowed)})")
            continue
        if _non_finite(value):
            errors.append(f"{path}.{key}: must be a finite number, got {value!r}")
            continue
        try:
            values[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as e:
            errors.append(f"{path}.{key}: {e.errors()[0]['msg']}")
    if errors:
        return None, errors
    try:
        return config_cls(**values), []
    except ValueError as e:
        return None, [f"{path}.{e}"]


def _check_keys(config_cls: type, values: dict[str, Any], path: str) -> list[str]:
    """Unknown keys and wrong types in one layer of config overrides, each under ``path.key``."""
    hints = typing.get_type_hints(config_cls)
    errors = []
    for key, value in values.items():
        if key not in hints:
            allowed = ", ".join(f.name for f in dataclasses.fields(config_cls))
            errors.append(f"{path}.{key}: unknown key (allowed: {allowed})")
            continue
        if _non_finite(value):
            errors.append(f"{path}.{key}: must be a finite number, got {value!r}")
            continue
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as e:
            errors.append(f"{path}.{key}: {e.errors()[0]['msg']}")
    return errors


def _algorithm_configs(spec: AlgorithmSpec, family_keys: list[str], path: str) -> tuple[dict[str, Any], list[str]]:
    """The learner config of every family, with each error reported once, under the layer that set it."""
    try:
        cls = learner_class(spec.name)
    except KeyError as e:
        return {}, [f"{path}.name: {e.args[0]}"]
    errors = [f"{path}.families.{key}: no family with this id in the suite (ids: {', '.join(family_keys)})"
              for key in spec.families if key not in family_keys]
    errors += [f"{path}.only: no family with id {key!r} in the suite (ids: {', '.join(family_keys)})"
               for key in spec.only or () if key not in family_keys]
    if spec.only is not None and not spec.only:
        errors.append(f"{path}.only: an empty list runs nothing; list family ids or leave the key out")
    errors += _check_keys(cls.Config, spec.config, f"{path}.config")
    for key, override in spec.families.items():
        errors += _check_keys(cls.Config, override.config, f"{path}.families.{key}.config")
    known = ", ".join(sorted(cls.presets)) or "none"
    presets = {f"{path}.preset": spec.preset,
               **{f"{path}.families.{k}.preset": o.preset for k, o in spec.families.items()}}
    errors += [f"{where}: unknown preset {name!r} for {spec.name}; known: {known}"
               for where, name in presets.items() if name is not None and name not in cls.presets]
    if errors:
        return {}, errors

    configs: dict[str, Any] = {}
    # The entry's own layers are checked even where every family overrides a value they set.
    for family_key in [None, *family_keys]:
        override = spec.families.get(family_key, AlgorithmOverride()) if family_key else AlgorithmOverride()
        layers = [  # lowest precedence first, with the key path each layer's values come from
            (f"{path}.families.{family_key}.preset", cls.presets[override.preset]) if override.preset else
            (f"{path}.preset", cls.presets[spec.preset] if spec.preset else {}),
            (f"{path}.config", spec.config),
            (f"{path}.families.{family_key}.config", override.config),
        ]
        values = {k: v for _, layer in layers for k, v in layer.items()}
        config, problems = build_config(cls.Config, values, path)
        for problem in problems:  # "path.field: reason": name the layer that set the field
            field = problem.removeprefix(f"{path}.").split(":", 1)[0]
            where = next((p for p, layer in reversed(layers) if field in layer), f"{path}.config")
            line = f"{where}.{problem.removeprefix(f'{path}.')}" if where.endswith("config") else f"{where}: {problem}"
            if line not in errors:
                errors.append(line)
        if config is not None and family_key is not None:
            configs[family_key] = config
    return configs, errors


def _protocols(
    spec: AlgorithmSpec, configs: dict[str, Any], families: list[ResolvedFamily], suite: SuiteSpec, path: str
) -> tuple[dict[str, Protocol], list[str]]:
    """The evaluation protocol of every family: the family's override ← the entry's ← the suite's ← the
    learner's (``exploration_episodes`` comes from a config that has one: a learner that adapts after
    exploring; a learner whose config has none adapts in context)."""
    protocols, errors = {}, []
    for family in families:
        if spec.only is not None and family.key not in spec.only:
            continue
        override = spec.families.get(family.key)
        layers = [(f"{path}.families.{family.key}.evaluation", override.evaluation)] if override and \
            override.evaluation else []
        layers.append((f"{path}.evaluation", spec.evaluation))

        def pick(name: str, default: Any, layers: list[tuple[str, AlgorithmEvaluation]] = layers
                 ) -> tuple[Any, str | None]:  # fmt: skip
            return next(((getattr(layer, name), where) for where, layer in layers if getattr(layer, name) is not None),
                        (default, None))

        config = configs[family.key]
        deterministic, _ = pick("deterministic", suite.evaluation.deterministic)
        episodes, episodes_at = pick("episodes_per_trial", family.episodes_per_trial)
        explore, explore_at = pick("exploration_episodes", getattr(config, "exploration_episodes", None))
        problems = []
        if explore_at and not hasattr(config, "exploration_episodes"):
            problems.append(f"{explore_at}.exploration_episodes: {spec.name} adapts in context (its whole trial runs "
                          "with one policy) and takes no exploration_episodes")
            explore = None
        if explore is not None and explore >= episodes:
            where = explore_at or episodes_at or f"{path}.config"
            key = "exploration_episodes" if explore_at or not episodes_at else "episodes_per_trial"
            problems.append(f"{where}.{key}: exploration_episodes ({explore}) must be fewer than the evaluation "
                            f"trial's episodes ({episodes}) on {family.key}, so that some episodes run adapted")
        errors += [p for p in problems if p not in errors]  # a layer shared by every family: report it once
        protocols[family.key] = Protocol(episodes_per_trial=episodes, deterministic=deterministic,
                                         exploration_episodes=explore)
    return protocols, errors


def _with_reference_training(family: ResolvedFamily, path: str) -> tuple[ResolvedFamily, list[str]]:
    """``family`` with its trained references' config and budget resolved from ``reference_training``: the
    learner's defaults ← the preset ← ``config``; the family's budget and evaluation schedule by default."""
    training = family.spec.reference_training or ReferenceTrainingSpec()
    where = f"{path}.reference_training"
    cls = learner_class(TRAINED_REFERENCE_LEARNER)
    if training.preset is not None and training.preset not in cls.presets:
        known = ", ".join(sorted(cls.presets)) or "none"
        return family, [f"{where}.preset: unknown preset {training.preset!r} for {TRAINED_REFERENCE_LEARNER}; "
                        f"known: {known}"]
    values = {**(cls.presets[training.preset] if training.preset else {}), **training.config}
    config, errors = build_config(cls.Config, values, f"{where}.config")
    budget = (training.env_steps or family.env_steps, training.eval_every_env_steps or family.eval_every_env_steps)
    if budget[0] < family.steps_per_iteration:
        errors.append(f"{where}.env_steps: {budget[0]} cannot hold one iteration of {family.key} "
                      f"({family.steps_per_iteration} env steps)")
    if errors:
        return family, errors
    return dataclasses.replace(family, reference_config=config, reference_budget=budget), []


def _default_ids(spec: SuiteSpec) -> SuiteSpec:
    """``spec`` with the class's ``name`` as the ``id`` of every entry named by an import path and given none, so
    that ``my_pkg.learners:MyLearner`` reads, and files its runs, as ``my_learner``. A name that does not resolve
    keeps no id; it is reported where the entry is resolved."""
    def with_ids(entries: list[Any], lookup: Any) -> list[Any]:
        named = []
        for entry in entries:
            if entry.id is None and is_import_path(entry.name):
                try:
                    entry = entry.model_copy(update={"id": lookup(entry.name).name})
                except KeyError:
                    pass
            named.append(entry)
        return named

    return spec.model_copy(update={"families": with_ids(spec.families, task_families.family_class),
                                   "algorithms": with_ids(spec.algorithms, learner_class)})


def _duplicates(keys: list[str]) -> list[str]:
    return sorted({k for k in keys if keys.count(k) > 1})


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate plain data (as loaded from YAML) into a ``Suite``.

    Raises:
        SpecError: listing every problem found, each with its key path.
    """
    if not isinstance(data, dict):
        raise SpecError(source, ["<root>: a suite must be a mapping of keys to values"])
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(source, _pydantic_errors(e)) from None

    spec = _default_ids(spec)
    errors: list[str] = []
    families: list[ResolvedFamily] = []
    for i, entry in enumerate(spec.families):
        path = f"families[{i}]"
        family, problems = _family_errors(entry.name, entry.params, path)
        errors += problems
        if family is None:
            continue
        resolved = ResolvedFamily(
            spec=entry,
            family=family,
            episodes_per_trial=entry.episodes_per_trial or family.default_episodes_per_trial,
            env_steps=entry.env_steps or spec.budget.env_steps,
            eval_every_env_steps=entry.eval_every_env_steps or spec.evaluation.every_env_steps,
            source=task_families.family_source(entry.name),
        )
        if resolved.env_steps < resolved.steps_per_iteration:
            where = f"{path}.env_steps" if entry.env_steps else "budget.env_steps"
            errors.append(
                f"{where}: {resolved.env_steps} cannot hold one iteration of {entry.key} "
                f"({resolved.steps_per_iteration} env steps = tasks_per_iteration × episodes_per_trial × "
                "max_episode_steps)"
            )
        if entry.split.ood and not family.has_ood:
            errors.append(f"{path}.split.ood: {entry.split.ood} ood tasks requested but the parameters define "
                          "no OOD region")
        if spec.evaluation.train_tasks > entry.split.train:
            errors.append(f"evaluation.train_tasks: {spec.evaluation.train_tasks} exceeds {path}.split.train "
                          f"({entry.split.train})")
        if entry.tasks_per_iteration > entry.split.train:
            errors.append(f"{path}.tasks_per_iteration: {entry.tasks_per_iteration} exceeds split.train "
                          f"({entry.split.train})")
        if entry.references is not None:
            offered = references_for(family, resolved.episodes_per_trial)
            unknown = [name for name in entry.references if name not in offered]
            if unknown:
                errors.append(f"{path}.references: {', '.join(map(repr, unknown))} not offered for {entry.key} "
                              f"(offered: {', '.join(offered) or 'none'})")
            if len(set(entry.references)) < len(entry.references):
                errors.append(f"{path}.references: a name is listed twice")
        if trained_references(family, entry.references):
            resolved, problems = _with_reference_training(resolved, path)
            errors += problems
        elif entry.reference_training is not None:
            errors.append(f"{path}.reference_training: no trained reference (oracle, multitask) is named in "
                          f"{path}.references, so nothing would use it")
        families.append(resolved)

    algorithms: list[ResolvedAlgorithm] = []
    family_keys = [f.key for f in spec.families]
    for i, entry in enumerate(spec.algorithms):
        configs, problems = _algorithm_configs(entry, family_keys, f"algorithms[{i}]")
        errors += problems
        if not problems:
            protocols, problems = _protocols(entry, configs, families, spec, f"algorithms[{i}]")
            errors += problems
            algorithms.append(ResolvedAlgorithm(spec=entry, configs=configs, protocols=protocols,
                                                source=learner_source(entry.name)))
        for family in families:
            override = entry.families.get(family.key)
            if override and override.env_steps and override.env_steps < family.steps_per_iteration:
                errors.append(f"algorithms[{i}].families.{family.key}.env_steps: {override.env_steps} cannot hold one "
                              f"iteration of {family.key} ({family.steps_per_iteration} env steps)")

    for key in _duplicates([f.key for f in spec.families]):
        errors.append(f"families: duplicate id {key!r} (give entries distinct `id`s)")
    for key in _duplicates([a.key for a in spec.algorithms]):
        errors.append(f"algorithms: duplicate id {key!r} (give entries distinct `id`s)")
    if errors:
        raise SpecError(source, errors)
    return Suite(spec=spec, families=tuple(families), algorithms=tuple(algorithms))


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file (``yaml.safe_load`` only)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise SpecError(str(path), [f"<file>: cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise SpecError(str(path), [f"<file>: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"]) \
            from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        def at(mark: Any) -> str:
            return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""

        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        where = f"{context}{at(getattr(e, 'context_mark', None))}: " if context else ""
        raise SpecError(str(path), [f"<yaml>: {where}{problem}{at(getattr(e, 'problem_mark', None))}"]) from None
    return parse_suite(data, str(path))
