"""Report tables and plots against hand-computed answers on a synthetic results table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml

from harness.analysis.report import final_table, report, run_scores, write_report
from harness.run.store import SuiteDir

T_975_2 = 4.302652729749462  # scipy.stats.t.ppf(0.975, 2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = (100_000, 200_000, 300_000, 400_000)
SEEDS = (0, 1, 2)

# Final (400k) last-episode score per seed. Scores grow linearly to these over the 4 evaluations.
FINAL = {
    ("bandit", "rl2", "test"): (1.0, 2.0, 3.0),  # mean 2, half-width 4.3027 · 1/√3 = 2.4841
    ("bandit", "trmrl", "test"): (5.0, 6.0, 10.0),  # mean 7, s = √7, half-width 4.3027 · √7/√3 = 6.5725
    ("point_nav", "rl2", "test"): (1.0, 2.0, 3.0),
    ("point_nav", "rl2", "ood"): (1.0, 1.0, 4.0),  # mean 2, s = √3, half-width 4.3027
    ("point_nav", "trmrl", "test"): (4.0, 4.0, 4.0),  # no spread: half-width 0
    ("point_nav", "trmrl", "ood"): (3.0, 3.5, 4.0),  # mean 3.5, s = 0.5, half-width 1.2421
}
# Reference scores per seed, evaluated once at env_steps 0.
REFERENCES = {
    ("bandit", "ref-thompson", "test"): (8.0, 8.5, 9.0),  # mean 8.5, s = 0.5, half-width 1.2421
    ("bandit", "ref-random", "test"): (2.5,),  # one seed: "2.50 (n=1)"
    ("point_nav", "ref-oracle", "test"): (9.0, 9.0, 9.0),
    ("point_nav", "ref-oracle", "ood"): (8.0, 8.0, 8.0),
    ("point_nav", "ref-random", "test"): (-1.0,),
    ("point_nav", "ref-random", "ood"): (-2.0,),
}
EPISODES = {"bandit": 1, "point_nav": 2}


def _trial_rows(kind, algorithm, family, seed, env_steps, split, score, first_score=None):
    """Rows of one evaluation on one split: 2 tasks whose last-episode returns average to ``score``
    (score − 0.5 and score + 0.5); in 2-episode trials the first episode returns ``first_score`` ± 0.25."""
    rows = []
    for task, offset in (("t0", -0.5), ("t1", 0.5)):
        returns = [score + offset] if EPISODES[family] == 1 else [first_score + offset / 2, score + offset]
        for episode, value in enumerate(returns):
            for metric, v in (("return", value), ("length", 10.0)):
                rows.append(
                    {"kind": kind, "algorithm": algorithm, "family": family, "seed": seed, "env_steps": env_steps,
                     "iteration": env_steps // 1000, "wall_s": 1.0, "split": split, "task_id": f"{split}-{task}",
                     "episode_index": episode, "metric": metric, "value": v}
                )  # fmt: skip
    return rows


def synthetic_rows() -> pd.DataFrame:
    """2 families × 2 algorithms × 3 seeds × 4 evaluations, plus 2 references per family at env_steps 0.

    point_nav: first-episode test score is 0 at the final evaluation, so the adaptation gain equals the
    final last-episode score.
    """
    rows = []
    for (family, algorithm, split), finals in FINAL.items():
        for seed, final in zip(SEEDS, finals, strict=True):
            for k, steps in enumerate(STEPS):
                score = final * (k + 1) / len(STEPS)
                first = 0.0 if k == len(STEPS) - 1 else score / 2
                rows += _trial_rows("learner", algorithm, family, seed, steps, split, score, first)
            # learner diagnostics must be ignored
            rows.append(
                {"kind": "learner", "algorithm": algorithm, "family": family, "seed": seed, "env_steps": STEPS[-1],
                 "iteration": 400, "wall_s": 1.0, "split": "training", "task_id": "", "episode_index": 0,
                 "metric": "return", "value": 999.0}
            )  # fmt: skip
    for (family, algorithm, split), scores in REFERENCES.items():
        for seed, score in zip(SEEDS, scores, strict=False):
            rows += _trial_rows("reference", algorithm, family, seed, 0, split, score, score - 1.0)
    return pd.DataFrame(rows)


def manifests() -> list[dict]:
    def manifest(algorithm, family, seed, status="done", error=None, kind="learner", spec_hash="spec123"):
        return {"algorithm": algorithm, "family": family, "seed": seed, "kind": kind, "status": status, "error": error,
                "spec_hash": spec_hash, "tasks_hash": "tasks456", "commit": "abc1234"}  # fmt: skip

    done = [manifest(a, f, s) for f in EPISODES for a in ("rl2", "trmrl") for s in SEEDS]
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nFloatingPointError: NaN in policy loss\n'
    failed = manifest("rl2", "point_nav", 3, "failed", traceback)
    return [*done, failed, manifest("trmrl", "bandit", 3, "running", spec_hash="other99")]


META = {"suite": "synthetic", "spec_hash": "spec123", "tasks_hash": "tasks456", "commits": ["abc1234"]}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return synthetic_rows()


@pytest.fixture(scope="module")
def report_md(rows, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("report")
    path = write_report(rows, manifests(), META, out)
    assert path == out / "report.md"
    return path.read_text(), out


def test_run_scores_uses_last_episode_of_each_trial():
    base = {
        "kind": "learner",
        "algorithm": "a",
        "family": "f",
        "seed": 0,
        "env_steps": 10,
        "iteration": 1,
        "wall_s": 0.0,
    }
    rows = pd.DataFrame([
        {**base, "split": "test", "task_id": "x", "episode_index": 0, "metric": "return", "value": 1.0},
        {**base, "split": "test", "task_id": "x", "episode_index": 1, "metric": "return", "value": 3.0},
        {**base, "split": "test", "task_id": "y", "episode_index": 0, "metric": "return", "value": 2.0},
        {**base, "split": "test", "task_id": "y", "episode_index": 1, "metric": "return", "value": 7.0},
        {**base, "split": "test", "task_id": "y", "episode_index": 1, "metric": "length", "value": 50.0},
        {**base, "split": "training", "task_id": "", "episode_index": 1, "metric": "return", "value": 100.0},
    ])  # fmt: skip
    last = run_scores(rows)
    assert list(last.columns) == ["kind", "algorithm", "family", "seed", "split", "env_steps", "score"]
    assert last["score"].tolist() == [5.0]  # mean(3, 7)
    assert run_scores(rows, episode="first")["score"].tolist() == [1.5]  # mean(1, 2)
    assert run_scores(rows, metric="length")["score"].tolist() == [50.0]
    with pytest.raises(ValueError, match="episode"):
        run_scores(rows, episode="middle")


def test_run_scores_on_synthetic_curve(rows):
    scores = run_scores(rows)
    curve = scores[(scores.algorithm == "rl2") & (scores.family == "bandit") & (scores.seed == 2)]
    assert curve["env_steps"].tolist() == list(STEPS)
    assert curve["score"].tolist() == pytest.approx([0.75, 1.5, 2.25, 3.0])
    assert set(scores["split"]) == {"test", "ood"}


def test_final_table_mean_and_t_interval(rows):
    table = final_table(rows).set_index(["family", "algorithm"])
    assert T_975_2 / math.sqrt(3) == pytest.approx(2.4841, abs=1e-4)
    rl2 = table.loc[("bandit", "rl2")]
    assert (rl2.test_mean, rl2.test_n, rl2.n_seeds) == (pytest.approx(2.0), 3, 3)
    assert rl2.test_ci == pytest.approx(T_975_2 / math.sqrt(3))
    assert table.loc[("bandit", "trmrl")].test_ci == pytest.approx(T_975_2 * math.sqrt(7) / math.sqrt(3))
    assert table.loc[("point_nav", "rl2")].ood_ci == pytest.approx(T_975_2)
    assert table.loc[("point_nav", "trmrl")].test_ci == pytest.approx(0.0)
    assert rl2.ood_n == 0 and np.isnan(rl2.ood_mean)
    assert (rl2.episodes_per_trial, rl2.final_env_steps_min, rl2.final_env_steps_max) == (1, 400_000, 400_000)
    assert np.isnan(rl2.test_first_mean)  # one-episode trials: no adaptation column

    nav = table.loc[("point_nav", "rl2")]
    assert nav.episodes_per_trial == 2
    assert (nav.test_first_mean, nav.test_gain_mean) == (pytest.approx(0.0), pytest.approx(2.0))
    assert nav.test_gain_ci == pytest.approx(T_975_2 / math.sqrt(3))

    random = table.loc[("bandit", "ref-random")]
    assert (random.kind, random.test_mean, random.test_n) == ("reference", 2.5, 1)
    assert np.isnan(random.test_ci)
    assert table.loc[("bandit", "ref-thompson")].test_ci == pytest.approx(T_975_2 * 0.5 / math.sqrt(3))
    assert list(final_table(rows)["kind"]) == ["learner"] * 2 + ["reference"] * 2 + ["learner"] * 2 + ["reference"] * 2


def test_report_tables_header_and_warnings(report_md):
    md, _ = report_md
    assert md.startswith("# synthetic — results\n")
    for line in ("- spec hash: `spec123`", "- tasks hash: `tasks456`", "- commit: `abc1234`", "- seeds: 0, 1, 2",
                 "- runs: 14 (12 done, 1 running, 1 failed)"):  # fmt: skip
        assert line + "\n" in md
    assert "1 run(s) have a spec hash other than the suite's: trmrl / bandit / seed 3 (`other99`)" in md
    bandit, point_nav = md.split("## bandit")[1].split("## point_nav")
    assert "| algorithm | final test return | seeds | env steps |" in bandit
    assert "| rl2 | 2.00 ± 2.48 | 3 | 400k |" in bandit
    assert "| trmrl | 7.00 ± 6.57 | 3 | 400k |" in bandit
    assert "| random (reference) | 2.50 (n=1) | 1 | — |" in bandit
    assert "| thompson (reference) | 8.50 ± 1.24 | 3 | — |" in bandit
    assert bandit.index("| trmrl |") < bandit.index("(reference)")  # learners before references
    assert "| algorithm | final test return | final ood return | test ep 1 → last | seeds | env steps |" in point_nav
    assert "| rl2 | 2.00 ± 2.48 | 2.00 ± 4.30 | 0.00 → 2.00 (+2.00 ± 2.48) | 3 | 400k |" in point_nav
    assert "| trmrl | 4.00 ± 0.00 | 3.50 ± 1.24 | 0.00 → 4.00 (+4.00 ± 0.00) | 3 | 400k |" in point_nav
    assert "| random (reference) | -1.00 (n=1) | -2.00 (n=1) | -2.00 → -1.00 (+1.00, n=1) | 1 | — |" in point_nav
    assert "999" not in md  # the training split is not reported
    for section in (bandit, point_nav):
        assert "> ⚠ fewer than 5 seeds (as few as 3)" in section
    assert "trmrl seed 3 (running)" in bandit and "rl2 seed 3 (failed)" in point_nav


def test_report_header_says_which_runs_were_reused_and_which_ran_on_uncommitted_changes(rows, tmp_path):
    runs = manifests()
    runs[0] = {**runs[0], "reused_from": {"spec_hash": "old1", "tasks_hash": "tasks456"}}
    runs[1] = {**runs[1], "reused_from": {"spec_hash": "old2", "tasks_hash": "tasks456"}}
    runs[2] = {**runs[2], "commit": "abc1234+dirty"}
    md = write_report(rows, runs, {**META, "commits": ["abc1234", "abc1234+dirty"]}, tmp_path).read_text()
    header = md.split("\n## ")[0]
    assert "> ⚠ runs come from 2 different commits." in header
    assert "> ⓘ 2 of 14 runs were kept by `harness reuse` from earlier spec(s) `old1`, `old2`" in header
    assert "> ⚠ 1 run(s) ran on a working tree with uncommitted changes (`+dirty`): rl2 / bandit / seed 2." in header


def test_report_of_one_clean_run_has_no_provenance_notes(report_md):
    md, _ = report_md
    assert "harness reuse" not in md and "+dirty" not in md


def test_report_lists_failed_runs_with_last_error_line(report_md):
    md, _ = report_md
    failed = md.split("## Failed runs")[1].split("## ")[0]
    assert "- rl2 / point_nav / seed 3: `FloatingPointError: NaN in policy loss`" in failed
    assert "trmrl" not in failed  # running is not failed


def test_report_writes_one_readable_png_per_family(report_md):
    md, out = report_md
    for family in EPISODES:
        png = out / f"curves_{family}.png"
        assert f"]({png.name})" in md and "![" in md
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert sorted(p.name for p in out.iterdir()) == [
        "adaptation.png", "aggregate.png", "curves_bandit.png", "curves_point_nav.png", "improvement.png", "ood.png",
        "report.md",
    ]  # fmt: skip
    for name in ("adaptation", "aggregate", "improvement", "ood"):
        assert f"]({name}.png)" in md
        assert matplotlib.image.imread(out / f"{name}.png").ndim == 3


def _summary_row(md: str, family: str, algorithm: str) -> list[str]:
    summary = md.split("## Summary")[1].split("\n\n")[1]
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [family, algorithm]:
            return cells[2:]
    raise AssertionError(f"no summary row for {family}/{algorithm}")


def test_summary_table_hand_computed(report_md):
    """Scores grow linearly to FINAL over 4 evaluations (k/4 · final), so per seed: asymptote (last 3) =
    0.75 · final, AUC (time-average over 100k–400k) = 0.625 · final, max over training = final. Three
    seeds: IQM = mean. Bootstrap CIs are percentile intervals of resampled seeds: within [min, max]."""
    md, _ = report_md
    asym, auc, _steps, ood, gap, gain, optimistic = _summary_row(md, "point_nav", "rl2")
    assert asym.startswith("1.50 [") and auc.startswith("1.25 [") and optimistic.startswith("2.00 [")
    low, high = (float(v) for v in asym.split("[")[1].rstrip("]").split(","))
    assert 0.75 <= low <= 1.5 <= high <= 2.25
    assert ood.startswith("1.50 [")  # ood finals (1, 1, 4) → asymptotes (0.75, 0.75, 3)
    assert gap.startswith("0.00 [")  # per seed 0, 0.75, −0.75
    assert gain.startswith("2.00 [")  # first episode 0 at the final evaluation: the gains are the finals (1, 2, 3)
    # bandit: threshold = random 2.5 + 0.8 · (best asymptote 5.25 − 2.5) = 4.7. trmrl's curves
    # (1.25, 2.5, 3.75, 5), (1.5, 3, 4.5, 6), (2.5, 5, …) reach it at 400k, 400k, 200k: median 400k
    assert _summary_row(md, "bandit", "trmrl")[2] == "400k (3/3)"
    assert _summary_row(md, "bandit", "rl2")[2] == "not reached (0/3)"
    assert _summary_row(md, "bandit", "random (reference)")[:3] == ["2.50 (n=1)", "—", "—"]
    assert "seeds: 0, 1, 2 · spec hash `spec123` · tasks hash `tasks456`" in md.split("## Per family")[0]


def test_report_formats_latex_and_csv(rows, tmp_path):
    path = write_report(rows, manifests(), META, tmp_path, formats=("latex", "csv"))
    assert path == tmp_path / "tables.tex" and not (tmp_path / "report.md").exists()
    tex = path.read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and "tab:main" in tex and "tab:aggregate" in tex
    assert r"spec hash spec123" in tex and r"point\_nav & rl2 & 1.50 [" in tex
    main = pd.read_csv(tmp_path / "main.csv")
    row = main[(main["family"] == "point_nav") & (main["algorithm"] == "rl2")].iloc[0]
    assert (row["asymptotic"], row["auc"], row["optimistic"], row["spec_hash"]) == (1.5, 1.25, 2.0, "spec123")
    final = pd.read_csv(tmp_path / "final.csv")
    assert set(final["family"]) == {"bandit", "point_nav"} and (final["tasks_hash"] == "tasks456").all()
    assert {"adaptation.csv", "aggregate.csv", "improvement.csv"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="formats"):
        write_report(rows, manifests(), META, tmp_path, formats=("pdf",))


def test_report_edge_cases_one_seed_one_evaluation_no_ood(rows, tmp_path):
    """Smoke test: a single seed (no band), a single evaluation (markers) and a family without ood."""
    one = rows[(rows.seed == 0) & (rows.env_steps.isin([0, STEPS[-1]])) & (rows.split != "ood")]
    md = write_report(one, [], {"suite": "edge"}, tmp_path).read_text()
    assert "| rl2 | 1.00 (n=1) | 0.00 → 1.00 (+1.00, n=1) | 1 | 400k |" in md
    assert "- spec hash: `unknown`" in md
    for family in EPISODES:
        assert matplotlib.image.imread(tmp_path / f"curves_{family}.png").ndim == 3


def test_report_with_no_rows_yet(tmp_path):
    empty = synthetic_rows().iloc[:0]
    running = [
        {"algorithm": "rl2", "family": "bandit", "seed": 0, "kind": "learner", "status": "running", "error": None}
    ]
    md = write_report(empty, running, META, tmp_path).read_text()
    assert "No evaluation rows yet." in md and "rl2 seed 0 (running)" in md
    assert not list(tmp_path.glob("*.png"))


def test_report_reads_suite_files_and_loads_through_the_store(rows, tmp_path, monkeypatch):
    """``report`` wires ``suite.yaml``/``tasks.json`` and the store's loaders into ``write_report``."""
    results = tmp_path / "results" / "synthetic"
    results.mkdir(parents=True)
    suite = {"name": "synthetic", "seeds": [0, 1, 2, 3], "spec_hash": "spec123",
             "families": [{"name": "point_nav", "id": "point_nav"}, {"name": "bandit"}],
             "algorithms": [{"name": "trmrl"}, {"name": "rl2"}]}  # fmt: skip
    (results / "suite.yaml").write_text(yaml.safe_dump(suite))
    (results / "tasks.json").write_text(json.dumps({"families": {"bandit": {"test_coincides_with_train": True},
                                                                "point_nav": {"test_coincides_with_train": False}},
                                                   "hash": "tasks456"}))
    monkeypatch.setattr(SuiteDir, "results", lambda self: rows)
    monkeypatch.setattr(SuiteDir, "manifests", lambda self: manifests())

    path = report(results)
    assert path == results / "report" / "report.md"
    md = path.read_text()
    assert "- spec hash: `spec123`" in md and "- tasks hash: `tasks456`" in md and "- commit: `abc1234`" in md
    assert "- seeds: 0, 1, 2 (the suite lists 0, 1, 2, 3)" in md
    assert md.index("## point_nav") < md.index("## bandit")  # the suite's order
    assert md.index("| trmrl |") < md.index("| rl2 |")
    # a family whose test tasks are its training tasks says so, once, in its own section
    assert md.count("test tasks coincide with training tasks") == 1
    assert md.index("## bandit") < md.index("test tasks coincide with training tasks")
    with pytest.raises(FileNotFoundError, match=r"suite\.yaml"):
        report(tmp_path)


