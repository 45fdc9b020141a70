"""Hostile input: Preprocess refuses it in one line (exit 2) or rejects the record, in bounded cost.

Every case asserts the outcome (exit status and the one line, or the rejection by index with its
reason), the report's accounting when a report is written (read = accepted + rejected + deleted), and,
where a regression would cost unbounded memory or time, the bound itself: in-process with tracemalloc,
or in a subprocess under RLIMIT_AS / RLIMIT_CPU so that a regression fails instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from processing.limits import DataLimits, RecordBudget
from processing.preprocess import main
from processing.records import RecordValidator
from processing.tubs import Source, read_v2_tub

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path(__file__).resolve().parent / "samples" / "tubs"
PREPROCESS = REPO / "processing" / "preprocess.py"
# The child process gets 1 GiB of address space (a normal run needs ~300 MB) and 20 s of CPU: a
# regression (a loop to 10^9, a list of 10^20 class names) dies there instead of eating the machine.
BOUNDED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# --- helpers ------------------------------------------------------------------------------------------


def copy_sample(kind: str, dest: Path) -> Path:
    shutil.copytree(SAMPLES / kind, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def run(input_dir: Path, out: Path, *extra: str) -> tuple[int, str, dict | None]:
    """main() in this process: (exit status, stderr, data_report.json or None)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--input", str(input_dir), "--output", str(out), "--workers", "1", *extra])
    report_path = out / "report" / "data_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is not None:
        assert_accounted(report)
    return code, err.getvalue(), report


def run_bounded(input_dir: Path, out: Path, *extra: str) -> tuple[int, str, dict | None]:
    """preprocess.py in a child process under the limits of ``BOUNDED``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    argv = ["--input", str(input_dir), "--output", str(out), "--workers", "1", *extra]
    result = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(PREPROCESS), *argv], capture_output=True, text=True, env=env
    )
    report_path = out / "report" / "data_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is not None:
        assert_accounted(report)
    return result.returncode, result.stderr, report


def assert_accounted(report: dict) -> None:
    for tub in [*report["tubs"], report["total"]]:
        assert tub["read"] == tub["accepted"] + tub["rejected"] + tub["deleted"], tub["tub"]
        assert tub["rejected"] == len(tub["rejections"]), tub["tub"]


def assert_refused(code: int, err: str, *needles: str) -> str:
    """Exit 2 with exactly one line on stderr, no traceback, naming what is wrong."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("preprocess: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def only_tub(report: dict) -> dict:
    (tub,) = report["tubs"]
    return tub


def reasons(tub: dict) -> dict[int, str]:
    return {r["index"]: r["reason"] for r in tub["rejections"]}


def set_catalog_line(tub: Path, index: int, text: str) -> None:
    """Replace record ``index``'s catalog line (20 records per catalog in the sample) by ``text``."""
    catalog = tub / f"catalog_{index // 20}.catalog"
    lines = catalog.read_text().splitlines()
    lines[index % 20] = text
    catalog.write_text("\n".join(lines) + "\n")


def edit_record(tub: Path, index: int, **fields: object) -> None:
    catalog = tub / f"catalog_{index // 20}.catalog"
    record = json.loads(catalog.read_text().splitlines()[index % 20])
    record.update(fields)
    set_catalog_line(tub, index, json.dumps(record))


def edit_manifest(tub: Path, **fields: object) -> None:
    lines = (tub / "manifest.json").read_text().splitlines()
    catalogs = json.loads(lines[4])
    catalogs.update(fields)
    lines[4] = json.dumps(catalogs)
    (tub / "manifest.json").write_text("\n".join(lines) + "\n")


