"""A trained detector behind the local endpoint and behind the image's ``serve``, over real HTTP.

training/detector.py trains a tiny SSD (16 photos of coloured rectangles at 64 px, one epoch: about 2 s)
in the MXNet environment; its model directory (the built-in algorithm's layout, ``detector-spec.json``
and ``code/``) is registered with the MXNet inference image as the detection pipeline registers it,
deployed locally and asked about photos: the answer is the built-in object-detection endpoint's
``{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}``, equal to what MXNet's own
``MultiBoxDetection`` on the deploy symbol finds (``training.detector.deploy_detections``) on
``edge.photos.prepare``'s input. The same directory also serves from its own ``code/`` alone, as
infra/images/mxnet/serve runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import COLOURS, write_boxed_channel
from mxnet_fixtures import REPO, run_in_mxnet

from pipelines.local import endpoint_server as es
from pipelines.local import environments
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client

BUCKET = "robocar-data-123456789012"
MODEL_KEY = "robocar/detection/models/e1/Train/output/model.tar.gz"
GROUP = "robocar-detectors"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"
SIDE = 64
# MXNet's own decoder on the deploy symbol: each photo's valid rows (class_id >= 0), as the reference.
REFERENCE = """
import json, sys
from pathlib import Path
import mxnet as mx
from edge.photos import PhotoTransform, prepare
from training import detector
model = Path(sys.argv[1])
spec = detector.read_spec(model)
symbol, args, aux = detector.deploy_detections(model)
module = detector.bind_deploy(symbol, args, aux, spec["input"]["height"])
transform = PhotoTransform.from_dict(spec["input"])
found = []
for path in sys.argv[2:]:
    module.forward(mx.io.DataBatch([mx.nd.array(prepare(path, transform))]), is_train=False)
    rows = module.get_outputs()[0].asnumpy()[0]
    found.append(rows[rows[:, 0] >= 0].tolist())
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def detector_dir(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """training/detector.py's model directory after one epoch on 16 photos (the container's contract)."""
    root = tmp_path_factory.mktemp("detector")
    write_boxed_channel(root / "train", photos=16, seed=31, side=SIDE)
    write_boxed_channel(root / "validation", photos=8, seed=32, side=SIDE)
    container = {
        "SM_CHANNEL_TRAIN": str(root / "train"),
        "SM_CHANNEL_VALIDATION": str(root / "validation"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_HPS": json.dumps({"epochs": 1, "image_shape": SIDE}),
    }
    done = run_in_mxnet(mxnet_python, [str(REPO / "training" / "detector.py")], container)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def photos(root: Path) -> list[Path]:
    return sorted((root / "validation" / "images").iterdir())[:4]


def register(workspace: Path, model_dir: Path) -> str:
    """The package the detection pipeline registers: the MXNet inference image and the model in S3."""
    archive = workspace.parent / "detector.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=archive.read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{MODEL_KEY}"}],
            "SupportedContentTypes": ["image/jpeg", "image/png"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def check_rows(prediction: list[list[float]]) -> None:
    """The built-in endpoint's rows: six numbers, a class id of ours, best score first, normalised box."""
    rows = np.asarray(prediction, dtype=np.float64)
    assert rows.ndim == 2 and rows.shape[1] == 6 and len(rows) > 0
    assert set(rows[:, 0]) <= set(map(float, range(len(COLOURS))))
    assert np.all(np.diff(rows[:, 1]) <= 0) and np.all((rows[:, 1] > 0) & (rows[:, 1] <= 1))
    assert np.all((rows[:, 2:] >= 0) & (rows[:, 2:] <= 1))
    assert np.all(rows[:, 2] <= rows[:, 4]) and np.all(rows[:, 3] <= rows[:, 5])


def ordered(rows: list[list[float]]) -> np.ndarray:
    """Rows in one order whatever order equal scores came in."""
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return array[np.lexsort(np.round(array, 4).T[::-1])]


@pytest.mark.slow
def test_the_local_endpoint_answers_boxes_as_the_built_in_detector_does(
    mxnet_python: str, detector_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(environments.CACHE_VARIABLE, str(Path(mxnet_python).parents[2]))  # the fixture's env
    model, shown = detector_dir / "model", photos(detector_dir)
    reference = run_in_mxnet(mxnet_python, ["-c", REFERENCE, str(model), *map(str, shown)])
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    workspace = tmp_path / "workspace"
    state = es.deploy(workspace, "detector", register(workspace, model))
    try:
        assert state["recipe"] == "detection", "the recipe is the model's marker, not the MXNet image's"
        for path, rows in zip(shown, expected, strict=True):
            status, content_type, body = es.invoke(state["url"], path.read_bytes(), "image/jpeg")
            assert (status, content_type) == (200, "application/json")
            answer = json.loads(body)
            assert list(answer) == ["prediction"]
            check_rows(answer["prediction"])
            np.testing.assert_allclose(ordered(answer["prediction"]), ordered(rows), atol=1e-5)
        good = shown[0].read_bytes()
        status, _, body = es.invoke(state["url"], good, "image/jpeg", "application/json; verbose=true")
        verbose = json.loads(body)
        assert status == 200 and verbose["labels"] == list(COLOURS)
        assert verbose["predicted_labels"] == [list(COLOURS)[int(r[0])] for r in verbose["prediction"]]
        for body, content_type, accept, refused in (
            (good[: len(good) // 3], "image/jpeg", "application/json", 400),  # a broken JPEG
            (b"", "image/jpeg", "application/json", 400),
            (good, "text/csv", "application/json", 415),
            (good, "image/jpeg", "text/csv", 406),
        ):
            status, _, answer = es.invoke(state["url"], body, content_type, accept)
            assert status == refused and json.loads(answer)["error"], (content_type, accept)
            assert es.invoke(state["url"], good, "image/jpeg")[0] == 200, "the server keeps serving"
    finally:
        assert es.delete(workspace, "detector")
    assert not es.process_alive(state["pid"])


@pytest.mark.slow
def test_the_detector_directory_serves_with_its_own_code_alone(
    mxnet_python: str, detector_dir: Path, tmp_path: Path
) -> None:
    """What the endpoint image's ``serve`` does (infra/images/mxnet/serve): the inference server from the
    model's ``code/``, nothing of the repository on the path, the recipe found by its marker."""
    model = detector_dir / "model"
    ready = tmp_path / "ready.json"
    server = subprocess.Popen(
        [mxnet_python, "-m", "inference.server", "serve", "--model-dir", str(model), "--host", "127.0.0.1",
         "--port", "0", "--ready-file", str(ready)],
        cwd=tmp_path, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(model / "code")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.is_file():
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()  # its output is read whole only once it has ended
                pytest.fail(server.communicate(timeout=30)[0].decode()[-3000:])
            time.sleep(0.2)
        url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"
        assert urllib.request.urlopen(f"{url}/ping", timeout=30).status == 200
        request = urllib.request.Request(
            f"{url}/invocations", data=photos(detector_dir)[0].read_bytes(), method="POST",
            headers={"Content-Type": "image/jpeg", "Accept": "application/json; verbose=true"},
        )  # fmt: skip
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        check_rows(answer["prediction"])
        assert answer["labels"] == list(COLOURS)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert "serving detection from" in output
    served_from = {p.relative_to(model / "code").as_posix() for p in (model / "code").rglob("*.py")}
    assert {
        "inference/server.py",
        "inference/detector.py",
        "edge/detect.py",
        "training/detector.py",
    } <= served_from
