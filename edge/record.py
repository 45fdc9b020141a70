"""Recording on the car: a donkeycar tub v2 written exactly as donkeycar 5.3.0 writes it, crash-safe.

The layout is donkeycar's (``donkeycar/parts/datastore_v2.py``: Manifest, Catalog, CatalogMetadata;
``donkeycar/parts/tub_v2.py``: Tub), so donkeycar's own ``Tub`` opens our tubs and Preprocess reads them:

* ``manifest.json``: 5 lines of ``json.dumps``: inputs, types, user metadata, manifest metadata
  (``created_at``, ``sessions``), catalog metadata (``paths``, ``current_index``, ``max_len``,
  ``deleted_indexes``);
* ``catalog_N.catalog``: one ``json.dumps(record, allow_nan=False, sort_keys=True)`` line per record,
  a new catalog every ``max_len`` (1000) records;
* ``catalog_N.catalog_manifest``: one sorted-keys line (``created_at``, ``line_lengths``, ``path`` (the
  manifest's own name: donkeycar's quirk), ``start_index``);
* ``images/<index>_cam_image_array_.jpg``: Pillow's JPEG at its default quality (75), as
  ``Image.fromarray(img).save(path)`` writes it;
* each record carries ``_index``, ``_session_id`` (``%y-%m-%d_<n>``, local date, n counting up per tub)
  and ``_timestamp_ms``.

Where we differ on purpose: crash safety. donkeycar rewrites its manifests in place (truncate, then
write), so a power cut can leave ``manifest.json`` with 4 lines, and its last catalog line can be torn.
Here, for every record: the image is written under a temporary name and renamed (no half image under a
record's name), then the catalog line goes out in ONE ``os.write`` of the whole line on an ``O_APPEND``
descriptor, then both manifests are replaced by rename (never half written). A ``kill -9`` at any instant
thus leaves whole records only, at most one more than ``current_index`` counts (donkeycar's ``Tub`` reads
every line either way). A power cut can still lose what the kernel had not written out: the writer
``fsync``s every ``sync_interval_s`` (1 s: at most 20 records at donkeycar's 20 Hz loop), and opening a
tub repairs what is left (``repair_tub``): a torn last line, and the first record whose image is
missing or cut short with all after it, are truncated and counted, ``current_index`` and the
catalog manifest are set from the lines kept, leftover temporary images removed. donkeycar also only
lists a session in ``sessions.all_full_ids`` when its tub is closed; here it is listed with the
session's first record.

Sessions rotate (a new ``_session_id`` in the same tub) after ``Rotation`` records, bytes or seconds, so
a long drive splits into units Preprocess can put in different splits.

One writer, and who may read what: a ``TubWriter`` holds an exclusive ``flock`` on ``<tub>/.lock`` from
open to close (a second recorder on the same tub is refused; the kernel drops the lock with a killed
process) and names the session it writes in ``<tub>/.open_session``, replaced atomically before that
session's first record. So, while the lock is held, every session listed before the named one is closed:
its last record was written before the marker changed. ``closed_sessions`` reads a tub under a shared
lock (or, while a recorder holds it, trusting that order) and ``write_session_tub`` re-writes one closed
session as a tub of its own: what ``robocar-edge upload`` archives (docs/upload.md).

Off the control path: ``Recorder`` hands records to a writer thread through a bounded queue; the drive
loop never waits for the disk. A record that finds the queue full is dropped and counted, never lost
without a word (``RecorderStats``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

try:  # fcntl is POSIX-only; the car is Linux
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("robocar.edge.record")

IMAGES = "images"
MANIFEST = "manifest.json"
CATALOG_MAX_LEN = 1000  # donkeycar Tub(max_catalog_len=1000)
PART_SUFFIX = ".part"  # an image being written; never a record's name
JPEG_END = b"\xff\xd9"  # the EOI marker: a JPEG cut short by a power cut lacks it
# donkeycar's complete.py: the tub's inputs, plus the pilot's outputs when RECORD_DURING_AI is on.
PERSON_INPUTS = (("cam/image_array", "image_array"), ("user/angle", "float"), ("user/throttle", "float"),
                 ("user/mode", "str"))  # fmt: skip
PILOT_INPUTS = (("pilot/angle", "float"), ("pilot/throttle", "float"))
DEFAULT_INPUTS = PERSON_INPUTS + PILOT_INPUTS
# donkeycar's DriveMode values: the person drives ("user"), the pilot steers ("local_angle"), both ("local")
MODES = ("user", "local_angle", "local")
_CATALOG_NAME = re.compile(r"^catalog_([0-9]+)\.catalog$")
_SESSION_NUMBER = re.compile(r"_([0-9]+)$")  # the n of donkeycar's %y-%m-%d_<n>
LOCK = ".lock"  # a TubWriter holds an exclusive flock on it from open to close
OPEN_SESSION = ".open_session"  # {"session": id}: the session the lock's holder writes
# How long a new writer waits for the lock: a reader (the uploader) holds it shared for the few
# milliseconds it takes to read the catalogs; a longer wait means another recorder writes the tub.
LOCK_WAIT_S = 5.0
LOCK_POLL_S = 0.05


class RecordError(Exception):
    """A tub that cannot be recorded into (different inputs, not a tub v2, unreadable)."""


# ---- the layout: one function per file donkeycar writes ------------------------------------------------
def catalog_line(record: Mapping[str, Any]) -> bytes:
    """donkeycar Catalog.write_record: ``json.dumps(record, allow_nan=False, sort_keys=True)`` + newline.

    ASCII only (``ensure_ascii``), so donkeycar's ``line_lengths`` (characters) are our byte counts.
    """
    return (json.dumps(dict(record), allow_nan=False, sort_keys=True) + "\n").encode("ascii")


def catalog_manifest_line(name: str, created_at: float, start_index: int, line_lengths: list[int]) -> bytes:
    """donkeycar CatalogMetadata._update: one sorted-keys line; ``path`` is the manifest's own name."""
    stem = name.removesuffix(".catalog")
    contents = {"path": f"{stem}.catalog_manifest", "created_at": created_at,
                "start_index": start_index, "line_lengths": line_lengths}  # fmt: skip
    return (json.dumps(contents, allow_nan=False, sort_keys=True) + "\n").encode("ascii")


