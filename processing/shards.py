"""Preprocess output shards (docs/contracts.md section 2): write and read one split.

A split folder holds ``shard-00000.npz`` ... (each an uncompressed ``.npz`` of at most ``shard_size``
frames; ``np.load`` reads it) and ``dataset.json``. When Preprocess runs on several instances, each
writes its own part into the same folder under names that carry its host (``shard-algo-2-00000.npz``,
``dataset-algo-2.json``), and ``load_split`` reads the parts as one split. The shards are written
byte-for-byte deterministically (fixed zip timestamps, members in name order), so the same frames
always give the same ``fingerprint`` and the output does not depend on the worker count or the time
of day.

The fingerprint of a split is the SHA-256 of its shards' zip central directories in name order: each
holds every member's name, size and CRC-32, so any change to any byte changes it (but for a 2**-32
chance per member), and it costs a few hundred bytes per shard, not a second pass over ~118 MB.

Speed: a shard is ~118 MB of pixels, and preprocessing must keep up with JPEG decoding, so the writer
streams each array's buffer straight to the file (a STORED zip written here: local headers, data,
central directory; no intermediate copies); the images of a shard are written chunk by chunk as they
arrived, never concatenated. The zip's CRC-32 is the one pass over the bytes: zlib-ng's when installed
(30 GB/s with PCLMUL, against zlib's 4), else the standard library's; the values are the same.
Numpy and the standard library (zlib-ng optional): this runs in the Processing and Training containers.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # a container without zlib-ng: the same CRC, 7x slower
    from zlib import crc32

FORMAT = "robocar-shards/1"
DATASET_JSON = "dataset.json"
DEFAULT_SHARD_SIZE = 2048
SPLITS = ("train", "validation", "test")
# Arrays every shard carries, with the dtype the contract fixes; str arrays are numpy unicode (no pickle).
COMMON_ARRAYS = {
    "images": np.uint8,
    "session": np.str_,
    "tub": np.str_,
    "index": np.int64,
    "timestamp_ms": np.int64,
}
DRIVING_ARRAYS = {"angle": np.float32, "throttle": np.float32}
CLASSIFIER_ARRAYS = {"label": np.int64}
_ZIP_DATE, _ZIP_TIME = (0 << 9) | (1 << 5) | 1, 0  # 1980-01-01 00:00, the earliest zip (DOS) timestamp
_ZIP_VERSION = 20  # 2.0: what a STORED member needs
_ZIP_MADE_BY = (3 << 8) | _ZIP_VERSION  # unix, so the 0644 file mode below is meaningful
_ZIP_FILE_MODE = 0o100644 << 16


class ShardError(ValueError):
    """Arrays that do not fit the shard contract, or a split folder that is not one."""


def _frame_shape(frame_spec: Any) -> tuple[int, int, int]:
    spec = frame_spec.to_dict() if hasattr(frame_spec, "to_dict") else dict(frame_spec)
    return (int(spec["height"]), int(spec["width"]), 3)


def _spec_dict(frame_spec: Any) -> dict[str, int]:
    spec = frame_spec.to_dict() if hasattr(frame_spec, "to_dict") else dict(frame_spec)
    return {k: int(v) for k, v in spec.items()}


def normalise_arrays(arrays: Mapping[str, Any], frame_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Check names, lengths and shapes, and cast to the contract's dtypes (driving or classifier shards)."""
    kinds = DRIVING_ARRAYS if "angle" in arrays or "throttle" in arrays else CLASSIFIER_ARRAYS
    wanted = {**COMMON_ARRAYS, **kinds}
    missing = sorted(set(wanted) - set(arrays))
    if missing:
        raise ShardError(f"missing arrays {missing}; shards need {sorted(wanted)}")
    out: dict[str, np.ndarray] = {}
    for name, dtype in wanted.items():
        arr = np.asarray(arrays[name])
        if dtype is np.str_:
            arr = arr.astype(np.str_) if arr.size else np.zeros(0, dtype="<U1")
        else:
            arr = arr.astype(dtype, copy=False)
        out[name] = arr
    n = len(out["images"])
    lengths = {name: len(arr) for name, arr in out.items()}
    if any(length != n for length in lengths.values()):
        raise ShardError(f"arrays differ in length: {lengths}")
    if n == 0:
        out["images"] = out["images"].reshape((0, *frame_shape))
    if out["images"].shape[1:] != frame_shape:
        raise ShardError(f"images have shape {out['images'].shape[1:]}, the frame spec says {frame_shape}")
    for name, arr in out.items():
        if name != "images" and arr.ndim != 1:
            raise ShardError(f"array {name!r} must be one-dimensional, got shape {arr.shape}")
    return out


