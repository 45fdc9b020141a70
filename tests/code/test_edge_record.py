"""edge/record.py: the tub v2 it writes is donkeycar 5.3.0's, to the byte; a crash leaves whole records;
the drive loop never waits for the disk (drops are counted); ``record`` and ``run --record`` work."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import onnx_pilot_package

from edge import record
from edge.cli import main as edge_main
from edge.drive import Command, JsonLinesWriter, LivePilot, drive, open_pilot
from edge.sources import TubSource

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs" / "tub_v2"
IMAGE = np.full((120, 160, 3), 90, np.uint8)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Session ids carry the local date (donkeycar's time.strftime): fix the zone the samples were made in."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def sample_lines(name: str) -> list[str]:
    return (SAMPLE / name).read_text().splitlines()


def sample_records() -> list[dict]:
    manifest = json.loads(sample_lines("manifest.json")[4])
    return [json.loads(line) for name in manifest["paths"] for line in sample_lines(name)]


def rewrite_sample(tub: Path) -> record.TubWriter:
    """The sample's 50 records written again through TubWriter, with the sample's clock and sessions."""
    now = [json.loads(sample_lines("manifest.json")[3])["created_at"]]
    metadata = json.loads(sample_lines("manifest.json")[2])
    writer = record.TubWriter(
        tub, record.PERSON_INPUTS, metadata=metadata, max_len=20, clock=lambda: now[0], sync_interval_s=None
    )
    for values in sample_records():
        now[0] = values["_timestamp_ms"] / 1000
        if values["_session_id"] != writer.session[1]:
            writer.new_session()
        assert writer.write({**values, "cam/image_array": IMAGE}, now[0]) == values["_index"]
    writer.close()
    return writer


def test_catalogs_are_byte_identical_to_donkeycars_and_manifests_match_line_by_line(tmp_path):
    tub = tmp_path / "tub"
    rewrite_sample(tub)
    for number in range(3):
        name = f"catalog_{number}.catalog"
        assert (tub / name).read_bytes() == (SAMPLE / name).read_bytes(), name
        ours, theirs = (
            json.loads((d / f"catalog_{number}.catalog_manifest").read_text()) for d in (tub, SAMPLE)
        )
        assert list(ours) == list(theirs) and ours.pop("created_at") and theirs.pop("created_at")
        assert ours == theirs, "path (donkeycar's quirk), start_index, line_lengths"
        assert (tub / f"catalog_{number}.catalog_manifest").read_bytes().count(b"\n") == 1
    ours, theirs = (tub / "manifest.json").read_text().splitlines(), sample_lines("manifest.json")
    assert ours[:3] == theirs[:3], "inputs, types, user metadata: the same bytes"
    assert json.loads(ours[3])["sessions"] == json.loads(theirs[3])["sessions"]
    assert list(json.loads(ours[3])) == list(json.loads(theirs[3]))
    assert list(json.loads(ours[4])) == list(json.loads(theirs[4])), "key order of the catalog line"
    assert json.loads(ours[4]) == {**json.loads(theirs[4]), "deleted_indexes": []}
    assert sorted(p.name for p in (tub / "images").iterdir()) == sorted(
        p.name for p in (SAMPLE / "images").iterdir()
    )
    assert (tub / "manifest.json").read_bytes().endswith(b"}\n") and len(ours) == 5


def test_reopening_appends_a_new_session_and_refuses_other_inputs(tmp_path):
    tub = tmp_path / "tub"
    rewrite_sample(tub)
    writer = record.TubWriter(tub, record.PERSON_INPUTS, sync_interval_s=None)
    assert writer.repair == record.Repair(index_before=50, index_after=50)
    assert writer.session[1].endswith("_2")
    assert (
        writer.write({"cam/image_array": IMAGE, "user/angle": 0.5, "user/throttle": 0.2, "user/mode": "user"})
        == 50
    )
    writer.close()
    sessions = json.loads(sample_lines("manifest.json")[3])["sessions"]
    manifest = record.TubManifest.read(tub)
    assert manifest.manifest_metadata["sessions"]["all_full_ids"] == [
        *sessions["all_full_ids"],
        writer.session[1],
    ]
    assert manifest.paths == ["catalog_0.catalog", "catalog_1.catalog", "catalog_2.catalog"]
    assert len((tub / "catalog_2.catalog").read_text().splitlines()) == 11
    with pytest.raises(record.RecordError, match="pilot/angle"):
        record.TubWriter(tub, record.DEFAULT_INPUTS)


def test_rotation_starts_sessions_by_records_and_catalogs_by_max_len(tmp_path):
    writer = record.TubWriter(
        tmp_path / "t", max_len=4, rotation=record.Rotation(records=3), sync_interval_s=None
    )
    for _ in range(10):
        writer.write(record.record_values(IMAGE, record.Controls(0.1, 0.2), "local", (0.3, 0.4)))
    writer.close()
    lines = [json.loads(line) for n in range(3) for line in (tmp_path / "t" / f"catalog_{n}.catalog").open()]
    assert [r["_index"] for r in lines] == list(range(10))
    assert [r["_session_id"][-1] for r in lines] == list("0001112223")
    assert lines[0]["pilot/angle"] == 0.3 and lines[0]["user/mode"] == "local"
    assert record.TubManifest.read(tmp_path / "t").manifest_metadata["sessions"]["last_id"] == 3


def test_opening_repairs_what_a_power_cut_leaves_and_counts_it(tmp_path):
    tub = tmp_path / "tub"
    writer = record.TubWriter(tub, sync_interval_s=None)
    for _ in range(6):
        writer.write(record.record_values(IMAGE, record.Controls(), "user"))
    writer.close()
    catalog = tub / "catalog_0.catalog"
    whole = catalog.read_bytes()
    (tub / "images" / "5_cam_image_array_.jpg").write_bytes(b"\xff\xd8 cut")  # image 5 cut short
    torn = b'{"_index": 6, "_session_id": "26-12-0'
    with catalog.open("ab") as handle:
        handle.write(torn)  # a torn last line
    (tub / "images" / "6_cam_image_array_.jpg.part").write_bytes(b"half")
    lines = (tub / "manifest.json").read_text().splitlines()
    (tub / "manifest.json").write_text("\n".join(lines[:4]) + "\n")  # donkeycar's own torn rewrite

    writer = record.TubWriter(tub, sync_interval_s=None)
    assert writer.repair == record.Repair(
        torn_bytes=len(torn), dropped_records=1, removed_parts=1, index_before=0, index_after=5
    )
    assert catalog.read_bytes() == whole[: whole.rindex(b"{")], "records 0-4 kept whole"
    assert writer.write(record.record_values(IMAGE, record.Controls(), "user")) == 5
    writer.close()
    meta = json.loads((tub / "catalog_0.catalog_manifest").read_text())
    assert meta["line_lengths"] == [len(line) for line in catalog.read_bytes().splitlines(keepends=True)]
    assert not list(tub.rglob("*.part"))


class StalledDisk(record.TubWriter):
    """A writer whose disk hangs until ``release`` is set."""

    entered = threading.Event()
    release = threading.Event()

    def write(self, values, timestamp=None):
        self.entered.set()
        self.release.wait()
        return super().write(values, timestamp)


def test_a_stalled_disk_never_blocks_the_loop_and_every_drop_is_counted(tmp_path):
    recorder = record.Recorder(StalledDisk(tmp_path / "t", sync_interval_s=None), queue_size=4)
    assert recorder.submit(record.record_values(IMAGE, record.Controls(), "user"))
    StalledDisk.entered.wait(10)
    accepted = [recorder.submit(record.record_values(IMAGE, record.Controls(), "user")) for _ in range(9)]
    assert accepted == [True] * 4 + [False] * 5, "the loop got every answer while the disk hung"
    StalledDisk.release.set()
    stats = recorder.close()
    assert (stats.submitted, stats.written, stats.dropped, stats.failed) == (10, 5, 5, 0)
    lines = (tmp_path / "t" / "catalog_0.catalog").read_text().splitlines()
    assert [json.loads(line)["_index"] for line in lines] == [0, 1, 2, 3, 4], "no gap for a dropped record"


def test_non_finite_controls_are_refused_and_counted(tmp_path):
    recorder = record.Recorder(record.TubWriter(tmp_path / "t", sync_interval_s=None))
    recorder.submit(record.record_values(IMAGE, record.Controls(float("nan"), 0.0), "user"))
    recorder.submit(record.record_values(IMAGE, record.Controls(0.1, 0.0), "user"))
    stats = recorder.close()
    assert (stats.written, stats.refused) == (1, 1)
    assert json.loads((tmp_path / "t" / "catalog_0.catalog").read_text())["_index"] == 0


def test_record_command_with_json_lines_controls(tmp_path, capsys):
    controls = tmp_path / "controls.jsonl"
    controls.write_text("".join(json.dumps({"angle": k / 10, "throttle": 0.3}) + "\n" for k in range(5)))
    summary = tmp_path / "summary.json"
    code = edge_main(
        ["record", "--tub", str(tmp_path / "tub"), "--source", f"tub:{SAMPLE}", "--controls",
         f"jsonl:{controls}", "--summary-json", str(summary), "--meta", "car:test"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "drove 5 frames" in capsys.readouterr().out, "the controls ended the recording"
    assert json.loads(summary.read_text())["written"] == 5
    lines = [json.loads(line) for line in (tmp_path / "tub" / "catalog_0.catalog").open()]
    assert [r["user/angle"] for r in lines] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert {r["user/mode"] for r in lines} == {"user"} and "pilot/angle" not in lines[0]
    assert record.TubManifest.read(tmp_path / "tub").metadata == {"car": "test"}
    assert (
        edge_main(["record", "--tub", str(tmp_path / "t2"), "--source", str(SAMPLE), "--controls", "joy"])
        == 2
    )
    images = SAMPLE / "images"
    assert edge_main(["record", "--tub", str(tmp_path / "t3"), "--source", f"folder:{images}"]) == 2
    assert "holds no controls" in capsys.readouterr().err


def test_run_record_puts_the_pilots_outputs_next_to_the_persons(tmp_path, capsys):
    with tarfile.open(fileobj=io.BytesIO(onnx_pilot_package("v1"))) as archive:
        archive.extractall(tmp_path / "model", filter="data")
    jsonl = tmp_path / "drive.jsonl"
    code = edge_main(
        ["run", "--model", str(tmp_path / "model"), "--source", f"tub:{SAMPLE}", "--max-frames", "9",
         "--record", str(tmp_path / "tub"), "--jsonl", str(jsonl), "--quiet"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "recorded 9 records" in out and "0 dropped" in out
    commands = [json.loads(line) for line in jsonl.read_text().splitlines()]
    lines = [json.loads(line) for line in (tmp_path / "tub" / "catalog_0.catalog").open()]
    replayed = sample_records()
    replayed = [r for r in replayed if r["_index"] not in (5, 6)]  # the sample's deleted records
    assert [r["pilot/angle"] for r in lines] == [c["angle"] for c in commands]
    assert [r["user/angle"] for r in lines] == [r["user/angle"] for r in replayed[:9]]
    assert {r["user/mode"] for r in lines} == {"local"}


def test_the_drive_loop_hook_sees_every_driven_frame(tmp_path):
    with tarfile.open(fileobj=io.BytesIO(onnx_pilot_package("v1"))) as archive:
        archive.extractall(tmp_path / "model", filter="data")
    pilot = LivePilot(tmp_path / "model", open_pilot)
    seen: list[tuple[str, Command]] = []
    summary = drive(
        TubSource(SAMPLE), pilot, [JsonLinesWriter(str(tmp_path / "c.jsonl"))], max_frames=4,
        record=lambda frame, command: seen.append((frame.origin, command)),
    )  # fmt: skip
    assert summary.frames == 4 and [c.frame for _, c in seen] == [0, 1, 2, 3]


def test_record_runs_on_the_cars_install_without_tensorflow_sdk_or_boto3(tmp_path):
    from test_edge_lean import run_on_the_car

    recorded = run_on_the_car(
        "edge.cli", "record", "--tub", str(tmp_path / "tub"), "--source", f"tub:{SAMPLE}", "--max-frames", "3"
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "recorded 3 records" in recorded.stdout
    assert "HEAVY-MODULES=\n" in recorded.stderr + "\n"


def test_a_new_tub_appears_whole_or_not_at_all(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "meta.json").write_text("{}")
    with pytest.raises(record.RecordError, match="nor an empty folder"):
        record.TubWriter(tmp_path / "v1")
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["meta.json"], "nothing written into it"
    staging = tmp_path / ".new.part"  # a crash while creating tmp_path/new left this
    (staging / "images").mkdir(parents=True)
    (tmp_path / "new").mkdir()  # an empty folder is fine
    writer = record.TubWriter(tmp_path / "new", sync_interval_s=None)
    writer.close()
    assert not staging.exists()
    # the lock file stays: removing it would let a waiting writer lock a file no longer in the folder
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        ".lock", "catalog_0.catalog", "catalog_0.catalog_manifest", "images", "manifest.json",
    ]  # fmt: skip
