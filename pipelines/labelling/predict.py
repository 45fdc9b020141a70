"""``robocar label predict``: an approved model pre-labels new photos into Ground Truth manifests.

The package (``approved``, ``latest`` or an ARN of the recipe's group, resolved as ``robocar endpoint
deploy`` resolves it) runs over a folder or an S3 prefix of photos (the local workspace's S3 or AWS) in
one of three places, ``--via``:

- ``car``: the car's runtime (``edge.classify`` / ``edge.detect`` on the package's ONNX artifact for the
  edge target), installed by the car's agent into ``--car-root`` as ``robocar edge pull --archive`` does:
  digest checked against the registry, unpacked safely, smoke-tested;
- ``endpoint``: a running endpoint, the local one ``robocar endpoint deploy`` started (found by name) or
  a SageMaker endpoint (InvokeEndpoint);
- ``async``: an asynchronous endpoint: each photo uploaded under the endpoint's input folder,
  InvokeEndpointAsync, then the output (or failure) objects polled
  (https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html).

It writes into ``--out`` the files docs/labelling.md names (``manifest.TO_REVIEW``, ``MACHINE_LABELLED``,
``CATEGORIES``, ``PREDICT_REPORT``): a record whose confidence is below ``--review-below`` goes to review,
least sure first; the others are accepted as machine labels.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge import settings as core
from pipelines import settings as settings_mod
from pipelines.labelling import manifest

VIAS = ("car", "endpoint", "async")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
VERBOSE_JSON = "application/json; verbose=true"  # the handlers' answer with class names (docs/serving.md)
DEFAULT_MIN_SCORE = 0.5  # edge.detect.DEFAULT_MIN_SCORE: the boxes a car reports are the ones pre-labelled
PROGRESS_EVERY_S = 2.0
DEFAULT_ASYNC_TIMEOUT_S = 900.0  # an async endpoint scaled to zero takes minutes to start an instance
MAX_LISTED_FAILURES = 20
# Requests in flight to a real-time endpoint. Several at once hide a remote endpoint's network round trip;
# the local one serialises its forwards on 2 shared cores, where 1, 2, 4 and 8 measured the same within
# the machine's noise (classifier 21-48 photos/s, detection 138-251: docs/labelling.md), so 1 by default.
DEFAULT_CONCURRENCY = 1
MAX_CONCURRENCY = 64


class PredictError(ValueError):
    """A photo or an answer that cannot become a pre-label; the message says which and why."""


# ---------------------------------------------------------------- the CLI
def register(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "predict",
        help="pre-label photos with an approved model into Ground Truth manifests",
        description="Run an approved classifier or detector package over a folder or S3 prefix of photos "
        "(on the car's runtime, an endpoint or an async endpoint) and write Ground Truth output manifests "
        "with the pre-labels: to-review.manifest (below --review-below, least sure first), "
        "machine-labelled.manifest, label-categories.json and predict-report.json.",
    )
    p.add_argument("source", help="a folder of photos, or s3://bucket/prefix/ (local workspace S3 or AWS)")
    p.add_argument("--out", type=Path, required=True, help="folder for the manifests and the report")
    p.add_argument(
        "--package", default="approved",
        help="model package ARN, 'approved' (newest Approved of the recipe's group; default) or 'latest'",
    )  # fmt: skip
    p.add_argument("--via", choices=VIAS, default="car", help="where predictions run (default: car)")
    p.add_argument("--endpoint-name", default=None, help="endpoint/async: default the group's name")
    p.add_argument(
        "--review-below", type=float, default=1.0,
        help="records with a confidence below this go to review; 1 (default): every record",
    )  # fmt: skip
    p.add_argument("--label-attribute", default=manifest.DEFAULT_ATTRIBUTE, help="default: %(default)s")
    p.add_argument(
        "--job-name", default=None, help="the records' job-name (default: robocar-prelabel-<time>)"
    )
    p.add_argument(
        "--min-score", type=float, default=DEFAULT_MIN_SCORE,
        help="detection: boxes scoring at least this are pre-labelled (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY,
        help="endpoint: requests in flight at once (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--car-root", type=Path, default=None, help="car: where the package is installed")
    p.add_argument("--threads", type=int, default=1, help="car: ONNX Runtime threads (default: 1)")
    p.add_argument("--async-timeout", type=float, default=DEFAULT_ASYNC_TIMEOUT_S, help="async: seconds")
    p.add_argument("--poll-interval", type=float, default=2.0, help="async: seconds between polls")
    settings_mod.add_arguments(p, backend=True)
    core.add_arguments(p, ("edge_target",), "the car's runtime")
    p.set_defaults(handler=run)


@dataclass
class Plan:
    """What ``predict`` does, resolved from the flags."""

    task: str
    source: str
    out: Path
    review_below: float
    attribute: str
    job_name: str
    min_score: float = DEFAULT_MIN_SCORE


def run(args: argparse.Namespace) -> int:
    from pipelines.endpoint import resolve_package_arn

    settings, where = settings_mod.resolve_with_backend(args)
    if settings.recipe not in manifest.RECIPE_TASKS:
        raise ValueError("--recipe classifier or detection: only they pre-label photos")
    plan = Plan(
        task=manifest.RECIPE_TASKS[settings.recipe],
        source=args.source,
        out=args.out,
        review_below=args.review_below,
        attribute=manifest.check_attribute(args.label_attribute),
        job_name=manifest.check_job_name(args.job_name or default_job_name()),
        min_score=args.min_score,
    )
    if not 0.0 <= plan.review_below <= 1.0 or not 0.0 <= plan.min_score <= 1.0:
        raise ValueError("--review-below and --min-score must be in [0, 1]")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    clients = backend_clients(settings, where)
    arn = resolve_package_arn(clients.sagemaker, settings.model_package_group, args.package)
    photos = list_photos(clients.s3, args.source)
    if not photos:
        raise ValueError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {args.source}")
    runner = open_runner(args, settings, where, clients, arn)
    report = predict(plan, photos, runner, progress=Progress(sys.stderr))
    report.update(model_package_arn=arn, model_package_version=version_of(arn))
    write_outputs(plan, report)
    print(summary_line(plan, report))
    return 0 if report["predicted"] else 1  # as robocar edge run: no answer at all is a failed run


def default_job_name() -> str:
    return "robocar-prelabel-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def version_of(arn: str) -> int | None:
    tail = arn.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


# ---------------------------------------------------------------- clients and photos
@dataclass(frozen=True)
class Clients:
    s3: Any
    sagemaker: Any
    runtime: Any = None  # sagemaker-runtime, on AWS


def backend_clients(settings: settings_mod.Settings, where: settings_mod.Backend) -> Clients:
    """Local: the workspace's S3 and registry; AWS: boto3's, each request checked against botocore's model."""
    if where.is_local:
        from edge.aws import clients

        local = clients(local_root=where.local_root, region=settings.region)
        return Clients(local.s3, local.sagemaker)
    from pipelines.endpoint import aws_endpoint_clients

    aws = aws_endpoint_clients(settings.region, where.endpoint_url)
    return Clients(aws.s3, aws.sagemaker, aws.runtime)


