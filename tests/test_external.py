"""Learners and task families defined outside the repository (issue 17): named by import path
(``module:Class``) or by an installed package's entry point, validated before anything runs, recorded in the
spec hash and the manifests, imported by the workers; and the example package, run beside RL².

The example package (``examples/external_learner``) is put on ``sys.path`` (or ``PYTHONPATH`` for a
subprocess), as a user's package on their path would be; the entry-point look-up is tested with
``importlib.metadata.entry_points`` replaced by a fake.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from algorithms.registry import LEARNER_ENTRY_POINTS, learner_class, learner_names, learner_source
from harness.cli import main
from harness.run.executors import run_local
from harness.run.store import RunKey, RunStore, SuiteDir
from harness.spec.suite import SpecError, load_suite, parse_suite
from harness.tasks.registry import FAMILY_ENTRY_POINTS, family_class, family_names

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "external_learner"
LEARNER = "metarl_example.learner:ReinforceCounts"
FAMILY = "metarl_example.family:GaussianBanditFamily"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package importable, as a package on the user's path is."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


def suite(learner: str = LEARNER, family: str = FAMILY, **overrides: Any) -> dict[str, Any]:
    """The example learner on the example family: 2 iterations of 5 tasks × 20 pulls, 2 evaluations."""
    data = {
        "name": "external",
        "seeds": [0],
        "references": False,
        "families": [{"name": family, "split": {"train": 20, "test": 4}, "tasks_per_iteration": 5}],
        "algorithms": [{"name": learner, "config": {"hidden_size": 8}}],
        "budget": {"env_steps": 200},
        "evaluation": {"every_env_steps": 100, "train_tasks": 2},
    }
    data.update(overrides)
    return data


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_suite(data)
    return info.value.errors


@pytest.mark.usefixtures("example")
def test_an_import_path_names_a_learner_and_a_family_and_the_spec_records_it() -> None:
    data = suite()
    data["algorithms"][0]["families"] = {"gaussian_bandit": {"config": {"lr": 0.01}}}  # the family's default id
    parsed = parse_suite(data)
    from metarl_example.family import GaussianBanditFamily
    from metarl_example.learner import ReinforceCounts

    algorithm, family = parsed.algorithms[0], parsed.families[0]
    assert (algorithm.key, family.key) == ("reinforce_counts", "gaussian_bandit")  # the classes' names
    assert isinstance(family.family, GaussianBanditFamily) and algorithm.config_for("gaussian_bandit").lr == 0.01
    assert (algorithm.source, family.source) == (LEARNER, FAMILY)
    assert learner_class(algorithm.learner) is ReinforceCounts
    resolved = parsed.resolved()
    assert resolved["algorithms"][0]["import_path"] == LEARNER and resolved["families"][0]["import_path"] == FAMILY
    data["algorithms"][0]["id"] = "reinforce_counts"  # the default id, spelled out: the same spec
    assert parse_suite(data).spec_hash == parsed.spec_hash


def test_built_in_suites_hash_as_before_external_names_existed() -> None:
    """Only external entries gain an ``import_path``: the CI suite still matches its committed reference results."""
    reference = SuiteDir(REPO / "results" / "reference" / "ci").spec_hash()
    assert reference is not None and load_suite(REPO / "suites" / "ci.yaml").spec_hash == reference
    resolved = load_suite(REPO / "suites" / "quickstart.yaml").resolved()
    assert not any("import_path" in entry for entry in resolved["algorithms"] + resolved["families"])


@pytest.mark.usefixtures("example")
@pytest.mark.parametrize(("learner", "family", "line"), [
    ("my_pkg.learners:MyLearner", FAMILY,
     "algorithms[0].name: cannot import 'my_pkg.learners': No module named 'my_pkg'"),
    ("metarl_example.learner:Missing", FAMILY,
     "algorithms[0].name: module 'metarl_example.learner' has no attribute 'Missing'"),
    (FAMILY, FAMILY, f"algorithms[0].name: {FAMILY} is not a learner class: it has no Config, presets, acts_on "
                     "(algorithms/base.py, LearnerClass)"),
    ("metarl_example.learner:Config", FAMILY,
     "algorithms[0].name: metarl_example.learner:Config is not a learner class: it has no name, Config, presets, "
     "acts_on (algorithms/base.py, LearnerClass)"),
    ("metarl_example.learner", FAMILY,
     "algorithms[0].name: unknown algorithm 'metarl_example.learner'; known: maml, mlp_ppo, pearl, rl2, trmrl"),
    (LEARNER, "my_pkg.tasks:MyFamily", "families[0].name: cannot import 'my_pkg.tasks': No module named 'my_pkg'"),
    (LEARNER, LEARNER, f"families[0].name: {LEARNER} is not a task family: not a subclass of "
                       "harness.tasks.base.TaskFamily"),
], ids=["no-module", "no-attribute", "a-family-as-learner", "not-a-class-of-the-protocol", "no-colon",
        "no-family-module", "a-learner-as-family"])
def test_a_name_that_does_not_import_or_is_not_a_learner_or_family_is_one_line_naming_its_key(
    learner: str, family: str, line: str
) -> None:
    assert errors(suite(learner, family)) == [line]


def test_an_import_error_inside_the_module_is_reported_with_its_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:  # fmt: skip
    (tmp_path / "broken_pkg.py").write_text("raise RuntimeError('needs a licence server\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert errors(suite("broken_pkg:Learner", "bandit")) == [
        "algorithms[0].name: cannot import 'broken_pkg': RuntimeError: needs a licence server"]


@pytest.mark.usefixtures("example")
def test_an_external_learner_on_spaces_it_does_not_support_fails_validation_naming_the_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite(family="point_nav")))
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  algorithms[0] (reinforce_counts): cannot be built on point_nav's spaces: TypeError: ReinforceCounts needs "
        "a Discrete action space (a score per arm), not Box(-1.0, 1.0, (2,), float32)"]


def _entry_points(points: list[tuple[str, str, str]]) -> Any:
    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return [importlib.metadata.EntryPoint(name, value, g) for name, value, g in points if g == group]

    return entry_points


@pytest.mark.usefixtures("example")
def test_installed_packages_register_names_through_entry_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                                                ) -> None:  # fmt: skip
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points([
        ("reinforce_counts", LEARNER, LEARNER_ENTRY_POINTS), ("gaussian_bandit", FAMILY, FAMILY_ENTRY_POINTS)]))
    from metarl_example.family import GaussianBanditFamily
    from metarl_example.learner import ReinforceCounts

    assert learner_class("reinforce_counts") is ReinforceCounts and learner_source("reinforce_counts") == LEARNER
    assert family_class("gaussian_bandit") is GaussianBanditFamily
    assert "reinforce_counts" in learner_names() and "gaussian_bandit" in family_names()
    assert learner_source("rl2") is None  # built-in names are not external
    parsed = parse_suite(suite("reinforce_counts", "gaussian_bandit"))
    resolved = parsed.resolved()
    assert resolved["algorithms"][0]["import_path"] == LEARNER and resolved["families"][0]["import_path"] == FAMILY
    # another package's class under the same name is another spec: the hash holds the import path
    (tmp_path / "other_pkg.py").write_text("from metarl_example.learner import ReinforceCounts as Base\n\n\n"
                                           "class ReinforceCounts(Base):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points([
        ("reinforce_counts", "other_pkg:ReinforceCounts", LEARNER_ENTRY_POINTS),
        ("gaussian_bandit", FAMILY, FAMILY_ENTRY_POINTS)]))
    other = parse_suite(suite("reinforce_counts", "gaussian_bandit"))
    assert other.algorithms[0].source == "other_pkg:ReinforceCounts" and other.spec_hash != parsed.spec_hash


@pytest.mark.usefixtures("example")
def test_an_entry_point_must_name_a_class_of_its_name_and_a_name_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points([
        ("counts", LEARNER, LEARNER_ENTRY_POINTS), ("gone", "gone_pkg.learners:Gone", LEARNER_ENTRY_POINTS)]))
    assert errors(suite("counts")) == [f"algorithms[0].name: entry point 'counts' names {LEARNER}, whose name is "
                                       "'reinforce_counts'; they must agree"]
    assert errors(suite("gone")) == [
        "algorithms[0].name: cannot import 'gone_pkg.learners': No module named 'gone_pkg'"]
    monkeypatch.setattr(importlib.metadata, "entry_points", _entry_points([
        ("reinforce_counts", LEARNER, LEARNER_ENTRY_POINTS),
        ("reinforce_counts", "other_pkg:ReinforceCounts", LEARNER_ENTRY_POINTS)]))
    assert errors(suite("reinforce_counts")) == [
        f"algorithms[0].name: 'reinforce_counts' is registered twice in entry-point group {LEARNER_ENTRY_POINTS}: "
        f"{LEARNER} and other_pkg:ReinforceCounts"]


@pytest.mark.usefixtures("example")
def test_the_manifests_record_where_an_external_learner_and_family_came_from(tmp_path: Path) -> None:
    data = suite(references=True)
    data["families"][0]["references"] = ["random"]
    assert run_local(parse_suite(data), tmp_path, workers=1, stream=io.StringIO()).ok
    learner = RunStore(tmp_path, RunKey("reinforce_counts", "gaussian_bandit", 0)).manifest() or {}
    assert learner["external_learner"] == {"import_path": LEARNER, "distribution": None,
                                           "file": str(EXAMPLE / "metarl_example" / "learner.py")}
    assert learner["external_family"]["import_path"] == FAMILY
    reference = RunStore(tmp_path, RunKey("ref-random", "gaussian_bandit", 0, "reference")).manifest() or {}
    assert reference["external_family"]["import_path"] == FAMILY and "external_learner" not in reference
    assert "import_path: " + LEARNER in (tmp_path / "suite.yaml").read_text()


def test_the_cli_finds_a_package_on_pythonpath_and_says_when_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(EXAMPLE / "suite.yaml")

    def validate(pythonpath: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": pythonpath}
        return subprocess.run([sys.executable, "-m", "harness", "validate", path], cwd=REPO, env=env,
                              capture_output=True, text=True)

    found = validate(str(EXAMPLE))
    assert found.returncode == 0, found.stderr
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert f"spec hash {load_suite(path).spec_hash}" in found.stdout
    missing = validate("")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[1:] == [
        "  families[0].name: cannot import 'metarl_example.family': No module named 'metarl_example'",
        "  algorithms[0].name: cannot import 'metarl_example.learner': No module named 'metarl_example'"]


@pytest.mark.slow
@pytest.mark.usefixtures("example")
def test_the_example_suite_runs_in_spawned_workers_and_its_learner_beats_random_beside_rl2(tmp_path: Path) -> None:
    """``examples/external_learner/suite.yaml`` end to end in a pool of 2 spawned workers (which import the
    example from the driver's ``sys.path``), ≈ 25 s on 2 cores. Measured: ReinforceCounts' final test return
    12.7 (seeds 0 and 1), RL² 7.0, random 0.0 (5 arms, 20 pulls; the best arm earns ≈ 23)."""
    from harness.analysis.report import report

    outcome = run_local(load_suite(EXAMPLE / "suite.yaml"), tmp_path, workers=2, stream=io.StringIO())
    assert outcome.ok, outcome.failed
    rows = SuiteDir(tmp_path).results().query("split == 'test' and metric == 'return'")
    final = rows[rows["env_steps"] == rows.groupby("algorithm")["env_steps"].transform("max")]
    score = final.groupby("algorithm")["value"].mean()
    assert score["reinforce_counts"] > score["ref-random"] + 8.0, score.to_dict()
    assert {m["pid"] for m in SuiteDir(tmp_path).manifests()} - {os.getpid()}  # not run in this process
    text = report(tmp_path).read_text()
    assert "| gaussian_bandit | reinforce_counts |" in text and "| gaussian_bandit | rl2 |" in text
