"""``robocar label job``: CreateLabelingJob for a pre-labelled manifest, checked against botocore's model
and sent to botocore's Stubber (moto has no CreateLabelingJob); S3 is moto's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from labelled_fixtures import classification_sets, detection_sets
from moto import mock_aws

from pipelines import aws_rules
from pipelines import endpoint as ep
from pipelines.cli import main
from pipelines.labelling import job, manifest

BUCKET = "robocar-data-123456789012"
ROLE = "arn:aws:iam::123456789012:role/robocar-labelling"
WORKTEAM = "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/robocar"
AWS_FLAGS = ["--aws", "--region", "eu-west-1", "--role", ROLE, "--bucket", BUCKET]
ARN = "arn:aws:lambda:{region}:{account}:function:{kind}-{name}"


def test_every_listed_region_resolves_each_task_types_lambdas_and_others_are_refused() -> None:
    table = job.lambda_table()
    assert len(table["accounts"]) == 12 and table["source"].startswith("https://docs.aws.amazon.com/")
    for region, account in table["accounts"].items():
        for task_type, name in table["task_types"].items():
            pre, consolidation = job.lambda_arns(region, task_type)
            assert pre == ARN.format(region=region, account=account, kind="PRE", name=name)
            assert consolidation == ARN.format(region=region, account=account, kind="ACS", name=name)
    assert job.lambda_arns("us-east-1", job.ADJUST) == (
        "arn:aws:lambda:us-east-1:432418664414:function:PRE-AdjustmentBoundingBox",
        "arn:aws:lambda:us-east-1:432418664414:function:ACS-AdjustmentBoundingBox",
    )
    with pytest.raises(ValueError, match="not offered in eu-south-2"):
        job.lambda_arns("eu-south-2", job.ADJUST)


def plan(**changes: Any) -> job.JobPlan:
    base = job.JobPlan(
        job_name="robocar-review-1", task_type=job.ADJUST, attribute="prelabel",
        output_attribute="prelabel-adjusted", manifest_uri=f"s3://{BUCKET}/robocar/labelling/r/input.manifest",
        categories_uri=f"s3://{BUCKET}/robocar/labelling/r/label-categories.json",
        template_uri=f"s3://{BUCKET}/robocar/labelling/r/template.liquid.html",
        output_path=f"s3://{BUCKET}/robocar/labelling/output/", role_arn=ROLE, workteam_arn=WORKTEAM,
        region="eu-west-1",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("task_type", [job.ADJUST, job.VERIFY, job.CLASSIFY])
def test_each_task_types_request_is_one_aws_accepts(task_type: str) -> None:
    request = job.labeling_job_request(plan(task_type=task_type))
    assert aws_rules.request_problems("sagemaker", "CreateLabelingJob", request) == []
    name = job.lambda_table()["task_types"][task_type]
    config = request["HumanTaskConfig"]
    assert config["PreHumanTaskLambdaArn"].endswith(f":568282634449:function:PRE-{name}")
    assert config["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"].endswith(f"ACS-{name}")


def test_a_request_aws_would_refuse_is_refused_here_naming_the_field() -> None:
    request = job.labeling_job_request(plan(workteam_arn="robocar-team", job_name="a" * 64))
    with pytest.raises(ValueError, match="humanTaskConfig.workteamArn") as caught:
        job.check_request(request)
    assert "at 'labelingJobName' failed to satisfy constraint: Member must have length" in str(caught.value)


def test_the_templates_show_the_pre_label() -> None:
    adjust = job.template_text(job.ADJUST, "prelabel")
    assert "<crowd-bounding-box" in adjust and "initial-value=" in adjust
    assert "task.input.manifestLine.prelabel.annotations" in adjust and "__ATTRIBUTE__" not in adjust
    assert "task.input.manifestLine.prelabel-metadata.class-map[class_id]" in adjust
    verify = job.template_text(job.VERIFY, "prelabel")
    assert "overlay=" in verify and "boundingBox" in verify
    classify = job.template_text(job.CLASSIFY, "my-label")
    assert "<crowd-image-classifier" in classify and "manifestLine.my-label-metadata.class-name" in classify
    with pytest.raises(ValueError, match="label attribute"):
        job.template_text(job.ADJUST, 'x" onload="alert(1)')


def write_prelabelled(tmp_path: Path, kind: str) -> Path:
    sets = detection_sets if kind == "detection" else classification_sets
    _, machine, _ = sets(tmp_path / "photos", photos=8)  # 2 pre-labelled records
    out = tmp_path / "prelabels"
    out.mkdir()
    manifest.write_records(out / manifest.TO_REVIEW, machine)
    classes = ["circle", "square", "triangle"]
    (out / manifest.CATEGORIES).write_text(json.dumps(manifest.categories_document(classes)))
    return out / manifest.TO_REVIEW


@pytest.fixture
def aws(monkeypatch):
    """moto's S3 and a Stubber on a validated SageMaker client (CreateLabelingJob, which moto lacks)."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client = boto3.client("sagemaker", region_name="eu-west-1")
        stub = Stubber(client)
        clients = ep.EndpointClients(sagemaker=aws_rules.validated(client, "sagemaker"), s3=s3)
        monkeypatch.setattr(ep, "aws_endpoint_clients", lambda *a: clients)
        yield s3, stub


