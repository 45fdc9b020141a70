"""train.py's hyperparameters as the SageMaker TensorFlow container passes them, and its metric lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from training.metrics import METRIC_DEFINITIONS, epoch_line, parse_epoch_line
from training.spec import DEFAULT_EPOCHS
from training.train import parse_args

REPO = Path(__file__).resolve().parents[2]
ENV = {
    "SM_CHANNEL_TRAIN": "/data/train",
    "SM_CHANNEL_VALIDATION": "/data/validation",
    "SM_MODEL_DIR": "/out/model",
}


def test_container_environment_gives_paths_and_defaults():
    config = parse_args([], ENV)
    assert (str(config.train_dir), str(config.validation_dir), str(config.model_dir)) == (
        "/data/train",
        "/data/validation",
        "/out/model",
    )
    assert (config.model_type, config.epochs, config.batch_size, config.learning_rate) == (
        "linear",
        DEFAULT_EPOCHS,  # the pipeline's Epochs default too (tests/code/test_settings.py)
        128,
        0.001,
    )
    assert (config.patience, config.seed) == (5, 42)


def test_json_quoted_cli_values_and_the_containers_model_dir_are_accepted():
    # What the TF container runs: hyperparameters as CLI args (JSON-quoted) plus its own --model_dir.
    argv = [
        "--epochs",
        '"7"',
        "--model_type",
        '"categorical"',
        "--learning-rate",
        "0.01",
        "--model_dir",
        "s3://b/k",
    ]
    config = parse_args(argv, ENV)
    assert (config.epochs, config.model_type, config.learning_rate) == (7, "categorical", 0.01)
    assert str(config.model_dir) == "/out/model"  # SM_MODEL_DIR, never the S3 URI


def test_sm_hps_sets_hyperparameters_and_flags_override_it():
    env = {**ENV, "SM_HPS": json.dumps({"epochs": '"12"', "batch_size": 32, "sagemaker_program": "train.py"})}
    config = parse_args([], env)
    assert (config.epochs, config.batch_size) == (12, 32)
    assert parse_args(["--epochs", "3"], env).epochs == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epoch", "3"], "did you mean --epochs"),
        (["--epochs", "0"], "must be > 0"),
        (["--epochs", "ten"], "expected int"),
        (["--model-type", "resnet"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, ENV)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_sm_hps_value_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([], {**ENV, "SM_HPS": json.dumps({"epochs": "many"})})
    assert "hyperparameter epochs" in capsys.readouterr().err


def test_epoch_line_is_scraped_by_the_metric_definitions():
    logs = {"loss": 0.0123, "val_loss": 0.015, "n_outputs0_mae": 0.08, "val_n_outputs0_mae": 0.09}
    line = epoch_line(3, logs, "linear", 512.25)
    assert line.startswith("epoch=3 ")
    scraped = parse_epoch_line(line)
    assert scraped["train:loss"] == 0.0123  # ' loss=' must not be confused with ' val_loss='
    assert scraped["validation:loss"] == 0.015
    assert scraped["train:angle_mae"] == 0.08
    assert scraped["validation:angle_mae"] == 0.09
    assert scraped["train:samples_per_second"] == 512.2  # rounded to one decimal
    assert "train:angle_accuracy" not in scraped


def test_metric_definitions_have_the_sagemaker_shape():
    assert {"train:loss", "validation:loss", "validation:angle_mae"} <= {
        d["Name"] for d in METRIC_DEFINITIONS
    }
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        assert re.compile(definition["Regex"]).groups == 1
    assert parse_epoch_line("epoch=1 loss=1.5e-05 val_loss=2E-3")["train:loss"] == 1.5e-05


def test_metrics_and_train_args_import_without_tensorflow():
    code = (
        "import sys; import training.train, training.metrics; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
        "print(len(training.train.METRIC_DEFINITIONS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(METRIC_DEFINITIONS)


class FakeClock:
    """A clock that only moves when a fake training step runs: each step takes its precision's seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float, samples: int = 128) -> Callable[[], int]:
        def run() -> int:
            self.now += seconds
            return samples

        return run


