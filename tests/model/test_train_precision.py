"""train.py --precision auto times real training steps of both candidates and records what it chose."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from test_train_artifacts import run_train, write_tiny_splits  # noqa: E402

from training import train  # noqa: E402


def test_auto_measures_real_steps_of_both_precisions_and_records_the_choice(tmp_path, monkeypatch, capsys):
    timed: dict[str, list[object]] = {}

    def fake_measure(steps, batch_size, clock=None):
        for precision, step in steps.items():
            timed[precision] = [step() for _ in range(2)]  # a real train_on_batch of that pilot
        return {"float32": 100.0, "mixed_bfloat16": 180.0}

    monkeypatch.setattr(train, "measure_precisions", fake_measure)
    monkeypatch.setattr(train, "has_native_bfloat16", lambda: True)
    monkeypatch.setattr(train, "MEASURE_MIN_TRAINING_STEPS", 1)
    data = write_tiny_splits(tmp_path / "data", frames=16)
    assert run_train(data, tmp_path / "m") == 0

    assert set(timed) == {"float32", "mixed_bfloat16"}
    for losses in timed.values():
        assert all(float(loss[0] if isinstance(loss, list) else loss) > 0 for loss in losses)
    model_json = json.loads((tmp_path / "m/model.json").read_text())
    recorded = model_json["training"]["precision"]
    assert recorded.pop("measure_seconds") > 0
    assert recorded == {
        "chosen": "mixed_bfloat16",
        "requested": "auto",
        "reason": "measured",
        "measured_samples_per_second": {"float32": 100.0, "mixed_bfloat16": 180.0},
    }
    assert model_json["training"]["hyperparameters"]["precision"] == "mixed_bfloat16"
    log = capsys.readouterr().out
    assert "precision: mixed_bfloat16 (measured in " in log
    assert "float32 100.0, mixed_bfloat16 180.0 samples/s" in log
    assert keras.mixed_precision.global_policy().name == "float32"


def test_measuring_leaves_the_trained_weights_as_they_would_be_without_it(tmp_path, monkeypatch):
    data = write_tiny_splits(tmp_path / "data", frames=16)
    assert run_train(data, tmp_path / "forced", "--precision", "float32", "--seed", "3") == 0
    monkeypatch.setattr(train, "has_native_bfloat16", lambda: True)
    monkeypatch.setattr(train, "MEASURE_MIN_TRAINING_STEPS", 1)
    monkeypatch.setattr(train, "BFLOAT16_MIN_GAIN", 1e9)  # float32 wins whatever the timing
    assert run_train(data, tmp_path / "measured", "--seed", "3") == 0
    assert json.loads((tmp_path / "measured/model.json").read_text())["training"]["precision"]["reason"] == (
        "measured"
    )
    forced = keras.saving.load_model(tmp_path / "forced/model.keras").get_weights()
    measured = keras.saving.load_model(tmp_path / "measured/model.keras").get_weights()
    for first, second in zip(forced, measured, strict=True):
        assert (first == second).all()
