"""processing/evaluate_classifier.py in the MXNet environment, on a model training/classifier.py just made.

The script runs as the Evaluate step runs it locally: the MXNet environment's Python (no boto3, botocore,
sagemaker or jsonschema there), only the repository root on the path, and ROBOCAR_LOCAL_CLIENTS inherited
from the control plane, whose factory cannot be imported there: the champion comes from the local
registry through the read-only readers (edge/local_readers.py). The suite's trained classifier
(``trained_classifier``: tests/model/mxnet_fixtures.py) and two runs in the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mxnet_fixtures import CLASSES, REPO, run_in_mxnet
from PIL import Image

from edge import aws
from edge.agent import edge_metadata
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.synth_classes import write_classes, write_image_list

GROUP = "robocar-classifiers"
BUCKET = "robocar-data-123456789012"
MODEL_KEY = "robocar/models/execution-1/Train/output/model.tar.gz"
MODEL_URI = f"s3://{BUCKET}/{MODEL_KEY}"


def register_champion(workspace: Path, archive: Path) -> str:
    """The registry the control plane left: this model approved, with an artifact for jetson_nano."""
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=archive.read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties=edge_metadata(
            "jetson_nano", uri=f"{MODEL_URI}.jetson_nano", sha256="ab" * 32, runtime="onnxruntime"
        ),
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38",
                    "ModelDataUrl": MODEL_URI,
                }
            ],
            "SupportedContentTypes": ["application/x-image"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


@pytest.mark.slow
def test_the_evaluation_of_a_trained_classifier(
    mxnet_python: str, trained_classifier: Path, tmp_path: Path
) -> None:
    workspace, out, test = tmp_path / "workspace", tmp_path / "evaluation", tmp_path / "test"
    # 15 photos of its own: the model is evaluated three times here, and counts are all this test reads
    summary = write_classes(test, classes=3, images=15, seed=23)
    assert write_image_list(summary.manifest, test / "images.lst") == CLASSES
    champion = register_champion(workspace, trained_classifier / "model" / "model.tar.gz")
    factory = os.environ[aws.LOCAL_CLIENTS_ENV]  # the control plane's, set by importing pipelines
    assert factory.startswith("pipelines.")
    result = run_in_mxnet(
        mxnet_python,
        [
            str(REPO / "processing" / "evaluate_classifier.py"),
            *("--model", str(trained_classifier / "model"), "--test", str(test)),
            *("--train", str(trained_classifier / "train"), "--output", str(out)),
            *("--model-package-group", GROUP, "--edge-targets", "jetson_nano,rasp4b"),
            *("--model-s3-uri", MODEL_URI),
        ],
        env={aws.LOCAL_ROOT_ENV: str(workspace), aws.LOCAL_CLIENTS_ENV: factory},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "champion_accuracy=" in result.stdout and "already_registered=true" in result.stdout

    # the trainer's own evaluation of the exported files, in the same environment (which lacks the AWS
    # and schema packages: the script ran without them)
    check = run_in_mxnet(
        mxnet_python,
        [
            "-c",
            "import sys, json, importlib.util\n"
            "from pathlib import Path\n"
            "from training.classifier import evaluate_exported\n"
            "absent = [m for m in ('boto3', 'botocore', 'sagemaker', 'jsonschema', 'matplotlib')\n"
            "          if importlib.util.find_spec(m) is None]\n"
            "print(json.dumps({'accuracy': evaluate_exported(Path(sys.argv[1]), Path(sys.argv[2])),\n"
            "                  'absent': absent}))\n",
            str(trained_classifier / "exported"),
            str(test),
        ],
    )
    assert check.returncode == 0, check.stderr[-3000:]
    facts = json.loads(check.stdout.strip().splitlines()[-1])
    # boto3 is there (the MXNet image's pins: the champion on AWS); the local factory's SDK is not, so the
    # registry was read through edge/local_readers.py
    assert facts["absent"] == ["sagemaker", "jsonschema", "matplotlib"]

    evaluation = json.loads((out / "evaluation.json").read_text())
    metrics = evaluation["multiclass_classification_metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(facts["accuracy"], abs=1e-9)
    labels = [int(line.split("\t")[1]) for line in (test / "images.lst").read_text().splitlines()]
    assert evaluation["test_images"] == len(labels) == 15 and evaluation["classes"] == CLASSES
    counts = np.array(metrics["confusion_matrix"]["counts"])
    assert counts.sum(axis=1).tolist() == np.bincount(labels, minlength=3).tolist()
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["accuracy"]["value"])
    assert [metrics["per_class"][n]["support"] for n in CLASSES] == counts.sum(axis=1).tolist()
    assert metrics["top_k_accuracy"] == {"k": 3, "value": 1.0}  # 3 classes: all of them
    train_labels = [
        int(line.split("\t")[1])
        for line in (trained_classifier / "train" / "images.lst").read_text().splitlines()
    ]
    majority = int(np.argmax(np.bincount(train_labels, minlength=3)))
    assert evaluation["baseline"] == {
        "majority_class": CLASSES[majority],
        "accuracy": {"value": pytest.approx(labels.count(majority) / len(labels))},
    }
    # the champion is this very model: downloaded from local S3 and evaluated again, the same answer
    assert evaluation["champion"] == {
        "model_package_arn": champion,
        "model_data_url": MODEL_URI,
        "accuracy": {"value": pytest.approx(metrics["accuracy"]["value"], abs=1e-9)},
    }
    assert evaluation["already_registered"] is True
    with Image.open(out / "confusion_matrix.png") as picture:
        assert picture.format == "PNG" and min(picture.size) > 3 * 40
