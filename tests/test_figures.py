"""``python -m harness figures``: the paper's figure set from stored results, missing results listed."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from harness.analysis.figures import ALGORITHMS, CURVES, MEMORY_ABLATION, budget_line
from harness.cli import main
from harness.run.store import RunKey, RunStore, SuiteDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _store_run(results: Path, algorithm: str, family: str, seed: int, final: float, kind: str = "learner",
               ood: bool = False, success: bool = False) -> None:  # fmt: skip
    """A run with 3 evaluations rising to ``final``, 2 test tasks × 2 episodes (episode 2 better)."""
    store = RunStore(results, RunKey(algorithm, family, seed, kind))
    rows = []
    steps = (0,) if kind == "reference" else (0, 500_000, 1_000_000)
    for k, env_steps in enumerate(steps):
        score = final * (k + 1) / len(steps)
        for split in ("test", "ood") if ood else ("test",):
            for task in ("a", "b"):
                for episode in (0, 1):
                    value = score - (1 - episode) * 0.5 - (split == "ood")
                    rows.append({"env_steps": env_steps, "iteration": k, "wall_s": 0.0, "split": split,
                                 "task_id": f"{split}/{task}", "episode_index": episode, "metric": "return",
                                 "value": value})  # fmt: skip
                    if success:
                        rows.append({**rows[-1], "metric": "success", "value": float(value > 0.5 * final)})
    store.append_rows(rows)
    store.update_manifest(status="done")


def test_figures_draw_what_exists_and_list_what_is_missing(tmp_path, capsys):
    results = tmp_path / "paper"
    for seed in (0, 1):
        for i, algorithm in enumerate(ALGORITHMS):
            _store_run(results, algorithm, "halfcheetah_vel", seed, final=-50.0 + 10 * i + seed, ood=True)
        for algorithm in ("trmrl", "rl2"):  # ML1 reach has two of the four algorithms
            _store_run(results, algorithm, "ml1_reach", seed, final=1.0 + seed, success=True)
        for algorithm in MEMORY_ABLATION[:2]:
            _store_run(results, algorithm, "halfcheetah_vel", seed, final=-40.0 + seed, ood=True)
        _store_run(results, "ref-random", "halfcheetah_vel", seed, final=-300.0, kind="reference", ood=True)

    assert main(["figures", "--results", str(results)]) == 0
    out = results / "figures"
    drawn = sorted(p.name for p in out.glob("*.png"))
    assert drawn == ["adaptation.png", "meta_training_halfcheetah_vel.png", "meta_training_ml1_reach.png", "ood.png",
                     "working_memory_ablation.png"]  # fmt: skip
    for name in drawn:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        assert matplotlib.image.imread(out / name).ndim == 3
    index = (out / "figures.md").read_text()
    printed = capsys.readouterr().out
    for figure in CURVES:
        if figure.family not in ("halfcheetah_vel", "ml1_reach"):
            assert f"{figure.title}: **not drawn**, no results." in index
            assert f"missing: {figure.name}: no results for trmrl on {figure.family}" in printed
    assert "Missing: maml on ml1_reach, pearl on ml1_reach." in index  # drawn, with its gaps named
    assert "working_memory_ablation: no results for trmrl_wm25 on halfcheetah_vel, trmrl_wm50" in index
    assert "Run to 1M env steps (trmrl, rl2, maml, pearl); the paper's runs: 20M." in index  # the budget shown
    assert "the figures expect the algorithm and family ids of suites/paper.yaml" in index


def test_the_budget_line_groups_learners_by_how_far_their_runs_went(tmp_path):
    results = tmp_path / "lite"
    for seed in (0, 1):
        for algorithm in ("trmrl", "rl2"):
            _store_run(results, algorithm, "halfcheetah_vel", seed, final=-50.0)
    for seed, last in ((0, 100_000), (1, 80_000)):  # PEARL: a smaller budget, and one seed stopped early
        store = RunStore(results, RunKey("pearl", "halfcheetah_vel", seed, "learner"))
        store.append_rows([{"env_steps": last, "iteration": 1, "wall_s": 0.0, "split": "test", "task_id": "test/a",
                            "episode_index": 0, "metric": "return", "value": -60.0}])  # fmt: skip
        store.update_manifest(status="done")
    _store_run(results, "trmrl", "ant_dir", 0, final=1.0)  # another family: ignored
    rows = SuiteDir(results).results()
    assert budget_line(rows, "halfcheetah_vel", ALGORITHMS, 2e7) == (
        "run to 1M env steps (trmrl, rl2), 80k–100k env steps (pearl); the paper's runs: 20M")


def test_a_working_memory_ablation_with_one_window_is_not_drawn(tmp_path):
    results = tmp_path / "lite"
    for algorithm in ALGORITHMS:
        _store_run(results, algorithm, "halfcheetah_vel", 0, final=-50.0)
    assert main(["figures", "--results", str(results)]) == 0
    assert not (results / "figures" / "working_memory_ablation.png").exists()
    assert "Working-memory ablation: **not drawn**, results for fewer than two windows." in (
        results / "figures" / "figures.md").read_text()


def test_figures_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["figures", "--results", str(tmp_path / "nothing")]) == 2
    assert "python -m harness run suites/paper.yaml" in capsys.readouterr().err
