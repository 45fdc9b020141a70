"""Write the model directory of docs/contracts.md section 3 (what ``SM_MODEL_DIR`` becomes in model.tar.gz).

```
model.keras        Keras 3 model (donkeycar layer names)
1/                 SavedModel for TF Serving; signature serving_default: img_in float32 [None,H,W,3]
                   (x/255) -> {"angle", "throttle"} (the raw heads: [N,1] linear, [N,15]/[N,20] categorical)
model.json         what every consumer needs to feed the model and read its outputs
code/inference.py  the TF Serving handler, with code/edge/ (frames.py) so the container can import it
```
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from edge.frames import INPUT_SCALING, FrameSpec, preprocessing_record
from training.spec import ARCHITECTURES, HEADS

SAVED_MODEL_VERSION = "1"  # TF Serving loads the highest numbered folder
SIGNATURE = "serving_default"
INPUT_NAME = "img_in"
NORMALIZATION = INPUT_SCALING.normalization  # "x/255"
# What the TF Serving container imports: the handler and the one frame implementation. Named as modules,
# not paths: the training code bundle holds what train.py's import walk reaches, and that walk counts a
# string naming a module as a reference (pipelines/import_graph.py); requirements.txt sits beside the handler.
SERVING_MODULES = {
    "inference.py": "inference.inference",
    "edge/__init__.py": "edge",
    "edge/frames.py": "edge.frames",
}


def module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{name} is not importable: the serving code cannot be copied")
    return Path(spec.origin)


def code_files() -> dict[str, Path]:
    """``code/`` of the model directory: relative path -> the file copied there."""
    files = {relative: module_path(name) for relative, name in SERVING_MODULES.items()}
    files["requirements.txt"] = files["inference.py"].with_name("requirements.txt")
    return files


def output_ranges(model_type: str, throttle_range: float) -> list[dict[str, Any]]:
    """The heads in the car's units; the categorical throttle covers [0, throttle_range] (donkeycar)."""
    throttle = [-1.0, 1.0] if model_type == "linear" else [0.0, float(throttle_range)]
    outputs = [
        {"name": "angle", "range": [-1.0, 1.0], "layer": HEADS[model_type]["angle"]},
        {"name": "throttle", "range": throttle, "layer": HEADS[model_type]["throttle"]},
    ]
    if model_type == "categorical":
        outputs[0]["bins"], outputs[1]["bins"] = 15, 20
    return outputs


def build_model_json(
    *,
    model_type: str,
    frame_spec: Mapping[str, int],
    throttle_range: float,
    dataset_fingerprint: str | None,
    history: Mapping[str, list[float]],
    epochs_run: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """model.json (contracts section 3)."""
    spec = FrameSpec.from_dict(frame_spec)
    shape = list(spec.input_shape)
    return {
        "model_type": model_type,
        "architecture": ARCHITECTURES[model_type],
        "input": {
            "name": INPUT_NAME,
            "shape": shape,
            "dtype": "float32",
            "normalization": NORMALIZATION,
            "frame_spec": spec.to_dict(),
            "preprocessing": preprocessing_record(spec),
        },
        "outputs": output_ranges(model_type, throttle_range),
        "throttle_range": float(throttle_range),
        "dataset_fingerprint": dataset_fingerprint,
        "history": {key: [float(v) for v in values] for key, values in history.items()},
        "epochs_run": int(epochs_run),
        "seed": int(seed),
        "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "serving": {
            "saved_model": SAVED_MODEL_VERSION,
            "signature": SIGNATURE,
            "outputs": ["angle", "throttle"],
        },
        **dict(extra or {}),
    }


def export_saved_model(model: keras.Model, path: Path, model_type: str) -> None:
    """SavedModel whose serving signature names its outputs ``angle`` and ``throttle``.

    ``model.export`` would name them ``output_0``/``output_1``; downstream runtimes (TF Serving, the
    converters) keep signature names, so the heads stay identifiable everywhere.
    """
    angle_layer, throttle_layer = HEADS[model_type]["angle"], HEADS[model_type]["throttle"]
    order = list(model.output_names)
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=INPUT_NAME)

    def serve(img_in: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = model([img_in], training=False)
        return {
            "angle": outputs[order.index(angle_layer)],
            "throttle": outputs[order.index(throttle_layer)],
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def copy_inference_code(model_dir: Path) -> None:
    for relative, source in code_files().items():
        target = model_dir / "code" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_model_dir(model: keras.Model, model_dir: str | Path, model_json: Mapping[str, Any]) -> Path:
    """Everything of contracts section 3 into ``model_dir`` (created; existing files replaced)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / "model.keras")
    saved_model = model_dir / SAVED_MODEL_VERSION
    if saved_model.exists():
        shutil.rmtree(saved_model)
    export_saved_model(model, saved_model, model_json["model_type"])
    (model_dir / "model.json").write_text(json.dumps(model_json, indent=2, sort_keys=True) + "\n")
    copy_inference_code(model_dir)
    return model_dir
