"""One root seed per suite, fanned out with ``numpy.random.SeedSequence``.

Every stream is named by a path of strings and integers, e.g. ``("tasks", "bandit")`` or
``("run", "point_nav", 3, "eval")``, so the same name gives the same stream in every process and for
every algorithm: runs of different algorithms on the same (family, seed) share task sampling and
environment seeds (common random numbers). Nothing here touches a global generator.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _word(part: str | int) -> int:
    if isinstance(part, int):
        if part < 0:
            raise ValueError(f"seed path parts must be non-negative, got {part}")
        return part
    # A stable 32-bit word from a name: Python's hash() is salted per process.
    return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=4).digest(), "little")


def seed_sequence(root_seed: int, *path: str | int) -> np.random.SeedSequence:
    """The seed sequence of the stream named ``path`` under ``root_seed``."""
    return np.random.SeedSequence(entropy=root_seed, spawn_key=tuple(_word(p) for p in path))


def generator(root_seed: int, *path: str | int) -> np.random.Generator:
    """A numpy generator for the stream named ``path``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(root_seed, *path)))


def int_seed(root_seed: int, *path: str | int) -> int:
    """A 63-bit integer seed for the stream named ``path`` (for torch and Gymnasium resets)."""
    return int(seed_sequence(root_seed, *path).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def torch_generator(root_seed: int, *path: str | int) -> torch.Generator:
    """A CPU torch generator for the stream named ``path``."""
    return torch.Generator().manual_seed(int_seed(root_seed, *path))
