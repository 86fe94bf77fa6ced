"""Report: a suite's results as one markdown page of tables and plots (plus LaTeX and CSV tables).

Everything here is a pure function of the tidy rows (``SuiteDir.results``: one row per
measurement) and the run manifests; no number comes from anywhere else. The page opens with the
summary of ``harness.analysis.summary`` (main table of asymptotic score, sample efficiency and OOD as IQMs with
stratified-bootstrap CIs; OOD bars; adaptation curves; normalised aggregates and probability of
improvement), then one section per family with the definitions below:

- **Score** of a run at one evaluation on a split: the mean, over the split's tasks, of the return of
  the *last* episode of the trial (the post-adaptation return; for one-episode trials, the return).
  The *first-episode* score uses the trial's first episode instead; last − first measures adaptation
  (DESIGN §7). ``metric="success"`` gives a success rate the same way.
- **Final**: the run's last evaluation on that split (its largest ``env_steps``).
- **Across seeds**: mean ± the half-width of a 95% Student-t interval, ``t(0.975, n−1) · s / √n`` with
  ``s`` the sample standard deviation (ddof 1). One seed gives no interval; it is shown as ``n=1``.
- **Curves** align a run's seeds by evaluation number (the k-th evaluation of every seed), placed at the
  seeds' mean ``env_steps``: the harness evaluates when training passes a multiple of
  ``eval_every_env_steps``, so seeds whose episodes end early record slightly different step counts.
- **References** (``kind == "reference"``, e.g. ``ref-thompson``, evaluated once at env_steps 0 by the same
  protocol; a trained reference, ``ref-oracle`` or ``ref-multitask`` on MuJoCo families, at every evaluation
  of its training) are table rows after the learners and dashed horizontal lines in the plots (a trained
  reference's at its last evaluation).
- The ``training`` split (learner diagnostics) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from scipy import stats

from harness.analysis import plots
from harness.analysis.metrics import run_scores
from harness.analysis.paper_tables import paper_cells, paper_tables, plot_normalised
from harness.analysis.published import Published, published_for
from harness.analysis.summary import (
    Summary,
    aggregate_cells,
    latex_table,
    main_caption,
    main_cells,
    markdown_table,
    primary_metric,
    provenance,
    summarise,
    write_csv,
)
from harness.run.store import REFERENCE_PREFIX, RunStatus, SuiteDir

EVAL_SPLITS = ("test", "ood", "train")
CURVE_SPLITS = ("test", "ood")
RUN_KEYS = ["kind", "algorithm", "family", "seed"]
CONFIDENCE = 0.95
# fewer seeds than this gets a warning: few-run intervals are wide and rankings unstable (Agarwal et al. 2021)
MIN_SEEDS = 5

TABLE_COLUMNS = [
    "family", "kind", "algorithm", "n_seeds", "episodes_per_trial", "final_env_steps_min", "final_env_steps_max",
    *(f"{split}_{stat}" for split in EVAL_SPLITS for stat in ("mean", "ci", "n")),
    "test_first_mean", "test_first_ci", "test_gain_mean", "test_gain_ci",
]  # fmt: skip
_SPLIT_TITLES = {"test": "test tasks", "ood": "OOD tasks"}
_Y_LABELS = {"return": "return (last episode of trial)", "success": "success rate (last episode of trial)"}
_STEPS = EngFormatter(sep="")  # 200k, 1.2M
_PALETTE = plots.PALETTE
_REFERENCE_GREYS = ("0.1", "0.45", "0.3")
_REFERENCE_DASHES = ((0, (6, 3)), (0, (1.5, 1.5)), (0, (7, 2, 1.5, 2)), (0, (3, 3)), (0, (7, 2, 1.5, 2, 1.5, 2)))


# ---------------------------------------------------------------------------------------------- numbers


def t_half_width(std: Any, n: Any, confidence: float = CONFIDENCE) -> Any:
    """Half-width of the Student-t interval of a mean: ``t(q, n−1) · std / √n``; NaN where ``n < 2``.

    Args:
        std: sample standard deviation(s) (ddof 1); scalar or array.
        n: sample size(s), broadcastable with ``std``.
        confidence: two-sided coverage.
    """
    n = np.asarray(n, dtype=float)
    safe_n = np.maximum(n, 2.0)
    width = stats.t.ppf(0.5 + confidence / 2, safe_n - 1) * np.asarray(std, dtype=float) / np.sqrt(safe_n)
    return np.where(n >= 2, width, np.nan)


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """``(mean, t-interval half-width, n)`` of ``values``; ``(nan, nan, 0)`` when empty, ci NaN when n = 1."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    std = x.std(ddof=1) if x.size > 1 else float("nan")
    return float(x.mean()), float(t_half_width(std, x.size, confidence)), int(x.size)


