"""Suite validation: each mistake gives its own one-line error naming its key path; hashing; defaults."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.spec.splits import check_splits
from harness.spec.suite import Protocol, SpecError, Suite, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "suites" / "quickstart.yaml"
BASE: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())


def quickstart(mutate: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
    """A fresh copy of the quickstart suite's data, optionally changed in place by ``mutate``."""
    data = copy.deepcopy(BASE)
    if mutate is not None:
        mutate(data)
    return data


def spec_errors(data: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_suite(data)
    return info.value.errors


def path_of(line: str) -> str:
    """The key path of an error line ``"key.path: reason"``."""
    return line.split(": ", 1)[0]


# --- one case per mistake -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[dict[str, Any]], object]
    paths: tuple[str, ...]  # every key path the errors must name, the mistake's own first
    fragment: str  # part of the reason on the first path's line


def _misspell_every_env_steps(d: dict[str, Any]) -> None:
    d["evaluation"]["every_env_step"] = d["evaluation"].pop("every_env_steps")


def _bad_lr_only_family_has_overrides(d: dict[str, Any]) -> None:
    del d["families"][0]  # point_nav alone, with its per-family config overrides
    del d["algorithms"][0]["families"]["bandit"]
    del d["algorithms"][1:]  # rl2 alone
    d["algorithms"][0]["config"] = {"lr": -1}


def _global_budget_too_small(d: dict[str, Any]) -> None:
    del d["families"][0]["env_steps"]  # bandit falls back to budget.env_steps; point_nav keeps its own
    d["budget"]["env_steps"] = 100


CASES = [
    Case("unknown_top_level_key", lambda d: d.update(bogus=1), ("bogus",), "unknown key"),
    Case(
        "misspelled_nested_key",
        _misspell_every_env_steps,
        ("evaluation.every_env_step", "evaluation.every_env_steps"),
        "unknown key",
    ),
    Case("wrong_type", lambda d: d.update(seeds="abc"), ("seeds",), "valid list"),
    Case("empty_algorithms", lambda d: d.update(algorithms=[]), ("algorithms",), "at least 1 item"),
    Case("empty_families", lambda d: d.update(families=[]), ("families",), "at least 1 item"),
    Case("non_positive_budget", lambda d: d["budget"].update(env_steps=0), ("budget.env_steps",), "greater than 0"),
    Case("duplicate_seeds", lambda d: d.update(seeds=[0, 1, 1]), ("seeds",), "duplicate seeds [1]"),
    Case(
        "unknown_algorithm",
        lambda d: d["algorithms"][0].update(name="ppo2"),
        ("algorithms[0].name",),
        "unknown algorithm 'ppo2'; known: ",
    ),
    Case(
        "unknown_family",
        lambda d: d["families"][0].update(name="cartpole", id="bandit"),
        ("families[0].name",),
        "unknown task family 'cartpole'; known: ant_dir, ant_goal, bandit,",
    ),
    Case(
        "bad_family_param",
        lambda d: d["families"][0]["params"].update(arms=1),
        ("families[0].params.arms",),
        "greater than or equal to 2",
    ),
    Case(
        "unknown_family_param",
        lambda d: d["families"][0]["params"].update(armz=3),
        ("families[0].params.armz",),
        "unknown key (allowed: arms, pulls, mean_range, ood_mean_range)",
    ),
    Case(
        "unknown_config_key",
        lambda d: d["algorithms"][0].update(config={"lrr": 0.1}),
        ("algorithms[0].config.lrr",),
        "unknown key (allowed: hidden_size, cell, lr,",
    ),
    Case(
        "invalid_config_value",
        lambda d: d["algorithms"][0].update(config={"lr": -1}),
        ("algorithms[0].config.lr",),
        "must be > 0",
    ),
    Case(
        "invalid_config_value_only_family_has_overrides",
        _bad_lr_only_family_has_overrides,
        ("algorithms[0].config.lr",),
        "must be > 0",
    ),
    Case(
        "invalid_per_family_config_value",
        lambda d: d["algorithms"][0]["families"]["point_nav"]["config"].update(lr=-1),
        ("algorithms[0].families.point_nav.config.lr",),
        "must be > 0",
    ),
    Case(
        "unknown_preset",
        lambda d: d["algorithms"][0].update(preset="nope"),
        ("algorithms[0].preset",),
        "unknown preset 'nope' for rl2; known: metaworld",
    ),
    Case(
        "override_for_unknown_family_id",
        lambda d: d["algorithms"][0]["families"].update(cartpole={"config": {}}),
        ("algorithms[0].families.cartpole",),
        "no family with this id in the suite (ids: bandit, point_nav)",
    ),
    Case(
        "only_names_an_unknown_family_id",
        lambda d: d["algorithms"][0].update(only=["point_nav", "cartpole"]),
        ("algorithms[0].only",),
        "no family with id 'cartpole' in the suite (ids: bandit, point_nav)",
    ),
    Case(
        "algorithm_budget_below_one_iteration",
        lambda d: d["algorithms"][0]["families"]["point_nav"].update(env_steps=100),
        ("algorithms[0].families.point_nav.env_steps",),
        "100 cannot hold one iteration of point_nav",
    ),
    Case(
        "duplicate_family_ids",
        lambda d: d["families"].append(copy.deepcopy(d["families"][0])),
        ("families",),
        "duplicate id 'bandit'",
    ),
    Case(
        "family_budget_below_one_iteration",
        lambda d: d["families"][0].update(env_steps=100),
        ("families[0].env_steps",),
        "100 cannot hold one iteration of bandit (2500 env steps",  # 250 tasks × 1 episode × 10 pulls
    ),
    Case(
        "global_budget_below_one_iteration",
        _global_budget_too_small,
        ("budget.env_steps",),
        "100 cannot hold one iteration of bandit (2500 env steps",
    ),
    Case(
        "tasks_per_iteration_above_train_split",
        lambda d: d["families"][0].update(tasks_per_iteration=2000),
        ("families[0].tasks_per_iteration",),
        "2000 exceeds split.train (1000)",
    ),
    Case(
        "ood_split_without_ood_region",
        lambda d: d["families"][0]["split"].update(ood=5),  # bandit without ood_mean_range
        ("families[0].split.ood",),
        "define no OOD region",
    ),
    Case(
        "exploration_episodes_for_an_in_context_learner",
        lambda d: d["algorithms"][0].update(evaluation={"exploration_episodes": 1}),
        ("algorithms[0].evaluation.exploration_episodes",),
        "rl2 adapts in context",
    ),
    Case(
        "exploration_episodes_fill_the_evaluation_trial",
        lambda d: d["algorithms"][2].update(evaluation={"exploration_episodes": 2}),  # maml; trials of 2 episodes
        ("algorithms[2].evaluation.exploration_episodes",),
        "exploration_episodes (2) must be fewer than the evaluation trial's episodes (2) on point_nav",
    ),
    Case(
        "evaluation_trial_too_short_for_a_family",
        lambda d: d["algorithms"][3]["families"]["point_nav"].update(evaluation={"episodes_per_trial": 1}),
        ("algorithms[3].families.point_nav.evaluation.episodes_per_trial",),
        "must be fewer than the evaluation trial's episodes (1)",
    ),
    Case(
        "unknown_algorithm_evaluation_key",
        lambda d: d["algorithms"][0].update(evaluation={"deterministc": True}),
        ("algorithms[0].evaluation.deterministc",),
        "unknown key",
    ),
    Case(
        "reference_the_family_does_not_offer",
        lambda d: d["families"][0].update(references=["random", "psrl"]),  # psrl is a tabular-MDP reference
        ("families[0].references",),
        "'psrl' not offered for bandit (offered: random, ucb1, thompson, oracle, bayes_optimal",
    ),
    Case(
        "reference_listed_twice",
        lambda d: d["families"][0].update(references=["random", "random"]),
        ("families[0].references",),
        "a name is listed twice",
    ),
    Case(
        "empty_reference_list",
        lambda d: d["families"][0].update(references=[]),
        ("families[0].references",),
        "at least 1 item",
    ),
    Case(
        "ood_range_overlaps_training_range",
        lambda d: d["families"][0]["params"].update(mean_range=[0.0, 0.6], ood_mean_range=[0.5, 1.0]),
        ("families[0].params.ood_mean_range",),
        "overlaps mean_range",
    ),
]


def _params() -> list[Any]:
    return [pytest.param(case, id=case.id) for case in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_case_names_its_key_path(case: Case) -> None:
    errors = spec_errors(quickstart(case.mutate))
    lines = [line for line in errors if path_of(line) == case.paths[0]]
    assert lines, f"no error under {case.paths[0]!r}: {errors}"
    assert any(case.fragment in line for line in lines), errors
    assert all("\n" not in line for line in errors)


@pytest.mark.parametrize("case", _params())
def test_bad_case_reports_only_its_own_errors(case: Case) -> None:
    """One mistake, one line per key path it touches: no duplicates, no paths the file does not have."""
    errors = spec_errors(quickstart(case.mutate))
    assert sorted(path_of(line) for line in errors) == sorted(case.paths), errors


def test_every_problem_is_reported_together() -> None:
    def three_mistakes(d: dict[str, Any]) -> None:
        d["families"][0]["params"]["armz"] = 3
        d["families"][1]["split"]["train"] = 10  # below tasks_per_iteration (100) and evaluation.train_tasks (50)
        d["algorithms"][0]["name"] = "ppo2"

    errors = spec_errors(quickstart(three_mistakes))
    assert sorted(path_of(line) for line in errors) == [
        "algorithms[0].name", "evaluation.train_tasks", "families[0].params.armz", "families[1].tasks_per_iteration"
    ]


def test_exact_message_for_negative_lr_without_family_overrides() -> None:
    def bad_lr(d: dict[str, Any]) -> None:
        d["algorithms"][0]["config"] = {"lr": -1}
        del d["algorithms"][0]["families"]

    assert spec_errors(quickstart(bad_lr)) == ["algorithms[0].config.lr: must be > 0"]


def test_a_misspelt_option_names_the_values_it_allows() -> None:
    """A learner's string options are ``Literal`` types: the spec checks them against the values they allow."""

    def bad_cell(d: dict[str, Any]) -> None:
        d["algorithms"][0]["config"] = {"cell": "grux"}
        del d["algorithms"][0]["families"]

    assert spec_errors(quickstart(bad_cell)) == ["algorithms[0].config.cell: Input should be 'gru' or 'lstm'"]


# --- files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        pytest.param("- name: quickstart\n- seed: 0\n", "<root>", "must be a mapping", id="list"),
        pytest.param("42\n", "<root>", "must be a mapping", id="scalar"),
        pytest.param("", "<root>", "must be a mapping", id="empty_file"),
        pytest.param("name: [unclosed\n", "<yaml>", "line 1, column 7", id="unclosed_flow_sequence"),
        pytest.param("name: a: b\n", "<yaml>", "mapping values are not allowed here", id="nested_colon"),
        pytest.param("name: x\n\tseed: 1\n", "<yaml>", "line 2, column 1", id="tab_indent"),
    ],
)
def test_load_suite_rejects_bad_file(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    file = tmp_path / "suite.yaml"
    file.write_text(text)
    with pytest.raises(SpecError) as info:
        load_suite(file)
    assert [path_of(line) for line in info.value.errors] == [path]
    assert fragment in info.value.errors[0]
    assert str(info.value).startswith(f"{file}: invalid suite spec")


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "suite.yaml"
    file.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_suite(file)
    assert all("\n" not in line for line in info.value.errors), info.value.errors


def test_load_suite_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_suite(tmp_path / "absent.yaml")
    assert info.value.errors == ["<file>: cannot read: No such file or directory"]


# --- valid suites, defaults and the hash ---------------------------------------------------------------


def test_quickstart_is_valid() -> None:
    suite = load_suite(QUICKSTART)
    assert suite.name == "quickstart"
    assert [f.key for f in suite.families] == ["bandit", "point_nav"]
    assert [a.key for a in suite.algorithms] == ["rl2", "trmrl", "maml", "pearl"]
    assert suite.spec.seeds == [0, 1, 2]
    check_splits(suite)  # the splits it asks for can be drawn


def test_spec_hash_is_stable_and_tracks_values() -> None:
    base_hash = parse_suite(quickstart()).spec_hash
    assert parse_suite(quickstart()).spec_hash == base_hash
    changes: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d.update(seed=1),
        lambda d: d["evaluation"].update(train_tasks=51),
        lambda d: d["families"][0]["params"].update(pulls=11),
        lambda d: d["algorithms"][0]["families"]["point_nav"]["config"].update(discount=0.91),
    ]
    hashes = {parse_suite(quickstart(change)).spec_hash for change in changes}
    assert base_hash not in hashes
    assert len(hashes) == len(changes)


