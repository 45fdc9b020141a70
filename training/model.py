"""The DonkeyCar pilots, layer by layer as donkeycar 5.3.0 builds them (``donkeycar/parts/keras.py``).

``linear`` is ``default_n_linear(num_outputs=2)`` (KerasLinear), ``categorical`` is
``default_categorical`` (KerasCategorical). Layer names, filters, kernels, strides, activations,
padding (``valid``, Keras' default) and dropout rates are donkeycar's, so a donkeycar user's tools
(``load_weights(by_name=True)``, the ``n_outputs0``/``angle_out`` target names) carry over.

Heads: donkeycar names the linear heads ``n_outputs0`` (angle) and ``n_outputs1`` (throttle) and the
categorical heads ``angle_out`` (15 bins) and ``throttle_out`` (20 bins). ``HEADS`` maps them to
``angle``/``throttle``; the exported SavedModel's serving signature uses those plain names as its
output keys (see ``training/export.py``), so every runtime downstream can tell them apart.
"""

from __future__ import annotations

import keras
from keras import layers

from edge.frames import ANGLE_BINS, CAMERA_HEIGHT, CAMERA_WIDTH, THROTTLE_BINS
from training.spec import ARCHITECTURES, HEADS, MODEL_TYPES

__all__ = ["ARCHITECTURES", "HEADS", "MODEL_TYPES", "build_model"]

DEFAULT_INPUT_SHAPE = (CAMERA_HEIGHT, CAMERA_WIDTH, 3)
DROPOUT = 0.2  # donkeycar: drop = 0.2 in both default_n_linear and default_categorical
# The heads always compute in float32: under a mixed-precision policy (train.py --precision) a bfloat16
# head would quantise the angle to ~0.004 steps and the softmax would lose its small probabilities.
HEAD_DTYPE = "float32"


class _DropoutNames:
    """Names dropouts ``dropout``, ``dropout_1``, ... as Keras does in a fresh process (donkeycar leaves
    them unnamed), but deterministically, so two builds in one process give identical graphs."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> layers.Dropout:
        name = "dropout" if self.count == 0 else f"dropout_{self.count}"
        self.count += 1
        return layers.Dropout(DROPOUT, name=name)


def _conv2d(filters: int, kernel: int, strides: int, layer_num: int) -> layers.Conv2D:
    """donkeycar.parts.keras.conv2d: valid padding, relu, square kernel and stride."""
    return layers.Conv2D(
        filters=filters,
        kernel_size=(kernel, kernel),
        strides=(strides, strides),
        activation="relu",
        name=f"conv2d_{layer_num}",
    )


def _core_cnn_layers(
    img_in: keras.KerasTensor, dropout: _DropoutNames, l4_stride: int = 1
) -> keras.KerasTensor:
    """donkeycar.parts.keras.core_cnn_layers."""
    x = img_in
    x = _conv2d(24, 5, 2, 1)(x)
    x = dropout()(x)
    x = _conv2d(32, 5, 2, 2)(x)
    x = dropout()(x)
    x = _conv2d(64, 5, 2, 3)(x)
    x = dropout()(x)
    x = _conv2d(64, 3, l4_stride, 4)(x)
    x = dropout()(x)
    x = _conv2d(64, 3, 1, 5)(x)
    x = dropout()(x)
    return layers.Flatten(name="flattened")(x)


def _dense_trunk(x: keras.KerasTensor, dropout: _DropoutNames) -> keras.KerasTensor:
    """The two fully connected layers both donkeycar pilots share after the CNN."""
    x = layers.Dense(100, activation="relu", name="dense_1")(x)
    x = dropout()(x)
    x = layers.Dense(50, activation="relu", name="dense_2")(x)
    return dropout()(x)


def default_n_linear(input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE) -> keras.Model:
    """donkeycar default_n_linear(num_outputs=2): two unbounded linear heads, angle then throttle."""
    dropout = _DropoutNames()
    img_in = keras.Input(shape=input_shape, name="img_in")
    x = _dense_trunk(_core_cnn_layers(img_in, dropout), dropout)
    outputs = [
        layers.Dense(1, activation="linear", name=f"n_outputs{i}", dtype=HEAD_DTYPE)(x) for i in range(2)
    ]
    return keras.Model(inputs=[img_in], outputs=outputs, name="linear")


def default_categorical(input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE) -> keras.Model:
    """donkeycar default_categorical: softmax over 15 angle bins and 20 throttle bins."""
    dropout = _DropoutNames()
    img_in = keras.Input(shape=input_shape, name="img_in")
    x = _dense_trunk(_core_cnn_layers(img_in, dropout, l4_stride=2), dropout)
    angle_out = layers.Dense(ANGLE_BINS, activation="softmax", name="angle_out", dtype=HEAD_DTYPE)(x)
    throttle_out = layers.Dense(THROTTLE_BINS, activation="softmax", name="throttle_out", dtype=HEAD_DTYPE)(x)
    return keras.Model(inputs=[img_in], outputs=[angle_out, throttle_out], name="categorical")


def build_model(model_type: str, input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE) -> keras.Model:
    """The donkeycar pilot of ``model_type`` ('linear' or 'categorical') for frames of ``input_shape``."""
    if model_type == "linear":
        return default_n_linear(tuple(input_shape))
    if model_type == "categorical":
        return default_categorical(tuple(input_shape))
    raise ValueError(f"unknown model type {model_type!r} (expected one of {', '.join(MODEL_TYPES)})")
