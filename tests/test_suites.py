"""Every suite shipped in suites/ is valid, its families supply their splits and build their
environments; and the learners run on a MuJoCo and a Meta-World family (smoke runs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.run.executors import run_local
from harness.run.store import SuiteDir
from harness.spec.suite import load_suite, parse_suite

SUITES = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))
# The Meta-World suites share a pytest-xdist worker with tests/test_tasks_metaworld.py (its benchmark cache).
SUITE_CASES = [pytest.param(p, marks=pytest.mark.xdist_group("metaworld")) if "metaworld" in p.read_text() else p
               for p in SUITES]


def test_the_suites_directory_holds_the_quickstart() -> None:
    assert "quickstart.yaml" in [p.name for p in SUITES]


@pytest.mark.parametrize("path", SUITE_CASES, ids=[p.stem for p in SUITES])
def test_shipped_suite_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert load_suite(path).name == path.stem  # results land in results/<file name>


PROBES = sorted((Path(__file__).resolve().parents[1] / "suites" / "probes").glob("*.yaml"))


@pytest.mark.parametrize("path", PROBES, ids=[p.stem for p in PROBES])
def test_probe_files_still_parse(path: Path) -> None:
    """The probes (suites/probes/README.md) are kept so that the numbers quoted from them can be re-run:
    each must still be a valid spec (its splits are not drawn here; `harness validate` does that)."""
    assert load_suite(path).name


def test_validate_reports_a_family_whose_environment_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.tasks.locomotion import HalfCheetahVelFamily

    def broken(self: object) -> None:
        raise OSError("model file missing")

    monkeypatch.setattr(HalfCheetahVelFamily, "make_env", broken)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nseeds: [0]\nfamilies: [{name: halfcheetah_vel, split: {train: 20, test: 2}}]\n"
                     "algorithms: [{name: rl2}]\nbudget: {env_steps: 100000}\nevaluation: {every_env_steps: 50000}\n")
    assert main(["validate", str(suite)]) == 2
    assert "families[0] (halfcheetah_vel): cannot build its environment: OSError: model file missing" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_smoke_rl2_and_trmrl_on_halfcheetah_vel_and_metaworld_ml1(tmp_path: Path) -> None:
    """Smoke test (runs, not learning): two iterations of each learner on short MuJoCo and Meta-World
    trials; every evaluation row is finite and Meta-World records success."""
    suite = {
        "name": "smoke", "seeds": [0],
        "families": [
            {"name": "halfcheetah_vel", "params": {"episode_steps": 50}, "split": {"train": 4, "test": 2},
             "tasks_per_iteration": 2},
            {"name": "metaworld_ml1", "params": {"task": "reach-v3", "episode_steps": 50},
             "split": {"train": 4, "test": 2}, "episodes_per_trial": 2, "tasks_per_iteration": 2},
        ],
        "algorithms": [
            {"name": "rl2", "config": {"hidden_size": 16}},
            {"name": "trmrl", "preset": "metaworld"},
            {"id": "trmrl_sliding", "name": "trmrl", "preset": "cheap", "config": {"working_memory": 100}},
        ],
        "budget": {"env_steps": 400}, "evaluation": {"every_env_steps": 200, "train_tasks": 1},
        "references": False,
    }
    outcome = run_local(parse_suite(suite), tmp_path, workers=1, stream=io.StringIO())
    assert outcome.ok, outcome.failed
    rows = SuiteDir(tmp_path).results()
    assert set(rows["algorithm"]) == {"rl2", "trmrl", "trmrl_sliding"}
    assert set(rows["family"]) == {"halfcheetah_vel", "metaworld_ml1"}
    evaluations = rows[rows["split"] != "training"]
    assert np.isfinite(evaluations["value"]).all()
    assert sorted(evaluations["env_steps"].unique()) == [0, 200, 400]
    success = evaluations[(evaluations["metric"] == "success") & (evaluations["family"] == "metaworld_ml1")]
    assert len(success) > 0 and set(success["value"].unique()) <= {0.0, 1.0}
