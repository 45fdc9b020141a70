"""The Neo input: a donkeycar Keras pilot written as ONNX within ONNX 1.7 (opset 12, IR version 7).

Neo's edge frameworks page lists ONNX "1.7 or earlier", one ``.onnx`` file in a tar.gz
(https://docs.aws.amazon.com/sagemaker/latest/dg/neo-supported-devices-edge-frameworks.html); ONNX 1.7
writes IR version 7 and opset 12 (https://onnx.ai/onnx/repo-docs/Versioning.html, "Released
Versions"). Converters write the newest opset they know, so the graph is built here with
``onnx.helper`` from the Keras weights, for exactly the layers the project's architectures use
(``training/model.py``: Conv2D with ReLU, Dropout, Flatten, Dense with ReLU/linear/softmax). Any other
layer, or another setting of these (padding, dilation, groups, activation), is refused by name.

The model Neo gets takes NCHW float32 ``[1, 3, H, W]`` (``x/255``), because Neo's ``DataInputConfig``
for ONNX is the input's name and its NCHW shape
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_InputConfig.html). Its outputs are
``angle`` then ``throttle`` (the raw heads, as in the SavedModel's serving signature). Initializers keep
Keras' values exactly: a Conv2D kernel is only transposed (HWIO -> OIHW), a Dense kernel is the same
array (``Gemm`` with ``transB = 0``), and the NHWC flatten order is kept by a ``Transpose`` before
``Flatten``, so ``keras_model_from_onnx`` can load the Keras architecture back from them bit for bit.

``nhwc_input`` adapts the same graph for the car (a ``Transpose`` NHWC -> NCHW in front, any batch), so
``edge.runtimes`` keeps feeding the camera frames as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX 1.7.0's row of https://onnx.ai/onnx/repo-docs/Versioning.html: IR version 7, ai.onnx opset 12.
NEO_ONNX_OPSET = 12
NEO_ONNX_IR_VERSION = 7
OUTPUT_NAMES = ("angle", "throttle")  # the model's output order (training/spec.py HEADS)
PRODUCER = "robocar processing/onnx_export.py"
BATCH_DIM = "N"  # the car's artifact takes any batch; Neo's is compiled for batch 1
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
CONV_ACTIVATIONS = ("relu", "linear")
DENSE_ACTIVATIONS = ("relu", "linear", "softmax")
SUPPORTED_LAYERS = "InputLayer, Conv2D (valid padding, relu/linear), Dropout, Flatten, Dense"


class OnnxExportError(ValueError):
    """The Keras model has a layer (or a layer setting) the Neo ONNX exporter does not write."""


# ---------------------------------------------------------------------------------- Keras -> ONNX


class _GraphBuilder:
    """Nodes and initializers of the graph being written, in the order the Keras layers run."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, name: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attributes))
        return output


def _activation_name(layer: Any) -> str:
    activation = layer.get_config().get("activation", "linear")
    return activation if isinstance(activation, str) else getattr(activation, "__name__", repr(activation))


def _refuse(layer: Any, what: str) -> OnnxExportError:
    return OnnxExportError(
        f"layer {layer.name!r} ({type(layer).__name__}): {what}; the Neo ONNX exporter writes only "
        f"{SUPPORTED_LAYERS} (processing/onnx_export.py)"
    )


def _activation(graph: _GraphBuilder, layer: Any, source: str, output: str, allowed: Sequence[str]) -> str:
    activation = _activation_name(layer)
    if activation not in allowed:
        raise _refuse(layer, f"activation {activation!r} is not one of {', '.join(allowed)}")
    if activation == "relu":
        return graph.node("Relu", [source], output, f"{layer.name}/relu")
    if activation == "softmax":
        # Opset 12 Softmax coerces its input to 2-D at ``axis``: on a Dense output [N, units], axis 1 is
        # exactly Keras' softmax over the last axis.
        return graph.node("Softmax", [source], output, f"{layer.name}/softmax", axis=1)
    return source


