"""The device agent against a moto registry: install, refuse tampering, roll back, survive no network."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from edge_fixtures import GROUP, TARGET, fake_model, register, registry, sha256
from moto import mock_aws

from edge import agent as agent_mod
from edge.agent import Agent, SmokeTestError, candidate_from_package


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        registry(sagemaker, s3)
        yield sagemaker, s3


class RecordingSmoke:
    """Stands in for the runtime: passes unless the model's manifest tag is in ``failing``."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.seen: list[str] = []

    def __call__(self, model_dir: Path) -> dict[str, float]:
        tag = json.loads((Path(model_dir) / "manifest.json").read_text())["tag"]
        self.seen.append(tag)
        if tag in self.failing:
            raise SmokeTestError(f"model {tag} gives NaN")
        return {"angle": 0.0, "throttle": 0.1, "latency_ms": 1.0}


def make_agent(tmp_path: Path, aws, smoke) -> Agent:
    sagemaker, s3 = aws
    return Agent(tmp_path / "car", group=GROUP, target=TARGET, sagemaker=sagemaker, s3=s3, smoke=smoke)


def current_tag(agent: Agent) -> str | None:
    folder = agent.current_dir()
    return json.loads((folder / "manifest.json").read_text())["tag"] if folder else None


def test_installs_newest_approved_and_keeps_previous(tmp_path, aws):
    sagemaker, s3 = aws
    smoke = RecordingSmoke()
    car = make_agent(tmp_path, aws, smoke)
    register(sagemaker, s3, fake_model("v1"), key="a/1.tar.gz")
    assert car.check().outcome == "installed"
    assert current_tag(car) == "v1"
    register(sagemaker, s3, fake_model("v2"), key="a/2.tar.gz")
    register(sagemaker, s3, fake_model("pending"), key="a/3.tar.gz", approved=False)
    result = car.check()
    assert result.outcome == "installed"
    assert current_tag(car) == "v2"
    state = json.loads((car.root / "state.json").read_text())
    assert state["current"]["version"] == 2
    assert (car.models / state["previous"]).is_dir()
    assert car.check().outcome == "up-to-date"
    assert not list(car.downloads.iterdir()), "verified archives are removed once unpacked"


def test_tampered_artifact_is_refused_and_old_model_kept(tmp_path, aws):
    sagemaker, s3 = aws
    car = make_agent(tmp_path, aws, RecordingSmoke())
    register(sagemaker, s3, fake_model("good"), key="a/1.tar.gz")
    car.check()
    genuine = fake_model("v2")
    register(sagemaker, s3, genuine, key="a/2.tar.gz")
    s3.put_object(
        Bucket="robocar-artifacts", Key="a/2.tar.gz", Body=fake_model("evil")
    )  # swapped after approval
    result = car.check()
    assert result.outcome == "refused"
    assert "SHA-256 mismatch" in result.detail and sha256(genuine) in result.detail
    assert current_tag(car) == "good"
    assert not any(p.name.startswith(".staging") for p in car.models.iterdir())


def test_a_package_reads_as_its_targets_metadata(tmp_path, aws):
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/4"
    description = {
        "ModelPackageArn": arn,
        "CustomerMetadataProperties": {
            "edge:rasp4b:uri": "s3://b/k/model.tar.gz",
            "edge:rasp4b:sha256": "A" * 64,
            "edge:rasp4b:runtime": "dlr",
        },
    }
    candidate = candidate_from_package(description, "rasp4b")
    assert candidate == agent_mod.Candidate(arn, 4, "rasp4b", "s3://b/k/model.tar.gz", "a" * 64, "dlr")
    assert candidate_from_package(description, "jetson_nano") is None  # no artifact for that target


def test_a_package_with_a_uri_but_no_digest_is_refused(tmp_path, aws):
    description = {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/4",
        "CustomerMetadataProperties": {"edge:rasp4b:uri": "s3://b/k/model.tar.gz"},
    }
    with pytest.raises(agent_mod.artifacts.ArtifactError, match="no artifact URI or no SHA-256"):
        candidate_from_package(description, "rasp4b")


