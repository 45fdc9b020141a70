"""The device agent: keep the car on the newest approved, verified, working model; never strand it.

One check (``Agent.check``) does: ask the model registry for the newest Approved package of the group that
carries an artifact for this car's target -> download it -> verify its SHA-256 against the registry ->
unpack it safely -> smoke-test it (load each artifact this car can run, check it on a bundled frame, time
it for at most half a second and keep the fastest that passes) -> swap it in atomically. A classifier
package (manifest ``"task": "classification"``, edge/classify.py) takes the same path, its smoke test
asking for a probability per class; a detector package (``"task": "detection"``, edge/detect.py) too,
its smoke test asking for class scores that are probabilities and boxes inside the photo.
Anything that fails leaves the car on the model it had. The registry is reached through clients with
boto3's method names (``edge.aws.clients``: AWS or the local registry, same code).

On disk (``root``)::

    state.json                  what happened: current/previous, rejected packages, last check, events
    current -> models/<name>    the model the car drives with; replaced with os.replace (atomic)
    models/<name>/              one folder per installed package, with .robocar-install.json (the smoke
                                test's figures) and .robocar-choice.json (the artifact the car drives)
    downloads/                  verified archives; removed once unpacked

The ``current`` link is the truth for which model runs (a crash between the swap and the state write
cannot make the car drive something the state does not describe: the install record travels with the
model folder). The previous model is kept so a failure after the swap rolls back without a download.

What a failure means (docs/edge-safety.md, "What the car refuses"): a package that fails because of what
it *is* (an unsafe or unreadable archive, a manifest file that is missing, outside the package or not
the bytes it claims, a model that does not load or answers NaN or out of range, or anything unexpected
on its way in) is **rejected**: remembered in ``state.json``, reported once, never tried again, and the
check goes on to the next older approved package (so a new car still gets the newest good one). A
failure that is not the package's fault is **retried** at the next check and rejects nothing: the
network or the registry (``offline``, ``registry-error``), a SHA-256 mismatch (the object may be
repaired; ``refused``), the car's own disk full or read-only (``storage-error``). A package whose
preprocessing digest the car's edge/frames.py does not compute is rejected until the car's frames code
changes (an update), then tried again (docs/contracts.md section 1).

Standard library only at import time: the rollout Lambda (infra/rollout) imports this module to read
packages; numpy and the runtimes are imported by the smoke test when it runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import artifacts, atomic_files, registry
from edge.registry import EDGE_METADATA_FIELDS, edge_metadata_key

log = logging.getLogger("robocar.edge.agent")

STATE_FORMAT = "robocar-edge-state/1"
INSTALL_RECORD = ".robocar-install.json"
# The artifact the car measured fastest: edge.runtimes.CHOICE_FILE (not imported here: numpy)
CHOICE_FILE = ".robocar-choice.json"
SMOKE_FRAME = ("edge.assets", "smoke_frame.jpg")  # a 160x120 donkeycar camera frame, shipped in the wheel
MAX_EVENTS = 50
DEFAULT_LIMITS = artifacts.ExtractLimits()
# Packages one check may try (each a download, an unpack and a smoke test): a rejected package is
# remembered, so the next check carries on below it; three keep one check to seconds on a car's link.
MAX_TRIES_PER_CHECK = 3


class AgentError(Exception):
    """A user-facing problem with the agent's folder or request (printed without a traceback)."""


class SmokeTestError(artifacts.ArtifactError):
    """The model loads badly or its outputs on the bundled frame are not finite or out of range."""


class ForeignPreprocessingError(artifacts.ArtifactError):
    """The package's preprocessing digest is not this car's: rejected while the car's frames code is the
    one that refused it; a car update (another ``PREPROCESSING_VERSION``) tries it again."""


# The metadata keys (edge:<target>:uri|sha256|runtime) are edge.registry's, the reader of "the newest
# approved package for a target"; this module writes and parses them through it.
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
    artifact = registry.target_artifact(description, target)
    if artifact is None:
        return None
    arn = description["ModelPackageArn"]
    version = description.get("ModelPackageVersion") or version_from_arn(arn)
    return Candidate(arn, int(version), target, artifact.uri, artifact.sha256, artifact.runtime)


