"""``robocar label predict``: pre-labels in Ground Truth's output format, from the car's runtime, an
endpoint (a local server speaking the handlers' contract; SageMaker's through Stubber) and an async
endpoint (moto's InvokeEndpointAsync), routed to review by confidence."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_fixtures import BUCKET, GROUP, register
from PIL import Image
from test_edge_classifier import classifier_package
from test_edge_detector import detector_package

from pipelines.cli import main
from pipelines.labelling import manifest

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three solid photos and a half-and-half one the colour classifier is unsure of; and a text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (name, rgb) in enumerate(COLOURS.items(), start=1):
        Image.new("RGB", (40, 30), rgb).save(folder / f"{index:02d}-{name}.png")
    mixed = np.zeros((30, 40, 3), np.uint8)
    mixed[:, :20] = COLOURS["red"]
    mixed[:, 20:] = COLOURS["green"]
    Image.fromarray(mixed).save(folder / "04-mixed.jpg")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def predict(tmp_path: Path, source: Path | str, recipe: str, *extra: str) -> int:
    return main(
        [
            "label",
            "predict",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--recipe",
            recipe,
            "--group",
            GROUP,
            "--workspace",
            str(tmp_path / "workspace"),
            "--car-root",
            str(tmp_path / "labeller"),
            *extra,
        ]
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_cars_classifier_pre_labels_a_folder_routed_by_confidence(car_workspace, photos, capsys):
    tmp_path, aws = car_workspace
    arn = register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz")
    assert predict(tmp_path, photos, "classifier", "--review-below", "0.9", "--job-name", "prelabel-1") == 0
    out = tmp_path / "out"
    review, machine = read_lines(out / manifest.TO_REVIEW), read_lines(out / manifest.MACHINE_LABELLED)
    assert [Path(r["source-ref"]).name for r in review] == ["04-mixed.jpg"]
    assert sorted(Path(r["source-ref"]).name for r in machine) == [
        "01-red.png",
        "02-green.png",
        "03-blue.png",
    ]
    red = next(r for r in machine if r["source-ref"].endswith("01-red.png"))
    assert red["source-ref"] == str((photos / "01-red.png").resolve())
    assert red["prelabel"] == 0
    metadata = red["prelabel-metadata"]
    assert metadata["class-name"] == "red" and metadata["confidence"] > 0.99
    assert metadata["type"] == "groundtruth/image-classification"
    assert metadata["job-name"] == "labeling-job/prelabel-1" and metadata["human-annotated"] == "no"
    assert len(metadata["creation-date"]) == len("2026-01-01T00:00:00.000000")
    assert review[0]["prelabel-metadata"]["confidence"] < 0.9
    categories = json.loads((out / manifest.CATEGORIES).read_text())
    assert categories == {
        "document-version": "2018-11-28",
        "labels": [{"label": "red"}, {"label": "green"}, {"label": "blue"}],
    }
    report = json.loads((out / manifest.PREDICT_REPORT).read_text())
    assert report["model_package_arn"] == arn and report["via"]["via"] == "car"
    assert (report["photos"], report["predicted"], report["to_review"], report["machine_labelled"]) == (
        4,
        4,
        1,
        3,
    )
    assert report["images_per_second"] > 0
    assert "pre-labelled 4/4 photos" in capsys.readouterr().err


def test_the_cars_detector_pre_labels_boxes_in_pixels(car_workspace, tmp_path):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, detector_package("d1"), key="models/d1.tar.gz")
    folder = tmp_path / "boxes"
    folder.mkdir()
    Image.new("RGB", (40, 30), COLOURS["red"]).save(folder / "red.png")  # anchor 0: [0.1, 0.1, 0.5, 0.5]
    Image.new("L", (20, 10), 0).save(folder / "dark.png")  # nothing scores 0.5: no box
    assert predict(tmp_path, folder, "detection") == 0
    review = read_lines(tmp_path / "out" / manifest.TO_REVIEW)  # default --review-below 1: all reviewed
    assert [Path(r["source-ref"]).name for r in review] == ["dark.png", "red.png"]  # no box: confidence 0
    dark, red = review
    assert dark["prelabel"] == {"image_size": [{"width": 20, "height": 10, "depth": 1}], "annotations": []}
    assert red["prelabel"] == {
        "image_size": [{"width": 40, "height": 30, "depth": 3}],
        "annotations": [{"class_id": 0, "left": 4, "top": 3, "width": 16, "height": 12}],
    }
    metadata = red["prelabel-metadata"]
    assert metadata["class-map"] == {"0": "red", "1": "green", "2": "blue"}
    assert len(metadata["objects"]) == 1 and metadata["objects"][0]["confidence"] > 0.5
    assert metadata["type"] == "groundtruth/object-detection" and metadata["human-annotated"] == "no"
    assert read_lines(tmp_path / "out" / manifest.MACHINE_LABELLED) == []


def test_an_unreadable_photo_is_counted_and_listed_not_pre_labelled(car_workspace, photos):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz")
    (photos / "05-broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert predict(tmp_path, photos, "classifier") == 0
    report = json.loads((tmp_path / "out" / manifest.PREDICT_REPORT).read_text())
    assert (report["photos"], report["predicted"], report["failed"]) == (5, 4, 1)
    assert report["failures"][0]["source-ref"].endswith("05-broken.jpg")
    assert len(read_lines(tmp_path / "out" / manifest.TO_REVIEW)) == 4


def test_a_package_without_the_cars_target_is_refused_in_one_line(car_workspace, photos, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz", target="jetson_nano")
    assert predict(tmp_path, photos, "classifier") == 2
    assert "has no artifact for edge target 'rasp4b'" in capsys.readouterr().err


def test_a_bad_label_attribute_is_refused_before_anything_runs(car_workspace, photos, capsys):
    tmp_path, _ = car_workspace
    assert predict(tmp_path, photos, "classifier", "--label-attribute", "label_1") == 2
    assert "label attribute 'label_1'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a local endpoint
class ColourHandler:
    """The classifier handler's contract (inference/classifier.py): the verbose answer for the photo's
    mean colour, so the server answers as the colour package on the car does."""

    @staticmethod
    def answer(body: bytes) -> bytes:
        with Image.open(io.BytesIO(body)) as image:
            mean = np.asarray(image.convert("RGB"), np.float64).mean(axis=(0, 1)) / 255.0
        scores = np.exp(10 * mean) / np.exp(10 * mean).sum()
        names = list(COLOURS)
        verbose = {
            "prediction": scores.tolist(),
            "labels": names,
            "predicted_label": names[int(scores.argmax())],
        }
        return json.dumps(verbose).encode()


@pytest.fixture
def local_endpoint(car_workspace):
    """A server on 127.0.0.1 answering /ping and /invocations as the local endpoint server does, recorded
    in the workspace as ``robocar endpoint deploy`` records one (its pid: this process)."""
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edge.atomic_files import atomic_write_json
    from pipelines.local import endpoint_server

    tmp_path, aws = car_workspace
    arn = register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ping" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(f"{self.headers['Content-Type']} | {self.headers['Accept']}")
            answer = ColourHandler.answer(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    workspace = tmp_path / "workspace"
    state = {
        "name": "robocar-pilot",
        "url": f"http://127.0.0.1:{server.server_port}",
        "pid": os.getpid(),
        "port": server.server_port,
        "package": arn,
        "recipe": "classifier",
        "folder": str(tmp_path),
    }
    atomic_write_json(endpoint_server.state_file(workspace, "robocar-pilot"), state)
    results = {"async_output": f"s3://{BUCKET}/async/out", "async_failure": f"s3://{BUCKET}/async/failed"}
    atomic_write_json(endpoint_server.state_file(workspace, "robocar-pilot-async"), {**state, **results})
    yield tmp_path, arn, seen
    server.shutdown()


@pytest.mark.parametrize("concurrency", ["1", "3"])
def test_a_local_endpoint_pre_labels_with_the_class_names_it_answers(local_endpoint, photos, concurrency):
    tmp_path, arn, seen = local_endpoint
    flags = ["--via", "endpoint", "--review-below", "0.9", "--concurrency", concurrency]
    assert predict(tmp_path, photos, "classifier", *flags) == 0
    machine = read_lines(tmp_path / "out" / manifest.MACHINE_LABELLED)
    names = {Path(r["source-ref"]).name: r["prelabel-metadata"]["class-name"] for r in machine}
    assert names == {"01-red.png": "red", "02-green.png": "green", "03-blue.png": "blue"}
    assert seen[0] == "image/png | application/json; verbose=true" and len(seen) == 4
    report = json.loads((tmp_path / "out" / manifest.PREDICT_REPORT).read_text())
    assert report["via"]["via"] == "endpoint" and report["via"]["endpoint"] == "robocar-pilot"
    assert report["via"]["concurrency"] == int(concurrency)
    assert report["classes"] == ["red", "green", "blue"] and report["model_package_arn"] == arn


def test_a_local_async_endpoint_pre_labels_an_s3_prefix_of_the_workspace(local_endpoint, photos):
    """The photos in the workspace's S3 (``source-ref``: their s3:// URIs), each uploaded under the async
    endpoint's input folder, answered by the local ``invoke_async`` into its output path, then collected."""
    from pipelines.local.s3 import LocalS3Client

    tmp_path, _, seen = local_endpoint
    s3 = LocalS3Client(tmp_path / "workspace")
    for path in sorted(photos.iterdir()):
        s3.put_object(Bucket=BUCKET, Key=f"incoming/{path.name}", Body=path.read_bytes())
    source = f"s3://{BUCKET}/incoming/"
    assert predict(tmp_path, source, "classifier", "--via", "async", "--poll-interval", "0.01") == 0
    names = {
        r["source-ref"]: r["prelabel-metadata"]["class-name"]
        for r in read_lines(tmp_path / "out" / manifest.TO_REVIEW)
    }
    assert names[f"s3://{BUCKET}/incoming/01-red.png"] == "red" and len(names) == 4 and len(seen) == 4
    inputs = s3.list_objects_v2(
        Bucket="robocar-data-123456789012", Prefix="robocar/endpoints/robocar-pilot-async/input/"
    )
    assert inputs["KeyCount"] == 4
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="async/out/")["KeyCount"] == 4


