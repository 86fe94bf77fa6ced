"""Settings for the whole test session."""

from __future__ import annotations

import torch


def pytest_configure(config: object) -> None:
    """One intra-op thread for torch, as the harness gives each run (``RunContext.torch_threads``): the
    tests' networks are tiny, so more threads only add synchronisation (several times slower on a busy
    machine), and a test's numbers then do not depend on how many cores the machine has."""
    torch.set_num_threads(1)