def test_an_adjustment_job_uploads_its_files_and_sends_the_request(tmp_path, aws, capsys) -> None:
    s3, stub = aws
    to_review = write_prelabelled(tmp_path, "detection")
    folder = f"s3://{BUCKET}/robocar/labelling/review-boxes-1/"
    expected = job.labeling_job_request(plan(
        job_name="review-boxes-1", manifest_uri=folder + "input.manifest",
        categories_uri=folder + "label-categories.json", template_uri=folder + "template.liquid.html",
    ))  # fmt: skip
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:labeling-job/review-boxes-1"
    stub.add_response("create_labeling_job", {"LabelingJobArn": arn}, expected)
    argv = ["label", "job", str(to_review), "--recipe", "detection", "--workteam", WORKTEAM,
            "--job-name", "review-boxes-1", *AWS_FLAGS]  # fmt: skip
    with stub:
        assert main(argv) == 0
    stub.assert_no_pending_responses()
    assert f"created labelling job review-boxes-1: {arn} (2 records)" in capsys.readouterr().out

    def body(name: str) -> bytes:
        return s3.get_object(Bucket=BUCKET, Key=f"robocar/labelling/review-boxes-1/{name}")["Body"].read()

    assert body("input.manifest") == to_review.read_bytes()
    categories = json.loads(body("label-categories.json"))
    assert categories["labels"] == [{"label": "circle"}, {"label": "square"}, {"label": "triangle"}]
    assert b"task.input.manifestLine.prelabel.annotations" in body("template.liquid.html")


def test_a_classification_review_is_an_image_classification_job(tmp_path, aws) -> None:
    _, stub = aws
    to_review = write_prelabelled(tmp_path, "classifier")
    stub.add_response(
        "create_labeling_job",
        {"LabelingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:labeling-job/review-classes-1"},
        {"LabelingJobName": "review-classes-1", "LabelAttributeName": "prelabel-adjusted", "InputConfig": ANY,
         "OutputConfig": ANY, "RoleArn": ROLE, "LabelCategoryConfigS3Uri": ANY, "HumanTaskConfig": ANY},
    )  # fmt: skip
    argv = ["label", "job", str(to_review), "--recipe", "classifier", "--workteam", WORKTEAM,
            "--job-name", "review-classes-1", *AWS_FLAGS]  # fmt: skip
    with stub:
        assert main(argv) == 0
    stub.assert_no_pending_responses()


def test_dry_run_prints_the_request_and_sends_nothing(tmp_path, capsys) -> None:
    to_review = write_prelabelled(tmp_path, "detection")
    argv = ["label", "job", str(to_review), "--recipe", "detection", "--workteam", WORKTEAM, "--verify",
            "--job-name", "verify-1", "--dry-run", "--workspace", str(tmp_path / "ws")]  # fmt: skip
    assert main(argv) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["LabelAttributeName"] == "prelabel-verified"
    assert request["HumanTaskConfig"]["PreHumanTaskLambdaArn"].endswith("PRE-VerificationBoundingBox")
    assert aws_rules.request_problems("sagemaker", "CreateLabelingJob", request) == []
    assert not (tmp_path / "ws").exists()


def test_what_ground_truth_cannot_do_is_refused_in_one_line(tmp_path, capsys) -> None:
    to_review = write_prelabelled(tmp_path, "classifier")
    base = ["label", "job", str(to_review), "--recipe", "classifier", "--workteam", WORKTEAM]
    assert main([*base, "--workspace", str(tmp_path / "ws")]) == 2
    assert "Ground Truth runs on AWS only" in capsys.readouterr().err
    assert main([*base, "--verify", "--dry-run"]) == 2
    assert "verifies bounding boxes only" in capsys.readouterr().err
    assert main([*base, "--dry-run", "--label-attribute", "prelabel"]) == 2
    assert "must differ from the pre-label's" in capsys.readouterr().err