def final_scores(
    rows: pd.DataFrame, metric: str = "return", episode: Literal["first", "last"] = "last"
) -> pd.DataFrame:
    """``run_scores`` at each run's last evaluation of each split (same columns)."""
    scores = run_scores(rows, metric, episode)
    last = scores.groupby([*RUN_KEYS, "split"])["env_steps"].transform("max")
    return scores[scores["env_steps"] == last].reset_index(drop=True)


def final_table(rows: pd.DataFrame, metric: str = "return") -> pd.DataFrame:
    """Final scores across seeds: one row per (family, algorithm), learners before references.

    Args:
        rows: the tidy results table.
        metric: the metric scored (see ``run_scores``).

    Returns:
        Columns ``TABLE_COLUMNS``: ``{test,ood,train}_{mean,ci,n}`` (last-episode final score: mean,
        t-CI half-width, number of seeds; ci NaN for one seed, mean NaN and n 0 for a missing split),
        ``n_seeds``, ``episodes_per_trial``, the range of the runs' final ``env_steps``, and where trials
        have more than one episode the final first-episode test score ``test_first_*`` and the per-seed
        gain last − first ``test_gain_*``.
    """
    last = final_scores(rows, metric, "last")
    first = final_scores(rows, metric, "first")
    paired = last.merge(first, on=[*RUN_KEYS, "split", "env_steps"], suffixes=("", "_first"))
    evaluated = rows[(rows["metric"] == metric) & rows["split"].isin(EVAL_SPLITS)]
    # per algorithm: an algorithm may run its paper's evaluation protocol (e.g. PEARL's 3-episode trials)
    trial_length = evaluated.groupby(["family", "kind", "algorithm"])["episode_index"].max() + 1

    records = []
    for (family, kind, algorithm), group in paired.groupby(["family", "kind", "algorithm"]):
        record: dict[str, Any] = {
            "family": family,
            "kind": kind,
            "algorithm": algorithm,
            "n_seeds": group["seed"].nunique(),
            "episodes_per_trial": int(trial_length[family, kind, algorithm]),
            "final_env_steps_min": int(group["env_steps"].min()),
            "final_env_steps_max": int(group["env_steps"].max()),
        }
        for split in EVAL_SPLITS:
            mean, ci, n = mean_ci(group.loc[group["split"] == split, "score"])
            record |= {f"{split}_mean": mean, f"{split}_ci": ci, f"{split}_n": n}
        test = group[group["split"] == "test"]
        if record["episodes_per_trial"] > 1:
            record["test_first_mean"], record["test_first_ci"], _ = mean_ci(test["score_first"])
            record["test_gain_mean"], record["test_gain_ci"], _ = mean_ci(test["score"] - test["score_first"])
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)
    return table.sort_values(["family", "kind", "algorithm"], ignore_index=True)  # "learner" < "reference"


def curve_table(rows: pd.DataFrame, metric: str = "return") -> pd.DataFrame:
    """Learning curves: last-episode score across seeds at each evaluation, for the test and ood splits.

    Returns:
        One row per (kind, algorithm, family, split, eval_index) with ``env_steps`` (mean over seeds),
        ``mean``, ``ci`` (t half-width, NaN for one seed) and ``n`` (seeds).
    """
    scores = run_scores(rows, metric, "last")
    scores = scores[scores["split"].isin(CURVE_SPLITS)].copy()
    scores["eval_index"] = scores.groupby([*RUN_KEYS, "split"])["env_steps"].rank(method="dense").astype(int) - 1
    keys = ["kind", "algorithm", "family", "split", "eval_index"]
    curves = scores.groupby(keys, as_index=False).agg(
        env_steps=("env_steps", "mean"), mean=("score", "mean"), std=("score", "std"), n=("score", "size")
    )
    curves["ci"] = t_half_width(curves["std"].fillna(0.0), curves["n"])
    return curves[[*keys, "env_steps", "mean", "ci", "n"]]


# ---------------------------------------------------------------------------------------------- plots


def _label(algorithm: str) -> str:
    return algorithm.removeprefix(REFERENCE_PREFIX)


def _log_steps(curves: pd.DataFrame) -> float | None:
    """The first evaluation's env steps (> 0) when some learner's curve ends at a tenth or less of the
    longest one's, else ``None`` (a linear axis)."""
    ends = curves.groupby("algorithm")["env_steps"].max()
    if len(ends) < 2 or ends.min() <= 0 or ends.max() < 10 * ends.min():
        return None
    return float(curves.loc[curves["env_steps"] > 0, "env_steps"].min())