def test_native_bfloat16_is_read_from_the_cpu_flags():
    from training.train import has_native_bfloat16

    assert has_native_bfloat16("flags : fpu avx2 avx512f avx512_bf16 avx512_vnni")
    assert has_native_bfloat16("flags : fpu avx2 amx_bf16 amx_tile")
    assert not has_native_bfloat16("flags : fpu avx2 avx512f avx512_vnni")
    assert parse_args(["--precision", "float32"], ENV).precision == "float32"
    assert parse_args([], ENV).precision == "auto"


@pytest.mark.parametrize(
    ("float32_s", "bfloat16_s", "faster"), [(0.2, 0.3, "float32"), (0.3, 0.2, "mixed_bfloat16")]
)
def test_the_measurement_picks_the_faster_precision(float32_s, bfloat16_s, faster):
    from training.train import choose_precision, measure_precisions

    clock = FakeClock()
    steps = {"float32": clock.step(float32_s), "mixed_bfloat16": clock.step(bfloat16_s)}
    asked: list[tuple[str, ...]] = []

    def measure(candidates):
        asked.append(tuple(candidates))
        return measure_precisions({c: steps[c] for c in candidates}, lambda _: None, clock=clock)

    choice = choose_precision("auto", training_steps=400, measure=measure, native_bfloat16=True, clock=clock)
    assert asked == [("float32", "mixed_bfloat16")]
    assert choice.precision == faster and choice.reason == "measured"
    assert choice.seconds == pytest.approx(clock.now)  # warm-up and rounds: what measuring took
    assert choice.samples_per_second == pytest.approx(
        {"float32": 128 / float32_s, "mixed_bfloat16": 128 / bfloat16_s}
    )


def test_bfloat16_must_win_by_a_margin_since_float32_is_what_is_exported():
    from training.train import BFLOAT16_MIN_GAIN, choose_precision

    def barely(_):
        return {"float32": 100.0, "mixed_bfloat16": 100.0 * (1 + BFLOAT16_MIN_GAIN / 2)}

    assert choose_precision("auto", 400, barely, native_bfloat16=True).precision == "float32"


def test_candidates_take_turns_each_handed_the_training_before_its_turn():
    """Every step is a step of the run: the candidates train in turns, warm-up once each, the training
    handed over before each turn; a round is a fixed number of steps, so a seed and a choice always
    train the same weights."""
    from training.train import MEASURE_ROUND_STEPS, MEASURE_ROUNDS, MEASURE_WARMUP_STEPS, measure_precisions

    clock = FakeClock()
    log: list[str] = []

    def step(name: str, seconds: float) -> Callable[[], int]:
        def run() -> int:
            log.append(name)
            clock.now += seconds
            return 64

        return run

    rates = measure_precisions(
        {"a": step("a", 0.5), "b": step("b", 0.25)}, lambda name: log.append(f"to {name}"), clock
    )
    assert rates == {"a": pytest.approx(128.0), "b": pytest.approx(256.0)}
    first_turns = [
        "to a", *["a"] * (MEASURE_WARMUP_STEPS + MEASURE_ROUND_STEPS),
        "to b", *["b"] * (MEASURE_WARMUP_STEPS + MEASURE_ROUND_STEPS),
    ]  # fmt: skip
    later_turns = ["to a", *["a"] * MEASURE_ROUND_STEPS, "to b", *["b"] * MEASURE_ROUND_STEPS]
    assert log == first_turns + later_turns * (MEASURE_ROUNDS - 1)
    assert MEASURE_ROUNDS >= 2  # candidates take turns, so load elsewhere does not slow one of them only


def test_warm_up_steps_are_not_timed_and_the_best_round_counts():
    from training.train import MEASURE_ROUND_STEPS, MEASURE_WARMUP_STEPS, measure_precisions

    clock = FakeClock()
    # tracing is slow; the first round is slowed by load elsewhere, the second is not
    durations = iter([5.0] * MEASURE_WARMUP_STEPS + [1.0] * MEASURE_ROUND_STEPS + [0.5] * 100)

    def step() -> int:
        clock.now += next(durations)
        return 32

    assert measure_precisions({"float32": step}, lambda _: None, clock) == {"float32": pytest.approx(64.0)}