def _member_bytes(value: np.ndarray | Sequence[np.ndarray]) -> tuple[bytes, list[memoryview]]:
    """The ``.npy`` header and zero-copy views of the data of an array, or of row-chunks of one array
    (written back to back they are the concatenated array's bytes, without concatenating them)."""
    pieces = [np.ascontiguousarray(p) for p in (value if isinstance(value, list | tuple) else [value])]
    first = pieces[0]
    if any(p.dtype != first.dtype or p.shape[1:] != first.shape[1:] for p in pieces):
        raise ShardError("row-chunks of one array must share dtype and row shape")
    shape = (sum(len(p) for p in pieces), *first.shape[1:])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
    )
    return header.getvalue(), [memoryview(p.reshape(-1).view(np.uint8)) for p in pieces if p.size]


def write_shard(path: Path, arrays: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> None:
    """Write ``arrays`` as an uncompressed .npz (a STORED zip of ``<name>.npy``), members in name order.

    A value may be a list of row-chunks of one array.
    """
    members: list[tuple[bytes, int, int, int]] = []  # name, crc, size, local header offset
    offset = 0
    with open(path, "wb") as handle:
        emit = handle.write
        for key in sorted(arrays):
            name = f"{key}.npy".encode()
            header, data = _member_bytes(arrays[key])
            size = len(header) + sum(view.nbytes for view in data)
            if size >= 0xFFFFFFFF:
                raise ShardError(f"array {key!r} is {size} bytes: too large for one shard, lower shard_size")
            crc = crc32(header)
            for view in data:
                crc = crc32(view, crc)
            local = struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                _ZIP_VERSION,
                0,
                0,
                _ZIP_TIME,
                _ZIP_DATE,
                crc,
                size,
                size,
                len(name),
                0,
            )
            emit(local + name + header)
            for view in data:
                emit(view)
            members.append((name, crc, size, offset))
            offset += len(local) + len(name) + size
        central = b"".join(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                _ZIP_MADE_BY,
                _ZIP_VERSION,
                0,
                0,
                _ZIP_TIME,
                _ZIP_DATE,
                crc,
                size,
                size,
                len(name),
                0,
                0,
                0,
                0,
                _ZIP_FILE_MODE,
                member_offset,
            )
            + name
            for name, crc, size, member_offset in members
        )
        end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), offset, 0)
        emit(central + end)


def host_suffix(host: str | None) -> str:
    """What an instance adds to its file names: nothing for a run on one instance, else ``-<host>``."""
    return "" if host is None else f"-{host}"


def shard_name(number: int, host: str | None = None) -> str:
    return f"shard{host_suffix(host)}-{number:05d}.npz"


def dataset_json_name(host: str | None = None) -> str:
    return f"dataset{host_suffix(host)}.json"


def _own_files(host: str | None) -> re.Pattern[str]:
    """The names a run writes into a split folder: all of them on one instance, else its host's.

    ``.part-*``: the shards of an interrupted preprocess run.
    """
    if host is None:
        return re.compile(r"(shard-.*|\.part-.*)\.npz|dataset(-.*)?\.json")
    name = re.escape(host)
    return re.compile(rf"(shard-{name}|\.part-{name})-\d+\.npz|dataset-{name}\.json")


def prepare_split_dir(out_dir: str | Path, split: str, host: str | None = None) -> Path:
    """``out_dir/split``, created, with nothing left that an earlier run of this instance wrote there
    (a run on one instance owns the whole folder; one of several, only the names with its host)."""
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    own = _own_files(host)
    for stale in split_dir.iterdir():
        if own.fullmatch(stale.name) and stale.is_file():
            stale.unlink()
    return split_dir


_END_RECORD = struct.Struct("<IHHHHIIH")  # the zip's end of central directory record (no comment)


