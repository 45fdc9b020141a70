"""processing/compile_classifier.py in the MXNet environment: a trained classifier as ONNX float32 and int8.

The suite's trained classifier (``trained_classifier``: one fine-tuned epoch from ImageNet weights on 128
photos at 64 px, so accuracy means something; 90 test photos), compiled twice for two targets; the
environment comes from the cache the classifier training test uses.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from mxnet_fixtures import CLASSES, REPO, run_in_mxnet

TARGETS = ("jetson_nano", "rasp4b")
FLOAT, INT8, PIXELS = "classifier-float32.onnx", "classifier-int8.onnx", "classifier-int8-pixels.onnx"
FLOAT_INPUT = {"name": "data", "shape": [1, 3, 64, 64], "dtype": "float32"}
# (pixel - 127) / 128 and a stride-2 first convolution: the int8 model also takes 2x2 pixel blocks
PIXEL_INPUT = {"name": "pixels", "dtype": "uint8", "layout": "NHWC", "block": 2, "shape": [1, 32, 32, 12]}


def compile_into(python: str, root: Path, out: Path) -> subprocess.CompletedProcess:
    args = [str(REPO / "processing" / "compile_classifier.py"), "--model", str(root / "model")]
    args += ["--train", str(root / "train"), "--test", str(root / "test"), "--output", str(out)]
    return run_in_mxnet(python, [*args, "--edge-targets", ",".join(TARGETS), "--mode", "local"])


@pytest.fixture(scope="module")
def compiled(mxnet_python: str, trained_classifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    result = compile_into(mxnet_python, trained_classifier, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def manifest_of(package: Path) -> dict:
    with tarfile.open(package) as tar:
        assert sorted(tar.getnames()) == sorted(["manifest.json", FLOAT, INT8, PIXELS])
        return json.load(tar.extractfile("manifest.json"))


@pytest.mark.slow
def test_compiled_json_and_manifests_follow_the_contract(compiled: Path, trained_classifier: Path) -> None:
    listing = json.loads((compiled / "compiled.json").read_text())
    assert listing["task"] == "classification" and listing["mode"] == "local"
    assert (listing["onnx"]["opset"], listing["onnx"]["ir_version"]) == (13, 7)
    source = hashlib.sha256((trained_classifier / "model" / "model.tar.gz").read_bytes()).hexdigest()
    spec = json.loads((trained_classifier / "exported" / "classifier-spec.json").read_text())
    assert set(listing["targets"]) == set(TARGETS)
    for target, entry in listing["targets"].items():
        package = compiled / entry["uri"]
        assert entry["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
        assert entry["size_bytes"] == package.stat().st_size
        assert entry["runtime"] == "onnxruntime" and entry["runtimes"] == ["onnxruntime"]
        assert entry["artifacts"] == [PIXELS, INT8, FLOAT] and entry["manifest"] == f"{target}/manifest.json"
        manifest = manifest_of(package)
        assert (compiled / target / "manifest.json").read_text() == json.dumps(
            manifest, indent=2, sort_keys=True
        ) + "\n"
        assert manifest["format"] == "robocar-edge/1" and manifest["task"] == "classification"
        assert manifest["target"] == target and manifest["classes"] == CLASSES
        assert manifest["input_transform"] == spec["input"]
        assert manifest["source_model"] == {"sha256": source}
        assert manifest["tolerance"] == {"accuracy_points": 1.0}
        artifacts = {a["file"]: a for a in manifest["artifacts"]}
        for name, artifact in artifacts.items():
            assert artifact["runtime"] == "onnxruntime"
            assert artifact["input"] == (PIXEL_INPUT if name == PIXELS else FLOAT_INPUT)
            assert artifact["outputs"] == [
                {"name": "softmax", "index": 0, "dtype": "float32", "meaning": "probabilities"}
            ]
            delta = artifact["accuracy_delta"]
            assert delta["images"] == 90
            assert delta["points"] == pytest.approx(100 * (delta["reference_accuracy"] - delta["accuracy"]))
            assert artifact["within_tolerance"] == (delta["points"] <= 1.0), name
        assert artifacts[FLOAT]["precision"] == "float32" and artifacts[INT8]["precision"] == "int8"
        # float32 is MXNet's function: the same top-1 everywhere, probabilities within 1e-4.
        assert artifacts[FLOAT]["accuracy_delta"]["agreement"] == 1.0
        assert artifacts[FLOAT]["accuracy_delta"]["max_abs_difference"] < 1e-4
        assert artifacts[INT8]["accuracy_delta"]["agreement"] >= 0.9
        assert artifacts[FLOAT]["accuracy_delta"]["reference_accuracy"] >= 0.8  # fine-tuned, not chance
        # the int8 model fed pixels answers what the int8 model answers (checked bit for bit at compile)
        assert artifacts[PIXELS]["accuracy_delta"] == artifacts[INT8]["accuracy_delta"]
        assert "fed uint8 2 x 2 pixel blocks" in artifacts[PIXELS]["quantization_scheme"]
        expected_default = PIXELS if artifacts[INT8]["within_tolerance"] else FLOAT
        assert manifest["default"] == entry["default"] == expected_default
        chosen = artifacts[expected_default]
        for key in ("runtime", "file", "input", "outputs", "sha256", "size_bytes", "accuracy_delta"):
            assert manifest[key] == chosen[key], key


@pytest.mark.slow
def test_onnx_runtime_runs_the_export_as_mxnet_does(
    mxnet_python: str, compiled: Path, trained_classifier: Path
) -> None:
    """Checked here, not only by the step's own numbers: opset, graph inputs, checker, ORT == MXNet."""
    code = (
        "import json, sys, tarfile, hashlib, io\n"
        "import numpy as np, onnx, onnxruntime as ort, mxnet as mx\n"
        "from pathlib import Path\n"
        "from edge.photos import prepare, prepare_for\n"
        "from training.classifier import load_exported, read_image_list\n"
        "net, transform, _ = load_exported(Path(sys.argv[2]))\n"
        "photos = [path for _, path in read_image_list(Path(sys.argv[3]))[:20]]\n"
        "x = np.concatenate([prepare(path, transform) for path in photos])\n"
        "facts = {}\n"
        "with tarfile.open(sys.argv[1]) as tar:\n"
        "    manifest = json.load(tar.extractfile('manifest.json'))\n"
        "    for artifact in manifest['artifacts']:\n"
        "        raw = tar.extractfile(artifact['file']).read()\n"
        "        assert hashlib.sha256(raw).hexdigest() == artifact['sha256']\n"
        "        model = onnx.load_from_string(raw)\n"
        "        onnx.checker.check_model(model, full_check=True)\n"
        "        s = ort.InferenceSession(raw, providers=['CPUExecutionProvider'])\n"
        "        fed = np.concatenate([prepare_for(path, transform, artifact['input']) for path in photos])\n"
        "        p = np.concatenate([s.run(None, {s.get_inputs()[0].name: v[None]})[0] for v in fed])\n"
        "        q = net(mx.nd.array(x)).asnumpy()\n"
        "        sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}\n"
        "        ops = [n.op_type for n in model.graph.node]\n"
        "        facts[artifact['file']] = {'opset': [(o.domain, o.version) for o in model.opset_import],\n"
        "            'inputs': [i.name for i in model.graph.input], 'diff': float(np.abs(p - q).max()),\n"
        "            'agree': float((p.argmax(1) == q.argmax(1)).mean()),\n"
        "            'ops': {op: ops.count(op) for op in set(ops)},\n"
        "            'per_channel': sum(sizes[n.input[4]] > 1 for n in model.graph.node\n"
        "                               if n.op_type == 'QLinearConv')}\n"
        "print(json.dumps(facts))\n"
    )
    package = compiled / TARGETS[0] / "model.tar.gz"
    result = run_in_mxnet(
        mxnet_python,
        ["-c", code, str(package), str(trained_classifier / "exported"), str(trained_classifier / "test")],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts[FLOAT]["opset"] == [["", 13]]
    assert facts[FLOAT]["inputs"] == ["data"]  # the weights are initializers only
    assert facts[FLOAT]["diff"] < 1e-4 and facts[FLOAT]["agree"] == 1.0
    assert facts[INT8]["inputs"] == ["data"] and facts[INT8]["agree"] >= 0.9
    # The int8 scheme chosen by measurement (docs/classifier.md "Compile"): BatchNorm folded into each
    # convolution (2.4x the unfolded speed), QOperator (1.4x QDQ), per-channel weights (per-tensor lost
    # 7.7 points): every convolution of the export is one QLinearConv with a scale per output channel.
    convs = facts[FLOAT]["ops"]["Conv"]
    assert "BatchNormalization" in facts[FLOAT]["ops"]
    assert facts[INT8]["ops"]["QLinearConv"] == facts[INT8]["per_channel"] == convs
    assert "Conv" not in facts[INT8]["ops"] and "BatchNormalization" not in facts[INT8]["ops"]
    # fed pixel blocks, the same int8 network and the same answers
    assert facts[PIXELS]["inputs"] == ["pixels"]  # the input's QuantizeLinear gone (the head's stays)
    assert facts[PIXELS]["ops"].get("QuantizeLinear", 0) == facts[INT8]["ops"]["QuantizeLinear"] - 1
    assert facts[PIXELS]["ops"]["QLinearConv"] == convs
    assert (facts[PIXELS]["diff"], facts[PIXELS]["agree"]) == (facts[INT8]["diff"], facts[INT8]["agree"])


@pytest.mark.slow
def test_a_rerun_writes_the_same_package_bytes(
    mxnet_python: str, compiled: Path, trained_classifier: Path, tmp_path: Path
) -> None:
    again = compile_into(mxnet_python, trained_classifier, tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    for target in TARGETS:
        first = (compiled / target / "model.tar.gz").read_bytes()
        assert (tmp_path / "again" / target / "model.tar.gz").read_bytes() == first


@pytest.mark.slow
def test_a_model_without_its_spec_is_refused_in_one_line(mxnet_python: str, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "image-classification-symbol.json").write_text("{}")
    with tarfile.open(tmp_path / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model" / "image-classification-symbol.json", arcname="symbol.json")
    args = [str(REPO / "processing" / "compile_classifier.py"), "--model", str(tmp_path / "model")]
    result = run_in_mxnet(mxnet_python, [*args, "--output", str(tmp_path / "out"), "--mode", "local"])
    assert result.returncode == 2, result.stderr
    assert "classifier-spec.json" in result.stderr and "Traceback" not in result.stderr
