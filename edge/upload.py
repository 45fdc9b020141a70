"""``robocar-edge upload``: the car's closed tub sessions become archives under the raw-data prefix.

One pass (``upload_pass``) does two things:

1. **Queue.** Every closed SESSION of every tub under the tubs folder (``closed_sessions``; the recorder
   rotates sessions inside one tub, ``edge/record.py``) is re-written as a tub v2 of its own
   (``record.write_session_tub``: that session's records and images only, same session, same bytes) and
   archived reproducibly (``edge.archives``: same bytes, same SHA-256) into the queue folder, and a job
   file ``jobs/<sha256>.json`` is written atomically next to it. The queue is plain files, so it survives
   a reboot; a session already queued (same tub, same session id, same catalog lines) is not archived
   again. A tub that grows by new sessions thus never sends the old ones again (Preprocess reads every
   record once), and the session a recorder has open (its lock held, the session named) is never sent.
2. **Upload.** Each pending job goes to ``s3://<bucket>/<prefix>/raw/<car-id>/<sha256>.tar.gz``, named by
   content: when that object already exists with our SHA-256 (``x-amz-meta-sha256``), the job is done
   without sending a byte, so a retry or a second upload of the same tub is a no-op and the new-data rule
   (``pipelines/events.py``: an archive under the raw prefix) starts exactly one execution per archive.
   On AWS the archive is sent as a multipart upload whose upload id and finished parts are recorded in the
   job file after each part: a restart (dropped connection, reboot) asks S3 which parts it holds
   (ListParts) and sends only the others. The local workspace's folder client has no multipart calls; it
   gets the same archive with one PutObject through the same client interface.

``--max-rate`` paces the parts with a token bucket (``TokenBucket``): the average rate stays under the cap,
a burst is at most one part.

S3 rules used here (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html): a part is 5 MiB to
5 GiB except the last, at most 10,000 parts per upload; object keys
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html) are at most 1,024 UTF-8 bytes and
the safe characters are letters, digits and ``!-_.*'()/``, so a car id is limited to those.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import record
from edge.archives import write_reproducible_tar_gz
from edge.atomic_files import atomic_write_json
from edge.workspace import write_object

log = logging.getLogger("robocar.edge.upload")

JOB_FORMAT = "robocar-upload/1"
TUB_MANIFEST = "manifest.json"  # the file that completes a donkeycar v2 tub (pipelines/events.py)
MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # qfacts.html: parts are at least 5 MiB, the last excepted
MAX_PART_SIZE = 5 * 1024 * MIB  # qfacts.html: at most 5 GiB
MAX_PARTS = 10_000  # qfacts.html: at most 10,000 parts per upload
DEFAULT_PART_SIZE = 8 * MIB  # what the AWS CLI uses (multipart_chunksize default)
S3_KEY_MAX_BYTES = 1024  # object-keys.html
# Every part carries a CRC32 that S3 checks on receipt; an upload created with a checksum algorithm needs
# each part's checksum in CompleteMultipartUpload:
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
CHECKSUM_ALGORITHM = "CRC32"
CHECKSUM_MEMBER = "ChecksumCRC32"
SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256; HeadObject returns it in Metadata
CAR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # object-keys.html's safe characters, no '/'
ARCHIVE_CONTENT_TYPE = "application/gzip"


class UploadError(Exception):
    """Bad input to the upload (a car id S3 cannot hold, a job file that is not ours): one line, exit 2."""


# ---------------------------------------------------------------- which sessions are closed
def closed_sessions(tub_root: Path) -> list[record.TubSession]:
    """The closed sessions of every tub under ``tub_root`` (``tub_root`` itself, or folders below it
    holding a ``manifest.json``; a tub's own sub-folders, e.g. ``images/``, are not searched), by tub
    path, each tub's in recording order.

    A session is closed when no recorder will add to it (``record.closed_sessions``): a recorder holds
    an exclusive ``flock`` on ``<tub>/.lock`` while it writes and names its open session in
    ``<tub>/.open_session`` before that session's first record, so every session listed before it is
    whole. A recorder that crashed lost its lock with its process: all its sessions are closed (read as
    reopening would repair them: no torn record). A tub never recorded here (copied in) gets its
    ``.lock`` from the reader, so a recorder starting on it waits for the read; its sessions are closed
    as soon as its manifest is whole and every catalog it lists exists.
    """
    root = Path(tub_root)
    if not root.is_dir():
        raise UploadError(f"the tubs folder {root} does not exist")
    found: list[record.TubSession] = []
    for tub in _tubs(root):
        try:
            found += record.closed_sessions(tub)
        except record.RecordError as exc:  # a manifest cut short or being copied: the next pass
            log.info("%s: not read this pass: %s", tub, exc)
    return found


def _tubs(root: Path) -> Iterator[Path]:
    if (root / TUB_MANIFEST).is_file():
        yield root
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
            yield from _tubs(child)


def tub_members(tub: Path) -> dict[str, Path]:
    """An archive's members: every regular file of ``tub`` under ``<tub name>/`` (the layout Preprocess
    reads, ``processing/tubs.py``), without the writer's lock and marker (dot files)."""
    members: dict[str, Path] = {}
    for path in sorted(tub.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            members[f"{tub.name}/{path.relative_to(tub).as_posix()}"] = path
    return members


# ---------------------------------------------------------------- the queue on disk
@dataclass
class Job:
    """One archive to upload; ``jobs/<sha256>.json`` in the queue folder."""

    sha256: str
    size: int
    session: str  # the tub's path
    stamp: str  # record.TubSession.digest: the session's catalog lines
    state: str = "queued"  # queued -> uploaded | already-uploaded
    upload_id: str | None = None
    part_size: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"PartNumber", "ETag"} done so far
    key: str | None = None
    session_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": JOB_FORMAT, **self.__dict__}

    @classmethod
    def from_dict(cls, document: Any, path: Path) -> Job:
        if not isinstance(document, dict) or document.get("format") != JOB_FORMAT:
            raise UploadError(f"{path} is not an upload job ({JOB_FORMAT})")
        fields = {k: v for k, v in document.items() if k in cls.__dataclass_fields__}
        return cls(**fields)

    @property
    def done(self) -> bool:
        return self.state in ("uploaded", "already-uploaded")


