"""`robocar-edge upload`: closed sessions -> reproducible archives -> S3 by content, resumable, paced.

AWS is moto (in process); each request is also checked against botocore's model (``validated``). The
local workspace is the folder client, polled by the local new-data rule (``pipelines/local/trigger.py``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from edge import record, upload
from edge.cli import main as edge_main
from pipelines.aws_rules import validated
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import TriggerConfig, poll_once
from processing.preprocess import main as preprocess_main
from processing.records import RecordValidator
from processing.tubs import Source, read_v2_tub

BUCKET = "robocar-data-123456789012"
MIB = 1024 * 1024


INPUTS = (("cam/image_array", "image_array"), ("user/angle", "float"))
CLOCK = 1_700_000_000.0  # a fixed clock: the same records give the same session ids and bytes


def write_session(folder: Path, *, image_bytes: list[int], seed: int = 0) -> Path:
    """A donkeycar tub v2 of one closed session, through the recorder's TubWriter; its images are random,
    incompressible bytes ending as a JPEG does (what the uploader checks of a crashed tub's images)."""
    rng = __import__("random").Random(seed)
    writer = record.TubWriter(folder, INPUTS, sync_interval_s=None, clock=lambda: CLOCK)
    for index, size in enumerate(image_bytes):
        image = rng.randbytes(size - 2) + record.JPEG_END
        writer.write({"cam/image_array": image, "user/angle": index / 10}, CLOCK + index / 20)
    writer.close()
    return folder


def names(sessions: list[record.TubSession]) -> list[tuple[str, str]]:
    return [(session.tub.name, session.session_id) for session in sessions]


class Recording:
    """A client proxy that records each call's name and can fail ``upload_part`` after ``fail_after``."""

    def __init__(self, client: Any, fail_after: int | None = None) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_after = fail_after

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            sent = sum(1 for called, _ in self.calls if called == "upload_part")
            if name == "upload_part" and self.fail_after is not None and sent >= self.fail_after:
                raise ConnectionResetError("the car lost its Wi-Fi")
            self.calls.append((name, kwargs))
            return attribute(*args, **kwargs)

        return call

    def parts_sent(self) -> list[int]:
        return [kwargs["PartNumber"] for name, kwargs in self.calls if name == "upload_part"]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make_uploader(s3: Any, queue: upload.UploadQueue, **kwargs: Any) -> upload.Uploader:
    destination = upload.Destination(BUCKET, "robocar", "car-7")
    return upload.Uploader(s3, queue, destination, emit=lambda line: None, **kwargs)


@pytest.fixture()
def moto_s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield validated(client, "s3")


# ---------------------------------------------------------------- closed sessions
def test_a_session_is_closed_when_its_manifest_is_complete_and_no_recorder_writes_it(tmp_path: Path) -> None:
    write_session(tmp_path / "tubs" / "a", image_bytes=[10])
    recording = record.TubWriter(tmp_path / "tubs" / "b", INPUTS, sync_interval_s=None, clock=lambda: CLOCK)
    recording.write({"cam/image_array": b"\xff\xd9", "user/angle": 0.0})
    half = write_session(tmp_path / "tubs" / "c", image_bytes=[10])
    (half / "catalog_0.catalog").unlink()  # the manifest names a catalog not copied in yet
    torn = write_session(tmp_path / "tubs" / "d", image_bytes=[10])
    (torn / "manifest.json").write_text('["cam/image_array"]\n')  # a manifest cut short
    write_session(tmp_path / "tubs" / "e", image_bytes=[10])  # its recorder stopped: the lock file stays
    copied = write_session(tmp_path / "tubs" / "f", image_bytes=[10])
    (copied / record.LOCK).unlink()  # a tub copied in from elsewhere
    day = record.session_full_id(0, CLOCK)

    assert names(upload.closed_sessions(tmp_path / "tubs")) == [("a", day), ("e", day), ("f", day)]
    assert (copied / record.LOCK).is_file()  # a recorder starting on it now waits for the reader
    recording.close()
    assert names(upload.closed_sessions(tmp_path / "tubs")) == [
        ("a", day),
        ("b", day),
        ("e", day),
        ("f", day),
    ]
    assert names(upload.closed_sessions(tmp_path / "tubs" / "a")) == [("a", day)]  # a tub given itself


def test_the_same_session_gives_the_same_archive_bytes_wherever_and_whenever_it_was_written(
    tmp_path: Path,
) -> None:
    first = write_session(tmp_path / "one" / "tub_1", image_bytes=[1000, 2000], seed=3)
    second = write_session(tmp_path / "two" / "tub_1", image_bytes=[1000, 2000], seed=3)
    os.utime(second / "images" / "0_cam_image_array_.jpg", (1, 1))
    (first_session,), (second_session,) = upload.closed_sessions(first), upload.closed_sessions(second)
    queue_a, queue_b = upload.UploadQueue(tmp_path / "qa"), upload.UploadQueue(tmp_path / "qb")
    job_a, job_b = queue_a.enqueue(first_session, print), queue_b.enqueue(second_session, print)
    assert job_a is not None and job_b is not None
    assert job_a.sha256 == job_b.sha256
    archive = queue_a.archive_path(job_a.sha256)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == job_a.sha256
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    folder = f"tub_1_{record.session_full_id(0, CLOCK)}"
    assert [m.name for m in members] == [  # sorted, under <tub>_<session> (what Preprocess reads)
        f"{folder}/catalog_0.catalog",
        f"{folder}/catalog_0.catalog_manifest",
        f"{folder}/images/0_cam_image_array_.jpg",
        f"{folder}/images/1_cam_image_array_.jpg",
        f"{folder}/manifest.json",
    ]  # no .lock, no .open_session
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
    assert queue_a.enqueue(first_session, print) is None  # queued already: not archived again
    os.utime(first / "manifest.json", (5, 5))  # touched, not changed
    assert queue_a.enqueue(upload.closed_sessions(first)[0], print) is None
    (job,) = queue_a.jobs()
    assert (job.session, job.session_id) == (str(first), record.session_full_id(0, CLOCK))


# ---------------------------------------------------------------- AWS: multipart, resume, no-op
def test_a_dropped_connection_resumes_with_the_parts_s3_does_not_have(tmp_path: Path, moto_s3: Any) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[4 * MIB, 4 * MIB, 3 * MIB])
    queue = upload.UploadQueue(tmp_path / "queue")
    failing = Recording(moto_s3, fail_after=1)

    first = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(failing, queue, part_size=5 * MIB))

    assert (first.queued, first.uploaded, len(first.failed)) == (1, 0, 1)
    assert failing.parts_sent() == [1]
    (job,) = queue.jobs()  # what a reboot finds on disk
    assert job.state == "queued" and job.upload_id and [p["PartNumber"] for p in job.parts] == [1]
    assert job.size > 10 * MIB  # three parts of 5 MiB at most: the last one smaller

    again = Recording(moto_s3)
    second = upload.upload_pass(
        tmp_path / "tubs", upload.UploadQueue(tmp_path / "queue"), make_uploader(again, queue)
    )

    assert (second.queued, second.uploaded, second.failed) == (0, 1, [])
    assert again.parts_sent() == [2, 3]  # part 1 is not sent again
    assert "list_parts" in again.names() and "create_multipart_upload" not in again.names()
    ((_, request),) = [(n, kw) for n, kw in again.calls if n == "complete_multipart_upload"]
    assert [sorted(part) for part in request["MultipartUpload"]["Parts"]] == [
        ["ChecksumCRC32", "ETag", "PartNumber"]
    ] * 3  # S3 checks every part's CRC32, the one sent before the drop included
    key = f"robocar/raw/car-7/{job.sha256}.tar.gz"
    head = moto_s3.head_object(Bucket=BUCKET, Key=key)
    archive = b"".join(moto_s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks())
    assert hashlib.sha256(archive).hexdigest() == job.sha256 == head["Metadata"]["sha256"]
    part_md5s = b"".join(
        hashlib.md5(archive[i : i + 5 * MIB]).digest() for i in range(0, len(archive), 5 * MIB)
    )
    assert head["ETag"] == f'"{hashlib.md5(part_md5s).hexdigest()}-3"'  # S3's multipart ETag: 3 parts
    (done,) = queue.jobs()
    assert done.state == "uploaded" and not queue.archive_path(job.sha256).exists()  # SD card space back


