"""Where the int8 LiteRT pilot's time goes: ``invoke()`` of sub-models cut after each layer, one thread.

Each cut is the pilot up to and including one layer, converted as the compile step converts the int8
pilot (full-integer, calibrated on the same frames) but with an int8 output, so no dequantisation of a
large feature map hides the layer's own cost. A layer's time is the difference between its cut and the
previous one. The layouts are the compile step's: ``original`` (donkeycar's network as written),
``grouped`` (``pilot_int8.tflite``: first convolution over column groups) and ``wide``
(``pilot_int8_wide.tflite``: second convolution over column pairs too).

Usage, in the project's environment: ``python benchmarks/edge_layers.py [--layout wide] [--rounds 9]``.
Figures and what they showed: benchmarks/README.md ("The int8 pilot against the int8 limit").
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = ("original", "grouped", "wide")
SKIPPED = ("Dropout", "Reshape", "Flatten", "InputLayer")  # no work of their own: not a cut


def layout(model: Any, name: str) -> Any:
    from processing.local_compile import group_columns_for_first_conv, widen_second_conv

    if name == "original":
        return model
    grouped = group_columns_for_first_conv(model)
    return widen_second_conv(grouped) if name == "wide" else grouped


def cut_points(model: Any) -> list[str]:
    """Names of the layers after which to cut: every layer that computes, in the model's order."""
    return [layer.name for layer in model.layers if type(layer).__name__ not in SKIPPED]


def int8_submodel(model: Any, layer: str, calibration: np.ndarray) -> bytes:
    """The model up to ``layer``, converted as the int8 pilot is (int8 input, as the car feeds it) but
    with its output left int8."""
    import keras

    from processing.local_compile import convert_litert

    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    return convert_litert(sub, calibration, int8_outputs=True)


def layer_times(blobs: dict[str, bytes], rounds: int, calls: int = 200) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of each cut's 20th-percentile ``invoke()`` time, µs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, blob in blobs.items():
        interpreter = Interpreter(model_content=blob, num_threads=1)
        interpreter.allocate_tensors()
        entry = interpreter.get_input_details()[0]
        interpreter.set_tensor(entry["index"], np.zeros(entry["shape"], np.int8))
        interpreters[name] = interpreter
    samples: dict[str, list[float]] = {name: [] for name in blobs}
    for _ in range(rounds):
        for name, interpreter in interpreters.items():
            for _ in range(20):
                interpreter.invoke()
            timings = []
            for _ in range(calls):
                started = time.perf_counter_ns()
                interpreter.invoke()
                timings.append(time.perf_counter_ns() - started)
            samples[name].append(float(np.percentile(timings, 20)) / 1000)
    return {name: float(np.median(values)) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/edge_layers.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="wide", help="the network's layout (default wide)"
    )
    parser.add_argument("--model", type=Path, help="a trained model folder (model.keras); default synthetic")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (default 9)")
    args = parser.parse_args(argv)
    if args.rounds <= 0:
        parser.error("--rounds must be positive")
    sys.path.insert(0, str(REPO))
    import keras

    from benchmarks.edge import pin_to_one_cpu, sample_frames, synthetic_pilot
    from edge.frames import FrameSpec

    calibration, _ = sample_frames(FrameSpec())
    model = (
        keras.models.load_model(args.model / "model.keras") if args.model else synthetic_pilot(calibration)
    )
    model = layout(model, args.layout)
    cuts = cut_points(model)
    print(f"converting {len(cuts)} cuts of the {args.layout} layout ...", flush=True)
    blobs = {name: int8_submodel(model, name, calibration[:64]) for name in cuts}
    cpu = pin_to_one_cpu()
    times = layer_times(blobs, args.rounds)
    print(f"\nint8 invoke() after each layer, one thread on CPU {cpu}, µs (median of {args.rounds} rounds)")
    previous = 0.0
    for name in cuts:
        print(f"{name:24s} {times[name]:8.1f}  (+{times[name] - previous:6.1f})")
        previous = times[name]
    return 0


if __name__ == "__main__":
    sys.exit(main())