class UploadQueue:
    """``<folder>/jobs/<sha256>.json`` (each written atomically) and ``<folder>/archives/<sha256>.tar.gz``.

    A job's archive is deleted once uploaded (the car's SD card is small); its job file stays, a few
    hundred bytes, as the record that this session was sent.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.jobs_dir = self.folder / "jobs"
        self.archives_dir = self.folder / "archives"

    def archive_path(self, sha256: str) -> Path:
        return self.archives_dir / f"{sha256}.tar.gz"

    def job_path(self, sha256: str) -> Path:
        return self.jobs_dir / f"{sha256}.json"

    def jobs(self) -> list[Job]:
        if not self.jobs_dir.is_dir():
            return []
        found = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                document = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UploadError(f"{path}: unreadable job file ({exc})") from exc
            found.append(Job.from_dict(document, path))
        return found

    def save(self, job: Job) -> None:
        atomic_write_json(self.job_path(job.sha256), job.to_dict())

    def enqueue(self, session: record.TubSession, emit: Callable[[str], None]) -> Job | None:
        """Re-write ``session`` as a tub of its own, archive and queue it; None when this session (same
        tub, id and lines) or its bytes are queued already."""
        known = self.jobs()
        tub = str(session.tub)
        identity = (tub, session.session_id, session.digest)
        if any((job.session, job.session_id, job.stamp) == identity for job in known):
            return None
        self.archives_dir.mkdir(parents=True, exist_ok=True)
        staging = self.folder / "staging" / str(os.getpid())
        partial = self.archives_dir / f".incoming-{os.getpid()}.tar.gz"
        try:
            shutil.rmtree(staging, ignore_errors=True)  # what a crash in here left
            staging.mkdir(parents=True)
            records = record.write_session_tub(session, staging / session.name)
            members = tub_members(staging / session.name)
            written = write_reproducible_tar_gz(members, partial)
            sha256 = written["sha256"]
            same_bytes = [job for job in known if job.sha256 == sha256]
            if same_bytes:  # the same session copied or moved: remember it as archived
                same_bytes[0].session, same_bytes[0].session_id = tub, session.session_id
                same_bytes[0].stamp = session.digest
                self.save(same_bytes[0])
                return None
            os.replace(partial, self.archive_path(sha256))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        job = Job(sha256, written["size_bytes"], tub, session.digest, session_id=session.session_id)
        self.save(job)
        emit(f"queued {tub} session {session.session_id or '-'} -> {sha256[:12]} ({_mib(job.size)}, "
             f"{records} records)")  # fmt: skip
        return job


# ---------------------------------------------------------------- pacing
class TokenBucket:
    """Caps the average rate at ``rate`` bytes/s. ``take(n)`` waits until ``n`` bytes are allowed; it may
    run into debt (a part is larger than the bucket), which the next ``take`` waits off. ``clock`` and
    ``sleep`` are injectable so a test checks the pacing without timing anything."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise UploadError(f"--max-rate must be positive, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else rate  # one second's worth may go at once
        self.clock = clock
        self.sleep = sleep
        self.tokens = self.burst
        self.last = clock()

    def take(self, amount: int) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 0:  # pay off the previous part's debt first
            self.sleep(-self.tokens / self.rate)
            self.last = self.clock()
            self.tokens = 0.0
        self.tokens -= amount


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:/s)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}