def test_model_failing_smoke_test_is_rejected_and_not_retried(tmp_path, aws):
    sagemaker, s3 = aws
    smoke = RecordingSmoke()
    car = make_agent(tmp_path, aws, smoke)
    register(sagemaker, s3, fake_model("good"), key="a/1.tar.gz")
    car.check()
    smoke.failing.add("broken")
    register(sagemaker, s3, fake_model("broken"), key="a/2.tar.gz")
    result = car.check()
    assert result.outcome == "refused" and "gives NaN" in result.detail
    assert current_tag(car) == "good"
    assert car.check().outcome == "up-to-date"  # the rejected package is skipped, the good one stays
    assert smoke.seen.count("broken") == 1


def test_model_failing_after_swap_is_rolled_back(tmp_path, aws):
    sagemaker, s3 = aws
    calls: list[Path] = []

    def smoke_fails_through_current(model_dir: Path) -> dict[str, float]:
        calls.append(Path(model_dir))
        tag = json.loads((Path(model_dir) / "manifest.json").read_text())["tag"]
        if tag == "flaky" and Path(model_dir).name == "current":
            raise SmokeTestError("runtime crashed on load through current")
        return {"angle": 0.0, "throttle": 0.0, "latency_ms": 1.0}

    car = make_agent(tmp_path, aws, smoke_fails_through_current)
    register(sagemaker, s3, fake_model("good"), key="a/1.tar.gz")
    car.check()
    register(sagemaker, s3, fake_model("flaky"), key="a/2.tar.gz")
    result = car.check()
    assert result.outcome == "rolled-back"
    assert current_tag(car) == "good"
    assert [p.name for p in car.models.iterdir() if not p.name.startswith("v1-")] == []


def test_manual_rollback_returns_to_previous(tmp_path, aws):
    sagemaker, s3 = aws
    car = make_agent(tmp_path, aws, RecordingSmoke())
    register(sagemaker, s3, fake_model("v1"), key="a/1.tar.gz")
    car.check()
    register(sagemaker, s3, fake_model("v2"), key="a/2.tar.gz")
    car.check()
    assert car.rollback("driver reports swerving").outcome == "rolled-back"
    assert current_tag(car) == "v1"
    assert car.check().outcome == "up-to-date", "the rolled-back package is not reinstalled"
    with pytest.raises(agent_mod.AgentError, match="no previous model"):
        car.rollback()


class Offline:
    """A client whose every call fails as boto3 does without a network."""

    def __getattr__(self, name):
        def fail(**kwargs):
            raise EndpointConnectionError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")

        return fail


def test_no_network_keeps_last_good_model(tmp_path, aws):
    sagemaker, s3 = aws
    car = make_agent(tmp_path, aws, RecordingSmoke())
    register(sagemaker, s3, fake_model("good"), key="a/1.tar.gz")
    car.check()
    offline = Agent(
        car.root, group=GROUP, target=TARGET, sagemaker=Offline(), s3=Offline(), smoke=RecordingSmoke()
    )
    result = offline.check()
    assert result.outcome == "offline"
    assert "Could not connect" in result.detail
    assert current_tag(offline) == "good" and result.model == car.current_name()
    state = json.loads((car.root / "state.json").read_text())
    assert state["last_check"]["outcome"] == "offline"
    # registry reachable but the artifact download fails: still offline, still driving
    register(sagemaker, s3, fake_model("v2"), key="a/2.tar.gz")
    half = Agent(
        car.root, group=GROUP, target=TARGET, sagemaker=sagemaker, s3=Offline(), smoke=RecordingSmoke()
    )
    assert half.check().outcome == "offline"
    assert current_tag(half) == "good"