def iter_candidates(
    sagemaker: Any, group: str, target: str, skip: set[str] = frozenset()
) -> Iterator[Candidate]:
    """Approved packages with a usable artifact for ``target`` whose key is not in ``skip``, newest first.

    The listing and the target filter are ``edge.registry``'s (one meaning of "newest approved for a
    target"); a package whose metadata for the target is unusable is logged and skipped there.
    """
    for description in registry.packages_newest_first(sagemaker, group, registry.APPROVED, target):
        candidate = candidate_from_package(description, target)
        if candidate is not None and candidate.key not in skip:
            yield candidate


def find_newest(sagemaker: Any, group: str, target: str, skip: set[str] = frozenset()) -> Candidate | None:
    """The newest Approved package with an artifact for ``target`` whose key is not in ``skip``."""
    return next(iter_candidates(sagemaker, group, target, skip), None)


RAW_LINEAR_LIMIT = 2.0  # a linear head far outside [-1, 1] means broken weights or quantisation
# A softmax head sums to 1; int8 quantisation (scale 1/256) of 20 bins moves the sum by at most
# 20 x 1/512 = 0.04, so 0.1 is loose for a real head and tight enough to refuse one that is all zeros.
PROBABILITY_SUM_TOLERANCE = 0.1
CATEGORICAL_WIDTHS = {"angle": 15, "throttle": 20}  # edge.frames.ANGLE_BINS, THROTTLE_BINS


