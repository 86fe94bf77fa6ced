"""A suite is refused before anything runs when a learner cannot be built on a family's spaces, when a number
is not finite, or when the file is not UTF-8: one line naming the key, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.spec.suite import SpecError, load_suite, parse_suite


def suite(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "builds", "seeds": [0],
        "families": [{"name": "bandit", "params": {"arms": 3, "pulls": 5}, "split": {"train": 20, "test": 4},
                      "tasks_per_iteration": 4}],
        "algorithms": [{"name": "rl2", "config": {"hidden_size": 8}}],
        "budget": {"env_steps": 1000}, "evaluation": {"every_env_steps": 500, "train_tasks": 0},
    }  # fmt: skip
    data.update(changes)
    return data


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_learner_that_cannot_act_on_a_family_is_refused_before_anything_runs(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = suite(algorithms=[{"name": "rl2", "config": {"hidden_size": 8}},
                             {"name": "pearl", "preset": "cheap", "evaluation": {"episodes_per_trial": 2}}])
    path = _write(tmp_path, data)
    extra = ["--results", str(tmp_path / "results")] if command == "run" else []
    assert main([command, str(path), *extra]) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1] == ("algorithms[1] (pearl): cannot be built on bandit's spaces: TypeError: PEARL needs a Box "
                         "action space (a squashed Gaussian actor); got Discrete(3)")
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written


def test_non_finite_numbers_name_their_key() -> None:
    with pytest.raises(SpecError) as error:
        parse_suite(suite(algorithms=[{"name": "rl2", "config": {"lr": float("inf")}}]))
    assert error.value.errors == ["algorithms[0].config.lr: must be a finite number, got inf"]
    data = suite()
    data["families"][0]["params"]["mean_range"] = [0.0, float("nan")]
    with pytest.raises(SpecError) as error:
        parse_suite(data)
    assert error.value.errors == ["families[0].params.mean_range[1]: Input should be a finite number"]
    with pytest.raises(SpecError) as error:
        parse_suite(suite(algorithms=[{"name": "rl2", "families": {"bandit": {"config": {"clip": float("-inf")}}}}]))
    assert error.value.errors == ["algorithms[0].families.bandit.config.clip: must be a finite number, got -inf"]


def test_yaml_infinity_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    text = yaml.safe_dump(suite(algorithms=[{"name": "rl2", "config": {"lr": "INF"}}]))
    path.write_text(text.replace("lr: INF", "lr: .inf"))  # YAML's infinity, as a user would write it
    with pytest.raises(SpecError, match=r"algorithms\[0\]\.config\.lr: must be a finite number, got inf"):
        load_suite(path)


def test_a_file_that_is_not_utf8_gets_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as error:
        load_suite(path)
    assert error.value.errors == ["<file>: not UTF-8 text (byte 0xe9 at offset 9)"]
    assert main(["validate", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
