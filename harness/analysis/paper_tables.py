"""The RL² paper's two tables (Duan et al. 2016, Tables 1 and 2) in its layout, from a suite's rows.

A family of a paper table (``bandit``, ``tabular_mdp``) is one *setting* of it: bandits by k arms and n
pulls, tabular MDPs by n episodes per trial. ``paper_tables`` gives, per table, one row per setting and one
column per reference and learner. The statistic is the report's headline one applied to the paper's
score: each run's mean over its last K evaluations of the **total reward of a trial** (summed over all its
episodes, as the paper reports it), averaged over the test tasks; then the IQM over seeds with a 95%
stratified-bootstrap CI (references are evaluated once per seed on the same trials).

``normalised_scores`` is the paper's normalisation: 0 = the random reference, 1 = Gittins (bandits) or
OPSRL (MDPs), each run's score mapped by its family's reference IQMs before the IQM over seeds;
``plot_normalised`` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context

from harness.analysis import metrics, plots
from harness.run.store import REFERENCE_PREFIX


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: the family it covers, the reference scoring 1, its column order."""

    family: str
    title: str
    normaliser: str
    columns: tuple[str, ...]


#: The RL² paper's tables, by family name. ``columns``: the references in the paper's order (then ours).
PAPER_TABLES: dict[str, PaperTable] = {
    "bandit": PaperTable(
        "bandit", "RL² paper, Table 1: Bernoulli bandits (k arms, n pulls), total reward of a trial", "gittins",
        ("random", "gittins", "bayes_optimal", "thompson", "ucb1", "ucb1_tuned", "epsilon_greedy", "greedy",
         "oracle"),
    ),
    "tabular_mdp": PaperTable(
        "tabular_mdp", "RL² paper, Table 2: random tabular MDPs (n episodes), total reward of a trial", "opsrl",
        ("random", "psrl", "opsrl", "ucrl2", "epsilon_greedy", "greedy", "oracle"),
    ),
}


def setting_label(name: str, params: Mapping[str, Any], episodes_per_trial: int | None) -> str:
    """``k=5, n=10`` for a bandit (n: pulls in the trial), ``n=10`` for a tabular MDP (episodes)."""
    episodes = int(episodes_per_trial or 1)
    if name == "bandit":
        return f"k={params.get('arms')}, n={episodes * int(params.get('pulls', 1))}"
    if name == "tabular_mdp":
        return f"n={episodes}"
    return name


def _estimates(runs: pd.DataFrame, reps: int) -> pd.DataFrame:
    return metrics.per_family_estimates(runs.assign(split="test"), reps=reps).drop(columns="split")


def trial_scores(rows: pd.DataFrame, families: Sequence[str], last_k: int) -> pd.DataFrame:
    """Each run's last-``last_k`` mean of its test trials' total reward, over ``families`` (ids)."""
    here = rows[rows["family"].isin(families) & (rows["split"] == "test")]
    if here.empty:
        return pd.DataFrame(columns=[*metrics.RUN_KEYS, "split", "score", "env_steps"])
    return metrics.asymptotic(metrics.run_scores(here, "return", "trial"), last_k)


def normalised_scores(runs: pd.DataFrame, normaliser: str, reps: int = metrics.BOOTSTRAP_REPS) -> pd.DataFrame:
    """Per (family, algorithm): IQM [CI] over seeds of each run's score with the family's random reference at 0
    and ``normaliser`` (a reference name) at 1. Families without both references are left out."""
    high = REFERENCE_PREFIX + normaliser
    scaled = metrics.normalised(runs, runs, metrics.RANDOM_REFERENCE, high)
    if scaled.empty:
        return pd.DataFrame(columns=["family", "kind", "algorithm", "estimate", "low", "high", "runs"])
    return _estimates(scaled, reps)


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "—"
    estimate, low, high = row["estimate"], row["low"], row["high"]
    digits = 1 if abs(estimate) >= 10 else 2
    if not np.isfinite(low) or low == high:
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def paper_cells(estimates: pd.DataFrame, table: PaperTable, settings: Mapping[str, str], learners: Sequence[str]
                ) -> pd.DataFrame:  # fmt: skip
    """The table as strings: one row per setting (family id, in ``settings``' order), the references in the
    paper's order (those present), then the learners in ``learners``' order."""
    present = set(estimates["algorithm"])
    references = [REFERENCE_PREFIX + name for name in table.columns if REFERENCE_PREFIX + name in present]
    references += sorted(a for a in present if a.startswith(REFERENCE_PREFIX) and a not in references)
    columns = [*references, *[a for a in learners if a in present]]
    by_key = {(r["family"], r["algorithm"]): r for r in estimates.to_dict("records")}
    records = []
    for family, label in settings.items():
        if not any((family, a) in by_key for a in columns):
            continue
        record = {"setting": label}
        for algorithm in columns:
            record[algorithm.removeprefix(REFERENCE_PREFIX)] = _cell(by_key.get((family, algorithm)))
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["setting", *(c.removeprefix(REFERENCE_PREFIX) for c in columns)])


