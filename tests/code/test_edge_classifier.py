"""The car classifies: a real classifier package (ONNX float32 + int8) published in the local registry,
pulled, smoke-tested, measured, run on photos, written as JSON lines and published on a real Mosquitto."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_fixtures import GROUP, SAMPLE_TUBS, TARGET, pull, register
from PIL import Image
from test_edge_lean import run_on_the_car
from test_edge_mqtt import Subscriber, broker  # noqa: F401  (broker: the real Mosquitto fixture)

import pipelines  # noqa: F401  the local registry: pipelines.local's LocalS3Client / LocalSageMakerClient
from edge import agent, classify, runtimes
from edge.artifacts import sha256_file
from edge.cli import main as edge_main
from edge.photos import PhotoTransform, prepare
from processing.edge_package import MANIFEST_FORMAT, write_package

CLASSES = ("red", "green", "blue")
# Photos at [0, 1] per channel: the mean pool of a red photo is (1, 0, 0), so weights 10 x identity give
# red a logit of 10 against 0 (softmax 0.9999).
TRANSFORM = PhotoTransform(
    height=8, width=8, resize_shorter_side=9, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1 / 255
)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def colour_model(weights: np.ndarray) -> Any:
    """data [1, 3, 8, 8] -> mean per channel -> MatMul(weights) -> Softmax: ``probabilities``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["data"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_classifier",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


class ColourPhotos:
    """onnxruntime's calibration reader: the three colours and five random photos, prepared as the car
    prepares them."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        solid = [np.full((8, 8, 3), rgb, np.uint8) for rgb in COLOURS.values()]
        noise = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
        self.batches = iter({"data": prepare(p, TRANSFORM)} for p in solid + noise)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def artifact_entry(path: Path, precision: str) -> dict[str, Any]:
    return {
        "file": path.name,
        "runtime": "onnxruntime",
        "precision": precision,
        "input": {"name": "data", "shape": TRANSFORM.as_dict()["shape"], "dtype": "float32"},
        "outputs": [{"name": "probabilities", "index": 0, "dtype": "float32", "meaning": "probabilities"}],
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "accuracy_delta": {"images": 3, "accuracy": 1.0, "reference_accuracy": 1.0, "points": 0.0,
                           "agreement": 1.0},
        "within_tolerance": True,
    }  # fmt: skip


def classifier_package(tag: str, weights: np.ndarray | None = None) -> bytes:
    """A classifier package as compile_classifier writes it (docs/classifier.md, "Compiled output"):
    float32 and static int8 (QDQ) ONNX artifacts, the manifest, packed by processing.edge_package."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    weights = 10.0 * np.eye(3) if weights is None else weights
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        float32, int8 = work / "classifier-float32.onnx", work / "classifier-int8.onnx"
        onnx.save(colour_model(weights), float32)
        quantize_static(
            str(float32), str(int8), ColourPhotos(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        entries = [artifact_entry(int8, "int8"), artifact_entry(float32, "float32")]
        default = entries[0]
        manifest = {
            "format": MANIFEST_FORMAT,
            "task": "classification",
            "target": TARGET,
            "tag": tag,
            "classes": list(CLASSES),
            "input_transform": TRANSFORM.as_dict(),
            "source_model": {"sha256": "0" * 64},
            "tolerance": {"accuracy_points": 1.0},
            "artifacts": entries,
            "default": default["file"],
            **{k: default[k] for k in ("runtime", "file", "input", "outputs", "sha256", "size_bytes")},
            "accuracy_delta": default["accuracy_delta"],
        }
        write_package({e["file"]: work / e["file"] for e in entries}, manifest, work / "out" / "model.tar.gz")
        return (work / "out" / "model.tar.gz").read_bytes()


@pytest.fixture(scope="module")
def good_package() -> bytes:
    return classifier_package("good")


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    """A folder of one red, one green and one blue photo (12x16, JPEG and PNG), named in that order."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (name, rgb) in enumerate(COLOURS.items(), start=1):
        suffix = "jpg" if name == "green" else "png"
        Image.new("RGB", (16, 12), rgb).save(folder / f"{index:02d}-{name}.{suffix}")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def state(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "car" / "state.json").read_text())


def run(tmp_path: Path, *extra: str) -> int:
    return edge_main(["run", "--root", str(tmp_path / "car"), "--no-pull", *extra])


def test_pull_installs_a_classifier_and_status_shows_the_measured_choice(car_workspace, good_package, capsys):
    tmp_path, aws = car_workspace
    arn = register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    assert pull(tmp_path) == 0
    assert capsys.readouterr().out.startswith(f"installed: now driving with {arn}")
    smoke = state(tmp_path)["current"]["smoke_test"]
    assert smoke["task"] == "classification" and smoke["classes"] == list(CLASSES)
    measured = {m["file"]: m for m in smoke["measured"]}
    assert set(measured) == {"classifier-int8.onnx", "classifier-float32.onnx"}
    assert all(m["passed"] and m["fps"] > 0 and m["runtime"] == "onnxruntime" for m in measured.values())
    fastest = max(measured.values(), key=lambda m: m["fps"])["file"]
    assert smoke["artifact"] == fastest
    choice = tmp_path / "car" / "current" / ".robocar-choice.json"
    assert json.loads(choice.read_text())["file"] == fastest

    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 0
    out = capsys.readouterr().out
    assert "task      classification: 3 classes (red, green, blue)" in out
    assert f"artifact  {fastest}: fastest passing here" in out
    assert out.count(" fps  median ") == 2 and f"{fastest}" in out.split("<- drives")[0].splitlines()[-1]


def test_run_classifies_a_folder_of_photos(car_workspace, good_package, colour_photos, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    results, summary = tmp_path / "classes.jsonl", tmp_path / "summary.json"
    code = run(tmp_path, "--images", str(colour_photos), "--output", str(results), "--top-k", "2",
               "--summary-json", str(summary))  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    names = ["01-red.png", "02-green.jpg", "03-blue.png"]
    shown = [line for line in out if line.split(":")[0] in names]
    assert [line.split(":")[0] for line in shown] == names, "every photo, in name order"
    for line, colour in zip(shown, CLASSES, strict=True):
        first, second = line.split(": ")[1].split(", ")
        name, probability = first.split()
        assert name == colour and float(probability) > 0.9, line  # int8 answers 0.996, float32 0.9999
        assert second.split()[0] in CLASSES and second.split()[0] != colour
    assert any(line.startswith("classified 3 photos from folder ") and "fps" in line for line in out)
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["origin"] for r in records] == names
    assert [r["class"] for r in records] == list(CLASSES)
    for record in records:
        assert len(record["top"]) == 2
        assert record["top"][0]["probability"] >= record["top"][1]["probability"]
        assert record["model"] == state(tmp_path)["current"]["folder"] and record["latency_ms"] > 0
    report = json.loads(summary.read_text())
    assert report["photos"] == 3 and report["skipped"] == 0 and report["latency_ms"]["p50"] > 0

    # the default top-k is 3: every class, most probable first
    assert run(tmp_path, "--images", str(colour_photos), "--max-frames", "1") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("01-red.png: "))
    assert [part.split()[0] for part in line.split(": ")[1].split(", ")] == ["red", "green", "blue"]


def test_run_classifies_the_pilots_frame_sources(car_workspace, good_package, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    assert pull(tmp_path) == 0
    tub = SAMPLE_TUBS / "tub_v2"
    assert run(tmp_path, "--source", f"tub:{tub}", "--max-frames", "4", "--quiet") == 0
    out = capsys.readouterr().out
    assert "classified 4 photos from tub v2" in out
    assert (
        sum(line.split(": ")[1].split()[0] in CLASSES for line in out.splitlines() if ".jpg: " in line) == 4
    )
    # a classifier moves no motor: asking for one is bad input, said in one line
    assert run(tmp_path, "--source", f"tub:{tub}", "--actuator", "pca9685-stub") == 2
    assert "a classifier does not drive" in capsys.readouterr().err


def test_wrong_number_of_probabilities_is_refused_and_the_car_keeps_its_classifier(
    car_workspace, good_package, capsys
):
    tmp_path, aws = car_workspace
    first = register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    two_outputs = classifier_package("two", weights=10.0 * np.eye(3)[:, :2])  # 2 probabilities, 3 classes
    register(aws.sagemaker, aws.s3, two_outputs, key="c/2/model.tar.gz")
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused: ") and "2 probabilities for 3 classes" in out
    assert state(tmp_path)["current"]["model_package_arn"] == first
    assert len(state(tmp_path)["rejected"]) == 1
    assert pull(tmp_path) == 0, "the rejected package is not tried again"

    # a newer good one installs; rolling back returns to the first and rejects it
    register(aws.sagemaker, aws.s3, classifier_package("newer"), key="c/3/model.tar.gz")
    assert pull(tmp_path) == 0
    assert state(tmp_path)["current"]["model_package_arn"] != first
    assert edge_main(["rollback", "--root", str(tmp_path / "car")]) == 0
    assert state(tmp_path)["current"]["model_package_arn"] == first


def test_classifications_are_published_on_mqtt(broker, car_workspace, good_package, colour_photos,  # noqa: F811
                                               monkeypatch, capsys):  # fmt: skip
    host, port = broker
    tmp_path, aws = car_workspace
    monkeypatch.delenv("ROBOCAR_MQTT_TOPIC", raising=False)
    register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    assert pull(tmp_path) == 0
    subscriber = Subscriber(host, port, "robocar/car9/classifications")
    code = run(tmp_path, "--images", str(colour_photos), "--quiet", "--car-id", "car9",
               "--mqtt-host", host, "--mqtt-port", str(port))  # fmt: skip
    received = subscriber.wait_for(3)
    subscriber.close()
    assert code == 0
    assert [m["class"] for m in received] == list(CLASSES)
    assert set(subscriber.qos) == {1} and len(received[0]["top"]) == 3
    assert "mqtt robocar/car9/classifications: 3 sent, 3 acknowledged" in capsys.readouterr().out

    # a topic the user configures wins
    subscriber = Subscriber(host, port, "fleet/photos")
    code = run(tmp_path, "--images", str(colour_photos), "--quiet", "--max-frames", "1",
               "--mqtt-host", host, "--mqtt-port", str(port), "--mqtt-topic", "fleet/photos")  # fmt: skip
    assert code == 0
    assert [m["origin"] for m in subscriber.wait_for(1)] == ["01-red.png"]
    subscriber.close()


def test_a_manifest_whose_artifact_does_not_take_the_transforms_shape_is_refused() -> None:
    manifest = {
        "classes": list(CLASSES),
        "input_transform": TRANSFORM.as_dict(),
        "artifacts": [{"file": "c.onnx", "input": {"shape": [1, 3, 16, 16], "dtype": "float32"}}],
    }
    with pytest.raises(classify.ClassifierError, match=r"takes float32 \[1, 3, 16, 16\]"):
        classify.check_manifest(manifest)
    with pytest.raises(classify.ClassifierError, match="2 or more distinct names"):
        classify.check_manifest({**manifest, "classes": ["red", "red"]})


def test_the_cars_classifier_sessions_keep_every_graph_optimisation(good_package, tmp_path: Path) -> None:
    """ORT_ENABLE_ALL is most of the classifier's speed (its NCHWc/NHWC layouts: float32 5.8x, int8
    1.25x over EXTENDED, benchmarks/README.md): losing it must fail here, not only in a benchmark."""
    import onnxruntime as ort

    (tmp_path / "model.tar.gz").write_bytes(good_package)
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(tmp_path / "package", filter="data")
    for precision in ("int8", "float32"):
        classifier = classify.open_classifier(tmp_path / "package", prefer=precision, threads=1)
        options = classifier._session.get_session_options()
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL, precision
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_top_k_orders_by_probability_then_class_id() -> None:
    values = np.array([0.2, 0.5, 0.2, 0.1], np.float32)
    assert classify.top_k(values, ["a", "b", "c", "d"], 3) == [
        ("b", pytest.approx(0.5)), ("a", pytest.approx(0.2)), ("c", pytest.approx(0.2))
    ]  # fmt: skip


def test_the_task_decides_how_a_package_runs(tmp_path: Path) -> None:
    assert runtimes.task_of({"artifacts": []}) == "pilot", "a pilot's manifest predates the field"
    assert runtimes.task_of({"task": "classification"}) == "classification"
    assert runtimes.task_of({"task": "detection"}) == "detection"
    with pytest.raises(runtimes.PilotError, match="task 'segmentation' is not one this car runs"):
        runtimes.task_of({"task": "segmentation"})
    (tmp_path / "manifest.json").write_text(
        json.dumps({"task": "segmentation", "artifacts": [{"file": "m"}]})
    )
    with pytest.raises(agent.artifacts.ArtifactError, match="segmentation"):
        agent.verify_package(tmp_path)  # refused at install, before any smoke test


def test_the_car_classifies_without_the_sdk_boto3_or_tensorflow(car_workspace, good_package, colour_photos):
    """Pull and run in an interpreter where the control plane's heavy packages cannot be imported."""
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, good_package, key="c/1/model.tar.gz")
    car = ["--root", str(tmp_path / "car")]
    registry_flags = ["--local-root", str(tmp_path / "workspace"), "--group", GROUP, "--target", TARGET]
    pulled = run_on_the_car("edge.cli", "pull", *car, *registry_flags)
    assert pulled.returncode == 0, pulled.stderr
    ran = run_on_the_car("edge.cli", "run", *car, "--no-pull", "--images", str(colour_photos), "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert "02-green.jpg: green " in ran.stdout and "classified 3 photos" in ran.stdout
    assert "HEAVY-MODULES=\n" in ran.stderr + "\n"


def test_a_photo_without_an_answer_is_skipped_counted_and_never_output() -> None:
    from edge.sources import Frame

    class Answers:
        classes, description = list(CLASSES), "stub"

        def __call__(self, image: np.ndarray) -> np.ndarray:
            if image[0, 0, 0] == 1:
                raise classify.ClassifierError("answers non-finite probabilities")
            return np.array([0.1, 0.7, 0.2], np.float32)

    class Live:
        infer, name, names_used = Answers(), "v1", ["v1"]

        def refresh(self) -> None:
            pass

    class Photos:
        description = "three photos"

        def __iter__(self):
            return iter(Frame(np.full((4, 4, 3), i, np.uint8), i, f"{i}.png") for i in range(3))

    class Collect(list):
        apply = list.append

    written = Collect()
    summary = classify.classify(Photos(), Live(), [written], k=2)
    assert (summary.photos, summary.skipped, summary.failed) == (2, 1, 1)
    assert [r.origin for r in written] == ["0.png", "2.png"]
    assert json.loads(written[0].to_json())["top"] == [
        {"class": "green", "probability": 0.7}, {"class": "blue", "probability": 0.2}
    ]  # fmt: skip
    with pytest.raises(classify.ClassifierError, match="--top-k must be 1 or more"):
        classify.classify(Photos(), Live(), [], k=0)