def parse_rate(text: str) -> float:
    """``--max-rate``: bytes per second, with an optional binary suffix: ``500K``, ``2M``, ``1.5MiB/s``."""
    match = _RATE.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UploadError(f"--max-rate {text!r} is not a rate such as 500K or 2M (bytes per second)")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


# ---------------------------------------------------------------- where it goes
@dataclass(frozen=True)
class Destination:
    bucket: str
    prefix: str
    car_id: str

    def key(self, sha256: str) -> str:
        """``<prefix>/raw/<car-id>/<sha256>.tar.gz``: under the raw prefix, so the new-data rule sees it."""
        if not CAR_ID.fullmatch(self.car_id):
            raise UploadError(
                f"car id {self.car_id!r}: use 1-64 letters, digits, '.', '_' or '-' "
                "(S3's safe key characters)"
            )
        parts = [self.prefix.strip("/"), "raw", self.car_id, f"{sha256}.tar.gz"]
        key = "/".join(part for part in parts if part)
        if len(key.encode()) > S3_KEY_MAX_BYTES:
            raise UploadError(f"the key {key[:60]}... is longer than S3's {S3_KEY_MAX_BYTES} bytes")
        return key

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha256)}"


def default_car_id() -> str:
    """The host name, reduced to S3's safe characters (``robocar-edge upload --car-id`` overrides it)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", os.uname().nodename).strip(".-_")[:64]
    return cleaned or "car"


# ---------------------------------------------------------------- sending
def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The SHA-256 of the object at ``key`` (its metadata), or None when there is none.

    S3 returns user metadata on HeadObject. The local folder client keeps no metadata: there the object's
    bytes are hashed (a local file, no network).
    """
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        # 403: S3 answers a HEAD of a missing key with 403 to a caller without s3:ListBucket on it, as
        # the uploader policy is (its listing is conditioned on s3:prefix, which a HEAD does not carry):
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
        if _error_code(exc) in ("404", "NoSuchKey", "NotFound", "403", "Forbidden"):
            return None
        raise
    recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
    if recorded:
        return str(recorded)
    if _supports_multipart(s3):  # an object of the same name that someone else put there
        return None
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(MIB), b""):
        digest.update(chunk)
    body.close()
    return digest.hexdigest()


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _supports_multipart(s3: Any) -> bool:
    return callable(getattr(s3, "create_multipart_upload", None))


