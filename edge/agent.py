"""The device agent: keep the car on the newest approved, verified, working model; never strand it.

One check (``Agent.check``) does: ask the model registry for the newest Approved package of the group that
carries an artifact for this car's target -> download it -> verify its SHA-256 against the registry ->
unpack it safely -> smoke-test it (load it, one inference on a bundled frame) -> swap it in atomically.
Anything that fails leaves the car on the model it had. The registry is reached through clients with
boto3's method names (``edge.aws.clients``: AWS or the local registry, same code).

On disk (``root``)::

    state.json                  what happened: current/previous, rejected packages, last check, events
    current -> models/<name>    the model the car drives with; replaced with os.replace (atomic)
    models/<name>/              one folder per installed package, with .robocar-install.json
    downloads/                  verified archives; removed once unpacked

The ``current`` link is the truth for which model runs (a crash between the swap and the state write
cannot make the car drive something the state does not describe: the install record travels with the
model folder). The previous model is kept so a failure after the swap rolls back without a download.

A package whose artifact fails the smoke test or is an unsafe archive is remembered as rejected and not
tried again; a SHA-256 mismatch is not remembered (the object may be repaired), it is refused each time.

Standard library only at import time: the rollout Lambda (infra/rollout) imports this module to read
packages; numpy and the runtimes are imported by the smoke test when it runs.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import artifacts

log = logging.getLogger("robocar.edge.agent")

STATE_FORMAT = "robocar-edge-state/1"
INSTALL_RECORD = ".robocar-install.json"
SMOKE_FRAME = ("edge.assets", "smoke_frame.jpg")  # a 160x120 donkeycar camera frame, shipped in the wheel
MAX_EVENTS = 50
DEFAULT_LIMITS = artifacts.ExtractLimits()


class AgentError(Exception):
    """A user-facing problem with the agent's folder or request (printed without a traceback)."""


class SmokeTestError(artifacts.ArtifactError):
    """The model loads badly or its outputs on the bundled frame are not finite or out of range."""


# A package carries each edge target's artifact in CustomerMetadataProperties, one key per fact:
# ``edge:<target>:uri``, ``edge:<target>:sha256``, ``edge:<target>:runtime`` (docs/registry.md says why
# not AdditionalInferenceSpecifications). AWS allows [\p{L}\p{Z}\p{N}_.:/=+-@] in keys (1-128) and
# values (1-256), so an S3 URI, a hex digest and a runtime name fit as they are.
EDGE_METADATA_FIELDS = ("uri", "sha256", "runtime")


def edge_metadata_key(target: str, field: str) -> str:
    return f"edge:{target}:{field}"


def edge_metadata(target: str, *, uri: Any, sha256: Any, runtime: Any) -> dict[str, Any]:
    """The CustomerMetadataProperties entries one target's artifact is registered with."""
    values = {"uri": uri, "sha256": sha256, "runtime": runtime}
    return {edge_metadata_key(target, field): values[field] for field in EDGE_METADATA_FIELDS}


def edge_targets_of(metadata: dict[str, Any]) -> list[str]:
    """The targets a package's (or a Register step's) metadata carries an artifact for, in key order."""
    return [key.split(":")[1] for key in metadata if key.startswith("edge:") and key.endswith(":uri")]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Candidate:
    """One approved package's artifact for this car's target, as the registry describes it."""

    model_package_arn: str
    version: int
    target: str
    artifact_uri: str
    sha256: str
    runtime: str = ""  # what the pipeline compiled it for (dlr, litert, onnxruntime); informative only

    @property
    def key(self) -> str:
        """Identifies the pair (package, artifact bytes) for the rejected list."""
        return f"{self.model_package_arn}#{self.sha256}"

    @property
    def folder_name(self) -> str:
        return f"v{self.version}-{self.sha256[:12]}"


def version_from_arn(arn: str) -> int:
    """``arn:...:model-package/<group>/<version>`` -> version; 0 for an unversioned package."""
    tail = arn.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def candidate_from_package(description: dict[str, Any], target: str) -> Candidate | None:
    """A ``describe_model_package`` response -> its Candidate for ``target``, or None if it has none."""
    arn = description["ModelPackageArn"]
    metadata = description.get("CustomerMetadataProperties") or {}
    uri = metadata.get(edge_metadata_key(target, "uri"))
    if uri is None:
        return None
    sha256 = metadata.get(edge_metadata_key(target, "sha256"))
    if not uri or not sha256:
        raise artifacts.ArtifactError(f"{arn}: target {target!r} has no artifact URI or no SHA-256")
    version = description.get("ModelPackageVersion") or version_from_arn(arn)
    runtime = metadata.get(edge_metadata_key(target, "runtime"), "")
    return Candidate(arn, int(version), target, uri, artifacts.normalize_sha256(sha256), runtime)