def plot_curves(
    rows: pd.DataFrame,
    family: str,
    path: str | Path,
    metric: str | None = None,
    algorithms: Sequence[str] = (),
    references: Sequence[str] = (),
    published: Sequence[Published] = (),
    title: str | None = None,
) -> Path | None:
    """Write ``path`` (PNG): one panel per split among test/ood, mean over seeds with a 95% t-CI band.

    References are dashed horizontal lines at their mean score; a trained reference's line is at its last
    evaluation, and its training curve is drawn thinner in the same style (a peak before the end shows).
    Published numbers for a panel's split and metric are marks at the right edge in the algorithm's colour,
    labelled "not protocol-matched".
    When one learner's curve ends ten times earlier than another's (PEARL's runs are far shorter than the
    on-policy learners'), the env-steps axis is logarithmic beyond the first evaluation, as the PEARL
    paper draws its comparison, so that the short curve is not squeezed against the axis.
    Returns ``None`` (and writes nothing) when the family has no test or ood rows for ``metric``.

    Args:
        rows: the tidy results table (other families are ignored).
        family: the family id to plot.
        path: where the PNG goes.
        metric: default ``primary_metric(rows, family)``.
        algorithms: learner order for colours and legend (the suite's); pass the same list for every
            family so an algorithm keeps its colour across figures. Others follow, sorted.
        references: the same for the references' line styles (names as in the rows, ``ref-…``).
        published: published numbers to mark (``harness.analysis.published``).
        title: a line above the panels (e.g. the budget the runs reached).
    """
    metric = metric or primary_metric(rows, family)
    curves = curve_table(rows[rows["family"] == family], metric)
    splits = [s for s in CURVE_SPLITS if (curves["split"] == s).any()]
    if not splits:
        return None
    order = _ordered([*algorithms, *curves.loc[curves["kind"] == "learner", "algorithm"]], algorithms)
    colours = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(order)}
    learners = [a for a in order if ((curves["kind"] == "learner") & (curves["algorithm"] == a)).any()]
    present = curves.loc[curves["kind"] == "reference", "algorithm"]
    style = {a: i for i, a in enumerate(_ordered([*references, *present], references))}
    references = _ordered(present, list(style))
    seeds = curves[curves["kind"] == "learner"].groupby("algorithm")["n"].agg(["min", "max"])
    log_steps = _log_steps(curves[curves["kind"] == "learner"])
    handles: dict[str, Any] = {}  # algorithm → legend handle; one legend for all panels

    with rc_context({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}):
        fig = Figure(figsize=(4.6 * len(splits) + 1.9, 3.4), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
        for ax, split in zip(axes, splits, strict=True):
            here = curves[curves["split"] == split]
            for algorithm in learners:
                line = here[(here["algorithm"] == algorithm) & (here["kind"] == "learner")].sort_values("eval_index")
                if line.empty:
                    continue
                x, mean, ci = line["env_steps"].to_numpy(), line["mean"].to_numpy(), line["ci"].to_numpy()
                lo, hi = seeds.loc[algorithm]
                label = f"{algorithm} (n={hi})" if lo == hi else f"{algorithm} (n={lo}–{hi})"
                if len(line) == 1:  # a single evaluation: a marker with its interval, no line
                    handles[algorithm] = ax.errorbar(
                        x, mean, yerr=np.nan_to_num(ci), fmt="o", capsize=3, color=colours[algorithm], label=label
                    )
                    continue
                (handles[algorithm],) = ax.plot(x, mean, marker="o" if len(line) <= 20 else None, markersize=3,
                                                lw=1.6, color=colours[algorithm], label=label)  # fmt: skip
                if np.isfinite(ci).any():
                    low, high = mean - ci, mean + ci
                    if metric == "success":  # a rate's interval stops at its bounds
                        low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
                    ax.fill_between(x, low, high, color=colours[algorithm], alpha=0.2, lw=0)
            # references in greys with distinct dash patterns, so they never read as a learner's colour
            for algorithm in references:
                i = style[algorithm]
                grey = _REFERENCE_GREYS[i % len(_REFERENCE_GREYS)]
                dashes = _REFERENCE_DASHES[i % len(_REFERENCE_DASHES)]
                curve = here[(here["algorithm"] == algorithm) & (here["kind"] == "reference")].sort_values("eval_index")
                # a trained reference's (oracle, multitask) last evaluation; others have one
                level = curve.loc[curve["eval_index"] == curve["eval_index"].max(), "mean"]
                if level.empty:
                    continue
                handles[algorithm] = ax.axhline(level.mean(), color=grey, ls=dashes, lw=1.3,
                                                label=f"{_label(algorithm)} (reference)")  # fmt: skip
                if len(curve) > 1:  # a trained reference: its training curve too, so a peak or a drift shows
                    ax.plot(curve["env_steps"], curve["mean"], color=grey, ls=dashes, lw=0.9, alpha=0.7)
            for mark in (p for p in published if p.split == split and p.metric == metric):
                colour = colours.get(mark.algorithm, "0.2")
                ax.plot([1.0], [mark.value], marker="<", ms=7, color=colour, mec="k", mew=0.5, ls="none",
                        transform=ax.get_yaxis_transform(), clip_on=False)  # fmt: skip
                ax.annotate(f"{mark.algorithm} {_published_value(mark)} (published, not protocol-matched)",
                            (1.0, mark.value), xycoords=("axes fraction", "data"), xytext=(-8, 0),
                            textcoords="offset points", ha="right", va="center", fontsize=6.5, color=colour)
            ax.set_title(f"{family} — {_SPLIT_TITLES[split]}")
            if log_steps is not None:  # linear from 0 to the first evaluation, logarithmic beyond
                ax.set_xscale("symlog", linthresh=log_steps, linscale=0.5)
            ax.set_xlabel("environment steps" + (" (log scale)" if log_steps is not None else ""))
            ax.xaxis.set_major_formatter(_STEPS)
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3, lw=0.5)
        axes[0].set_ylabel(_Y_LABELS.get(metric, f"{metric} (last episode of trial)"))
        if title:
            fig.suptitle(title, fontsize=10)
        ordered = [handles[a] for a in [*learners, *references] if a in handles]
        fig.legend(ordered, [h.get_label() for h in ordered], loc="outside right center", frameon=False,
                   title="mean ± 95% CI over seeds", title_fontsize=8, fontsize=8)  # fmt: skip
        path = Path(path)
        fig.savefig(path, dpi=150)
    return path


