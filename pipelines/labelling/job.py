"""``robocar label job``: a Ground Truth job on AWS over a pre-labelled manifest (CreateLabelingJob).

What Ground Truth offers for reviewing a model's labels (docs/labelling.md, "With Ground Truth"):

- **bounding boxes**: the built-in adjustment task (``AdjustmentBoundingBox``: the worker moves, resizes,
  deletes and adds boxes, drawn from the pre-label with ``crowd-bounding-box``'s ``initial-value``) or,
  with ``--verify``, the verification task (``VerificationBoundingBox``: correct or incorrect, the boxes
  overlaid by ``crowd-image-classifier``); both write ``<attribute>`` and ``-metadata`` beside the
  pre-label, whose name must differ
  (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-start-api.html);
- **classification**: no verification or adjustment task type exists for image classification (the page
  above covers bounding boxes, semantic segmentation, 3D point clouds and video frames), so the review is
  an image-classification job (``ImageMultiClass``) over the pre-labelled manifest whose template shows
  the model's class in its header.

The task type's pre-annotation and consolidation Lambda functions are Ground Truth's own, one per region
(``ground_truth_lambdas.json``, from the API reference's tables). The manifest (if local), the label
categories and the UI template are uploaded under ``s3://<bucket>/<prefix>/labelling/<job>/``; the
request is checked against botocore's model (``pipelines.aws_rules``) before it is sent, and
``--dry-run`` prints it and sends nothing. Ground Truth has no local stand-in: locally, review in
``robocar label review``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import settings as settings_mod
from pipelines.labelling import manifest

LAMBDAS_FILE = "ground_truth_lambdas.json"
ADJUST, VERIFY, CLASSIFY = "bounding-box-adjustment", "bounding-box-verification", "image-classification"
TEMPLATE_ATTRIBUTE = "__ATTRIBUTE__"  # what the templates call the pre-label attribute
VERIFIED_SUFFIX = "-verified"
# One person per photo: the pre-label is the first opinion. 300 s a task and 10 days on offer: the
# API's defaults for a private work team are 300 s and 10 days (TaskTimeLimitInSeconds, TaskAvailability-
# LifetimeInSeconds, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HumanTaskConfig.html).
WORKERS_PER_PHOTO = 1
TASK_TIME_LIMIT_S = 300
TASK_AVAILABILITY_S = 10 * 24 * 3600
MAX_CONCURRENT_TASKS = 1000
TITLES = {
    ADJUST: ("Check a model's boxes", "Move, resize or delete the model's boxes and draw the missing ones."),
    VERIFY: ("Verify a model's boxes", "Say whether the model's boxes are right."),
    CLASSIFY: ("Check a model's class", "Keep the model's class if it is right, else choose the right one."),
}


def register(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "job",
        help="create the Ground Truth job that reviews a pre-labelled manifest (AWS)",
        description="CreateLabelingJob for a manifest robocar label predict wrote: bounding boxes as an "
        "adjustment (or --verify: verification) job, classes as an image-classification job showing the "
        "model's class; the region's Ground Truth Lambda functions, the label categories and the UI "
        "template uploaded beside the manifest. --dry-run prints the request and sends nothing.",
    )
    p.add_argument("manifest", help="the pre-labelled manifest: a local file or an s3:// URI")
    p.add_argument(
        "--workteam", required=True, help="the work team's ARN (arn:aws:sagemaker:...:workteam/...)"
    )
    p.add_argument(
        "--categories", type=Path, default=None,
        help="the label category file (default: label-categories.json beside a local manifest)",
    )  # fmt: skip
    p.add_argument(
        "--verify", action="store_true", help="detection: a verification job instead of adjustment"
    )
    p.add_argument("--job-name", default=None, help="default: robocar-review-<time>")
    p.add_argument(
        "--label-attribute", default=None, help="the job's output attribute (default: <A>-adjusted)"
    )
    p.add_argument("--output-path", default=None, help="default: s3://<bucket>/<prefix>/labelling/output/")
    p.add_argument("--workers", type=int, default=WORKERS_PER_PHOTO, help="people per photo (default: 1)")
    p.add_argument("--task-time-limit", type=int, default=TASK_TIME_LIMIT_S, help="seconds (default: 300)")
    p.add_argument("--dry-run", action="store_true", help="print the request; upload and send nothing")
    settings_mod.add_arguments(p, backend=True)
    p.set_defaults(handler=run)


# ---------------------------------------------------------------- the region's Lambda functions
def lambda_table() -> dict[str, Any]:
    text = importlib.resources.files("pipelines.labelling").joinpath(LAMBDAS_FILE).read_text()
    return json.loads(text)


def lambda_arns(region: str, task_type: str) -> tuple[str, str]:
    """(pre-annotation, annotation-consolidation) Lambda ARNs of a built-in task type in ``region``;
    ValueError for a region Ground Truth's tables do not list."""
    table = lambda_table()
    account = table["accounts"].get(region)
    if account is None:
        regions = ", ".join(table["accounts"])
        raise ValueError(
            f"Ground Truth's built-in task types are not offered in {region} (regions: {regions})"
        )
    name = table["task_types"][task_type]
    pre, consolidation = (
        f"arn:aws:lambda:{region}:{account}:function:{kind}-{name}" for kind in ("PRE", "ACS")
    )
    return pre, consolidation