def test_spec_hash_ignores_spelling_out_family_defaults() -> None:
    # The hash is over the resolved spec: writing a family parameter's default changes nothing.
    explicit = quickstart(lambda d: d["families"][0]["params"].update(mean_range=[0.0, 1.0]))
    assert parse_suite(explicit).spec_hash == parse_suite(quickstart()).spec_hash


def test_an_added_learner_option_is_hashed_only_when_set_away_from_its_default() -> None:
    """An option marked ``added`` (RL²'s ``normalise_value_targets``) keeps the hash of every spec written
    before it while it holds its default; set, it is part of the spec."""
    plain = parse_suite(quickstart())
    assert "normalise_value_targets" not in plain.resolved()["algorithms"][0]["configs"]["bandit"]

    def rl2_option(value: bool) -> Callable[[dict[str, Any]], object]:
        return lambda d: d["algorithms"][0].setdefault("config", {}).update(normalise_value_targets=value)

    assert parse_suite(quickstart(rl2_option(False))).spec_hash == plain.spec_hash
    changed = parse_suite(quickstart(rl2_option(True)))
    assert changed.resolved()["algorithms"][0]["configs"]["bandit"]["normalise_value_targets"] is True
    assert changed.spec_hash != plain.spec_hash


def test_spec_hash_same_for_equal_resolved_configs() -> None:
    as_string = parse_suite(quickstart(lambda d: d["algorithms"][0].update(config={"lr": "1e-3"})))
    as_float = parse_suite(quickstart(lambda d: d["algorithms"][0].update(config={"lr": 0.001})))
    assert as_string.algorithms[0].configs == as_float.algorithms[0].configs  # premise: same settings
    assert as_string.spec_hash == as_float.spec_hash


