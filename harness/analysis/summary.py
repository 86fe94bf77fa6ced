"""The report's summary: the main table, the cross-family aggregates and their renderings.

``summarise`` turns the tidy rows into long tables (pure; every number comes from ``harness.analysis.metrics``):

- ``main``: per (family, algorithm): the asymptotic test score, the normalised AUC of the test curve, the
  env steps to reach the family's threshold, the asymptotic OOD score, the test − OOD gap and the gain
  from the trial's first episode to its last at the final evaluation; each an IQM over seeds with its
  95% stratified-bootstrap interval (steps: the median over seeds that reach
  it, with how many do). Also the optimistic max-over-training test score, labelled as such.
- ``adaptation``: score by episode index within the trial at the final evaluation (IQM and CI).
- ``aggregate``: IQM and mean of normalised test scores over families with random and oracle
  references (0 = random, 1 = oracle), and ``improvement``: probability of improvement between every pair.

``markdown_table``, ``latex_table`` and ``write_csv`` render them; every table carries the seeds, the
spec hash and the tasks hash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import metrics
from harness.run.store import REFERENCE_PREFIX

LAST_K = 3
THRESHOLD_FRACTION = 0.8
MAIN_COLUMNS = {
    "asymptotic": "asymptotic (test)",
    "auc": "AUC (test)",
    "steps": "steps to threshold",
    "ood": "asymptotic (OOD)",
    "gap": "test − OOD",
    "gain": "ep 1 → last (test)",
    "optimistic": "max over training (test, optimistic)",
}


@dataclass
class Summary:
    """The summary tables of a results table (see the module docstring for each)."""

    main: pd.DataFrame
    adaptation: pd.DataFrame
    aggregate: pd.DataFrame
    improvement: pd.DataFrame
    thresholds: pd.DataFrame
    metric_of: dict[str, str] = field(default_factory=dict)
    normalised_families: list[str] = field(default_factory=list)
    last_k: int = LAST_K
    fraction: float = THRESHOLD_FRACTION


def primary_metric(rows: pd.DataFrame, family: str) -> str:
    """``"success"`` where the family records success (Meta-World's headline metric), else ``"return"``."""
    here = (rows["family"] == family) & (rows["metric"] == "success") & rows["split"].isin(metrics.EVAL_SPLITS)
    return "success" if here.any() else "return"


def _estimates(table: pd.DataFrame, column: str, name: str) -> pd.DataFrame:
    est = metrics.per_family_estimates(table.rename(columns={column: "score"}) if column != "score" else table)
    return est.rename(columns={"estimate": name, "low": f"{name}_low", "high": f"{name}_high", "runs": f"{name}_runs"})


def summarise(
    rows: pd.DataFrame, last_k: int = LAST_K, fraction: float = THRESHOLD_FRACTION, reps: int = metrics.BOOTSTRAP_REPS
) -> Summary:
    """The summary tables of ``rows`` (``SuiteDir.results``); see the module docstring."""
    keys = ["family", "kind", "algorithm"]
    mains, adaptations, asymptotes_by_family, metric_of = [], [], [], {}
    for family in sorted(rows["family"].unique()):
        here = rows[rows["family"] == family]
        metric = metric_of[family] = primary_metric(here, family)
        scores = metrics.run_scores(here, metric)
        if scores.empty:
            continue
        asym = metrics.asymptotic(scores, last_k)
        asymptotes_by_family.append(asym)
        test = asym[asym["split"] == "test"]
        parts = [_estimates(test, "score", "asymptotic")]
        best = metrics.max_over_training(scores)
        parts.append(_estimates(best[(best["split"] == "test") & (best["kind"] == "learner")], "score", "optimistic"))
        auc = metrics.normalised_auc(scores)
        parts.append(_estimates(auc[(auc["split"] == "test") & (auc["kind"] == "learner")], "score", "auc"))
        ood = asym[asym["split"] == "ood"]
        if not ood.empty:
            parts.append(_estimates(ood, "score", "ood"))
            gap = metrics.ood_gap(asym).assign(split="test")
            if not gap.empty:
                parts.append(_estimates(gap, "gap", "gap"))
        per_episode = metrics.adaptation(here, metric)
        gain = metrics.adaptation_gain(per_episode)
        if not gain.empty:
            parts.append(_estimates(gain.assign(split="test"), "score", "gain"))
        table = parts[0]
        for part in parts[1:]:
            table = table.merge(part.drop(columns="split"), on=keys, how="left")
        levels = metrics.thresholds(scores, asym, fraction)
        steps = metrics.steps_to_threshold(scores, levels)
        steps = steps[steps["split"] == "test"].groupby(keys)["env_steps"]
        table = table.merge(steps.median().rename("steps").reset_index(), on=keys, how="left")
        table = table.merge(steps.count().rename("steps_reached").reset_index(), on=keys, how="left")
        table = table.merge(steps.size().rename("steps_runs").reset_index(), on=keys, how="left")
        level = levels[levels["split"] == "test"]
        table["threshold"] = float(level["threshold"].iloc[0]) if len(level) else math.nan
        table["metric"] = metric
        mains.append(table.drop(columns="split"))
        if per_episode["episode_index"].nunique() > 1:
            for episode, group in per_episode.groupby("episode_index"):
                est = metrics.per_family_estimates(group.assign(split="test"), reps=reps)
                adaptations.append(est.drop(columns="split").assign(episode_index=int(episode), metric=metric))
    main = pd.concat(mains, ignore_index=True) if mains else pd.DataFrame(columns=[*keys])
    adaptation = pd.concat(adaptations, ignore_index=True) if adaptations else pd.DataFrame(
        columns=[*keys, "estimate", "low", "high", "runs", "episode_index", "metric"]
    )

    asymptotes = pd.concat(asymptotes_by_family, ignore_index=True) if asymptotes_by_family else pd.DataFrame()
    aggregate = pd.DataFrame(columns=["algorithm", "statistic", "estimate", "low", "high", "runs"])
    improvement = pd.DataFrame(columns=["x", "y", "probability", "low", "high"])
    normalised_families: list[str] = []
    thresholds_table = pd.DataFrame()
    if not asymptotes.empty:
        test = asymptotes[asymptotes["split"] == "test"]
        norm = metrics.normalised(test[test["kind"] == "learner"], test)
        if not norm.empty:
            # the families every algorithm ran on: the bootstrap is stratified by family
            normalised_families = sorted(set.intersection(*(set(g["family"]) for _, g in norm.groupby("algorithm"))))
            matrices = metrics.score_matrices(norm, normalised_families)
            if matrices:
                aggregate = pd.concat([metrics.interval_estimates(matrices, "iqm", reps),
                                       metrics.interval_estimates(matrices, "mean", reps)], ignore_index=True)
                if len(matrices) > 1:
                    improvement = metrics.probability_of_improvement(matrices, reps)
        thresholds_table = main[["family", "metric", "threshold"]].drop_duplicates()
    return Summary(main, adaptation, aggregate, improvement, thresholds_table, metric_of, normalised_families,
                   last_k, fraction)  # fmt: skip


# ---------------------------------------------------------------------------------------------- rendering


def _label(algorithm: str, kind: str) -> str:
    return f"{algorithm.removeprefix(REFERENCE_PREFIX)} (reference)" if kind == "reference" else algorithm


def _number(x: float, metric: str) -> str:
    if metric == "success":
        return f"{100 * x:.1f}%"
    return f"{x:.3g}" if abs(x) >= 100 else f"{x:.2f}"


def _interval(row: Mapping[str, Any], name: str, metric: str) -> str:
    value = row.get(name)
    if value is None or not np.isfinite(value):
        return "—"
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if low is None or not np.isfinite(low):
        return f"{_number(value, metric)} (n={int(row.get(f'{name}_runs', 1))})"
    return f"{_number(value, metric)} [{_number(low, metric)}, {_number(high, metric)}]"


def _steps(row: Mapping[str, Any]) -> str:
    runs = row.get("steps_runs")
    if runs is None or not np.isfinite(runs) or runs == 0:
        return "—"
    reached = int(row["steps_reached"])
    if reached == 0:
        return f"not reached (0/{int(runs)})"
    return f"{_eng(row['steps'])} ({reached}/{int(runs)})"


def _eng(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def main_cells(summary: Summary, order: Sequence[str] = (), family_order: Sequence[str] = ()) -> pd.DataFrame:
    """The main table as strings: one row per (family, algorithm); families in ``family_order``, learners
    (in ``order``) before references."""
    main = summary.main
    if main.empty:
        return pd.DataFrame(columns=["family", "algorithm", *MAIN_COLUMNS.values()])
    rank = {name: i for i, name in enumerate(order)}
    family_rank = {name: i for i, name in enumerate(family_order)}
    main = main.assign(_kind=main["kind"] != "learner", _rank=main["algorithm"].map(lambda a: rank.get(a, len(rank))),
                       _family=main["family"].map(lambda f: family_rank.get(f, len(family_rank))))  # fmt: skip
    main = main.sort_values(["_family", "family", "_kind", "_rank", "algorithm"])
    records = []
    for row in main.to_dict("records"):
        metric = row["metric"]
        records.append({
            "family": row["family"] + (" (success)" if metric == "success" else ""),
            "algorithm": _label(row["algorithm"], row["kind"]),
            MAIN_COLUMNS["asymptotic"]: _interval(row, "asymptotic", metric),
            MAIN_COLUMNS["auc"]: _interval(row, "auc", metric),
            MAIN_COLUMNS["steps"]: _steps(row) if row["kind"] == "learner" else "—",
            MAIN_COLUMNS["ood"]: _interval(row, "ood", metric),
            MAIN_COLUMNS["gap"]: _interval(row, "gap", metric),
            MAIN_COLUMNS["gain"]: _interval(row, "gain", metric),
            MAIN_COLUMNS["optimistic"]: _interval(row, "optimistic", metric),
        })  # fmt: skip
    cells = pd.DataFrame.from_records(records)
    # no family with an ood split, or with more than one episode per trial: drop the columns
    for column in (MAIN_COLUMNS["ood"], MAIN_COLUMNS["gap"], MAIN_COLUMNS["gain"]):
        if (cells[column] == "—").all():
            cells = cells.drop(columns=column)
    return cells


def provenance(meta: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """The line every table carries: seeds, spec hash and tasks hash."""
    seed_text = ", ".join(map(str, seeds)) or "none"
    return (f"seeds: {seed_text} · spec hash `{meta.get('spec_hash') or 'unknown'}` · "
            f"tasks hash `{meta.get('tasks_hash') or 'unknown'}`")  # fmt: skip


def main_caption(summary: Summary) -> str:
    return (
        f"Asymptotic: each run's mean score over its last {summary.last_k} evaluations; cells are the IQM over "
        "seeds [95% stratified-bootstrap CI]. AUC: the time-averaged score along the test curve (area / steps). "
        f"Steps to threshold: median env steps over the seeds that reach {summary.fraction:.0%} of the way from "
        "the random reference (or the untrained score) to the best algorithm's asymptote (reached/seeds). "
        "Ep 1 → last: each run's last-episode minus first-episode score at its final evaluation (the gain from "
        "adapting within the trial). Max over training selects on the evaluation data itself: optimistic."
    )


def markdown_table(cells: pd.DataFrame, left: int = 2) -> list[str]:
    """A markdown table of string cells (``|`` escaped), the first ``left`` columns left-aligned."""
    if cells.empty:
        return []
    columns = list(cells.columns)
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join([":---"] * left + ["---:"] * (len(columns) - left)) + "|"]
    for row in cells.itertuples(index=False):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return lines


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "−": "--", "—": "---", "→": r"$\rightarrow$", "≥": r"$\geq$", "·": r"$\cdot$", "`": ""}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(cells: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` environment of string cells (needs ``\\usepackage{booktabs}``)."""
    columns = list(cells.columns)
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\begin{tabular}{" + "ll" + "r" * (len(columns) - 2) + "}", r"\toprule",
        " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule",
    ]  # fmt: skip
    previous = None
    for row in cells.itertuples(index=False):
        values = [latex_escape(c) for c in row]
        if previous is not None and values[0] != previous:
            lines.append(r"\midrule")
        previous = values[0]
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(caption) + "}",
              r"\label{" + label + "}", r"\end{table}", ""]  # fmt: skip
    return "\n".join(lines)


def aggregate_cells(summary: Summary, order: Sequence[str] = ()) -> pd.DataFrame:
    """The aggregate table as strings: one row per algorithm (in ``order``), IQM and mean columns."""
    records = []
    names = list(dict.fromkeys(summary.aggregate["algorithm"]))
    for algorithm in [n for n in order if n in names] + sorted(n for n in names if n not in order):
        group = summary.aggregate[summary.aggregate["algorithm"] == algorithm]
        row: dict[str, str] = {"algorithm": str(algorithm), "runs": str(int(group["runs"].max()))}
        for stat in group.to_dict("records"):
            ok = np.isfinite(stat["low"])
            row[f"{'IQM' if stat['statistic'] == 'iqm' else 'mean'} normalised score"] = (
                f"{stat['estimate']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]" if ok else f"{stat['estimate']:.2f}"
            )
        records.append(row)
    return pd.DataFrame.from_records(records)


def write_csv(summary: Summary, meta: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """The summary's numbers as tidy CSV files, each row stamped with the spec and tasks hashes."""
    stamp = {"spec_hash": meta.get("spec_hash"), "tasks_hash": meta.get("tasks_hash")}
    paths = []
    for name in ("main", "adaptation", "aggregate", "improvement"):
        table: pd.DataFrame = getattr(summary, name)
        path = out_dir / f"{name}.csv"
        table.assign(**stamp).to_csv(path, index=False)
        paths.append(path)
    return paths
