"""The car detects: a detector package (ONNX heads float32 + int8, anchors.npy, decode settings) published
in the local registry, pulled, smoke-tested, run on photos, written as JSON lines and published on MQTT."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_fixtures import GROUP, TARGET, pull, register
from PIL import Image
from test_edge_classifier import ColourPhotos, run, state
from test_edge_lean import run_on_the_car
from test_edge_mqtt import Subscriber, broker  # noqa: F401  (broker: the real Mosquitto fixture)

import pipelines  # noqa: F401  the local registry: pipelines.local's LocalS3Client / LocalSageMakerClient
from edge import detect
from edge.artifacts import sha256_file
from edge.cli import main as edge_main
from edge.photos import PhotoTransform
from processing.edge_package import MANIFEST_FORMAT, write_package
from processing.pixel_input import input_overrides, pixel_input_model

CLASSES = ("red", "green", "blue")
TRANSFORM = PhotoTransform(
    height=8, width=8, resize_shorter_side=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1 / 255,
    crop="stretch",
)  # fmt: skip
# Anchor 0 (top left) answers red and green, anchor 1 (bottom right) blue; zero offsets keep the anchors.
ANCHORS = np.array([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], np.float32)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
DECODE = {"variances": [0.1, 0.1, 0.2, 0.2], "nms_threshold": 0.45, "nms_topk": 400, "threshold": 0.01}


def heads_model(classes: int = 3) -> Any:
    """data [1, 3, 8, 8] -> every other pixel -> channel means -> logits [1, classes + 1, 2] -> softmax
    over the classes: ``cls_prob``; a zero MatMul: ``loc_preds`` [1, 8]."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((3, classes + 1, 2), np.float32)
    bias = np.full((classes + 1, 2), -10.0, np.float32)
    bias[0] = 0.0
    for channel, (class_id, anchor) in enumerate(((1, 0), (2, 0), (3, 1))):
        if class_id <= classes:
            weight[channel, class_id, anchor], bias[class_id, anchor] = 10.0, -5.0
    nodes = [  # a stride-2 1x1 identity first: the int8 heads then take pixel blocks (pixel_input.py)
        helper.make_node("Conv", ["data", "identity"], ["sampled"], kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("ReduceMean", ["sampled"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weight"], ["logits_flat"]),
        helper.make_node("Add", ["logits_flat", "bias"], ["logits_biased"]),
        helper.make_node("Reshape", ["logits_biased", "shape"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["cls_prob"], axis=1),
        helper.make_node("MatMul", ["pooled", "zeros"], ["loc_preds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_detector",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("cls_prob", TensorProto.FLOAT, [1, classes + 1, 2]),
         helper.make_tensor_value_info("loc_preds", TensorProto.FLOAT, [1, 8])],
        initializer=[
            numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "identity"),
            numpy_helper.from_array(weight.reshape(3, -1), "weight"),
            numpy_helper.from_array(bias.reshape(-1), "bias"),
            numpy_helper.from_array(np.array([1, classes + 1, 2], np.int64), "shape"),
            numpy_helper.from_array(np.zeros((3, 8), np.float32), "zeros"),
        ],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def artifact_entry(path: Path, precision: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "file": path.name,
        "runtime": "onnxruntime",
        "precision": precision,
        "input": spec or {"name": "data", "shape": TRANSFORM.as_dict()["shape"], "dtype": "float32"},
        "outputs": [{"name": n, "index": i, "dtype": "float32", "meaning": n}
                    for i, n in enumerate(("cls_prob", "loc_preds"))],
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "accuracy_delta": {"images": 3, "map_50": 1.0, "reference_map_50": 1.0, "points": 0.0},
        "within_tolerance": True,
    }  # fmt: skip


def detector_package(tag: str, classes: int = 3) -> bytes:
    """A detector package as compile_detection writes it: heads int8 fed pixels, int8 and float32,
    anchors.npy."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        float32, int8 = work / "detector-float32.onnx", work / "detector-int8.onnx"
        onnx.save(heads_model(classes), float32)
        quantize_static(
            str(float32), str(int8), ColourPhotos(), quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            extra_options=dict(input_overrides(TRANSFORM, "data")),
        )  # fmt: skip
        pixels = work / "detector-int8-pixels.onnx"
        photos = np.stack([np.full((8, 8, 3), rgb, np.uint8) for rgb in COLOURS.values()])
        spec, how = pixel_input_model(int8, pixels, TRANSFORM, photos)
        assert spec is not None, how
        np.save(work / "anchors.npy", ANCHORS)
        entries = [artifact_entry(pixels, "int8", spec), artifact_entry(int8, "int8"),
                   artifact_entry(float32, "float32")]  # fmt: skip
        default = entries[0]
        manifest = {
            "format": MANIFEST_FORMAT, "task": "detection", "target": TARGET, "tag": tag,
            "classes": list(CLASSES), "input_transform": TRANSFORM.as_dict(), "anchors_file": "anchors.npy",
            "decode": DECODE, "source_model": {"sha256": "0" * 64}, "artifacts": entries,
            "default": default["file"],
            **{k: default[k] for k in ("runtime", "file", "input", "outputs", "sha256", "size_bytes")},
            "accuracy_delta": default["accuracy_delta"],
        }  # fmt: skip
        files = {e["file"]: work / e["file"] for e in entries} | {"anchors.npy": work / "anchors.npy"}
        write_package(files, manifest, work / "out" / "model.tar.gz")
        return (work / "out" / "model.tar.gz").read_bytes()


@pytest.fixture(scope="module")
def good_package() -> bytes:
    return detector_package("good")


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (name, rgb) in enumerate(COLOURS.items(), start=1):
        Image.new("RGB", (16, 12), rgb).save(folder / f"{index:02d}-{name}.png")
    return folder


def test_pull_installs_a_detector_with_a_smoke_test(car_workspace, good_package, capsys):
    tmp_path, aws = car_workspace
    arn = register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    assert pull(tmp_path) == 0
    assert capsys.readouterr().out.startswith(f"installed: now driving with {arn}")
    smoke = state(tmp_path)["current"]["smoke_test"]
    assert smoke["task"] == "detection" and smoke["classes"] == list(CLASSES)
    measured = {m["file"]: m for m in smoke["measured"]}
    assert set(measured) == {"detector-int8-pixels.onnx", "detector-int8.onnx", "detector-float32.onnx"}
    assert all(m["passed"] and m["fps"] > 0 for m in measured.values()), measured
    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 0
    assert "task      detection: 3 classes (red, green, blue)" in capsys.readouterr().out


def test_run_prints_and_writes_the_boxes_of_each_photo(car_workspace, good_package, colour_photos, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    results = tmp_path / "boxes.jsonl"
    assert run(tmp_path, "--images", str(colour_photos), "--output", str(results), "--quiet") == 0
    out = capsys.readouterr().out.splitlines()
    shown = {line.split(": ")[0]: line.split(": ")[1] for line in out if line.startswith("0")}
    assert shown["01-red.png"].startswith("red 0.9") and "[0.100 0.100 0.500 0.500]" in shown["01-red.png"]
    assert shown["03-blue.png"].startswith("blue ") and "[0.500 0.500 0.900 0.900]" in shown["03-blue.png"]
    assert any(line.startswith("detected in 3 photos from folder ") for line in out)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["origin"] for r in records] == ["01-red.png", "02-green.png", "03-blue.png"]
    for record, colour in zip(records, CLASSES, strict=True):
        (box,) = record["boxes"]  # one confident box; the other anchor scores below --min-score
        assert box["class"] == colour and box["class_id"] == CLASSES.index(colour) and box["score"] > 0.9
        assert box["box"] == pytest.approx(ANCHORS[1 if colour == "blue" else 0].tolist(), abs=1e-6)
        assert record["latency_ms"] > 0 and record["model"] == state(tmp_path)["current"]["folder"]

    # a box scoring below --min-score is not reported (red scores 0.99 at most here)
    assert run(tmp_path, "--images", str(colour_photos), "--max-frames", "1", "--min-score", "0.999",
               "--output", str(tmp_path / "none.jsonl"), "--quiet") == 0  # fmt: skip
    (record,) = [json.loads(line) for line in (tmp_path / "none.jsonl").read_text().splitlines()]
    assert record["boxes"] == [] and "01-red.png: nothing" in capsys.readouterr().out
    assert run(tmp_path, "--images", str(colour_photos), "--actuator", "pca9685-stub") == 2
    assert "a detector does not drive" in capsys.readouterr().err


def test_detections_are_published_on_mqtt(broker, car_workspace, good_package, colour_photos,  # noqa: F811
                                          monkeypatch, capsys):  # fmt: skip
    host, port = broker
    tmp_path, aws = car_workspace
    monkeypatch.delenv("ROBOCAR_MQTT_TOPIC", raising=False)
    register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    assert pull(tmp_path) == 0
    subscriber = Subscriber(host, port, "robocar/car7/detections")
    code = run(tmp_path, "--images", str(colour_photos), "--quiet", "--car-id", "car7",
               "--mqtt-host", host, "--mqtt-port", str(port))  # fmt: skip
    received = subscriber.wait_for(3)
    subscriber.close()
    assert code == 0
    assert [m["boxes"][0]["class"] for m in received] == list(CLASSES)
    assert set(subscriber.qos) == {1}
    assert "mqtt robocar/car7/detections: 3 sent, 3 acknowledged" in capsys.readouterr().out


def test_heads_for_other_classes_are_refused_and_the_car_keeps_its_detector(
    car_workspace, good_package, capsys
):
    tmp_path, aws = car_workspace
    first = register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    register(aws.sagemaker, aws.s3, detector_package("two", classes=2), key="d/2/model.tar.gz")
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused: ") and "3 classes + background" in out
    assert state(tmp_path)["current"]["model_package_arn"] == first


def test_a_manifest_without_anchors_or_with_bad_decode_settings_is_refused() -> None:
    manifest = {"classes": list(CLASSES), "input_transform": TRANSFORM.as_dict(),
                "artifacts": [{"file": "d"}], "anchors_file": "anchors.npy", "decode": DECODE}  # fmt: skip
    assert detect.check_manifest(manifest)[2]["nms_threshold"] == 0.45
    with pytest.raises(detect.DetectorError, match="anchors_file"):
        detect.check_manifest({**manifest, "anchors_file": None})
    with pytest.raises(detect.DetectorError, match="nms_threshold"):
        detect.check_manifest({**manifest, "decode": {**DECODE, "nms_threshold": 0}})
    with pytest.raises(detect.DetectorError, match="2 or more distinct names"):
        detect.check_manifest({**manifest, "classes": ["red"]})


def test_the_car_detects_without_the_sdk_boto3_or_tensorflow(car_workspace, good_package, colour_photos):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    car = ["--root", str(tmp_path / "car")]
    registry_flags = ["--local-root", str(tmp_path / "workspace"), "--group", GROUP, "--target", TARGET]
    pulled = run_on_the_car("edge.cli", "pull", *car, *registry_flags)
    assert pulled.returncode == 0, pulled.stderr
    ran = run_on_the_car("edge.cli", "run", *car, "--no-pull", "--images", str(colour_photos), "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert "02-green.png: green " in ran.stdout and "detected in 3 photos" in ran.stdout
    assert "HEAVY-MODULES=\n" in ran.stderr + "\n"


def test_each_int8_form_finds_the_same_boxes(car_workspace, good_package, colour_photos):
    """The int8 heads fed pixel blocks (processing/pixel_input.py) and fed the float input: the car
    prepares each photo as each artifact's ``input`` says, and both answer the same heads."""
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="d/1/model.tar.gz")
    assert pull(tmp_path) == 0
    package = tmp_path / "car" / "current"
    pixels = detect.open_detector(package, prefer="detector-int8-pixels.onnx")
    plain = detect.open_detector(package, prefer="detector-int8.onnx")
    assert pixels.artifact["input"]["block"] == 2 and plain.artifact["input"]["dtype"] == "float32"
    for photo in sorted(colour_photos.iterdir()):
        for got, expected in zip(pixels.heads(photo), plain.heads(photo), strict=True):
            np.testing.assert_array_equal(got, expected)
        (found,) = pixels(photo)
        assert CLASSES[int(found[0])] in photo.name and found[1] > 0.9
