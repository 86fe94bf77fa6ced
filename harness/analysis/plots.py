"""Summary figures: OOD bars, adaptation curves, aggregate normalised scores, probability of improvement.

Each function takes a summary table (``harness.analysis.summary``), writes one PNG and returns its path, or
``None`` (writing nothing) when the table has nothing to draw. Colours follow the order of ``order`` so an
algorithm keeps its colour across every figure of a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.run.store import REFERENCE_PREFIX

# seaborn's colour-blind palette, reordered so the first four hues are far apart (its orange and
# vermilion, entries 1 and 3, are hard to tell apart side by side)
PALETTE = [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4, 3, 5, 6, 8, 9, 7)]
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
_METRIC_LABELS = {"return": "return", "success": "success rate"}
#: Reference levels: greys with dash patterns far apart (dashes, dots, dash-dot), never a learner's colour.
_REFERENCE_GREYS = ("0.1", "0.45", "0.3")
_REFERENCE_DASHES = ((0, (6, 3)), (0, (1.5, 1.5)), (0, (7, 2, 1.5, 2)), (0, (3, 3)))


def colours(order: Sequence[str]) -> dict[str, Any]:
    """One colour per algorithm, in ``order``."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}


def ordered(names: Sequence[str] | pd.Series, order: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(names))
    return [n for n in order if n in present] + sorted(n for n in present if n not in order)


def figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def error_bars(estimate: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``[2, n]`` non-negative error-bar lengths; zero where there is no interval (one seed)."""
    return np.nan_to_num(np.vstack([estimate - low, high - estimate]), nan=0.0).clip(min=0.0)


def plot_ood_bars(main: pd.DataFrame, path: str | Path, order: Sequence[str] = ()) -> Path | None:
    """Per family with an ood split: test vs OOD asymptotic IQM of each learner, with 95% bootstrap CIs, and
    each reference's level on both splits as a dashed segment across the bars (so that an OOD score can be
    read against what random, non-adaptive and oracle policies score on the same OOD tasks)."""
    data = main[(main["kind"] == "learner")].dropna(subset=["ood"]) if "ood" in main else main.iloc[0:0]
    if data.empty:
        return None
    references = main[(main["kind"] == "reference")].dropna(subset=["ood"])
    names = sorted(references["algorithm"].unique())
    greys = {name: (_REFERENCE_GREYS[i % len(_REFERENCE_GREYS)], _REFERENCE_DASHES[i % len(_REFERENCE_DASHES)])
             for i, name in enumerate(names)}  # fmt: skip
    families = sorted(data["family"].unique())
    learners = ordered(data["algorithm"], order)
    palette = colours(ordered([*order, *learners], order))
    with rc_context(STYLE):
        fig = figure(2.2 + 2.0 * len(families) + 0.25 * len(learners) * len(families), 3.2)
        axes = fig.subplots(1, len(families), squeeze=False)[0]
        width = 0.8 / len(learners)
        for ax, family in zip(axes, families, strict=True):
            here = data[data["family"] == family].set_index("algorithm")
            for i, algorithm in enumerate(learners):
                if algorithm not in here.index:
                    continue
                row = here.loc[algorithm]
                for j, split in enumerate(("asymptotic", "ood")):
                    value = np.array([row[split]])
                    err = error_bars(value, np.array([row[f"{split}_low"]]), np.array([row[f"{split}_high"]]))
                    ax.bar(j + (i - (len(learners) - 1) / 2) * width, value, width * 0.92, yerr=err, capsize=2,
                           color=palette[algorithm], alpha=1.0 if j == 0 else 0.55, edgecolor=palette[algorithm],
                           hatch=None if j == 0 else "//", label=algorithm if j == 0 else None)  # fmt: skip
            for name, row in references[references["family"] == family].set_index("algorithm").iterrows():
                grey, dashes = greys[str(name)]
                for j, split in enumerate(("asymptotic", "ood")):
                    ax.plot([j - 0.45, j + 0.45], [row[split]] * 2, color=grey, ls=dashes, lw=1.3,
                            label=f"{str(name).removeprefix(REFERENCE_PREFIX)} (reference)" if j == 0 else None)
            ax.set_xticks([0, 1], ["test", "OOD"])
            metric = str(here["metric"].iloc[0])
            ax.set_title(family)
            ax.set_ylabel(f"asymptotic {_METRIC_LABELS.get(metric, metric)} (IQM)")
            ax.axhline(0, color="0.3", lw=0.6)
            ax.grid(axis="y", alpha=0.3, lw=0.5)
        handles, labels = axes[0].get_legend_handles_labels()
        first = sorted(range(len(labels)), key=lambda i: labels[i].endswith("(reference)"))  # learners first
        fig.legend([handles[i] for i in first], [labels[i] for i in first], loc="outside right center",
                   frameon=False, fontsize=8, title="IQM ± 95% bootstrap CI", title_fontsize=8)  # fmt: skip
        fig.savefig(path, dpi=150)
    return Path(path)


def plot_adaptation(adaptation: pd.DataFrame, path: str | Path, order: Sequence[str] = ()) -> Path | None:
    """Score by episode index within the trial (final evaluation, test tasks), one panel per family."""
    if adaptation.empty:
        return None
    families = sorted(adaptation["family"].unique())
    learners = ordered(adaptation.loc[adaptation["kind"] == "learner", "algorithm"], order)
    palette = colours(ordered([*order, *learners], order))
    references = sorted(adaptation.loc[adaptation["kind"] == "reference", "algorithm"].unique())
    greys = {name: (str(0.15 + 0.5 * i / max(1, len(references) - 1)), (0, (1 + i, 2))) for i, name in
             enumerate(references)}  # fmt: skip
    with rc_context(STYLE):
        fig = figure(2.0 + 3.2 * len(families), 3.2)
        axes = fig.subplots(1, len(families), squeeze=False)[0]
        handles: dict[str, Any] = {}
        for ax, family in zip(axes, families, strict=True):
            here = adaptation[adaptation["family"] == family]
            for algorithm in [*learners, *references]:
                line = here[here["algorithm"] == algorithm].sort_values("episode_index")
                if line.empty:
                    continue
                x = line["episode_index"].to_numpy() + 1
                y = line["estimate"].to_numpy(float)
                err = error_bars(y, line["low"].to_numpy(float), line["high"].to_numpy(float))
                if algorithm in palette and algorithm in learners:
                    handles[algorithm] = ax.errorbar(x, y, yerr=err, marker="o", ms=3.5, capsize=2.5, lw=1.5,
                                                     color=palette[algorithm], label=algorithm)  # fmt: skip
                else:
                    grey, dashes = greys[algorithm]
                    (handles[algorithm],) = ax.plot(x, y, color=grey, ls=dashes, lw=1.2, marker=".",
                                                    label=f"{algorithm.removeprefix(REFERENCE_PREFIX)} (reference)")
            metric = str(here["metric"].iloc[0])
            ax.set_title(family)
            ax.set_xlabel("episode within the trial")
            ax.set_xticks(sorted(here["episode_index"].unique() + 1))
            ax.set_ylabel(f"{_METRIC_LABELS.get(metric, metric)} (test tasks, IQM)")
            ax.grid(alpha=0.3, lw=0.5)
        fig.legend(list(handles.values()), [h.get_label() for h in handles.values()], loc="outside right center",
                   frameon=False, fontsize=8, title="final evaluation\nIQM ± 95% bootstrap CI",
                   title_fontsize=8)  # fmt: skip
        fig.savefig(path, dpi=150)
    return Path(path)


def plot_aggregate(aggregate: pd.DataFrame, families: Sequence[str], path: str | Path,
                   order: Sequence[str] = ()) -> Path | None:  # fmt: skip
    """IQM and mean of normalised test scores across ``families`` per algorithm, with bootstrap CIs."""
    if aggregate.empty:
        return None
    learners = ordered(aggregate["algorithm"], order)
    palette = colours(ordered([*order, *learners], order))
    stats = [s for s in ("iqm", "mean") if (aggregate["statistic"] == s).any()]
    with rc_context(STYLE):
        fig = figure(2.2 + 2.6 * len(stats), 0.9 + 0.4 * len(learners))
        axes = fig.subplots(1, len(stats), sharey=True, squeeze=False)[0]
        for ax, stat in zip(axes, stats, strict=True):
            here = aggregate[aggregate["statistic"] == stat].set_index("algorithm")
            for i, algorithm in enumerate(learners):
                if algorithm not in here.index:
                    continue
                row = here.loc[algorithm]
                low, high = row["low"], row["high"]
                if np.isfinite(low):
                    ax.barh(i, high - low, left=low, height=0.6, color=palette[algorithm], alpha=0.75)
                ax.plot([row["estimate"]] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
            ax.set_yticks(range(len(learners)), learners)
            ax.invert_yaxis()
            # the scale's anchors in view (0 = random, 1 = oracle), so an estimate near one is not at the edge
            values = here[["low", "high", "estimate"]].to_numpy(float)
            values = values[np.isfinite(values)]
            ax.set_xlim(min(0.0, *values) - 0.05, max(1.0, *values) + 0.05)
            ax.axvline(0.0, color="0.5", lw=0.8, ls=(0, (3, 3)))
            ax.axvline(1.0, color="0.3", lw=0.8, ls=(0, (6, 3)))
            ax.set_title("IQM" if stat == "iqm" else "mean")
            ax.set_xlabel("normalised score (0 = random, 1 = oracle)")
            ax.grid(axis="x", alpha=0.3, lw=0.5)
        fig.suptitle(f"across {len(families)} famil{'y' if len(families) == 1 else 'ies'}: {', '.join(families)}"
                     " — 95% stratified bootstrap CIs", fontsize=8)  # fmt: skip
        fig.savefig(path, dpi=150)
    return Path(path)


def plot_improvement(improvement: pd.DataFrame, path: str | Path, order: Sequence[str] = ()) -> Path | None:
    """Matrix of P(row algorithm > column algorithm) over families, with its 95% bootstrap CI per cell."""
    if improvement.empty:
        return None
    names = ordered([*improvement["x"], *improvement["y"]], order)
    n = len(names)
    matrix = np.full((n, n), np.nan)
    text = [["" for _ in names] for _ in names]
    for row in improvement.to_dict("records"):
        i, j = names.index(row["x"]), names.index(row["y"])
        matrix[i, j] = row["probability"]
        interval = f"\n[{row['low']:.2f}, {row['high']:.2f}]" if np.isfinite(row["low"]) else ""
        text[i][j] = f"{row['probability']:.2f}{interval}"
    with rc_context(STYLE):
        size = 1.6 + 1.0 * n
        fig = figure(size + 1.0, size)
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="RdBu", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if text[i][j]:
                    dark = abs(matrix[i, j] - 0.5) > 0.3
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")  # fmt: skip
        ax.set_xticks(range(n), names, rotation=30, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("algorithm Y")
        ax.set_ylabel("algorithm X")
        ax.set_title("P(X > Y) over families")
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(image, ax=ax, shrink=0.8, label="probability of improvement")
        fig.savefig(path, dpi=150)
    return Path(path)