@dataclass
class PaperResult:
    """A paper table computed from rows: ``scores`` and ``normalised`` are per (family, algorithm) estimates."""

    table: PaperTable
    settings: dict[str, str]
    scores: pd.DataFrame
    normalised: pd.DataFrame


def paper_tables(rows: pd.DataFrame, family_info: Mapping[str, Mapping[str, Any]], last_k: int,
                 reps: int = metrics.BOOTSTRAP_REPS) -> list[PaperResult]:  # fmt: skip
    """The paper tables that ``rows`` have settings for, in ``PAPER_TABLES`` order.

    Args:
        rows: the tidy results table.
        family_info: family id → ``{"name", "params", "episodes_per_trial"}`` (the suite's resolved spec), in
            the suite's order.
        last_k: evaluations averaged per run (the report's headline statistic).
    """
    results = []
    for name, table in PAPER_TABLES.items():
        settings = {family: setting_label(name, info.get("params", {}), info.get("episodes_per_trial"))
                    for family, info in family_info.items() if info.get("name") == name}  # fmt: skip
        runs = trial_scores(rows, list(settings), last_k)
        if runs.empty:
            continue
        results.append(PaperResult(table, settings, _estimates(runs, reps), normalised_scores(runs, table.normaliser,
                                                                                                  reps)))
    return results


def plot_normalised(result: PaperResult, path: str | Path, order: Sequence[str] = ()) -> Path | None:
    """One panel: per setting (x), each algorithm's normalised score (IQM and 95% CI) as a dot with error bars;
    0 (random) and 1 (the paper's normaliser) as horizontal lines instead of dots; the oracle only in the tables."""
    data = result.normalised
    # random and the normaliser are the lines at 0 and 1; the oracle, told the task, is not one of the paper's
    # columns and would squash the scale (it stays in the tables)
    shown = ~data["algorithm"].isin([metrics.RANDOM_REFERENCE, metrics.ORACLE_REFERENCE,
                                     REFERENCE_PREFIX + result.table.normaliser])
    data = data[shown]
    if data.empty:
        return None
    settings = [f for f in result.settings if f in set(data["family"])]
    names = plots.ordered(data["algorithm"], [*order, *(REFERENCE_PREFIX + c for c in result.table.columns)])
    learners = [n for n in names if not n.startswith(REFERENCE_PREFIX)]
    references = [n for n in names if n.startswith(REFERENCE_PREFIX)]
    palette = plots.colours([*learners, *references])
    markers = {name: ("o" if name in learners else "s^vD<>PX*"[i % 9]) for i, name in enumerate(references)}
    markers.update({name: "o" for name in learners})
    width = 0.8 / max(len(names), 1)
    normaliser = result.table.normaliser
    with rc_context(plots.STYLE):
        fig = plots.figure(3.2 + len(settings) * max(0.9, 0.13 * len(names)), 3.6)
        ax = fig.add_subplot()
        ax.axhline(0.0, color="0.5", lw=0.8, ls=(0, (3, 3)))
        ax.axhline(1.0, color="0.3", lw=0.8, ls=(0, (6, 3)))
        for j, name in enumerate(names):
            group = data[data["algorithm"] == name].set_index("family").reindex(settings)
            x = np.arange(len(settings)) + (j - (len(names) - 1) / 2) * width
            est = group["estimate"].to_numpy(float)
            err = plots.error_bars(est, group["low"].to_numpy(float), group["high"].to_numpy(float))
            label = name.removeprefix(REFERENCE_PREFIX) + (" (reference)" if name in references else "")
            ax.errorbar(x, est, yerr=err, fmt=markers[name], ms=5 if name in learners else 4, capsize=2, lw=1,
                        color=palette[name], mfc=palette[name] if name in learners else "white", label=label)
        ax.set_xticks(np.arange(len(settings)), [result.settings[f].replace(", ", "\n") for f in settings])
        ax.set_ylabel(f"normalised total reward\n(0 = random, 1 = {normaliser})")
        ax.set_title(f"{result.table.title.split(':')[0]}, normalised\nIQM over seeds and 95% CI")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
        fig.savefig(path)
    return Path(path)