def test_a_local_endpoint_serving_another_package_is_refused(local_endpoint, photos, capsys):
    tmp_path, _, _ = local_endpoint
    other = "arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-pilot/9"
    assert predict(tmp_path, photos, "classifier", "--via", "endpoint", "--package", other) == 2
    assert f"serves arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-pilot/1, not {other}" in (
        capsys.readouterr().err
    )


# ---------------------------------------------------------------- AWS: moto's endpoints
AWS_FLAGS = [
    "--aws",
    "--region",
    "us-east-1",
    "--role",
    "arn:aws:iam::123456789012:role/robocar",
    "--bucket",
    "robocar-data-123456789012",
]


@pytest.fixture
def moto_photos(tmp_path):
    """moto's S3 with the photos under s3://robocar-data-123456789012/unlabelled/, an Approved package in
    the group, and moto's sagemaker-runtime backend (its queues of endpoint answers)."""
    import boto3
    from moto import mock_aws
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="robocar-data-123456789012")
        for name, rgb in COLOURS.items():
            out = io.BytesIO()
            Image.new("RGB", (24, 16), rgb).save(out, "JPEG")
            s3.put_object(
                Bucket="robocar-data-123456789012", Key=f"unlabelled/{name}.jpg", Body=out.getvalue()
            )
        s3.put_object(Bucket="robocar-data-123456789012", Key="unlabelled/readme.txt", Body=b"no photo")
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=GROUP,
            ModelApprovalStatus="Approved",
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                        "ModelDataUrl": f"s3://{BUCKET}/m.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["image/jpeg"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )["ModelPackageArn"]
        yield tmp_path, arn, sagemakerruntime_backends["123456789012"]["us-east-1"], s3