def test_a_part_sent_but_not_noted_before_a_crash_is_sent_again(tmp_path: Path, moto_s3: Any) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[3 * MIB, 3 * MIB])
    queue = upload.UploadQueue(tmp_path / "queue")
    uploader = make_uploader(Recording(moto_s3, fail_after=1), queue, part_size=5 * MIB)
    upload.upload_pass(tmp_path / "tubs", queue, uploader)
    (job,) = queue.jobs()
    job.parts = []  # the car lost power after UploadPart answered, before the job file was saved
    queue.save(job)

    again = Recording(moto_s3)
    report = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(again, queue, part_size=5 * MIB))
    assert report.uploaded == 1 and again.parts_sent() == [1, 2]  # part 1 again: its CRC32 was unknown
    head = moto_s3.head_object(Bucket=BUCKET, Key=job.key)
    assert head["ContentLength"] == job.size and head["Metadata"]["sha256"] == job.sha256


def test_uploading_the_same_tub_again_sends_nothing(tmp_path: Path, moto_s3: Any) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[1000])
    upload.upload_pass(
        tmp_path / "tubs",
        upload.UploadQueue(tmp_path / "q1"),
        make_uploader(moto_s3, upload.UploadQueue(tmp_path / "q1")),
    )

    same_queue = Recording(moto_s3)
    report = upload.upload_pass(
        tmp_path / "tubs",
        upload.UploadQueue(tmp_path / "q1"),
        make_uploader(same_queue, upload.UploadQueue(tmp_path / "q1")),
    )
    assert (report.queued, report.uploaded, report.already_uploaded) == (0, 0, 0) and same_queue.calls == []

    fresh_queue = upload.UploadQueue(tmp_path / "q2")  # a wiped queue, or the tub copied to another car
    other = Recording(moto_s3)
    report = upload.upload_pass(tmp_path / "tubs", fresh_queue, make_uploader(other, fresh_queue))
    assert (report.queued, report.uploaded, report.already_uploaded) == (1, 0, 1)
    assert other.names() == ["head_object"]
    listed = moto_s3.list_objects_v2(Bucket=BUCKET, Prefix="robocar/raw/")["Contents"]
    assert len(listed) == 1