def tar_bytes(members: list[tuple[str, bytes | None]], mode: str = "w:gz") -> bytes:
    """A tar of (name, data) members, data None for a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sample_tar(mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        tar.add(SAMPLES / "tub_v2", arcname="tub_v2")
    return buffer.getvalue()


def gt_line(ref: str, label: object, name: str = "cat") -> str:
    metadata = {"class-name": name, "type": "groundtruth/image-classification"}
    return json.dumps({"source-ref": ref, "animal": label, "animal-metadata": metadata})


def gt_dataset(root: Path, lines: list[str]) -> Path:
    root.mkdir(parents=True)
    for i in range(10):
        shutil.copyfile(SAMPLES / "tub_v2" / "images" / f"{i}_cam_image_array_.jpg", root / f"{i}.jpg")
    (root / "labels.manifest").write_text("\n".join(lines) + "\n")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def tub_v2(tmp_path: Path) -> Path:
    return copy_sample("tub_v2", tmp_path / "in" / "tub_v2")


@pytest.fixture
def tub_v1(tmp_path: Path) -> Path:
    return copy_sample("tub_v1", tmp_path / "in" / "tub_v1")


# --- numbers that overflow or are not indexes: the record is rejected by index ------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"_index": 10**20}, "out of range: _index 100000000000000000000"),
        ({"_index": -5}, "out of range: _index -5"),
        ({"_timestamp_ms": 10**20}, "out of range: _timestamp_ms=100000000000000000000"),
        ({"_timestamp_ms": 1e300}, "out of range: _timestamp_ms=1e+300"),
        ({"_session_id": "s" * 1000}, "schema: _session_id"),
    ],
)
def test_a_record_number_out_of_range_rejects_that_record_at_its_position(tub_v2, tmp_path, fields, code):
    edit_record(tub_v2, 3, **fields)
    status, err, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert status == 0 and (tub["read"], tub["accepted"], tub["rejected"], tub["deleted"]) == (50, 47, 1, 2)
    assert list(reasons(tub)) == [3] and reasons(tub)[3].startswith(code)


def test_an_integer_of_5000_digits_is_a_malformed_record(tub_v2, tmp_path):
    line = json.dumps(json.loads((tub_v2 / "catalog_0.catalog").read_text().splitlines()[4]))
    set_catalog_line(tub_v2, 4, line.replace('"_index": 4', '"_index": ' + "9" * 5000))
    status, _, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert status == 0 and list(reasons(tub)) == [4] and reasons(tub)[4].startswith("malformed record")
    assert len(reasons(tub)[4]) <= 500


def test_a_hostile_value_in_a_reason_is_clipped(tub_v2, tmp_path):
    edit_record(tub_v2, 2, **{"cam/image_array": "/" * 100_000})
    _, _, report = run(tub_v2, tmp_path / "out")
    reason = reasons(only_tub(report))[2]
    assert reason.startswith("schema: cam/image_array") and len(reason) <= 500


def test_v1_numbers_out_of_range(tub_v1, tmp_path):
    record_2 = json.loads((tub_v1 / "record_2.json").read_text())
    (tub_v1 / "record_2.json").write_text(json.dumps({**record_2, "milliseconds": 2**63 - 1}))
    shutil.copyfile(tub_v1 / "record_4.json", tub_v1 / "record_04.json")  # index 4 twice
    (tub_v1 / "record_5.json").write_text('{"cam/image_array": "' + "x" * (2 << 20) + '"}')
    status, _, report = run(tub_v1, tmp_path / "out", "--max-reject-fraction", "0.5")
    tub = only_tub(report)
    assert status == 0 and (tub["read"], tub["rejected"], tub["deleted"]) == (21, 3, 1)
    assert [(i, r.split(":")[0]) for i, r in sorted(reasons(tub).items())] == [
        (2, "out of range"),
        (4, "duplicate index"),
        (5, "malformed record"),
    ]
    assert "int64" in reasons(tub)[2] and "--max-line-bytes" in reasons(tub)[5]


# --- bad input as a whole: the run is refused in one line ---------------------------------------------


@pytest.mark.parametrize("start", [1e308, "yesterday", float("nan"), -1])
def test_a_v1_start_that_is_not_a_unix_time_is_refused(tub_v1, tmp_path, start):
    meta = json.loads((tub_v1 / "meta.json").read_text())
    (tub_v1 / "meta.json").write_text(json.dumps({**meta, "start": start}))
    status, err, report = run(tub_v1, tmp_path / "out")
    assert_refused(status, err, "tub_v1", "meta.json", "not a Unix time")
    assert report is None


def test_a_meta_json_nested_past_the_recursion_limit_is_refused(tub_v1, tmp_path):
    (tub_v1 / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    status, err, _ = run(tub_v1, tmp_path / "out")
    assert_refused(status, err, "meta.json is not valid JSON")


@pytest.mark.parametrize("entries", ["[1.7]", '["3"]', "[true]", "[-1]", "[100000000000000000000]", "[NaN]"])
def test_exclude_json_entries_that_are_not_indexes_are_refused(tub_v1, tmp_path, entries):
    (tub_v1 / "exclude.json").write_text(entries)
    status, err, _ = run(tub_v1, tmp_path / "out")
    assert_refused(status, err, "exclude.json", "is not a record index")


def test_a_v1_record_file_named_beyond_any_index_is_refused(tub_v1, tmp_path):
    shutil.copyfile(tub_v1 / "record_3.json", tub_v1 / f"record_{'9' * 200}.json")
    status, err, _ = run(tub_v1, tmp_path / "out")
    assert_refused(status, err, "is not a record index", "--max-tub-records")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"current_index": 1.5}, "current_index 1.5 is not a record count"),
        ({"current_index": "50"}, "current_index '50' is not a record count"),
        ({"current_index": 5_000_000}, "the limit of 1,000,000 records (--max-tub-records)"),
        ({"current_index": 1000}, "more records than its 3 catalogs of max_len 20 can hold"),
        ({"deleted_indexes": [1.5]}, "deleted_indexes holds 1.5"),
        ({"deleted_indexes": [10**20]}, "deleted_indexes holds 100000000000000000000"),
        ({"paths": ["../../../etc/passwd"]}, "paths must list catalog file names"),
        ({"paths": "catalog_0.catalog"}, "paths must list catalog file names"),
    ],
)
def test_a_manifest_json_with_impossible_numbers_or_paths_is_refused(tub_v2, tmp_path, fields, needle):
    edit_manifest(tub_v2, **fields)
    status, err, _ = run(tub_v2, tmp_path / "out")
    assert_refused(status, err, "tub_v2", needle)


def test_a_manifest_claiming_a_billion_records_is_refused_in_bounded_cost(tub_v2, tmp_path):
    edit_manifest(tub_v2, current_index=10**9, max_len=10**9)
    status, err, report = run_bounded(tub_v2, tmp_path / "out")
    assert_refused(status, err, "current_index 1,000,000,000", "--max-tub-records")
    assert report is None


def test_more_records_than_the_run_may_read_is_refused(tmp_path):
    copy_sample("tub_v2", tmp_path / "in" / "a")
    copy_sample("tub_v2", tmp_path / "in" / "b")
    status, err, _ = run(tmp_path / "in", tmp_path / "out", "--max-records", "60")
    assert_refused(status, err, "the limit of 60 records (--max-records)", "(reached in b)")


def test_more_tubs_than_the_limit_is_refused(tmp_path):
    copy_sample("tub_v2", tmp_path / "in" / "a")
    copy_sample("tub_v1", tmp_path / "in" / "b")
    status, err, _ = run(tmp_path / "in", tmp_path / "out", "--max-tubs", "1")
    assert_refused(status, err, "2 tubs and manifests", "(--max-tubs)")


def test_a_ground_truth_manifest_with_more_lines_than_the_limit_is_refused(tmp_path):
    root = gt_dataset(tmp_path / "in", [gt_line(f"{i % 10}.jpg", 0) for i in range(101)])
    status, err, _ = run(root, tmp_path / "out", "--max-tub-records", "100")
    assert_refused(status, err, "labels.manifest holds more records than the limit of 100 records")


@pytest.mark.parametrize(
    ("option", "value"), [("--seed", "-1"), ("--height", "100000"), ("--max-line-bytes", "0")]
)
def test_impossible_options_are_refused(tub_v2, tmp_path, option, value):
    status, err, _ = run(tub_v2, tmp_path / "out", option, value)
    assert_refused(status, err, option)


# --- archives ------------------------------------------------------------------------------------------


def truncated_tar_gz() -> bytes:
    data = sample_tar()
    return data[: len(data) // 2]


def corrupt_tar_gz() -> bytes:
    data = bytearray(sample_tar())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)  # zeroes in the deflate stream
    return bytes(data)


def corrupt_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("tub_v2/manifest.json", (SAMPLES / "tub_v2" / "manifest.json").read_bytes() * 50)
    data = bytearray(buffer.getvalue())
    data[60:80] = b"\xff" * 20  # inside the compressed member
    return bytes(data)


def tar_with_a_garbage_header() -> bytes:
    data = bytearray(sample_tar("w"))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        offset = tar.getmembers()[3].offset
    data[offset : offset + 85] = b"not a tar header " * 5  # tarfile would end the member list here, silently
    return bytes(data)


def encrypted_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("tub_v2/manifest.json", b"{}")
    data = bytearray(buffer.getvalue())
    data[6] |= 0x1  # "encrypted" in the local header and the central directory: zipfile asks for a password
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "make", "needle"),
    [
        ("day1.tar.gz", truncated_tar_gz, "day1.tar.gz"),
        ("day1.tgz", corrupt_tar_gz, "day1.tgz"),
        ("day1.zip", corrupt_zip, "day1.zip"),
        ("day1.zip", encrypted_zip, "encrypted"),
        ("day1.tar", tar_with_a_garbage_header, "are not a tar header"),
        ("day1.tar", lambda: tar_bytes([("tub/x", b"a"), ("tub/x/y", b"b")], "w"), "but it is a file"),
        ("day1.tar", lambda: tar_bytes([("tub/x", None), ("tub/x", b"b")], "w"), "a folder and a file"),
        ("day1.tar.gz", lambda: b"", "day1.tar.gz"),
    ],
    ids=["truncated", "corrupt-gzip", "corrupt-zip", "encrypted-zip", "garbage-header", "file-then-folder",
         "folder-then-file", "empty"],
)  # fmt: skip
def test_a_damaged_archive_is_refused_in_one_line(tmp_path, name, make, needle):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / name).write_bytes(make())
    status, err, _ = run(inbox, tmp_path / "out")
    assert_refused(status, err, f"archive {name}", needle)
    assert not (tmp_path / "out" / "train").exists()


def test_a_zip_with_a_file_and_a_folder_of_the_same_name_is_refused(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    with zipfile.ZipFile(inbox / "up.zip", "w") as bundle:
        bundle.writestr("tub/x", b"a")
        bundle.writestr("tub/x/y", b"b")
    status, err, _ = run(inbox, tmp_path / "out")
    assert_refused(status, err, "archive up.zip", "needs 'tub/x' as a folder, but it is a file")


# --- folders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "needle"), [("outside", "outside"), ("loop", "a loop")])
def test_a_symlinked_folder_leading_out_or_looping_is_refused_never_skipped(tmp_path, target, needle):
    inbox = tmp_path / "in"
    copy_sample("tub_v1", inbox / "real")
    outside = copy_sample("tub_v2", tmp_path / "elsewhere")
    (inbox / "link").symlink_to({"outside": outside, "loop": inbox}[target], target_is_directory=True)
    status, err, _ = run(inbox, tmp_path / "out")
    assert_refused(status, err, "link is a symbolic link to", needle)


def test_a_symlinked_folder_inside_the_input_is_followed_once(tmp_path):
    """The rule of every folder walk (edge.folders), the --data upload's too: read under the link's name."""
    inbox = tmp_path / "in"
    copy_sample("tub_v2", inbox / "real")
    (inbox / "link").symlink_to(inbox / "real", target_is_directory=True)
    status, _, report = run(inbox, tmp_path / "out")
    assert status == 0
    assert sorted((t["tub"], t["accepted"]) for t in report["tubs"]) == [("link", 48), ("real", 48)]


def test_a_symlinked_archive_from_outside_is_refused(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (tmp_path / "day1.tar.gz").write_bytes(sample_tar())
    (inbox / "day1.tar.gz").symlink_to(tmp_path / "day1.tar.gz")
    status, err, _ = run(inbox, tmp_path / "out")
    assert_refused(status, err, "day1.tar.gz is a symbolic link to", "outside")


def test_the_input_folder_itself_may_be_a_link(tmp_path):
    copy_sample("tub_v2", tmp_path / "real" / "tub_v2")
    (tmp_path / "in").symlink_to(tmp_path / "real", target_is_directory=True)
    status, _, report = run(tmp_path / "in", tmp_path / "out")
    assert status == 0 and only_tub(report)["accepted"] == 48


def test_a_folder_that_cannot_be_listed_is_refused(tmp_path, monkeypatch):
    inbox = tmp_path / "in"
    copy_sample("tub_v2", inbox / "tub_v2")
    (inbox / "locked").mkdir()
    scandir = os.scandir

    def scandir_refusing_locked(path="."):  # chmod 000 does not stop root, so the OS error is simulated
        if not isinstance(path, int) and os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_refusing_locked)
    status, err, _ = run(inbox, tmp_path / "out")
    assert_refused(status, err, "cannot list folder", "locked", "Permission denied")


# --- lines, images, classes: per-record bounds, in bounded memory -------------------------------------


def test_an_overlong_catalog_line_is_rejected_without_holding_it(tub_v2, tmp_path):
    set_catalog_line(tub_v2, 7, '{"_index": 7, "junk": "' + "x" * (8 << 20) + '"}')
    status, _, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert status == 0 and (tub["read"], tub["accepted"], tub["rejected"]) == (50, 47, 1)
    assert reasons(tub)[7].startswith("malformed record: a line of 8,388,6")
    assert "--max-line-bytes" in reasons(tub)[7]
    source = Source(tub_v2, "v2", "tub_v2")
    tracemalloc.start()
    try:
        read_v2_tub(source, RecordValidator("tub_v2_record"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20  # the 8 MiB line is streamed past, never held (the limit is 1 MiB)


def test_the_record_budget_stops_a_catalog_of_empty_lines_early(tub_v2, tmp_path):
    (tub_v2 / "catalog_2.catalog").write_bytes(b"\n" * 1_000_000)
    status, err, _ = run(tub_v2, tmp_path / "out", "--max-tub-records", "1000")
    assert_refused(status, err, "tub_v2 holds more records than the limit of 1,000 records")
    budget = RecordBudget(DataLimits(tub_records=1000))
    with pytest.raises(Exception, match="more records"):
        read_v2_tub(Source(tub_v2, "v2", "tub_v2"), RecordValidator("tub_v2_record"), budget.limits, budget)
    assert budget.total == 1001  # it stopped at the first record over the limit


def test_an_oversized_image_file_is_rejected(tub_v2, tmp_path):
    image = tub_v2 / "images" / "9_cam_image_array_.jpg"
    image.write_bytes(image.read_bytes() + b"\0" * 20_000)  # trailing bytes: still a valid JPEG
    status, _, report = run(tub_v2, tmp_path / "out", "--max-image-bytes", "16000")
    tub = only_tub(report)
    assert status == 0 and list(reasons(tub)) == [9]
    assert reasons(tub)[9] == (
        "image unreadable: 9_cam_image_array_.jpg is over the limit of 16,000 bytes (--max-image-bytes)"
    )


def test_an_image_header_claiming_huge_pixels_is_rejected_before_decoding(tub_v2, tmp_path):
    (tub_v2 / "images" / "11_cam_image_array_.jpg").write_bytes(png_header(8000, 8000))
    status, _, report = run(tub_v2, tmp_path / "out")
    assert status == 0
    assert (
        reasons(only_tub(report))[11]
        == "image wrong size: 11_cam_image_array_.jpg is 8000x8000, expected 160x120"
    )


def test_a_class_id_of_10_to_the_20_is_rejected_in_bounded_cost(tmp_path):
    lines = [gt_line(f"{i}.jpg", i % 2, ["cat", "dog"][i % 2]) for i in range(10)]
    lines[3] = gt_line("3.jpg", 10**20, "whale")
    lines[4] = gt_line("4.jpg", 1000, "mouse")  # the first id over the default --max-classes
    root = gt_dataset(tmp_path / "in", lines)
    status, err, report = run_bounded(root, tmp_path / "out", "--max-reject-fraction", "0.3")
    assert status == 0, err
    source = only_tub(report)
    assert (source["read"], source["accepted"], source["rejected"]) == (10, 8, 2)
    assert reasons(source)[3].startswith(
        "out of range: animal: class id 100000000000000000000 is not in 0..999"
    )
    assert reasons(source)[4].startswith("out of range: animal: class id 1000")
    classes = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())["classes"]
    assert classes == ["cat", "dog"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (gt_line("0.jpg", 0, "c" * 300), "schema: animal-metadata: class-name longer than 256"),
        (gt_line("s3://b/" + "k" * 2000, 0), "schema: source-ref of 2,007 bytes"),
        (gt_line("s3://b/" + "a/" * 40 + "0.jpg", 0), "schema: source-ref has more than 32 path components"),
        ('{"source-ref": "0.jpg", "junk": "' + "x" * (2 << 20) + '"}', "malformed record: a line of 2,097,"),
    ],
    ids=["class-name", "long-ref", "deep-ref", "long-line"],
)
def test_ground_truth_records_over_a_bound_are_rejected(tmp_path, line, reason):
    lines = [gt_line(f"{i}.jpg", i % 2, ["cat", "dog"][i % 2]) for i in range(10)]
    lines[5] = line
    root = gt_dataset(tmp_path / "in", lines)
    status, _, report = run(root, tmp_path / "out")
    source = only_tub(report)
    assert status == 0 and list(reasons(source)) == [5] and reasons(source)[5].startswith(reason)


def test_warnings_are_bounded(tub_v2, tmp_path):
    edit_manifest(tub_v2, paths=[f"catalog_{i}.catalog" for i in range(3, 300)], current_index=0)
    status, _, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert status == 1 and tub["read"] == 0  # nothing to read: the quality gate fails, the report is there
    assert len(tub["warnings"]) == 51 and tub["warnings"][-1].startswith("... and 248 more warnings")


def test_a_hostile_catalog_manifest_start_index_falls_back_to_line_order(tub_v2, tmp_path):
    meta = tub_v2 / "catalog_1.catalog_manifest"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "start_index": 10**20}) + "\n")
    status, _, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert status == 0 and (tub["accepted"], tub["rejected"]) == (48, 0)
    assert any("start_index 100000000000000000000 is not a record index" in w for w in tub["warnings"])
