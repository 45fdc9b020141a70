"""processing/evaluate_classifier.py end to end on models whose answers are known (a stand-in for MXNet):
evaluation.json's shape, the baseline, the champion read from a local registry through the read-only
readers, already_registered, and one-line errors."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edge import aws
from edge.agent import edge_metadata
from edge.photos import PhotoTransform
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.synth_classes import write_classes, write_image_list
from processing.evaluate import EvaluationError
from processing.evaluate_classifier import Classifier, evaluate, main
from training.classifier import SPEC_FILE

CLASSES = ["circle", "square", "triangle"]
GROUP = "robocar-classifiers"
BUCKET = "robocar-data-123456789012"
ANSWER_FILE = "answer.json"  # the stand-in model's one answer (a class name), beside its spec
TRANSFORM = PhotoTransform(64, 64, 73, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 1.0)


def constant_loader(model_dir: Path) -> Classifier:
    """A model that answers one class for every photo, whose class list is its spec's."""
    spec = json.loads((model_dir / SPEC_FILE).read_text())
    classes = spec["classes"]
    answer = classes.index(json.loads((model_dir / ANSWER_FILE).read_text()))

    def probabilities(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:] == (3, 64, 64) and batch.dtype == np.float32
        out = np.full((len(batch), len(classes)), 0.1 / (len(classes) - 1))
        out[:, answer] = 0.9
        return out

    return Classifier(classes, PhotoTransform.from_dict(spec["input"]), probabilities)


def model_archive(classes: Sequence[str], answer: str) -> bytes:
    files = {
        SPEC_FILE: json.dumps({"classes": list(classes), "input": TRANSFORM.as_dict()}).encode(),
        ANSWER_FILE: json.dumps(answer).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("splits")
    for split, images, seed in (("train", 7, 1), ("test", 9, 2)):  # 3 classes: train 3/2/2, test 3/3/3
        summary = write_classes(root / split, classes=3, images=images, seed=seed)
        assert write_image_list(summary.manifest, root / split / "images.lst") == CLASSES
    return root


def model_dir(tmp_path: Path, answer: str = "square", classes: Sequence[str] = CLASSES) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "model.tar.gz").write_bytes(model_archive(classes, answer))
    return folder


