"""Train/validation/test assignment by session or by contiguous time blocks, never frame by frame.

Neighbouring frames are near duplicates, so a frame-level split would put the same picture in train
and test. The unit of assignment is either a whole session (``(tub, session)``) or a block of at most
``block_frames`` consecutive frames of one session, in index (= time) order. Units are shuffled with
``numpy.random.default_rng(seed)`` and each goes to the split furthest below its target share of
frames, so the result depends only on the units and the seed, never on worker count or file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "validation", "test")
AUTO_SESSION_MIN = 10  # "auto" splits by session when there are at least this many sessions
MIN_BLOCKS = 20  # blocks shrink below block_frames until the data makes at least this many


@dataclass(frozen=True)
class FrameKey:
    """What the split needs to know about one frame."""

    tub: str
    session: str
    index: int


def fractions_from(train: float, validation: float) -> tuple[float, float, float]:
    """(train, validation, test) with test the remainder; ValueError on impossible fractions."""
    for name, value in (("train", train), ("validation", validation)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name}-fraction must be in [0, 1], got {value}")
    test = 1.0 - train - validation
    if test < -1e-9:
        raise ValueError(f"train + validation fractions add up to {train + validation:.3f} > 1")
    return (train, validation, max(test, 0.0))


def group_sessions(keys: Sequence[FrameKey]) -> dict[tuple[str, str], list[int]]:
    """(tub, session) -> positions into ``keys``, each list in index (time) order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault((key.tub, key.session), []).append(position)
    for positions in groups.values():
        positions.sort(key=lambda p: keys[p].index)
    return dict(sorted(groups.items()))


def make_units(keys: Sequence[FrameKey], split_by: str, block_frames: int) -> tuple[list[list[int]], str]:
    """Units of assignment (lists of positions into ``keys``) and the mode used (session|block)."""
    sessions = group_sessions(keys)
    if split_by == "auto":
        split_by = "session" if len(sessions) >= AUTO_SESSION_MIN else "block"
    if split_by == "session":
        return list(sessions.values()), "session"
    if split_by != "block":
        raise ValueError(f"unknown split mode {split_by!r} (session, block or auto)")
    if block_frames <= 0:
        raise ValueError("--block-frames must be positive")
    size = max(1, min(block_frames, len(keys) // MIN_BLOCKS))
    units = [
        positions[i : i + size] for positions in sessions.values() for i in range(0, len(positions), size)
    ]
    return units, "block"


def assign_units(sizes: Sequence[int], fractions: Sequence[float], seed: int) -> list[int]:
    """Split number (0 train, 1 validation, 2 test) of each unit: shuffled, then greedy to the targets."""
    total = float(sum(sizes))
    targets = np.asarray(fractions, dtype=np.float64) * total
    closed = targets <= 0  # a split asked to be empty stays empty
    filled = np.zeros(len(fractions))
    assignment = [0] * len(sizes)
    for unit in np.random.default_rng(seed).permutation(len(sizes)):
        # the split furthest below its share; ties -> the first
        split = int(np.argmax(np.where(closed, -np.inf, targets - filled)))
        assignment[int(unit)] = split
        filled[split] += sizes[int(unit)]
    return assignment


def split_frames(
    keys: Sequence[FrameKey],
    fractions: Sequence[float],
    seed: int,
    split_by: str = "auto",
    block_frames: int = 200,
) -> tuple[dict[str, list[int]], str]:
    """Positions of ``keys`` per split (each sorted by tub, index) and the mode used."""
    units, mode = make_units(keys, split_by, block_frames)
    assignment = assign_units([len(u) for u in units], fractions, seed)
    result: dict[str, list[int]] = {name: [] for name in SPLITS}
    for unit, split in zip(units, assignment, strict=True):
        result[SPLITS[split]].extend(unit)
    for positions in result.values():
        positions.sort(key=lambda p: (keys[p].tub, keys[p].index))
    return result, mode
