"""The local endpoint (pipelines/local/endpoint_server.py): a classifier package served over real HTTP.

The package is a classifier in the trainer's layout (symbol, params, classifier-spec.json) whose network
is small enough to write without training: the mean of each input channel, times 10, through a softmax,
so a red photo is class "red". The server runs in the MXNet environment (the ``mxnet_python`` fixture's),
as a detached process, and every request goes over a socket.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from edge.photos import PhotoTransform
from inference import server
from pipelines.local import endpoint_server as es
from pipelines.local import environments
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client

REPO = Path(__file__).resolve().parents[2]
BUCKET = "robocar-data-123456789012"
MODEL_KEY = "robocar/classifier/models/e1/Train/output/model.tar.gz"
GROUP = "robocar-classifiers"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"
CLASSES = ["red", "green", "blue"]
WRITE_NETWORK = """
import sys
import mxnet as mx
import numpy as np
prefix = sys.argv[1]
data = mx.sym.var("data")
scores = mx.sym.FullyConnected(mx.sym.mean(data, axis=(2, 3)), num_hidden=3, name="fc")
mx.sym.softmax(scores, axis=1, name="softmax").save(prefix + "-symbol.json")
weights = {"arg:fc_weight": mx.nd.array(np.eye(3) * 10), "arg:fc_bias": mx.nd.zeros(3)}
mx.nd.save(prefix + "-0000.params", weights)
"""


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40), kind: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, kind)
    return out.getvalue()


def write_classifier(mxnet_python: str, model_dir: Path) -> None:
    """The trainer's artifact layout (training/classifier.py ``export``) around the channel-mean network."""
    model_dir.mkdir(parents=True)
    result = subprocess.run(
        [mxnet_python, "-c", WRITE_NETWORK, str(model_dir / "image-classification")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    transform = PhotoTransform(32, 32, 37, (127.0,) * 3, (128.0,) * 3, 1.0)
    spec = {"schema": "robocar/classifier-spec/1", "classes": CLASSES, "input": transform.as_dict()}
    (model_dir / "classifier-spec.json").write_text(json.dumps(spec))
    (model_dir / "model-shapes.json").write_text(json.dumps([{"name": "data", "shape": [1, 3, 32, 32]}]))


def register(workspace: Path, model_dir: Path, status: str = "Approved") -> str:
    """The package the classifier pipeline registers: the MXNet inference image and the model in S3."""
    archive = workspace.parent / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=archive.read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{MODEL_KEY}"}],
            "SupportedContentTypes": ["application/x-image", "image/jpeg", "image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


@pytest.fixture(scope="module")
def endpoint(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(workspace, package ARN, deployed state): one classifier endpoint for the module's tests."""
    root = tmp_path_factory.mktemp("endpoint")
    workspace = root / "workspace"
    write_classifier(mxnet_python, root / "exported")
    arn = register(workspace, root / "exported")
    cache = os.environ.get(environments.CACHE_VARIABLE)
    os.environ[environments.CACHE_VARIABLE] = str(Path(mxnet_python).parents[2])  # the fixture's env
    try:
        state = es.deploy(workspace, "cars", arn, async_output=f"s3://{BUCKET}/async/out")
        yield workspace, arn, state
    finally:
        es.delete(workspace, "cars")
        if cache is None:
            os.environ.pop(environments.CACHE_VARIABLE, None)
        else:
            os.environ[environments.CACHE_VARIABLE] = cache


def test_a_photo_gets_probabilities_by_class_id(endpoint) -> None:  # type: ignore[no-untyped-def]
    _, _, state = endpoint
    assert state["recipe"] == "classifier" and state["url"].startswith("http://127.0.0.1:")
    for colour, expected in (((250, 10, 10), 0), ((10, 10, 250), 2)):
        status, content_type, body = es.invoke(state["url"], photo(colour), "application/x-image")
        assert (status, content_type) == (200, "application/json")
        probabilities = json.loads(body)
        assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-5
        assert max(range(3), key=probabilities.__getitem__) == expected


def test_class_names_come_with_verbose_json(endpoint) -> None:  # type: ignore[no-untyped-def]
    _, _, state = endpoint
    status, _, body = es.invoke(
        state["url"], photo((10, 240, 10), kind="PNG"), "image/png", "application/json; verbose=true"
    )
    answer = json.loads(body)
    assert status == 200 and answer["labels"] == CLASSES and answer["predicted_label"] == "green"
    assert len(answer["prediction"]) == 3


def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(endpoint) -> None:  # type: ignore[no-untyped-def]
    _, _, state = endpoint
    url, good = state["url"], photo((250, 10, 10))
    refused = {
        "truncated JPEG": (good[: len(good) // 2], "image/jpeg", "application/json", 400),
        "not an image": (b"hello", "image/jpeg", "application/json", 400),
        "empty body": (b"", "image/jpeg", "application/json", 400),
        "wrong content type": (good, "text/csv", "application/json", 415),
        "unanswerable accept": (good, "image/jpeg", "text/csv", 406),
        "oversized body": (b"\xff" * (server.MAX_BODY_BYTES + 1), "image/jpeg", "application/json", 413),
    }
    for why, (body, content_type, accept, expected) in refused.items():
        status, answer_type, answer = es.invoke(url, body, content_type, accept)
        assert (status, answer_type) == (expected, "application/json"), why
        assert json.loads(answer)["error"], why
        assert es.invoke(url, good, "image/jpeg")[0] == 200, f"after {why}"
    assert es.status(endpoint[0], "cars")["status"] == "InService"


def test_ping_and_unknown_paths(endpoint) -> None:  # type: ignore[no-untyped-def]
    url = endpoint[2]["url"]
    assert es.request(url, "GET", "/ping", b"", {})[0] == 200
    assert es.request(url, "GET", "/nothing", b"", {})[0] == 404
    connection = http.client.HTTPConnection("127.0.0.1", endpoint[2]["port"], timeout=10)
    connection.putrequest("POST", "/invocations")  # a chunked body: no Content-Length
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"0\r\n\r\n")
    assert connection.getresponse().status == 411
    connection.close()


def test_async_writes_the_output_object_or_the_failure_object(endpoint) -> None:  # type: ignore[no-untyped-def]
    workspace, _, _ = endpoint
    s3 = LocalS3Client(workspace)
    s3.put_object(Bucket=BUCKET, Key="async/in/red.jpg", Body=photo((250, 10, 10)))
    s3.put_object(Bucket=BUCKET, Key="async/in/broken.jpg", Body=photo((250, 10, 10))[:50])
    output = es.invoke_async(workspace, "cars", f"s3://{BUCKET}/async/in/red.jpg", inference_id="red-1")
    assert output == f"s3://{BUCKET}/async/out/red-1.out"
    probabilities = json.loads(s3.get_object(Bucket=BUCKET, Key="async/out/red-1.out")["Body"].read())
    assert probabilities.index(max(probabilities)) == 0
    es.invoke_async(workspace, "cars", f"s3://{BUCKET}/async/in/broken.jpg", inference_id="broken-1")
    failure = json.loads(s3.get_object(Bucket=BUCKET, Key="async/out/broken-1-error.out")["Body"].read())
    assert "not a readable photo" in failure["error"]
    with pytest.raises(Exception, match="NoSuchKey|does not exist|Not Found"):
        s3.get_object(Bucket=BUCKET, Key="async/out/broken-1.out")


def approved_copy(workspace: Path, arn: str) -> str:
    """Another Approved version of the package ``arn`` (its container as it is)."""
    sagemaker = LocalSageMakerClient(workspace)
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        InferenceSpecification=described["InferenceSpecification"],
    )["ModelPackageArn"]


def test_deploy_is_idempotent_and_delete_stops_the_process(endpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workspace, arn, state = endpoint
    again = es.deploy(workspace, "cars", arn, async_output=f"s3://{BUCKET}/async/out")
    assert again["pid"] == state["pid"] and again["url"] == state["url"]
    first = es.deploy(workspace, "cars-2", arn)
    assert first["pid"] != state["pid"]
    newer = approved_copy(workspace, arn)
    second = es.deploy(workspace, "cars-2", newer)  # blue/green: the new server answers, the old one stops
    assert second["package"] == newer and second["pid"] != first["pid"]
    assert not es.process_alive(first["pid"]) and not Path(first["folder"]).exists()
    assert es.invoke(second["url"], photo((1, 2, 250), kind="PNG"), "image/png")[0] == 200
    assert es.delete(workspace, "cars-2") is True
    assert not es.process_alive(second["pid"]) and es.status(workspace, "cars-2") is None
    assert not es.ping(second["url"], timeout=2)
    assert es.delete(workspace, "cars-2") is False
    assert es.status(workspace, "cars")["status"] == "InService"  # the other endpoint is untouched


def test_a_workspace_relative_to_the_callers_folder_is_served(endpoint, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The server runs from the repository root: a relative workspace (the default is ``.robocar``) must
    still name the caller's folder (the model was once looked for under the repository)."""
    workspace, arn, _ = endpoint
    monkeypatch.chdir(workspace.parent)
    state = es.deploy(Path(workspace.name), "relative", arn)
    try:
        assert es.invoke(state["url"], photo((250, 1, 2), kind="PNG"), "image/png")[0] == 200
    finally:
        assert es.delete(Path(workspace.name), "relative")


def test_only_an_approved_package_is_served_and_names_are_checked(endpoint) -> None:  # type: ignore[no-untyped-def]
    workspace, _, _ = endpoint
    pending = LocalSageMakerClient(workspace).create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{MODEL_KEY}"}],
            "SupportedContentTypes": ["application/x-image"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    with pytest.raises(es.EndpointError, match="PendingManualApproval"):
        es.deploy(workspace, "pending", pending)
    with pytest.raises(es.EndpointError, match="endpoint name"):
        es.deploy(workspace, "../outside", pending)


def test_a_handler_bug_is_a_500_and_the_server_keeps_serving() -> None:
    """The server's own loop with a handler that fails on request: 500 with the message, then 200."""
    import threading

    from inference.inference import PayloadError

    def handler(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        if body == b"bug":
            raise RuntimeError("the handler broke")
        if body == b"refused":
            raise PayloadError("no thanks", status_code=415)
        return b'{"ok": true}', "application/json"

    running = server.InvocationServer(("127.0.0.1", 0), handler, max_body_bytes=16, workers=1)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{running.server_address[1]}"
    try:
        status, _, body = es.invoke(url, b"bug", "image/jpeg")
        assert (status, json.loads(body)) == (500, {"error": "the handler broke"})
        assert es.invoke(url, b"refused", "image/jpeg")[:2] == (415, "application/json")
        assert es.invoke(url, b"x" * 17, "image/jpeg")[0] == 413
        status, _, body = es.invoke(url, b"fine", "image/jpeg")
        assert (status, body) == (200, b'{"ok": true}')
    finally:
        running.shutdown()
        running.server_close()


CONTAINER_CALLS = """
import json, sys
from inference import classifier
model = classifier.model_fn(sys.argv[1])
body = open(sys.argv[2], "rb").read()
prediction = classifier.predict_fn(classifier.input_fn(body, "application/x-image"), model)
answer, content_type = classifier.output_fn(prediction, "application/json; verbose=true")
print(json.dumps({"content_type": content_type, "answer": json.loads(answer)}))
"""


def test_the_handler_answers_the_mxnet_containers_four_calls(mxnet_python: str, tmp_path: Path) -> None:
    """model_fn -> input_fn -> predict_fn -> output_fn, as the MXNet serving container calls them."""
    write_classifier(mxnet_python, tmp_path / "model")
    (tmp_path / "blue.jpg").write_bytes(photo((5, 5, 250)))
    result = subprocess.run(
        [mxnet_python, "-P", "-c", CONTAINER_CALLS, str(tmp_path / "model"), str(tmp_path / "blue.jpg")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answered = json.loads(result.stdout.strip().splitlines()[-1])
    assert answered["content_type"] == "application/json"
    assert answered["answer"]["labels"] == CLASSES and answered["answer"]["predicted_label"] == "blue"
