"""The demo's summary says, for angle and throttle alike, how the pilot compares with a constant."""

from __future__ import annotations

from pipelines.demo import learned_lines


def test_both_outputs_are_compared_with_the_constant_baseline():
    model = {"angle_mae": {"value": 0.03, "standard_deviation": 0.02}, "throttle_mae": {"value": 0.0125}}
    baseline = {"angle_mae": {"value": 0.2}, "throttle_mae": 0.05}
    assert [line.strip() for line in learned_lines(model, baseline)] == [
        "angle MAE is 15.0% of the constant baseline's",
        "throttle MAE is 25.0% of the constant baseline's",
    ]


def test_a_missing_metric_or_a_zero_baseline_prints_no_ratio():
    assert learned_lines({"angle_mae": 0.1}, {"angle_mae": 0.0, "throttle_mae": 0.1}) == []


def test_the_car_is_scored_against_the_labels_of_the_photos_it_classified(tmp_path):
    import json

    from pipelines.demo_classifier import car_accuracy
    from pipelines.synth_classes import write_classes

    labelled = tmp_path / "photos"
    summary = write_classes(labelled, classes=3, images=12, seed=4)
    truth = {}
    for line in summary.manifest.read_text().splitlines():
        record = json.loads(line)
        truth[record["source-ref"].rsplit("/", 1)[-1]] = record["category-metadata"]["class-name"]
    names = sorted(truth)
    results = tmp_path / "classify.jsonl"
    lines = []
    for index, name in enumerate(names[:10]):  # 10 classified, the first 3 wrongly
        right = truth[name]
        wrong = next(c for c in ("circle", "square", "triangle") if c != right)
        top = [{"class": wrong if index < 3 else right, "probability": 0.9}]
        lines.append(json.dumps({"frame": index, "origin": name, "top": top}))
    lines.append(json.dumps({"frame": 10, "origin": "not-in-the-manifest.jpg", "top": top}))
    results.write_text("\n".join(lines) + "\n")
    assert car_accuracy(results, labelled) == {"photos": 10, "correct": 7, "accuracy": 0.7}
    assert car_accuracy(tmp_path / "none.jsonl", labelled)["accuracy"] is None


def test_the_image_recipes_share_their_data_and_package_lines() -> None:
    from pipelines.demo import ImageRecipeOutputs, image_data_line, package_lines

    data = {
        "read": 600, "accepted": 598, "rejected": 2, "classes": ["circle", "square", "triangle"],
        "splits": {"train": {"images": 400}, "validation": {"images": 100}, "test": {"images": 98}},
    }  # fmt: skip
    assert image_data_line(data, "boxed") == (
        "data      600 boxed photos read: 598 accepted, 2 rejected; 3 classes; "
        "train/validation/test 400/100/98"
    )
    outputs = ImageRecipeOutputs(
        data=data,
        evaluation={},
        package={"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
                 "ModelApprovalStatus": "Approved"},
        compiled={"targets": {"rasp4b": {"size_bytes": 2621440, "default": "detector-int8.onnx"},
                              "jetson_nano": {"size_bytes": 512, "default": "detector-int8.onnx"}}},
    )  # fmt: skip
    assert package_lines(outputs) == [
        "package   arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1 (Approved)",
        "artifacts jetson_nano  model.tar.gz      512 B  default detector-int8.onnx",
        "artifacts rasp4b       model.tar.gz    2.5 MiB  default detector-int8.onnx",
    ]
    assert package_lines(ImageRecipeOutputs(data, {}, None, {"targets": {}})) == []  # nothing registered


def test_a_rerun_that_registered_nothing_approves_nothing(tmp_path, capsys):
    from edge_fixtures import BUCKET, GROUP, register

    from pipelines.demo import approve_if_registered
    from pipelines.local.registry import LocalSageMakerClient
    from pipelines.local.s3 import LocalS3Client

    sagemaker, s3 = LocalSageMakerClient(tmp_path), LocalS3Client(tmp_path)
    s3.create_bucket(Bucket=BUCKET)
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    first = register(sagemaker, s3, b"model", key="m/1.tar.gz", approved=False)
    approve_if_registered(tmp_path, GROUP, ["--group", GROUP])  # the first run: its package is approved
    assert sagemaker.describe_model_package(ModelPackageName=first)["ModelApprovalStatus"] == "Approved"
    approve_if_registered(tmp_path, GROUP, ["--group", GROUP])  # a rerun (before: `approve` exited 2)
    assert "nothing to approve in robocar-pilot" in capsys.readouterr().out