def test_the_steps_axis_is_logarithmic_only_when_a_curve_ends_ten_times_earlier() -> None:
    """PEARL's runs end far earlier than the on-policy learners': on a linear axis its curve would be a
    smudge at the left edge; the axis turns logarithmic past the first evaluation instead."""
    from harness.analysis.report import _log_steps

    def curves(ends: dict[str, list[int]]) -> pd.DataFrame:
        return pd.DataFrame([{"algorithm": a, "env_steps": s} for a, steps in ends.items() for s in steps])

    assert _log_steps(curves({"rl2": [0, 250_000, 5_000_000], "pearl": [0, 30_000, 120_000]})) == 30_000.0
    assert _log_steps(curves({"rl2": [0, 250_000, 1_000_000], "pearl": [0, 50_000, 200_000]})) is None  # 5×
    assert _log_steps(curves({"rl2": [0, 250_000, 5_000_000]})) is None  # one learner


def test_a_trained_reference_is_drawn_as_its_curve_and_a_line_at_its_last_evaluation(tmp_path: Path,
                                                                                      monkeypatch: Any) -> None:
    """A multitask reference can peak and drift down; the table's level is its last evaluation, and the
    curve shows the peak a reader would otherwise not see."""
    from matplotlib.figure import Figure

    from harness.analysis.report import plot_curves

    def row(kind: str, algorithm: str, seed: int, steps: int, value: float) -> dict[str, Any]:
        return {"kind": kind, "algorithm": algorithm, "family": "halfcheetah_vel", "seed": seed, "env_steps": steps,
                "iteration": 0, "wall_s": 0.0, "split": "test", "task_id": "t0", "episode_index": 0,
                "metric": "return", "value": value, "source": "harness"}

    multitask = {0: -240.0, 500_000: -150.0, 1_000_000: -180.0}  # a peak, then a drift
    rows = pd.DataFrame([row("learner", "rl2", s, steps, -200.0 + steps / 1e5) for s in (0, 1)
                         for steps in (0, 500_000, 1_000_000)]
                        + [row("reference", "ref-multitask", s, steps, v) for s in (0, 1)
                           for steps, v in multitask.items()]
                        + [row("reference", "ref-random", s, 0, -280.0) for s in (0, 1)])  # fmt: skip
    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *args, **kwargs: drawn.append(self))
    plot_curves(rows, "halfcheetah_vel", tmp_path / "curves.png", algorithms=["rl2"])
    lines = [list(line.get_ydata()) for line in drawn[0].axes[0].get_lines()]
    assert list(multitask.values()) in lines  # the training curve
    assert [-180.0, -180.0] in lines and [-280.0, -280.0] in lines  # the levels: last evaluation, random's
    assert sum(len(ys) == 3 for ys in lines) == 2  # rl2's curve and multitask's; random has no curve