def approved_packages(sagemaker: Any, group: str) -> Iterator[str]:
    """ARNs of the group's Approved packages, newest first (the registry sorts; we page)."""
    kwargs: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "ModelApprovalStatus": "Approved",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
    }
    while True:
        page = sagemaker.list_model_packages(**kwargs)
        for summary in page.get("ModelPackageSummaryList", []):
            yield summary["ModelPackageArn"]
        token = page.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token


def find_newest(sagemaker: Any, group: str, target: str, skip: set[str] = frozenset()) -> Candidate | None:
    """The newest Approved package with an artifact for ``target`` whose key is not in ``skip``."""
    for arn in approved_packages(sagemaker, group):
        description = sagemaker.describe_model_package(ModelPackageName=arn)
        try:
            candidate = candidate_from_package(description, target)
        except artifacts.ArtifactError as exc:
            log.warning("skipping %s", exc)
            continue
        if candidate is not None and candidate.key not in skip:
            return candidate
    return None


RAW_LINEAR_LIMIT = 2.0  # a linear head far outside [-1, 1] means broken weights or quantisation


def _check_output(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise SmokeTestError(f"{name} is not finite ({value})")
    if not -1.0 <= value <= 1.0:
        raise SmokeTestError(f"{name} {value:.4f} is outside [-1, 1]")
    return value


def check_heads(heads: list[Any], model_type: str) -> None:
    """Raw outputs: finite; linear heads within +-RAW_LINEAR_LIMIT; categorical heads probabilities.

    The decoder clips linear outputs to [-1, 1] (as donkeycar does), so only the raw heads can show a
    model whose answers are far off; a little overshoot is normal for an unbounded linear head.
    """
    import numpy as np  # here, not at the top: the rollout Lambda imports this module without numpy

    for index, head in enumerate(heads):
        values = np.asarray(head, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise SmokeTestError(f"output {index} has non-finite values")
        if model_type == "linear" and np.any(np.abs(values) > RAW_LINEAR_LIMIT):
            raise SmokeTestError(f"output {index} = {values.ravel()[:4]} is far outside [-1, 1]")
        if model_type == "categorical" and (np.any(values < -1e-3) or np.any(values > 1 + 1e-3)):
            raise SmokeTestError(f"output {index} is not a probability distribution")


def smoke_frame_bytes() -> bytes:
    package, name = SMOKE_FRAME
    return importlib.resources.files(package).joinpath(name).read_bytes()


def smoke_test(model_dir: Path, *, prefer: str | None = None) -> dict[str, float]:
    """Load the package as the drive loop will and run the bundled frame; SmokeTestError if it misbehaves.

    The commands must be finite and within [-1, 1], and so must the raw outputs (``check_heads``) when
    the runtime exposes them.
    """
    from edge import drive, frames

    try:
        infer = drive.open_pilot(Path(model_dir), prefer=prefer)
        image = frames.decode_image(smoke_frame_bytes())
        started = time.perf_counter()
        angle, throttle = infer(image)
        latency_ms = (time.perf_counter() - started) * 1000.0
        heads = infer.heads(image)
    except Exception as exc:  # any failure to load or run is a failed smoke test, named in the log
        raise SmokeTestError(f"smoke test cannot run the model: {type(exc).__name__}: {exc}") from exc
    if heads is not None:
        check_heads(heads, infer.model_type)
    return {
        "angle": _check_output("angle", float(angle)),
        "throttle": _check_output("throttle", float(throttle)),
        "latency_ms": round(latency_ms, 3),
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _registry_failure(exc: Exception, keeping: str) -> tuple[str, str]:
    """(outcome, detail): ``offline`` when AWS could not be reached, ``registry-error`` when it answered
    with an error (e.g. no such group, access denied), which retrying will not fix."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    if code:
        return "registry-error", f"the registry answered {code}: {exc}; {keeping}"
    return "offline", f"registry unreachable ({type(exc).__name__}: {exc}); {keeping}"


def _exclusive(method: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Hold ``root/.lock`` for the call: a ``pull`` by hand and the poller of ``run`` never interleave."""

    @functools.wraps(method)
    def locked(self: Agent, *args: Any, **kwargs: Any) -> CheckResult:
        from edge.local_aws import file_lock  # here: the rollout Lambda bundles this module without it

        with file_lock(self.root / ".lock"):
            return method(self, *args, **kwargs)

    return locked


@dataclass
class CheckResult:
    """What one check did.

    ``outcome``: ``installed``, ``up-to-date``, ``none-approved``, ``offline``, ``registry-error``,
    ``refused`` or ``rolled-back``; ``model``: the folder the car drives with afterwards (None: none).
    """

    outcome: str
    detail: str
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Agent:
    """Installs models into ``root`` for one (model package group, target). Not thread-safe: one per root."""

    def __init__(
        self,
        root: Path,
        *,
        group: str,
        target: str,
        sagemaker: Any = None,
        s3: Any = None,
        prefer: str | None = None,
        smoke: Callable[[Path], dict[str, float]] | None = None,
        limits: artifacts.ExtractLimits = DEFAULT_LIMITS,
    ) -> None:
        self.root = Path(root)
        self.group = group
        self.target = target
        self.sagemaker = sagemaker
        self.s3 = s3
        self.smoke = smoke or functools.partial(smoke_test, prefer=prefer)
        self.limits = limits
        self.models = self.root / "models"
        self.downloads = self.root / "downloads"
        self.current_link = self.root / "current"
        self.state_path = self.root / "state.json"
        self.models.mkdir(parents=True, exist_ok=True)
        self.downloads.mkdir(parents=True, exist_ok=True)

    # ---- state -------------------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise AgentError(
                    f"{self.state_path} is not valid JSON ({exc}); move it aside to reset"
                ) from exc
        else:
            state = {}
        state.setdefault("format", STATE_FORMAT)
        state.setdefault("rejected", {})
        state.setdefault("events", [])
        state.setdefault("previous", None)
        state["group"], state["target"] = self.group, self.target
        state["current"] = self.current_record()
        return state

    def _save(self, state: dict[str, Any], outcome: str, detail: str) -> CheckResult:
        state["current"] = self.current_record()
        state["last_check"] = {"at": utc_now(), "outcome": outcome, "detail": detail}
        state["events"] = (state["events"] + [state["last_check"]])[-MAX_EVENTS:]
        _write_json_atomic(self.state_path, state)
        level = logging.INFO if outcome in ("installed", "up-to-date", "none-approved") else logging.WARNING
        log.log(level, "%s: %s", outcome, detail)
        return CheckResult(outcome, detail, self.current_name())

    def current_name(self) -> str | None:
        """The folder name ``current`` points to, or None when no model is installed."""
        try:
            return Path(os.readlink(self.current_link)).name
        except FileNotFoundError:
            return None

    def current_dir(self) -> Path | None:
        name = self.current_name()
        return self.models / name if name else None

    def current_record(self) -> dict[str, Any] | None:
        folder = self.current_dir()
        if folder is None or not (folder / INSTALL_RECORD).exists():
            return None
        return json.loads((folder / INSTALL_RECORD).read_text(encoding="utf-8"))

    # ---- the check ---------------------------------------------------------------------------------
    @_exclusive
    def check(self) -> CheckResult:
        """One pass: find, fetch, verify, unpack, smoke-test, swap. Registry/network errors do not raise."""
        state = self.load_state()
        current = state["current"]
        try:
            candidate = find_newest(self.sagemaker, self.group, self.target, skip=set(state["rejected"]))
        except Exception as exc:  # whatever the client raises, the car keeps its model
            return self._save(state, *_registry_failure(exc, f"keeping {self._describe(current)}"))
        if candidate is None:
            return self._save(
                state,
                "none-approved",
                f"no Approved package in {self.group!r} has an artifact for {self.target!r}; "
                f"keeping {self._describe(current)}",
            )
        if current and f"{current['model_package_arn']}#{current['sha256']}" == candidate.key:
            return self._save(state, "up-to-date", f"driving with {self._describe(current)}")
        archive = self.downloads / f"{candidate.sha256}.tar.gz"
        try:
            artifacts.fetch_verified(self.s3, candidate.artifact_uri, archive, candidate.sha256)
        except artifacts.IntegrityError as exc:
            return self._save(state, "refused", f"{exc}; keeping {self._describe(current)}")
        except Exception as exc:
            return self._save(
                state, *_registry_failure(exc, f"download failed, keeping {self._describe(current)}")
            )
        return self._install(state, candidate, archive)

    @_exclusive
    def install_archive(self, archive: Path, candidate: Candidate) -> CheckResult:
        """Verify and install an archive already on the device (e.g. one Greengrass delivered).

        The component runs this at every start: the package already driven is left alone, and one that
        was rejected (failed smoke test, rolled back by hand) is not installed again.
        """
        state = self.load_state()
        current = state["current"]
        if current and f"{current['model_package_arn']}#{current['sha256']}" == candidate.key:
            return self._save(state, "up-to-date", f"driving with {self._describe(current)}")
        if candidate.key in state["rejected"]:
            reason = state["rejected"][candidate.key]["reason"]
            detail = f"{candidate.model_package_arn} was rejected before ({reason})"
            return self._save(state, "refused", f"{detail}; keeping {self._describe(current)}")
        try:
            artifacts.verify_file(archive, candidate.sha256)
        except artifacts.IntegrityError as exc:
            return self._save(state, "refused", f"{exc}; keeping {self._describe(state['current'])}")
        local_copy = self.downloads / f"{candidate.sha256}.tar.gz"
        shutil.copyfile(archive, local_copy)
        return self._install(state, candidate, local_copy)

    def _install(self, state: dict[str, Any], candidate: Candidate, archive: Path) -> CheckResult:
        current = state["current"]
        keep = self._describe(current)
        staging = self.models / f".staging-{candidate.folder_name}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            files = artifacts.safe_extract(archive, staging, self.limits)
            smoke = self.smoke(staging)
        except artifacts.ArtifactError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            state["rejected"][candidate.key] = {"at": utc_now(), "reason": str(exc)}
            return self._save(state, "refused", f"{candidate.model_package_arn}: {exc}; keeping {keep}")
        finally:
            archive.unlink(missing_ok=True)
        record = {**asdict(candidate), "folder": candidate.folder_name, "files": files}
        record.update(installed_at=utc_now(), smoke_test=smoke)
        _write_json_atomic(staging / INSTALL_RECORD, record)
        final = self.models / candidate.folder_name
        shutil.rmtree(final, ignore_errors=True)  # a leftover of an interrupted install of the same package
        os.replace(staging, final)
        previous_name = self.current_name()
        self._point_current(candidate.folder_name)
        try:
            self.smoke(self.current_link)  # the same checks through the path the drive loop uses
        except artifacts.ArtifactError as exc:
            state["rejected"][candidate.key] = {"at": utc_now(), "reason": f"after the swap: {exc}"}
            if previous_name:
                self._point_current(previous_name)
            else:
                self.current_link.unlink(missing_ok=True)
            shutil.rmtree(final, ignore_errors=True)
            return self._save(
                state, "rolled-back", f"{candidate.model_package_arn} failed after the swap: {exc}"
            )
        state["previous"] = previous_name if previous_name != candidate.folder_name else state["previous"]
        self._prune(keep={candidate.folder_name, state["previous"]})
        return self._save(state, "installed", f"now driving with {self._describe(record)} (was {keep})")

    @_exclusive
    def rollback(self, reason: str = "requested by hand") -> CheckResult:
        """Point ``current`` back at the previous model and reject the one that was running."""
        state = self.load_state()
        previous = state.get("previous")
        if not previous or not (self.models / previous).is_dir():
            raise AgentError(f"no previous model in {self.models} to roll back to")
        bad = state["current"]
        if bad:
            state["rejected"][f"{bad['model_package_arn']}#{bad['sha256']}"] = {
                "at": utc_now(),
                "reason": reason,
            }
        self._point_current(previous)
        state["previous"] = None
        if bad:
            self._prune(keep={previous})
        return self._save(
            state, "rolled-back", f"{reason}; now driving with {self._describe(self.current_record())}"
        )

    # ---- folder plumbing ---------------------------------------------------------------------------
    def _point_current(self, folder_name: str) -> None:
        """Make ``current`` point at ``models/<folder_name>`` in one rename; readers never see it missing."""
        tmp = self.root / f".current.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("models") / folder_name, tmp)
        os.replace(tmp, self.current_link)
        _fsync_dir(self.root)

    def _prune(self, keep: set[str | None]) -> None:
        for folder in self.models.iterdir():
            if folder.name not in keep and folder.name != self.current_name():
                shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _describe(record: dict[str, Any] | None) -> str:
        if not record:
            return "no model"
        return f"{record['model_package_arn']} ({record['target']}, sha256 {record['sha256'][:12]})"


def poll(agent: Agent, interval_s: float, *, stop: Callable[[], bool] = lambda: False) -> None:
    """Check every ``interval_s`` seconds until ``stop()``; each check's outcome is logged and saved."""
    while not stop():
        try:
            agent.check()
        except Exception:  # a full disk or a corrupt state file must not end the polling for good
            log.exception("check failed; trying again in %s s", interval_s)
        deadline = time.monotonic() + interval_s
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, interval_s))