def test_resolved_fills_in_defaults() -> None:
    def no_family_budgets(d: dict[str, Any]) -> None:
        for key in ("env_steps", "eval_every_env_steps", "episodes_per_trial"):
            d["families"][1].pop(key)

    resolved = parse_suite(quickstart(no_family_budgets)).resolved()
    bandit, point_nav = resolved["families"]
    assert bandit["params"] == {"arms": 5, "pulls": 10, "mean_range": [0.0, 1.0], "ood_mean_range": None}
    assert point_nav["params"]["step_size"] == 0.1
    assert point_nav["params"]["ood_angle_range_deg"] == [180.0, 360.0]
    assert bandit["episodes_per_trial"] == 1  # the bandit family's default
    assert point_nav["episodes_per_trial"] == 2  # the point_nav family's default
    assert point_nav["env_steps"] == 400_000  # budget.env_steps
    assert point_nav["eval_every_env_steps"] == 100_000  # evaluation.every_env_steps
    assert bandit["env_steps"] == 1_000_000  # its own
    configs = resolved["algorithms"][0]["configs"]
    assert set(configs) == {"bandit", "point_nav"}
    assert (configs["bandit"]["discount"], configs["bandit"]["gae_lambda"]) == (0.99, 0.95)  # Config defaults
    assert (configs["point_nav"]["discount"], configs["point_nav"]["gae_lambda"]) == (0.9, 0.8)  # override
    assert (configs["bandit"]["lr"], configs["point_nav"]["lr"]) == (1e-3, 3e-3)  # default, override
    assert configs["bandit"]["hidden_size"] == configs["point_nav"]["hidden_size"] == 64  # the entry's config
    assert resolved["evaluation"]["deterministic"] is False


