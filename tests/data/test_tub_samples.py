"""The real donkeycar 5.3.0 tubs (copied from the shared samples) parse with their exact counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from processing.preprocess import main
from processing.records import RecordValidator
from processing.shards import load_split
from processing.tubs import discover_sources, read_v1_tub, read_v2_tub

SAMPLES = Path(__file__).resolve().parent / "samples" / "tubs"


def test_discovers_both_formats():
    sources = discover_sources(SAMPLES)
    assert [(s.name, s.format) for s in sources] == [("tub_v1", "v1"), ("tub_v2", "v2")]


def test_v2_sample_counts_honour_deleted_indexes():
    (source,) = [s for s in discover_sources(SAMPLES) if s.format == "v2"]
    report, candidates = read_v2_tub(source, RecordValidator("tub_v2_record"))
    assert (report.read, report.deleted, report.rejected) == (50, 2, 0)
    assert [c.index for c in candidates] == [i for i in range(50) if i not in (5, 6)]
    assert {c.session for c in candidates} == {"26-11-21_0", "26-11-21_1"}
    assert candidates[0].angle == -1.0 and candidates[0].throttle == 0.3
    assert candidates[0].timestamp_ms == 1795245850601
    assert report.warnings == []


def test_v1_sample_counts_honour_exclude_json():
    (source,) = [s for s in discover_sources(SAMPLES) if s.format == "v1"]
    report, candidates = read_v1_tub(source, RecordValidator("tub_v1_record"))
    assert (report.read, report.deleted, report.rejected) == (20, 1, 0)
    assert [c.index for c in candidates] == [i for i in range(1, 21) if i != 3]
    assert candidates[0].image_path.endswith("1_cam-image_array_.jpg")
    assert candidates[0].timestamp_ms == int(1795245850.6610742 * 1000)


def test_preprocess_of_the_samples_accounts_for_every_record(tmp_path, capsys):
    assert main(["--input", str(SAMPLES), "--output", str(tmp_path), "--workers", "1"]) == 0
    report = json.loads((tmp_path / "report" / "data_report.json").read_text())
    by_tub = {t["tub"]: t for t in report["tubs"]}
    assert {k: by_tub["tub_v2"][k] for k in ("format", "read", "accepted", "rejected", "deleted")} == {
        "format": "v2", "read": 50, "accepted": 48, "rejected": 0, "deleted": 2,
    }  # fmt: skip
    assert {k: by_tub["tub_v1"][k] for k in ("format", "read", "accepted", "rejected", "deleted")} == {
        "format": "v1", "read": 20, "accepted": 19, "rejected": 0, "deleted": 1,
    }  # fmt: skip
    assert report["total"]["read"] == 70 and report["total"]["accepted"] == 67 and report["status"] == "ok"
    out = capsys.readouterr().out
    assert "tub_v2 (v2): read 50, accepted 48, rejected 0, deleted 2" in out
    assert "tub_v1 (v1): read 20, accepted 19, rejected 0, deleted 1" in out

    frames = {}
    for split in ("train", "validation", "test"):
        arrays, dataset = load_split(tmp_path / split)
        assert dataset["frames"] == len(arrays["images"]) == report["splits"][split]["frames"]
        frames[split] = arrays
    keys = [(t, int(i)) for a in frames.values() for t, i in zip(a["tub"], a["index"], strict=True)]
    assert len(keys) == len(set(keys)) == 67  # every accepted record exactly once
    assert ("tub_v2", 5) not in keys and ("tub_v1", 3) not in keys
    first = frames["train"]
    assert first["images"].shape[1:] == (120, 160, 3) and first["images"].dtype == np.uint8
