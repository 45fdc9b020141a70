"""Run a compiled pilot on the device: LiteRT first, ONNX Runtime second, DLR (Neo) only when installed.

A compiled package (``processing/compile.py``, docs/contracts.md section 5) is a folder with
``manifest.json`` and the model files it lists. Each entry of ``manifest["artifacts"]`` says::

    {"file": "pilot_int8.tflite", "runtime": "litert" | "onnxruntime" | "dlr",
     "precision": "int8" | "float32",
     "input": {"name", "shape": [H, W, 3], "dtype": "uint8" | "int8" | "float32", "normalization": "x/255",
               "quantization": null | {"scale", "zero_point"}, "layout": "NCHW" (optional: transposed)},
     "outputs": [{"name": "angle", "tensor": "<the runtime's output name>", "dtype", "quantization"},
                 {"name": "throttle", ...}],
     "sha256", "size_bytes", "accuracy_delta": {...}}

and the manifest's top level carries ``model_type`` and ``throttle_range``. Outputs are found by their
runtime *name* (a linear pilot has two heads of width 1, so shapes cannot tell them apart), and the
heads go through ``edge.frames.decode_outputs`` in the manifest's order (angle, throttle).
``run_heads`` gives those raw (dequantised) heads, so the agent's smoke test can see what the decoder's
clipping would hide (a throttle head saying 50 decodes to full throttle).

What runs is what was verified: a manifest's ``file`` resolves inside the package folder only
(``package_path``: no absolute path, no ``..``, no symlink out), and ``verify_package_files`` checks each
listed file against the ``sha256`` and ``size_bytes`` the manifest records (the agent runs it at install).
Which artifact drives is measured on the car: at install the agent's smoke test times every artifact whose
runtime is here and records the fastest that passes in ``CHOICE_FILE`` inside the installed folder;
``choose_artifact`` takes it (among what an explicit ``prefer`` names, before the manifest's ``default``).

A ``Pilot`` takes uint8 frames prepared by ``edge.frames.prepare_frame`` and returns the car's
(angle, throttle). Quantised inputs and outputs are (de)quantised here. Thread counts are always set
explicitly (default 1): runtimes otherwise pick one per core, which fights the camera and drive loop.
No TensorFlow here: this module runs on the car.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge.frames import INPUT_SCALING, decode_outputs, to_model_input

MANIFEST_NAME = "manifest.json"
# What a package does, its manifest's ``task``: a pilot's manifest has none (it predates the field); a
# classifier's says "classification" and runs through edge.classify, a detector's "detection" through
# edge.detect; each checks its own manifest.
PILOT_TASK, CLASSIFICATION_TASK, DETECTION_TASK = "pilot", "classification", "detection"
TASKS = (PILOT_TASK, CLASSIFICATION_TASK, DETECTION_TASK)
MAX_MANIFEST_BYTES = 1 << 20  # a compiled manifest with five artifacts is about 6 KiB
MODEL_TYPES = ("linear", "categorical")
RUNTIMES = ("litert", "onnxruntime", "dlr")  # the order a package is driven with when nothing is preferred
_RUNTIME_MODULES = {"litert": "ai_edge_litert", "onnxruntime": "onnxruntime", "dlr": "dlr"}
# Written by the agent into an installed package: {"file": the artifact measured fastest here, "reason"}.
CHOICE_FILE = ".robocar-choice.json"
MAX_CHOICE_BYTES = 1 << 16  # a file name and a sentence; anything larger is not the agent's record


class PilotError(RuntimeError):
    """A compiled package that cannot be run here: bad manifest, missing file or runtime, wrong outputs."""


@runtime_checkable
class Pilot(Protocol):
    """A loaded pilot: uint8 frames in (``prepare_frame``'s output), (angle, throttle) out."""

    runtime: str
    artifact: Mapping[str, Any]

    def run(self, frame: np.ndarray) -> tuple[float, float]:
        """One uint8 frame [H, W, 3] -> (angle, throttle)."""
        ...

    def run_batch(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames [N, H, W, 3] -> (angle[N], throttle[N])."""
        ...

    def run_heads(self, frames: np.ndarray) -> list[np.ndarray]:
        """uint8 frames [N, H, W, 3] -> the network's raw heads (dequantised), angle's first."""
        ...


# ---------------------------------------------------------------- manifest and (de)quantisation (pure)


def read_manifest(package_dir: str | Path) -> dict[str, Any]:
    path = Path(package_dir) / MANIFEST_NAME
    if not path.is_file():
        raise PilotError(f"{path} not found: not a compiled pilot package")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise PilotError(f"{path} is over {MAX_MANIFEST_BYTES} bytes: not a compiled pilot manifest")
        manifest = json.loads(data)
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise PilotError(f"{path} is not valid JSON: {type(exc).__name__}: {exc}") from exc
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("artifacts"), list)
        or not manifest["artifacts"]
    ):
        raise PilotError(f"{path} lists no artifacts")
    return manifest


def task_of(manifest: Mapping[str, Any]) -> str:
    """The package's task (``TASKS``); PilotError for one this car does not know."""
    task = manifest.get("task", PILOT_TASK)
    if task not in TASKS:
        raise PilotError(f"the package's task {task!r} is not one this car runs ({', '.join(TASKS)})")
    return str(task)


def package_task(package_dir: str | Path) -> str | None:
    """The task of an extracted package, or None when its manifest cannot be read (opening it says why)."""
    try:
        return task_of(read_manifest(package_dir))
    except PilotError:
        return None


def package_path(package_dir: str | Path, name: Any) -> Path:
    """A file the manifest names -> its real path inside the package folder.

    An absolute path, ``..``, or a symlink leading out is a PilotError: the car runs only bytes that
    came out of the verified archive. ``package_dir`` itself may be a link (the agent's ``current``).
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name or "\\" in name:
        raise PilotError(f"the manifest names an invalid file {name!r}")
    if name.startswith("/") or ".." in name.split("/"):
        raise PilotError(f"the manifest's file {name!r} points outside the package")
    root = Path(os.path.realpath(package_dir))
    path = Path(os.path.realpath(root / name))
    if root not in path.parents:
        raise PilotError(f"the manifest's file {name!r} resolves outside the package ({path})")
    return path


def verify_package_files(package_dir: str | Path, manifest: Mapping[str, Any]) -> list[str]:
    """Check every artifact the manifest lists against its recorded ``sha256`` (and ``size_bytes``);
    returns the files checked. PilotError names the first that is missing, outside or different.

    A folder artifact (Neo's compiled model) records the digest of Neo's own archive, which is not in
    the package: its bytes are covered by the package's registry SHA-256 alone.
    """
    from edge.artifacts import sha256_file  # standard library only

    checked: list[str] = []
    for artifact in manifest.get("artifacts") or []:
        if not isinstance(artifact, dict):
            raise PilotError(f"the manifest lists an artifact that is not an object: {artifact!r}")
        name = artifact.get("file")
        path = package_path(package_dir, name)
        if path.is_dir():
            continue
        if not path.is_file():
            raise PilotError(f"{name} is listed in the manifest but not in the package")
        expected = str(artifact.get("sha256") or "").lower()
        if len(expected) != 64:
            raise PilotError(f"the manifest lists {name} without a SHA-256")
        size = artifact.get("size_bytes")
        if size is not None and size != path.stat().st_size:
            raise PilotError(f"{name} is {path.stat().st_size} bytes, the manifest says {size}")
        actual = sha256_file(path)
        if actual != expected:
            raise PilotError(f"{name} has SHA-256 {actual}, the manifest says {expected}")
        checked.append(str(name))
    return checked


def runtime_available(runtime: str) -> bool:
    """Whether the runtime's Python package is importable here (without importing it)."""
    module = _RUNTIME_MODULES.get(runtime)
    return module is not None and importlib.util.find_spec(module) is not None


def runnable_artifacts(
    manifest: Mapping[str, Any],
    prefer: str | None = None,
    available: Callable[[str], bool] = runtime_available,
) -> list[dict[str, Any]]:
    """The artifacts whose runtime is installed here (and that match ``prefer``), in the manifest's order.

    ``prefer`` is a file name, a runtime (``litert``), a precision (``int8``) or both (``litert-int8``).
    """
    artifacts = [a for a in manifest["artifacts"] if isinstance(a, dict)]
    usable = [a for a in artifacts if available(str(a.get("runtime")))]
    if not prefer:
        return usable
    wanted = [a for a in usable if prefer in _labels(a)]
    if not wanted:
        offered = sorted({label for a in artifacts for label in _labels(a)})
        raise PilotError(
            f"no artifact matching {prefer!r} with an installed runtime; the package offers {offered}"
        )
    return wanted


def read_choice(package_dir: str | Path) -> str | None:
    """The artifact file the agent measured fastest on this device at install (``CHOICE_FILE``), or None.

    A missing, unreadable or malformed record is no choice: the car then drives the manifest's default.
    """
    path = Path(package_dir) / CHOICE_FILE
    try:
        if path.stat().st_size > MAX_CHOICE_BYTES:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    file = record.get("file") if isinstance(record, dict) else None
    return file if isinstance(file, str) and file else None


def choose_artifact(
    manifest: Mapping[str, Any],
    prefer: str | None = None,
    available: Callable[[str], bool] = runtime_available,
    chosen: str | None = None,
) -> dict[str, Any]:
    """The artifact to drive with.

    ``prefer`` (see ``runnable_artifacts``) narrows the candidates to those it names; among them
    ``chosen``, the file the agent measured fastest on this device (``read_choice``), when it is listed
    and its runtime is here; else the manifest's ``default`` file when it is a candidate, else the first
    candidate (the compile step lists them best first). So ``--prefer litert-int8`` drives whichever of
    the package's two int8 LiteRT layouts the car measured faster.
    """
    artifacts = [a for a in manifest["artifacts"] if isinstance(a, dict)]
    usable = runnable_artifacts(manifest, prefer, available)
    for wanted in (chosen, manifest.get("default")):
        for artifact in usable:
            if wanted and artifact.get("file") == wanted:
                return artifact
    if usable:
        return usable[0]
    runtimes = sorted({str(a.get("runtime")) for a in artifacts})
    raise PilotError(f"none of the package's runtimes {runtimes} is installed (pip install '.[edge]')")


def _labels(artifact: Mapping[str, Any]) -> set[str]:
    runtime, precision = str(artifact.get("runtime")), str(artifact.get("precision"))
    return {str(artifact.get("file")), runtime, precision, f"{runtime}-{precision}"}


def is_the_frame(quant: dict[str, Any], dtype: np.dtype) -> bool:
    """Whether an integer input with these quantisation parameters is the frame itself (uint8) or the
    frame minus 128 (int8): ``INPUT_SCALING.quantization``'s parameters, so no arithmetic is needed."""
    if dtype not in (np.uint8, np.int8):
        return False
    direct = INPUT_SCALING.quantization(dtype.name)
    scale, zero_point = float(quant.get("scale", 0.0)), int(quant.get("zero_point", 0))
    return abs(scale - direct["scale"]) < 1e-6 * direct["scale"] and zero_point == direct["zero_point"]


def quantize_frames(frames: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """uint8 frames -> the artifact's input tensor (float32 ``to_model_input``, or uint8/int8 quantised).

    With ``INPUT_SCALING.quantization``'s parameters the quantised input is the frame itself (uint8:
    passed without a copy) or the frame minus 128 (int8: one XOR), so the int8 pilot never normalises
    in floating point on the car.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise PilotError(f"frames must be uint8 (edge.frames.prepare_frame output), got {frames.dtype}")
    dtype = np.dtype(spec.get("dtype", "float32"))
    if dtype == np.float32:
        return to_model_input(frames)
    quant = spec.get("quantization") or {}
    scale, zero_point = float(quant.get("scale", 0.0)), int(quant.get("zero_point", 0))
    if scale <= 0:
        raise PilotError(f"input of dtype {dtype} needs quantization parameters, got {quant}")
    if is_the_frame(quant, dtype):  # the frame itself, or shifted by 128: no arithmetic
        if dtype == np.uint8:
            return frames
        if dtype == np.int8:
            return np.bitwise_xor(frames, np.uint8(0x80)).view(np.int8)  # v ^ 0x80 read as int8 is v - 128
    info = np.iinfo(dtype)
    q = np.rint(to_model_input(frames) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """A runtime output -> float32, undoing its quantisation when the output is integer."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=False)
    quant = spec.get("quantization") or {}
    scale, zero_point = float(quant.get("scale", 0.0)), int(quant.get("zero_point", 0))
    if scale <= 0:
        raise PilotError(f"output {spec.get('name')!r} is {values.dtype} but has no quantization parameters")
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def _check_outputs(artifact: Mapping[str, Any], offered: Sequence[str]) -> list[str]:
    """The runtime tensor names of the manifest's outputs, in the manifest's order (angle, throttle)."""
    specs = artifact.get("outputs") or []
    tensors = [str(o.get("tensor", o.get("name"))) for o in specs]
    missing = [t for t in tensors if t not in offered]
    if len(tensors) != 2 or missing:
        raise PilotError(
            f"{artifact.get('file')}: manifest outputs {tensors} do not match "
            f"the model's outputs {list(offered)}"
        )
    return tensors


class _PilotBase:
    """Shared plumbing: quantise in, run the runtime, dequantise and decode out."""

    runtime = "?"

    def __init__(self, artifact: Mapping[str, Any], model_type: str, throttle_range: float) -> None:
        self.artifact = dict(artifact)
        self.model_type = model_type
        self.throttle_range = throttle_range
        self._input_spec = dict(artifact.get("input") or {})
        self._output_specs = list(artifact.get("outputs") or [])

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - each runtime overrides
        raise NotImplementedError

    def run_heads(self, frames: np.ndarray) -> list[np.ndarray]:
        """uint8 frames [N, H, W, 3] -> the raw heads (dequantised), in the manifest's order."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        expected = tuple(self._input_spec.get("shape") or frames.shape[1:])
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise PilotError(
                f"expected frames [N, {', '.join(map(str, expected))}], got {list(frames.shape)}"
            )
        raw = self._infer(quantize_frames(frames, self._input_spec))
        return [dequantize(value, spec) for value, spec in zip(raw, self._output_specs, strict=True)]

    def run_batch(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heads = self.run_heads(frames)
        angle, throttle = decode_outputs(heads, self.model_type, self.throttle_range)
        if self.model_type == "categorical":
            # argmax reads a NaN as the largest bin: mark those frames NaN so the drive loop skips them.
            broken = ~(np.isfinite(heads[0]).all(axis=-1) & np.isfinite(heads[1]).all(axis=-1))
            if broken.any():
                angle, throttle = np.where(broken, np.nan, angle), np.where(broken, np.nan, throttle)
        return angle, throttle

    def run(self, frame: np.ndarray) -> tuple[float, float]:
        angle, throttle = self.run_batch(frame[None] if np.ndim(frame) == 3 else frame)
        return float(angle[0]), float(throttle[0])


class LiteRtPilot(_PilotBase):
    """``ai_edge_litert`` interpreter (XNNPACK for float and int8), thread count set explicitly."""

    runtime = "litert"

    def __init__(
        self, path: Path, artifact: Mapping[str, Any], model_type: str, throttle_range: float, threads: int
    ):
        super().__init__(artifact, model_type, throttle_range)
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        by_name = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._output_indices = [by_name[t] for t in _check_outputs(artifact, list(by_name))]
        self._batch = 1
        self._frame_shape = tuple(self._input_spec.get("shape") or ())
        quant = self._input_spec.get("quantization") or {}
        # The full-integer pilot's input is the frame minus 128 (scale 1/255, zero point -128; see
        # quantize_frames): the one-frame path XORs the frame straight into the interpreter's buffer.
        dtype = np.dtype(self._input_spec.get("dtype", "float32"))
        self._frame_minus_128 = (
            dtype == np.int8 and is_the_frame(quant, dtype) and len(self._frame_shape) == 3
        )
        self._input_buffer = self._interpreter.tensor(self._input_index)
        dtypes = {d["index"]: np.dtype(d["dtype"]) for d in self._interpreter.get_output_details()}
        # Heads dequantised in the graph (compile's int8 pilot): nothing to undo, ~2.6 us saved per frame.
        self._float_heads = all(dtypes[index] == np.float32 for index in self._output_indices)

    def run(self, frame: np.ndarray) -> tuple[float, float]:
        """One frame, the drive loop's call, without the batch path's intermediate arrays.

        The int8 frame is written into the interpreter's own input buffer (no intermediate array, no
        ``set_tensor`` copy) and the two float32 heads go to the decoder as they come: measured ~6 us less
        per frame than the batch path on an AMD EPYC (Zen 5), one thread, where the whole int8 pilot takes
        ~150 us. Anything else (a batch, a float or uint8 input, integer heads, a categorical pilot) takes
        the general path.
        """
        frame = np.asarray(frame)
        if not (
            self._frame_minus_128
            and self._batch == 1
            and frame.dtype == np.uint8
            and frame.shape == self._frame_shape
            and self.model_type == "linear"
            and self._float_heads
        ):
            return super().run(frame)
        np.bitwise_xor(frame, np.uint8(0x80), out=self._input_buffer()[0].view(np.uint8))
        interpreter = self._interpreter
        interpreter.invoke()
        heads = [interpreter.get_tensor(index) for index in self._output_indices]
        angle, throttle = decode_outputs(heads, self.model_type, self.throttle_range)
        return float(angle[0]), float(throttle[0])

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter
        if len(batch) != self._batch:  # resizing re-plans the graph: only when the batch size changes
            interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            interpreter.allocate_tensors()
            self._batch = len(batch)
        interpreter.set_tensor(self._input_index, batch)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in self._output_indices]


def onnx_session_options(threads: int) -> Any:
    """The car's ONNX Runtime session options: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimisation.

    ORT_ENABLE_ALL (not EXTENDED) because its layout transformations are most of the classifier's speed:
    float32 convolutions in NCHWc blocks and int8 QLinearConv in NHWC. Measured on the 64x64
    EfficientNet-Lite0 classifier, one thread: float32 533 vs 3,093 us a photo (5.8x), int8 254 vs
    318 us (1.25x) against ORT_ENABLE_EXTENDED (benchmarks/README.md, classifier section).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def onnx_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``onnx_session_options`` (pilots and edge.classify's classifiers
    load their ONNX artifacts through it)."""
    import onnxruntime as ort

    options = onnx_session_options(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxPilot(_PilotBase):
    """ONNX Runtime CPU session with intra- and inter-op threads set and sequential execution."""

    runtime = "onnxruntime"

    def __init__(
        self, path: Path, artifact: Mapping[str, Any], model_type: str, throttle_range: float, threads: int
    ):
        super().__init__(artifact, model_type, throttle_range)
        self._session = onnx_session(path, threads)
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = _check_outputs(artifact, [o.name for o in self._session.get_outputs()])

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._output_names, {self._input_name: batch})


def disable_dlr_phone_home() -> None:
    """DLR reports usage to AWS unless told not to (docs/design.md "Neo and DLR")."""
    from dlr.counter.phone_home import PhoneHome

    PhoneHome.disable_feature()


class DlrPilot(_PilotBase):
    """Neo's runtime, for Neo-compiled artifacts; only when ``dlr`` and its native library exist."""

    runtime = "dlr"

    def __init__(
        self, path: Path, artifact: Mapping[str, Any], model_type: str, throttle_range: float, threads: int
    ):
        super().__init__(artifact, model_type, throttle_range)
        disable_dlr_phone_home()
        # TVM's runtime (inside DLR) reads its thread count from the environment when the model loads.
        os.environ["TVM_NUM_THREADS"] = str(threads)
        from dlr import DLRModel

        self._model = DLRModel(str(path), dev_type="cpu", dev_id=0)
        self._input_name = str(self._input_spec.get("name"))
        if all("index" in o for o in self._output_specs):
            # Neo's outputs come in the serving signature's order; the compile step records positions.
            self._positions = [int(o["index"]) for o in self._output_specs]
        else:
            names = list(self._model.get_output_names())
            self._positions = [names.index(t) for t in _check_outputs(artifact, names)]

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._input_spec.get("layout") == "NCHW":  # Neo compiled the ONNX pilot for [1, 3, H, W]
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        outputs = self._model.run({self._input_name: batch})
        return [outputs[i] for i in self._positions]


_PILOTS: dict[str, type[_PilotBase]] = {"litert": LiteRtPilot, "onnxruntime": OnnxPilot, "dlr": DlrPilot}


def load_artifact(
    package_dir: str | Path, artifact: Mapping[str, Any], manifest: Mapping[str, Any], threads: int = 1
) -> Pilot:
    """Load one artifact of a package with its runtime."""
    if threads < 1:
        raise PilotError(f"threads must be >= 1, got {threads}")
    runtime = str(artifact.get("runtime"))
    if runtime not in _PILOTS:
        raise PilotError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    if not runtime_available(runtime):
        raise PilotError(
            f"runtime {runtime!r} is not installed here (python module {_RUNTIME_MODULES[runtime]!r})"
        )
    path = package_path(package_dir, artifact.get("file"))
    if not path.exists():
        raise PilotError(f"{path} is listed in the manifest but missing")
    if task_of(manifest) != PILOT_TASK:
        raise PilotError(f"{path.name} belongs to a {task_of(manifest)} package, not a pilot (edge.classify)")
    model_type, throttle_range = model_settings(manifest)
    try:
        return _PILOTS[runtime](path, artifact, model_type, throttle_range, threads)
    except PilotError:
        raise
    except Exception as exc:  # runtimes raise their own types for corrupt or incompatible models
        raise PilotError(f"{runtime} cannot load {path.name}: {exc}") from exc


def model_settings(manifest: Mapping[str, Any]) -> tuple[str, float]:
    """(model_type, throttle_range) of a manifest, refused unless the decoder can use them."""
    model_type = manifest.get("model_type", "linear")
    if model_type not in MODEL_TYPES:
        raise PilotError(f"model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    throttle_range = manifest.get("throttle_range", 0.5)
    if (
        isinstance(throttle_range, bool)
        or not isinstance(throttle_range, int | float)
        or not math.isfinite(throttle_range)
        or not 0 < throttle_range <= 1
    ):
        raise PilotError(f"throttle_range {throttle_range!r} is not a number in (0, 1]")
    return str(model_type), float(throttle_range)


def load_pilot(package_dir: str | Path, prefer: str | None = None, threads: int = 1) -> Pilot:
    """Load the best pilot of an extracted package that this device can run (see ``choose_artifact``)."""
    manifest = read_manifest(package_dir)
    artifact = choose_artifact(manifest, prefer, chosen=read_choice(package_dir))
    return load_artifact(package_dir, artifact, manifest, threads)