# ---------------------------------------------------------------------------------------------- markdown


def _published_value(mark: Published) -> str:
    return f"{100 * mark.value:.1f}%" if mark.metric == "success" else f"{mark.value:.2f}"


def _published_lines(marks: Sequence[Published]) -> list[str]:
    if not marks:
        return []
    lines = ["Published numbers (**not protocol-matched**; drawn as ◀ marks on the curves):", "",
             "| algorithm | split | value | statistic | source | why not matched |", "|:---|:---|---:|:---|:---|:---|"]
    for mark in marks:
        lines.append(f"| {mark.algorithm} | {mark.split} | {_published_value(mark)} | {mark.statistic} | "
                     f"{_escape(mark.source)} | {_escape(mark.protocol)} |")
    return [*lines, ""]


def _cell(mean: float, ci: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "—"
    return f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} ± {ci:.2f}"


def _adaptation_cell(row: pd.Series) -> str:
    if row["episodes_per_trial"] <= 1 or row["test_n"] == 0:
        return "—"
    gain = f"{row.test_gain_mean:+.2f}" + (", n=1" if row["test_n"] == 1 else f" ± {row.test_gain_ci:.2f}")
    return f"{row.test_first_mean:.2f} → {row.test_mean:.2f} ({gain})"


def _steps_cell(row: pd.Series) -> str:
    if row["kind"] == "reference":
        return "—"
    # 3 significant digits: seeds that end a few steps apart (early terminations) read as one number
    lo, hi = (_STEPS(float(f"{row[key]:.3g}")) for key in ("final_env_steps_min", "final_env_steps_max"))
    return lo if lo == hi else f"{lo}–{hi}"


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _ordered(names: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """``names`` in the suite's order (``preferred``), then any others sorted."""
    names = set(names)
    return [n for n in preferred if n in names] + sorted(names - set(preferred))


def _run_name(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['algorithm']} / {manifest['family']} / seed {manifest['seed']}"


def _last_line(error: str | None) -> str:
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error recorded)"