def test_the_batch_stream_counts_the_partial_batch_of_each_pass():
    from training.train import BatchStream

    stream = BatchStream(frames=20, batch_size=8)  # batches of 8, 8, 4, then the next pass
    assert stream.steps_per_epoch == 3
    assert [stream.samples(i, 1) for i in range(7)] == [8, 8, 4, 8, 8, 4, 8]
    assert stream.samples(0, 3) == 20 and stream.samples(2, 3) == 20 and stream.samples(1, 6) == 40


@pytest.mark.parametrize("measured", [0, 5, 16, 40])
def test_measured_steps_shorten_the_first_epochs_so_the_run_trains_as_many_steps(measured):
    from training.train import BatchStream, EpochPlan

    stream = BatchStream(frames=100, batch_size=16)  # 7 steps per epoch, the last of 4 frames
    plan = EpochPlan(stream, measured)
    epochs = 12
    steps = [plan.steps_in(e) for e in range(epochs)]
    assert measured + sum(steps) == epochs * stream.steps_per_epoch
    assert all(1 <= s <= stream.steps_per_epoch for s in steps)
    assert steps == sorted(steps)  # the measured steps are repaid first
    samples = [plan.samples_in(e) for e in range(epochs)]
    assert stream.samples(0, measured) + sum(samples) == epochs * 100  # every frame, once per epoch
    assert samples[-1] == 100  # a full epoch, wherever in the stream it starts


def test_forced_precision_and_cpus_without_bfloat16_measure_nothing():
    from training.train import MEASURE_MIN_TRAINING_STEPS, choose_precision

    def never(_):
        raise AssertionError("measured")

    forced = choose_precision("mixed_bfloat16", 400, never, native_bfloat16=False)
    assert (forced.precision, forced.reason) == ("mixed_bfloat16", "forced")
    assert choose_precision("float32", 400, never, native_bfloat16=True).precision == "float32"
    no_bf16 = choose_precision("auto", 400, never, native_bfloat16=False)
    assert (no_bf16.precision, no_bf16.reason) == ("float32", "no native bfloat16")
    short = choose_precision("auto", MEASURE_MIN_TRAINING_STEPS - 1, never, native_bfloat16=True)
    assert (short.precision, short.reason) == ("float32", "run too short to measure")


def test_the_choice_is_recorded_with_its_figures():
    from training.train import PrecisionChoice, describe_choice

    choice = PrecisionChoice(
        "float32", "auto", "measured", {"float32": 347.04, "mixed_bfloat16": 262.11}, 6.123
    )
    assert choice.to_json() == {
        "chosen": "float32",
        "requested": "auto",
        "reason": "measured",
        "measured_samples_per_second": {"float32": 347.0, "mixed_bfloat16": 262.1},
        "measure_seconds": 6.12,
    }
    assert describe_choice(choice) == (
        "float32 (measured in 6.1 s: float32 347.0, mixed_bfloat16 262.1 samples/s)"
    )
    assert describe_choice(PrecisionChoice("float32", "float32", "forced", {})) == "float32 (forced)"


def test_the_phase_breakdown_adds_up_to_the_run():
    from training.train import PhaseClock

    clock = FakeClock()
    phases = PhaseClock(started=-1.5, clock=clock)  # the process started 1.5 s before train()
    for phase, seconds in (("start-up", 0.0), ("data", 0.5), ("tensorflow", 3.0), ("data", 0.25)):
        clock.now += seconds
        phases.lap(phase)
    assert phases.seconds == {"start-up": 1.5, "data": 0.75, "tensorflow": 3.0}
    assert phases.line() == "phases: start-up 1.5 s, data 0.8 s, tensorflow 3.0 s (total 5.2 s)"