# ---------------------------------------------------------------- the request
@dataclass(frozen=True)
class JobPlan:
    """Everything the request is made of; ``*_uri`` are where the files are (or will be uploaded)."""

    job_name: str
    task_type: str
    attribute: str  # the pre-label's
    output_attribute: str
    manifest_uri: str
    categories_uri: str
    template_uri: str
    output_path: str
    role_arn: str
    workteam_arn: str
    region: str
    workers: int = WORKERS_PER_PHOTO
    task_time_limit_s: int = TASK_TIME_LIMIT_S


def task_type_for(task: str, verify: bool) -> str:
    if task == manifest.CLASSIFICATION:
        if verify:
            raise ValueError(
                "--verify: Ground Truth verifies bounding boxes only; a classification is reviewed"
            )
        return CLASSIFY
    return VERIFY if verify else ADJUST


def template_text(task_type: str, attribute: str) -> str:
    """The task's UI template (``templates/<task type>.liquid.html``) for the pre-label ``attribute``."""
    name = f"templates/{task_type}.liquid.html"
    text = importlib.resources.files("pipelines.labelling").joinpath(name).read_text()
    return text.replace(TEMPLATE_ATTRIBUTE, manifest.check_attribute(attribute))


def labeling_job_request(plan: JobPlan) -> dict[str, Any]:
    """CreateLabelingJob's request (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateLabelingJob.html)."""
    pre, consolidation = lambda_arns(plan.region, plan.task_type)
    title, description = TITLES[plan.task_type]
    return {
        "LabelingJobName": plan.job_name,
        "LabelAttributeName": plan.output_attribute,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": plan.manifest_uri}}},
        "OutputConfig": {"S3OutputPath": plan.output_path},
        "RoleArn": plan.role_arn,
        "LabelCategoryConfigS3Uri": plan.categories_uri,
        "HumanTaskConfig": {
            "WorkteamArn": plan.workteam_arn,
            "UiConfig": {"UiTemplateS3Uri": plan.template_uri},
            "PreHumanTaskLambdaArn": pre,
            "TaskTitle": title,
            "TaskDescription": description,
            "TaskKeywords": ["images", "labelling", "review"],
            "NumberOfHumanWorkersPerDataObject": plan.workers,
            "TaskTimeLimitInSeconds": plan.task_time_limit_s,
            "TaskAvailabilityLifetimeInSeconds": TASK_AVAILABILITY_S,
            "MaxConcurrentTaskCount": MAX_CONCURRENT_TASKS,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": consolidation},
        },
    }


def check_request(request: dict[str, Any]) -> None:
    """ValueError with every problem botocore's model (shapes, patterns, lengths) finds in the request."""
    from pipelines.aws_rules import request_problems

    problems = request_problems("sagemaker", "CreateLabelingJob", request)
    if problems:
        raise ValueError("CreateLabelingJob would be refused: " + "; ".join(problems))