def test_an_upload_s3_forgot_starts_over(tmp_path: Path, moto_s3: Any) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[3 * MIB, 3 * MIB])
    queue = upload.UploadQueue(tmp_path / "queue")
    upload.upload_pass(
        tmp_path / "tubs", queue, make_uploader(Recording(moto_s3, fail_after=1), queue, part_size=5 * MIB)
    )
    (job,) = queue.jobs()
    moto_s3.abort_multipart_upload(Bucket=BUCKET, Key=job.key, UploadId=job.upload_id)  # a lifecycle rule

    again = Recording(moto_s3)
    report = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(again, queue, part_size=5 * MIB))
    assert report.uploaded == 1 and again.parts_sent() == [1, 2]
    assert again.names().count("create_multipart_upload") == 1


# ---------------------------------------------------------------- pacing
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_token_bucket_caps_the_average_rate() -> None:
    clock = FakeClock()
    bucket = upload.TokenBucket(1 * MIB, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.take(5 * MIB)
    # 1 MiB of burst, then each 5 MiB part waits for the previous part's debt: 4 s, then 5 s
    assert clock.slept == [4.0, 5.0]
    clock.now += 100  # idle: the bucket refills to its burst only, not to 100 MiB
    bucket.take(5 * MIB)
    assert clock.slept[-1] == 5.0


def test_max_rate_paces_the_parts_of_an_upload(tmp_path: Path, moto_s3: Any) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[4 * MIB, 4 * MIB, 3 * MIB])
    clock = FakeClock()
    queue = upload.UploadQueue(tmp_path / "queue")
    bucket = upload.TokenBucket(upload.parse_rate("1M"), clock=clock, sleep=clock.sleep)
    report = upload.upload_pass(
        tmp_path / "tubs", queue, make_uploader(moto_s3, queue, part_size=5 * MIB, bucket_rate=bucket)
    )
    assert report.uploaded == 1
    assert clock.slept == [4.0, 5.0]  # parts 2 and 3 waited; 10 MiB took 10 s after the 1 MiB burst