def _header(rows: pd.DataFrame, manifests: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    commits = meta.get("commits") or ([meta["commit"]] if meta.get("commit") else [])
    seeds = sorted(rows.loc[rows["kind"] == "learner", "seed"].unique())
    seed_text = ", ".join(map(str, seeds)) or "none yet"
    if meta.get("seeds") and sorted(meta["seeds"]) != seeds:
        seed_text += f" (the suite lists {', '.join(map(str, sorted(meta['seeds'])))})"
    statuses = [m.get("status", "unknown") for m in manifests]
    counts = {s: statuses.count(s) for s in _ordered(statuses, (RunStatus.DONE, RunStatus.RUNNING, RunStatus.FAILED))}
    lines = [
        f"# {meta.get('suite', 'suite')} — results",
        "",
        f"- spec hash: `{meta.get('spec_hash') or 'unknown'}`",
        f"- tasks hash: `{meta.get('tasks_hash') or 'unknown'}`",
        f"- commit{'s' if len(commits) > 1 else ''}: " + (", ".join(f"`{c}`" for c in commits) or "unknown"),
        f"- seeds: {seed_text}",
        f"- runs: {len(manifests)} (" + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none") + ")",
        "",
    ]
    if len(commits) > 1:
        lines += [f"> ⚠ runs come from {len(commits)} different commits.", ""]
    lines += _provenance(manifests)
    for key in ("spec_hash", "tasks_hash"):
        odd = [m for m in manifests if meta.get(key) and m.get(key) and m[key] != meta[key]]
        if odd:
            names = "; ".join(f"{_run_name(m)} (`{m[key]}`)" for m in odd)
            lines += [f"> ⚠ {len(odd)} run(s) have a {key.replace('_', ' ')} other than the suite's: {names}.", ""]
    imported = [m for m in manifests if m.get("source") == "imported"]
    if imported:
        names = "; ".join(f"{_run_name(m)} (`{m.get('imported_from', '?')}`)" for m in imported)
        lines += [f"> ⓘ {len(imported)} run(s) imported from legacy garage logs (their own tasks and protocol; "
                  f"test rows are garage's meta-test averages): {_escape(names)}.", ""]
    failed = [m for m in manifests if m.get("status") == RunStatus.FAILED]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- {_escape(_run_name(m))}: `{_last_line(m.get('error'))}`" for m in failed]
        lines.append("")
    return lines