def test_config_resolution_order() -> None:
    """Config defaults ← preset ← the entry's config ← the family's config."""

    def layered(d: dict[str, Any]) -> None:
        entry = d["algorithms"][0]
        entry["preset"] = "metaworld"  # hidden_size 256, lr 5e-4, epochs 10, entropy_coef 5e-6, minibatches 1
        entry["config"] = {"epochs": 3, "lr": 2e-4}
        entry["families"]["point_nav"]["config"]["lr"] = 1e-4

    suite: Suite = parse_suite(quickstart(layered))
    bandit = suite.algorithm("rl2").config_for("bandit")
    point_nav = suite.algorithm("rl2").config_for("point_nav")
    assert (bandit.hidden_size, bandit.entropy_coef, bandit.minibatches) == (256, 5e-6, 1)
    assert bandit.value_coef == 0.5  # the Config's default: neither the preset nor a config sets it
    assert (bandit.epochs, bandit.lr, bandit.discount) == (3, 2e-4, 0.99)
    assert (point_nav.epochs, point_nav.lr, point_nav.discount) == (3, 1e-4, 0.9)


def test_yaml_exponent_string_accepted_for_float_field() -> None:
    data = yaml.safe_load("lr: 1e-3\n")
    assert data == {"lr": "1e-3"}  # premise: YAML 1.1 needs a dot, so PyYAML reads a string
    suite = parse_suite(quickstart(lambda d: d["algorithms"][0].update(config=data)))
    lr = suite.algorithm("rl2").config_for("bandit").lr  # point_nav overrides lr itself
    assert type(lr) is float and lr == 0.001