def test_rates_and_car_ids_are_checked() -> None:
    assert upload.parse_rate("500K") == 500 * 1024
    assert upload.parse_rate("2MiB/s") == 2 * MIB
    assert upload.parse_rate("1000") == 1000
    for bad in ("fast", "0", "-1M", "2T"):
        with pytest.raises(upload.UploadError):
            upload.parse_rate(bad)
    assert upload.Destination(BUCKET, "/robocar/", "car-7").key("ab") == "robocar/raw/car-7/ab.tar.gz"
    for bad in ("car/7", "../x", "", "ça", "x" * 65):
        with pytest.raises(upload.UploadError):
            upload.Destination(BUCKET, "robocar", bad).key("ab")
    assert upload.part_size_for(10 * MIB, 1 * MIB) == 5 * MIB  # below S3's minimum: raised to it
    assert upload.part_size_for(100_000 * 5 * MIB) == 64 * MIB  # 8 MiB parts would be 62,500 of them


# ---------------------------------------------------------------- local: the same command, the folder client
def test_locally_an_upload_is_one_put_and_a_second_upload_starts_no_second_execution(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    LocalS3Client(workspace).create_bucket(Bucket=BUCKET)
    write_session(tmp_path / "tubs" / "s1", image_bytes=[1000])
    starts: list[dict[str, Any]] = []

    class Starts:  # the pipeline's start, recorded (the real one is exercised by test_closed_loop.py)
        def __init__(self) -> None:
            self.registry = LocalSageMakerClient(workspace)
            self.exceptions = self.registry.exceptions

        def start_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
            starts.append(kwargs)
            return {"PipelineExecutionArn": f"arn:local:execution/{len(starts)}"}

        def describe_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
            return {"PipelineExecutionStatus": "Executing"}

        def __getattr__(self, name: str) -> Any:
            return getattr(self.registry, name)

    config = TriggerConfig(BUCKET, "robocar", "robocar-pipeline", "robocar-pilots")
    argv = ["upload", "--tubs", str(tmp_path / "tubs"), "--local-root", str(workspace), "--bucket", BUCKET,
            "--car-id", "car-7", "--root", str(tmp_path / "car"), "--once"]  # fmt: skip
    assert edge_main(argv) == 0
    poll_once(workspace, LocalS3Client(workspace), Starts(), config)
    assert edge_main(argv) == 0
    assert edge_main([*argv[:-3], "--root", str(tmp_path / "another-car"), "--once"]) == 0  # a fresh queue
    poll_once(workspace, LocalS3Client(workspace), Starts(), config)

    (start,) = starts
    listed = LocalS3Client(workspace).list_objects_v2(Bucket=BUCKET, Prefix="robocar/raw/")["Contents"]
    ((key, size),) = [(item["Key"], item["Size"]) for item in listed]
    assert key.startswith("robocar/raw/car-7/") and key.endswith(".tar.gz") and size > 1000
    archive = LocalS3Client(workspace).uri_to_path(f"s3://{BUCKET}/{key}").read_bytes()
    assert key == f"robocar/raw/car-7/{hashlib.sha256(archive).hexdigest()}.tar.gz"


def test_cli_exit_status_says_whether_the_queue_emptied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_session(tmp_path / "tubs" / "s1", image_bytes=[100])
    base = ["upload", "--tubs", str(tmp_path / "tubs"), "--local-root", str(tmp_path / "ws"),
            "--root", str(tmp_path / "car"), "--once"]  # fmt: skip
    assert edge_main([*base, "--bucket", BUCKET, "--car-id", "car/7"]) == 2  # bad input: one line
    assert "car id 'car/7'" in capsys.readouterr().err
    assert edge_main([*base, "--bucket", BUCKET, "--car-id", "car-7"]) == 1  # no such bucket (yet)
    out = capsys.readouterr().out
    assert "stays queued" in out and "1 failed (kept in the queue)" in out
    LocalS3Client(tmp_path / "ws").create_bucket(Bucket=BUCKET)
    assert edge_main([*base, "--bucket", BUCKET, "--car-id", "car-7"]) == 0  # the next run sends it
    assert "0 session(s) queued, 1 uploaded" in capsys.readouterr().out


# ---------------------------------------------------------------- one closed session = one archive
FRAME = np.full((120, 160, 3), 90, np.uint8)


def drive(writer: record.TubWriter, frames: int, start: int = 0) -> None:
    for k in range(start, start + frames):
        values = record.record_values(FRAME + k % 50, record.Controls((k % 20) / 10 - 1, 0.3), "user")
        writer.write(values, CLOCK + k / 20)


def raw_objects(s3: Any) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="robocar/raw/").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def test_a_growing_tub_sends_each_closed_session_once_and_never_the_open_one(
    tmp_path: Path, moto_s3: Any
) -> None:
    tubs, queue = tmp_path / "tubs", upload.UploadQueue(tmp_path / "queue")
    uploader = make_uploader(moto_s3, queue)
    writer = record.TubWriter(tubs / "car", rotation=record.Rotation(records=10), sync_interval_s=None)
    drive(writer, 25)  # sessions 0 and 1 of 10 records, then 5 records of session 2, still recording
    assert json.loads((tubs / "car" / record.OPEN_SESSION).read_text())["session"] == writer.session[1]

    first = upload.upload_pass(tubs, queue, uploader, emit=lambda line: None)
    assert (first.queued, first.uploaded) == (2, 2) and len(raw_objects(moto_s3)) == 2
    writer.close()
    second = upload.upload_pass(tubs, queue, uploader, emit=lambda line: None)
    assert (second.queued, second.uploaded) == (1, 1) and len(raw_objects(moto_s3)) == 3
    again = Recording(moto_s3)
    third = upload.upload_pass(tubs, queue, make_uploader(again, queue), emit=lambda line: None)
    assert (third.queued, third.uploaded, third.already_uploaded) == (0, 0, 0) and again.calls == []

    grown = record.TubWriter(tubs / "car", sync_interval_s=None)  # the next drive: a new session
    drive(grown, 7, start=25)
    grown.close()
    fourth = upload.upload_pass(tubs, queue, uploader, emit=lambda line: None)
    assert (fourth.queued, fourth.uploaded) == (1, 1)

    # Preprocess over the raw prefix reads each of the 32 records exactly once.
    raw = tmp_path / "raw"
    for key, body in raw_objects(moto_s3).items():
        (raw / key).parent.mkdir(parents=True, exist_ok=True)
        (raw / key).write_bytes(body)
    assert preprocess_main(["--input", str(raw), "--output", str(tmp_path / "out"), "--workers", "1"]) == 0
    report = json.loads((tmp_path / "out" / "report" / "data_report.json").read_text())
    assert sorted(entry["read"] for entry in report["tubs"]) == [5, 7, 10, 10]  # one tub per session
    assert {k: report["total"][k] for k in ("read", "accepted", "rejected", "deleted")} == {
        "read": 32, "accepted": 32, "rejected": 0, "deleted": 0,
    }  # fmt: skip
    stamps = []
    for split in ("train", "validation", "test"):
        for shard in sorted((tmp_path / "out" / split).glob("*.npz")):
            with np.load(shard) as arrays:
                stamps += arrays["timestamp_ms"].tolist()
    assert sorted(stamps) == [int(round((CLOCK + k / 20) * 1000)) for k in range(32)]