def image_name(index: int, key: str = "cam/image_array") -> str:
    """donkeycar Tub._image_file_name: ``<index>_cam_image_array_.jpg``."""
    return "_".join([str(index), key.replace("/", "_"), ".jpg"])


def encode_jpeg(image: np.ndarray) -> bytes:
    """donkeycar Tub.write_record: ``Image.fromarray(np.uint8(value)).save(path)`` (JPEG, quality 75)."""
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(image)).save(buffer, format="JPEG")
    return buffer.getvalue()


def session_full_id(number: int, at: float | None = None) -> str:
    """donkeycar Manifest.create_new_session_id: ``%y-%m-%d_<n>`` in local time."""
    return f"{time.strftime('%y-%m-%d', time.localtime(at))}_{number}"


@dataclass
class TubManifest:
    """The 5 lines of ``manifest.json``, in donkeycar's key order."""

    inputs: list[str]
    types: list[str]
    metadata: dict[str, Any]
    manifest_metadata: dict[str, Any]
    paths: list[str]
    current_index: int
    max_len: int = CATALOG_MAX_LEN
    deleted_indexes: list[int] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        catalogs = {"paths": self.paths, "current_index": self.current_index, "max_len": self.max_len,
                    "deleted_indexes": sorted(self.deleted_indexes)}  # fmt: skip
        lines = (self.inputs, self.types, self.metadata, self.manifest_metadata, catalogs)
        return "".join(json.dumps(line) + "\n" for line in lines).encode("ascii")

    @classmethod
    def read(cls, tub: Path) -> TubManifest:
        """Parse a donkeycar manifest; one cut short (donkeycar's own torn rewrite) gets its catalog
        line back from the catalogs on disk, its deleted indexes lost (logged)."""
        try:
            lines = (tub / MANIFEST).read_text(encoding="utf-8").splitlines()
            head = [json.loads(line) for line in lines[:4]]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"{tub}/{MANIFEST} is not a donkeycar tub v2 manifest: {exc}") from exc
        if len(head) < 4:
            raise RecordError(f"{tub}/{MANIFEST} has {len(head)} lines; a donkeycar v2 manifest has 5")
        try:
            catalogs = json.loads(lines[4])
        except (IndexError, json.JSONDecodeError):
            found = sorted((int(m[1]), m[0]) for p in tub.iterdir() if (m := _CATALOG_NAME.match(p.name)))
            log.warning("%s/%s lost its catalog line: rebuilt from %d catalogs", tub, MANIFEST, len(found))
            catalogs = {"paths": [name for _, name in found], "current_index": 0}
        return cls(
            inputs=list(head[0]), types=list(head[1]),
            metadata=dict(head[2]), manifest_metadata=dict(head[3]),
            paths=list(catalogs.get("paths", [])), current_index=int(catalogs.get("current_index", 0)),
            max_len=int(catalogs.get("max_len", CATALOG_MAX_LEN)),
            deleted_indexes=list(catalogs.get("deleted_indexes", [])),
        )  # fmt: skip


