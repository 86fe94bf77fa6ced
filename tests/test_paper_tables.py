"""The RL² paper's tables (``harness.analysis.paper_tables``) against hand-computed answers on synthetic rows."""

from __future__ import annotations

import json

import matplotlib.image
import pandas as pd
import pytest
import yaml

from harness.analysis.metrics import run_scores
from harness.analysis.paper_tables import PAPER_TABLES, paper_cells, paper_tables, setting_label
from harness.analysis.report import report

SEEDS = (0, 1, 2)
STEPS = (100_000, 200_000, 300_000, 400_000)
FAMILIES = {  # id → (name, params, episodes per trial)
    "bandit_k5_n10": ("bandit", {"arms": 5, "pulls": 10}, 1),
    "bandit_k10_n10": ("bandit", {"arms": 10, "pulls": 10}, 1),
    "mdp_n2": ("tabular_mdp", {"states": 10, "actions": 5}, 2),
}
# Per-seed total reward of a trial. For 2-episode trials it is split 40/60 over the episodes.
LEARNERS = {("bandit_k5_n10", "rl2"): (6.0, 6.5, 7.0), ("bandit_k10_n10", "rl2"): (5.0, 6.0, 7.0),
            ("mdp_n2", "rl2"): (20.0, 30.0, 40.0)}  # fmt: skip
REFERENCES = {("bandit_k5_n10", "random"): 5.0, ("bandit_k5_n10", "gittins"): 7.0,
              ("bandit_k10_n10", "random"): 5.0, ("bandit_k10_n10", "gittins"): 6.0,
              ("bandit_k10_n10", "thompson"): 5.5,
              ("mdp_n2", "random"): 20.0, ("mdp_n2", "opsrl"): 40.0, ("mdp_n2", "psrl"): 35.0}  # fmt: skip


def _rows(kind: str, algorithm: str, family: str, seed: int, env_steps: int, total: float) -> list[dict]:
    episodes = FAMILIES[family][2]
    shares = (1.0,) if episodes == 1 else (0.4, 0.6)
    rows = []
    for task, offset in (("t0", -1.0), ("t1", 1.0)):  # two tasks whose trial totals average to ``total``
        for episode, share in enumerate(shares):
            rows.append({"kind": kind, "algorithm": algorithm, "family": family, "seed": seed, "env_steps": env_steps,
                         "iteration": 0, "wall_s": 0.0, "split": "test", "task_id": task, "episode_index": episode,
                         "metric": "return", "value": share * (total + offset)})  # fmt: skip
    return rows


def synthetic_rows() -> pd.DataFrame:
    rows = []
    for (family, algorithm), totals in LEARNERS.items():
        for seed, total in zip(SEEDS, totals, strict=True):
            for k, steps in enumerate(STEPS):  # the first evaluation is poor; the last three score ``total``
                rows += _rows("learner", algorithm, family, seed, steps, total if k else 0.0)
    for (family, name), total in REFERENCES.items():
        for seed in SEEDS:
            rows += _rows("reference", f"ref-{name}", family, seed, 0, total)
    return pd.DataFrame(rows)


INFO = {family: {"name": name, "params": params, "episodes_per_trial": episodes}
        for family, (name, params, episodes) in FAMILIES.items()}  # fmt: skip


def test_setting_labels_follow_the_paper() -> None:
    assert setting_label("bandit", {"arms": 5, "pulls": 10}, 1) == "k=5, n=10"
    assert setting_label("bandit", {"arms": 50, "pulls": 50}, 2) == "k=50, n=100"  # n counts the trial's pulls
    assert setting_label("tabular_mdp", {}, 25) == "n=25"


def test_trial_scores_sum_the_episodes_of_a_trial() -> None:
    scores = run_scores(synthetic_rows(), "return", "trial")
    final = scores[(scores["family"] == "mdp_n2") & (scores["env_steps"] == STEPS[-1])]
    assert sorted(final["score"]) == pytest.approx([20.0, 30.0, 40.0])
    last = run_scores(synthetic_rows(), "return", "last")
    final_last = last[(last["family"] == "mdp_n2") & (last["env_steps"] == STEPS[-1])]
    assert sorted(final_last["score"]) == pytest.approx([12.0, 18.0, 24.0])  # 60% of the trial


