"""Splits: by session or contiguous blocks, each unit's split from a hash of its names and the seed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.splits import (
    FrameKey,
    TubUnits,
    describe_modes,
    fractions_from,
    split_at,
    split_frames,
    tub_units,
    unit_point,
)


def frames(sessions: dict[str, int], tub: str = "tub") -> list[FrameKey]:
    keys, index = [], 0
    for session, count in sessions.items():
        for _ in range(count):
            keys.append(FrameKey(tub, session, index))
            index += 1
    return keys


def assignment(keys: list[FrameKey], result: dict[str, list[int]]) -> dict[FrameKey, str]:
    return {keys[p]: split for split, positions in result.items() for p in positions}


FRACTIONS = (0.7, 0.15, 0.15)


def test_same_seed_same_split_other_seed_other_split():
    keys = frames({f"s{i}": 50 for i in range(12)})
    first, _ = split_frames(keys, FRACTIONS, seed=3)
    again, _ = split_frames(list(keys), FRACTIONS, seed=3)
    other, _ = split_frames(keys, FRACTIONS, seed=4)
    assert first == again and first != other


def test_the_unit_hash_is_pinned():
    """A change to the hash would move frames between splits from one release to the next."""
    assert unit_point(0, "runs/day1.tar.gz/tub", "24-01-15_0", 3) == 0.12230458648589729
    assert unit_point(0, "tub", "s", None) != unit_point(1, "tub", "s", None)
    # JSON-encoded names: a separator inside a name cannot make two units the same
    assert unit_point(0, "a,b", "c", None) != unit_point(0, "a", "b,c", None)


def test_a_frames_split_depends_on_its_own_tub_only():
    """What instances rely on: each can split its tubs without knowing the others'."""
    day1 = frames({"a": 700, "b": 300}, tub="day1.tar.gz/tub")
    day2 = frames({f"s{i}": 40 for i in range(12)}, tub="day2.tar.gz/tub")
    together = day1 + day2
    random.Random(0).shuffle(together)
    alone = {
        **assignment(day1, split_frames(day1, FRACTIONS, 7)[0]),
        **assignment(day2, split_frames(day2, FRACTIONS, 7)[0]),
    }
    assert assignment(together, split_frames(together, FRACTIONS, 7)[0]) == alone


def test_no_session_in_two_splits_when_splitting_by_session():
    keys = frames({f"s{i}": 20 + i for i in range(15)})
    result, plans = split_frames(keys, FRACTIONS, seed=0)  # auto: a tub of >= 10 sessions -> by session
    assert plans == {"tub": TubUnits("session", 0)} and describe_modes(list(plans.values())) == "session"
    owner: dict[str, str] = {}
    for split, positions in result.items():
        for p in positions:
            assert owner.setdefault(keys[p].session, split) == split
    assert sorted(p for positions in result.values() for p in positions) == list(range(len(keys)))


def test_blocks_are_index_ranges_of_one_session():
    keys = frames({"a": 1000, "b": 600})  # "a" holds indexes 0..999, "b" 1000..1599
    result, plans = split_frames(keys, FRACTIONS, seed=1, split_by="block", block_frames=50)
    assert plans == {"tub": TubUnits("block", 50)}
    owner: dict[tuple[str, int], str] = {}
    for split, positions in result.items():
        for p in positions:
            assert owner.setdefault((keys[p].session, keys[p].index // 50), split) == split
    assert len(owner) == 32


def test_a_rejected_frame_moves_no_other_frame():
    """Blocks are index ranges (not runs of the frames that are left), so a frame's split does not
    depend on which of its neighbours were rejected."""
    keys = frames({"a": 400, "b": 400})
    full = assignment(keys, split_frames(keys, FRACTIONS, 2, "block", 30)[0])
    kept = [key for key in keys if key.index % 7]
    assert assignment(kept, split_frames(kept, FRACTIONS, 2, "block", 30)[0]) == {k: full[k] for k in kept}


def test_shares_approach_the_fractions_with_many_units():
    keys = frames({f"s{i}": 10 for i in range(4000)})
    result, _ = split_frames(keys, FRACTIONS, seed=5, split_by="session")
    for split, share in zip(("train", "validation", "test"), FRACTIONS, strict=True):
        assert abs(len(result[split]) / len(keys) - share) < 0.03  # 4,000 units: sigma <= 0.008


def test_auto_is_decided_tub_by_tub():
    assert tub_units("auto", 200, sessions=10, frames=50) == TubUnits("session", 0)
    assert tub_units("auto", 200, sessions=9, frames=10_000) == TubUnits("block", 200)
    assert tub_units("auto", 200, sessions=1, frames=300) == TubUnits("block", 15)  # >= 20 blocks
    assert tub_units("auto", 200, sessions=1, frames=5) == TubUnits("block", 1)
    assert tub_units("block", 200, sessions=12, frames=60) == TubUnits("block", 200)
    assert tub_units("session", 200, sessions=1, frames=60) == TubUnits("session", 0)
    with pytest.raises(ValueError, match="unknown split mode"):
        tub_units("frame", 200, 1, 1)
    keys = frames({f"s{i}": 10 for i in range(10)}, tub="many") + frames({"x": 300}, tub="one")
    _, plans = split_frames(keys, FRACTIONS, seed=0)
    assert plans == {"many": TubUnits("session", 0), "one": TubUnits("block", 15)}
    assert describe_modes(list(plans.values())) == "block+session"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_every_frame_lands_in_exactly_one_split(session_sizes, seed):
    keys = frames({f"s{i}": n for i, n in enumerate(session_sizes)})
    result, _ = split_frames(keys, FRACTIONS, seed=seed)
    flat = [p for positions in result.values() for p in positions]
    assert sorted(flat) == list(range(len(keys)))


def test_a_zero_fraction_split_stays_empty():
    keys = frames({"a": 500})
    result, _ = split_frames(keys, (0.8, 0.2, 0.0), seed=0, split_by="block", block_frames=5)
    assert result["test"] == [] and result["train"] and result["validation"]
    everything, _ = split_frames(keys, (1.0, 0.0, 0.0), seed=0)
    assert len(everything["train"]) == 500


def test_a_point_falls_in_the_split_of_its_interval():
    assert [split_at(p, FRACTIONS) for p in (0.0, 0.6999, 0.7, 0.8499, 0.85, 0.9999)] == [0, 0, 1, 1, 2, 2]
    assert split_at(0.99, (0.5, 0.49999999, 0.0)) == 1  # the sum rounded below 1: the last open split
    assert split_at(0.5, (0.0, 1.0, 0.0)) == 1


def test_impossible_fractions_are_refused():
    with pytest.raises(ValueError, match="add up"):
        fractions_from(0.8, 0.3)
    with pytest.raises(ValueError, match="must be in"):
        fractions_from(-0.1, 0.3)
