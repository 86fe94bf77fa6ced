"""Metrics of DESIGN.md §7: pure functions over the tidy result table, nothing else.

Everything starts from ``run_scores``: a run's *score* at one evaluation on one split is the mean, over
the split's tasks, of a metric (return, or success for Meta-World) in one episode of each task's trial
(the last episode: post-adaptation; or the first). From those per-run curves:

- ``asymptotic``: the mean of a run's last ``last_k`` evaluations; ``max_over_training`` its best one
  (optimistic: the Meta-World paper's table uses it; label it where shown).
- ``normalised_auc``: the area under the run's score-vs-env-steps curve divided by the steps it spans,
  i.e. the time-averaged score, in the score's units (trapezoid rule).
- ``steps_to_threshold``: the env steps at which a run's curve first reaches a family's threshold:
  ``floor + fraction · (best − floor)``, with ``best`` the highest algorithm mean asymptote on that family and
  split, and ``floor`` the random reference's score where the suite has one, else the learners' mean
  score at their first (untrained) evaluation. With ``floor = 0`` this is "80% of the best asymptote";
  measuring from a floor keeps it meaningful for negative returns.
- ``ood_gap``: test − ood asymptote of each run.
- ``adaptation``: score by episode index within the trial at each run's final evaluation.
- ``normalised``: ``(score − random) / (oracle − random)`` per family, from the references evaluated in
  the same suite (0 = random policy, 1 = an oracle told the task).

Across seeds, ``interval_estimates`` gives IQM (or mean) with a 95% stratified bootstrap CI, and
``probability_of_improvement`` and ``performance_profiles`` compare algorithms over families, all
through rliable on ``runs × families`` matrices (``score_matrices``). rliable's bootstrap draws from
numpy's *global* generator (its ``random_state`` argument does not reach the resampling), so
``_global_numpy_seed`` seeds and then restores that state: a report is reproducible and leaves no trace.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

RUN_KEYS = ["kind", "algorithm", "family", "seed"]
EVAL_SPLITS = ("test", "ood", "train")
CONFIDENCE = 0.95
#: Bootstrap resamples: 2000 puts the 2.5% quantile's Monte-Carlo error well below the CI's width.
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0
RANDOM_REFERENCE, ORACLE_REFERENCE = "ref-random", "ref-oracle"

Episode = Literal["first", "last", "trial"]


# ---------------------------------------------------------------------------------------------- per run


def run_scores(rows: pd.DataFrame, metric: str = "return", episode: Episode = "last") -> pd.DataFrame:
    """Each run's score at each evaluation on each split (test, ood, train).

    Args:
        rows: the tidy results table (``SuiteDir.results``).
        metric: ``"return"`` or ``"success"`` (or any metric name in the rows).
        episode: which episode of each trial counts: ``"last"`` (post-adaptation) or ``"first"``; or
            ``"trial"``: the sum over all the trial's episodes (the RL² paper's total reward of a trial).

    Returns:
        One row per (kind, algorithm, family, seed, split, env_steps) with ``score``: the mean over
        the split's tasks of ``metric`` in the chosen episode of each task's trial (or summed over it).
    """
    if episode not in ("first", "last", "trial"):
        raise ValueError(f"episode must be 'first', 'last' or 'trial', got {episode!r}")
    data = rows[(rows["metric"] == metric) & rows["split"].isin(EVAL_SPLITS)]
    trial = [*RUN_KEYS, "split", "env_steps", "task_id"]
    if episode == "trial":
        totals = data.groupby(trial, as_index=False)["value"].sum()
        scores = totals.groupby([*RUN_KEYS, "split", "env_steps"], as_index=False)["value"].mean()
        return scores.rename(columns={"value": "score"})[[*RUN_KEYS, "split", "env_steps", "score"]]
    chosen_index = data.groupby(trial)["episode_index"].transform("max" if episode == "last" else "min")
    chosen = data[data["episode_index"] == chosen_index]
    scores = chosen.groupby([*RUN_KEYS, "split", "env_steps"], as_index=False)["value"].mean()
    return scores.rename(columns={"value": "score"})[[*RUN_KEYS, "split", "env_steps", "score"]]


def asymptotic(scores: pd.DataFrame, last_k: int = 3) -> pd.DataFrame:
    """The mean of each run's last ``last_k`` evaluations per split (fewer if it has fewer).

    Args:
        scores: ``run_scores`` output.
        last_k: evaluations averaged (DESIGN §7 "final-K"); 1 is the final evaluation alone.

    Returns:
        ``RUN_KEYS + [split, score, env_steps]``: ``env_steps`` is the run's final evaluation.
    """
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    keys = [*RUN_KEYS, "split"]
    tail = scores.sort_values([*keys, "env_steps"]).groupby(keys).tail(last_k)
    return tail.groupby(keys, as_index=False).agg(score=("score", "mean"), env_steps=("env_steps", "max"))


def max_over_training(scores: pd.DataFrame) -> pd.DataFrame:
    """Each run's best evaluation per split: optimistic (it selects on the evaluation data itself)."""
    keys = [*RUN_KEYS, "split"]
    return scores.groupby(keys, as_index=False).agg(score=("score", "max"), env_steps=("env_steps", "max"))


