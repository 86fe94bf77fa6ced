"""Import of garage/dowel ``progress.csv`` logs into result rows that sit beside the harness's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.legacy import garage_rows
from harness.cli import main
from harness.run.store import SuiteDir

# As garage's MAML/PEARL/RL² examples log it: meta-test every 2nd iteration (empty cells in between),
# training statistics in other columns, dowel's column order.
PROGRESS = """\
Average/AverageReturn,Iteration,MetaTest/Average/AverageReturn,MetaTest/Average/SuccessRate,TotalEnvSteps,LinearFeatureBaseline/ExplainedVariance
-50.1,0,-48.0,0.1,4000,0.2
-40.3,1,,,8000,0.3
-30.2,2,-28.5,0.35,12000,0.4
-20.0,3,,,16000,0.5
-10.5,4,-9.25,0.8,20000,0.6
"""


def _write(tmp_path: Path, text: str = PROGRESS, name: str = "progress.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_garage_rows_keep_only_meta_test_lines(tmp_path):
    rows = garage_rows(_write(tmp_path))
    returns = [(r["env_steps"], r["iteration"], r["value"]) for r in rows if r["metric"] == "return"]
    assert returns == [(4000, 0, -48.0), (12000, 2, -28.5), (20000, 4, -9.25)]
    success = [r["value"] for r in rows if r["metric"] == "success"]
    assert success == [0.1, 0.35, 0.8]
    assert {(r["split"], r["task_id"], r["episode_index"]) for r in rows} == {("test", "average", 0)}


def test_older_column_names_and_a_clear_error_on_other_files(tmp_path):
    rows = garage_rows(_write(tmp_path, "TotalEnvSteps,MetaTest/AverageReturn\n100,1.5\n200,2.5\n"))
    assert [(r["env_steps"], r["iteration"], r["value"]) for r in rows] == [(100, 0, 1.5), (200, 1, 2.5)]
    with pytest.raises(ValueError, match=r"MetaTest/AverageReturn.*found: Epoch, Loss"):
        garage_rows(_write(tmp_path, "Epoch,Loss\n1,0.5\n", "other.csv"))


def test_import_garage_cli_writes_a_reportable_run_and_never_overwrites(tmp_path, capsys):
    csv, results = _write(tmp_path), tmp_path / "results"
    args = ["import-garage", str(csv), "--algorithm", "maml-garage", "--family", "halfcheetah_vel", "--seed", "3",
            "--results", str(results)]  # fmt: skip
    assert main(args) == 0
    rows = SuiteDir(results).results()
    assert set(rows["source"]) == {"imported"} and set(rows["algorithm"]) == {"maml-garage"}
    assert rows.query("metric == 'return'")["value"].tolist() == [-48.0, -28.5, -9.25]
    (manifest,) = SuiteDir(results).manifests()
    assert (manifest["status"], manifest["source"], manifest["seed"], manifest["imported_from"]) == (
        "done", "imported", 3, "progress.csv")
    assert len(manifest["imported_sha256"]) == 64

    assert main(args) == 2  # the run exists: refuse, naming the way out
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0

    assert main(["report", str(results)]) == 0
    md = (results / "report" / "report.md").read_text()
    assert "imported from legacy garage logs" in md and "maml-garage / halfcheetah_vel / seed 3" in md
    # success is the headline metric where logged; asymptote = mean of the last 3 evaluations, one seed
    assert "| halfcheetah_vel (success) | maml-garage | 41.7% (n=1) |" in md
