"""Splits: by session or contiguous blocks, deterministic for a seed, never frame by frame."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.splits import FrameKey, fractions_from, split_frames


def frames(sessions: dict[str, int], tub: str = "tub") -> list[FrameKey]:
    keys, index = [], 0
    for session, count in sessions.items():
        for _ in range(count):
            keys.append(FrameKey(tub, session, index))
            index += 1
    return keys


FRACTIONS = (0.7, 0.15, 0.15)


def test_same_seed_same_split_other_seed_other_split():
    keys = frames({f"s{i}": 50 for i in range(12)})
    first, _ = split_frames(keys, FRACTIONS, seed=3)
    again, _ = split_frames(list(keys), FRACTIONS, seed=3)
    other, _ = split_frames(keys, FRACTIONS, seed=4)
    assert first == again and first != other


def test_no_session_in_two_splits_when_splitting_by_session():
    keys = frames({f"s{i}": 20 + i for i in range(15)})
    result, mode = split_frames(keys, FRACTIONS, seed=0)  # auto: >= 10 sessions -> by session
    assert mode == "session"
    owner: dict[str, str] = {}
    for split, positions in result.items():
        for p in positions:
            assert owner.setdefault(keys[p].session, split) == split
    assert all(result.values())
    assert sorted(p for positions in result.values() for p in positions) == list(range(len(keys)))


def test_blocks_are_contiguous_runs_of_one_session():
    keys = frames({"a": 1000, "b": 600})  # "a" holds indexes 0..999, "b" 1000..1599
    result, mode = split_frames(keys, FRACTIONS, seed=1, split_by="block", block_frames=50)
    assert mode == "block"
    owner: dict[tuple[str, int], str] = {}
    for split, positions in result.items():
        for p in positions:
            block = (keys[p].session, (keys[p].index - (0 if keys[p].session == "a" else 1000)) // 50)
            assert owner.setdefault(block, split) == split  # a block of 50 frames is never cut
    assert len(owner) == 32
    for split, share in zip(("train", "validation", "test"), FRACTIONS, strict=True):
        assert abs(len(result[split]) - share * 1600) <= 50  # within one block of the target


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_every_frame_lands_in_exactly_one_split(session_sizes, seed):
    keys = frames({f"s{i}": n for i, n in enumerate(session_sizes)})
    result, _ = split_frames(keys, FRACTIONS, seed=seed)
    flat = [p for positions in result.values() for p in positions]
    assert sorted(flat) == list(range(len(keys)))


def test_a_zero_fraction_split_stays_empty():
    keys = frames({"a": 500})
    result, _ = split_frames(keys, (0.8, 0.2, 0.0), seed=0, split_by="block")
    assert result["test"] == [] and result["train"] and result["validation"]


def test_impossible_fractions_are_refused():
    with pytest.raises(ValueError, match="add up"):
        fractions_from(0.8, 0.3)
    with pytest.raises(ValueError, match="must be in"):
        fractions_from(-0.1, 0.3)


def test_blocks_shrink_when_the_data_is_small():
    keys = frames({"a": 60})  # 60 frames, blocks of 200 would leave two splits empty
    result, _ = split_frames(keys, FRACTIONS, seed=0, split_by="block", block_frames=200)
    assert all(result.values())
