"""``python -m harness figures``: the TrMRL paper's figure set, regenerated from stored results.

The figures expect the results of ``suites/paper.yaml`` (family and algorithm ids as there):

- meta-training curves (test return, or success rate for Meta-World, vs env steps; all four algorithms;
  95% CI bands) for HalfCheetahVel, HalfCheetahDir, AntDir, ML1 reach, ML1 push and ML45 (Melo 2022,
  Fig. 3–4);
- the OOD comparison (asymptotic test vs OOD score; families with an ood split);
- adaptation within the trial (score by episode index at the final evaluation);
- the working-memory ablation (TrMRL with several window sizes on HalfCheetahVel).

Nothing is faked: a figure whose results are missing is not drawn, and each missing (algorithm, family)
is listed in ``figures.md`` and on the console. A figure drawn from some but not all of its expected
runs says which are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import EngFormatter

from harness.analysis import plots
from harness.analysis.report import plot_curves
from harness.analysis.summary import primary_metric, summarise
from harness.run.store import SuiteDir

#: The four algorithms compared in every meta-training figure, in legend order.
ALGORITHMS = ("trmrl", "rl2", "maml", "pearl")
#: The working-memory ablation's algorithm ids in suites/paper.yaml (TrMRL's default window is 5).
MEMORY_ABLATION = ("trmrl_wm1", "trmrl", "trmrl_wm25", "trmrl_wm50")
MEMORY_FAMILY = "halfcheetah_vel"


@dataclass(frozen=True)
class CurveFigure:
    """One meta-training figure: a family id of suites/paper.yaml, its title, and the env steps of the
    paper's runs on it (the release's launch commands: HalfCheetahVel 2,500 epochs × 8,000 steps, Dir and
    Ant 5,000 epochs; the Meta-World curves run to about 5e7)."""

    name: str
    family: str
    title: str
    paper_env_steps: float


CURVES = (
    CurveFigure("meta_training_halfcheetah_vel", "halfcheetah_vel", "HalfCheetahVel", 2e7),
    CurveFigure("meta_training_halfcheetah_dir", "halfcheetah_dir", "HalfCheetahDir", 4e7),
    CurveFigure("meta_training_ant_dir", "ant_dir", "AntDir", 4e7),
    CurveFigure("meta_training_ml1_reach", "ml1_reach", "Meta-World ML1 reach", 5e7),
    CurveFigure("meta_training_ml1_push", "ml1_push", "Meta-World ML1 push", 5e7),
    CurveFigure("meta_training_ml45", "ml45", "Meta-World ML45", 5e7),
)
_STEPS = EngFormatter(sep="")  # 100k, 2M


def budget_line(rows: pd.DataFrame, family: str, algorithms: Sequence[str], paper_env_steps: float) -> str:
    """How far each learner's runs on ``family`` went, against the paper's: e.g. "run to 2M env steps (trmrl,
    rl2, maml), 100k env steps (pearl); the paper's runs: 20M". A learner whose seeds stopped at different points gets
    their range."""
    learners = rows[(rows["family"] == family) & (rows["kind"] == "learner") & rows["algorithm"].isin(algorithms)]
    reached = learners.groupby(["algorithm", "seed"])["env_steps"].max().groupby("algorithm").agg(["min", "max"])
    groups: dict[str, list[str]] = {}
    for algorithm in (a for a in algorithms if a in reached.index):
        lo, hi = (_STEPS(float(f"{reached.loc[algorithm, k]:.3g}")) for k in ("min", "max"))
        groups.setdefault(hi if lo == hi else f"{lo}–{hi}", []).append(algorithm)
    spans = [f"{steps} env steps ({', '.join(names)})" for steps, names in groups.items()]
    return f"run to {', '.join(spans)}; the paper's runs: {_STEPS(paper_env_steps)}"


def _present(rows: pd.DataFrame, algorithm: str, family: str) -> bool:
    return bool(((rows["algorithm"] == algorithm) & (rows["family"] == family) & (rows["kind"] == "learner")).any())


def make_figures(results_dir: str | Path, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write the figure set into ``out_dir`` and an index ``figures.md``.

    Returns:
        ``(written PNG paths, missing-result lines)``.

    Raises:
        FileNotFoundError: ``results_dir`` holds no results at all.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not SuiteDir(results_dir).run_dirs():
        raise FileNotFoundError(
            f"{results_dir}: no results (expected runs/ of suites/paper.yaml: python -m harness run suites/paper.yaml)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = SuiteDir(results_dir).results()
    rows = rows[rows["split"].isin(["test", "ood", "train"])]
    written: list[Path] = []
    missing: list[str] = []
    suite = SuiteDir(results_dir).resolved_spec().get("name", results_dir.name) if SuiteDir(results_dir).exists() \
        else results_dir.name
    index = ["# TrMRL paper figures", "", f"From the results of suite `{suite}` (`{results_dir}`); the figures "
             "expect the algorithm and family ids of suites/paper.yaml.", ""]

    def note(figure: str, absent: Sequence[str]) -> None:
        if absent:
            missing.append(f"{figure}: no results for {', '.join(absent)}")

    for figure in CURVES:
        absent = [f"{a} on {figure.family}" for a in ALGORITHMS if not _present(rows, a, figure.family)]
        note(figure.name, absent)
        shown = rows["algorithm"].isin(ALGORITHMS) | (rows["kind"] != "learner")
        here = rows[(rows["family"] == figure.family) & shown]
        if len(absent) == len(ALGORITHMS):
            index += [f"- {figure.title}: **not drawn**, no results.", ""]
            continue
        budget = budget_line(here, figure.family, ALGORITHMS, figure.paper_env_steps)
        path = plot_curves(here, figure.family, out_dir / f"{figure.name}.png", primary_metric(here, figure.family),
                           ALGORITHMS, (), title=f"{figure.title}: {budget}")  # fmt: skip
        if path is not None:
            written.append(path)
            index += [f"## {figure.title}", "", f"![{figure.title}]({path.name})", "",
                      f"{budget[0].upper()}{budget[1:]}.", ""]  # fmt: skip
            index += [f"Missing: {', '.join(absent)}.", ""] if absent else []

    main_rows = rows[rows["algorithm"].isin(ALGORITHMS) | (rows["kind"] != "learner")]
    summary = summarise(main_rows) if not main_rows.empty else None
    for name, title, draw in (
        ("ood", "OOD comparison", lambda s, p: plots.plot_ood_bars(s.main, p, ALGORITHMS)),
        ("adaptation", "Adaptation within the trial", lambda s, p: plots.plot_adaptation(s.adaptation, p, ALGORITHMS)),
    ):
        path = draw(summary, out_dir / f"{name}.png") if summary is not None else None
        if path is None:
            note(name, ["any family with an ood split" if name == "ood" else "any family with multi-episode trials"])
            index += [f"- {title}: **not drawn**, no results.", ""]
        else:
            written.append(path)
            index += [f"## {title}", "", f"![{title}]({path.name})", ""]

    ablation = rows[(rows["family"] == MEMORY_FAMILY)
                    & (rows["algorithm"].isin(MEMORY_ABLATION) | (rows["kind"] != "learner"))]  # fmt: skip
    absent = [f"{a} on {MEMORY_FAMILY}" for a in MEMORY_ABLATION if not _present(rows, a, MEMORY_FAMILY)]
    note("working_memory_ablation", absent)
    if len(absent) <= len(MEMORY_ABLATION) - 2:  # an ablation needs two windows at least
        path = plot_curves(ablation, MEMORY_FAMILY, out_dir / "working_memory_ablation.png",
                           primary_metric(ablation, MEMORY_FAMILY), MEMORY_ABLATION, ())  # fmt: skip
        if path is not None:
            written.append(path)
            index += ["## Working-memory ablation (TrMRL, HalfCheetahVel)", "",
                      f"![working-memory ablation]({path.name})", ""]  # fmt: skip
            index += [f"Missing: {', '.join(absent)}.", ""] if absent else []
    else:
        index += ["- Working-memory ablation: **not drawn**, results for fewer than two windows.", ""]

    if missing:
        index += ["## Missing results", "", *(f"- {line}" for line in missing), ""]
    (out_dir / "figures.md").write_text("\n".join(index))
    return written, missing
