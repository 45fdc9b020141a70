"""The whole device path on a really compiled pilot: compile -> register -> robocar edge pull -> run.

A tiny donkeycar pilot is compiled locally by processing/compile.py (LiteRT and ONNX, float32 and int8),
its rasp4b package registered in the local registry as the Register step records it, then the agent
verifies, unpacks and smoke-tests it, and the drive loop replays a real donkeycar tub with the package's
default artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from compile_fixtures import pilot, write_model_dir, write_splits

from edge.cli import main as edge_main
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from processing import compile as compile_step

TUB_V2 = Path(__file__).resolve().parents[1] / "data" / "samples" / "tubs" / "tub_v2"
GROUP, TARGET, BUCKET = "robocar-pilots", "rasp4b", "robocar-data"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compile")
    splits = write_splits(root)
    model_dir = write_model_dir(root, pilot(splits["train"]["images"]))
    out = root / "out"
    argv = ["--model", str(model_dir), "--train", str(root / "splits" / "train")]
    argv += [
        "--test",
        str(root / "splits" / "test"),
        "--output",
        str(out),
        "--targets",
        TARGET,
        "--mode",
        "local",
    ]
    assert compile_step.main(argv) == 0
    return out


def register_compiled(workspace: Path, compiled: Path) -> str:
    """What the Register step writes (through the control plane's local clients): the artifact's URI,
    SHA-256 and runtime in the package's metadata."""
    s3, sagemaker = LocalS3Client(workspace), LocalSageMakerClient(workspace)
    entry = json.loads((compiled / "compiled.json").read_text())["targets"][TARGET]
    key = f"robocar/compiled/{TARGET}/model.tar.gz"
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key, Body=(compiled / TARGET / "model.tar.gz").read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    container = {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/robocar-inference:1"}
    response = sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        InferenceSpecification={
            "Containers": [{**container, "ModelDataUrl": f"s3://{BUCKET}/robocar/model/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            f"edge:{TARGET}:uri": f"s3://{BUCKET}/{key}",
            f"edge:{TARGET}:sha256": entry["sha256"],
            f"edge:{TARGET}:runtime": entry["runtime"],
        },
        ModelApprovalStatus="Approved",
    )
    return response["ModelPackageArn"]


def test_pull_and_drive_with_the_compiled_default_artifact(compiled, tmp_path, capsys):
    workspace = tmp_path / "workspace"
    arn = register_compiled(workspace, compiled)
    car = ["--root", str(tmp_path / "car")]
    registry = ["--local-root", str(workspace), "--group", GROUP, "--target", TARGET]

    assert edge_main(["pull", *car, *registry]) == 0
    assert capsys.readouterr().out.startswith(f"installed: now driving with {arn}")
    state = json.loads((tmp_path / "car" / "state.json").read_text())
    smoke = state["current"]["smoke_test"]
    assert -1 <= smoke["angle"] <= 1 and -1 <= smoke["throttle"] <= 1

    manifest = json.loads((compiled / TARGET / "manifest.json").read_text())
    jsonl = tmp_path / "drive.jsonl"
    code = edge_main(
        ["run", *car, *registry, "--no-pull", "--source", str(TUB_V2), "--jsonl", str(jsonl), "--quiet"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "drove 48 frames" in out.out
    commands = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(commands) == 48
    assert all(-1 <= c["angle"] <= 1 and -1 <= c["throttle"] <= 1 for c in commands)
    assert len({round(c["angle"], 4) for c in commands}) > 1, "a real pilot answers differently per frame"
    chosen = next(a for a in manifest["artifacts"] if a["file"] == smoke["artifact"])
    assert f"({chosen['file']} on {chosen['runtime']})" in out.out, "drove with the artifact measured fastest"
    measured = {m["file"] for m in smoke["measured"] if m["passed"]}
    assert measured == {a["file"] for a in manifest["artifacts"]}, "every artifact was measured at install"
