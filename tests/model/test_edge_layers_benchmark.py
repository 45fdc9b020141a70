"""benchmarks/edge_layers.py: the cuts it times are the compile step's layouts, each a working int8 model."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_scripts import load_benchmark

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def layers_bench():
    return load_benchmark("edge_layers")


def test_each_layout_is_cut_after_every_layer_that_computes(layers_bench):
    from training.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model("linear", (120, 160, 3))
    expected = [f"conv2d_{i}" for i in range(1, 6)] + ["dense_1", "dense_2", "n_outputs0", "n_outputs1"]
    for name in layers_bench.LAYOUTS:
        assert layers_bench.cut_points(layers_bench.layout(model, name)) == expected
    assert layers_bench.layout(model, "original") is model
    assert layers_bench.layout(model, "grouped").get_layer("conv2d_1").kernel.shape == (5, 2, 12, 48)
    assert layers_bench.layout(model, "wide").get_layer("conv2d_2").kernel.shape == (5, 3, 48, 32)


def test_a_cut_is_an_int8_model_that_answers_the_layer_s_output_and_is_timed(layers_bench):
    from ai_edge_litert.interpreter import Interpreter

    from training.model import build_model

    keras.utils.set_random_seed(0)
    model = layers_bench.layout(build_model("linear", (64, 64, 3)), "wide")
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    blobs = {name: layers_bench.int8_submodel(model, name, frames) for name in ("conv2d_1", "conv2d_2")}
    interpreter = Interpreter(model_content=blobs["conv2d_2"])
    interpreter.allocate_tensors()
    (entry,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert entry["dtype"] == np.int8 and out["dtype"] == np.int8, "int8 in and out: no dequantised map"
    assert list(out["shape"][1:]) == list(model.get_layer("conv2d_2").output.shape[1:])
    times = layers_bench.layer_times(blobs, rounds=1, calls=5)
    assert set(times) == set(blobs) and all(t > 0 for t in times.values())
