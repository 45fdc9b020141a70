"""Trained models behind the local endpoint: each answers over HTTP what the model itself answers.

The classifier: training/classifier.py's one-epoch model (the suite's ``trained_classifier``),
registered as the pipeline registers it, deployed, and asked about the test split's photos; its
probabilities must be the exported network's on ``edge.photos.prepare``'s input, computed apart in the
MXNet environment. The pilot: donkeycar's linear network (compile_fixtures) exported as training exports
it (a SavedModel whose signature names angle and throttle), served through ``predict_payload``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from compile_fixtures import SPEC, frames, model_json, pilot
from mxnet_fixtures import CLASSES, run_in_mxnet
from PIL import Image
from test_evaluate_classifier import register_champion

from edge.frames import decode_image, decode_outputs, prepare_frame, to_model_input
from pipelines.local import endpoint_server as es
from pipelines.local import environments
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.synth_classes import write_classes, write_image_list

BUCKET = "robocar-data-123456789012"
PILOT_KEY = "robocar/models/e1/Train/output/model.tar.gz"
PILOT_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.19-cpu"
REFERENCE = """
import json, sys
from pathlib import Path
import mxnet as mx
from edge.photos import prepare
from training.classifier import load_exported
net, spec, classes = load_exported(Path(sys.argv[1]))
print(json.dumps([net(mx.nd.array(prepare(p, spec))).asnumpy()[0].tolist() for p in sys.argv[2:]]))
"""


@pytest.fixture
def env_cache(mxnet_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deploy finds the MXNet environment the fixture built."""
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(Path(mxnet_python).parents[2]))


@pytest.mark.slow
def test_the_trained_classifier_answers_over_http_what_it_computes(
    mxnet_python: str,
    trained_classifier: Path,
    env_cache: None,
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "workspace"
    arn = register_champion(workspace, trained_classifier / "model" / "model.tar.gz")
    photos = sorted(
        p for p in (trained_classifier / "test").rglob("*") if p.suffix.lower() in (".jpg", ".png")
    )[:6]
    assert photos
    reference = run_in_mxnet(
        mxnet_python, ["-c", REFERENCE, str(trained_classifier / "exported"), *map(str, photos)]
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    classes = json.loads((trained_classifier / "exported" / "classifier-spec.json").read_text())["classes"]
    state = es.deploy(workspace, "classifier", arn)
    try:
        for path, probabilities in zip(photos, expected, strict=True):
            content_type = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
            status, _, body = es.invoke(state["url"], path.read_bytes(), content_type)
            assert status == 200
            np.testing.assert_allclose(json.loads(body), probabilities, atol=1e-5)
            status, _, body = es.invoke(
                state["url"], path.read_bytes(), content_type, "application/json;verbose=true"
            )
            assert json.loads(body)["predicted_label"] == classes[int(np.argmax(probabilities))]
        assert es.invoke(state["url"], photos[0].read_bytes()[:100], "image/jpeg")[0] == 400
        assert es.invoke(state["url"], photos[0].read_bytes(), "image/jpeg")[0] == 200
    finally:
        assert es.delete(workspace, "classifier")
    assert not es.process_alive(state["pid"])


@pytest.mark.slow
def test_robocar_label_predict_pre_labels_through_the_trained_classifiers_endpoint(
    trained_classifier: Path,
    env_cache: None,
    tmp_path: Path,
) -> None:
    """``robocar label predict --via endpoint`` on the real server and handler (issue 19): each record's
    class is the one the endpoint's verbose answer names, its confidence that class's probability."""
    from pipelines.cli import main

    workspace = tmp_path / "workspace"
    arn = register_champion(workspace, trained_classifier / "model" / "model.tar.gz")
    # 15 photos of their own, as a test split lays them out: each is asked twice below
    photos = tmp_path / "photos"
    summary = write_classes(photos, classes=3, images=15, seed=23)
    assert write_image_list(summary.manifest, photos / "images.lst") == CLASSES
    flags = ["--workspace", str(workspace), "--recipe", "classifier"]
    assert main(["endpoint", "deploy", *flags]) == 0
    try:
        out = tmp_path / "prelabels"
        assert main(["label", "predict", str(photos), "--via", "endpoint", "--out", str(out), *flags]) == 0
        url = es.status(workspace, "robocar-classifiers")["url"]
        records = [json.loads(line) for line in (out / "to-review.manifest").read_text().splitlines()]
        assert len(records) == 15
        for record in records:
            photo = Path(record["source-ref"])
            content_type = "image/png" if photo.suffix.lower() == ".png" else "image/jpeg"
            _, _, body = es.invoke(url, photo.read_bytes(), content_type, "application/json; verbose=true")
            answer = json.loads(body)
            assert record["prelabel-metadata"]["class-name"] == answer["predicted_label"]
            assert record["prelabel"] == answer["labels"].index(answer["predicted_label"])
            assert record["prelabel-metadata"]["confidence"] == pytest.approx(
                max(answer["prediction"]), abs=1e-4
            )
        report = json.loads((out / "predict-report.json").read_text())
        assert report["model_package_arn"] == arn and report["classes"] == spec_classes(trained_classifier)
    finally:
        assert main(["endpoint", "delete", *flags]) == 0


def spec_classes(model_root: Path) -> list[str]:
    return json.loads((model_root / "exported" / "classifier-spec.json").read_text())["classes"]


def register_pilot(workspace: Path, root: Path) -> tuple[str, object]:
    """donkeycar's linear pilot exported as training exports it, registered as the pipeline does."""
    from training.export import export_saved_model

    model = pilot(frames(16, seed=3)["images"])
    staging = root / "staging"
    staging.mkdir()
    export_saved_model(model, staging / "1", "linear")
    (staging / "model.json").write_text(json.dumps(model_json()))
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(staging.iterdir()):
            tar.add(path, arcname=path.name)
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=PILOT_KEY, Body=archive.read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName="robocar-pilots")
    arn = sagemaker.create_model_package(
        ModelPackageGroupName="robocar-pilots",
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": PILOT_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{PILOT_KEY}"}],
            "SupportedContentTypes": ["image/jpeg", "image/png", "application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    return arn, model


@pytest.mark.slow
def test_the_pilot_answers_over_http_what_its_network_computes(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    arn, model = register_pilot(workspace, tmp_path)
    rng = np.random.default_rng(5)
    camera = rng.integers(0, 256, (SPEC.camera_height, SPEC.camera_width, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(camera).save(encoded, "PNG")  # lossless: the reference decodes the same pixels
    x = to_model_input(prepare_frame(decode_image(encoded.getvalue()), SPEC))[None]
    angle, throttle = decode_outputs([np.asarray(o) for o in model(x, training=False)], "linear", 0.5)
    state = es.deploy(workspace, "pilot", arn)
    try:
        assert state["recipe"] == "pilot" and state["pid"] != os.getpid()
        status, _, body = es.invoke(state["url"], encoded.getvalue(), "image/png")
        assert status == 200
        answer = json.loads(body)
        assert answer["angle"] == pytest.approx(float(angle[0]), abs=1e-4)
        assert answer["throttle"] == pytest.approx(float(throttle[0]), abs=1e-4)
        assert es.invoke(state["url"], b"not a frame", "image/jpeg")[0] == 400
        assert es.invoke(state["url"], encoded.getvalue(), "text/plain")[0] == 415
        assert es.invoke(state["url"], encoded.getvalue(), "image/png")[0] == 200
    finally:
        assert es.delete(workspace, "pilot")
