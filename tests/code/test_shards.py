"""processing.shards: the preprocess output contract (docs/contracts.md section 2)."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import pytest

from edge.frames import FrameSpec
from processing.shards import ShardError, load_split, shard_catalog, write_split

SPEC = FrameSpec(crop_top=40, height=80, width=160)


def driving_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, size=(n, 80, 160, 3), dtype=np.uint8),
        "angle": rng.uniform(-1, 1, n),
        "throttle": rng.uniform(-1, 1, n),
        "session": np.array([f"s{i // 3}" for i in range(n)]),
        "tub": np.array(["tubA"] * n),
        "index": np.arange(n),
        "timestamp_ms": 1_700_000_000_000 + np.arange(n) * 50,
    }


def test_round_trip_splits_into_shards_with_contract_dtypes(tmp_path):
    arrays = driving_arrays(7)
    dataset = write_split(tmp_path, "train", arrays, SPEC, shard_size=3)

    assert dataset["shards"] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert dataset["frames"] == 7 and dataset["split"] == "train" and dataset["format"] == "robocar-shards/1"
    assert dataset["sessions"] == ["s0", "s1", "s2"]
    assert dataset["frame_spec"] == SPEC.to_dict()
    assert json.loads((tmp_path / "train" / "dataset.json").read_text()) == dataset
    with np.load(tmp_path / "train" / "shard-00002.npz") as last:  # plain np.load reads a shard
        assert len(last["images"]) == 1

    loaded, meta = load_split(tmp_path / "train")
    assert meta == dataset
    np.testing.assert_array_equal(loaded["images"], arrays["images"])
    np.testing.assert_array_equal(loaded["angle"], arrays["angle"].astype(np.float32))
    assert loaded["images"].dtype == np.uint8 and loaded["angle"].dtype == np.float32
    assert loaded["index"].dtype == np.int64 and loaded["timestamp_ms"].dtype == np.int64
    assert loaded["session"].tolist() == arrays["session"].tolist()


def test_fingerprint_is_sha256_of_the_shards_zip_catalogs_and_stable_between_writes(tmp_path):
    first = write_split(tmp_path / "a", "test", driving_arrays(5), SPEC, shard_size=2)
    second = write_split(tmp_path / "b", "test", driving_arrays(5), SPEC, shard_size=2)
    digest = hashlib.sha256()
    for name in first["shards"]:
        path = tmp_path / "a" / "test" / name
        with zipfile.ZipFile(path) as archive:  # zipfile finds the central directory on its own
            start = archive.start_dir
        digest.update(path.read_bytes()[start:])
    assert first["fingerprint"] == digest.hexdigest() == second["fingerprint"]
    other = write_split(tmp_path / "c", "test", driving_arrays(5, seed=1), SPEC, shard_size=2)
    assert other["fingerprint"] != first["fingerprint"]


def test_one_changed_pixel_or_label_changes_the_fingerprint(tmp_path):
    base = write_split(tmp_path / "a", "test", driving_arrays(5), SPEC)["fingerprint"]
    pixel = driving_arrays(5)
    pixel["images"][3, 70, 150, 2] ^= 1
    label = driving_arrays(5)
    label["angle"][0] = np.nextafter(np.float32(label["angle"][0]), np.float32(2))
    fingerprints = {
        write_split(tmp_path / "b", "test", pixel, SPEC)["fingerprint"],
        write_split(tmp_path / "c", "test", label, SPEC)["fingerprint"],
    }
    assert base not in fingerprints and len(fingerprints) == 2


def test_a_file_that_is_not_a_shard_has_no_catalog(tmp_path):
    path = tmp_path / "shard-00000.npz"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ShardError, match="not a shard"):
        shard_catalog(path)


def test_classifier_shards_carry_label_and_classes(tmp_path):
    arrays = driving_arrays(4)
    del arrays["angle"], arrays["throttle"]
    arrays["label"] = np.array([0, 1, 1, 0])
    dataset = write_split(tmp_path, "validation", arrays, SPEC, extra={"classes": ["cat", "dog"]})
    loaded, meta = load_split(tmp_path / "validation")
    assert meta["classes"] == ["cat", "dog"] == dataset["classes"]
    assert loaded["label"].tolist() == [0, 1, 1, 0] and "angle" not in loaded


def test_empty_split_round_trips(tmp_path):
    dataset = write_split(tmp_path, "test", driving_arrays(0), SPEC)
    assert dataset["frames"] == 0 and dataset["shards"] == []
    loaded, _ = load_split(tmp_path / "test")
    assert loaded["images"].shape == (0, 80, 160, 3)


def test_rejects_arrays_that_break_the_contract(tmp_path):
    arrays = driving_arrays(3)
    with pytest.raises(ShardError, match="frame spec"):
        write_split(tmp_path, "train", arrays, FrameSpec())
    with pytest.raises(ShardError, match="length"):
        write_split(tmp_path, "train", {**arrays, "index": np.arange(2)}, SPEC)
    with pytest.raises(ShardError, match="missing"):
        write_split(tmp_path, "train", {k: v for k, v in arrays.items() if k != "tub"}, SPEC)
    with pytest.raises(ShardError, match="dataset.json"):
        load_split(tmp_path / "nothing")


def test_streamed_chunks_give_the_same_shards_as_one_write(tmp_path):
    from processing.shards import SplitWriter

    arrays = driving_arrays(11)
    whole = write_split(tmp_path / "whole", "train", arrays, SPEC, shard_size=4)
    writer = SplitWriter(tmp_path / "streamed", "train", SPEC, shard_size=4)
    for start, stop in [(0, 3), (3, 3), (3, 9), (9, 11)]:
        writer.add({key: value[start:stop] for key, value in arrays.items()})
    streamed = writer.close()
    assert streamed == whole


def test_shards_are_valid_zip_files_that_numpy_reads(tmp_path):
    import zipfile

    arrays = driving_arrays(5)
    write_split(tmp_path, "train", arrays, SPEC, shard_size=3)
    for name in ("shard-00000.npz", "shard-00001.npz"):
        with zipfile.ZipFile(tmp_path / "train" / name) as archive:
            assert archive.testzip() is None  # every member's CRC checks
            assert sorted(archive.namelist()) == sorted(f"{key}.npy" for key in arrays)
            assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
            assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
    with np.load(tmp_path / "train" / "shard-00001.npz", allow_pickle=False) as shard:
        np.testing.assert_array_equal(shard["images"], arrays["images"][3:])
        assert shard["session"].tolist() == arrays["session"][3:].tolist()


def take(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {key: value[start:stop] for key, value in arrays.items()}


def test_the_parts_of_several_instances_read_as_one_split(tmp_path):
    """Each instance writes shard-<host>-*.npz and dataset-<host>.json into the same folder."""
    from processing.shards import split_fingerprint

    arrays = driving_arrays(9)
    for host, (start, stop) in (("algo-10", (7, 9)), ("algo-2", (3, 7)), ("algo-1", (0, 3))):
        write_split(tmp_path, "train", take(arrays, start, stop), SPEC, shard_size=2, host=host)
    write_split(tmp_path, "train", take(arrays, 0, 0), SPEC, host="algo-3")  # an instance with no frames
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert (
        "dataset-algo-2.json" in names and "shard-algo-2-00001.npz" in names and "dataset.json" not in names
    )

    loaded, dataset = load_split(tmp_path / "train")
    for key, value in arrays.items():  # every shard, the parts in host order (algo-2 before algo-10)
        np.testing.assert_array_equal(loaded[key], value.astype(loaded[key].dtype))
    assert dataset["parts"] == [
        "dataset-algo-1.json",
        "dataset-algo-2.json",
        "dataset-algo-3.json",
        "dataset-algo-10.json",
    ]
    assert dataset["frames"] == 9 and dataset["sessions"] == ["s0", "s1", "s2"]
    assert dataset["fingerprint"] == split_fingerprint(tmp_path / "train", dataset["shards"])
    assert len(dataset["shards"]) == 2 + 2 + 0 + 1


def test_parts_that_do_not_belong_together_are_refused(tmp_path):
    arrays = driving_arrays(4)
    write_split(tmp_path / "a", "train", take(arrays, 2, 4), SPEC)
    write_split(
        tmp_path / "a", "train", take(arrays, 0, 2), SPEC, host="algo-1"
    )  # another run's part beside it
    with pytest.raises(ShardError, match="two preprocess runs"):
        load_split(tmp_path / "a" / "train")
    write_split(tmp_path / "b", "train", take(arrays, 0, 2), SPEC, host="algo-1")
    other = {**take(arrays, 2, 4), "images": np.zeros((2, 66, 200, 3), np.uint8)}
    write_split(tmp_path / "b", "train", other, FrameSpec(crop_top=40, height=66, width=200), host="algo-2")
    with pytest.raises(ShardError, match="differ in 'frame_spec'"):
        load_split(tmp_path / "b" / "train")


def test_a_rerun_replaces_only_what_the_same_instance_wrote(tmp_path):
    arrays = driving_arrays(6)
    write_split(tmp_path, "train", arrays, SPEC, shard_size=2, host="algo-1")
    write_split(tmp_path, "train", arrays, SPEC, shard_size=2, host="algo-11")
    write_split(tmp_path, "train", take(arrays, 0, 2), SPEC, shard_size=2, host="algo-1")  # fewer shards now
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert [n for n in names if "algo-1-" in n or n.endswith("algo-1.json")] == [
        "dataset-algo-1.json",
        "shard-algo-1-00000.npz",
    ]
    assert len([n for n in names if "algo-11" in n]) == 4  # algo-11's part is not algo-1's
    write_split(tmp_path, "train", arrays, SPEC, shard_size=3)  # a single instance owns the folder
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "dataset.json",
        "shard-00000.npz",
        "shard-00001.npz",
    ]
