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

A ``Pilot`` takes uint8 frames prepared by ``edge.frames.prepare_frame`` and returns the car's
(angle, throttle). Quantised inputs and outputs are (de)quantised here. Thread counts are always set
explicitly (default 1): runtimes otherwise pick one per core, which fights the camera and drive loop.
No TensorFlow here: this module runs on the car.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge.frames import decode_outputs, to_model_input

MANIFEST_NAME = "manifest.json"
RUNTIMES = ("litert", "onnxruntime", "dlr")  # the order a package is driven with when nothing is preferred
_RUNTIME_MODULES = {"litert": "ai_edge_litert", "onnxruntime": "onnxruntime", "dlr": "dlr"}


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


# ---------------------------------------------------------------- manifest and (de)quantisation (pure)


def read_manifest(package_dir: str | Path) -> dict[str, Any]:
    path = Path(package_dir) / MANIFEST_NAME
    if not path.is_file():
        raise PilotError(f"{path} not found: not a compiled pilot package")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PilotError(f"{path} is not valid JSON: {exc}") from exc
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("artifacts"), list)
        or not manifest["artifacts"]
    ):
        raise PilotError(f"{path} lists no artifacts")
    return manifest


def runtime_available(runtime: str) -> bool:
    """Whether the runtime's Python package is importable here (without importing it)."""
    module = _RUNTIME_MODULES.get(runtime)
    return module is not None and importlib.util.find_spec(module) is not None


def choose_artifact(
    manifest: Mapping[str, Any],
    prefer: str | None = None,
    available: Callable[[str], bool] = runtime_available,
) -> dict[str, Any]:
    """The artifact to drive with.

    ``prefer`` is a file name, a runtime (``litert``), a precision (``int8``) or both
    (``litert-int8``); without it the manifest's ``default`` file is used when its runtime is here,
    else the first artifact (the compile step lists them best first) whose runtime is here.
    """
    artifacts = [a for a in manifest["artifacts"] if isinstance(a, dict)]
    usable = [a for a in artifacts if available(str(a.get("runtime")))]
    if prefer:
        wanted = [a for a in usable if prefer in _labels(a)]
        if not wanted:
            offered = sorted({label for a in artifacts for label in _labels(a)})
            raise PilotError(
                f"no artifact matching {prefer!r} with an installed runtime; the package offers {offered}"
            )
        return wanted[0]
    default = manifest.get("default")
    for artifact in usable:
        if artifact.get("file") == default:
            return artifact
    if usable:
        return usable[0]
    runtimes = sorted({str(a.get("runtime")) for a in artifacts})
    raise PilotError(f"none of the package's runtimes {runtimes} is installed (pip install '.[edge]')")


def _labels(artifact: Mapping[str, Any]) -> set[str]:
    runtime, precision = str(artifact.get("runtime")), str(artifact.get("precision"))
    return {str(artifact.get("file")), runtime, precision, f"{runtime}-{precision}"}


def quantize_frames(frames: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """uint8 frames -> the artifact's input tensor (float32 ``x/255``, or uint8/int8 quantised).

    With scale 1/255 the quantised input is the frame itself (uint8, zero point 0: passed without a
    copy) or the frame minus 128 (int8, zero point -128: one XOR), so the int8 pilot never normalises
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
    if abs(scale * 255.0 - 1.0) < 1e-6:  # the frame itself, or shifted by 128: no arithmetic needed
        if dtype == np.uint8 and zero_point == 0:
            return frames
        if dtype == np.int8 and zero_point == -128:
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

    def run_batch(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        expected = tuple(self._input_spec.get("shape") or frames.shape[1:])
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise PilotError(
                f"expected frames [N, {', '.join(map(str, expected))}], got {list(frames.shape)}"
            )
        raw = self._infer(quantize_frames(frames, self._input_spec))
        heads = [dequantize(value, spec) for value, spec in zip(raw, self._output_specs, strict=True)]
        return decode_outputs(heads, self.model_type, self.throttle_range)

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

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter
        if len(batch) != self._batch:  # resizing re-plans the graph: only when the batch size changes
            interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            interpreter.allocate_tensors()
            self._batch = len(batch)
        interpreter.set_tensor(self._input_index, batch)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in self._output_indices]


class OnnxPilot(_PilotBase):
    """ONNX Runtime CPU session with intra- and inter-op threads set and sequential execution."""

    runtime = "onnxruntime"

    def __init__(
        self, path: Path, artifact: Mapping[str, Any], model_type: str, throttle_range: float, threads: int
    ):
        super().__init__(artifact, model_type, throttle_range)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = _check_outputs(artifact, [o.name for o in self._session.get_outputs()])

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._output_names, {self._input_name: batch})


def disable_dlr_phone_home() -> None:
    """DLR reports usage to AWS unless told not to (sdk-notes.md "Neo and DLR")."""
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
    path = Path(package_dir) / str(artifact.get("file"))
    if not path.exists():
        raise PilotError(f"{path} is listed in the manifest but missing")
    model_type = str(manifest.get("model_type", "linear"))
    throttle_range = float(manifest.get("throttle_range", 0.5))
    try:
        return _PILOTS[runtime](path, artifact, model_type, throttle_range, threads)
    except PilotError:
        raise
    except Exception as exc:  # runtimes raise their own types for corrupt or incompatible models
        raise PilotError(f"{runtime} cannot load {path.name}: {exc}") from exc


def load_pilot(package_dir: str | Path, prefer: str | None = None, threads: int = 1) -> Pilot:
    """Load the best pilot of an extracted package that this device can run (see ``choose_artifact``)."""
    manifest = read_manifest(package_dir)
    return load_artifact(package_dir, choose_artifact(manifest, prefer), manifest, threads)
