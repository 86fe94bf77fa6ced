"""``harness regress``: passes against its own reference, fails with a readable table when a learner is broken."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from algorithms.registry import registered
from algorithms.rl2 import RL2
from harness.cli import main


class FrozenRL2(RL2):
    """RL² with its learning rate set to 0 after construction (its config rejects lr = 0)."""

    name = "rl2_lr0"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for group in self.optimiser.param_groups:
            group["lr"] = 0.0


@pytest.fixture
def frozen_rl2() -> Iterator[None]:
    with registered(FrozenRL2.name, FrozenRL2):
        yield


def _suite(tmp_path: Path, algorithm: dict[str, Any], name: str) -> Path:
    suite = {
        "name": "tiny_regress", "seeds": [0, 1], "references": False,
        "families": [{"name": "point_nav", "split": {"train": 200, "test": 20, "ood": 10}, "episodes_per_trial": 2,
                      "tasks_per_iteration": 100}],
        "algorithms": [algorithm],
        "budget": {"env_steps": 120_000}, "evaluation": {"every_env_steps": 40_000, "train_tasks": 0},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("frozen_rl2")
def test_regress_passes_on_its_reference_and_fails_when_the_learner_is_broken(tmp_path, capsys, monkeypatch):
    """RL² on dense point navigation, 2 seeds × 120k env steps (≈1 min in all)."""
    monkeypatch.chdir(tmp_path)
    config = {"hidden_size": 32, "discount": 0.9, "gae_lambda": 0.8, "lr": 3e-3}
    good = _suite(tmp_path, {"name": "rl2", "config": config}, "good")
    reference = tmp_path / "reference"
    args = ["--against", str(reference), "--workers", "1"]

    assert main(["regress", str(good), *args]) == 2  # no reference yet: a clear error
    assert "make them with --update" in capsys.readouterr().err
    assert main(["regress", str(good), *args, "--update"]) == 0
    assert sorted(p.name for p in (reference / "runs" / "rl2" / "point_nav" / "seed=0").iterdir()) == [
        "manifest.json", "progress.parquet"]  # no checkpoints in the committed reference
    capsys.readouterr()

    assert main(["regress", str(good), *args]) == 0  # the same code and seeds: inside the band
    out = capsys.readouterr().out
    assert "regression passed: 3/3 checks" in out and "asymptotic test" in out and "asymptotic ood" in out

    broken = _suite(tmp_path, {"id": "rl2", "name": "rl2_lr0", "config": config}, "broken")
    assert main(["regress", str(broken), *args]) == 1
    out = capsys.readouterr().out
    assert "regression FAILED" in out
    failing = [line for line in out.splitlines() if "FAIL below band" in line]
    assert any("asymptotic test" in line for line in failing), out

    # results run already compare as they are; a directory of other results is refused, not emptied
    scratch = tmp_path / "results" / "regress" / "tiny_regress"
    assert main(["regress", str(good), "--against", str(reference), "--candidate", str(reference)]) == 0
    assert "regression passed: 3/3 checks" in capsys.readouterr().out
    assert main(["regress", str(broken), "--against", str(reference), "--candidate", str(reference)]) == 2
    assert "holds no results of" in capsys.readouterr().err
    assert main(["regress", str(good), "--against", str(reference), "--candidate", str(reference),
                 "--workers", "1"]) == 2
    before = sorted(p.relative_to(reference) for p in reference.rglob("*"))
    assert main(["regress", str(good), "--against", str(reference), "--results", str(reference)]) == 2
    assert "regress did not write" in capsys.readouterr().err
    assert sorted(p.relative_to(reference) for p in reference.rglob("*")) == before  # nothing deleted
    assert (scratch / ".regress-scratch").exists()  # its own scratch directory is marked, and emptied next time
