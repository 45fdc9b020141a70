"""One epoch of train.py on tiny shards yields the model directory of contracts section 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from edge.frames import PREPROCESSING_VERSION, FrameSpec, preprocessing_digest, to_model_input  # noqa: E402
from processing import compile as compile_step  # noqa: E402
from processing.shards import write_split  # noqa: E402
from training import train  # noqa: E402
from training.metrics import parse_epoch_line  # noqa: E402

SIDE = 80  # near the smallest frame both donkeycar CNNs accept (77 px): tiny keeps the test fast
SPEC = FrameSpec(camera_height=SIDE, camera_width=SIDE, height=SIDE, width=SIDE)


def write_tiny_splits(root: Path, frames: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", frames), ("validation", frames // 2), ("test", frames // 2)):
        write_split(
            root,
            split,
            {
                "images": rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8),
                "angle": rng.uniform(-1, 1, n).astype(np.float32),
                "throttle": rng.uniform(0, 0.5, n).astype(np.float32),
                "session": np.array(["s0"] * n),
                "tub": np.array(["tub"] * n),
                "index": np.arange(n),
                "timestamp_ms": np.arange(n) * 50,
            },
            SPEC,
        )
    return root


def run_train(data: Path, out: Path, *extra: str) -> int:
    argv = [
        "--train",
        str(data / "train"),
        "--validation",
        str(data / "validation"),
        "--sm-model-dir",
        str(out),
    ]
    return train.main([*argv, "--epochs", "1", "--batch-size", "8", *extra])


@pytest.fixture(scope="module")
def linear_model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    data = write_tiny_splits(root / "data")
    assert run_train(data, root / "model") == 0
    return root / "model"


def test_model_dir_has_every_artifact(linear_model_dir):
    for relative in (
        "model.keras",
        "1/saved_model.pb",
        "model.json",
        "code/inference.py",
        "code/edge/frames.py",
    ):
        assert (linear_model_dir / relative).is_file(), relative
    assert (linear_model_dir / "code/edge/__init__.py").is_file()


def test_model_json_describes_model_input_outputs_and_training(linear_model_dir):
    model_json = json.loads((linear_model_dir / "model.json").read_text())
    dataset = json.loads((linear_model_dir.parent / "data/train/dataset.json").read_text())
    assert model_json["model_type"] == "linear"
    assert model_json["architecture"] == "donkeycar default_n_linear"
    assert model_json["input"] == {
        "name": "img_in",
        "shape": [SIDE, SIDE, 3],
        "dtype": "float32",
        "normalization": "x/255",
        "frame_spec": SPEC.to_dict(),
        "preprocessing": {"version": PREPROCESSING_VERSION, "digest": preprocessing_digest(SPEC)},
    }
    assert [o["name"] for o in model_json["outputs"]] == ["angle", "throttle"]
    assert model_json["outputs"][0]["range"] == [-1.0, 1.0]
    assert model_json["dataset_fingerprint"] == dataset["fingerprint"]
    assert model_json["epochs_run"] == 1
    assert len(model_json["history"]["loss"]) == len(model_json["history"]["val_loss"]) == 1
    assert model_json["seed"] == 42
    assert model_json["framework"]["tensorflow"] == tf.__version__
    # What training writes is what compile requires (no default frame spec, this code's digest).
    assert compile_step.read_model_json(linear_model_dir) == model_json


def test_keras_model_and_saved_model_agree(linear_model_dir):
    model = keras.saving.load_model(linear_model_dir / "model.keras")
    assert model.count_params() > 0 and model.output_names == ["n_outputs0", "n_outputs1"]
    serving = tf.saved_model.load(str(linear_model_dir / "1")).signatures["serving_default"]
    x = to_model_input(np.random.default_rng(1).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8))
    served = serving(tf.constant(x))
    assert set(served) == {"angle", "throttle"}
    angle, throttle = model([x], training=False)
    np.testing.assert_allclose(served["angle"].numpy(), np.asarray(angle), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["throttle"].numpy(), np.asarray(throttle), rtol=1e-5, atol=1e-6)


def test_epoch_lines_are_printed_for_the_metric_definitions(tmp_path, capsys):
    data = write_tiny_splits(tmp_path / "data", frames=16)
    assert run_train(data, tmp_path / "m", "--model-type", "categorical") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(lines) == 1
    scraped = parse_epoch_line(lines[0])
    assert {"train:loss", "validation:loss", "train:angle_accuracy", "validation:throttle_accuracy"} <= set(
        scraped
    )
    model_json = json.loads((tmp_path / "m/model.json").read_text())
    assert model_json["architecture"] == "donkeycar default_categorical"
    assert model_json["outputs"][1]["range"] == [0.0, 0.5]  # donkeycar's throttle bins cover [0, range]


def test_in_graph_normalisation_is_bit_identical_to_edge_frames():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(train.normalise(frames).numpy(), to_model_input(frames))


def test_same_seed_gives_the_same_weights(tmp_path):
    data = write_tiny_splits(tmp_path / "data", frames=16)
    weights = []
    for name in ("a", "b"):
        assert run_train(data, tmp_path / name, "--seed", "7") == 0
        model = keras.saving.load_model(tmp_path / name / "model.keras")
        weights.append(model.get_weights())
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)


def test_missing_split_is_a_clear_error(tmp_path, capsys):
    data = write_tiny_splits(tmp_path / "data", frames=8)
    code = train.main(["--train", str(data / "train"), "--validation", str(tmp_path / "nope")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_inference_handler_serves_the_exported_model(linear_model_dir):
    from inference.inference import predict_payload

    model_json = json.loads((linear_model_dir / "model.json").read_text())
    serving = tf.saved_model.load(str(linear_model_dir / "1")).signatures["serving_default"]

    def predict_fn(x: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value.numpy() for key, value in serving(tf.constant(x)).items()}

    frames = np.random.default_rng(2).integers(0, 256, (2, SIDE, SIDE, 3), dtype=np.uint8)
    result = predict_payload(json.dumps(frames.tolist()).encode(), "application/json", predict_fn, model_json)
    model = keras.saving.load_model(linear_model_dir / "model.keras")
    angle, throttle = (np.asarray(o).reshape(-1) for o in model([to_model_input(frames)], training=False))
    np.testing.assert_allclose(result["angle"], np.clip(angle, -1, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["throttle"], np.clip(throttle, -1, 1), rtol=1e-5, atol=1e-6)


def test_bfloat16_training_exports_a_float32_model(tmp_path):
    data = write_tiny_splits(tmp_path / "data", frames=16)
    assert run_train(data, tmp_path / "m", "--precision", "mixed_bfloat16") == 0
    model_json = json.loads((tmp_path / "m/model.json").read_text())
    assert model_json["training"]["hyperparameters"]["precision"] == "mixed_bfloat16"
    model = keras.saving.load_model(tmp_path / "m/model.keras")
    assert {layer.dtype_policy.compute_dtype for layer in model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # training left no global state behind
