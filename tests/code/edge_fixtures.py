"""Helpers for the edge tests: tar archives built by hand, and model packages in a (moto) registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edge.frames import FrameSpec, preprocessing_record

SAMPLE_TUBS = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs"  # real donkeycar 5.3.0 tubs
GROUP = "robocar-pilot"
TARGET = "rasp4b"
BUCKET = "robocar-artifacts"


def tar_bytes(members: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A .tar.gz with regular files ``members`` plus hand-made TarInfo entries (links, devices, ...)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edge_metadata(target: str, uri: str, digest: str, runtime: str = "litert") -> dict[str, str]:
    """The CustomerMetadataProperties steps/register.py writes for one target's artifact."""
    return {f"edge:{target}:uri": uri, f"edge:{target}:sha256": digest, f"edge:{target}:runtime": runtime}


def register(
    sagemaker: Any,
    s3: Any,
    archive: bytes,
    *,
    key: str,
    approved: bool = True,
    target: str = TARGET,
    registry_sha256: str | None = None,
) -> str:
    """Upload ``archive`` and register a package carrying it for ``target``; returns the package ARN."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=archive)
    uri = f"s3://{BUCKET}/{key}"
    digest = registry_sha256 or sha256(archive)
    response = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/robocar-inference:1",
                    "ModelDataUrl": f"s3://{BUCKET}/model/model.tar.gz",
                }
            ],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties=edge_metadata(target, uri, digest),
        ModelApprovalStatus="Approved" if approved else "PendingManualApproval",
    )
    return response["ModelPackageArn"]


def registry(sagemaker: Any, s3: Any) -> None:
    s3.create_bucket(Bucket=BUCKET)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)


def frame_contract(spec: dict[str, int]) -> dict[str, Any]:
    """The manifest's ``frame_spec`` and ``preprocessing`` as compile writes them (this code's digest)."""
    return {"frame_spec": dict(spec), "preprocessing": preprocessing_record(FrameSpec.from_dict(spec))}


def fake_model(tag: str) -> bytes:
    """A model archive for tests that replace the smoke test: what matters is the bytes and the tag.

    Its manifest lists ``model.bin`` with its SHA-256, as compile does, and the camera's frame spec with
    this code's preprocessing digest, so the agent's file check passes.
    """
    model = tag.encode() * 16
    artifact = {"file": "model.bin", "runtime": "litert", "sha256": sha256(model), "size_bytes": len(model)}
    manifest = {"tag": tag, **frame_contract(FrameSpec().to_dict()), "artifacts": [artifact]}
    return tar_bytes({"manifest.json": json.dumps(manifest).encode(), "model.bin": model})


TINY_FRAME_SPEC = {"camera_height": 120, "camera_width": 160, "crop_top": 40, "crop_bottom": 0}
TINY_FRAME_SPEC.update(height=40, width=80)  # crop and resize: the car must prepare frames as told
CATEGORICAL_WIDTHS = (15, 20)  # donkeycar's angle and throttle bins


def pilot_package(
    tag: str, file: str, model: bytes, runtime: str, *, model_type: str = "linear", input_name: str = "img"
) -> bytes:
    """A compiled package (manifest.json + one model file) in edge.runtimes' format, as compile writes."""
    manifest = {
        "tag": tag,
        "target": TARGET,
        "model_type": model_type,
        "throttle_range": 0.5,
        **frame_contract(TINY_FRAME_SPEC),
        "default": file,
        "artifacts": [
            {
                "file": file,
                "runtime": runtime,
                "precision": "float32",
                "input": {
                    "name": input_name,
                    "shape": [40, 80, 3],
                    "dtype": "float32",
                    "normalization": "x/255",
                },
                "outputs": [{"name": "angle", "tensor": "angle"}, {"name": "throttle", "tensor": "throttle"}],
                "sha256": sha256(model),
                "size_bytes": len(model),
            }
        ],
    }
    return tar_bytes({"manifest.json": json.dumps(manifest).encode(), file: model})


