"""A tiny trained-looking pilot and its splits, laid out as the training and preprocess steps write them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import FrameSpec, preprocessing_record, to_model_input
from processing.shards import write_split

# Smallest frame donkeycar's five valid convolutions accept comfortably: keeps conversions to seconds.
SPEC = FrameSpec(camera_height=120, camera_width=160, crop_top=40, crop_bottom=16, height=64, width=64)


def frames(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Camera-like: smooth 8x8 blocks of colour plus a little sensor noise (pure noise is no camera's).
    blocks = rng.integers(0, 256, (n, SPEC.height // 8, SPEC.width // 8, 3))
    blocks = blocks.repeat(8, axis=1).repeat(8, axis=2)
    noise = rng.integers(-12, 13, (n, *SPEC.input_shape))
    images = np.clip(blocks + noise, 0, 255).astype(np.uint8)
    angle = np.clip(rng.normal(0, 0.4, n), -1, 1).astype(np.float32)
    return {
        "images": images,
        "angle": angle,
        "throttle": np.full(n, 0.3, np.float32),
        "session": np.array(["s1"] * n),
        "tub": np.array(["tub"] * n),
        "index": np.arange(n, dtype=np.int64),
        "timestamp_ms": np.arange(n, dtype=np.int64) * 50,
    }


def pilot(images: np.ndarray, seed: int = 0) -> Any:
    """donkeycar's linear pilot with heads scaled so its angles span about [-1, 1] on these frames.

    An untrained network answers ~0 for every frame, which any quantisation reproduces; a spread of
    outputs is what makes "int8 agrees with float" a real check.
    """
    import keras

    from training.model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("linear", SPEC.input_shape)
    outputs = [np.asarray(o).reshape(-1) for o in model(to_model_input(images), training=False)]
    for layer, out, target_std in zip(("n_outputs0", "n_outputs1"), outputs, (0.5, 0.2), strict=True):
        kernel, bias = model.get_layer(layer).get_weights()
        scale = target_std / max(float(out.std()), 1e-6)
        model.get_layer(layer).set_weights([kernel * scale, (bias - out.mean()) * scale])  # centred on 0
    return model


def model_json(model_type: str = "linear") -> dict[str, Any]:
    return {
        "model_type": model_type,
        "architecture": "donkeycar default_n_linear",
        "input": {
            "name": "img_in",
            "shape": list(SPEC.input_shape),
            "dtype": "float32",
            "normalization": "x/255",
            "frame_spec": SPEC.to_dict(),
            "preprocessing": preprocessing_record(SPEC),
        },
        "outputs": [{"name": "angle", "range": [-1, 1]}, {"name": "throttle", "range": [-1, 1]}],
        "throttle_range": 0.5,
        "dataset_fingerprint": "0" * 64,
        "framework": {"tensorflow": "2.21.0"},
    }


def write_model_dir(root: Path, model: Any | None) -> Path:
    """``root/model/model.tar.gz`` as training packs it (model.keras when given, model.json)."""
    staging = root / "model-staging"
    staging.mkdir(parents=True)
    (staging / "model.json").write_text(json.dumps(model_json()))
    if model is not None:
        model.save(staging / "model.keras")
    model_dir = root / "model"
    model_dir.mkdir()
    with tarfile.open(model_dir / "model.tar.gz", "w:gz") as tar:
        for path in sorted(staging.iterdir()):
            tar.add(path, arcname=path.name)
    return model_dir


def write_splits(root: Path, train: int = 96, test: int = 48) -> dict[str, dict[str, np.ndarray]]:
    splits = {"train": frames(train, seed=1), "test": frames(test, seed=2)}
    for name, arrays in splits.items():
        write_split(root / "splits", name, arrays, SPEC)
    return splits