def register(workspace: Path, key: str, archive: bytes, status: str, targets: Sequence[str]) -> str:
    """What the pipeline's Register step leaves: the model in S3, a package naming it and its targets."""
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    if not (workspace / "s3" / BUCKET).is_dir():
        s3.create_bucket(Bucket=BUCKET)
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    s3.put_object(Bucket=BUCKET, Key=key, Body=archive)
    metadata: dict[str, str] = {}
    for target in targets:
        metadata |= edge_metadata(
            target, uri=f"s3://{BUCKET}/{key}.{target}", sha256="ab" * 32, runtime="onnxruntime"
        )
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        CustomerMetadataProperties=metadata,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38",
                    "ModelDataUrl": f"s3://{BUCKET}/{key}",
                }
            ],
            "SupportedContentTypes": ["application/x-image"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def read_only_clients(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> aws.AwsClients:
    """The clients a step in the MXNet environment gets: the control plane's factory is not importable."""
    monkeypatch.setenv(aws.LOCAL_CLIENTS_ENV, "robocar_not_installed.client:validated_local_clients")
    return aws.clients(local_root=workspace)


def test_evaluation_json_follows_the_contract(splits: Path, tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    result = evaluate(model_dir(tmp_path), splits / "test", splits / "train", out, loader=constant_loader)
    written = json.loads((out / "evaluation.json").read_text())
    assert written == result
    assert set(written) == {
        "recipe", "multiclass_classification_metrics", "baseline", "champion", "already_registered",
        "test_images", "classes", "predictions",
    }  # fmt: skip
    metrics = written["multiclass_classification_metrics"]
    assert set(metrics) == {"accuracy", "top_k_accuracy", "weighted_f1", "per_class", "confusion_matrix"}
    assert written["recipe"] == "classifier" and written["classes"] == CLASSES and written["test_images"] == 9
    assert metrics["accuracy"]["value"] == pytest.approx(1 / 3)  # "square" for 3 squares of 9 photos
    assert metrics["accuracy"]["standard_deviation"] == pytest.approx(((1 / 3) * (2 / 3) / 9) ** 0.5)
    assert metrics["top_k_accuracy"] == {"k": 3, "value": 1.0}
    assert metrics["confusion_matrix"] == {"labels": CLASSES, "counts": [[0, 3, 0], [0, 3, 0], [0, 3, 0]]}
    assert metrics["per_class"]["circle"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    assert metrics["per_class"]["square"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 3}
    )
    assert written["baseline"] == {"majority_class": "circle", "accuracy": {"value": pytest.approx(1 / 3)}}
    assert written["champion"] is None and written["already_registered"] is False
    assert (out / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    assert written["predictions"] == {"file": "predictions.jsonl", "wrong": 6}


def test_the_per_photo_file_says_which_photos_were_wrong_and_where_they_came_from(
    splits: Path, tmp_path: Path
) -> None:
    test = tmp_path / "test"
    shutil.copytree(splits / "test", test)
    listed = [line.split("\t") for line in (test / "images.lst").read_text().splitlines()]
    # Preprocess's augmented manifest: each split image's origin (its key under the dataset's prefix)
    manifest = "".join(
        json.dumps(
            {"source-ref": f"s3://b/run/test/{path}", "origin": f"labelled/d1/{index}.png", "class": 0}
        )
        + "\n"
        for index, _, path in listed
    )
    (test / "test.manifest").write_text(manifest)
    out = tmp_path / "evaluation"
    evaluate(model_dir(tmp_path), test, splits / "train", out, loader=constant_loader)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [row["image"] for row in rows] == [path for _, _, path in listed]
    assert [row["origin"] for row in rows] == [f"labelled/d1/{index}.png" for index, _, _ in listed]
    assert [row["true"] for row in rows] == [CLASSES[int(label)] for _, label, _ in listed]
    assert {row["predicted"] for row in rows} == {"square"}
    assert all(row["confidence"] == pytest.approx(0.9) for row in rows)
    assert [row["correct"] for row in rows] == [row["true"] == "square" for row in rows]
    assert sum(not row["correct"] for row in rows) == 6

    plain = tmp_path / "without-manifest"  # Preprocess without --output-uri: no origins, the rest the same
    evaluate(model_dir(tmp_path / "m2"), splits / "test", splits / "train", plain, loader=constant_loader)
    bare = [json.loads(line) for line in (plain / "predictions.jsonl").read_text().splitlines()]
    assert [row["origin"] for row in bare] == [None] * 9
    assert [{**row, "origin": None} for row in rows] == bare


def test_the_champion_is_read_through_the_read_only_readers(
    splits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "workspace"
    # the car's champion: approved, with an artifact for the first target; its classes in another order
    champion = register(
        workspace,
        "models/v1/model.tar.gz",
        model_archive(CLASSES[::-1], "triangle"),
        "Approved",
        ["jetson_nano"],
    )
    register(workspace, "models/v2/model.tar.gz", model_archive(CLASSES, "circle"), "Approved", ["rasp4b"])
    candidate = f"s3://{BUCKET}/models/v3/model.tar.gz"
    register(
        workspace, "models/v3/model.tar.gz", model_archive(CLASSES, "square"), "PendingManualApproval", []
    )
    clients = read_only_clients(workspace, monkeypatch)
    assert not hasattr(clients.sagemaker, "create_model_package")  # the readers, not the control plane's

    result = evaluate(
        model_dir(tmp_path), splits / "test", splits / "train", tmp_path / "out", group=GROUP,
        sagemaker=clients.sagemaker, s3=clients.s3, loader=constant_loader, model_s3_uri=candidate,
        edge_targets="jetson_nano,rasp4b",
    )  # fmt: skip
    assert result["champion"] == {
        "model_package_arn": champion,
        "model_data_url": f"s3://{BUCKET}/models/v1/model.tar.gz",
        "accuracy": {"value": pytest.approx(1 / 3)},  # "triangle" by name, though its index is 0
    }
    assert result["already_registered"] is True
    again = evaluate(
        model_dir(tmp_path / "other"), splits / "test", splits / "train", tmp_path / "out", group=GROUP,
        sagemaker=clients.sagemaker, s3=clients.s3, loader=constant_loader,
        model_s3_uri=f"s3://{BUCKET}/models/v4/model.tar.gz", edge_targets="rasp4b",
    )  # fmt: skip
    assert again["champion"]["model_data_url"] == f"s3://{BUCKET}/models/v2/model.tar.gz"
    assert again["already_registered"] is False


def test_a_champion_that_cannot_take_the_photos_is_reported_not_fatal(
    splits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = tmp_path / "workspace"
    register(workspace, "models/pilot/model.tar.gz", b"not a tar archive", "Approved", ["jetson_nano"])
    clients = read_only_clients(workspace, monkeypatch)
    result = evaluate(
        model_dir(tmp_path), splits / "test", splits / "train", tmp_path / "out", group=GROUP,
        sagemaker=clients.sagemaker, s3=clients.s3, loader=constant_loader, edge_targets="jetson_nano",
    )  # fmt: skip
    assert result["champion"]["accuracy"] == {"value": None}
    assert "cannot extract" in result["champion"]["error"]


def test_a_missing_group_means_no_champion(
    splits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = read_only_clients(tmp_path / "empty-workspace", monkeypatch)
    result = evaluate(
        model_dir(tmp_path), splits / "test", splits / "train", tmp_path / "out", group=GROUP,
        sagemaker=clients.sagemaker, s3=clients.s3, loader=constant_loader, model_s3_uri="s3://b/m.tar.gz",
    )  # fmt: skip
    assert result["champion"] is None and result["already_registered"] is False


def test_a_model_of_other_classes_is_refused(splits: Path, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="the model knows the classes"):
        evaluate(
            model_dir(tmp_path, "star", ["circle", "square", "star"]),
            splits / "test",
            splits / "train",
            tmp_path / "out",
            loader=constant_loader,
        )


def test_bad_input_is_one_line_and_exit_status_2(splits: Path, tmp_path: Path, capsys) -> None:
    args = ["--train", str(splits / "train"), "--output", str(tmp_path / "out")]
    assert main(["--model", str(tmp_path), "--test", str(splits / "test"), *args]) == 2
    assert "no model.tar.gz (or extracted model with classifier-spec.json)" in capsys.readouterr().err
    assert main(["--model", str(model_dir(tmp_path)), "--test", str(tmp_path / "none"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate_classifier.py: error:") and err.count("\n") == 1
    assert not (tmp_path / "out" / "evaluation.json").exists()
