"""Train/validation/test assignment by session or by contiguous time blocks, never frame by frame.

Neighbouring frames are near duplicates, so a frame-level split would put the same picture in train
and test. The unit of assignment is either a whole session (``(tub, session)``) or a block of a session:
its frames whose record index falls in ``[k * size, (k + 1) * size)`` (index = time order).

A unit's split is decided by the unit alone: a stable hash (SHA-256 of the seed, tub, session and
block) read as a number in [0, 1) and placed against the cumulative fractions. So Preprocess instances
that each hold some of the tubs agree on every frame's split without talking to each other, the result
never depends on the worker or instance count or on file order, and a frame keeps its split when other
tubs are added or removed. The price: the shares are approximate (each unit falls in a split with the
split's probability), so the report states the fractions achieved.

What decides the units must then also be known from one tub alone: in "auto" mode each tub is split by
session when it has at least ``AUTO_SESSION_MIN`` sessions, else by blocks of at most
``--block-frames`` frames that shrink so that the tub makes at least ``MIN_BLOCKS`` of them. A tub is
never split between instances (docs/contracts.md section 2), so every instance decides the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

SPLITS = ("train", "validation", "test")
SPLIT_MODES = ("auto", "session", "block")
AUTO_SESSION_MIN = 10  # "auto" splits a tub by session when it has at least this many sessions
MIN_BLOCKS = 20  # "auto" shrinks a tub's blocks below block_frames until the tub makes at least this many
_HASH_SCALE = float(1 << 64)  # the first 8 bytes of the digest, as a fraction of 2**64


@dataclass(frozen=True)
class FrameKey:
    """What the split needs to know about one frame."""

    tub: str
    session: str
    index: int


@dataclass(frozen=True)
class TubUnits:
    """How one tub is cut into units: ``by`` session or block, and the block size in record indexes."""

    by: str
    block_frames: int

    def to_dict(self) -> dict[str, str | int]:
        return {"by": self.by, "block_frames": self.block_frames} if self.by == "block" else {"by": self.by}


def fractions_from(train: float, validation: float) -> tuple[float, float, float]:
    """(train, validation, test) with test the remainder; ValueError on impossible fractions."""
    for name, value in (("train", train), ("validation", validation)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name}-fraction must be in [0, 1], got {value}")
    test = 1.0 - train - validation
    if test < -1e-9:
        raise ValueError(f"train + validation fractions add up to {train + validation:.3f} > 1")
    return (train, validation, max(test, 0.0))


def tub_units(split_by: str, block_frames: int, sessions: int, frames: int) -> TubUnits:
    """The units of a tub of ``frames`` frames in ``sessions`` sessions (both counted in this tub only)."""
    if split_by not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {split_by!r} (session, block or auto)")
    if block_frames <= 0:
        raise ValueError("--block-frames must be positive")
    if split_by == "session" or (split_by == "auto" and sessions >= AUTO_SESSION_MIN):
        return TubUnits("session", 0)
    if split_by == "block":
        return TubUnits("block", block_frames)
    return TubUnits("block", max(1, min(block_frames, frames // MIN_BLOCKS)))


def unit_point(seed: int, tub: str, session: str, block: int | None) -> float:
    """Where a unit falls in [0, 1): SHA-256 of the seed and the unit's names (JSON-encoded, ASCII: no
    two different names give the same bytes), its first 8 bytes as a fraction of 2**64."""
    name = json.dumps([seed, tub, session, block], separators=(",", ":"))
    digest = hashlib.sha256(name.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SCALE


def split_at(point: float, fractions: Sequence[float]) -> int:
    """The split (0 train, 1 validation, 2 test) whose cumulative interval holds ``point``.

    A split with a zero fraction has an empty interval, so it never gets a unit; a point beyond the
    last bound (the fractions' sum rounded below 1) goes to the last split with a positive share.
    """
    for split, bound in enumerate(accumulate(fractions)):
        if point < bound:
            return split
    return max(split for split, share in enumerate(fractions) if share > 0)


def plan_tubs(keys: Sequence[FrameKey], split_by: str, block_frames: int) -> dict[str, TubUnits]:
    """Each tub's units, from that tub's own frames."""
    sessions: dict[str, set[str]] = {}
    frames: dict[str, int] = {}
    for key in keys:
        sessions.setdefault(key.tub, set()).add(key.session)
        frames[key.tub] = frames.get(key.tub, 0) + 1
    return {
        tub: tub_units(split_by, block_frames, len(sessions[tub]), frames[tub]) for tub in sorted(sessions)
    }


def split_frames(
    keys: Sequence[FrameKey],
    fractions: Sequence[float],
    seed: int,
    split_by: str = "auto",
    block_frames: int = 200,
) -> tuple[dict[str, list[int]], dict[str, TubUnits]]:
    """Positions of ``keys`` per split (each sorted by tub, index) and each tub's units."""
    if not any(share > 0 for share in fractions):
        raise ValueError("every split fraction is 0")
    plans = plan_tubs(keys, split_by, block_frames)
    decided: dict[tuple[str, str, int | None], int] = {}  # one hash per unit, not per frame
    result: dict[str, list[int]] = {name: [] for name in SPLITS}
    for position, key in enumerate(keys):
        units = plans[key.tub]
        block = key.index // units.block_frames if units.by == "block" else None
        unit = (key.tub, key.session, block)
        if unit not in decided:
            decided[unit] = split_at(unit_point(seed, *unit), fractions)
        result[SPLITS[decided[unit]]].append(position)
    for positions in result.values():
        positions.sort(key=lambda p: (keys[p].tub, keys[p].index))
    return result, plans


def describe_modes(plans: Sequence[TubUnits]) -> str:
    """The report's ``split_by``: the units used, e.g. ``block``, ``session`` or ``block+session``."""
    return "+".join(sorted({plan.by for plan in plans})) or "none"