def replace_file(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Write ``data`` to ``path`` through ``<path>.part`` and a rename, so no reader (and no crash) ever
    meets a half-written file; ``sync`` makes it durable (fsync of the data before the rename)."""
    part = path.with_name(path.name + PART_SUFFIX)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder so the renames into it survive a power cut (POSIX: a rename is durable
    once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- repair on open ----------------------------------------------------------------------------------
@dataclass
class Repair:
    """What opening a tub found left by a crash (all zeros for a cleanly closed tub)."""

    torn_bytes: int = 0  # a last line cut short (or not JSON), truncated
    dropped_records: int = 0  # whole lines at the tail whose image is missing or cut short, truncated
    removed_parts: int = 0  # temporary files of writes a crash interrupted
    index_before: int = 0  # manifest.json's current_index as found
    index_after: int = 0

    def changed(self) -> bool:
        return bool(self.torn_bytes or self.dropped_records or self.removed_parts) or (
            self.index_before != self.index_after
        )


def _image_whole(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(-2, os.SEEK_END)
            return handle.read(2) == JPEG_END
    except OSError:  # missing, or shorter than 2 bytes
        return False


def _whole_lines(data: bytes) -> tuple[list[bytes], int]:
    """(the lines that end with a newline and parse as a JSON object, bytes after them)."""
    lines: list[bytes] = []
    kept = 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            break
        if not isinstance(parsed, dict):
            break
        lines.append(raw)
        kept += len(raw)
    return lines, len(data) - kept


def _lines_with_whole_images(tub: Path, manifest: TubManifest, lines: list[bytes]) -> int:
    """How many of the last catalog's ``lines`` come before the first record whose image a power cut
    lost (missing, or without its JPEG end): that record and all after it are not kept."""
    image_keys = [
        key for key, kind in zip(manifest.inputs, manifest.types, strict=False) if kind == "image_array"
    ]
    for position, line in enumerate(lines):
        record = json.loads(line)
        if not all(_image_whole(tub / IMAGES / str(record[key])) for key in image_keys if key in record):
            return position
    return len(lines)


def repair_tub(tub: Path, manifest: TubManifest) -> Repair:
    """Make a tub left by a crash whole again: see the module docstring. Only the last catalog can be
    torn (a catalog is complete before the next is listed). Updates ``manifest`` in place."""
    repair = Repair(index_before=manifest.current_index)
    for leftover in [*tub.glob(f"*{PART_SUFFIX}"), *(tub / IMAGES).glob(f"*{PART_SUFFIX}")]:
        leftover.unlink(missing_ok=True)
        repair.removed_parts += 1
    if not manifest.paths:
        repair.index_after = manifest.current_index
        return repair
    previous_lines = 0
    for name in manifest.paths[:-1]:
        with contextlib.suppress(OSError), open(tub / name, "rb") as handle:
            previous_lines += sum(1 for _ in handle)
    last = tub / manifest.paths[-1]
    data = last.read_bytes() if last.exists() else b""
    lines, repair.torn_bytes = _whole_lines(data)
    kept = _lines_with_whole_images(tub, manifest, lines)
    repair.dropped_records = len(lines) - kept
    del lines[kept:]
    keep = b"".join(lines)
    if len(keep) != len(data) or not last.exists():
        with open(last, "ab") as handle:
            handle.truncate(len(keep))
            os.fsync(handle.fileno())
    start_index = _catalog_start(tub, manifest.paths[-1], previous_lines)
    if lines:
        manifest.current_index = int(json.loads(lines[-1]).get("_index", start_index + len(lines) - 1)) + 1
    else:
        manifest.current_index = start_index
    repair.index_after = manifest.current_index
    meta = _read_catalog_manifest(tub, manifest.paths[-1])
    replace_file(
        tub / f"{last.stem}.catalog_manifest",
        catalog_manifest_line(
            last.name, meta.get("created_at", time.time()), start_index, [len(line) for line in lines]
        ),  # fmt: skip
        sync=True,
    )
    return repair


def _read_catalog_manifest(tub: Path, catalog: str) -> dict[str, Any]:
    try:
        meta = json.loads((tub / f"{Path(catalog).stem}.catalog_manifest").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _catalog_start(tub: Path, catalog: str, previous_lines: int) -> int:
    start = _read_catalog_manifest(tub, catalog).get("start_index")
    return start if isinstance(start, int) and start >= 0 else previous_lines


def create_tub(path: Path, manifest: TubManifest, created_at: float) -> None:
    """A new tub with its first (empty) catalog, made in ``.<name>.part`` beside ``path`` and renamed
    into place, so a crash while creating it leaves no tub rather than one without a manifest. An
    existing ``path`` must be an empty folder (rename(2) replaces only an empty directory)."""
    if (path.is_dir() and any(path.iterdir())) or (path.exists() and not path.is_dir()):
        raise RecordError(f"{path} is neither a donkeycar tub v2 (no {MANIFEST}) nor an empty folder")
    staging = path.with_name(f".{path.name}{PART_SUFFIX}")
    if staging.exists():  # what a crash while creating this tub left: ours, and never listed anywhere
        shutil.rmtree(staging)
    (staging / IMAGES).mkdir(parents=True)
    name = "catalog_0.catalog"
    (staging / name).write_bytes(b"")
    replace_file(
        staging / "catalog_0.catalog_manifest", catalog_manifest_line(name, created_at, 0, []), sync=True
    )
    manifest.paths = [name]
    replace_file(staging / MANIFEST, manifest.to_bytes(), sync=True)
    fsync_path(staging)
    os.replace(staging, path)
    fsync_path(path.parent)


# ---- one writer per tub: the lock ------------------------------------------------------------------
def take_writer_lock(tub: Path, wait_s: float = LOCK_WAIT_S) -> io.BufferedRandom:
    """An exclusive ``flock`` on ``<tub>/.lock``, held as long as the returned file is open (the kernel
    releases it when the process dies). Waits up to ``wait_s`` for a reader's shared lock, then refuses:
    another recorder writes this tub (two would interleave their indexes)."""
    handle = open(tub / LOCK, "a+b")  # noqa: SIM115 - kept open: the lock lives as long as the file
    if fcntl is None:  # pragma: no cover - not the car
        return handle
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise RecordError(
                    f"{tub} is being recorded by another process (it holds {tub / LOCK})"
                ) from None
            time.sleep(LOCK_POLL_S)


@contextlib.contextmanager
def reader_view(tub: Path) -> Iterator[str | None]:
    """Read a tub as its writer allows: yields None when no writer holds it (a shared lock is then held
    for the block, so no recorder starts or repairs meanwhile), else the session the writer names as
    open (``""`` when it names none yet: read nothing closed)."""
    if fcntl is None:  # pragma: no cover - not the car
        yield None
        return
    try:  # created if missing (a tub copied in): a recorder starting on it meanwhile waits for us
        handle = open(tub / LOCK, "a+b")  # noqa: SIM115 - closed by the with below
    except OSError:  # a read-only copy: nobody records into it either
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _open_session(tub)
            return
        try:
            yield None
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _open_session(tub: Path) -> str:
    try:
        named = json.loads((tub / OPEN_SESSION).read_text(encoding="utf-8")).get("session")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return ""
    return named if isinstance(named, str) else ""


# ---- the synchronous writer -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rotation:
    """Start a new session after this many records, bytes (images and lines) or seconds (None: never)."""

    records: int | None = None
    bytes: int | None = None
    seconds: float | None = None

    def due(self, records: int, size: int, seconds: float) -> bool:
        return (
            (self.records is not None and records >= self.records)
            or (self.bytes is not None and size >= self.bytes)
            or (self.seconds is not None and seconds >= self.seconds)
        )


class TubWriter:
    """Writes records into a donkeycar tub v2 (created, or opened, repaired and appended to), crash-safe.

    Not thread-safe: one writer per tub (``Recorder`` gives it its own thread; the tub's lock refuses a
    second one, after ``lock_wait_s``). Each ``TubWriter`` is a new session, as each donkeycar ``Tub`` is;
    ``new_session()`` (and ``rotation``) start the next one. ``session_id`` names the first session
    instead of the clock's date and the next number (``write_session_tub`` keeps a session's own id).
    """

    def __init__(
        self,
        path: Path,
        inputs: tuple[tuple[str, str], ...] = DEFAULT_INPUTS,
        *,
        metadata: Mapping[str, Any] | None = None,
        max_len: int = CATALOG_MAX_LEN,
        rotation: Rotation = Rotation(),
        sync_interval_s: float | None = 1.0,
        clock: Callable[[], float] = time.time,
        session_id: str | None = None,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.path = Path(path)
        self.rotation = rotation
        self.sync_interval_s = sync_interval_s
        self.clock = clock
        self._catalog_fd: int | None = None
        names, kinds = [k for k, _ in inputs], [t for _, t in inputs]
        if not (self.path / MANIFEST).exists():
            empty = TubManifest(names, kinds, dict(metadata or {}), {"created_at": clock()}, [], 0, max_len)
            create_tub(self.path, empty, clock())
        self._lock = take_writer_lock(self.path, lock_wait_s)  # before repairing: nobody reads meanwhile
        try:
            self.manifest = TubManifest.read(self.path)
            if (self.manifest.inputs, self.manifest.types) != (names, kinds):
                raise RecordError(
                    f"{self.path} records {self.manifest.inputs} ({self.manifest.types}), "
                    f"not {names} ({kinds})"
                )
        except RecordError:
            self._lock.close()
            raise
        self.repair = repair_tub(self.path, self.manifest)
        if self.repair.changed():
            log.warning("repaired %s after a crash: %s", self.path, self.repair)
        self.input_types = dict(zip(names, kinds, strict=True))
        self._unsynced: list[Path] = []  # images written since the last fsync
        self._catalog_meta: dict[str, Any] = {}
        self._open_catalog(self.manifest.paths[-1])
        self.session = self._next_session(session_id)
        self.records_written = 0
        self._last_sync = time.monotonic()

    # -- sessions
    def _next_session(self, named: str | None = None) -> tuple[int, str]:
        """The next session, named in ``.open_session`` before it records anything (see the module
        docstring: a reader then knows every session before it is whole)."""
        sessions = self.manifest.manifest_metadata.get("sessions") or {}
        number = int(sessions["last_id"]) + 1 if sessions else 0
        self._session_records = self._session_bytes = 0
        self._session_started = self.clock()
        if named is not None:
            found = _SESSION_NUMBER.search(named)
            number = int(found[1]) if found else number
        session = (number, named or session_full_id(number, self._session_started))
        replace_file(self.path / OPEN_SESSION, (json.dumps({"session": session[1]}) + "\n").encode("ascii"))
        return session

    def _list_session(self) -> None:
        """donkeycar Manifest._update_session_info, done at the session's first record, not at close."""
        sessions = self.manifest.manifest_metadata.get("sessions") or {"all_full_ids": []}
        sessions["last_id"], sessions["last_full_id"] = self.session
        sessions["all_full_ids"].append(self.session[1])
        self.manifest.manifest_metadata["sessions"] = sessions

    def new_session(self) -> str:
        """End the current session (if it recorded anything) and start the next; returns its id."""
        if self._session_records:
            self.session = self._next_session()
        return self.session[1]

    # -- catalogs
    def _open_catalog(self, name: str) -> None:
        if self._catalog_fd is not None:
            os.fsync(self._catalog_fd)
            os.close(self._catalog_fd)
        self._catalog_fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        meta = _read_catalog_manifest(self.path, name)
        lengths = meta.get("line_lengths")
        self._catalog_meta = {
            "name": name,
            "created_at": meta.get("created_at", self.clock()),
            "start_index": meta.get("start_index", self.manifest.current_index),
            "line_lengths": list(lengths) if isinstance(lengths, list) else [],
        }

    def _add_catalog(self) -> None:
        """donkeycar Manifest._add_catalog; the empty catalog and its manifest exist before it is listed."""
        self._save_manifests(sync=True)  # the full catalog is durable before the next is listed
        name = f"catalog_{len(self.manifest.paths)}.catalog"
        (self.path / name).write_bytes(b"")
        replace_file(self.path / f"catalog_{len(self.manifest.paths)}.catalog_manifest",
                     catalog_manifest_line(name, self.clock(), self.manifest.current_index, []),
                     sync=True)  # fmt: skip
        self._open_catalog(name)
        self.manifest.paths.append(name)
        replace_file(self.path / MANIFEST, self.manifest.to_bytes(), sync=True)
        fsync_path(self.path)

    # -- records
    def contents(self, values: Mapping[str, Any], index: int) -> tuple[dict[str, Any], dict[str, bytes]]:
        """donkeycar Tub.write_record's conversion of each input (None and unknown keys skipped): the
        catalog record and the images to write. A non-finite float raises ValueError (donkeycar's
        ``allow_nan=False`` would too)."""
        record: dict[str, Any] = {}
        images: dict[str, bytes] = {}
        for key, value in values.items():
            kind = self.input_types.get(key)
            if value is None or kind is None:
                continue
            if kind == "float":
                record[key] = float(value)
                if not math.isfinite(record[key]):
                    raise ValueError(f"{key} is {value}: donkeycar tubs hold finite numbers only")
            elif kind == "int":
                record[key] = int(value)
            elif kind == "boolean":
                record[key] = bool(value)
            elif kind in ("nparray", "list", "vector"):
                record[key] = np.asarray(value).tolist() if kind == "nparray" else list(value)
            elif kind == "image_array":  # a frame, or a JPEG already encoded (copied, never re-encoded)
                record[key] = image_name(index, key)
                images[record[key]] = value if isinstance(value, bytes) else encode_jpeg(value)
            else:
                record[key] = value
        return record, images

    def write(self, values: Mapping[str, Any], timestamp: float | None = None) -> int:
        """Write one record (the tub's inputs by name); returns its index once it is whole on disk."""
        if self.rotation.due(
            self._session_records, self._session_bytes, self.clock() - self._session_started
        ):
            self.new_session()
        index = self.manifest.current_index
        if index > 0 and index % self.manifest.max_len == 0 and self._catalog_meta["line_lengths"]:
            self._add_catalog()
        record, images = self.contents(values, index)
        record["_timestamp_ms"] = int(round((self.clock() if timestamp is None else timestamp) * 1000))
        record["_index"] = index
        record["_session_id"] = self.session[1]
        line = catalog_line(record)
        for name, data in images.items():  # images first: a record never names a missing image
            replace_file(self.path / IMAGES / name, data)
            self._unsynced.append(self.path / IMAGES / name)
        written = os.write(self._catalog_fd, line)  # one write of the whole line: never half a record
        if written != len(line):  # a full disk: cut the partial line back off
            os.ftruncate(self._catalog_fd, os.lseek(self._catalog_fd, 0, os.SEEK_END) - written)
            raise OSError(f"short write to {self._catalog_meta['name']}: {written} of {len(line)} bytes")
        self._catalog_meta["line_lengths"].append(len(line))
        self.manifest.current_index = index + 1
        if self._session_records == 0:
            self._list_session()
        self._session_records += 1
        self._session_bytes += len(line) + sum(len(d) for d in images.values())
        self.records_written += 1
        self._save_manifests(sync=self._sync_due())
        return index

    def _sync_due(self) -> bool:
        if self.sync_interval_s is None or time.monotonic() - self._last_sync < self.sync_interval_s:
            return False
        self._last_sync = time.monotonic()
        return True

    def _save_manifests(self, *, sync: bool = False) -> None:
        meta = self._catalog_meta
        if sync:  # the images and lines before the manifests that count them
            for image in self._unsynced:
                fsync_path(image)
            self._unsynced.clear()
            fsync_path(self.path / IMAGES)
            os.fsync(self._catalog_fd)
        replace_file(
            self.path / f"{Path(meta['name']).stem}.catalog_manifest",
            catalog_manifest_line(
                meta["name"], meta["created_at"], meta["start_index"], meta["line_lengths"]
            ),
            sync=sync,
        )
        replace_file(self.path / MANIFEST, self.manifest.to_bytes(), sync=sync)
        if sync:
            fsync_path(self.path)

    def close(self) -> None:
        """Make everything durable, then let go of the tub: its open session becomes closed."""
        if self._catalog_fd is None:
            return
        self._save_manifests(sync=True)
        os.close(self._catalog_fd)
        self._catalog_fd = None
        (self.path / OPEN_SESSION).unlink(missing_ok=True)
        self._lock.close()  # releases the flock