def test_unsafe_archive_is_refused(tmp_path, aws):
    sagemaker, s3 = aws
    from edge_fixtures import tar_bytes

    car = make_agent(tmp_path, aws, RecordingSmoke())
    register(sagemaker, s3, fake_model("good"), key="a/1.tar.gz")
    car.check()
    register(sagemaker, s3, tar_bytes({"../escape.txt": b"x"}), key="a/2.tar.gz")
    result = car.check()
    assert result.outcome == "refused" and "'..'" in result.detail
    assert current_tag(car) == "good"
    assert not (car.models.parent / "escape.txt").exists()


def test_no_approved_package(tmp_path, aws):
    car = make_agent(tmp_path, aws, RecordingSmoke())
    result = car.check()
    assert result.outcome == "none-approved" and result.model is None


def test_poll_keeps_checking_after_a_failed_check():
    calls: list[int] = []

    class Flaky:
        def check(self):
            calls.append(1)
            if len(calls) == 1:
                raise OSError("No space left on device")

    agent_mod.poll(Flaky(), 0.0, stop=lambda: len(calls) >= 3)
    assert len(calls) == 3


def test_registry_answering_an_error_is_not_called_offline(tmp_path):
    from botocore.exceptions import ClientError

    class Denied:
        def list_model_packages(self, **kwargs):
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListModelPackages"
            )

    car = Agent(tmp_path / "car", group=GROUP, target=TARGET, sagemaker=Denied(), s3=None)
    result = car.check()
    assert result.outcome == "registry-error"
    assert "the registry answered AccessDeniedException" in result.detail and result.model is None


# ---- install-time choice: the car measures each artifact it can run and drives the fastest that passes


