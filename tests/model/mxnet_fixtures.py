"""What the MXNet model tests share: running code in the MXNet environment, and one trained classifier.

Training a classifier costs seconds of MXNet start-up and training on 2 cores, so the suite trains one
(``trained_classifier``, session-scoped) and its training, compile, evaluate and endpoint tests all read it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from edge.atomic_files import file_lock
from pipelines.local import environments
from pipelines.synth_classes import write_classes, write_image_list

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["circle", "square", "triangle"]
# train: 128 photos make one fine-tuned epoch >= 0.9 accurate on validation; test: 90 photos, which
# compile's accuracy deltas count (one photo is 1.1 points of its 1-point tolerance).
CLASSIFIER_SPLITS = (("train", 128, 11), ("validation", 60, 12), ("test", 90, 13))


def run_in_mxnet(
    python: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def classifier_container(channels: Path, model_dir: Path) -> dict[str, str]:
    """The MXNet container's contract: channels, model dir and SM_HPS (one epoch at 64 px) from the
    environment."""
    return {
        "SM_CHANNEL_TRAIN": str(channels / "train"),
        "SM_CHANNEL_VALIDATION": str(channels / "validation"),
        "SM_MODEL_DIR": str(model_dir),
        "SM_HPS": json.dumps({"epochs": 1, "image_shape": "3,64,64", "sagemaker_program": "classifier.py"}),
    }


@pytest.fixture(scope="session")
def trained_classifier(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """training/classifier.py run once as the MXNet container runs it (channels, model dir and SM_HPS from
    the environment; one epoch from ImageNet weights at 64 px), laid out as the steps after Train see it:
    ``train/ validation/ test/`` (Preprocess's splits with image lists), ``exported/`` (the model
    directory), ``model/model.tar.gz`` (what Train leaves in S3) and ``training.log`` (the trainer's stdout).
    Read it; write elsewhere.

    Once per run, not per worker: under pytest-xdist (``make test``) the workers' temporary folders share
    a parent, where the first worker trains under a lock and the others wait for it and read its model."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return train_classifier(mxnet_python, tmp_path_factory.mktemp("trained-classifier"))
    shared = tmp_path_factory.getbasetemp().parent
    root = shared / "trained-classifier"
    with file_lock(shared / "trained-classifier.lock"):
        if not (root / "training.log").is_file():  # written last
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
            train_classifier(mxnet_python, root)
    return root


def train_classifier(mxnet_python: str, root: Path) -> Path:
    for split, images, seed in CLASSIFIER_SPLITS:
        summary = write_classes(root / split, classes=3, images=images, seed=seed)
        assert write_image_list(summary.manifest, root / split / "images.lst") == CLASSES
    container = classifier_container(root, root / "exported")
    script = str(REPO / "training" / "classifier.py")
    # '"1"': the SDK passes a hyperparameter's value JSON-quoted on the command line
    result = run_in_mxnet(mxnet_python, [script, "--use_pretrained_model", '"1"', "--seed", "3"], container)
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "model").mkdir()
    with tarfile.open(root / "model" / "model.tar.gz", "w:gz") as tar:
        for path in sorted((root / "exported").iterdir()):
            tar.add(path, arcname=path.name)
    (root / "training.log").write_text(result.stdout)
    return root


@pytest.fixture
def shared_environments(mxnet_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode finds the MXNet environment the fixture built, instead of building one per workspace."""
    cache = Path(mxnet_python).parents[2]
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(cache))
    assert environments.is_built(environments.environment_path(environments.MXNET, cache))
