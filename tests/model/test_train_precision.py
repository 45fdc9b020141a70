"""train.py --precision auto times the run's own first training steps in both precisions, in turns, and
trains on in the faster; it records what it chose."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from test_train_artifacts import run_train, write_tiny_splits  # noqa: E402

from training import train  # noqa: E402

FRAMES, BATCH, EPOCHS = 32, 8, 3  # 4 full batches per epoch, 12 steps in all


def measure_quickly(monkeypatch) -> int:
    """auto measures on these tiny runs, in as few steps as the turns allow; returns the measured steps."""
    monkeypatch.setattr(train, "has_native_bfloat16", lambda: True)
    monkeypatch.setattr(train, "MEASURE_MIN_TRAINING_STEPS", 1)
    monkeypatch.setattr(train, "MEASURE_WARMUP_STEPS", 1)
    monkeypatch.setattr(train, "MEASURE_ROUND_STEPS", 1)
    monkeypatch.setattr(train, "MEASURE_ROUNDS", 2)
    return 2 * (train.MEASURE_WARMUP_STEPS + train.MEASURE_ROUNDS * train.MEASURE_ROUND_STEPS)


def run(data, out, *extra: str) -> dict:
    assert run_train(data, out, "--epochs", str(EPOCHS), "--batch-size", str(BATCH), *extra) == 0
    return json.loads((out / "model.json").read_text())


@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [
        ({"float32": 0.08, "mixed_bfloat16": 0.05}, "mixed_bfloat16"),
        ({"float32": 0.05, "mixed_bfloat16": 0.08}, "float32"),
    ],
)
def test_auto_times_real_steps_in_turns_and_trains_on_in_the_faster(
    tmp_path, monkeypatch, capsys, seconds, chosen
):
    measured = measure_quickly(monkeypatch)
    taken: list[tuple[str, str]] = []  # (the precision timed, the compute dtype of the pilot that stepped)
    clock = [0.0]

    def timed(steps, switch_to, clock_fn=None):
        def slowed(name, step):
            def run_step():
                samples = step()
                clock[0] += seconds[name]
                taken.append((name, turns_pilot_dtype()))
                return samples

            return run_step

        return real_measure({n: slowed(n, s) for n, s in steps.items()}, switch_to, lambda: clock[0])

    turns_seen = []
    real_init = train.TakingTurns.__init__

    def remember(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        turns_seen.append(self)

    def turns_pilot_dtype():
        turns = turns_seen[-1]
        return turns.pilots[turns.active].dtype_policy.compute_dtype

    fitted: list[str] = []
    real_fit = keras.Model.fit

    def fit(self, *args, **kwargs):
        fitted.append(self.dtype_policy.name)
        return real_fit(self, *args, **kwargs)

    real_measure = train.measure_precisions
    monkeypatch.setattr(train, "measure_precisions", timed)
    monkeypatch.setattr(train.TakingTurns, "__init__", remember)
    monkeypatch.setattr(keras.Model, "fit", fit)
    data = write_tiny_splits(tmp_path / "data", frames=FRAMES)
    model_json = run(data, tmp_path / "m")

    # each candidate's steps ran on its own pilot: float32 compute, then bfloat16, in turns
    assert [name for name, _ in taken] == ["float32"] * 2 + ["mixed_bfloat16"] * 2 + [
        "float32",
        "mixed_bfloat16",
    ]
    assert all(dtype == ("float32" if name == "float32" else "bfloat16") for name, dtype in taken)
    assert fitted == [chosen]  # the faster one trains on
    recorded = model_json["training"]["precision"]
    assert recorded.pop("measure_seconds") > 0
    assert recorded == {
        "chosen": chosen,
        "requested": "auto",
        "reason": "measured",
        "measured_samples_per_second": {name: round(BATCH / s, 1) for name, s in seconds.items()},
    }
    assert model_json["training"]["hyperparameters"]["precision"] == chosen
    # the measured steps were the run's first steps, not extra ones
    assert model_json["training"]["steps"] == EPOCHS * FRAMES // BATCH
    assert len(model_json["history"]["loss"]) == EPOCHS
    log = capsys.readouterr().out
    assert f"precision: {chosen} (measured in " in log
    assert "phases: start-up " in log and " epochs " in log and " export " in log
    model = keras.saving.load_model(tmp_path / "m/model.keras")
    assert {layer.dtype_policy.compute_dtype for layer in model.layers} == {"float32"}  # exported float32
    assert keras.mixed_precision.global_policy().name == "float32"
    assert measured < EPOCHS * FRAMES // BATCH


def test_taking_turns_continues_one_run_exactly(tmp_path, monkeypatch):
    """With a float32 twin in place of the bfloat16 one, measuring must train the very weights a forced
    float32 run trains: each turn takes over the weights, optimizer state and dropout seeds, the batches
    continue where the measurement stopped, and the first epoch repays the measured steps."""
    frames = 64  # 8 steps per epoch: the 6 measured steps fit in the first, whose boundary stays put
    data = write_tiny_splits(tmp_path / "data", frames=frames)
    forced = run(data, tmp_path / "forced", "--precision", "float32", "--seed", "3")
    assert measure_quickly(monkeypatch) < frames // BATCH
    real_build = train.build_for_precision
    monkeypatch.setattr(
        train, "build_for_precision", lambda kind, shape, _: real_build(kind, shape, "float32")
    )
    measured = run(data, tmp_path / "measured", "--seed", "3")
    assert measured["training"]["precision"]["reason"] == "measured"
    assert measured["training"]["steps"] == forced["training"]["steps"] == EPOCHS * frames // BATCH
    assert measured["history"]["val_loss"] == forced["history"]["val_loss"]
    # the first epoch's training loss averages the steps fit ran, after the measured ones
    assert measured["history"]["loss"][1:] == forced["history"]["loss"][1:]
    first = keras.saving.load_model(tmp_path / "forced/model.keras").get_weights()
    second = keras.saving.load_model(tmp_path / "measured/model.keras").get_weights()
    for a, b in zip(first, second, strict=True):
        assert (a == b).all()