@dataclass(frozen=True)
class Photo:
    """A photo to pre-label: its ``source-ref`` and how to read its bytes."""

    source_ref: str
    read: Callable[[], bytes] = field(repr=False, compare=False)

    @property
    def suffix(self) -> str:
        return Path(self.source_ref).suffix.lower()


def is_photo(name: str) -> bool:
    return name.lower().endswith(PHOTO_SUFFIXES)


def list_photos(s3: Any, source: str) -> list[Photo]:
    """The photos of a folder (``source-ref``: the absolute path) or an S3 prefix (``s3://`` URI), sorted."""
    if source.startswith("s3://"):
        from edge.s3_uri import split_s3_uri

        bucket, prefix = split_s3_uri(source)
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if is_photo(item["Key"])
        ]

        def reader(key: str) -> Callable[[], bytes]:
            return lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read()

        return [Photo(f"s3://{bucket}/{key}", reader(key)) for key in sorted(keys)]
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"{source} is neither a folder nor an s3:// prefix")
    from edge.folders import files_under

    return [
        Photo(str(path.resolve()), path.resolve().read_bytes)
        for _, path in files_under(folder)
        if is_photo(path.name)
    ]


def photo_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, depth) from the photo's header (depth: 1 grey, 3 colour, 4 with alpha)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height, len(image.getbands())
    except (UnidentifiedImageError, OSError) as exc:
        raise PredictError(f"not a readable photo: {exc}") from None


# ---------------------------------------------------------------- answers
@dataclass(frozen=True)
class Answer:
    """What the model says of one photo: probabilities by class id, or detections (K, 6) normalised."""

    classes: tuple[str, ...]
    probabilities: np.ndarray | None = None
    detections: np.ndarray | None = None


