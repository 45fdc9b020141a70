"""The loop in one test, on the local backend: the car drives, records (``robocar-edge record`` into a
tub v2), uploads its closed session; the new-data rule starts an execution that trains on it and
registers a new package; a person approves it; the car pulls it.

The real pilot pipeline on tiny data: its definition with defaults for a quick execution (2 epochs, one
edge target, a threshold any model passes), because the trigger starts the stored pipeline with nothing
but ``InputDataUrl``, as the snapshot function does on AWS.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edge.agent import read_state_file
from edge.cli import main as edge_main
from edge.record import TubManifest
from pipelines.cli import main
from pipelines.control import build_definition
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client
from pipelines.local.store import list_executions
from pipelines.settings import EXAMPLE_VALUES, Settings
from pipelines.synth import write_tub

BUCKET = EXAMPLE_VALUES["bucket"]
GROUP = "robocar-pilots"
TARGET = "rasp4b"
SETTINGS = Settings(**EXAMPLE_VALUES, prefix="robocar", pipeline_name="robocar-pipeline",
                    model_package_group=GROUP, endpoint_url=None)  # fmt: skip
QUICK_DEFAULTS = {"Epochs": "2", "AngleMaeThreshold": 1.0}


def record_session(tub: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The recorder's part, for real: ``robocar-edge record`` drives the synthetic car (the replayed
    tub's frames and its person's controls) into ``tub``, a donkeycar tub v2, and closes the session
    when the drive ends. Returns the session's id."""
    capsys.readouterr()
    argv = ["record", "--tub", str(tub), "--source", f"tub:{source}", "--controls", "recorded"]
    assert edge_main(argv) == 0
    assert "0 dropped" in capsys.readouterr().out
    (session,) = TubManifest.read(tub).manifest_metadata["sessions"]["all_full_ids"]
    return str(session)


def quick_definition(folder: Path) -> Path:
    definition = json.loads(build_definition(SETTINGS, [TARGET]))  # compile and register for one car
    for parameter in definition["Parameters"]:
        parameter["DefaultValue"] = QUICK_DEFAULTS.get(parameter["Name"], parameter.get("DefaultValue"))
    path = folder / "definition.json"
    path.write_text(json.dumps(definition))
    return path


def packages(workspace: Path) -> list[dict[str, Any]]:
    listed = LocalSageMakerClient(workspace).list_model_packages(
        ModelPackageGroupName=GROUP, SortBy="CreationTime", SortOrder="Ascending"
    )
    return listed["ModelPackageSummaryList"]


def installed_package(car: Path) -> str:
    state = read_state_file(car / "state.json")
    assert state is not None
    return str(state["current"]["model_package_arn"])


@pytest.mark.slow
def test_drive_record_upload_trigger_train_approve_pull(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, car, tubs = tmp_path / "ws", tmp_path / "car", tmp_path / "car-data"
    local = ["--workspace", str(workspace)]
    car_flags = ["--root", str(car), "--local-root", str(workspace), "--group", GROUP, "--target", TARGET]

    # The car's first model: the pipeline on a first tub, approved and pulled.
    write_tub(tmp_path / "first" / "day_1", frames=60, sessions=2, seed=1)
    definition = quick_definition(tmp_path)
    assert (
        main(["run", "--local", *local, "--definition", str(definition), "--data", str(tmp_path / "first")])
        == 0
    )
    (first,) = packages(workspace)
    assert main(["registry", "approve", "latest", "--group", GROUP, *local]) == 0
    assert edge_main(["pull", *car_flags]) == 0
    assert installed_package(car) == first["ModelPackageArn"]

    # Drive (the synthetic car's camera replayed through the installed pilot) and record a session.
    write_tub(tmp_path / "camera", frames=20, sessions=1, seed=5)
    assert (
        edge_main(["run", *car_flags, "--no-pull", "--source", f"tub:{tmp_path / 'camera'}", "--quiet"]) == 0
    )
    write_tub(tmp_path / "person", frames=60, sessions=1, seed=2)  # what the person drives
    session = record_session(tubs / "car", tmp_path / "person", capsys)

    # Upload: an archive named by its content under the raw prefix.
    upload = ["upload", "--tubs", str(tubs), "--root", str(car), "--local-root", str(workspace),
              "--bucket", BUCKET, "--car-id", "car-1", "--once"]  # fmt: skip
    capsys.readouterr()
    assert edge_main(upload) == 0
    assert f"queued {tubs / 'car'} session {session} -> " in capsys.readouterr().out
    raw = LocalS3Client(workspace).list_objects_v2(Bucket=BUCKET, Prefix="robocar/raw/car-1/")["Contents"]
    ((archive_key,),) = [[item["Key"] for item in raw]]
    with tarfile.open(LocalS3Client(workspace).uri_to_path(f"s3://{BUCKET}/{archive_key}")) as tar:
        catalog = tar.extractfile(f"car_{session}/catalog_0.catalog")
        assert catalog is not None and len(catalog.read().splitlines()) == 60  # the session, recorded

    # The new-data rule: one execution, which trains on the new tub and registers a second package.
    watch = ["trigger", "watch", "--once", "--settle", "0", *local]
    assert main(watch) == 0
    out = capsys.readouterr().out
    assert f"new data s3://{BUCKET}/{archive_key} -> " in out and "1 execution(s) started" in out
    triggered = list_executions(workspace, "robocar-pipeline")[0]
    assert triggered.status == "Succeeded", triggered.failure_reason
    assert (
        triggered.steps["Preprocess"].cache_hit_from is None
        and triggered.steps["Train"].cache_hit_from is None
    )
    first_version, second = packages(workspace)
    assert second["ModelApprovalStatus"] == "PendingManualApproval"

    # Uploading the same tub again sends nothing and starts nothing.
    assert edge_main(upload) == 0
    assert "0 uploaded, 0 already uploaded" in capsys.readouterr().out  # queued and sent already
    assert edge_main([*upload[:-1], "--root", str(tmp_path / "car-with-a-wiped-queue"), "--once"]) == 0
    assert "1 already uploaded" in capsys.readouterr().out
    assert main(watch) == 0
    assert "0 execution(s) started" in capsys.readouterr().out
    assert len(list_executions(workspace, "robocar-pipeline")) == 2

    # Approve; the car pulls the new model.
    assert main(["registry", "approve", "latest", "--group", GROUP, *local]) == 0
    assert edge_main(["pull", *car_flags]) == 0
    assert installed_package(car) == second["ModelPackageArn"] != first_version["ModelPackageArn"]