def normalised_auc(scores: pd.DataFrame) -> pd.DataFrame:
    """Area under each run's score-vs-env-steps curve over the steps it spans (trapezoid rule).

    The result is the time-averaged score, in the score's units: a run that learns sooner has a larger
    value at the same asymptote. Runs with one evaluation get that evaluation's score.
    """
    records = []
    for key, run in scores.groupby([*RUN_KEYS, "split"], sort=True):
        run = run.sort_values("env_steps")
        x, y = run["env_steps"].to_numpy(float), run["score"].to_numpy(float)
        span = x[-1] - x[0]
        value = float(np.trapezoid(y, x) / span) if span > 0 else float(y[-1])
        records.append((*key, value))
    return pd.DataFrame.from_records(records, columns=[*RUN_KEYS, "split", "score"])


def thresholds(
    scores: pd.DataFrame, asymptotes: pd.DataFrame, fraction: float = 0.8, floor_reference: str = RANDOM_REFERENCE
) -> pd.DataFrame:
    """Per (family, split): ``floor + fraction · (best − floor)`` (see the module docstring).

    Returns:
        Columns ``family, split, floor, best, threshold``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    learners = asymptotes[asymptotes["kind"] == "learner"]
    best = learners.groupby(["family", "split", "algorithm"])["score"].mean().groupby(["family", "split"]).max()
    refs = asymptotes[(asymptotes["kind"] == "reference") & (asymptotes["algorithm"] == floor_reference)]
    ref_floor = refs.groupby(["family", "split"])["score"].mean()
    learner_scores = scores[scores["kind"] == "learner"]
    untrained = learner_scores["env_steps"] == learner_scores.groupby(RUN_KEYS)["env_steps"].transform("min")
    first = learner_scores[untrained]
    initial_floor = first.groupby(["family", "split"])["score"].mean()
    table = best.rename("best").to_frame()
    table["floor"] = ref_floor.reindex(table.index).fillna(initial_floor.reindex(table.index))
    table["threshold"] = table["floor"] + fraction * (table["best"] - table["floor"])
    return table.reset_index()[["family", "split", "floor", "best", "threshold"]]


def steps_to_threshold(scores: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """The env steps at which each learner run's curve first reaches its family's threshold.

    Args:
        scores: ``run_scores`` output.
        levels: ``thresholds`` output.

    Returns:
        ``RUN_KEYS + [split, env_steps]``; ``env_steps`` is NaN where the run never reaches it.
    """
    merged = scores[scores["kind"] == "learner"].merge(levels[["family", "split", "threshold"]], on=["family", "split"])
    reached = merged[merged["score"] >= merged["threshold"]]
    first = reached.groupby([*RUN_KEYS, "split"])["env_steps"].min()
    runs = merged[[*RUN_KEYS, "split"]].drop_duplicates().set_index([*RUN_KEYS, "split"])
    runs["env_steps"] = first.reindex(runs.index).astype(float)
    return runs.reset_index()


def ood_gap(asymptotes: pd.DataFrame) -> pd.DataFrame:
    """``test − ood`` asymptote of every run that has both splits: ``RUN_KEYS + [gap]``."""
    wide = asymptotes.pivot_table(index=RUN_KEYS, columns="split", values="score")
    if not {"test", "ood"} <= set(wide.columns):
        return pd.DataFrame(columns=[*RUN_KEYS, "gap"])
    gap = (wide["test"] - wide["ood"]).dropna().rename("gap")
    return gap.reset_index()


def adaptation(rows: pd.DataFrame, metric: str = "return", split: str = "test") -> pd.DataFrame:
    """Score by episode index within the trial, at each run's final evaluation.

    Returns:
        ``RUN_KEYS + [episode_index, score]``: the mean over the split's tasks of ``metric`` in that
        episode of each trial.
    """
    data = rows[(rows["metric"] == metric) & (rows["split"] == split)]
    final = data["env_steps"] == data.groupby(RUN_KEYS)["env_steps"].transform("max")
    per_episode = data[final].groupby([*RUN_KEYS, "episode_index"], as_index=False)["value"].mean()
    return per_episode.rename(columns={"value": "score"})


def adaptation_gain(per_episode: pd.DataFrame) -> pd.DataFrame:
    """Per run: its last episode's score minus its first's (``adaptation``'s table, one final evaluation);
    empty when the trials have one episode.

    Returns:
        ``RUN_KEYS + [score]``.
    """
    if per_episode.empty or per_episode["episode_index"].nunique() < 2:
        return pd.DataFrame(columns=[*RUN_KEYS, "score"])
    ordered = per_episode.sort_values("episode_index").groupby(RUN_KEYS)["score"]
    return (ordered.last() - ordered.first()).reset_index()


def normalised(
    table: pd.DataFrame,
    references: pd.DataFrame,
    low: str = RANDOM_REFERENCE,
    high: str = ORACLE_REFERENCE,
    column: str = "score",
) -> pd.DataFrame:
    """``(x − low) / (high − low)`` per (family, split), from the references' mean scores.

    Args:
        table: any per-run table with ``family``, ``split`` and ``column``.
        references: per-run scores that include the ``low`` and ``high`` reference runs (e.g.
            ``asymptotic`` over the references).
        low, high: the reference names scoring 0 and 1.
        column: the column to normalise.

    Returns:
        ``table`` with ``column`` normalised; rows of families without both references (or where they
        tie) are dropped: they have no normalised score.
    """
    refs = references[references["kind"] == "reference"].groupby(["family", "split", "algorithm"])[column].mean()
    refs = refs.unstack("algorithm")
    if low not in refs.columns or high not in refs.columns:
        return table.iloc[0:0].copy()
    bounds = refs[[low, high]].dropna()
    bounds = bounds[bounds[high] != bounds[low]].rename(columns={low: "_low", high: "_high"})
    out = table.merge(bounds.reset_index(), on=["family", "split"], how="inner")
    out[column] = (out[column] - out["_low"]) / (out["_high"] - out["_low"])
    return out.drop(columns=["_low", "_high"])


# ---------------------------------------------------------------------------------------------- across seeds


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for rliable's bootstrap, then restore the caller's state."""
    state = np.random.get_state()  # noqa: NPY002 - rliable resamples with the legacy global generator
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all entries: rliable's ``aggregate_iqm`` (``scipy.stats.trim_mean(x, 0.25)``).

    Computed here with the same cut (``int(0.25 · n)`` entries dropped at each end) because the bootstrap
    calls it thousands of times and scipy's wrapper costs ~0.3 ms a call; a test checks they agree.
    """
    x = np.sort(np.asarray(scores, float), axis=None)
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def score_matrices(
    table: pd.DataFrame, families: Sequence[str] | None = None, column: str = "score"
) -> dict[str, np.ndarray]:
    """``algorithm → [runs, families]`` matrices for rliable, one column per family.

    A run is a seed; an algorithm's matrix holds the seeds present in every one of ``families``
    (default: the families where every algorithm has runs), so the bootstrap is stratified by family.
    """
    families = list(families) if families is not None else sorted(
        set.intersection(*(set(g["family"]) for _, g in table.groupby("algorithm"))) if not table.empty else []
    )
    matrices: dict[str, np.ndarray] = {}
    for algorithm, group in table[table["family"].isin(families)].groupby("algorithm", sort=False):
        wide = group.pivot_table(index="seed", columns="family", values=column).reindex(columns=families).dropna()
        if len(wide):
            matrices[str(algorithm)] = wide.to_numpy(float)
    return matrices


def interval_estimates(
    matrices: Mapping[str, np.ndarray],
    statistic: Literal["iqm", "mean"] = "iqm",
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Point estimate and stratified-bootstrap percentile CI (runs resampled within each family).

    Args:
        matrices: ``algorithm → [runs, families]`` scores.
        statistic: the aggregate, IQM (robust; Agarwal et al. 2021) or mean.
        reps: bootstrap resamples.
        seed: the bootstrap's seed: the same inputs always give the same interval.
        confidence: CI coverage.

    Returns:
        Columns ``algorithm, statistic, estimate, low, high, runs``. One run gives no interval (NaN).
    """
    from rliable import library as rly
    from rliable import metrics as rly_metrics

    aggregate = iqm if statistic == "iqm" else rly_metrics.aggregate_mean
    records = []
    for algorithm, scores in matrices.items():
        scores = np.asarray(scores, float)
        estimate = float(aggregate(scores))
        low = high = float("nan")
        if scores.shape[0] > 1:
            with _global_numpy_seed(seed), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # arch's deprecation notices about random_state
                _, cis = rly.get_interval_estimates(
                    {algorithm: scores}, lambda x: np.array([aggregate(x)]), reps=reps,
                    confidence_interval_size=confidence, random_state=np.random.RandomState(seed),
                )  # fmt: skip
            low, high = (float(v) for v in cis[algorithm][:, 0])
        records.append((algorithm, statistic, estimate, low, high, scores.shape[0]))
    return pd.DataFrame.from_records(records, columns=["algorithm", "statistic", "estimate", "low", "high", "runs"])


def improvement_probability(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): per family, the fraction of (run of X, run of Y) pairs where X scores higher, ties
    counting one half (the Mann-Whitney U over the product of run counts), averaged over families.

    Equal to rliable's ``probability_of_improvement`` (a test checks it) but vectorised: rliable calls
    scipy's ``mannwhitneyu`` per family, ~1 ms, thousands of times per bootstrap.

    Args:
        scores_x: ``[runs_x, families]``.
        scores_y: ``[runs_y, families]``.
    """
    x, y = np.asarray(scores_x, float)[:, None, :], np.asarray(scores_y, float)[None, :, :]
    return float(((x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))).mean())


def probability_of_improvement(
    matrices: Mapping[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """P(X > Y) (``improvement_probability``) for every ordered pair of algorithms, with a
    stratified-bootstrap CI (runs of X and of Y resampled independently within each family; rliable).

    Each unordered pair is bootstrapped once: P(Y > X) = 1 − P(X > Y), on the same resamples.

    Returns:
        Columns ``x, y, probability, low, high``.
    """
    from rliable import library as rly

    records = []
    names = list(matrices)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            a, b = np.asarray(matrices[x], float), np.asarray(matrices[y], float)
            point = improvement_probability(a, b)
            low = high = float("nan")
            if a.shape[0] > 1 and b.shape[0] > 1:
                with _global_numpy_seed(seed), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, cis = rly.get_interval_estimates(
                        {"pair": [a, b]}, lambda s1, s2: np.array([improvement_probability(s1, s2)]),
                        reps=reps, confidence_interval_size=confidence, random_state=np.random.RandomState(seed),
                    )  # fmt: skip
                low, high = (float(v) for v in cis["pair"][:, 0])
            records += [(x, y, point, low, high), (y, x, 1.0 - point, 1.0 - high, 1.0 - low)]
    return pd.DataFrame.from_records(records, columns=["x", "y", "probability", "low", "high"])


def performance_profiles(
    matrices: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> pd.DataFrame:
    """The fraction of (run, family) scores above each threshold τ, with bootstrap CIs (rliable).

    Returns:
        Columns ``algorithm, tau, fraction, low, high``.
    """
    from rliable import library as rly

    with _global_numpy_seed(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiles, cis = rly.create_performance_profile(dict(matrices), taus, reps=reps)
    records = []
    for algorithm in matrices:
        for i, tau in enumerate(taus):
            records.append((algorithm, float(tau), float(profiles[algorithm][i]), float(cis[algorithm][0, i]),
                            float(cis[algorithm][1, i])))  # fmt: skip
    return pd.DataFrame.from_records(records, columns=["algorithm", "tau", "fraction", "low", "high"])


def per_family_estimates(
    table: pd.DataFrame, column: str = "score", statistic: Literal["iqm", "mean"] = "iqm",
    reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """``interval_estimates`` across seeds for every (family, split, kind, algorithm) of a per-run table.

    Returns:
        Columns ``family, split, kind, algorithm, estimate, low, high, runs``.
    """
    records = []
    for (family, split, kind, algorithm), group in table.groupby(["family", "split", "kind", "algorithm"]):
        values = group[column].dropna().to_numpy(float)
        if values.size == 0:
            continue
        est = interval_estimates({str(algorithm): values[:, None]}, statistic, reps, seed).iloc[0]
        records.append((family, split, kind, algorithm, est["estimate"], est["low"], est["high"], int(est["runs"])))
    return pd.DataFrame.from_records(
        records, columns=["family", "split", "kind", "algorithm", "estimate", "low", "high", "runs"]
    )