# ---------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    from pipelines.datasets import folder_uri

    settings, where = settings_mod.resolve_with_backend(args)
    if where.is_local and not args.dry_run:
        raise ValueError("Ground Truth runs on AWS only (--aws); locally, review with robocar label review")
    if settings.recipe not in manifest.RECIPE_TASKS:
        raise ValueError("--recipe classifier or detection: only they have labelling jobs")
    task_type = task_type_for(manifest.RECIPE_TASKS[settings.recipe], args.verify)
    job_name = manifest.check_job_name(
        args.job_name or "robocar-review-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    )
    records, manifest_body = read_manifest(args, where, settings)
    attribute = manifest.find_attribute(records[0])
    folder = folder_uri(settings.bucket, settings.prefix, f"labelling/{job_name}")
    suffix = VERIFIED_SUFFIX if args.verify else manifest.REVIEWED_SUFFIX
    plan = JobPlan(
        job_name=job_name,
        task_type=task_type,
        attribute=attribute,
        output_attribute=manifest.check_attribute(args.label_attribute or attribute + suffix),
        manifest_uri=args.manifest if manifest_body is None else folder + "input.manifest",
        categories_uri=folder + manifest.CATEGORIES,
        template_uri=folder + "template.liquid.html",
        output_path=args.output_path or folder_uri(settings.bucket, settings.prefix, "labelling/output"),
        role_arn=settings.role,
        workteam_arn=args.workteam,
        region=settings.region,
        workers=args.workers,
        task_time_limit_s=args.task_time_limit,
    )
    if plan.output_attribute == attribute:
        raise ValueError(
            f"--label-attribute must differ from the pre-label's ({attribute}), as Ground Truth asks"
        )
    request = labeling_job_request(plan)
    check_request(request)
    categories = categories_body(args)
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    clients = aws_clients(settings, where)
    upload(clients.s3, plan, manifest_body, categories)
    answer = clients.sagemaker.create_labeling_job(**request)
    print(f"created labelling job {job_name}: {answer['LabelingJobArn']} ({len(records)} records)")
    return 0


def read_manifest(args: argparse.Namespace, where: Any, settings: Any) -> tuple[list[dict], bytes | None]:
    """The manifest's records, and its bytes when it is local (to be uploaded)."""
    if args.manifest.startswith("s3://"):
        from edge.s3_uri import split_s3_uri

        bucket, key = split_s3_uri(args.manifest)
        body = aws_clients(settings, where).s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        records = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not records:
            raise ValueError(f"{args.manifest}: no records")
        return records, None
    records = manifest.read_records(Path(args.manifest))
    if not records:
        raise ValueError(f"{args.manifest}: no records")
    return records, Path(args.manifest).read_bytes()


def categories_body(args: argparse.Namespace) -> bytes:
    path = args.categories
    if path is None:
        if args.manifest.startswith("s3://"):
            raise ValueError("--categories FILE: the label category file of the pre-labels")
        path = Path(args.manifest).parent / manifest.CATEGORIES
    document = json.loads(Path(path).read_text())
    manifest.classes_of_categories(document)  # checked: the labels the job offers
    return json.dumps(document, indent=2).encode()


def aws_clients(settings: Any, where: Any) -> Any:
    from pipelines.endpoint import aws_endpoint_clients

    return aws_endpoint_clients(settings.region, where.endpoint_url)


def upload(s3: Any, plan: JobPlan, manifest_body: bytes | None, categories: bytes) -> None:
    from edge.s3_uri import split_s3_uri

    template = template_text(plan.task_type, plan.attribute).encode()
    files = [
        (plan.categories_uri, categories, "application/json"),
        (plan.template_uri, template, "text/html"),
    ]
    if manifest_body is not None:
        files.append((plan.manifest_uri, manifest_body, "application/jsonlines"))
    for uri, body, content_type in files:
        bucket, key = split_s3_uri(uri)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
