"""Tubs written by edge/record.py, killed with SIGKILL at random instants, read back by our own reader
(processing/tubs.py) and Preprocess: every record acknowledged as written is there and whole, none is torn,
every record is accounted for. (donkeycar's own ``Tub`` reads them too: ``make recording-check``.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge import record
from edge.frames import decode_image
from processing.preprocess import main as preprocess_main
from processing.records import RecordValidator
from processing.tubs import Source, read_v2_tub

REPO = Path(__file__).resolve().parents[2]
# Writes records as fast as it can, printing each index once write() has returned (the record is whole);
# small catalogs and sessions so that kills also land in catalog and session changes.
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from edge import record
    rotation = record.Rotation(records=5)
    writer = record.TubWriter(sys.argv[1], max_len=7, rotation=rotation, sync_interval_s=0.02)
    rng = np.random.default_rng(int(sys.argv[2]))
    while True:
        image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        values = record.record_values(image, record.Controls(0.5, 0.25), "local", (-0.5, 0.1))
        print(writer.write(values), flush=True)
    """
)


def write_until_killed(tub: Path, seed: int) -> list[int]:
    """Start the writer, kill it with SIGKILL after a random number of records and a random delay;
    returns the indexes it acknowledged."""
    chooser = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tub), str(seed)], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged = []
    assert child.stdout is not None
    for _ in range(chooser.randint(3, 40)):
        acknowledged.append(int(child.stdout.readline()))
    os.kill(child.pid, signal.SIGKILL)  # somewhere inside the next write (or between two)
    acknowledged += [int(line) for line in child.stdout.read().split()]
    child.wait()
    return acknowledged


@pytest.mark.parametrize("seed", range(5))
def test_a_writer_killed_at_any_instant_leaves_only_whole_records(tmp_path, seed):
    tub = tmp_path / "tub"
    acknowledged = write_until_killed(tub, seed)

    report, candidates = read_v2_tub(Source(tub, "v2", "tub"), RecordValidator("tub_v2_record"))
    assert (report.rejected, report.deleted, report.read) == (0, 0, len(candidates)), report.to_dict()
    indexes = [c.index for c in candidates]
    assert indexes == list(range(len(indexes))), "contiguous: nothing torn or lost in between"
    assert set(acknowledged) <= set(indexes), "every record acknowledged as written is there"
    assert len(indexes) <= len(acknowledged) + 1, "at most the one being written when killed"
    for candidate in candidates:
        assert decode_image(Path(candidate.image_path).read_bytes()).shape == (120, 160, 3)
    manifest = record.TubManifest.read(tub)
    assert manifest.current_index in (len(indexes), len(indexes) - 1), "at most one record not yet counted"
    sessions = {c.session for c in candidates}
    assert sessions <= set(manifest.manifest_metadata["sessions"]["all_full_ids"])

    # reopened: nothing to repair but the count; the next record follows on
    writer = record.TubWriter(tub, sync_interval_s=None)
    assert (writer.repair.torn_bytes, writer.repair.dropped_records) == (0, 0)
    assert writer.repair.index_after == len(indexes)
    assert writer.write(record.record_values(_image(), record.Controls(), "user")) == len(indexes)
    writer.close()


def _image():
    import numpy as np

    return np.zeros((120, 160, 3), np.uint8)


def test_preprocess_accounts_for_every_recorded_record(tmp_path, capsys):
    tub = tmp_path / "tubs" / "recorded"
    writer = record.TubWriter(tub, rotation=record.Rotation(records=10), sync_interval_s=None)
    for k in range(40):
        angle = (k % 20) / 10 - 1
        writer.write(record.record_values(_image() + k, record.Controls(angle, 0.3), "user"))
    writer.close()
    assert (
        preprocess_main(
            ["--input", str(tmp_path / "tubs"), "--output", str(tmp_path / "out"), "--workers", "1"]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "report" / "data_report.json").read_text())
    (entry,) = report["tubs"]
    assert {k: entry[k] for k in ("format", "read", "accepted", "rejected", "deleted")} == {
        "format": "v2", "read": 40, "accepted": 40, "rejected": 0, "deleted": 0,
    }  # fmt: skip
    assert "recorded (v2): read 40, accepted 40, rejected 0, deleted 0" in capsys.readouterr().out


def test_a_power_cut_at_any_byte_of_the_last_line_is_repaired_on_open(tmp_path):
    """What a kill cannot do but a power cut can: the last line cut short anywhere, its image lost."""
    whole = tmp_path / "whole"
    writer = record.TubWriter(whole, sync_interval_s=None)
    for k in range(4):
        writer.write(record.record_values(_image() + k, record.Controls(0.1 * k, 0.2), "user"))
    writer.close()
    lines = (whole / "catalog_0.catalog").read_bytes().splitlines(keepends=True)
    for cut in [*range(0, len(lines[-1]), 13), len(lines[-1]) - 1]:  # every 13th byte and the last
        tub = tmp_path / f"cut{cut}"
        shutil.copytree(whole, tub)
        (tub / "catalog_0.catalog").write_bytes(b"".join(lines[:-1]) + lines[-1][:cut])
        (tub / "images" / "3_cam_image_array_.jpg").unlink()

        repaired = record.TubWriter(tub, sync_interval_s=None)
        assert (repaired.repair.torn_bytes, repaired.repair.index_after) == (cut, 3), cut
        repaired.close()
        report, candidates = read_v2_tub(Source(tub, "v2", "tub"), RecordValidator("tub_v2_record"))
        assert (report.read, report.rejected, [c.index for c in candidates]) == (3, 0, [0, 1, 2])
    # the whole line kept but its image lost (written after the line reached the disk): dropped, counted
    tub = tmp_path / "image-lost"
    shutil.copytree(whole, tub)
    (tub / "images" / "3_cam_image_array_.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    assert record.TubWriter(tub, sync_interval_s=None).repair.dropped_records == 1
    # an image lost in the middle (not yet synced): that record and the ones after it go, none names it
    tub = tmp_path / "middle-image-lost"
    shutil.copytree(whole, tub)
    (tub / "images" / "1_cam_image_array_.jpg").unlink()
    repaired = record.TubWriter(tub, sync_interval_s=None)
    assert (repaired.repair.dropped_records, repaired.repair.index_after) == (3, 1)