# --- the CLI --------------------------------------------------------------------------------------------


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", "validate", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_validate_rejects_bad_suite(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(quickstart(lambda d: d["evaluation"].update(every_env_step=5))))
    result = _validate(bad)
    assert result.returncode == 2
    assert "evaluation.every_env_step: unknown key" in result.stderr


def test_cli_validate_accepts_quickstart() -> None:
    result = _validate(QUICKSTART)
    assert result.returncode == 0, result.stderr
    assert "suites/quickstart.yaml: ok" in result.stdout
    assert parse_suite(quickstart()).spec_hash in result.stdout


def test_only_restricts_an_algorithm_to_some_families():
    from harness.run.runner import learner_keys

    data = yaml.safe_load(QUICKSTART.read_text())
    data["algorithms"][0]["only"] = ["point_nav"]
    keys = learner_keys(parse_suite(data))
    first = data["algorithms"][0].get("id") or data["algorithms"][0]["name"]
    assert {k.family for k in keys if k.algorithm == first} == {"point_nav"}
    assert {k.family for k in keys if k.algorithm != first} == {"bandit", "point_nav"}


def test_evaluation_protocol_resolution_order() -> None:
    """A family's evaluation override ← the algorithm's ← the suite's ← the learner config's, per key."""

    def mutate(d: dict[str, Any]) -> None:
        d["evaluation"]["deterministic"] = False
        maml = d["algorithms"][2]
        maml["evaluation"] = {"deterministic": True, "episodes_per_trial": 4}
        maml["families"] = {"point_nav": {"evaluation": {"exploration_episodes": 3}}}

    suite = parse_suite(quickstart(mutate))
    rl2, maml = suite.algorithm("rl2"), suite.algorithm("maml")
    assert rl2.protocol_for("point_nav") == Protocol(episodes_per_trial=2, deterministic=False)
    assert rl2.protocol_for("bandit") == Protocol(episodes_per_trial=1, deterministic=False)
    assert maml.protocol_for("point_nav") == Protocol(episodes_per_trial=4, deterministic=True,
                                                      exploration_episodes=3)
    pearl = suite.algorithm("pearl").protocol_for("point_nav")
    assert pearl.exploration_episodes == suite.algorithm("pearl").config_for("point_nav").exploration_episodes
    # the protocol is part of what a run computes, so of the spec hash
    assert suite.spec_hash != parse_suite(quickstart()).spec_hash


def test_spec_hash_tracks_an_algorithm_budget_on_one_family() -> None:
    def longer(d: dict[str, Any]) -> None:
        d["algorithms"][3]["families"]["point_nav"]["env_steps"] = 40000

    assert parse_suite(quickstart(longer)).spec_hash != parse_suite(quickstart()).spec_hash


def test_a_family_entry_names_the_references_it_evaluates_and_the_default_keeps_the_hash() -> None:
    """``references:`` on a family entry replaces the family's standard set, in the order given; leaving it out
    keeps the standard set and the spec hash of a suite written before the key existed."""
    from harness.run.runner import reference_keys

    standard = parse_suite(quickstart())
    assert [k.algorithm for k in reference_keys(standard) if k.family == "bandit" and k.seed == 0] == [
        "ref-random", "ref-ucb1", "ref-thompson", "ref-oracle", "ref-bayes_optimal"]
    assert "references" not in standard.resolved()["families"][0]
    named = parse_suite(quickstart(lambda d: d["families"][0].update(references=["thompson", "random"])))
    assert [k.algorithm for k in reference_keys(named) if k.family == "bandit" and k.seed == 0] == [
        "ref-thompson", "ref-random"]
    assert named.spec_hash != standard.spec_hash
    spelled = parse_suite(quickstart(lambda d: d["families"][0].update(references=None)))
    assert spelled.spec_hash == standard.spec_hash
