"""Reference computations that tests and benchmarks compare the learners' fast paths with.

``UncachedSliding`` recomputes TrMRL's sliding-window attention from each memory span's tokens at every
step: what ``algorithms.trmrl_net.SlidingCache`` must equal, and the baseline its speed is measured
against (``harness bench``'s ``trmrl_cache``, ``benchmarks/test_trmrl_throughput.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from algorithms.trmrl_net import TrMRLNet


class UncachedSliding:
    """Sliding attention recomputed from each span's token history every step (the cache's reference)."""

    def __init__(self, net: TrMRLNet) -> None:
        self.net = net
        cfg = net.config
        self.device = net.device
        self.keep = cfg.layers * (cfg.working_memory - 1) + 1  # the receptive field: older tokens are irrelevant
        self.history = torch.zeros(0, self.keep, net.token_dim, device=self.device)
        self.position = torch.zeros(0, dtype=torch.int64, device=self.device)

    def reset(self, rows: Tensor) -> None:
        rows = rows.to(self.device)
        if len(self.position) != len(rows):
            self.history = torch.zeros(len(rows), self.keep, self.net.token_dim, device=self.device)
            self.position = torch.zeros(len(rows), dtype=torch.int64, device=self.device)
        self.position[rows] = 0

    def skip(self, tokens: Tensor) -> None:
        """Take in ``tokens`` (``[K, N, token_dim]``, oldest first) as ``K`` steps would, without computing the
        features of those steps (benchmarks reach a long history this way)."""
        self.history = torch.cat([self.history, tokens.transpose(0, 1)], dim=1)[:, -self.keep:]
        self.position += len(tokens)

    def step(self, token: Tensor) -> Tensor:
        self.history = torch.cat([self.history[:, 1:], token.unsqueeze(1)], dim=1)
        self.position += 1
        length = min(self.keep, int(self.position.max()))  # only the longest span's tokens matter
        # Position of every slot; slots before a span's start get negative ids and a span of their own.
        position = self.position.view(-1, 1) - length + torch.arange(length, device=self.device).view(1, -1)
        span = (position < 0).long()
        features, _ = self.net.sliding_forward(self.history[:, -length:], position.clamp_min(0), span)
        return features[:, -1]
