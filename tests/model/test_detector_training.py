"""training/detector.py in the MXNet environment: a small SSD learns boxes from ~200 synthetic photos.

The trainer runs as the MXNet container runs it (channels and hyperparameters from SM_* variables and
flags), in the environment local mode builds for MXNet images, as tests/model/test_classifier_training.py
does. One training (200 photos at 128 px, 5 epochs: about 30 s on 2 busy cores) is shared by the checks.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest
from detection_fixtures import COLOURS, write_boxed_channel
from mxnet_fixtures import REPO, run_in_mxnet

from pipelines.local.s3 import LocalS3Client
from pipelines.synth_boxes import write_boxes

EPOCHS = 5
BUCKET = "robocar-data-123456789012"

# Run in the MXNet environment on the trained model: the deploy forms against the Gluon SSD rebuilt
# from the same parameters, and mAP@0.5 on the validation channel through deploy_detections.
CHECK_DEPLOY = r"""
import json, sys
from pathlib import Path
import mxnet as mx, numpy as np
from training import detector
from training.ssd import AnchorSpec, build_ssd

model, channel = Path(sys.argv[1]), Path(sys.argv[2])
spec = detector.read_spec(model)
side = spec["input"]["height"]
config = detector.DetectorConfig(channel, channel, model, None, image_shape=side)
data = detector.load_channel(channel, side)
inputs = next(detector.batches(data, detector.make_spec(config), 8, None))[0]
symbol, args, aux = detector.deploy_network(model)
module = detector.bind_deploy(symbol, args, aux, side, batch=8)
module.forward(mx.io.DataBatch([mx.nd.array(inputs)]), is_train=False)
cls_prob, loc_preds, anchors = (o.asnumpy() for o in module.get_outputs())
net = build_ssd(len(spec["classes"]), spec["training"]["backbone"], AnchorSpec(), side)
saved = mx.nd.load(str(model / "model_algo_1-0000.params"))
for name, param in net.collect_params().items():  # EfficientNet's unused head is not in the artifact
    value = saved.get("arg:" + name, saved.get("aux:" + name))
    if value is not None:
        param.set_data(value)
cls_preds, gluon_loc, gluon_anchors = net(mx.nd.array(inputs))
gluon_prob = mx.nd.softmax(cls_preds, axis=-1).transpose((0, 2, 1)).asnumpy()
detections, dargs, daux = detector.deploy_detections(model)
module = detector.bind_deploy(detections, dargs, daux, side, batch=1)
found = []
for photo in detector.batches(data, detector.make_spec(config), 1, None):
    module.forward(mx.io.DataBatch([mx.nd.array(photo[0])]), is_train=False)
    rows = module.get_outputs()[0].asnumpy()[0]
    found.append(rows[rows[:, 0] >= 0])