# ---- closed sessions, each a tub of its own (what the uploader archives) ---------------------------------
@dataclass(frozen=True)
class TubSession:
    """One session of a tub as a reader finds it: its whole records in index order, with what its tub's
    manifest says about them. ``digest`` (SHA-256 of the records' catalog lines) identifies it without
    reading an image: a closed session's lines never change, and each names its image, written once."""

    tub: Path
    session_id: str
    records: tuple[dict[str, Any], ...]
    inputs: tuple[tuple[str, str], ...]
    metadata: dict[str, Any]
    deleted_indexes: frozenset[int]
    max_len: int
    digest: str

    @property
    def name(self) -> str:
        """``<tub>_<session id>`` in S3's safe key characters: its folder in the archive."""
        raw = f"{self.tub.name}_{self.session_id}" if self.session_id else self.tub.name
        return re.sub(r"[^A-Za-z0-9._-]", "-", raw)


def _catalog_records(tub: Path, manifest: TubManifest) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Every whole record of the tub with its line, as a writer opening it after a crash would keep
    them (``repair_tub``: in the last catalog, nothing from a torn line or from the first record whose
    image is missing or cut short), without changing a byte. A line of an earlier catalog that is not a
    JSON object names no usable record and is skipped (Preprocess would reject it)."""
    for position, name in enumerate(manifest.paths):
        try:
            data = (tub / name).read_bytes()
        except FileNotFoundError:
            continue
        if position < len(manifest.paths) - 1:
            for line in data.splitlines(keepends=True):
                parsed = _json_object(line)
                if parsed is not None:
                    yield parsed, line
            continue
        lines, _ = _whole_lines(data)
        for line in lines[: _lines_with_whole_images(tub, manifest, lines)]:
            yield json.loads(line), line


def _json_object(line: bytes) -> dict[str, Any] | None:
    """A whole catalog line (newline included) that is a JSON object, else None."""
    try:
        parsed = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return parsed if isinstance(parsed, dict) and line.endswith(b"\n") else None


def closed_sessions(tub: Path) -> list[TubSession]:
    """The sessions of ``tub`` that no writer will add to: all of them when no writer holds its lock (a
    killed recorder's too: the kernel dropped its lock), else those listed before the one the writer
    names as open. Sessions in the order they were recorded; the records of a session keep their order.
    A tub whose manifest is not whole, or names a catalog not there yet (being copied in), has none."""
    with reader_view(tub) as open_session:
        if open_session == "":
            return []
        manifest = TubManifest.read(tub)
        if not all((tub / name).is_file() for name in manifest.paths):
            return []
        grouped: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
        for parsed, line in _catalog_records(tub, manifest):
            grouped.setdefault(str(parsed.get("_session_id", "")), []).append((parsed, line))
    order = list(grouped)
    if open_session is not None and open_session in order:
        order = order[: order.index(open_session)]
    inputs = tuple(zip(manifest.inputs, manifest.types, strict=False))
    deleted = frozenset(int(index) for index in manifest.deleted_indexes)
    found = []
    for session_id in order:
        digest = hashlib.sha256()
        for _, line in grouped[session_id]:
            digest.update(line)
        found.append(
            TubSession(
                tub,
                session_id,
                tuple(parsed for parsed, _ in grouped[session_id]),
                inputs,
                dict(manifest.metadata),
                deleted,
                manifest.max_len,
                digest.hexdigest(),
            )  # fmt: skip
        )
    return found


def write_session_tub(session: TubSession, dest: Path) -> int:
    """Write ``session`` as a donkeycar tub v2 of its own at ``dest`` (through ``TubWriter``: one layout);
    returns the records written.

    The same session gives the same bytes, whenever and wherever it is written: the clock is the first
    record's ``_timestamp_ms`` (``created_at`` of the manifests), the session keeps its id, every record
    its ``_timestamp_ms`` and values, every image its JPEG bytes (copied, not re-encoded). Indexes start
    again at 0 (images renamed to match): Preprocess counts every index below ``current_index`` that no
    line holds as a lost record, and donkeycar's ``Tub`` reads the lines in order either way. Where the
    records came from is in the user metadata (``robocar_source``: tub, session, first index). A record
    the tub deleted stays deleted (its new index); one whose image is gone is written without it, so
    Preprocess rejects and counts it rather than it vanishing.
    """
    stamps = [r.get("_timestamp_ms") for r in session.records]
    first = next((t / 1000 for t in stamps if isinstance(t, int | float)), 0.0)
    source = {"tub": session.tub.name, "session": session.session_id,
              "first_index": session.records[0].get("_index") if session.records else None}  # fmt: skip
    writer = TubWriter(
        dest, session.inputs, metadata={**session.metadata, "robocar_source": source},
        max_len=session.max_len, sync_interval_s=None, clock=lambda: first,
        session_id=session.session_id or None, lock_wait_s=0.0,
    )  # fmt: skip
    deleted: list[int] = []
    try:
        for parsed, stamp in zip(session.records, stamps, strict=True):
            values = {key: parsed.get(key) for key, _ in session.inputs}
            for key, kind in session.inputs:
                if kind == "image_array" and isinstance(values[key], str):
                    path = session.tub / IMAGES / values[key]
                    values[key] = path.read_bytes() if path.is_file() else None
            try:
                index = writer.write(values, stamp / 1000 if isinstance(stamp, int | float) else first)
            except ValueError as exc:  # a NaN a foreign writer let through: not a record donkeycar reads
                log.warning("%s session %s: record %s skipped: %s", session.tub, session.session_id,
                            parsed.get("_index"), exc)  # fmt: skip
                continue
            if parsed.get("_index") in session.deleted_indexes:
                deleted.append(index)
        writer.manifest.deleted_indexes = deleted
    finally:
        writer.close()
    return writer.records_written


# ---- off the control path ------------------------------------------------------------------------------
@dataclass
class RecorderStats:
    """``submitted = written + dropped + refused + failed + pending`` at every instant."""

    submitted: int = 0
    written: int = 0
    dropped: int = 0  # the queue was full: the disk is slower than the loop
    refused: int = 0  # not recordable (a NaN command)
    failed: int = 0  # the disk said no (full, read-only)
    sessions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, tub: Path) -> str:
        return (
            f"recorded {self.written} records into {tub} (sessions {', '.join(self.sessions) or 'none'}); "
            f"{self.dropped} dropped (disk too slow), {self.refused} refused, {self.failed} failed"
        )


_STOP = object()


class Recorder:
    """A ``TubWriter`` on its own thread behind a bounded queue: ``submit`` never blocks the drive loop.

    ``queue_size`` 64 records is 3.2 s of the 20 Hz loop: a disk that stalls longer drops records, each
    counted in ``stats.dropped`` and logged (the first, then every 100th).
    """

    def __init__(self, writer: TubWriter, *, queue_size: int = 64) -> None:
        self.writer = writer
        self.stats = RecorderStats()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="robocar-recorder", daemon=True)
        self._thread.start()

    def submit(self, values: Mapping[str, Any], timestamp: float | None = None) -> bool:
        """Queue one record (its images copied: a camera may reuse its buffer); False if dropped."""
        copied = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in values.items()}
        with self._lock:
            self.stats.submitted += 1
        try:
            self._queue.put_nowait((copied, time.time() if timestamp is None else timestamp))
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
                dropped = self.stats.dropped
            if dropped == 1 or dropped % 100 == 0:
                log.warning("recording: %d records dropped so far: the disk is slower than the loop", dropped)
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            values, timestamp = item
            try:
                self.writer.write(values, timestamp)
                outcome = "written"
            except ValueError as exc:
                outcome = "refused"
                log.warning("recording: record refused: %s", exc)
            except Exception as exc:  # a full or read-only disk must not end the drive; counted
                outcome = "failed"
                if self.stats.failed == 0:
                    log.error(
                        "recording: cannot write to %s: %s: %s", self.writer.path, type(exc).__name__, exc
                    )
            with self._lock:
                setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
                session = self.writer.session[1]
                if outcome == "written" and session not in self.stats.sessions:
                    self.stats.sessions.append(session)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 30.0) -> RecorderStats:
        """Write what is queued (up to ``timeout_s``), then close the tub; returns the final stats."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error(
                "recording: %d records still queued after %.0f s; closing anyway", self.pending(), timeout_s
            )
        else:
            self.writer.close()
        return self.stats


