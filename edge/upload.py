"""``robocar-edge upload``: the car's closed tub sessions become archives under the raw-data prefix.

One pass (``upload_pass``) does two things:

1. **Queue.** Every closed session under the tubs folder (``closed_sessions``) is archived reproducibly
   (``edge.archives``: same tub, same bytes, same SHA-256) into the queue folder, and a job file
   ``jobs/<sha256>.json`` is written atomically next to it. The queue is plain files, so it survives a
   reboot; a session already queued (same manifest, same files) is not archived again.
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.archives import write_reproducible_tar_gz
from edge.atomic_files import atomic_write_json
from edge.workspace import write_object

try:  # fcntl is POSIX-only; the car is Linux
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("robocar.edge.upload")

JOB_FORMAT = "robocar-upload/1"
TUB_MANIFEST = "manifest.json"  # the file that completes a donkeycar v2 tub (pipelines/events.py)
WRITER_LOCK = ".lock"  # a recorder holds an exclusive flock on <session>/.lock while it writes
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
def closed_sessions(tub_root: Path) -> list[Path]:
    """The tub sessions under ``tub_root`` that no recorder writes any more, sorted by path.

    A session is a folder holding ``manifest.json`` (``tub_root`` itself, or a folder below it; a tub's
    own sub-folders, e.g. ``images/``, are not searched). It is closed when

    - its manifest is complete: the five JSON lines donkeycar's tub v2 writes (inputs, types, metadata,
      sessions, catalog state) parse, and every catalog the last line lists exists; and
    - no writer holds it: the recorder keeps an exclusive ``flock`` on ``<session>/.lock`` while it
      writes and releases it when it rotates or stops. Here we try to take that lock without waiting;
      getting it means nobody writes. A recorder that crashed lost its lock with its process, so its
      session counts as closed too, and a session without a ``.lock`` (copied in, older recorders) is
      closed as soon as its manifest is complete.
    """
    root = Path(tub_root)
    if not root.is_dir():
        raise UploadError(f"the tubs folder {root} does not exist")
    return [
        session for session in _sessions(root) if _manifest_complete(session) and not _being_written(session)
    ]


def _sessions(root: Path) -> Iterator[Path]:
    if (root / TUB_MANIFEST).is_file():
        yield root
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.is_symlink():
            yield from _sessions(child)


def _manifest_complete(session: Path) -> bool:
    try:
        lines = (session / TUB_MANIFEST).read_text().splitlines()
        if len(lines) < 5:
            return False
        documents = [json.loads(line) for line in lines[:5]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    catalogs = documents[4].get("paths") if isinstance(documents[4], dict) else None
    if not isinstance(catalogs, list) or not all(isinstance(name, str) for name in catalogs):
        return False
    return all((session / name).is_file() for name in catalogs)


def _being_written(session: Path) -> bool:
    lock = session / WRITER_LOCK
    if fcntl is None or not lock.is_file():
        return False
    with open(lock, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def session_members(session: Path) -> dict[str, Path]:
    """The archive's members: every regular file of the session under ``<session name>/`` (the layout
    Preprocess reads, ``processing/tubs.py``), without the writer's lock file."""
    members: dict[str, Path] = {}
    for path in sorted(session.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != WRITER_LOCK:
            members[f"{session.name}/{path.relative_to(session).as_posix()}"] = path
    return members


def session_stamp(members: dict[str, Path]) -> str:
    """What identifies a session's files without reading them (names, sizes, modification times): an
    unchanged stamp means the session was archived already, so a watch does not re-read every image."""
    digest = hashlib.sha256()
    for name, path in sorted(members.items()):
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- the queue on disk
@dataclass
class Job:
    """One archive to upload; ``jobs/<sha256>.json`` in the queue folder."""

    sha256: str
    size: int
    session: str
    stamp: str
    state: str = "queued"  # queued -> uploaded | already-uploaded
    upload_id: str | None = None
    part_size: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"PartNumber", "ETag"} done so far
    key: str | None = None

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

    def enqueue(self, session: Path, emit: Callable[[str], None]) -> Job | None:
        """Archive ``session`` and queue it; None when this exact session (or its bytes) is queued already."""
        members = session_members(session)
        stamp = session_stamp(members)
        known = self.jobs()
        if any(job.stamp == stamp and job.session == str(session) for job in known):
            return None
        self.archives_dir.mkdir(parents=True, exist_ok=True)
        partial = self.archives_dir / f".incoming-{os.getpid()}.tar.gz"
        try:
            written = write_reproducible_tar_gz(members, partial)
            sha256 = written["sha256"]
            same_bytes = [job for job in known if job.sha256 == sha256]
            if same_bytes:  # touched, copied or moved, not changed: remember it as archived
                same_bytes[0].session, same_bytes[0].stamp = str(session), stamp
                self.save(same_bytes[0])
                return None
            os.replace(partial, self.archive_path(sha256))
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        job = Job(sha256=sha256, size=written["size_bytes"], session=str(session), stamp=stamp)
        self.save(job)
        emit(f"queued {session} -> {sha256[:12]} ({_mib(job.size)}, {len(members)} files)")
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
            emit(f"upload of {job.session} ({job.sha256[:12]}) stopped: {exc}; it stays queued")
            continue
        if job.state == "uploaded":
            report.uploaded += 1
        else:
            report.already_uploaded += 1
    return report
