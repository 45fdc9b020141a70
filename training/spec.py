"""What the pilots are, as plain data (no TensorFlow): importable by the pipeline, evaluation and tests."""

from __future__ import annotations

MODEL_TYPES = ("linear", "categorical")
# The training epochs of a pipeline execution and of train.py run directly: the Epochs parameter's
# default and --epochs'; EarlyStopping usually ends a run sooner.
DEFAULT_EPOCHS = 20
ARCHITECTURES = {
    "linear": "donkeycar default_n_linear",
    "categorical": "donkeycar default_categorical",
}
# Model-layer name of each head, in the model's output order: (angle, throttle). donkeycar's names.
HEADS = {
    "linear": {"angle": "n_outputs0", "throttle": "n_outputs1"},
    "categorical": {"angle": "angle_out", "throttle": "throttle_out"},
}