# ---- what a record holds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Controls:
    """What the person commands for one frame (donkeycar's ``user/*``)."""

    angle: float = 0.0
    throttle: float = 0.0


def record_values(
    image: np.ndarray, person: Controls, mode: str, pilot: tuple[float, float] | None = None
) -> dict[str, Any]:
    """One record's inputs by donkeycar's names: the person's controls next to the pilot's outputs."""
    values: dict[str, Any] = {
        "cam/image_array": image,
        "user/angle": person.angle,
        "user/throttle": person.throttle,
        "user/mode": mode,
    }
    if pilot is not None:
        values["pilot/angle"], values["pilot/throttle"] = pilot
    return values


def recorded_controls(recorded: Mapping[str, Any]) -> Controls:
    """The person's controls a replayed tub holds (a frame's ``recorded``), idle sticks without them."""
    return Controls(float(recorded.get("user/angle", 0.0)), float(recorded.get("user/throttle", 0.0)))


def json_lines_controls(lines: Iterator[str]) -> Iterator[Controls]:
    """One ``{"angle": a, "throttle": t}`` object per line (a file or stdin): the person's controls,
    one line per frame; a line that is not such an object raises RecordError with its number."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            yield Controls(float(item["angle"]), float(item["throttle"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordError(f'controls line {number} is not {{"angle": a, "throttle": t}}: {exc}') from exc


def drive_by_person(
    source: Iterable[Any],
    recorder: Recorder,
    outputs: list[Any],
    *,
    controls: Iterator[Controls] | None = None,
    max_frames: int | None = None,
    rate_hz: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """``robocar-edge record``: the person drives (``controls``, one per frame, or the replayed tub's
    own ``user/*`` when None), the actuators follow, every frame is recorded in mode ``user``; ends with
    the source, the controls, ``max_frames`` or ``stop()``. Returns the number of frames driven."""
    from edge.drive import Command

    period = 1.0 / rate_hz if rate_hz > 0 else 0.0
    started = time.perf_counter()
    count = 0
    for frame in source:
        if stop() or (max_frames is not None and count >= max_frames):
            break
        person = recorded_controls(frame.recorded) if controls is None else next(controls, None)
        if person is None:
            break
        command = Command(count, frame.origin, person.angle, person.throttle, 0.0, "person", time.time())
        for output in outputs:
            output.apply(command)
        recorder.submit(record_values(frame.image, person, "user"), command.time)
        count += 1
        if period:
            time.sleep(max(0.0, started + count * period - time.perf_counter()))
    return count