def test_a_session_tub_keeps_its_records_and_images_and_counts_from_index_zero(tmp_path: Path) -> None:
    writer = record.TubWriter(tmp_path / "car", rotation=record.Rotation(records=4), sync_interval_s=None)
    drive(writer, 10)
    writer.manifest.deleted_indexes = [5]  # what `donkey tubclean` records
    writer.close()
    source = [json.loads(line) for line in (tmp_path / "car" / "catalog_0.catalog").open()]
    second = upload.closed_sessions(tmp_path / "car")[1]
    assert [r["_index"] for r in second.records] == [4, 5, 6, 7]

    assert record.write_session_tub(second, tmp_path / "one") == 4
    record.write_session_tub(second, tmp_path / "two")
    for name in ("manifest.json", "catalog_0.catalog", "catalog_0.catalog_manifest"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    copied = [json.loads(line) for line in (tmp_path / "one" / "catalog_0.catalog").open()]
    assert [r["_index"] for r in copied] == [0, 1, 2, 3]
    for new, old in zip(copied, source[4:8], strict=True):
        assert {k: v for k, v in new.items() if k not in ("_index", "cam/image_array")} == {
            k: v for k, v in old.items() if k not in ("_index", "cam/image_array")
        }  # same session id, timestamp and controls
        assert (tmp_path / "one" / "images" / new["cam/image_array"]).read_bytes() == (
            tmp_path / "car" / "images" / old["cam/image_array"]
        ).read_bytes()  # the JPEG copied, not re-encoded
    manifest = record.TubManifest.read(tmp_path / "one")
    assert manifest.metadata["robocar_source"] == {
        "tub": "car",
        "session": second.session_id,
        "first_index": 4,
    }
    assert manifest.manifest_metadata["created_at"] == source[4]["_timestamp_ms"] / 1000
    assert manifest.manifest_metadata["sessions"]["all_full_ids"] == [second.session_id]
    assert manifest.current_index == 4
    assert manifest.deleted_indexes == [1]  # record 5 of the tub is record 1 of its session: still deleted


def test_a_second_recorder_on_the_same_tub_is_refused(tmp_path: Path) -> None:
    writer = record.TubWriter(tmp_path / "car", sync_interval_s=None)
    with pytest.raises(record.RecordError, match="being recorded by another process"):
        record.TubWriter(tmp_path / "car", sync_interval_s=None, lock_wait_s=0.0)
    writer.close()
    record.TubWriter(tmp_path / "car", sync_interval_s=None).close()


KILLED_RECORDER = """
import sys
import numpy as np
from edge import record
writer = record.TubWriter(sys.argv[1], rotation=record.Rotation(records=6), sync_interval_s=0.02)
rng = np.random.default_rng(0)
for _ in range(15):
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    print(writer.write(record.record_values(image, record.Controls(0.5, 0.25), "user")), flush=True)
sys.stdin.readline()  # mid-session (the third), the tub open and locked, until killed
"""


def test_a_killed_recorders_sessions_are_closed_and_upload_without_a_torn_record(
    tmp_path: Path, moto_s3: Any
) -> None:
    tub = tmp_path / "tubs" / "car"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RECORDER, str(tub)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stdout is not None
    assert [int(child.stdout.readline()) for _ in range(15)] == list(range(15))
    open_session = json.loads((tub / record.OPEN_SESSION).read_text())["session"]
    assert [len(s.records) for s in upload.closed_sessions(tmp_path / "tubs")] == [6, 6]  # not the open one
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    catalog = tub / record.TubManifest.read(tub).paths[-1]
    with catalog.open("ab") as handle:  # what a power cut could leave too: half a line
        handle.write(b'{"_index": 15, "cam/ima')

    sessions = upload.closed_sessions(tmp_path / "tubs")  # the kernel dropped its lock: all closed
    assert [len(s.records) for s in sessions] == [6, 6, 3] and sessions[-1].session_id == open_session
    queue = upload.UploadQueue(tmp_path / "queue")
    report = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(moto_s3, queue), emit=lambda x: None)
    assert report.uploaded == 3
    read: list[tuple[str, int]] = []
    for number, body in enumerate(raw_objects(moto_s3).values()):
        folder = tmp_path / f"archive-{number}"
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            tar.extractall(folder, filter="data")
        (session_tub,) = folder.iterdir()
        tub_report, candidates = read_v2_tub(Source(session_tub, "v2", "t"), RecordValidator("tub_v2_record"))
        assert (tub_report.rejected, tub_report.read) == (0, len(candidates)), tub_report.to_dict()
        assert [c.index for c in candidates] == list(range(len(candidates)))
        read += [(candidate.session, candidate.index) for candidate in candidates]
    assert len(read) == len(set(read)) == 15  # every record once, the torn line in none