def onnx_pilot_package(
    tag: str,
    *,
    angle_bias: float = 0.0,
    throttle: float = 0.3,
    model_type: str = "linear",
    softmax: bool = True,
    nan_when_dark: bool = False,
) -> bytes:
    """A real compiled package (manifest.json + pilot.onnx) in edge.runtimes' format, tiny and fast.

    The linear "network" steers by the frame's mean brightness (angle = mean - 0.5 + angle_bias) at a
    constant raw throttle; ``angle_bias=float("nan")`` makes a model that loads but answers NaN,
    ``nan_when_dark`` one that answers NaN only on a black frame (log(0) * 0), ``throttle=50`` one whose
    raw throttle head says 50 (which the decoder clips to full throttle). The categorical one has
    softmax heads of widths 15 and 20 (``softmax=False``: raw logits, not probabilities). Its FrameSpec
    crops and resizes (40x80 input) so the test also proves the car prepares frames as the package says.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    constants = {"flat_shape": np.array([0, -1], dtype=np.int64)}
    nodes = [
        helper.make_node("Reshape", ["img", "flat_shape"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
    ]
    if model_type == "linear":
        widths = (1, 1)
        constants.update(
            centre=np.array([[angle_bias - 0.5]], dtype=np.float32),
            zero=np.array([[0.0]], dtype=np.float32),
            cruise=np.array([[throttle]], dtype=np.float32),
        )
        nodes += [
            helper.make_node("Add", ["mean", "centre"], ["steer"]),
            helper.make_node("Mul", ["mean", "zero"], ["still"]),
            helper.make_node("Add", ["still", "cruise"], ["throttle"]),
        ]
        if nan_when_dark:  # log(0) = -inf, and -inf * 0 = NaN; log(m) * 0 = 0 on any other frame
            nodes += [
                helper.make_node("Log", ["mean"], ["log_mean"]),
                helper.make_node("Mul", ["log_mean", "zero"], ["dark_nan"]),
                helper.make_node("Add", ["steer", "dark_nan"], ["angle"]),
            ]
        else:
            nodes.append(helper.make_node("Identity", ["steer"], ["angle"]))
    else:
        widths = CATEGORICAL_WIDTHS
        constants.update(
            angle_gain=np.linspace(-8, 8, 15, dtype=np.float32)[None],
            angle_bias=np.zeros((1, 15), np.float32),
            throttle_gain=np.zeros((1, 20), np.float32),
            throttle_bias=np.linspace(0, 4, 20, dtype=np.float32)[None],
        )
        for head in ("angle", "throttle"):
            logits = f"{head}_logits" if softmax else head
            nodes += [
                helper.make_node("Mul", ["mean", f"{head}_gain"], [f"{head}_scaled"]),
                helper.make_node("Add", [f"{head}_scaled", f"{head}_bias"], [logits]),
            ]
            if softmax:
                nodes.append(helper.make_node("Softmax", [logits], [head], axis=-1))
    graph = helper.make_graph(
        nodes,
        "tiny_pilot",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [None, 40, 80, 3])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width])
            for name, width in zip(("angle", "throttle"), widths, strict=True)
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return pilot_package(tag, "pilot.onnx", model.SerializeToString(), "onnxruntime", model_type=model_type)


def litert_pilot_package(
    tag: str, *, throttle: float = 0.3, model_type: str = "linear", softmax: bool = True
) -> bytes:
    """The same tiny pilot as ``onnx_pilot_package`` as a LiteRT flatbuffer, written with the schema's
    object API (no TensorFlow): MEAN -> RESHAPE -> MUL/ADD per head (-> SOFTMAX when categorical)."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    tensors: list[Any] = []
    buffers: list[Any] = [fb.BufferT()]  # buffer 0: the empty one every non-constant tensor points to
    operators: list[Any] = []
    codes: list[int] = []

    def tensor(name: str, shape: list[int], kind: int = fb.TensorType.FLOAT32, data: Any = None) -> int:
        entry = fb.TensorT()
        entry.name, entry.type, entry.buffer = name, kind, 0
        entry.shape = [1 if d < 0 else d for d in shape]
        entry.shapeSignature = shape
        if data is not None:
            buffer = fb.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(buffer)
            entry.buffer = len(buffers) - 1
        tensors.append(entry)
        return len(tensors) - 1

    def operator(code: int, inputs: list[int], outputs: list[int], kind: int, options: Any) -> None:
        if code not in codes:
            codes.append(code)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(code), inputs, outputs
        op.builtinOptionsType, op.builtinOptions = kind, options
        operators.append(op)

    int32 = fb.TensorType.INT32
    image = tensor("img", [-1, 40, 80, 3])
    mean = tensor("mean", [-1])
    reducer = fb.ReducerOptionsT()
    reducer.keepDims = False
    axes = tensor("axes", [3], int32, np.array([1, 2, 3], np.int32))
    operator(fb.BuiltinOperator.MEAN, [image, axes], [mean], fb.BuiltinOptions.ReducerOptions, reducer)
    column = tensor("m", [-1, 1])
    reshape = fb.ReshapeOptionsT()
    reshape.newShape = [-1, 1]
    shape = tensor("shape", [2], int32, np.array([-1, 1], np.int32))
    operator(fb.BuiltinOperator.RESHAPE, [mean, shape], [column], fb.BuiltinOptions.ReshapeOptions, reshape)

    def head(name: str, gain: Any, bias: Any, soft: bool) -> int:
        width = len(gain)
        gains = tensor(f"{name}_gain", [1, width], data=np.asarray(gain, np.float32)[None])
        biases = tensor(f"{name}_bias", [1, width], data=np.asarray(bias, np.float32)[None])
        scaled = tensor(f"{name}_scaled", [-1, width])
        operator(
            fb.BuiltinOperator.MUL, [column, gains], [scaled], fb.BuiltinOptions.MulOptions, fb.MulOptionsT()
        )
        out = tensor(f"{name}_logits" if soft else name, [-1, width])
        operator(
            fb.BuiltinOperator.ADD, [scaled, biases], [out], fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
        )
        if not soft:
            return out
        options = fb.SoftmaxOptionsT()
        options.beta = 1.0
        probabilities = tensor(name, [-1, width])
        operator(
            fb.BuiltinOperator.SOFTMAX, [out], [probabilities], fb.BuiltinOptions.SoftmaxOptions, options
        )
        return probabilities

    if model_type == "linear":
        outputs = [head("angle", [1.0], [-0.5], False), head("throttle", [0.0], [throttle], False)]
    else:
        angle = head("angle", np.linspace(-8, 8, 15), np.zeros(15), softmax)
        outputs = [angle, head("throttle", np.zeros(20), np.linspace(0, 4, 20), softmax)]
    subgraph = fb.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs = tensors, [image], outputs
    subgraph.operators, subgraph.name = operators, "main"
    model = fb.ModelT()
    model.version, model.subgraphs, model.buffers, model.description = 3, [subgraph], buffers, tag
    model.operatorCodes = []
    for code in codes:
        entry = fb.OperatorCodeT()
        entry.builtinCode, entry.deprecatedBuiltinCode, entry.version = code, min(code, 127), 1
        model.operatorCodes.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return pilot_package(tag, "pilot.tflite", bytes(builder.Output()), "litert", model_type=model_type)


# ---- a car on the local registry (the CLI and hostile-input tests share it) ----------------------------
@pytest.fixture
def car_workspace(tmp_path: Path) -> tuple[Path, Any]:
    """A local registry with the group, under ``tmp_path/workspace``; returns (tmp_path, clients)."""
    from edge.aws import clients

    aws = clients(local_root=tmp_path / "workspace")
    registry(aws.sagemaker, aws.s3)
    return tmp_path, aws


def pull(tmp_path: Path, *extra: str) -> int:
    """``robocar-edge pull`` of the car under ``tmp_path/car`` from the workspace's registry."""
    from edge.cli import main as edge_main

    return edge_main(
        ["pull", "--root", str(tmp_path / "car"), "--local-root", str(tmp_path / "workspace"),
         "--group", GROUP, "--target", TARGET, *extra]
    )  # fmt: skip