class FakeClock:
    """The injected timer: only a pilot's run moves it, by that pilot's cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostlyPilot:
    """A runtime pilot that takes ``cost`` seconds of the fake clock per frame and answers ``angle``."""

    runtime = "onnxruntime"

    def __init__(self, clock: FakeClock, cost: float, angle: float) -> None:
        self.clock, self.cost, self.angle = clock, cost, angle

    def run(self, frame):
        self.clock.now += self.cost
        return self.angle, 0.2

    def run_heads(self, frames_batch):
        return [[[self.angle]], [[0.2]]]


# file -> (seconds per frame, angle): b.bin is the fastest but answers NaN, so c.bin must win
MULTI = {"a.bin": (0.004, 0.1), "b.bin": (0.001, float("nan")), "c.bin": (0.002, -0.1)}


def multi_artifact_model(tag: str) -> bytes:
    from edge_fixtures import frame_contract, tar_bytes

    from edge.frames import FrameSpec

    files = {name: f"{tag}:{name}".encode() for name in MULTI}
    listed = [
        {"file": name, "runtime": "onnxruntime", "sha256": sha256(data), "size_bytes": len(data)}
        for name, data in files.items()
    ]
    manifest = {"tag": tag, "default": "a.bin", "artifacts": listed, **frame_contract(FrameSpec().to_dict())}
    return tar_bytes({"manifest.json": json.dumps(manifest).encode(), **files})


@pytest.fixture
def costly_pilots(monkeypatch):
    """drive.open_pilot answering a CostlyPilot per file; returns the clock and the files opened."""
    from edge import drive, frames

    clock, opened = FakeClock(), []

    def open_pilot(path, prefer=None):
        opened.append(prefer)
        cost, angle = MULTI[prefer]
        return drive.LoadedPilot(CostlyPilot(clock, cost, angle), frames.FrameSpec(), prefer, "linear")

    monkeypatch.setattr(drive, "open_pilot", open_pilot)
    return clock, opened


def test_smoke_test_chooses_the_fastest_passing_artifact_within_the_budget(tmp_path, costly_pilots):
    clock, _ = costly_pilots
    agent_mod.artifacts.safe_extract(_archive(tmp_path, multi_artifact_model("m")), tmp_path / "m")
    budget = agent_mod.MeasureBudget(seconds=0.1, frames=40)
    result = agent_mod.smoke_test(tmp_path / "m", budget=budget, clock=clock)
    assert result["artifact"] == "c.bin", "b.bin is faster but fails; a.bin passes but is slower"
    by_file = {m["file"]: m for m in result["measured"]}
    assert by_file["c.bin"]["fps"] == pytest.approx(500.0) and by_file["a.bin"]["fps"] == pytest.approx(250.0)
    assert by_file["c.bin"]["frames"] == 40, "the frame limit stops a fast pilot"
    assert by_file["a.bin"]["frames"] == 25, "the time limit stops a slow one (25 x 4 ms = 0.1 s)"
    assert not by_file["b.bin"]["passed"] and "not finite" in by_file["b.bin"]["error"]
    assert "fps" not in by_file["b.bin"], "a failing artifact is not timed"
    assert result["angle"] == pytest.approx(-0.1), "the smoke figures are the chosen artifact's"
    assert "500 fps" in result["reason"] and "b.bin" in result["reason"]


def test_smoke_test_fails_when_no_artifact_passes(tmp_path, monkeypatch, costly_pilots):
    monkeypatch.setitem(MULTI, "a.bin", (0.004, float("nan")))
    monkeypatch.setitem(MULTI, "c.bin", (0.002, 9.0))
    agent_mod.artifacts.safe_extract(_archive(tmp_path, multi_artifact_model("m")), tmp_path / "m")
    with pytest.raises(SmokeTestError, match="no artifact passes: a.bin: .*not finite.*c.bin: .*far outside"):
        agent_mod.smoke_test(tmp_path / "m", clock=costly_pilots[0])


def _archive(tmp_path: Path, data: bytes) -> Path:
    archive = tmp_path / "package.tar.gz"
    archive.write_bytes(data)
    return archive


def test_the_car_drives_its_measured_choice_and_status_shows_the_figures(
    tmp_path, aws, costly_pilots, capsys
):
    import functools

    from edge import runtimes
    from edge.cli import main as edge_main

    sagemaker, s3 = aws
    clock, opened = costly_pilots
    car = make_agent(tmp_path, aws, functools.partial(agent_mod.smoke_test, clock=clock))
    package = multi_artifact_model("v1")
    register(sagemaker, s3, package, key="a/1.tar.gz")
    assert car.check().outcome == "installed"
    assert opened == ["a.bin", "b.bin", "c.bin", "c.bin"], "measured once, then checked through current"
    assert runtimes.read_choice(car.current_link) == "c.bin"
    manifest = runtimes.read_manifest(car.current_link)
    chosen = runtimes.choose_artifact(manifest, chosen=runtimes.read_choice(car.current_link))
    assert chosen["file"] == "c.bin", "the drive loop opens the measured choice, not the default a.bin"

    state = json.loads((car.root / "state.json").read_text())
    assert state["current"]["smoke_test"]["artifact"] == "c.bin"
    assert edge_main(["status", "--root", str(car.root)]) == 0
    out = capsys.readouterr().out
    assert "artifact  c.bin: fastest passing here: 500 fps (vs a.bin 250)" in out
    assert "c.bin" in out and "500 fps" in out and "<- drives" in out
    assert "b.bin" in out and "failed: " in out


def test_a_choice_shipped_inside_a_package_is_ignored(tmp_path, aws, costly_pilots):
    import functools

    from edge_fixtures import tar_bytes

    from edge import runtimes

    sagemaker, s3 = aws
    clock, opened = costly_pilots
    with_choice = io_members(multi_artifact_model("v1"))
    with_choice[runtimes.CHOICE_FILE] = json.dumps({"file": "a.bin"}).encode()
    register(sagemaker, s3, tar_bytes(with_choice), key="a/1.tar.gz")
    car = make_agent(tmp_path, aws, functools.partial(agent_mod.smoke_test, clock=clock))
    assert car.check().outcome == "installed"
    assert runtimes.read_choice(car.current_link) == "c.bin" and opened[:3] == ["a.bin", "b.bin", "c.bin"]
    assert agent_mod.CHOICE_FILE == runtimes.CHOICE_FILE


def io_members(archive: bytes) -> dict[str, bytes]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