def verbose(name: str) -> str:
    scores = [0.96 if n == name else 0.02 for n in COLOURS]
    return json.dumps({"prediction": scores, "labels": list(COLOURS), "predicted_label": name})


def aws_predict(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "label",
            "predict",
            "s3://robocar-data-123456789012/unlabelled/",
            "--out",
            str(tmp_path / "out"),
            "--recipe",
            "classifier",
            "--group",
            GROUP,
            *AWS_FLAGS,
            *extra,
        ]
    )


def test_invoke_endpoint_on_aws_pre_labels_an_s3_prefix(moto_photos, monkeypatch):
    """moto's InvokeEndpoint decodes the body as UTF-8 (a JPEG is not), so the runtime is botocore's
    Stubber here, each request checked against botocore's model; S3 and the registry are moto's."""
    import dataclasses

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    from pipelines import aws_rules
    from pipelines import endpoint as ep

    tmp_path, arn, _, s3 = moto_photos
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    stub = Stubber(client)
    for name in ("blue", "green", "red"):  # the photos in key order
        body = s3.get_object(Bucket="robocar-data-123456789012", Key=f"unlabelled/{name}.jpg")["Body"].read()
        answer = verbose(name).encode()
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/json"},
            {
                "EndpointName": GROUP,
                "Body": body,
                "ContentType": "image/jpeg",
                "Accept": "application/json; verbose=true",
            },
        )
    made = ep.aws_endpoint_clients
    monkeypatch.setattr(
        ep,
        "aws_endpoint_clients",
        lambda *a: dataclasses.replace(made(*a), runtime=aws_rules.validated(client, "sagemaker-runtime")),
    )
    with stub:
        assert aws_predict(tmp_path, "--via", "endpoint") == 0
    stub.assert_no_pending_responses()
    review = read_lines(tmp_path / "out" / manifest.TO_REVIEW)
    refs = {r["source-ref"]: r["prelabel-metadata"]["class-name"] for r in review}
    assert refs == {f"s3://robocar-data-123456789012/unlabelled/{n}.jpg": n for n in COLOURS}
    report = json.loads((tmp_path / "out" / manifest.PREDICT_REPORT).read_text())
    assert report["via"] == {"via": "endpoint", "endpoint": GROUP, "concurrency": 1, "classes": list(COLOURS)}
    assert report["model_package_arn"] == arn