def answer_from_json(document: Any, task: str) -> Answer:
    """An endpoint's verbose answer (inference/classifier.py, inference/detector.py) -> Answer."""
    if not isinstance(document, dict) or "prediction" not in document or "labels" not in document:
        raise PredictError(f"the endpoint's answer is not the verbose form: {str(document)[:200]}")
    classes = tuple(str(name) for name in document["labels"])
    values = np.asarray(document["prediction"], dtype=np.float64)
    if task == manifest.CLASSIFICATION:
        if values.ndim != 1 or values.size != len(classes):
            raise PredictError(f"{values.size} probabilities for {len(classes)} classes")
        return Answer(classes, probabilities=values)
    return Answer(classes, detections=values.reshape(-1, 6))


def record_for(plan: Plan, photo: Photo, data: bytes, answer: Answer, created: datetime) -> dict[str, Any]:
    """The pre-labelled record of one photo (manifest.classification_record / detection_record)."""
    if plan.task == manifest.CLASSIFICATION:
        probabilities = np.asarray(answer.probabilities, dtype=np.float64)
        if probabilities.size != len(answer.classes) or not np.all(np.isfinite(probabilities)):
            raise PredictError(f"{probabilities.size} probabilities for {len(answer.classes)} classes")
        best = int(np.argmax(probabilities))
        return manifest.classification_record(
            photo.source_ref, best, answer.classes[best], float(probabilities[best]),
            attribute=plan.attribute, job_name=plan.job_name, created=created,
        )  # fmt: skip
    size = photo_size(data)
    rows = np.asarray(answer.detections, dtype=np.float64).reshape(-1, 6)
    rows = rows[rows[:, 1] >= plan.min_score]
    if np.any(rows[:, 0] < 0) or np.any(rows[:, 0] >= len(answer.classes)):
        raise PredictError(f"a box's class id is not one of the {len(answer.classes)} classes")
    boxes = [manifest.pixel_box(row, size[:2]) for row in rows]
    return manifest.detection_record(
        photo.source_ref, size, boxes, answer.classes,
        attribute=plan.attribute, job_name=plan.job_name, created=created,
    )  # fmt: skip


# ---------------------------------------------------------------- runners
@dataclass
class Runner:
    """Where predictions run: ``answers(photos)`` yields (photo, bytes, Answer or the exception), in
    photo order; ``answer_one`` is called from ``workers`` threads at once (an endpoint's requests wait
    on the network and the server, not on this process)."""

    where: dict[str, Any]
    answer_one: Callable[[Photo, bytes], Answer] | None = None
    answer_all: Callable[[Sequence[Photo]], Iterator[tuple[Photo, bytes, Answer | Exception]]] | None = None
    workers: int = 1

    def answers(self, photos: Sequence[Photo]) -> Iterator[tuple[Photo, bytes, Answer | Exception]]:
        if self.answer_all is not None:
            yield from self.answer_all(photos)
            return
        if self.workers <= 1:
            yield from map(self._answer, photos)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers, thread_name_prefix="prelabel") as pool:
            yield from pool.map(
                self._answer, photos
            )  # in order; at most ``workers`` photos in flight + queue

    def _answer(self, photo: Photo) -> tuple[Photo, bytes, Answer | Exception]:
        assert self.answer_one is not None
        data = b""
        try:
            data = photo.read()
            result: Answer | Exception = self.answer_one(photo, data)
        except Exception as exc:  # one photo the model cannot answer must not end the run
            result = exc
        return photo, data, result


def open_runner(
    args: argparse.Namespace,
    settings: settings_mod.Settings,
    where: settings_mod.Backend,
    clients: Clients,
    arn: str,
) -> Runner:
    if args.via == "car":
        from pipelines.labelling import runners

        target = str(core.resolve_args(args, ("edge_target",))["edge_target"])
        root = args.car_root or Path(where.local_root or core.default_of("workspace")) / "labelling" / "car"
        return runners.car_runner(clients, settings.model_package_group, arn, target, root,
                                  threads=args.threads)  # fmt: skip
    from pipelines.endpoint import default_endpoint_name, endpoint_name_problem
    from pipelines.labelling import runners

    asynchronous = args.via == "async"
    name = args.endpoint_name or default_endpoint_name(
        settings.model_package_group, asynchronous=asynchronous
    )
    problem = endpoint_name_problem(name)
    if problem:
        raise ValueError(f"--endpoint-name {name!r}: {problem}")
    task = manifest.RECIPE_TASKS[settings.recipe]
    if asynchronous:
        from pipelines.commands.endpoint import endpoint_folder

        input_folder = endpoint_folder(settings, name, "input")
        return runners.async_runner(where, clients, name, task, input_folder,
                                    timeout_s=args.async_timeout, interval_s=args.poll_interval)  # fmt: skip
    return runners.endpoint_runner(where, clients, name, task, arn, workers=args.concurrency)