def part_size_for(size: int, wanted: int = DEFAULT_PART_SIZE) -> int:
    """The part size: ``wanted`` within S3's 5 MiB..5 GiB, grown so the archive needs at most 10,000 parts."""
    part = min(max(wanted, MIN_PART_SIZE), MAX_PART_SIZE)
    while -(-size // part) > MAX_PARTS:
        part *= 2
    return part


@dataclass
class Uploader:
    """Sends the queue's jobs with one S3 client (boto3's, or the local folder client)."""

    s3: Any
    queue: UploadQueue
    destination: Destination
    bucket_rate: TokenBucket | None = None
    part_size: int = DEFAULT_PART_SIZE
    emit: Callable[[str], None] = print

    def upload(self, job: Job) -> None:
        """Upload one job to the end, or raise (the job file keeps what was done)."""
        key = self.destination.key(job.sha256)
        uri = f"s3://{self.destination.bucket}/{key}"
        job.key = key
        if stored_sha256(self.s3, self.destination.bucket, key) == job.sha256:
            self._finish(job, "already-uploaded")
            self.emit(f"already uploaded {uri}: nothing to send")
            return
        archive = self.queue.archive_path(job.sha256)
        if not archive.is_file():
            raise UploadError(f"the archive {archive} of queued job {job.sha256[:12]} is missing")
        if _supports_multipart(self.s3):
            self._multipart(job, archive, key, uri)
        else:
            self._put(job, archive, key)
        self._finish(job, "uploaded")
        self.emit(f"uploaded {uri} ({_mib(job.size)})")

    def _put(self, job: Job, archive: Path, key: str) -> None:
        """One PutObject: the local folder client (no multipart there), and archives of one part. The car's
        own local client only reads; it writes into the workspace through ``edge.workspace.write_object``."""
        if self.bucket_rate is not None:
            self.bucket_rate.take(job.size)
        if not hasattr(self.s3, "put_object"):
            write_object(self.s3.layout, self.destination.bucket, key, archive.read_bytes())
            return
        with archive.open("rb") as body:
            self.s3.put_object(
                Bucket=self.destination.bucket, Key=key, Body=body,
                ContentType=ARCHIVE_CONTENT_TYPE, Metadata={SHA256_METADATA: job.sha256},
            )  # fmt: skip

    def _multipart(self, job: Job, archive: Path, key: str, uri: str) -> None:
        bucket = self.destination.bucket
        done = self._resume(job, key)
        if job.upload_id is None:
            job.part_size = part_size_for(job.size, self.part_size)
            job.upload_id = self.s3.create_multipart_upload(
                Bucket=bucket,
                Key=key,
                ContentType=ARCHIVE_CONTENT_TYPE,
                Metadata={SHA256_METADATA: job.sha256},
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )["UploadId"]
            job.parts = []
            self.queue.save(job)
        total = max(1, -(-job.size // job.part_size))
        with archive.open("rb") as handle:
            for number in range(1, total + 1):
                if number in done:
                    continue
                handle.seek((number - 1) * job.part_size)
                data = handle.read(job.part_size)
                if self.bucket_rate is not None:
                    self.bucket_rate.take(len(data))
                sent = self.s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=job.upload_id, PartNumber=number, Body=data,
                    ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                )  # fmt: skip
                part = {"PartNumber": number, "ETag": sent["ETag"], CHECKSUM_MEMBER: sent[CHECKSUM_MEMBER]}
                job.parts = sorted([*job.parts, part], key=_part_number)
                self.queue.save(job)  # a restart from here sends only the parts after this one
                self.emit(
                    f"{uri}: part {number}/{total} "
                    f"({_mib(min(job.size, number * job.part_size))} of {_mib(job.size)})"
                )
        self.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=job.upload_id, MultipartUpload={"Parts": job.parts}
        )

    def _resume(self, job: Job, key: str) -> set[int]:
        """The part numbers S3 holds for the job's upload (ListParts is what counts, not our notes); an
        upload S3 no longer knows (aborted, expired) starts over."""
        if job.upload_id is None:
            return set()
        try:
            listed = self._listed_parts(key, job.upload_id)
        except self.s3.exceptions.ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise
            self.emit(f"s3://{self.destination.bucket}/{key}: the earlier upload is gone, starting over")
            job.upload_id, job.parts = None, []
            return set()
        job.parts = sorted(_with_checksums(listed, job.parts), key=_part_number)
        self.queue.save(job)
        if listed:
            self.emit(f"resuming s3://{self.destination.bucket}/{key}: {len(listed)} part(s) already there")
        return {part["PartNumber"] for part in job.parts}

    def _listed_parts(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        marker: dict[str, int] = {}  # ListParts pages 1,000 parts at a time (PartNumberMarker: an integer)
        while True:
            page = self.s3.list_parts(Bucket=self.destination.bucket, Key=key, UploadId=upload_id, **marker)
            parts += [
                {name: p[name] for name in ("PartNumber", "ETag", CHECKSUM_MEMBER) if name in p}
                for p in page.get("Parts", [])
            ]
            if not page.get("IsTruncated"):
                return parts
            marker = {"PartNumberMarker": int(page["NextPartNumberMarker"])}

    def _finish(self, job: Job, state: str) -> None:
        job.state, job.upload_id, job.parts = state, None, []
        self.queue.save(job)
        with contextlib.suppress(FileNotFoundError):
            self.queue.archive_path(job.sha256).unlink()


def _with_checksums(listed: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts S3 lists that CompleteMultipartUpload can name: each with its CRC32, from the listing or
    else from our record of the same part (same ETag). A part known by neither (the car stopped between
    UploadPart's answer and saving it) is left out, so it is sent again (the same number replaces it)."""
    noted = {(part["PartNumber"], part["ETag"]): part.get(CHECKSUM_MEMBER) for part in recorded}
    complete = []
    for part in listed:
        checksum = part.get(CHECKSUM_MEMBER) or noted.get((part["PartNumber"], part["ETag"]))
        if checksum:
            complete.append({**part, CHECKSUM_MEMBER: checksum})
    return complete


def _part_number(part: dict[str, Any]) -> int:
    return int(part["PartNumber"])


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


# ---------------------------------------------------------------- one pass
@dataclass
class PassReport:
    queued: int = 0
    uploaded: int = 0
    already_uploaded: int = 0
    failed: list[str] = field(default_factory=list)  # "<sha256[:12]>: <why>", the job stays queued

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (
            f"{self.queued} session(s) queued, {self.uploaded} uploaded, {self.already_uploaded} already "
            f"uploaded, {len(self.failed)} failed (kept in the queue)"
        )


def transient_errors(s3: Any) -> tuple[type[BaseException], ...]:
    """What a dropped or refused connection raises: the job stays queued and the next pass resumes it."""
    errors: list[type[BaseException]] = [OSError, s3.exceptions.ClientError]
    with contextlib.suppress(ImportError):  # botocore is there whenever boto3 is (AWS); not locally
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    return tuple(errors)


def upload_pass(
    tub_root: Path, queue: UploadQueue, uploader: Uploader, emit: Callable[[str], None] = print
) -> PassReport:
    """Queue every closed session not queued yet, then send every pending job (oldest session first)."""
    report = PassReport()
    for session in closed_sessions(tub_root):
        if queue.enqueue(session, emit) is not None:
            report.queued += 1
    retry = transient_errors(uploader.s3)
    for job in queue.jobs():
        if job.done:
            continue
        try:
            uploader.upload(job)
        except UploadError:
            raise
        except retry as exc:
            report.failed.append(f"{job.sha256[:12]}: {type(exc).__name__}: {exc}")
            emit(
                f"upload of {job.session} session {job.session_id or '-'} ({job.sha256[:12]}) stopped: "
                f"{exc}; it stays queued"
            )
            continue
        if job.state == "uploaded":
            report.uploaded += 1
        else:
            report.already_uploaded += 1
    return report
