"""The per-epoch metric line that training prints and the SageMaker metric definitions that scrape it.

No TensorFlow here: the pipeline's Train step imports ``METRIC_DEFINITIONS`` to declare them.

One line per epoch, ``key=value`` pairs separated by single spaces, always starting with ``epoch=``::

    epoch=3 loss=0.012300 val_loss=0.015000 angle_mae=0.081000 val_angle_mae=0.090000 ...

Every key is preceded by a space (or starts the line), so `` loss=`` never matches inside ``val_loss=``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
# (metric name in SageMaker, key in the epoch line). Keys that a model type does not report are simply
# never matched (e.g. the accuracies for the linear pilot).
_SCRAPED = (
    ("train:loss", "loss"),
    ("validation:loss", "val_loss"),
    ("train:angle_mae", "angle_mae"),
    ("validation:angle_mae", "val_angle_mae"),
    ("train:throttle_mae", "throttle_mae"),
    ("validation:throttle_mae", "val_throttle_mae"),
    ("train:angle_accuracy", "angle_accuracy"),
    ("validation:angle_accuracy", "val_angle_accuracy"),
    ("train:throttle_accuracy", "throttle_accuracy"),
    ("validation:throttle_accuracy", "val_throttle_accuracy"),
    ("train:samples_per_second", "samples_per_s"),
)
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": rf"(?:^|\s){re.escape(key)}={_NUMBER}"} for name, key in _SCRAPED
]
# Keras history key -> epoch-line key, per model type (Keras names metrics "<output layer>_<metric>").
KERAS_TO_LINE = {
    "linear": {
        "loss": "loss",
        "n_outputs0_mae": "angle_mae",
        "n_outputs1_mae": "throttle_mae",
    },
    "categorical": {
        "loss": "loss",
        "angle_out_accuracy": "angle_accuracy",
        "throttle_out_accuracy": "throttle_accuracy",
    },
}


def epoch_line(epoch: int, logs: Mapping[str, float], model_type: str, samples_per_s: float) -> str:
    """The scrapeable line for one epoch (1-based) from Keras' epoch logs."""
    names = KERAS_TO_LINE[model_type]
    parts = [f"epoch={epoch}"]
    for prefix in ("", "val_"):
        for keras_key, line_key in names.items():
            value = logs.get(prefix + keras_key)
            if value is not None:
                parts.append(f"{prefix}{line_key}={_format(float(value))}")
    parts.append(f"samples_per_s={samples_per_s:.1f}")
    return " ".join(parts)


def _format(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def parse_epoch_line(line: str) -> dict[str, float]:
    """What the metric definitions see in ``line``, by SageMaker metric name (for tests and tools)."""
    found: dict[str, float] = {}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    return found
