"""benchmarks/train.py reads donkeycar's Keras 2 epoch lines to the precision they carry."""

from __future__ import annotations

import pytest

from benchmarks.train import keras2_epochs, steady_throughput

DONKEY_OUTPUT = """\
Epoch 1/12
Epoch 1: val_loss improved from inf to 0.10498, saving model to /car/models/pilot.h5
13/13 [==============================] - 8s 475ms/step - loss: 0.3077 - n_outputs0_loss: 0.0820 - \
n_outputs1_loss: 0.2257 - val_loss: 0.1050 - val_n_outputs0_loss: 0.0598 - val_n_outputs1_loss: 0.0452
Epoch 2/12
13/13 [==============================] - 5s 349ms/step - loss: 0.0889 - n_outputs0_loss: 0.0692 - \
n_outputs1_loss: 0.0197 - val_loss: 0.0783 - val_n_outputs0_loss: 0.0624 - val_n_outputs1_loss: 0.0158
Epoch 3/12
27/27 [==============================] - 31s 1s/step - loss: 0.0712 - val_loss: 0.0405
"""


def test_epoch_time_is_steps_times_time_per_step_not_the_whole_seconds():
    epochs = keras2_epochs(DONKEY_OUTPUT)
    assert [seconds for seconds, _, _ in epochs] == pytest.approx([13 * 0.475, 13 * 0.349, 27.0])
    assert [(loss, val) for _, loss, val in epochs] == [(0.3077, 0.1050), (0.0889, 0.0783), (0.0712, 0.0405)]


def test_steady_throughput_leaves_out_the_first_epoch():
    assert steady_throughput([6.0, 4.0, 5.0, 4.5], 1800) == pytest.approx(1800 / 4.5)


def test_the_precision_measurement_is_reported_as_train_py_recorded_it():
    from benchmarks.train import describe_measurement

    measured = {
        "chosen": "float32",
        "requested": "auto",
        "reason": "measured",
        "measured_samples_per_second": {"float32": 347.0, "mixed_bfloat16": 262.1},
        "measure_seconds": 6.12,
    }
    assert (
        describe_measurement(measured) == ", measured in 6.1 s: float32 347.0, mixed_bfloat16 262.1 samples/s"
    )
    forced = {
        "chosen": "float32",
        "requested": "float32",
        "reason": "forced",
        "measured_samples_per_second": {},
    }
    assert describe_measurement(forced) == ", forced"
    assert describe_measurement(None) == ""  # a model.json from before the measurement