def _conv2d(graph: _GraphBuilder, layer: Any, source: str, output: str) -> str:
    config = layer.get_config()
    settings = {
        "padding": (config.get("padding"), "valid"),
        "data_format": (config.get("data_format"), "channels_last"),
        "dilation_rate": (tuple(config.get("dilation_rate", (1, 1))), (1, 1)),
        "groups": (config.get("groups", 1), 1),
    }
    for key, (value, wanted) in settings.items():
        if value != wanted:
            raise _refuse(layer, f"{key}={value!r} (only {wanted!r} is written)")
    kernel = np.asarray(layer.kernel, np.float32)  # Keras HWIO -> ONNX OIHW
    inputs = [source, graph.constant(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if layer.use_bias:
        inputs.append(graph.constant(f"{layer.name}/bias", np.asarray(layer.bias, np.float32)))
    has_activation = _activation_name(layer) != "linear"
    conv_out = f"{layer.name}/conv" if has_activation else output
    graph.node(
        "Conv",
        inputs,
        conv_out,
        layer.name,
        kernel_shape=list(kernel.shape[:2]),
        strides=[int(s) for s in config["strides"]],
        pads=[0, 0, 0, 0],
        dilations=[1, 1],
        group=1,
    )
    return _activation(graph, layer, conv_out, output, CONV_ACTIVATIONS)


def _dense(graph: _GraphBuilder, layer: Any, source: str, output: str) -> str:
    kernel = np.asarray(layer.kernel, np.float32)  # [in, out]: Gemm's B without transposing
    bias = np.asarray(layer.bias, np.float32) if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
    has_activation = _activation_name(layer) != "linear"
    gemm_out = f"{layer.name}/gemm" if has_activation else output
    graph.node(
        "Gemm",
        [source, graph.constant(f"{layer.name}/kernel", kernel), graph.constant(f"{layer.name}/bias", bias)],
        gemm_out,
        layer.name,
        alpha=1.0,
        beta=1.0,
        transA=0,
        transB=0,
    )
    return _activation(graph, layer, gemm_out, output, DENSE_ACTIVATIONS)


def _flatten(graph: _GraphBuilder, layer: Any, source: str, output: str, rank: int) -> str:
    if layer.get_config().get("data_format", "channels_last") != "channels_last":
        raise _refuse(layer, "data_format must be channels_last")
    if rank == 4:  # NCHW here, NHWC in Keras: flatten in Keras' order so Dense kernels stay as trained
        source = graph.node(
            "Transpose", [source], f"{layer.name}/nhwc", f"{layer.name}/nhwc", perm=list(NCHW_TO_NHWC)
        )
    return graph.node("Flatten", [source], output, layer.name, axis=1)


def _single_node_tensors(layer: Any) -> tuple[Any, Any]:
    inbound = getattr(layer, "_inbound_nodes", [])
    if len(inbound) != 1:
        raise _refuse(layer, f"it is called {len(inbound)} times (shared layers are not written)")
    return layer.input, layer.output


def export_neo_onnx(model: Any, input_name: str) -> onnx.ModelProto:
    """A functional Keras pilot -> the ONNX model Neo compiles (NCHW ``[1, 3, H, W]``, opset 12, IR 7).

    The model's outputs must be (angle, throttle) in that order; they are named so in the graph.
    Deterministic: the same weights give the same serialized bytes (``serialize``).
    """
    if len(model.inputs) != 1 or len(model.outputs) != len(OUTPUT_NAMES):
        raise OnnxExportError(
            f"the pilot must have one input and outputs {', '.join(OUTPUT_NAMES)}; "
            f"it has {len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    names = {id(model.inputs[0]): input_name}
    names.update({id(t): n for t, n in zip(model.outputs, OUTPUT_NAMES, strict=True)})
    ranks = {id(model.inputs[0]): 4}
    graph = _GraphBuilder()
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        source, result = _single_node_tensors(layer)
        if isinstance(source, list | tuple) or id(source) not in names:
            raise _refuse(layer, "it does not take exactly one tensor from the layers before it")
        output = names.get(id(result), f"{layer.name}/out")
        if kind == "Dropout":  # identity at inference
            names[id(result)], ranks[id(result)] = names[id(source)], ranks[id(source)]
            if id(result) in map(id, model.outputs):
                raise _refuse(layer, "a model output cannot be a Dropout")
            continue
        if kind == "Conv2D":
            written, rank = _conv2d(graph, layer, names[id(source)], output), 4
        elif kind == "Dense":
            if ranks[id(source)] != 2:
                raise _refuse(layer, "Dense must follow Flatten (it gets a 4-D tensor here)")
            written, rank = _dense(graph, layer, names[id(source)], output), 2
        elif kind == "Flatten":
            written, rank = _flatten(graph, layer, names[id(source)], output, ranks[id(source)]), 2
        else:
            raise _refuse(layer, "this layer type is not supported")
        names[id(result)], ranks[id(result)] = written, rank
    missing = [n for n in OUTPUT_NAMES if n not in {node.output[0] for node in graph.nodes}]
    if missing:
        raise OnnxExportError(f"the graph does not produce {', '.join(missing)}")
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, int(tensor.shape[-1])])
        for name, tensor in zip(OUTPUT_NAMES, model.outputs, strict=True)
    ]
    graph_proto = helper.make_graph(
        graph.nodes,
        model.name or "pilot",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, channels, height, width])],
        outputs,
        initializer=graph.initializers,
    )
    proto = helper.make_model(
        graph_proto,
        producer_name=PRODUCER,
        producer_version="1",
        opset_imports=[helper.make_opsetid("", NEO_ONNX_OPSET)],
    )
    proto.ir_version = NEO_ONNX_IR_VERSION  # make_model stamps the installed onnx's IR version
    onnx.checker.check_model(proto, full_check=True)
    return proto