def _provenance(manifests: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where runs came from, when not from one clean run of this spec: the runs ``harness reuse`` kept from an
    earlier spec (their inputs unchanged), and the runs recorded on a working tree with uncommitted changes."""
    lines = []
    reused = [m for m in manifests if m.get("reused_from")]
    if reused:
        specs = sorted({str(m["reused_from"].get("spec_hash")) for m in reused})
        lines += [f"> ⓘ {len(reused)} of {len(manifests)} runs were kept by `harness reuse` from earlier spec(s) "
                  + ", ".join(f"`{h}`" for h in specs) + " whose inputs for them were the same (each manifest's "
                  "`reused_from`).", ""]  # fmt: skip
    dirty = [m for m in manifests if str(m.get("commit") or "").endswith("+dirty")]
    if dirty:
        names = "; ".join(_run_name(m) for m in dirty)
        lines += [f"> ⚠ {len(dirty)} run(s) ran on a working tree with uncommitted changes (`+dirty`): "
                  f"{_escape(names)}.", ""]  # fmt: skip
    return lines


def _markdown_table(tables: Mapping[str, pd.DataFrame], primary: str, algorithms: Sequence[str]) -> list[str]:
    """Rows: learners (suite order) then references; columns: final score per metric and split present,
    adaptation (``primary`` metric) where trials have more than one episode, seeds, final env steps."""
    table = tables["return"]
    columns: dict[str, list[str]] = {"algorithm": []}
    for metric, t in tables.items():
        columns |= {f"final {split} {metric}": [] for split in EVAL_SPLITS if (t[f"{split}_n"] > 0).any()}
    adaptation = "test ep 1 → last" if primary == "return" else f"test {primary} ep 1 → last"
    if (table["episodes_per_trial"] > 1).any():
        columns[adaptation] = []
    columns["seeds"], columns["env steps"] = [], []
    learners = _ordered(table.loc[table["kind"] == "learner", "algorithm"], algorithms)
    references = sorted(table.loc[table["kind"] == "reference", "algorithm"])
    by_metric = {metric: t.set_index("algorithm") for metric, t in tables.items()}
    for algorithm in [*learners, *references]:
        row = by_metric["return"].loc[algorithm]
        columns["algorithm"].append(f"{_label(algorithm)} (reference)" if row["kind"] == "reference" else algorithm)
        for metric, t in by_metric.items():
            r = t.loc[algorithm] if algorithm in t.index else None
            for split in EVAL_SPLITS:
                if f"final {split} {metric}" in columns:
                    cell = "—" if r is None else _cell(r[f"{split}_mean"], r[f"{split}_ci"], r[f"{split}_n"])
                    columns[f"final {split} {metric}"].append(cell)
        if adaptation in columns:
            r = by_metric[primary].loc[algorithm] if algorithm in by_metric[primary].index else None
            columns[adaptation].append("—" if r is None else _adaptation_cell(r))
        columns["seeds"].append(str(row["n_seeds"]))
        columns["env steps"].append(_steps_cell(row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|"]
    for i in range(len(columns["algorithm"])):
        lines.append("| " + " | ".join(_escape(cells[i]) for cells in columns.values()) + " |")
    return [*lines, ""]


def _family_section(
    rows: pd.DataFrame,
    family: str,
    manifests: Sequence[Mapping[str, Any]],
    order: tuple[Sequence[str], Sequence[str]],
    out_dir: Path,
    shared_test_families: Sequence[str] = (),
    published: Sequence[Published] = (),
) -> list[str]:
    lines = [f"### {family}", ""]
    if family in shared_test_families:
        lines += ["> ⚠ test tasks coincide with training tasks: this family has too few distinct tasks for a "
                  "disjoint test split (as in every published code), so its test scores measure training tasks.", ""]
    here = rows[rows["family"] == family]
    run_keys = set(here[["algorithm", "seed"]].drop_duplicates().itertuples(index=False, name=None))
    missing = [m for m in manifests if m["family"] == family and (m["algorithm"], m["seed"]) not in run_keys]
    primary = primary_metric(here, family)
    tables = {metric: final_table(here, metric) for metric in dict.fromkeys(["return", primary])}
    if tables["return"].empty:
        lines += ["No evaluation rows yet.", ""]
    else:
        lines += _markdown_table(tables, primary, order[0])
        learner_seeds = tables["return"].loc[tables["return"]["kind"] == "learner", "n_seeds"]
        if not learner_seeds.empty and learner_seeds.min() < MIN_SEEDS:
            lines += [
                (
                    f"> ⚠ fewer than {MIN_SEEDS} seeds (as few as {learner_seeds.min()}): the intervals are wide "
                    "and rankings may not hold up."
                ),
                "",
            ]
    if missing:
        names = ", ".join(f"{m['algorithm']} seed {m['seed']} ({m.get('status', 'unknown')})" for m in missing)
        lines += [f"Runs with no evaluation rows yet (not in the table or plot): {_escape(names)}.", ""]
    filename = "curves_" + re.sub(r"[^A-Za-z0-9_.-]", "_", family) + ".png"
    marks = [p for p in published if p.metric == primary]
    if plot_curves(here, family, out_dir / filename, primary, *order, marks) is not None:
        what = "success rate" if primary == "success" else "return"
        lines += [f"![{family}: {what} of the last episode of the trial vs environment steps]({filename})", ""]
    return lines + _published_lines(marks)


def _summary_section(summary: Summary, meta: Mapping[str, Any], seeds: Sequence[int], learners: Sequence[str],
                     families: Sequence[str], out_dir: Path) -> list[str]:  # fmt: skip
    """The main table and the cross-family figures (``harness.analysis.summary``, ``harness.analysis.plots``)."""
    cells = main_cells(summary, learners, families)
    if cells.empty:
        return []
    lines = ["## Summary", "", *markdown_table(cells), "", f"{provenance(meta, seeds)}. {main_caption(summary)}", ""]
    if plots.plot_ood_bars(summary.main, out_dir / "ood.png", learners) is not None:
        lines += ["![asymptotic test vs OOD score per family, IQM and 95% bootstrap CI](ood.png)", ""]
    if plots.plot_adaptation(summary.adaptation, out_dir / "adaptation.png", learners) is not None:
        lines += ["Adaptation: the score of each episode within the trial at the final evaluation.", "",
                  "![score by episode within the trial](adaptation.png)", ""]
    if summary.aggregate.empty:
        lines += ["No aggregate across families: normalised scores need the `random` and `oracle` references "
                  "(`references: true` and families that have both).", ""]
    else:
        families = ", ".join(summary.normalised_families)
        lines += ["### Across families", "",
                  f"Normalised test score per run (0 = random reference, 1 = oracle reference) over {families}; "
                  "IQM and mean over runs × families with 95% stratified-bootstrap CIs (rliable).", "",
                  *markdown_table(aggregate_cells(summary, learners)), "", provenance(meta, seeds), ""]  # fmt: skip
        if plots.plot_aggregate(summary.aggregate, summary.normalised_families, out_dir / "aggregate.png",
                                learners) is not None:  # fmt: skip
            lines += ["![IQM and mean normalised score across families](aggregate.png)", ""]
        if plots.plot_improvement(summary.improvement, out_dir / "improvement.png", learners) is not None:
            lines += ["![probability of improvement between every pair of algorithms](improvement.png)", ""]
    return lines


def _paper_section(rows: pd.DataFrame, summary: Summary, meta: Mapping[str, Any], seeds: Sequence[int],
                   learners: Sequence[str], out_dir: Path) -> list[str]:  # fmt: skip
    """The RL² paper's tables in its layout, and its normalisation as a figure (``harness.analysis.paper_tables``),
    for the families that are settings of them."""
    lines: list[str] = []
    for result in paper_tables(rows, meta.get("family_info", {}), summary.last_k):
        table = result.table
        lines += [f"## {table.title}", "",
                  f"Each run's mean over its last {summary.last_k} evaluations of the total reward of a test trial "
                  "(summed over its episodes, as the paper reports it); cells are the IQM over seeds [95% "
                  "stratified-bootstrap CI]. References were evaluated by the harness on the same trials.", "",
                  *markdown_table(paper_cells(result.scores, table, result.settings, learners), left=1), "",
                  provenance(meta, seeds), ""]  # fmt: skip
        normalised = paper_cells(result.normalised, table, result.settings, learners)
        if not normalised.empty:
            lines += [f"Normalised as in the paper (0 = random, 1 = {table.normaliser}):", "",
                      *markdown_table(normalised, left=1), ""]  # fmt: skip
        filename = f"paper_{table.family}.png"
        if plot_normalised(result, out_dir / filename, learners) is not None:
            lines += [f"![{table.family}: normalised total reward per setting]({filename})", ""]
    return lines


FORMATS = ("md", "latex", "csv")
_PER_FAMILY_NOTE = (
    "A different statistic from the summary's: the **final** score, each run's last evaluation alone (the "
    "summary's *asymptotic* score is the IQM over seeds of each run's mean over its last evaluations, with a "
    "bootstrap CI). Final score: the mean over a split's tasks of the return (success rate where the family "
    "records success) of the **last episode of each trial**, at each run's final evaluation; cells are "
    "mean ± 95% Student-t half-width over seeds (`n=1`: one seed, no interval). `test ep 1 → last`: final "
    "first- and last-episode test score, and their per-seed difference. `env steps`: the runs' final evaluation."
)


def write_report(
    rows: pd.DataFrame,
    manifests: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    out_dir: str | Path,
    formats: Sequence[str] = ("md",),
) -> Path:
    """Write the report into ``out_dir``: ``report.md`` and its PNGs; ``tables.tex``; CSV tables.

    Args:
        rows: the tidy results table (``SuiteDir.results``).
        manifests: run manifests (``SuiteDir.manifests``): algorithm, family, seed, kind, status, error,
            spec_hash, tasks_hash, commit.
        meta: ``suite`` (name), ``spec_hash``, ``tasks_hash``, ``commits`` (list; or ``commit``), and
            optionally ``seeds``, ``families`` and ``algorithms`` (the suite's order, used for sorting),
            ``test_is_train`` (families whose test tasks coincide with training tasks) and
            ``family_names`` (family id → family name, to find published numbers).
        out_dir: created if missing.
        formats: any of ``FORMATS``: ``md`` (markdown with embedded PNGs), ``latex`` (``tables.tex``:
            booktabs tables), ``csv`` (``main.csv``, ``adaptation.csv``, ``aggregate.csv``,
            ``improvement.csv``, ``final.csv``).

    Returns:
        The path of ``report.md`` if written, else of the first file written.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats: unknown {unknown or 'none given'}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluated = rows[rows["split"].isin(EVAL_SPLITS)]
    families = _ordered({*evaluated["family"], *(m["family"] for m in manifests)}, meta.get("families", ()))
    # one order, colour and line style per algorithm and reference across all families
    learners = _ordered(evaluated.loc[evaluated["kind"] == "learner", "algorithm"], meta.get("algorithms", ()))
    references = sorted(evaluated.loc[evaluated["kind"] == "reference", "algorithm"].unique())
    seeds = sorted(int(s) for s in evaluated.loc[evaluated["kind"] == "learner", "seed"].unique())
    summary = summarise(evaluated) if not evaluated.empty else None
    names = meta.get("family_names", {})
    written: list[Path] = []

    if "md" in formats:
        lines = _header(evaluated, manifests, meta)
        if evaluated.empty:
            lines += ["No evaluation rows yet.", ""]
        if summary is not None:
            lines += _summary_section(summary, meta, seeds, learners, families, out_dir)
        if summary is not None:
            lines += _paper_section(evaluated, summary, meta, seeds, learners, out_dir)
        lines += ["## Per family: final score (last evaluation, mean ± t-interval)", "", _PER_FAMILY_NOTE, ""]
        for family in families:
            lines += _family_section(evaluated, family, manifests, (learners, references), out_dir,
                                     meta.get("test_is_train", ()), published_for(names.get(family, family)))
        path = out_dir / "report.md"
        path.write_text("\n".join(lines).rstrip() + "\n")
        written.append(path)
    if "latex" in formats:
        suite = meta.get("suite", "suite")
        tex = [f"% {suite}: generated by `python -m harness report`; needs \\usepackage{{booktabs}}"]
        if summary is not None:
            caption = f"{meta.get('suite', 'suite')}: {provenance(meta, seeds)}. {main_caption(summary)}"
            tex.append(latex_table(main_cells(summary, learners, families), caption, "tab:main"))
            if not summary.aggregate.empty:
                tex.append(latex_table(aggregate_cells(summary, learners).rename(columns={"runs": "seeds"}),
                                       f"Normalised test score over {', '.join(summary.normalised_families)} "
                                       f"(0 = random, 1 = oracle). {provenance(meta, seeds)}", "tab:aggregate"))
        path = out_dir / "tables.tex"
        path.write_text("\n".join(tex) + "\n")
        written.append(path)
    if "csv" in formats:
        if summary is not None:
            written += write_csv(summary, meta, out_dir)
            for result in paper_tables(evaluated, meta.get("family_info", {}), summary.last_k):
                path = out_dir / f"paper_{result.table.family}.csv"
                merged = result.scores.merge(result.normalised, on=["family", "kind", "algorithm"], how="left",
                                             suffixes=("", "_normalised"))
                merged.insert(1, "setting", merged["family"].map(result.settings))
                merged.assign(spec_hash=meta.get("spec_hash"), tasks_hash=meta.get("tasks_hash")).to_csv(
                    path, index=False)
                written.append(path)
        final = pd.concat([final_table(evaluated[evaluated["family"] == f]) for f in families], ignore_index=True) \
            if not evaluated.empty else pd.DataFrame(columns=TABLE_COLUMNS)
        path = out_dir / "final.csv"
        final.assign(spec_hash=meta.get("spec_hash"), tasks_hash=meta.get("tasks_hash")).to_csv(path, index=False)
        written.append(path)
    return written[0]


def read_meta(results_dir: str | Path) -> dict[str, Any]:
    """``suite``, ``spec_hash``, ``seeds``, ``families``, ``algorithms`` from ``suite.yaml``; ``tasks_hash`` from
    ``tasks.json``."""
    results_dir = Path(results_dir)
    suite_dir = SuiteDir(results_dir)
    for path in (suite_dir.suite_path, suite_dir.tasks_path):
        if not path.is_file():
            raise FileNotFoundError(f"{results_dir}: no {path.name}; is this a results directory (results/<suite>)?")
    spec, tasks = suite_dir.resolved_spec(), suite_dir.tasks()
    return {
        "suite": spec.get("name", results_dir.name),
        "spec_hash": suite_dir.spec_hash(),
        "tasks_hash": tasks.get("hash"),
        "seeds": spec.get("seeds", []),
        "families": [f.get("id") or f.get("name") for f in spec.get("families", [])],
        "algorithms": [a.get("id") or a.get("name") for a in spec.get("algorithms", [])],
        "test_is_train": [key for key, family in tasks.get("families", {}).items()
                          if family.get("test_coincides_with_train")],
        "family_names": {key: family.get("family", key) for key, family in tasks.get("families", {}).items()},
        "family_info": {f.get("id") or f.get("name"): {"name": f.get("name"), "params": f.get("params") or {},
                                                       "episodes_per_trial": f.get("episodes_per_trial")}
                        for f in spec.get("families", [])},
    }


def report(results_dir: str | Path, out_dir: str | Path | None = None, formats: Sequence[str] = ("md",)) -> Path:
    """Report on ``results/<suite>``: writes into ``out_dir`` (default ``results_dir/report``)."""
    results_dir = Path(results_dir)
    meta = read_meta(results_dir)
    manifests = SuiteDir(results_dir).manifests()
    meta["commits"] = sorted({m["commit"] for m in manifests if m.get("commit")})
    return write_report(SuiteDir(results_dir).results(), manifests, meta, out_dir or results_dir / "report", formats)
