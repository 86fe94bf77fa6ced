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
    """One meta-training figure: a family id of suites/paper.yaml and its title."""

    name: str
    family: str
    title: str


CURVES = (
    CurveFigure("meta_training_halfcheetah_vel", "halfcheetah_vel", "HalfCheetahVel"),
    CurveFigure("meta_training_halfcheetah_dir", "halfcheetah_dir", "HalfCheetahDir"),
    CurveFigure("meta_training_ant_dir", "ant_dir", "AntDir"),
    CurveFigure("meta_training_ml1_reach", "ml1_reach", "Meta-World ML1 reach"),
    CurveFigure("meta_training_ml1_push", "ml1_push", "Meta-World ML1 push"),
    CurveFigure("meta_training_ml45", "ml45", "Meta-World ML45"),
)


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
    index = ["# TrMRL paper figures", "", f"From `{results_dir.name}` (suites/paper.yaml).", ""]

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
        path = plot_curves(here, figure.family, out_dir / f"{figure.name}.png", primary_metric(here, figure.family),
                           ALGORITHMS, ())  # fmt: skip
        if path is not None:
            written.append(path)
            index += [f"## {figure.title}", "", f"![{figure.title}]({path.name})", ""]
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
    if len(absent) < len(MEMORY_ABLATION):
        path = plot_curves(ablation, MEMORY_FAMILY, out_dir / "working_memory_ablation.png",
                           primary_metric(ablation, MEMORY_FAMILY), MEMORY_ABLATION, ())  # fmt: skip
        if path is not None:
            written.append(path)
            index += ["## Working-memory ablation (TrMRL, HalfCheetahVel)", "",
                      f"![working-memory ablation]({path.name})", ""]  # fmt: skip
            index += [f"Missing: {', '.join(absent)}.", ""] if absent else []
    else:
        index += ["- Working-memory ablation: **not drawn**, no results.", ""]

    if missing:
        index += ["## Missing results", "", *(f"- {line}" for line in missing), ""]
    (out_dir / "figures.md").write_text("\n".join(index))
    return written, missing
