"""``robocar label land`` and the recipes' Preprocess on reviewed manifests: the reviewed label wins over
the model's, human and machine labels are counted apart, landing twice starts one execution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labelled_fixtures import REVIEWED, classification_sets, detection_sets
from test_classifier_trigger import CLASSIFIER
from test_local_trigger import BUCKET, RecordingSageMaker

from pipelines.cli import main
from pipelines.labelling import manifest
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.trigger import poll_once
from processing import preprocess_classifier, preprocess_detection
from processing.ground_truth import read_ground_truth
from processing.ground_truth_boxes import read_bounding_boxes
from processing.records import RecordValidator
from processing.tubs import Source


def write_manifests(tmp_path: Path, reviewed: list[dict], machine: list[dict]) -> tuple[Path, Path]:
    paths = tmp_path / "reviewed.manifest", tmp_path / manifest.MACHINE_LABELLED
    manifest.write_records(paths[0], reviewed)
    manifest.write_records(paths[1], machine)
    return paths


def land(tmp_path: Path, recipe: str, *manifests: Path) -> int:
    flags = ["--recipe", recipe, "--workspace", str(tmp_path / "ws"), "--bucket", BUCKET]
    return main(["label", "land", *map(str, manifests), *flags])


def raw_folder(tmp_path: Path, recipe: str) -> Path:
    folder = {"classifier": "raw-classifier", "detection": "raw-detection"}[recipe]
    return LocalS3Client(tmp_path / "ws").uri_to_path(f"s3://{BUCKET}/robocar/{folder}/")


def landed_manifest(tmp_path: Path, recipe: str) -> Path:
    (found,) = raw_folder(tmp_path, recipe).glob("labelled/*/output.manifest")
    return found


def test_a_classification_review_lands_once_and_starts_one_execution(tmp_path: Path, capsys) -> None:
    reviewed, machine, _ = classification_sets(tmp_path / "photos")
    paths = write_manifests(tmp_path, reviewed, machine)
    LocalS3Client(tmp_path / "ws").create_bucket(Bucket=BUCKET)
    assert land(tmp_path, "classifier", *paths) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "landed: 40 records (30 reviewed by a person, 10 machine labels), 40 photos -> s3://"
    )
    landed = manifest.read_records(landed_manifest(tmp_path, "classifier"))
    prefix = f"s3://{BUCKET}/robocar/raw-classifier/labelled/"
    assert all(r["source-ref"].startswith(prefix) and "/images/" in r["source-ref"] for r in landed)
    assert [r[REVIEWED] for r in landed[:30]] == [r[REVIEWED] for r in reviewed]  # records kept as they were

    s3, sagemaker = LocalS3Client(tmp_path / "ws"), RecordingSageMaker(LocalSageMakerClient(tmp_path / "ws"))
    first = poll_once(tmp_path / "ws", s3, sagemaker, CLASSIFIER)
    assert len(first.started) == 1 and first.started[0]["key"].endswith("/output.manifest")
    files = sorted(p for p in raw_folder(tmp_path, "classifier").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]

    assert land(tmp_path, "classifier", *paths) == 0  # the same records again: the same keys, nothing written
    assert capsys.readouterr().out.startswith("already landed (nothing written): 40 records")
    assert [p.stat().st_mtime_ns for p in files] == stamps
    again = poll_once(tmp_path / "ws", s3, sagemaker, CLASSIFIER)
    assert (again.started, len(sagemaker.starts)) == ([], 1)


def test_the_reviewed_class_is_the_label_and_labels_are_counted_by_who_gave_them(tmp_path: Path) -> None:
    reviewed, machine, truth = classification_sets(tmp_path / "photos")
    LocalS3Client(tmp_path / "ws").create_bucket(Bucket=BUCKET)
    assert land(tmp_path, "classifier", *write_manifests(tmp_path, reviewed, machine)) == 0
    found = landed_manifest(tmp_path, "classifier")
    classes: dict[int, str] = {}
    report, candidates = read_ground_truth(
        Source(found, "ground-truth", found.name), RecordValidator("ground_truth_record"),
        raw_folder(tmp_path, "classifier"), classes,
    )  # fmt: skip
    assert report.rejected == 0
    assert [c.label for c in candidates] == truth  # the reviewer's class where the model was wrong
    assert [c.machine_labelled for c in candidates] == [False] * 30 + [True] * 10

    output = tmp_path / "preprocessed"
    argv = ["--input", str(raw_folder(tmp_path, "classifier")), "--output", str(output)]
    assert preprocess_classifier.main(argv) == 0
    data_report = json.loads((output / "report" / "data-report.json").read_text())
    assert data_report["labels"] == {"human": 30, "machine": 10}
    assert (data_report["read"], data_report["accepted"], data_report["rejected"]) == (40, 40, 0)


def test_reviewed_boxes_are_the_label_for_the_detection_recipe(tmp_path: Path) -> None:
    reviewed, machine, truth = detection_sets(tmp_path / "photos")
    LocalS3Client(tmp_path / "ws").create_bucket(Bucket=BUCKET)
    assert land(tmp_path, "detection", *write_manifests(tmp_path, reviewed, machine)) == 0
    found = landed_manifest(tmp_path, "detection")
    report, candidates = read_bounding_boxes(
        Source(found, "ground-truth", found.name), RecordValidator("ground_truth_record"),
        raw_folder(tmp_path, "detection"), {},
    )  # fmt: skip
    assert report.rejected == 0
    assert [len(c.boxes) for c in candidates] == [len(boxes) for boxes in truth]  # the missed boxes are back
    assert [c.machine_labelled for c in candidates] == [False] * 30 + [True] * 10

    output = tmp_path / "preprocessed"
    argv = ["--input", str(raw_folder(tmp_path, "detection")), "--output", str(output)]
    assert preprocess_detection.main(argv) == 0
    data_report = json.loads((output / "report" / "data-report.json").read_text())
    assert data_report["labels"] == {"human": 30, "machine": 10}
    assert data_report["rejected"] == 0


def test_a_record_without_a_label_of_the_recipes_type_is_refused(tmp_path: Path, capsys) -> None:
    reviewed, machine, _ = classification_sets(tmp_path / "photos", photos=8)
    LocalS3Client(tmp_path / "ws").create_bucket(Bucket=BUCKET)
    assert land(tmp_path, "detection", *write_manifests(tmp_path, reviewed, machine)) == 2
    assert "record 1" in capsys.readouterr().err
    assert not raw_folder(tmp_path, "detection").exists()


@pytest.mark.parametrize("recipe", ["pilot"])
def test_the_pilot_has_no_labels_to_land(tmp_path: Path, recipe: str, capsys) -> None:
    path = tmp_path / "x.manifest"
    path.write_text("")
    assert land(tmp_path, recipe, path) == 2
    assert "--recipe classifier or detection" in capsys.readouterr().err


def test_landing_on_aws_uploads_the_photos_then_the_manifest_once(tmp_path: Path, capsys) -> None:
    """On AWS (moto's S3, each request checked against botocore's model): the same keys as locally, the
    photos under the set's folder, and a second landing writes nothing."""
    import boto3
    from moto import mock_aws

    reviewed, machine, _ = detection_sets(tmp_path / "photos", photos=8)
    paths = write_manifests(tmp_path, reviewed, machine)
    flags = ["--recipe", "detection", "--aws", "--region", "us-east-1", "--bucket", BUCKET,
             "--role", "arn:aws:iam::123456789012:role/robocar"]  # fmt: skip
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        assert main(["label", "land", *map(str, paths), *flags]) == 0
        assert capsys.readouterr().out.startswith(
            "landed: 8 records (6 reviewed by a person, 2 machine labels)"
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        (manifest_key,) = [k for k in keys if k.endswith(".manifest")]
        assert manifest_key.startswith("robocar/raw-detection/labelled/") and len(keys) == 9
        landed = s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read().decode().splitlines()
        refs = {json.loads(line)["source-ref"] for line in landed}
        assert refs == {f"s3://{BUCKET}/{k}" for k in keys if k.endswith(".jpg")}
        assert main(["label", "land", *map(str, paths), *flags]) == 0
        assert capsys.readouterr().out.startswith("already landed (nothing written)")
