"""Published reference numbers (DESIGN.md §10), kept in code with their provenance.

Reports draw them as labelled marks beside our results, always flagged **not protocol-matched**: they
come from other code, other environment versions and other evaluation protocols. Only numbers that a
paper prints in a table are here. The TrMRL paper publishes curves only; the RL² paper's bandit table
is not transcribed because the harness measures those baselines itself (Thompson sampling, UCB1,
Bayes-optimal) on the very same trials, which is the comparison that matters.
"""

from __future__ import annotations

from dataclasses import dataclass

YU_2019_ARXIV = (
    "Yu et al., Meta-World (revised arXiv version), Table: average maximum success rate over training, "
    "10 seeds, Meta-World v1 environments"
)
YU_2019_CORL = "Yu et al., Meta-World (CoRL 2019 version), Table: average maximum success rate over training"


@dataclass(frozen=True)
class Published:
    """One published number.

    Attributes:
        family: our task family it corresponds to.
        algorithm: our algorithm name.
        split: our split it corresponds to (Meta-World "meta-train" = our ``train`` split, the training
            classes; "meta-test" = our ``ood`` split, the held-out classes).
        metric: our metric name (``success`` as a rate in [0, 1]; ``return``).
        value: the number, in our metric's units.
        statistic: how it was aggregated (e.g. ``"max over training"``: optimistic).
        source: the citation and the table it is in.
        protocol: why it is not protocol-matched.
    """

    family: str
    algorithm: str
    split: str
    metric: str
    value: float
    statistic: str
    source: str
    protocol: str


_META_WORLD_PROTOCOL = (
    "Meta-World v1 environments and reward; today's v3 environments with reward v2 differ; maximum over "
    "training, not the final evaluation"
)


def _meta_world(family: str, table: dict[str, tuple[float, float]], source: str) -> list[Published]:
    out = []
    for algorithm, (meta_train, meta_test) in table.items():
        for split, percent in (("train", meta_train), ("ood", meta_test)):
            out.append(Published(family, algorithm, split, "success", percent / 100, "max over training", source,
                                 _META_WORLD_PROTOCOL))  # fmt: skip
    return out


#: Every published number the harness knows, DESIGN.md §10.
PUBLISHED: tuple[Published, ...] = (
    *_meta_world("metaworld_ml10", {"maml": (44.4, 31.6), "rl2": (86.9, 35.8), "pearl": (23.2, 13.0)}, YU_2019_ARXIV),
    *_meta_world("metaworld_ml45", {"maml": (40.7, 39.9), "rl2": (70.0, 33.3), "pearl": (14.5, 22.0)}, YU_2019_ARXIV),
    *_meta_world("metaworld_ml10", {"maml": (25.0, 36.0)}, YU_2019_CORL),
)


def published_for(family: str, metric: str | None = None) -> list[Published]:
    """The published numbers for a family name (optionally one metric)."""
    return [p for p in PUBLISHED if p.family == family and (metric is None or p.metric == metric)]
