"""train.py's hyperparameters as the SageMaker TensorFlow container passes them, and its metric lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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


def test_auto_precision_uses_bfloat16_only_where_the_cpu_has_it():
    from training.train import resolve_precision

    assert resolve_precision("auto", "flags : fpu avx2 avx512f avx512_bf16 avx512_vnni") == "mixed_bfloat16"
    assert resolve_precision("auto", "flags : fpu avx2 avx512f avx512_vnni") == "float32"
    assert resolve_precision("float32", "flags : avx512_bf16") == "float32"
    assert parse_args(["--precision", "float32"], ENV).precision == "float32"
    assert parse_args([], ENV).precision == "auto"
