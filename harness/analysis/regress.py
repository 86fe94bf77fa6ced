"""Regression against committed reference results: ``python -m harness regress SUITE --against DIR``.

The suite is run afresh into a scratch directory and, for every learner run key (algorithm id, family
id), each checked metric is compared with the reference results (``results/reference/<suite>``, small
and committed):

- the metrics: the asymptotic test score (IQM over seeds of each run's mean of its last evaluations,
  ``harness.analysis.metrics``), the normalised AUC of the test curve, and the asymptotic OOD score where the
  family has an ood split;
- the band: the reference's 95% stratified-bootstrap interval of that IQM, widened on each side by
  ``margin`` × the reference's *learning progress* on the metric (|asymptote − untrained score|). The
  widening keeps CI green across the floating-point differences of another CPU, which change a run's
  trajectory but not what it learns; a learner that stops learning (e.g. learning rate 0) stays at its
  untrained score, a whole progress away from the band, and fails.

A candidate IQM outside its band fails (both directions: a learner that improves must have its
reference updated, ``--update``, in the same change), as does a failed run, a run key missing on either
side, or a task split whose hash differs from the reference's (the comparison would be meaningless).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis import metrics
from harness.analysis.summary import LAST_K, primary_metric
from harness.run.store import RunStatus, SuiteDir

DEFAULT_MARGIN = 0.25
CHECKS = ("asymptotic test", "AUC test", "asymptotic ood")


@dataclass
class Regression:
    """The comparison table and whether it passes."""

    table: pd.DataFrame  # algorithm, family, check, reference, low, high, candidate, status
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and bool((self.table["status"] == "ok").all())


def _run_values(rows: pd.DataFrame, last_k: int) -> pd.DataFrame:
    """Per learner run and check: its value, and its untrained (first-evaluation) value."""
    out = []
    for family in rows["family"].unique():
        here = rows[rows["family"] == family]
        scores = metrics.run_scores(here, primary_metric(here, family))
        scores = scores[scores["kind"] == "learner"]
        if scores.empty:
            continue
        first = scores[scores["env_steps"] == scores.groupby(metrics.RUN_KEYS)["env_steps"].transform("min")]
        first = first.set_index([*metrics.RUN_KEYS, "split"])["score"]
        asym = metrics.asymptotic(scores, last_k)
        auc = metrics.normalised_auc(scores)
        for check, table, split in (("asymptotic test", asym, "test"), ("AUC test", auc, "test"),
                                    ("asymptotic ood", asym, "ood")):  # fmt: skip
            part = table[table["split"] == split].copy()
            if part.empty:
                continue
            part["untrained"] = first.reindex(part.set_index([*metrics.RUN_KEYS, "split"]).index).to_numpy()
            out.append(part.assign(check=check)[["algorithm", "family", "seed", "check", "score", "untrained"]])
    columns = ["algorithm", "family", "seed", "check", "score", "untrained"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def compare(
    candidate_dir: str | Path, reference_dir: str | Path, margin: float = DEFAULT_MARGIN, last_k: int = LAST_K
) -> Regression:
    """Compare two results directories of the same suite (see the module docstring)."""
    candidate_dir, reference_dir = Path(candidate_dir), Path(reference_dir)
    problems = []
    hashes = [SuiteDir(d).tasks_hash() for d in (reference_dir, candidate_dir)]
    if hashes[0] != hashes[1]:
        problems.append(f"task splits differ: reference tasks hash {hashes[0]}, candidate {hashes[1]}")
    for manifest in SuiteDir(candidate_dir).manifests():
        if manifest.get("status") != RunStatus.DONE:
            error = (manifest.get("error") or "").strip().splitlines()
            problems.append(f"run {manifest['algorithm']}/{manifest['family']}/seed={manifest['seed']} is "
                            f"{manifest.get('status')}" + (f": {error[-1]}" if error else ""))  # fmt: skip
    reference = _run_values(SuiteDir(reference_dir).results(), last_k)
    candidate = _run_values(SuiteDir(candidate_dir).results(), last_k)
    records = []
    keys = ["algorithm", "family", "check"]
    ref_groups = dict(list(reference.groupby(keys)))
    cand_groups = dict(list(candidate.groupby(keys)))
    for key in sorted(set(ref_groups) | set(cand_groups)):
        ref, cand = ref_groups.get(key), cand_groups.get(key)
        record = dict(zip(keys, key, strict=True))
        if ref is None or cand is None:
            records.append({**record, "reference": np.nan, "low": np.nan, "high": np.nan, "candidate": np.nan,
                            "status": "missing in reference" if ref is None else "missing in candidate"})
            continue
        est = metrics.interval_estimates({"r": ref["score"].to_numpy(float)[:, None]}).iloc[0]
        low = est["low"] if np.isfinite(est["low"]) else est["estimate"]
        high = est["high"] if np.isfinite(est["high"]) else est["estimate"]
        progress = abs(est["estimate"] - metrics.iqm(ref["untrained"].to_numpy(float)))
        low, high = low - margin * progress, high + margin * progress
        value = metrics.iqm(cand["score"].to_numpy(float))
        status = "ok" if low <= value <= high else ("below band" if value < low else "above band")
        records.append({**record, "reference": est["estimate"], "low": low, "high": high, "candidate": value,
                        "status": status})  # fmt: skip
    columns = [*keys, "reference", "low", "high", "candidate", "status"]
    return Regression(pd.DataFrame.from_records(records, columns=columns), problems)


def format_table(result: Regression) -> str:
    """The comparison as an aligned text table, failures marked, then any problems."""
    table = result.table.copy()
    for column in ("reference", "low", "high", "candidate"):
        table[column] = table[column].map(lambda v: "—" if not np.isfinite(v) else f"{v:.3f}")
    table["status"] = table["status"].map(lambda s: s if s == "ok" else f"FAIL {s}")
    text = table.to_string(index=False) if len(table) else "(no learner results to compare)"
    if result.problems:
        text += "\n" + "\n".join(f"FAIL {p}" for p in result.problems)
    return text