def test_the_ood_bars_carry_each_references_level_on_both_splits(tmp_path: Path, monkeypatch: Any) -> None:
    """An OOD score means little alone: the bars show where random, multitask and oracle stand on the same
    tasks (a reference without OOD rows is left out)."""
    from matplotlib.figure import Figure

    from harness.analysis import plots

    main = pd.DataFrame([
        {"family": "f", "kind": "learner", "algorithm": "rl2", "metric": "return", "asymptotic": -150.0,
         "asymptotic_low": -160.0, "asymptotic_high": -140.0, "ood": -500.0, "ood_low": -520.0, "ood_high": -480.0},
        {"family": "f", "kind": "reference", "algorithm": "ref-oracle", "metric": "return", "asymptotic": -50.0,
         "asymptotic_low": -50.0, "asymptotic_high": -50.0, "ood": -350.0, "ood_low": -350.0, "ood_high": -350.0},
        {"family": "f", "kind": "reference", "algorithm": "ref-thompson", "metric": "return", "asymptotic": -90.0,
         "asymptotic_low": -90.0, "asymptotic_high": -90.0, "ood": None, "ood_low": None, "ood_high": None},
    ])
    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *args, **kwargs: drawn.append(self))
    plots.plot_ood_bars(main, tmp_path / "ood.png", ["rl2"])
    segments = [line for line in drawn[0].axes[0].get_lines()  # a level spans a group of bars: not caps, not 0
                if len(line.get_xdata()) == 2 and np.isclose(np.ptp(np.asarray(line.get_xdata(), float)), 0.9)]
    levels = sorted((float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in segments)
    assert levels == [(-0.45, -50.0), (0.55, -350.0)]  # across the test bars, across the OOD bars
    labels = [text.get_text() for text in drawn[0].legends[0].get_texts()]
    assert labels == ["rl2", "oracle (reference)"]