print(json.dumps({
    "outputs": symbol.list_outputs(), "inputs": symbol.list_arguments()[:1],
    "has_label": "label" in symbol.list_arguments(), "detection_outputs": detections.list_outputs(),
    "shapes": [list(cls_prob.shape), list(loc_preds.shape), list(anchors.shape)],
    "cls_prob": float(np.abs(gluon_prob - cls_prob).max()),
    "loc_preds": float(np.abs(gluon_loc.asnumpy() - loc_preds).max()),
    "anchors": float(np.abs(gluon_anchors.asnumpy() - anchors).max()),
    "map_50": detector.mean_average_precision(found, data.boxes, len(spec["classes"])),
}))
"""


@pytest.fixture(scope="module")
def boxed_channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detector")
    write_boxed_channel(root / "train", photos=200, seed=21)
    write_boxed_channel(root / "validation", photos=60, seed=22)
    return root


@pytest.fixture(scope="module")
def trained(mxnet_python: str, boxed_channels: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    model = tmp_path_factory.mktemp("model")
    container = {  # the MXNet container's contract: channels, model dir and SM_HPS from the environment
        "SM_CHANNEL_TRAIN": str(boxed_channels / "train"),
        "SM_CHANNEL_VALIDATION": str(boxed_channels / "validation"),
        "SM_MODEL_DIR": str(model),
        "SM_HPS": json.dumps({"epochs": EPOCHS, "image_shape": 128, "num_training_samples": 200}),
    }
    done = run_in_mxnet(mxnet_python, [str(REPO / "training" / "detector.py"), "--seed", '"1"'], container)
    assert done.returncode == 0, done.stderr[-3000:]
    return model, done.stdout


def validation_maps(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"^Epoch\[\d+\] Validation-mAP=([0-9.]+)$", stdout, re.M)]


@pytest.mark.slow
def test_the_ssd_learns_the_boxes(trained: tuple) -> None:
    _, stdout = trained
    maps = validation_maps(stdout)
    assert len(maps) == EPOCHS, stdout
    # An untrained SSD finds nothing at IoU 0.5 (its first epoch's mAP is below 0.05 on this set).
    assert max(maps) >= 0.6, stdout
    assert max(maps) >= maps[0] + 0.4, stdout
    assert len(re.findall(r"^Epoch\[\d+\] Train-CrossEntropy=[0-9.]+$", stdout, re.M)) == EPOCHS


@pytest.mark.slow
def test_the_artifact_has_the_built_in_layout_and_the_spec(trained: tuple) -> None:
    model, stdout = trained
    assert sorted(p.name for p in model.iterdir()) == [
        "code", "detector-spec.json", "model-shapes.json", "model_algo_1-0000.params",
        "model_algo_1-symbol.json",
    ]  # fmt: skip
    assert json.loads((model / "model-shapes.json").read_text()) == [
        {"name": "data", "shape": [1, 3, 128, 128]}
    ]
    symbol = json.loads((model / "model_algo_1-symbol.json").read_text())
    ops = {node["op"] for node in symbol["nodes"]}
    assert {"_contrib_MultiBoxTarget", "_contrib_MultiBoxPrior", "_contrib_MultiBoxDetection"} <= ops
    assert "label" in {node["name"] for node in symbol["nodes"] if node["op"] == "null"}  # as the built-in's
    spec = json.loads((model / "detector-spec.json").read_text())
    assert spec["schema"] == "robocar/detector-spec/1"
    assert spec["classes"] == list(COLOURS)
    assert spec["input"]["crop"] == "stretch" and spec["input"]["height"] == spec["input"]["width"] == 128
    assert len(spec["anchors"]["sizes"]) == len(spec["anchors"]["ratios"]) == 3
    assert spec["variances"] == [0.1, 0.1, 0.2, 0.2]
    assert spec["nms"] == {"threshold": 0.45, "topk": 400}
    assert spec["training"]["validation_map_50"] == pytest.approx(max(validation_maps(stdout)), abs=1e-6)
    assert spec["training"]["stands_in_for"] == {"algorithm": "object-detection", "num_training_samples": 200}


@pytest.mark.slow
def test_the_deploy_forms_bind_without_labels_and_equal_the_training_heads(
    mxnet_python: str, trained: tuple, boxed_channels: Path
) -> None:
    model, _ = trained
    done = run_in_mxnet(mxnet_python, ["-c", CHECK_DEPLOY, str(model), str(boxed_channels / "validation")])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outputs"] == ["cls_prob_output", "loc_preds_output", "anchors_output"]
    assert result["inputs"] == ["data"] and not result["has_label"]
    assert result["detection_outputs"] == ["detection_output"]
    anchors = result["shapes"][2][1]
    assert result["shapes"] == [[8, len(COLOURS) + 1, anchors], [8, anchors * 4], [1, anchors, 4]]
    # MKLDNN's fused kernels against Gluon's imperative ones: float32 rounding only.
    assert result["cls_prob"] < 1e-4 and result["loc_preds"] < 1e-3 and result["anchors"] == 0.0
    spec = json.loads((model / "detector-spec.json").read_text())
    assert result["map_50"] == pytest.approx(spec["training"]["validation_map_50"], abs=0.01)


def refuse(mxnet_python: str, channel: Path, tmp_path: Path, *flags: str) -> str:
    """The trainer's stderr on ``channel``, which it must refuse in one line (exit 2, no traceback)."""
    done = run_in_mxnet(
        mxnet_python,
        [str(REPO / "training" / "detector.py"), "--train", str(channel), "--validation", str(channel),
         "--sm-model-dir", str(tmp_path / "model"), *flags],
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_a_channel_without_annotations_is_a_one_line_error(mxnet_python: str, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    assert "no annotations.jsonl" in refuse(mxnet_python, tmp_path / "train", tmp_path)


def test_a_box_outside_the_photo_is_refused_by_line(mxnet_python: str, tmp_path: Path) -> None:
    write_boxed_channel(tmp_path / "train", photos=2, seed=1)
    lines = (tmp_path / "train" / "annotations.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"image": "images/000001.jpg", "boxes": [[0, 0.5, 0.5, 1.2, 0.9]]})
    (tmp_path / "train" / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    stderr = refuse(mxnet_python, tmp_path / "train", tmp_path)
    assert "annotations.jsonl:2: a box is not 0 <= xmin < xmax <= 1" in stderr


def test_efficientnet_needs_a_side_that_is_a_multiple_of_32(mxnet_python: str, tmp_path: Path) -> None:
    write_boxed_channel(tmp_path / "train", photos=2, seed=1)
    stderr = refuse(
        mxnet_python,
        tmp_path / "train",
        tmp_path,
        "--base_network",
        "efficientnet-lite0",
        "--image_shape",
        "100",
    )
    assert "multiple of 32" in stderr


@pytest.mark.slow
def test_the_efficientnet_backbone_trains_from_imagenet_weights_and_converts(
    mxnet_python: str, tmp_path: Path
) -> None:
    # the backbone's plumbing, not its quality: one batch (16 photos) to train on and to check the heads on
    model, channel = tmp_path / "model", tmp_path / "photos"
    write_boxed_channel(channel, photos=16, seed=23, side=64)
    done = run_in_mxnet(
        mxnet_python,
        [str(REPO / "training" / "detector.py"), "--train", str(channel),
         "--validation", str(channel), "--sm-model-dir", str(model), "--epochs", "1",
         "--base_network", "efficientnet-lite0", "--image_shape", "64"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    training = json.loads((model / "detector-spec.json").read_text())["training"]
    assert (training["backbone"], training["pretrained"]) == ("efficientnet-lite0", "imagenet")
    check = run_in_mxnet(mxnet_python, ["-c", CHECK_DEPLOY, str(model), str(channel)])
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout.strip().splitlines()[-1])
    assert result["inputs"] == ["data"] and result["anchors"] == 0.0 and result["loc_preds"] < 1e-3


def synthetic_manifest(s3: LocalS3Client, folder: Path, prefix: str, photos: int, seed: int) -> str:
    """``robocar data synth --detection``'s photos (own sizes, some grey) in local S3 and its Ground Truth
    manifest (every key the service writes, attribute ``bounding-box``) naming them there."""
    summary = write_boxes(
        folder, classes=3, images=photos, seed=seed, source_prefix=f"s3://{BUCKET}/{prefix}"
    )
    for photo in sorted((folder / "images").iterdir()):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/images/{photo.name}", Body=photo.read_bytes())
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/output.manifest", Body=summary.manifest.read_bytes())
    return f"s3://{BUCKET}/{prefix}/output.manifest"


@pytest.mark.slow
def test_local_mode_runs_the_built_in_object_detection_on_a_bounding_box_manifest(
    mxnet_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.local import environments
    from pipelines.local.registry import LocalSageMakerClient
    from pipelines.local.runners import StepJob, run_training
    from training.detector import METRIC_DEFINITIONS

    monkeypatch.setenv(environments.CACHE_VARIABLE, str(Path(mxnet_python).parents[2]))
    workspace = tmp_path / "ws"
    s3 = LocalS3Client(workspace)
    s3.create_bucket(Bucket=BUCKET)
    channels = []
    for name, photos, seed in (("train", 48, 5), ("validation", 16, 6)):
        manifest = synthetic_manifest(s3, tmp_path / name, f"labels/{name}", photos, seed)
        source = {"S3DataType": "AugmentedManifestFile", "AttributeNames": ["source-ref", "bounding-box"],
                  "S3Uri": manifest}  # fmt: skip
        channels.append({"ChannelName": name, "DataSource": {"S3DataSource": source}, "InputMode": "Pipe"})
    arguments = {  # as a built-in object-detection Training request names them
        "AlgorithmSpecification": {
            "TrainingImage": "811284229777.dkr.ecr.us-east-1.amazonaws.com/object-detection:1",
            "TrainingInputMode": "Pipe", "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "HyperParameters": {
            "base_network": "resnet-50", "use_pretrained_model": "1", "num_classes": "3",
            "num_training_samples": "48", "epochs": "2", "image_shape": "128", "mini_batch_size": "16",
            "learning_rate": "0.001", "optimizer": "adam", "momentum": "0.9",
        },
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }  # fmt: skip
    job = StepJob(
        step_name="Train", job_name="pipelines-detect-Train", workspace=workspace, s3=s3,
        sagemaker=LocalSageMakerClient(workspace), region="us-east-1", log_path=workspace / "train.log",
        base_env={"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "2"}, stop=threading.Event(),
    )  # fmt: skip
    outcome = run_training(job, arguments)
    artifact = outcome.properties["ModelArtifacts"]["S3ModelArtifacts"]
    body = s3.get_object(Bucket=BUCKET, Key=artifact.split(f"s3://{BUCKET}/", 1)[1])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = sorted(tar.getnames())
        spec = json.load(tar.extractfile("detector-spec.json"))
    assert [n for n in names if n != "." and not n.startswith("code")] == [
        "detector-spec.json", "model-shapes.json", "model_algo_1-0000.params", "model_algo_1-symbol.json",
    ]  # fmt: skip
    assert "code/inference/detector.py" in names  # the stand-in's model serves with its own code
    assert spec["classes"] == ["circle", "square", "triangle"]
    assert spec["training"]["stands_in_for"] == {
        "algorithm": "object-detection", "base_network": "resnet-50", "momentum": "0.9",
        "num_training_samples": 48,
    }  # fmt: skip
    metrics = {m["MetricName"] for m in outcome.properties["FinalMetricDataList"]}
    assert metrics == {"train:cross_entropy", "train:smooth_l1", "validation:mAP"}