def test_tables_give_the_last_k_mean_of_the_trial_total_and_the_papers_normalisation() -> None:
    results = {r.table.family: r for r in paper_tables(synthetic_rows(), INFO, last_k=3, reps=200)}
    assert list(results) == ["bandit", "tabular_mdp"]
    bandit = results["bandit"]
    assert bandit.settings == {"bandit_k5_n10": "k=5, n=10", "bandit_k10_n10": "k=10, n=10"}
    scores = bandit.scores.set_index(["family", "algorithm"])["estimate"]
    # IQM of 3 seeds trims nothing: the mean; the first (poor) evaluation is outside the last 3
    assert scores["bandit_k5_n10", "rl2"] == pytest.approx(6.5)
    assert scores["bandit_k10_n10", "ref-thompson"] == pytest.approx(5.5)
    norm = bandit.normalised.set_index(["family", "algorithm"])["estimate"]
    assert norm["bandit_k5_n10", "rl2"] == pytest.approx((6.5 - 5.0) / (7.0 - 5.0))
    assert norm["bandit_k10_n10", "rl2"] == pytest.approx((6.0 - 5.0) / (6.0 - 5.0))
    assert norm["bandit_k10_n10", "ref-gittins"] == pytest.approx(1.0)
    assert norm["bandit_k10_n10", "ref-random"] == pytest.approx(0.0)
    assert norm["bandit_k10_n10", "ref-thompson"] == pytest.approx(0.5)
    mdp = results["tabular_mdp"]
    assert mdp.scores.set_index(["family", "algorithm"])["estimate"]["mdp_n2", "rl2"] == pytest.approx(30.0)
    mdp_norm = mdp.normalised.set_index(["family", "algorithm"])["estimate"]
    assert mdp_norm["mdp_n2", "rl2"] == pytest.approx(0.5)  # OPSRL = 1, random = 0
    assert mdp_norm["mdp_n2", "ref-psrl"] == pytest.approx(0.75)


def test_cells_put_settings_in_rows_and_the_papers_references_first() -> None:
    bandit = paper_tables(synthetic_rows(), INFO, last_k=3, reps=200)[0]
    cells = paper_cells(bandit.scores, PAPER_TABLES["bandit"], bandit.settings, ["rl2"])
    assert list(cells.columns) == ["setting", "random", "gittins", "thompson", "rl2"]
    assert list(cells["setting"]) == ["k=5, n=10", "k=10, n=10"]
    row = cells.set_index("setting").loc["k=5, n=10"]
    assert row["thompson"] == "—"  # not run on this setting
    assert row["gittins"] == "7.00"  # the same score on every seed: no interval
    assert row["rl2"].startswith("6.50 [")


def _results_dir(tmp_path, rows: pd.DataFrame):
    out = tmp_path / "results"
    out.mkdir()
    families = [{"id": f, "name": name, "params": params, "episodes_per_trial": episodes}
                for f, (name, params, episodes) in FAMILIES.items()]  # fmt: skip
    spec = {"name": "paper", "seeds": list(SEEDS), "families": families, "algorithms": [{"name": "rl2", "id": "rl2"}]}
    (out / "suite.yaml").write_text(yaml.safe_dump({"spec_hash": "abc", "spec": spec}))
    (out / "tasks.json").write_text(json.dumps({"hash": "def", "families": {}}))
    for (kind, algorithm, family, seed), run in rows.groupby(["kind", "algorithm", "family", "seed"]):
        run_dir = out / "runs" / algorithm / family / f"seed={seed}"
        run_dir.mkdir(parents=True)
        run.drop(columns=["kind", "algorithm", "family", "seed"]).to_parquet(run_dir / "progress.parquet")
        (run_dir / "manifest.json").write_text(json.dumps(
            {"kind": kind, "algorithm": algorithm, "family": family, "seed": int(seed), "status": "done",
             "spec_hash": "abc", "tasks_hash": "def", "commit": "c0ffee"}))  # fmt: skip
    return out


def test_the_report_shows_the_papers_tables_and_their_normalisation_figures(tmp_path) -> None:
    results = _results_dir(tmp_path, synthetic_rows())
    path = report(results, tmp_path / "report", formats=("md", "csv"))
    text = path.read_text()
    assert "## RL² paper, Table 1" in text and "## RL² paper, Table 2" in text
    assert "| setting | random | gittins | thompson | rl2 |" in text
    assert "Normalised as in the paper (0 = random, 1 = opsrl)" in text
    for family in ("bandit", "tabular_mdp"):
        assert f"![{family}: normalised total reward per setting](paper_{family}.png)" in text
        image = matplotlib.image.imread(tmp_path / "report" / f"paper_{family}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100
    csv = pd.read_csv(tmp_path / "report" / "paper_tabular_mdp.csv")
    row = csv[(csv["algorithm"] == "rl2")].iloc[0]
    assert row["setting"] == "n=2" and row["estimate"] == pytest.approx(30.0)
    assert row["estimate_normalised"] == pytest.approx(0.5) and row["spec_hash"] == "abc"


def test_no_paper_section_without_its_families(tmp_path) -> None:
    rows = synthetic_rows()
    rows = rows.assign(family=rows["family"].map({"bandit_k5_n10": "other", "bandit_k10_n10": "other2",
                                                  "mdp_n2": "other3"}))  # fmt: skip
    assert paper_tables(rows, INFO, last_k=3, reps=200) == []