# ---------------------------------------------------------------- predict
class Progress:
    """A line on stderr every few seconds: photos done, photos/s."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, 0.0

    def update(self, done: int, total: int, started: float) -> None:
        now = time.perf_counter()
        if now - self.last >= PROGRESS_EVERY_S or done == total:
            rate = done / (now - started) if now > started else 0.0
            print(f"  pre-labelled {done}/{total} photos ({rate:.1f}/s)", file=self.stream, flush=True)
            self.last = now


def predict(plan: Plan, photos: Sequence[Photo], runner: Runner, progress: Progress | None = None) -> dict:
    """Every photo through ``runner``: the records (``"records"``) and the report's figures."""
    created = datetime.now(UTC)
    records: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    started = time.perf_counter()
    for done, (photo, data, answer) in enumerate(runner.answers(photos), start=1):
        try:
            if isinstance(answer, Exception):
                raise answer
            records.append(record_for(plan, photo, data, answer, created))
        except Exception as exc:  # counted and listed: a person sees which photos gave no pre-label
            failures.append({"source-ref": photo.source_ref, "error": f"{type(exc).__name__}: {exc}"})
        if progress is not None:
            progress.update(done, len(photos), started)
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "photos": len(photos),
        "predicted": len(records),
        "failed": len(failures),
        "failures": failures[:MAX_LISTED_FAILURES],
        "seconds": round(seconds, 3),
        "images_per_second": round(len(records) / seconds, 2) if seconds > 0 else None,
        "via": runner.where,
    }


def split_for_review(
    records: Sequence[dict[str, Any]], attribute: str, review_below: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to review, least sure first; accepted as machine labels, in photo order). ``review_below`` 1 sends
    every record to review (a softmax can say 1.0 exactly)."""
    scored = [(manifest.record_confidence(r, attribute), n, r) for n, r in enumerate(records)]
    review = sorted((s for s in scored if review_below >= 1.0 or s[0] < review_below), key=lambda s: s[:2])
    reviewed = {n for _, n, _ in review}
    return [r for _, _, r in review], [r for _, n, r in scored if n not in reviewed]


def write_outputs(plan: Plan, report: dict[str, Any]) -> None:
    """The four files of ``--out`` (the manifests, the class map, the report)."""
    from edge.atomic_files import atomic_write_json

    records = report.pop("records")
    to_review, accepted = split_for_review(records, plan.attribute, plan.review_below)
    plan.out.mkdir(parents=True, exist_ok=True)
    manifest.write_records(plan.out / manifest.TO_REVIEW, to_review)
    manifest.write_records(plan.out / manifest.MACHINE_LABELLED, accepted)
    classes = report["via"].get("classes") or classes_of(records, plan.attribute)
    atomic_write_json(plan.out / manifest.CATEGORIES, manifest.categories_document(classes))
    report.update(
        task=plan.task,
        source=plan.source,
        label_attribute=plan.attribute,
        job_name=plan.job_name,
        review_below=plan.review_below,
        to_review=len(to_review),
        machine_labelled=len(accepted),
        classes=list(classes),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    if plan.task == manifest.DETECTION:
        report["min_score"] = plan.min_score
    atomic_write_json(plan.out / manifest.PREDICT_REPORT, report)


def classes_of(records: Sequence[dict[str, Any]], attribute: str) -> list[str]:
    """The classes by id the records name, when the runner did not say (a detection's class-map names
    every class; a classification names the classes it predicted)."""
    if not records:
        return []
    metadata = records[0][attribute + "-metadata"]
    if "class-map" in metadata:
        class_map = metadata["class-map"]
        return [class_map[str(i)] for i in range(len(class_map))]
    names = {r[attribute]: r[attribute + "-metadata"]["class-name"] for r in records}
    return [names.get(i, f"class_{i}") for i in range(max(names) + 1)]


def summary_line(plan: Plan, report: dict[str, Any]) -> str:
    rate = report.get("images_per_second")
    return (
        f"pre-labelled {report['predicted']} of {report['photos']} photos with "
        f"{report['model_package_arn']} via {report['via'].get('via')} ({rate} photos/s): "
        f"{report['to_review']} to review, {report['machine_labelled']} machine-labelled, "
        f"{report['failed']} failed -> {plan.out}"
    )


def loads_answer(body: bytes, task: str) -> Answer:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise PredictError(f"the endpoint's answer is not JSON: {exc}") from None
    return answer_from_json(document, task)
