"""``robocar edge`` end to end against the local registry (edge.aws.clients with a local root)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from edge_fixtures import GROUP, SAMPLE_TUBS, TARGET, onnx_pilot_package, pull, register

from edge import artifacts
from edge.cli import main as edge_main
from pipelines.cli import main as robocar_main

TUB_V2 = SAMPLE_TUBS / "tub_v2"


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "car" / "state.json").read_text())


def test_pull_run_status_and_refusals(car_workspace, capsys):
    tmp_path, aws = car_workspace
    first = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    assert capsys.readouterr().out.startswith("installed: now driving with " + first)

    jsonl, summary = tmp_path / "drive.jsonl", tmp_path / "summary.json"
    code = edge_main(
        ["run", "--root", str(tmp_path / "car"), "--no-pull", "--source", f"tub:{TUB_V2}",
         "--max-frames", "7", "--jsonl", str(jsonl), "--summary-json", str(summary),
         "--actuator", "pca9685-stub"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    assert "drove 7 frames" in out.out and "fps" in out.out
    assert "frames 1" in out.err, "the live line (non-TTY: periodic lines) goes to stderr"
    assert len(jsonl.read_text().splitlines()) == 7
    report = json.loads(summary.read_text())
    assert report["frames"] == 7 and report["models"] == [state(tmp_path)["current"]["folder"]]

    # a package whose object was replaced after registration: refused, v1 kept
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v2"), key="m/2/model.tar.gz")
    aws.s3.put_object(Bucket="robocar-artifacts", Key="m/2/model.tar.gz", Body=onnx_pilot_package("evil"))
    assert pull(tmp_path) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused: ") and "SHA-256 mismatch" in out and "tried again" in out
    assert state(tmp_path)["current"]["model_package_arn"] == first

    # a package whose model answers NaN: refused by the smoke test, v1 kept, not retried
    register(
        aws.sagemaker, aws.s3, onnx_pilot_package("nan", angle_bias=float("nan")), key="m/3/model.tar.gz"
    )
    assert pull(tmp_path) == 1
    assert "not finite" in capsys.readouterr().out
    assert state(tmp_path)["current"]["model_package_arn"] == first
    assert len(state(tmp_path)["rejected"]) == 1

    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 0
    status = capsys.readouterr().out
    assert first in status and "rejected  1 package(s)" in status


def test_rollback_through_robocar_entry_point(car_workspace, capsys):
    tmp_path, aws = car_workspace
    first = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    pull(tmp_path)
    assert robocar_main(["edge", "rollback", "--root", str(tmp_path / "car")]) == 2
    assert "no previous model" in capsys.readouterr().err
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v2"), key="m/2/model.tar.gz")
    assert pull(tmp_path) == 0
    assert robocar_main(["edge", "rollback", "--root", str(tmp_path / "car"), "--reason", "swerves"]) == 0
    assert state(tmp_path)["current"]["model_package_arn"] == first
    assert pull(tmp_path) == 0, "the rolled-back package stays rejected; v1 is up to date"
    assert "up-to-date" in capsys.readouterr().out


def test_install_archive_delivered_by_greengrass(tmp_path, capsys):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(onnx_pilot_package("gg"))
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-pilots/3"
    common = ["pull", "--root", str(tmp_path / "car"), "--archive", str(archive), "--model-package-arn", arn]
    assert edge_main([*common, "--sha256", "0" * 64]) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().out
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert edge_main([*common, "--sha256", digest]) == 0
    assert state(tmp_path)["current"]["version"] == 3
    capsys.readouterr()
    assert edge_main([*common, "--sha256", digest]) == 0, "a component restart leaves the model alone"
    assert capsys.readouterr().out.startswith("up-to-date")
    newer = tmp_path / "newer.tar.gz"
    newer.write_bytes(onnx_pilot_package("newer"))
    newer_flags = ["--archive", str(newer), "--model-package-arn", arn[:-1] + "4"]
    newer_flags += ["--sha256", hashlib.sha256(newer.read_bytes()).hexdigest()]
    car = ["--root", str(tmp_path / "car")]
    assert edge_main(["pull", *car, *newer_flags]) == 0
    assert edge_main(["rollback", *car]) == 0
    assert state(tmp_path)["current"]["version"] == 3
    capsys.readouterr()
    assert edge_main(["pull", *car, *newer_flags]) == 1, "a rolled-back package is not reinstalled"
    assert "was rejected before" in capsys.readouterr().out
    assert state(tmp_path)["current"]["version"] == 3


def test_no_network_keeps_driving(car_workspace, monkeypatch, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    pull(tmp_path)
    capsys.readouterr()
    with socket.socket() as probe:  # a loopback port with nothing listening: connection refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    code = edge_main(
        ["run", "--root", str(tmp_path / "car"), "--endpoint-url", dead, "--region", "us-east-1",
         "--source", str(TUB_V2), "--max-frames", "3", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "drove 3 frames" in capsys.readouterr().out
    assert state(tmp_path)["last_check"]["outcome"] == "offline"


def test_clear_errors(tmp_path, capsys):
    assert edge_main(["run", "--root", str(tmp_path / "car"), "--no-pull", "--source", str(TUB_V2)]) == 2
    assert "no model at" in capsys.readouterr().err
    assert edge_main(["status", "--root", str(tmp_path / "nothing")]) == 1
    assert "nothing pulled yet" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert edge_main(["run", "--model", str(empty), "--source", str(TUB_V2)]) == 2
    assert "not a compiled pilot package" in capsys.readouterr().err
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(onnx_pilot_package("ok"))
    artifacts.safe_extract(archive, tmp_path / "model")
    assert edge_main(["run", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "nope")]) == 2
    assert "robocar edge: error: frame source" in capsys.readouterr().err


def test_registry_choice_defaults_to_the_local_workspace(monkeypatch, tmp_path, capsys):
    from edge.cli import build_parser, registry_location
    from edge.settings import SettingsError

    monkeypatch.chdir(tmp_path)  # no robocar.toml here
    for name in ("ROBOCAR_LOCAL_ROOT", "ROBOCAR_BACKEND", "ROBOCAR_EDGE_REGISTRY", "ROBOCAR_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)

    def where(*flags: str):
        return registry_location(build_parser().parse_args(["pull", *flags]))

    assert where() == Path(".robocar")
    assert where("--workspace", "/ws") == Path("/ws") == where("--local-root", "/ws")
    assert where("--aws") is None and where("--endpoint-url", "http://127.0.0.1:5000") is None
    assert where("--backend", "aws") is None and where("--local") == Path(".robocar")
    with pytest.raises(
        SettingsError, match="--workspace selects the local workspace but --backend aws selects AWS"
    ):
        where("--aws", "--workspace", "/ws")
    monkeypatch.setenv("ROBOCAR_EDGE_REGISTRY", "aws")  # what the Greengrass recipe sets on cars
    assert where() is None
    assert where("--workspace", "/ws") == Path("/ws"), "a flag beats the environment"
    monkeypatch.setenv("ROBOCAR_LOCAL_ROOT", "/env-ws")
    with pytest.raises(
        SettingsError, match=r"ROBOCAR_LOCAL_ROOT selects .*\$ROBOCAR_EDGE_REGISTRY aws selects AWS"
    ):
        where()
    monkeypatch.delenv("ROBOCAR_EDGE_REGISTRY")
    assert where() == Path("/env-ws")
    with pytest.raises(SettingsError, match="unset it to use AWS"):
        where("--aws")
    monkeypatch.delenv("ROBOCAR_LOCAL_ROOT")
    monkeypatch.setenv("ROBOCAR_BACKEND", "cloud")
    assert edge_main(["pull", "--root", "/nonexistent/car"]) == 2
    assert "$ROBOCAR_BACKEND must be 'local' or 'aws'" in capsys.readouterr().err


def test_corrupt_state_does_not_stop_the_car(car_workspace, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    (tmp_path / "car" / "state.json").write_text("{not json")
    assert pull(tmp_path) == 2
    assert "move it aside" in capsys.readouterr().err
    code = edge_main(
        ["run", "--root", str(tmp_path / "car"), "--local-root", str(tmp_path / "workspace"),
         "--source", str(TUB_V2), "--max-frames", "2", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "drove 2 frames" in capsys.readouterr().out


def test_new_car_waits_for_its_first_model_while_polling(car_workspace, capsys, caplog):
    import threading

    tmp_path, aws = car_workspace
    approve_later = threading.Timer(
        0.5, lambda: register(aws.sagemaker, aws.s3, onnx_pilot_package("first"), key="m/1/model.tar.gz")
    )
    approve_later.start()
    code = edge_main(
        ["run", "--root", str(tmp_path / "car"), "--local-root", str(tmp_path / "workspace"),
         "--group", GROUP, "--target", TARGET, "--interval", "0.2", "--source", str(TUB_V2),
         "--max-frames", "3", "--quiet"]
    )  # fmt: skip
    approve_later.join()
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "drove 3 frames" in out.out
    assert "waiting for the first approved model" in caplog.text


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_end_the_drive_with_a_summary(tmp_path, signal_name):
    import signal
    import subprocess
    import sys
    import time

    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(onnx_pilot_package("sig"))
    artifacts.safe_extract(archive, tmp_path / "model")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--model", str(tmp_path / "model"), "--source", str(TUB_V2),
         "--rate", "20", "--actuator", "pca9685-stub"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    line = ""
    while "frames" not in line and time.monotonic() < deadline:  # driving: the first live line is out
        line = process.stderr.readline()
    process.send_signal(getattr(signal, signal_name))
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    frames_driven = int(out.split("drove ")[1].split(" frames")[0])
    assert 0 < frames_driven < 48, "stopped early, with the summary of what was driven"


def test_signal_handlers_are_restored_after_a_run(tmp_path):
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    edge_main(["run", "--model", str(tmp_path / "missing"), "--source", str(TUB_V2)])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