def _check_output(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise SmokeTestError(f"{name} is not finite ({value})")
    if not -1.0 <= value <= 1.0:
        raise SmokeTestError(f"{name} {value:.4f} is outside [-1, 1]")
    return value


def check_heads(heads: list[Any], model_type: str, *, check_range: bool = True) -> None:
    """Raw outputs (angle's first): finite; a linear head one value within +-RAW_LINEAR_LIMIT; a
    categorical head a probability distribution of its width.

    The decoder clips linear outputs to [-1, 1] (as donkeycar does) and takes the argmax of categorical
    ones, so only the raw heads show a model whose answers are far off (a throttle head saying 50 would
    drive at full throttle); a little overshoot is normal for an unbounded linear head.
    ``check_range=False`` checks finiteness only (for frames unlike any the model learned from).
    """
    import numpy as np  # here, not at the top: the rollout Lambda imports this module without numpy

    if len(heads) != 2:
        raise SmokeTestError(f"the model has {len(heads)} outputs, expected 2 (angle, throttle)")
    for name, head in zip(("angle", "throttle"), heads, strict=True):
        values = np.asarray(head, dtype=np.float64)
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise SmokeTestError(f"raw {name} output is not finite ({values.ravel()[:4]})")
        if not check_range:
            continue
        if model_type == "linear":
            if values.size != 1:
                raise SmokeTestError(f"raw {name} output has {values.size} values; a linear head has 1")
            if np.any(np.abs(values) > RAW_LINEAR_LIMIT):
                raise SmokeTestError(f"raw {name} output {values.ravel()[0]:.4g} is far outside [-1, 1]")
        elif model_type == "categorical":
            if values.shape[-1] != CATEGORICAL_WIDTHS[name]:
                raise SmokeTestError(
                    f"raw {name} output has width {values.shape[-1]}, expected {CATEGORICAL_WIDTHS[name]}"
                )
            total = values.sum(axis=-1)
            if (
                np.any(values < -1e-3)
                or np.any(values > 1 + 1e-3)
                or np.any(np.abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE)
            ):
                raise SmokeTestError(f"raw {name} output is not a probability distribution")


def smoke_frame_bytes() -> bytes:
    package, name = SMOKE_FRAME
    return importlib.resources.files(package).joinpath(name).read_bytes()


@dataclass(frozen=True)
class MeasureBudget:
    """How long the install-time benchmark may run each artifact: whichever limit comes first.

    Half a second (or 200 frames, 10 s of driving at donkeycar's 20 Hz) each keeps an install with five
    artifacts (a local pilot package) under about 2.5 s on top of loading them, and is over 100 calls for
    a pilot above 200 fps: enough for a median latency that one scheduler hiccup does not move.
    """

    seconds: float = 0.5
    frames: int = 200


def smoke_check(infer: Any, image: Any) -> dict[str, float]:
    """One loaded pilot on the bundled frame and on a black and a white one; SmokeTestError if it misbehaves.

    On the bundled camera frame the commands must be finite and within [-1, 1], and so must the raw
    heads (``check_heads``). A black and a white frame (a covered lens, the sun) must give finite heads
    and commands: a model that answers NaN in the dark would otherwise be found only while driving.
    """
    import numpy as np

    try:
        started = time.perf_counter()
        angle, throttle = infer(image)
        latency_ms = (time.perf_counter() - started) * 1000.0
        heads = infer.heads(image)
        extremes = [np.zeros_like(image), np.full_like(image, 255)]
        extreme_runs = [(infer(frame), infer.heads(frame)) for frame in extremes]
    except Exception as exc:  # any failure to run is a failed smoke test, named in the log
        raise SmokeTestError(f"smoke test cannot run the model: {type(exc).__name__}: {exc}") from exc
    if heads is not None:
        check_heads(heads, infer.model_type)
    result = {
        "angle": _check_output("angle", float(angle)),
        "throttle": _check_output("throttle", float(throttle)),
        "latency_ms": round(latency_ms, 3),
    }
    for label, ((extreme_angle, extreme_throttle), extreme_heads) in zip(
        ("black", "white"), extreme_runs, strict=True
    ):
        try:
            if extreme_heads is not None:
                check_heads(extreme_heads, infer.model_type, check_range=False)
            for name, value in (("angle", extreme_angle), ("throttle", extreme_throttle)):
                if not math.isfinite(value):
                    raise SmokeTestError(f"{name} is not finite ({value})")
        except SmokeTestError as exc:
            raise SmokeTestError(f"on a {label} frame: {exc}") from None
    return result


def time_pilot(
    infer: Callable[[Any], Any], image: Any, budget: MeasureBudget, clock: Callable[[], float]
) -> dict[str, float]:
    """Frames per second of ``infer(image)`` (frame preparation included, as the drive loop runs it),
    bounded by ``budget``; fps is 1 / the median latency, so a call the scheduler interrupted does not
    decide the choice."""
    latencies: list[float] = []
    started = clock()
    now = started
    while len(latencies) < budget.frames and now - started < budget.seconds:
        before = clock()
        infer(image)
        now = clock()
        latencies.append(now - before)
    ordered = sorted(latencies)
    median = ordered[len(ordered) // 2]
    return {
        "fps": round(1.0 / median, 1) if median > 0 else float("inf"),
        "median_ms": round(median * 1000.0, 4),
        "frames": len(latencies),
        "seconds": round(now - started, 4),
    }


MEASURE, CHOSEN, AS_OPENED = "measure", "chosen", "as opened"


def _candidates(model_dir: Path, prefer: str | None) -> tuple[list[str | None], str]:
    """The artifact files to try, and how: ``MEASURE`` them against each other, check the ``CHOSEN`` one,
    or check what the drive loop opens (``AS_OPENED``, for ``[prefer]``).

    A package already measured here (the agent's ``CHOICE_FILE``: the check after the swap, through the
    ``current`` link) is checked on its choice only. A manifest that cannot be read gives ``[prefer]``:
    opening the pilot then names the problem.
    """
    from edge import runtimes

    try:
        manifest = runtimes.read_manifest(model_dir)
        runnable = runtimes.runnable_artifacts(manifest, prefer)
    except (runtimes.PilotError, KeyError, TypeError):
        return [prefer], AS_OPENED
    files = [str(a.get("file")) for a in runnable]
    chosen = runtimes.read_choice(model_dir)
    if chosen in files:
        return [chosen], CHOSEN
    return (files, MEASURE) if files else ([prefer], AS_OPENED)


def smoke_test(
    model_dir: Path,
    *,
    prefer: str | None = None,
    budget: MeasureBudget = MeasureBudget(),
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Load the package as the drive loop will, check each artifact it can run here (``smoke_check``),
    time each that passes (``time_pilot``, within ``budget``) and pick the fastest.

    The best artifact differs by CPU (an int8 kernel that is fast with AVX-512 VNNI is not on an ARM
    core), so the car measures rather than trusting the compile machine's order. The result has the
    chosen artifact's smoke figures, ``artifact`` (its file), ``reason`` and ``measured`` (every
    artifact's figures, or its failure); the agent records it. SmokeTestError when none passes.
    """
    from edge import frames

    files, how = _candidates(Path(model_dir), prefer)
    measuring = how == MEASURE
    image = frames.decode_image(smoke_frame_bytes())
    open_model, check, figures = _smoke_kind(Path(model_dir))
    measured: list[dict[str, Any]] = []
    for file in files:
        entry: dict[str, Any] = {"file": file}
        try:
            try:
                infer = open_model(Path(model_dir), prefer=file)
            except Exception as exc:  # a model that does not load is a failed smoke test, named in the log
                raise SmokeTestError(f"smoke test cannot run the model: {type(exc).__name__}: {exc}") from exc
            entry["runtime"] = getattr(getattr(infer, "pilot", infer), "runtime", None)
            entry.update(check(infer, image))
            if measuring:
                entry.update(time_pilot(infer, image, budget, clock))
        except SmokeTestError as exc:
            entry.update(passed=False, error=str(exc))
        else:
            entry["passed"] = True
        measured.append(entry)
    passing = [m for m in measured if m["passed"]]
    if not passing:
        errors = [m["error"] for m in measured]
        if len(errors) == 1:
            raise SmokeTestError(errors[0])
        raise SmokeTestError(
            "no artifact passes: " + "; ".join(f"{m['file']}: {m['error']}" for m in measured)
        )
    if measuring:
        best = max(passing, key=lambda m: m["fps"])
        others = [f"{m['file']} {m['fps']:,.0f}" for m in passing if m is not best]
        failed = [str(m["file"]) for m in measured if not m["passed"]]
        reason = f"fastest passing here: {best['fps']:,.0f} fps" + (
            f" (vs {', '.join(others)})" if others else ""
        )
        if failed:
            reason += f"; failed the smoke test: {', '.join(failed)}"
    else:
        best = passing[0]
        reason = "the choice measured at install" if how == CHOSEN else "as the drive loop opens it"
    result = {k: best[k] for k in figures}
    return {**result, "artifact": best["file"], "reason": reason, "measured": measured}


def _smoke_kind(
    model_dir: Path,
) -> tuple[Callable[..., Any], Callable[[Any, Any], dict[str, Any]], tuple[str, ...]]:
    """(open one artifact, check it on the smoke frame, the figures the install record keeps) for the
    package's task: a pilot drives (``smoke_check``), a classifier answers probabilities
    (``edge.classify.smoke_check``), a detector boxes (``edge.detect.smoke_check``); all are timed alike
    (``time_pilot``)."""
    from edge import classify, detect, drive

    if classify.is_classifier(model_dir):
        return classify.open_classifier, classify.smoke_check, classify.SMOKE_FIGURES
    if detect.is_detector(model_dir):
        return detect.open_detector, detect.smoke_check, detect.SMOKE_FIGURES
    return drive.open_pilot, smoke_check, ("angle", "throttle", "latency_ms")


def verify_package(model_dir: Path) -> list[str]:
    """The manifest's files are inside the package and are the bytes it records (``sha256``), and its
    preprocessing is this car's (``drive.frame_spec_of``: the frame_spec's digest is the one recorded;
    a classifier's classes and photo transform: ``edge.classify.check_manifest``; a detector's, its
    anchors and decode settings too: ``edge.detect.check_manifest``)."""
    from edge import classify, detect, drive, runtimes  # numpy: not for the rollout Lambda

    try:
        manifest = runtimes.read_manifest(model_dir)
        task = runtimes.task_of(manifest)  # a task this car does not run is refused before anything else
        checked = runtimes.verify_package_files(model_dir, manifest)
        if task == runtimes.CLASSIFICATION_TASK:
            classify.check_manifest(manifest)  # classes and the photo transform instead of a frame_spec
        elif task == runtimes.DETECTION_TASK:
            detect.check_manifest(manifest)
        else:
            drive.frame_spec_of(manifest)
    except drive.PreprocessingMismatch as exc:
        raise ForeignPreprocessingError(str(exc)) from exc
    except (runtimes.PilotError, drive.DriveError) as exc:
        raise artifacts.ArtifactError(str(exc)) from exc
    return checked


def car_preprocessing_version() -> int:
    from edge import frames  # numpy and Pillow: not for the rollout Lambda

    return frames.PREPROCESSING_VERSION


def refused_by_other_frames_code(entry: Any) -> bool:
    """A rejection for preprocessing made by a car whose frames code has since changed (updated)."""
    version = entry.get("preprocessing_version") if isinstance(entry, dict) else None
    return version is not None and version != car_preprocessing_version()


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


# The stages a package goes through on its way in; a failure names the stage it happened in.
DOWNLOAD, UNPACK, VERIFY, SMOKE, INSTALL = "download", "unpack", "file check", "smoke test", "install"


@dataclass(frozen=True)
class Failure:
    """Why a package did not install. ``reject``: remembered in state.json and never tried again;
    otherwise the failure is not the package's fault and the next check tries it again."""

    outcome: str
    reason: str
    reject: bool
    foreign_preprocessing: bool = False


def classify_failure(stage: str, exc: Exception) -> Failure:
    """What a failure in ``stage`` says about the package (docs/edge-safety.md has the table).

    Retried: a SHA-256 mismatch (the object may be repaired), the car's disk (full, read-only: no fault
    of the package), the network or registry during the download, our own file operations at install.
    Rejected: everything else, i.e. the package's bytes, manifest or model; an exception none of our
    checks names is a bug somewhere or a new way to be bad, so it is rejected too, with its type logged
    (the traceback at debug level: ``--debug``).
    """
    if isinstance(exc, artifacts.IntegrityError):
        return Failure("refused", f"{exc} (not remembered: tried again at the next check)", reject=False)
    if artifacts.is_storage_error(exc) or (stage == INSTALL and isinstance(exc, OSError)):
        return Failure("storage-error", f"the car's disk failed during the {stage}: {exc}", reject=False)
    if stage == DOWNLOAD and not isinstance(exc, artifacts.ArtifactError):
        outcome, detail = _registry_failure(exc, "download failed")
        return Failure(outcome, detail, reject=False)
    if isinstance(exc, ForeignPreprocessingError):
        return Failure("refused", f"{stage}: {exc}", reject=True, foreign_preprocessing=True)
    if isinstance(exc, artifacts.ArtifactError):
        return Failure("refused", f"{stage}: {exc}", reject=True)
    log.warning("unexpected %s in the %s: %s", type(exc).__name__, stage, exc)
    log.debug("traceback of the unexpected %s", type(exc).__name__, exc_info=exc)
    return Failure("refused", f"{stage}: unexpected {type(exc).__name__}: {exc}", reject=True)


def _exclusive(method: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Hold ``root/.lock`` for the call: a ``pull`` by hand and the poller of ``run`` never interleave.
    A lock that cannot be taken (a read-only disk) is a ``storage-error`` result, not an exception."""

    @functools.wraps(method)
    def locked(self: Agent, *args: Any, **kwargs: Any) -> CheckResult:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(atomic_files.file_lock(self.root / ".lock"))
            except OSError as exc:
                detail = f"cannot lock {self.root} ({exc}); keeping the installed model"
                log.warning("storage-error: %s", detail)
                return CheckResult("storage-error", detail, self.current_name())
            return method(self, *args, **kwargs)

    return locked


@dataclass
class CheckResult:
    """What one check did.

    ``outcome``: ``installed``, ``up-to-date``, ``none-approved``, ``offline``, ``registry-error``,
    ``refused``, ``storage-error`` or ``rolled-back``; ``model``: the folder the car drives with
    afterwards (None: none); ``rejected``: the packages this check rejected (each reported once).
    """

    outcome: str
    detail: str
    model: str | None
    rejected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state_problem(state: Any) -> str | None:
    """What makes a parsed state.json unusable, or None."""
    if not isinstance(state, dict):
        return "is not a JSON object"
    expected = {"rejected": dict, "events": list, "previous": (str, type(None))}
    for key, kind in expected.items():
        if key in state and not isinstance(state[key], kind):
            return f"has a {key!r} of the wrong type"
    return None


def read_state_file(path: Path) -> dict[str, Any] | None:
    """A car's state.json (None when there is none); AgentError, one line, when it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        raise AgentError(f"cannot read {path}: {exc}") from exc
    try:
        state = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AgentError(f"{path} is not valid JSON ({exc}); move it aside to reset") from exc
    problem = _state_problem(state)
    if problem:
        raise AgentError(f"{path} {problem}: not a robocar state file; move it aside to reset")
    return state


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
        smoke: Callable[[Path], dict[str, Any]] | None = None,
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

    # ---- state -------------------------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        state = read_state_file(self.state_path) or {}
        state.setdefault("format", STATE_FORMAT)
        state.setdefault("rejected", {})
        state["rejected"] = {
            key: entry for key, entry in state["rejected"].items() if not refused_by_other_frames_code(entry)
        }
        state.setdefault("events", [])
        state.setdefault("previous", None)
        state["group"], state["target"] = self.group, self.target
        state["current"] = self.current_record()
        return state

    def _save(
        self, state: dict[str, Any], outcome: str, detail: str, rejected: Sequence[str] = ()
    ) -> CheckResult:
        """Record the check in state.json; a disk that cannot take it is said in the result, not raised."""
        state["current"] = self.current_record()
        state["last_check"] = {"at": utc_now(), "outcome": outcome, "detail": detail}
        state["events"] = (state["events"] + [state["last_check"]])[-MAX_EVENTS:]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_files.atomic_write_json(self.state_path, state, durable=True)
        except OSError as exc:
            detail = f"{detail} (state.json not saved: {exc})"
        level = logging.INFO if outcome in ("installed", "up-to-date", "none-approved") else logging.WARNING
        log.log(level, "%s: %s", outcome, detail)
        return CheckResult(outcome, detail, self.current_name(), list(rejected))

    def current_name(self) -> str | None:
        """The folder name ``current`` points to, or None when no model is installed."""
        try:
            return Path(os.readlink(self.current_link)).name
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # EINVAL: ``current`` is not a link (made by hand); nothing we installed
            log.warning("%s is not the agent's link (%s)", self.current_link, exc)
            return None

    def current_dir(self) -> Path | None:
        name = self.current_name()
        return self.models / name if name else None

    def current_record(self) -> dict[str, Any] | None:
        """The install record of the current model; None (logged) when missing or unreadable."""
        folder = self.current_dir()
        if folder is None or not (folder / INSTALL_RECORD).exists():
            return None
        try:
            record = json.loads((folder / INSTALL_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("the install record of %s is unreadable (%s)", folder.name, exc)
            return None
        required = ("model_package_arn", "sha256", "target", "folder", "installed_at")
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in required):
            log.warning("the install record of %s lacks %s", folder.name, ", ".join(required))
            return None
        return record

    @staticmethod
    def _key_of(record: dict[str, Any] | None) -> str | None:
        return f"{record['model_package_arn']}#{record['sha256']}" if record else None

    # ---- the check ---------------------------------------------------------------------------------
    @_exclusive
    def check(self) -> CheckResult:
        """One pass: find, fetch, verify, unpack, check files, smoke-test, swap; never raises for what
        the registry, the network or a package does (a corrupt state.json is an AgentError).

        Approved packages are tried newest first, down to the one installed: a rejected package sends
        the check on to the next older one (so a new car installs the newest *good* model), a
        transient failure ends the check (the next one tries again).
        """
        state = self.load_state()
        current = state["current"]
        refusals: list[str] = []
        rejected: list[str] = []
        last_refusal = "refused"
        candidates = iter_candidates(self.sagemaker, self.group, self.target, skip=set(state["rejected"]))
        for _ in range(MAX_TRIES_PER_CHECK):
            keeping = self._keeping(current, refusals)
            try:
                candidate = next(candidates, None)
            except Exception as exc:  # whatever the client raises, the car keeps its model
                return self._save(state, *_registry_failure(exc, keeping), rejected)
            if candidate is None and not refusals:
                return self._save(
                    state,
                    "none-approved",
                    f"no Approved package in {self.group!r} has an artifact for {self.target!r}; {keeping}",
                )
            if candidate is None or candidate.key == self._key_of(current):
                if refusals:
                    return self._save(state, last_refusal, keeping, rejected)
                return self._save(state, "up-to-date", f"driving with {self._describe(current)}")
            archive = self.downloads / f"{candidate.sha256}.tar.gz"
            failure = self._attempt(
                state,
                candidate,
                DOWNLOAD,
                lambda c=candidate, a=archive: artifacts.fetch_verified(self.s3, c.artifact_uri, a, c.sha256),
                archive,
            )
            if failure is None:
                return self._save(state, "installed", self._installed(current, refusals), rejected)
            if failure.outcome not in ("refused", "rolled-back"):
                return self._save(state, failure.outcome, f"{failure.reason}; {keeping}", rejected)
            refusals.append(f"{candidate.model_package_arn}: {failure.reason}")
            last_refusal = failure.outcome
            if failure.reject:
                rejected.append(candidate.model_package_arn)
            current = state["current"]
        more = f"; {MAX_TRIES_PER_CHECK} packages tried, the next check goes on"
        return self._save(state, last_refusal, self._keeping(current, refusals) + more, rejected)

    @_exclusive
    def install_archive(self, archive: Path, candidate: Candidate) -> CheckResult:
        """Verify and install an archive already on the device (e.g. one Greengrass delivered).

        The component runs this at every start: the package already driven is left alone, and one that
        was rejected (failed smoke test, rolled back by hand) is not installed again.
        """
        state = self.load_state()
        current = state["current"]
        if candidate.key == self._key_of(current):
            return self._save(state, "up-to-date", f"driving with {self._describe(current)}")
        if candidate.key in state["rejected"]:
            entry = state["rejected"][candidate.key]
            reason = entry.get("reason") if isinstance(entry, dict) else entry
            detail = f"{candidate.model_package_arn} was rejected before ({reason})"
            return self._save(state, "refused", f"{detail}; keeping {self._describe(current)}")
        local_copy = self.downloads / f"{candidate.sha256}.tar.gz"

        def copy_verified() -> None:
            artifacts.verify_file(archive, candidate.sha256)
            self.downloads.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, local_copy)

        failure = self._attempt(state, candidate, INSTALL, copy_verified, local_copy)
        if failure is None:
            return self._save(state, "installed", self._installed(current, []))
        rejected = [candidate.model_package_arn] if failure.reject else []
        refusal = f"{candidate.model_package_arn}: {failure.reason}"
        return self._save(state, failure.outcome, self._keeping(state["current"], [refusal]), rejected)

    def _attempt(
        self,
        state: dict[str, Any],
        candidate: Candidate,
        fetch_stage: str,
        fetch: Callable[[], Any],
        archive: Path,
    ) -> Failure | None:
        """Fetch ``candidate``'s archive to ``archive`` and install it; None when it is installed.

        A failure is classified (``classify_failure``); a rejected package is recorded in ``state``.
        Nothing of a failed attempt stays on disk but the rejection.
        """
        try:
            fetch()
        except Exception as exc:  # every failure is classified: a package never ends the check
            failure: Failure | None = classify_failure(fetch_stage, exc)
        else:
            try:
                failure = self._install(state, candidate, archive)
            except Exception as exc:  # e.g. the disk failing while rolling back: still a result
                failure = classify_failure(INSTALL, exc)
        finally:
            with contextlib.suppress(OSError):
                archive.unlink(missing_ok=True)
                archive.with_name(archive.name + ".part").unlink(missing_ok=True)
        if failure is not None and failure.reject:
            entry = {"at": utc_now(), "reason": failure.reason}
            if failure.foreign_preprocessing:  # forgotten once the car's frames code changes
                entry["preprocessing_version"] = car_preprocessing_version()
            state["rejected"][candidate.key] = entry
        return failure

    def _install(self, state: dict[str, Any], candidate: Candidate, archive: Path) -> Failure | None:
        """Unpack, check the files, smoke-test, swap; a stage's exception becomes its Failure."""
        staging = self.models / f".staging-{candidate.folder_name}"
        stage = UNPACK
        try:
            shutil.rmtree(staging, ignore_errors=True)
            self.models.mkdir(parents=True, exist_ok=True)
            files = artifacts.safe_extract(archive, staging, self.limits)
            stage = VERIFY
            verify_package(staging)
            stage = SMOKE
            choice = staging / CHOICE_FILE
            choice.unlink(missing_ok=True)  # the car measures its own: a package cannot bring a choice
            smoke = self.smoke(staging)
            stage = INSTALL
            if isinstance(smoke.get("artifact"), str):
                atomic_files.atomic_write_json(
                    choice, {"file": smoke["artifact"], "reason": smoke.get("reason")}
                )
            record = {**asdict(candidate), "folder": candidate.folder_name, "files": files}
            record.update(installed_at=utc_now(), smoke_test=smoke)
            atomic_files.atomic_write_json(staging / INSTALL_RECORD, record, durable=True)
            final = self.models / candidate.folder_name
            shutil.rmtree(final, ignore_errors=True)  # a leftover of an interrupted install of this package
            os.replace(staging, final)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            return classify_failure(stage, exc)
        return self._swap(state, candidate, final)

    def _swap(self, state: dict[str, Any], candidate: Candidate, final: Path) -> Failure | None:
        """Point ``current`` at the new model and smoke-test it there; roll back if that fails."""
        previous_name = self.current_name()
        try:
            self._point_current(candidate.folder_name)
        except OSError as exc:  # ``current`` is unchanged: os.replace is atomic
            shutil.rmtree(final, ignore_errors=True)
            return classify_failure(INSTALL, exc)
        try:
            self.smoke(self.current_link)  # the same checks through the path the drive loop uses
        except Exception as exc:
            failure = classify_failure(SMOKE, exc)
            reason = f"failed after the swap: {failure.reason}"
            try:
                if previous_name:
                    self._point_current(previous_name)
                else:
                    self.current_link.unlink(missing_ok=True)
                shutil.rmtree(final, ignore_errors=True)
            except OSError as disk:  # rejected all the same: the next check installs the one before it
                return Failure("storage-error", f"{reason}; rolling back failed: {disk}", failure.reject)
            finally:
                state["current"] = self.current_record()
            return Failure("rolled-back", reason, failure.reject)
        if previous_name != candidate.folder_name:
            state["previous"] = previous_name
        state["current"] = self.current_record()
        self._prune(keep={candidate.folder_name, state["previous"]})
        return None

    def _keeping(self, current: dict[str, Any] | None, refusals: list[str]) -> str:
        return "; ".join([*refusals, f"keeping {self._describe(current)}"])

    def _installed(self, was: dict[str, Any] | None, refusals: list[str]) -> str:
        now = f"now driving with {self._describe(self.current_record())} (was {self._describe(was)})"
        return "; ".join([now, *refusals])

    @_exclusive
    def note(self, outcome: str, detail: str) -> CheckResult:
        """Record a check that could not run (it raised) as the last check, so ``status`` says why."""
        return self._save(self.load_state(), outcome, detail)

    @_exclusive
    def rollback(self, reason: str = "requested by hand") -> CheckResult:
        """Point ``current`` back at the previous model and reject the one that was running."""
        state = self.load_state()
        previous = state.get("previous")
        if not previous or not (self.models / previous).is_dir():
            raise AgentError(f"no previous model in {self.models} to roll back to")
        bad = state["current"]
        if bad:
            state["rejected"][self._key_of(bad)] = {"at": utc_now(), "reason": reason}
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
    """Check every ``interval_s`` seconds until ``stop()``; each check's outcome is logged and saved.

    Nothing a check raises ends the polling (a corrupt state.json, a full disk): it is logged in one
    line (the traceback at debug level) and the next check tries again.
    """
    while not stop():
        try:
            agent.check()
        except Exception as exc:
            log.warning("check failed (%s: %s); trying again in %s s", type(exc).__name__, exc, interval_s)
            log.debug("traceback of the failed check", exc_info=exc)
        deadline = time.monotonic() + interval_s
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, interval_s))
