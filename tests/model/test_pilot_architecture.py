"""The pilots match donkeycar 5.3.0's default_n_linear / default_categorical layer by layer."""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

from training.model import HEADS, build_model  # noqa: E402

# (name, type, filters/units, kernel, strides, activation) for each weighted layer, from
# donkeycar/parts/keras.py v5.3.0: conv2d(24,5,2,1) conv2d(32,5,2,2) conv2d(64,5,2,3)
# conv2d(64,3,l4_stride,4) conv2d(64,3,1,5), Flatten('flattened'), Dense(100) Dense(50), heads.
CORE = [
    ("conv2d_1", "Conv2D", 24, (5, 5), (2, 2), "relu"),
    ("conv2d_2", "Conv2D", 32, (5, 5), (2, 2), "relu"),
    ("conv2d_3", "Conv2D", 64, (5, 5), (2, 2), "relu"),
]


def _weighted_layers(model: keras.Model) -> list[tuple]:
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.padding == "valid"
            rows.append(
                (
                    layer.name,
                    "Conv2D",
                    layer.filters,
                    layer.kernel_size,
                    layer.strides,
                    layer.activation.__name__,
                )
            )
        elif isinstance(layer, keras.layers.Dense):
            rows.append((layer.name, "Dense", layer.units, None, None, layer.activation.__name__))
    return rows


def test_linear_is_donkeycar_default_n_linear():
    model = build_model("linear")
    assert model.count_params() == 817_028  # donkeycar's KerasLinear at 120x160x3
    assert model.inputs[0].shape == (None, 120, 160, 3)
    assert model.layers[0].name == "img_in"
    assert _weighted_layers(model) == [
        *CORE,
        ("conv2d_4", "Conv2D", 64, (3, 3), (1, 1), "relu"),
        ("conv2d_5", "Conv2D", 64, (3, 3), (1, 1), "relu"),
        ("dense_1", "Dense", 100, None, None, "relu"),
        ("dense_2", "Dense", 50, None, None, "relu"),
        ("n_outputs0", "Dense", 1, None, None, "linear"),
        ("n_outputs1", "Dense", 1, None, None, "linear"),
    ]
    assert model.get_layer("flattened").output.shape == (None, 8 * 13 * 64)
    assert model.output_names == ["n_outputs0", "n_outputs1"]


def test_categorical_is_donkeycar_default_categorical():
    model = build_model("categorical")
    assert model.count_params() == 268_311
    assert _weighted_layers(model) == [
        *CORE,
        ("conv2d_4", "Conv2D", 64, (3, 3), (2, 2), "relu"),  # l4_stride=2
        ("conv2d_5", "Conv2D", 64, (3, 3), (1, 1), "relu"),
        ("dense_1", "Dense", 100, None, None, "relu"),
        ("dense_2", "Dense", 50, None, None, "relu"),
        ("angle_out", "Dense", 15, None, None, "softmax"),
        ("throttle_out", "Dense", 20, None, None, "softmax"),
    ]
    assert model.output_names == ["angle_out", "throttle_out"]


@pytest.mark.parametrize("model_type", ["linear", "categorical"])
def test_every_conv_and_dense_is_followed_by_dropout_0_2(model_type):
    model = build_model(model_type)
    kinds = [type(layer).__name__ for layer in model.layers]
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == 7  # five after the convolutions, two after the dense layers
    assert all(d.rate == 0.2 for d in dropouts)
    for i, kind in enumerate(kinds[:-2]):
        if kind in ("Conv2D", "Dense"):
            assert kinds[i + 1] == "Dropout", f"{model.layers[i].name} not followed by dropout"


@pytest.mark.parametrize("model_type", ["linear", "categorical"])
def test_heads_map_angle_and_throttle_to_the_output_order(model_type):
    model = build_model(model_type)
    assert model.output_names == [HEADS[model_type]["angle"], HEADS[model_type]["throttle"]]


def test_two_builds_give_identical_layer_names():
    assert [layer.name for layer in build_model("linear").layers] == [
        layer.name for layer in build_model("linear").layers
    ]


def test_other_input_shapes_and_unknown_type():
    assert build_model("linear", (80, 160, 3)).inputs[0].shape == (None, 80, 160, 3)
    with pytest.raises(ValueError, match="unknown model type 'resnet'"):
        build_model("resnet")