def serialize(proto: onnx.ModelProto) -> bytes:
    """The model's bytes, deterministic (no map fields are written in insertion-dependent order)."""
    return proto.SerializeToString(deterministic=True)


def onnx_versions(proto: onnx.ModelProto) -> dict[str, int]:
    """The IR version and ai.onnx opset a runtime must support to load the model."""
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {"ir_version": int(proto.ir_version), "opset": int(opset)}


def check_neo_onnx_limits(proto: onnx.ModelProto) -> None:
    """Refuse a model Neo's ONNX 1.7 cannot read (a newer IR version or opset, or another domain)."""
    versions = onnx_versions(proto)
    other_domains = sorted({o.domain for o in proto.opset_import} - {"", "ai.onnx"})
    if versions["opset"] > NEO_ONNX_OPSET or versions["ir_version"] > NEO_ONNX_IR_VERSION or other_domains:
        raise OnnxExportError(
            f"Neo reads ONNX 1.7 (opset <= {NEO_ONNX_OPSET}, IR <= {NEO_ONNX_IR_VERSION}, ai.onnx only); "
            f"this model has opset {versions['opset']}, IR {versions['ir_version']}, "
            f"other domains {other_domains}"
        )


def input_shape(proto: onnx.ModelProto) -> list[int]:
    """The (static) shape of the model's single input, e.g. ``[1, 3, H, W]``."""
    (graph_input,) = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    return [int(d.dim_value) for d in graph_input.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------- the car's layout


def nhwc_input(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The Neo model taking the car's frames: NHWC float32 ``[N, H, W, 3]`` through a Transpose, any N.

    Everything after the Transpose is the Neo model's graph and initializers, unchanged.
    """
    car = onnx.ModelProto()
    car.CopyFrom(proto)
    graph = car.graph
    (graph_input,) = graph.input
    name = graph_input.name
    nchw = f"{name}/nchw"
    for node in graph.node:
        node.input[:] = [nchw if value == name else value for value in node.input]
    _, channels, height, width = (d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    transpose = helper.make_node("Transpose", [name], [nchw], name=f"{name}/nchw", perm=list(NHWC_TO_NCHW))
    graph.node.insert(0, transpose)
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, height, width, channels])
    )
    for output in graph.output:
        output.type.tensor_type.shape.dim[0].ClearField("dim_value")
        output.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    onnx.checker.check_model(car, full_check=True)
    return car


# ----------------------------------------------------------------------------- ONNX -> Keras weights


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def keras_weights_from_onnx(proto: onnx.ModelProto, layer: Any) -> list[np.ndarray]:
    """One Keras layer's weights (Keras layout) read back from the Neo model's initializers."""
    initializers = _initializers(proto)
    kind = type(layer).__name__
    kernel = initializers.get(f"{layer.name}/kernel")
    if kernel is None:
        raise OnnxExportError(f"the ONNX model has no weights for layer {layer.name!r}")
    if kind == "Conv2D":
        kernel = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    weights = [kernel]
    if getattr(layer, "use_bias", False):
        weights.append(initializers[f"{layer.name}/bias"])
    return weights


def keras_model_from_onnx(template: Any, proto: onnx.ModelProto) -> Any:
    """The template's architecture (a fresh clone) with every weight loaded from the ONNX initializers.

    Raises OnnxExportError unless each weight equals the template's bit for bit: the artifacts built from
    the clone are then built from exactly what Neo compiles.
    """
    import keras

    clone = keras.models.clone_model(template)
    for layer, original in zip(clone.layers, template.layers, strict=True):
        if not original.weights:
            continue
        weights = keras_weights_from_onnx(proto, layer)
        expected = original.get_weights()
        same = len(weights) == len(expected) and all(
            w.shape == e.shape and np.array_equal(w, e) for w, e in zip(weights, expected, strict=True)
        )
        if not same:
            raise OnnxExportError(f"layer {layer.name!r}: the ONNX weights differ from the Keras model's")
        layer.set_weights(weights)
    return clone