def shard_catalog(path: Path) -> bytes:
    """A shard's zip central directory and end record: every member's name, size and CRC-32."""
    with open(path, "rb") as handle:
        handle.seek(-_END_RECORD.size, io.SEEK_END)
        end = handle.read(_END_RECORD.size)
        signature, *_, directory_size, directory_offset, comment = _END_RECORD.unpack(end)
        if signature != 0x06054B50 or comment:
            raise ShardError(f"{path}: not a shard (no zip end record where one is written)")
        handle.seek(directory_offset)
        return handle.read(directory_size) + end


def split_fingerprint(split_dir: Path, shards: Sequence[str]) -> str:
    """SHA-256 over the shards' catalogs (``shard_catalog``) in the given order."""
    digest = hashlib.sha256()
    for name in shards:
        digest.update(shard_catalog(split_dir / name))
    return digest.hexdigest()


def write_dataset_json(
    split_dir: Path,
    split: str,
    shards: Sequence[str],
    frames: int,
    sessions: set[str],
    frame_spec: Any,
    extra: Mapping[str, Any] | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """Write ``split_dir/dataset.json`` (``dataset-<host>.json`` for one of several instances; contract
    section 2, fingerprint included); return its content."""
    dataset: dict[str, Any] = {
        "format": FORMAT,
        "split": split,
        "frames": frames,
        "shards": list(shards),
        "frame_spec": _spec_dict(frame_spec),
        "sessions": sorted(sessions),
        "fingerprint": split_fingerprint(split_dir, shards),
    }
    dataset.update(extra or {})
    text = json.dumps(dataset, indent=2, sort_keys=True) + "\n"
    (split_dir / dataset_json_name(host)).write_text(text)
    return dataset


class SplitWriter:
    """Streams frames into ``out_dir/split/``: full shards are written as frames arrive, so a large
    dataset never has to sit in memory. ``close()`` writes the last shard and ``dataset.json``."""

    def __init__(
        self,
        out_dir: str | Path,
        split: str,
        frame_spec: Any,
        shard_size: int = DEFAULT_SHARD_SIZE,
        extra: Mapping[str, Any] | None = None,
        host: str | None = None,
    ) -> None:
        if shard_size <= 0:
            raise ShardError("shard_size must be positive")
        self.split = split
        self.host = host
        self.split_dir = prepare_split_dir(out_dir, split, host)
        self.frame_spec = frame_spec
        self.frame_shape = _frame_shape(frame_spec)
        self.shard_size = shard_size
        self.extra = dict(extra or {})
        self._columns: dict[str, list[np.ndarray]] = {}  # row-chunks of the shard being filled
        self._filled = 0
        self._names: list[str] = []
        self._frames = 0
        self._sessions: set[str] = set()

    def add(self, arrays: Mapping[str, Any]) -> None:
        """Append frames (the contract's arrays, any length); writes every shard that fills up.

        The arrays are kept (not copied) until their shard is written: do not modify them afterwards.
        """
        chunk = normalise_arrays(arrays, self.frame_shape)
        count = len(chunk["images"])
        start = 0
        while start < count:
            take = min(count - start, self.shard_size - self._filled)
            for key, array in chunk.items():
                self._columns.setdefault(key, []).append(array[start : start + take])
            self._filled += take
            start += take
            if self._filled == self.shard_size:
                self._flush()

    def _flush(self) -> None:
        shard: dict[str, Any] = {
            key: np.concatenate(parts) for key, parts in self._columns.items() if key != "images"
        }
        shard["images"] = self._columns["images"]  # written chunk by chunk: never concatenated
        name = shard_name(len(self._names), self.host)
        write_shard(self.split_dir / name, shard)
        self._names.append(name)
        self._frames += self._filled
        self._sessions.update(shard["session"].tolist())
        self._columns = {}
        self._filled = 0

    def close(self) -> dict[str, Any]:
        """Write the last (partial) shard and dataset.json; return the dataset.json content."""
        if self._filled:
            self._flush()
        return write_dataset_json(
            self.split_dir,
            self.split,
            self._names,
            self._frames,
            self._sessions,
            self.frame_spec,
            self.extra,
            self.host,
        )


def write_split(
    out_dir: str | Path,
    split: str,
    arrays: Mapping[str, Any],
    frame_spec: Any,
    shard_size: int = DEFAULT_SHARD_SIZE,
    extra: Mapping[str, Any] | None = None,
    host: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/split/shard-*.npz`` and ``dataset.json``; return the dataset.json content.

    ``arrays`` are the contract's arrays in the order the frames should be stored; ``frame_spec`` is an
    ``edge.frames.FrameSpec`` (or its dict); ``extra`` is merged into dataset.json (e.g. ``classes``);
    ``host`` names the part of one of several instances (``shard-<host>-*.npz``, ``dataset-<host>.json``).
    """
    writer = SplitWriter(out_dir, split, frame_spec, shard_size=shard_size, extra=extra, host=host)
    writer.add(arrays)
    return writer.close()


def natural_order(name: str) -> list[str | int]:
    """Sort key: ``dataset-algo-2.json`` before ``dataset-algo-10.json``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def split_manifests(split_dir: Path) -> list[Path]:
    """The split's ``dataset.json``, or every instance's ``dataset-<host>.json`` (in host order)."""
    single = split_dir / DATASET_JSON
    parts = sorted(
        (p for p in split_dir.glob("dataset-*.json") if p.is_file()), key=lambda p: natural_order(p.name)
    )
    if single.is_file() and parts:
        raise ShardError(
            f"{split_dir} holds both {DATASET_JSON} and {parts[0].name}: the outputs of two preprocess "
            "runs (one on a single instance, one on several); write each run to a fresh folder"
        )
    if not single.is_file() and not parts:
        raise ShardError(f"{split_dir} has no {DATASET_JSON}: not a preprocess output split")
    return parts or [single]


def _read_manifest(path: Path) -> dict[str, Any]:
    dataset = json.loads(path.read_text())
    if not isinstance(dataset, dict) or dataset.get("format") != FORMAT:
        found = dataset.get("format") if isinstance(dataset, dict) else type(dataset).__name__
        raise ShardError(f"{path}: format {found!r}, expected {FORMAT!r}")
    return dataset


def read_split_dataset(split_dir: str | Path) -> dict[str, Any]:
    """The split's dataset.json, or one merged from every instance's part: ``frames`` and
    ``sessions`` over all parts, ``shards`` every part's shards in host order, ``fingerprint`` the
    contract's over all of those shards, and ``parts`` the manifests read (one part: its own content)."""
    split_dir = Path(split_dir)
    paths = split_manifests(split_dir)
    parts = [_read_manifest(path) for path in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for field in ("split", "frame_spec", "classes"):
            if part.get(field) != first.get(field):
                raise ShardError(
                    f"{path} and {paths[0].name} differ in {field!r}: {part.get(field)!r} vs "
                    f"{first.get(field)!r} (parts of one split must agree)"
                )
    if len(parts) == 1:
        return first
    shards = [name for part in parts for name in part["shards"]]
    return {
        **first,
        "frames": sum(int(part["frames"]) for part in parts),
        "shards": shards,
        "sessions": sorted({session for part in parts for session in part["sessions"]}),
        "fingerprint": split_fingerprint(split_dir, shards),
        "parts": [path.name for path in paths],
    }


def load_split(split_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a split folder back: (arrays concatenated over its shards in order, its dataset.json, merged
    over the instances' parts when several instances wrote it: ``read_split_dataset``)."""
    split_dir = Path(split_dir)
    dataset = read_split_dataset(split_dir)
    parts: dict[str, list[np.ndarray]] = {}
    for name in dataset["shards"]:
        with np.load(split_dir / name, allow_pickle=False) as shard:
            for key in shard.files:
                parts.setdefault(key, []).append(shard[key])
    if not parts:  # an empty split: the contract's arrays with zero rows
        kinds = CLASSIFIER_ARRAYS if "classes" in dataset else DRIVING_ARRAYS
        shape = _frame_shape(dataset["frame_spec"])
        empty = {
            k: np.zeros((0, *shape) if k == "images" else 0, dtype=d)
            for k, d in {**COMMON_ARRAYS, **kinds}.items()
        }
        return normalise_arrays(empty, shape), dataset
    arrays = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    if len(arrays["images"]) != dataset["frames"]:
        raise ShardError(
            f"{split_dir}: shards hold {len(arrays['images'])} frames, dataset.json says {dataset['frames']}"
        )
    return arrays, dataset