def test_invoke_endpoint_async_uploads_polls_and_counts_a_failure(moto_photos):
    tmp_path, _, runtime, s3 = moto_photos
    runtime.async_results_queue += [(False, verbose("blue")), (True, "model error"), (False, verbose("red"))]
    assert aws_predict(tmp_path, "--via", "async", "--poll-interval", "0.01") == 0
    names = {
        Path(r["source-ref"]).name: r["prelabel-metadata"]["class-name"]
        for r in read_lines(tmp_path / "out" / manifest.TO_REVIEW)
    }
    assert names == {"blue.jpg": "blue", "red.jpg": "red"}
    report = json.loads((tmp_path / "out" / manifest.PREDICT_REPORT).read_text())
    assert report["failed"] == 1 and "model error" in report["failures"][0]["error"]
    assert report["failures"][0]["source-ref"].endswith("green.jpg")
    inputs = s3.list_objects_v2(
        Bucket="robocar-data-123456789012", Prefix="robocar/endpoints/robocar-pilot-async/input/"
    )["Contents"]
    assert len(inputs) == 3 and all(len(item["Key"].rsplit("/", 1)[1]) == 64 + 4 for item in inputs)


def test_no_photo_answered_is_a_failed_run(car_workspace, tmp_path):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, classifier_package("c1"), key="models/c1.tar.gz")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a photo")
    assert predict(tmp_path, folder, "classifier") == 1
    report = json.loads((tmp_path / "out" / manifest.PREDICT_REPORT).read_text())
    assert (report["predicted"], report["failed"]) == (0, 1)
    assert report["failures"][0]["error"].startswith("PredictError: not a readable photo")
