"""How each step type runs on this machine, honouring the SageMaker container contracts.

Processing: inputs copied from local S3 into a temporary ``/opt/ml``-like tree, the container's entrypoint
run with this interpreter, outputs copied back to local S3 after success; ``InstanceCount: N`` runs N
processes, each in its own tree with its own ``resourceconfig.json`` and its share of a
``ShardedByS3Key`` input, and their outputs land under the same prefixes. Training: the TensorFlow
script-mode contract (``sagemaker_submit_directory`` extracted to ``/opt/ml/code``, ``sagemaker_program``
run with the other hyperparameters as ``--key value``, ``SM_*`` variables, ``model.tar.gz``).
RegisterModel / Model: the local registry. Each runner takes the step's *resolved* arguments and returns
its properties (what ``Steps.<name>....`` refers to) and property files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.atomic_files import FILE_MODE, IN_PROGRESS_PREFIX, in_progress_prefix
from edge.folders import FolderError, files_under
from edge.local_readers import ACCOUNT_ID
from edge.s3_uri import split_s3_uri
from pipelines.datasets import DatasetError, read_manifest
from pipelines.local import builtin, environments
from pipelines.local.expressions import to_string
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client

OPT_ML = "/opt/ml"
LOG_TAIL_LINES = 40
MODEL_TAR_COMPRESSLEVEL = 1
KILL_GRACE_S = 5.0
SAGEMAKER_HYPERPARAMETERS = (  # read by the framework container itself, not passed to the script
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "sagemaker_enable_cloudwatch_metrics",
)
# Failure kinds, named as SageMaker retry policies name them; an AlgorithmError (the script failed) is
# never retried by SageMaker, and so not here either. A step process that dies by a signal (killed for
# memory, a crash) or overruns MaxRuntimeInSeconds is one too: on AWS the container's death fails the
# job as "AlgorithmError: Exit Code: 139" (https://github.com/aws/sagemaker-python-sdk/issues/134), no
# InsufficientCapacityError, which is all SageMaker.CAPACITY_ERROR retries.
ALGORITHM_ERROR = "AlgorithmError"
CAPACITY_ERROR = "SageMaker.CAPACITY_ERROR"  # EC2 had no instance to give: never the case locally
INTERNAL_ERROR = "SageMaker.JOB_INTERNAL_ERROR"
SERVICE_FAULT = "Step.SERVICE_FAULT"
# A request AWS or local S3 refuses (a key a folder cannot hold, a link out of a folder): no retry
# policy names it, so it is never retried.
REQUEST_REFUSED = "ValidationException"
# How SageMaker's FailureReason starts when a job's inputs cannot be read (a manifest or an object it lists
# is missing): the request's fault, named by no retry policy, so never retried.
CLIENT_ERROR = "ClientError"
# ProcessingS3Input.S3DataType: every object under S3Uri, or those the manifest at S3Uri lists
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html).
PROCESSING_DATA_TYPES = ("S3Prefix", "ManifestFile")


class StepFailed(Exception):
    """A step that failed; ``kind`` decides whether a retry policy applies."""

    def __init__(self, reason: str, kind: str = ALGORITHM_ERROR, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.kind, self.log_tail = reason, kind, log_tail


class StepStopped(Exception):
    """The execution was stopped (Ctrl-C, SIGTERM) while the step ran."""


@dataclass
class StepJob:
    """What a runner needs: where to work, the clients, and how to report its process."""

    step_name: str
    job_name: str
    workspace: Path
    s3: LocalS3Client
    sagemaker: LocalSageMakerClient
    region: str
    log_path: Path
    base_env: dict[str, str]
    stop: threading.Event
    processes: set[subprocess.Popen] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    keep_temp_on_failure: bool = True


@dataclass
class StepOutcome:
    properties: dict[str, Any]
    property_files: dict[str, Any] = field(default_factory=dict)
    script_seconds: float = 0.0


# ---------------------------------------------------------------- container paths
def map_container_path(value: str, opt_ml: Path) -> str:
    """``/opt/ml/...`` -> ``<tmp>/opt/ml/...`` at the start of a value, after ``=`` or in a ``:`` list."""
    return re.sub(r"(^|=|:)/opt/ml(?=/|$)", lambda m: m.group(1) + str(opt_ml), value)


def command_line(
    entrypoint: list[str], arguments: list[Any], opt_ml: Path, python: str = sys.executable
) -> list[str]:
    """The container command with ``python`` (the image's local environment) for ``python``/``python3``."""
    command = [to_string(part) for part in [*entrypoint, *arguments]]
    if (
        command
        and command[0] in ("python", "python3")
        or command
        and re.fullmatch(r".*/python3?(\.\d+)?", command[0])
    ):
        command[0] = python
    return [map_container_path(part, opt_ml) for part in command]


def step_python(job: StepJob, image_uri: str) -> str:
    """The interpreter of the local environment standing in for the step's image (built on first use)."""

    def note(message: str) -> None:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "a") as log:
            log.write(f"[local executor] {message}\n")
        environments.print_note(message)

    try:
        return environments.interpreter(
            image_uri, job.workspace, note=note,
            run=lambda command: run_process(job, command, dict(job.base_env), job.workspace, None),
        )  # fmt: skip
    except environments.EnvironmentUnavailable as unavailable:
        raise StepFailed(str(unavailable), INTERNAL_ERROR) from None
    except StepFailed as failed:
        failed.kind = INTERNAL_ERROR
        failed.reason = f"building the local environment for {image_uri} failed ({failed.reason}): " + (
            environments.pip_errors(failed.log_tail)
        )
        raise


def container_env(environment: dict[str, Any], base: dict[str, str], opt_ml: Path) -> dict[str, str]:
    env = dict(base)
    env.update(
        {key: map_container_path(to_string(value), opt_ml) for key, value in (environment or {}).items()}
    )
    return env


def local_path(container_path: str, opt_ml: Path, *, under: str) -> Path:
    """A container path the definition names, inside the temporary tree; refuses paths outside ``under``."""
    if not container_path.startswith(under + "/") and container_path != under:
        raise StepFailed(f"container path {container_path} is not under {under}", INTERNAL_ERROR)
    relative = Path(container_path).relative_to(OPT_ML)
    if ".." in relative.parts:
        raise StepFailed(f"container path {container_path} escapes {under}", INTERNAL_ERROR)
    return opt_ml / relative


# ---------------------------------------------------------------- local S3 <-> folders
def folder_files(root: Path, *, skip_in_progress: bool = True) -> list[tuple[str, Path]]:
    """Every file under ``root`` (``edge.folders``: links followed once within the folder, loops and links
    out refused); ``skip_in_progress`` leaves out files being written (``.tmp-*``: never objects)."""
    skip = (lambda name: name.startswith(IN_PROGRESS_PREFIX)) if skip_in_progress else None
    return files_under(root, skip=skip)


def _folder_files(root: Path) -> list[tuple[str, Path]]:
    """``folder_files`` for a step: what it refuses fails the step (never retried)."""
    try:
        return folder_files(root)
    except FolderError as exc:
        raise StepFailed(str(exc), REQUEST_REFUSED) from None


def local_s3_path(s3: LocalS3Client, uri: str, role: str) -> Path:
    """The local path of an S3 URI a step names (``role``: "input", "output"...), or the step fails with
    the reason local S3 cannot hold it (``LocalS3Client.uri_to_path``): never a path outside a bucket."""
    try:
        return s3.uri_to_path(uri)
    except ValueError as exc:
        raise StepFailed(f"{role} {uri}: {exc}", REQUEST_REFUSED) from None


def s3_source(s3: LocalS3Client, uri: str) -> tuple[Path, bool]:
    """Where an S3 URI's objects are on disk and whether it names a single object (else a prefix)."""
    path = local_s3_path(s3, uri, "S3 URI")
    if path.is_file() and not uri.endswith("/"):
        return path, True
    return path, False


def _bucket_folder(s3: LocalS3Client, uri: str, role: str) -> Path:
    bucket, _ = split_s3_uri(uri)
    return local_s3_path(s3, f"s3://{bucket}/", role)


def prefix_files(s3: LocalS3Client, uri: str) -> list[tuple[str, Path]]:
    """Every object an ``S3Prefix`` URI names, in key order, as (where it lands below LocalPath, file).

    On AWS the URI is a key name prefix, not a folder: "SageMaker uses all objects with the specified key
    name prefix" (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_S3DataSource.html), so
    ``s3://b/data/part`` names ``data/part-0.csv`` and ``data/part/x`` alike. Where each lands those pages
    do not say; what AWS does (https://github.com/aws/sagemaker-python-sdk/issues/3612): an object below
    the prefix taken as a folder keeps its path below it (``x``), one whose name the prefix cuts into
    keeps its whole name (``part-0.csv``), as an exact key keeps its basename. Two objects landing on
    one path fail the step, naming both (AWS does not say which would win).
    """
    bucket, key = split_s3_uri(uri)
    source = local_s3_path(s3, uri, "input")
    if not key or key.endswith("/"):
        return _folder_files(source) if source.is_dir() else []
    folder_key, _, stem = key.rpartition("/")
    try:
        names = sorted(p.name for p in source.parent.iterdir()) if source.parent.is_dir() else []
    except OSError as exc:
        raise StepFailed(
            f"input {uri}: cannot list {source.parent}: {exc.strerror}", REQUEST_REFUSED
        ) from None
    folder = f"{folder_key}/" if folder_key else ""
    found: list[tuple[str, str, Path]] = []  # (key, where it lands, file)
    for name in names:
        if not name.startswith(stem) or name.startswith(IN_PROGRESS_PREFIX):
            continue
        path = local_s3_path(s3, f"s3://{bucket}/{folder}{name}", "input")
        if path.is_file():
            found.append((folder + name, name, path))
        elif path.is_dir():
            below = name == stem  # the prefix names this folder: its objects keep their paths below it
            found += [
                (f"{folder}{name}/{rel}", rel if below else f"{name}/{rel}", file)
                for rel, file in _folder_files(path)
            ]
        else:  # a dangling link, a FIFO: refused, as every folder walk refuses it (edge.folders)
            raise StepFailed(f"input {uri}: {path} is neither a file nor a folder", REQUEST_REFUSED)
    landed: dict[str, str] = {}
    for object_key, landing, _ in sorted(found):
        if landing in landed:
            raise StepFailed(
                f"input {uri}: the objects {landed[landing]} and {object_key} would both land at {landing} "
                "below LocalPath (a key prefix matches them both); name one of them exactly",
                ALGORITHM_ERROR,
            )
        landed[landing] = object_key
    return [(landing, file) for _, landing, file in sorted(found)]


def download_s3(s3: LocalS3Client, uri: str, destination: Path, shard: tuple[int, int] = (0, 1)) -> int:
    """Copy the objects an S3 URI names (``prefix_files``: a key prefix) into ``destination`` as SageMaker
    File mode does; returns bytes copied.

    ``shard`` = (instance number, instances): the objects that instance gets (every instance-th in key
    order: ShardedByS3Key gives each about 1/n of the objects; which ones AWS does not document).
    """
    bucket_folder = _bucket_folder(s3, uri, "input")
    if not bucket_folder.is_dir():
        raise StepFailed(
            f"input {uri}: the bucket {bucket_folder.name} does not exist in local S3 ({s3.base})",
            SERVICE_FAULT,
        )
    files = prefix_files(s3, uri)
    if not files:
        raise StepFailed(f"no objects found under {uri} (local S3 folder {bucket_folder})", ALGORITHM_ERROR)
    destination.mkdir(parents=True, exist_ok=True)
    number, instances = shard
    total = 0
    for relative, file in files[number::instances]:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
        total += file.stat().st_size
    return total


def upload_folder(s3: LocalS3Client, folder: Path, uri: str, *, move: bool = False) -> int:
    """Put a folder under an S3 prefix: staged completely first, then renamed into place file by file.

    Staging (the slow part) happens away from the destination, so a kill leaves at worst a few renamed
    files, never a truncated one. Objects already under the prefix are overwritten, not deleted, as an
    upload to S3 does. ``move`` moves the files instead of copying them (the job's temporary tree sits
    on the workspace's filesystem and is deleted afterwards anyway), falling back to a copy; a file
    reached through a symbolic link is copied (moving would move the link, or take the file from the
    folder the link leads to before that folder's turn).
    """
    bucket, key = split_s3_uri(uri)
    local_s3_path(s3, uri, "output")  # refuses a prefix local S3 cannot hold before anything is written
    bucket_folder = _bucket_folder(s3, uri, "output")
    bucket_folder.mkdir(parents=True, exist_ok=True)  # SageMaker's bucket exists; a local one may not
    files = _folder_files(folder)
    staging = s3.base / ".tmp" / f"{in_progress_prefix()}stage-{uuid.uuid4().hex}"
    try:
        staged = []
        for relative, file in files:
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            direct = Path(os.path.realpath(file)) == file.absolute()  # not reached through a link
            _move_or_copy(file, target) if move and direct else shutil.copyfile(file, target)
            staged.append((target, f"{key.rstrip('/')}/{relative}" if key else relative))
        for target, object_key in staged:
            try:
                destination = s3.writable_path(bucket, object_key, "PutObject")
            except ValueError as exc:
                raise StepFailed(f"output {uri}: {exc}", REQUEST_REFUSED) from None
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(files)


def _move_or_copy(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)


def download_manifest(s3: LocalS3Client, uri: str, destination: Path, shard: tuple[int, int] = (0, 1)) -> int:
    """A ``ManifestFile`` input as SageMaker downloads it: each listed object (the manifest's prefix plus
    the listed key) to ``destination/<listed key>``; returns bytes copied. A missing manifest or object
    fails the step naming it, before the script starts. ``shard`` as for ``download_s3``: with
    ShardedByS3Key each instance gets every instance-th listed object."""
    number, instances = shard
    manifest = local_s3_path(s3, uri, "input")
    if not manifest.is_file():
        raise StepFailed(f"input {uri}: no such manifest file in local S3 ({manifest})", CLIENT_ERROR)
    try:
        prefix, keys = read_manifest(manifest.read_bytes())
    except DatasetError as exc:
        raise StepFailed(f"input {uri}: {exc}", CLIENT_ERROR) from None
    total = 0
    for key in keys[number::instances]:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise StepFailed(
                f"input {uri}: the key {key!r} has no place under the input folder", CLIENT_ERROR
            )
        source = local_s3_path(s3, prefix + key, "input")
        if not source.is_file():
            raise StepFailed(
                f"input {uri} lists {prefix}{key}, which does not exist (local S3: {source})", CLIENT_ERROR
            )
        target = destination.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        total += source.stat().st_size
    return total


def output_property_files(
    s3: LocalS3Client, properties: dict[str, Any], specs: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A finished Processing step's property files, read from its uploaded outputs; None if one is gone."""
    outputs = {
        o["OutputName"]: o["S3Output"]["S3Uri"]
        for o in properties.get("ProcessingOutputConfig", {}).get("Outputs", [])
    }
    files = {}
    for spec in specs:
        if spec["OutputName"] not in outputs:
            return None
        path = s3.uri_to_path(f"{outputs[spec['OutputName']].rstrip('/')}/{spec['FilePath']}")
        try:
            files[spec["PropertyFileName"]] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return files


def s3_exists(s3: LocalS3Client, uri: str) -> bool:
    source, single = s3_source(s3, uri)
    return single or (source.is_dir() and bool(_folder_files(source)))


# ---------------------------------------------------------------- processes
def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


SUPERVISOR = Path(__file__).with_name("supervise.py")


def supervised(command: list[str]) -> list[str]:
    """``command`` under ``supervise.py``: it and everything it starts die with this process (``kill -9``
    included), in their own process group."""
    return [sys.executable, "-I", "-S", str(SUPERVISOR), str(os.getpid()), *command]


def run_process(
    job: StepJob, command: list[str], env: dict[str, str], cwd: Path, max_runtime_s: float | None
) -> float:
    """Run a step's process with its output appended to the step log; returns its wall time in seconds."""
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_path, "ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        started = time.perf_counter()
        with job.lock:  # a stop either comes first (no process) or finds the process to terminate
            if job.stop.is_set():
                raise StepStopped()
            process = subprocess.Popen(
                supervised(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopping the step stops its children too
            )  # fmt: skip
            job.processes.add(process)
        try:
            try:
                returncode = process.wait(timeout=max_runtime_s)
            except subprocess.TimeoutExpired:
                terminate(process)
                raise StepFailed(
                    f"stopped after MaxRuntimeInSeconds={max_runtime_s:.0f}",
                    ALGORITHM_ERROR,
                    log_tail(job.log_path),
                ) from None
        finally:
            with job.lock:
                job.processes.discard(process)
        seconds = time.perf_counter() - started
    if job.stop.is_set():
        raise StepStopped()
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        raise StepFailed(f"the process was killed by {name}", ALGORITHM_ERROR, log_tail(job.log_path))
    if returncode != 0:
        raise StepFailed(
            f"the process exited with status {returncode}", ALGORITHM_ERROR, log_tail(job.log_path)
        )
    return seconds


def terminate(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


TREE_OWNER = ".owner.json"  # {"pid", "host"} of the executor using a temporary tree
TREE_KEPT = ".kept"  # a failed step's tree, kept on purpose for a look inside


@contextlib.contextmanager
def job_tree(job: StepJob):
    """A temporary ``/opt/ml`` root in the workspace (kept after a failure, for a look inside).

    The tree names its owner (``TREE_OWNER``), so the next run removes a tree whose executor was killed
    and leaves alone one a live executor still uses (``executor.clean_abandoned``).
    """
    tmp_root = job.workspace / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{job.step_name}-", dir=tmp_root))
    (directory / TREE_OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    failed = False
    try:
        yield directory / "opt" / "ml"
    except BaseException:
        failed = True
        raise
    finally:
        if failed and job.keep_temp_on_failure:
            with contextlib.suppress(OSError):
                (directory / TREE_KEPT).touch()
        else:
            shutil.rmtree(directory, ignore_errors=True)


def _arn(region: str, resource: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:{resource}"


# ---------------------------------------------------------------- Processing
def instance_hosts(arguments: dict[str, Any]) -> list[str]:
    """The hosts of a Processing job's instances, as SageMaker names them in ``resourceconfig.json``
    (https://docs.aws.amazon.com/sagemaker/latest/dg/build-your-own-processing-container.html)."""
    count = int(arguments.get("ProcessingResources", {}).get("ClusterConfig", {}).get("InstanceCount", 1))
    return [f"algo-{number}" for number in range(1, count + 1)]


def run_processing(
    job: StepJob, arguments: dict[str, Any], property_files: list[dict[str, Any]]
) -> StepOutcome:
    """Each instance in turn (on AWS they run at once), then, once all have succeeded, every instance's
    outputs under the outputs' prefixes: SageMaker uploads EndOfJob outputs when the job completes,
    and the job completes only when every instance exits 0."""
    outputs = arguments.get("ProcessingOutputConfig", {}).get("Outputs", [])
    hosts = instance_hosts(arguments)
    seconds = 0.0
    with contextlib.ExitStack() as trees:
        instances: list[dict[str, Path]] = []  # each instance's output folders, by output name
        for number in range(len(hosts)):
            opt_ml = trees.enter_context(job_tree(job))
            output_dirs, instance_seconds = _run_instance(job, arguments, opt_ml, (number, hosts))
            instances.append(output_dirs)
            seconds += instance_seconds
        _refuse_colliding_outputs(job, instances, hosts)
        files = {}
        for spec in property_files:
            found = [
                dirs[spec["OutputName"]] / spec["FilePath"]
                for dirs in instances
                if spec["OutputName"] in dirs
            ]
            path = next((p for p in found if p.is_file()), None)
            if path is None:
                raise StepFailed(
                    f"property file {spec['PropertyFileName']}: {spec['FilePath']} was not written to output "
                    f"{spec['OutputName']}",
                    ALGORITHM_ERROR,
                    log_tail(job.log_path),
                )
            try:
                files[spec["PropertyFileName"]] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise StepFailed(
                    f"property file {spec['FilePath']} is not JSON: {exc}", ALGORITHM_ERROR
                ) from None
        for output_dirs in instances:  # after success only, as SageMaker uploads EndOfJob outputs
            for spec in outputs:
                folder = output_dirs[spec["OutputName"]]
                # Moving is safe unless another output's folder overlaps this one (it must see the files too).
                alone = not any(
                    o != folder and (o.is_relative_to(folder) or folder.is_relative_to(o))
                    for o in output_dirs.values()
                )
                upload_folder(job.s3, folder, spec["S3Output"]["S3Uri"], move=alone)
    properties = {
        **arguments,
        "ProcessingJobName": job.job_name,
        "ProcessingJobArn": _arn(job.region, f"processing-job/{job.job_name.lower()}"),
        "ProcessingJobStatus": "Completed",
        "ExitMessage": "",
    }
    return StepOutcome(properties, files, seconds)


def _run_instance(
    job: StepJob, arguments: dict[str, Any], opt_ml: Path, instance: tuple[int, list[str]]
) -> tuple[dict[str, Path], float]:
    """One instance in its own tree: its inputs (its share of a ShardedByS3Key one), its config files,
    its process. Returns its output folders and the process's wall time."""
    number, hosts = instance
    app = arguments.get("AppSpecification", {})
    for spec in arguments.get("ProcessingInputs", []):
        s3_input = spec["S3Input"]
        sharded = s3_input.get("S3DataDistributionType") == "ShardedByS3Key"
        download = download_manifest if s3_input.get("S3DataType") == "ManifestFile" else download_s3
        download(
            job.s3,
            s3_input["S3Uri"],
            local_path(s3_input["LocalPath"], opt_ml, under="/opt/ml/processing"),
            shard=(number, len(hosts)) if sharded else (0, 1),
        )
    output_dirs = {}
    for spec in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        folder = local_path(spec["S3Output"]["LocalPath"], opt_ml, under="/opt/ml/processing")
        folder.mkdir(parents=True, exist_ok=True)
        output_dirs[spec["OutputName"]] = folder
    _write_json(
        opt_ml / "config" / "processingjobconfig.json", {**arguments, "ProcessingJobName": job.job_name}
    )
    _write_json(opt_ml / "config" / "resourceconfig.json", {"current_host": hosts[number], "hosts": hosts})
    python = step_python(job, app.get("ImageUri", ""))
    command = command_line(
        app.get("ContainerEntrypoint") or [], app.get("ContainerArguments") or [], opt_ml, python
    )
    if not command:
        raise StepFailed(
            "AppSpecification has no ContainerEntrypoint: nothing to run locally", INTERNAL_ERROR
        )
    env = environments.on_path(container_env(arguments.get("Environment", {}), job.base_env, opt_ml), python)
    max_runtime = arguments.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    return output_dirs, run_process(job, command, env, opt_ml.parent.parent, max_runtime)


def _refuse_colliding_outputs(job: StepJob, instances: list[dict[str, Path]], hosts: list[str]) -> None:
    """Two instances' files of the same name in one output: on AWS one upload would silently replace
    the other under the shared prefix, so the step fails here instead, naming the file."""
    for name in instances[0] if len(instances) > 1 else ():
        writers: dict[str, str] = {}
        for host, output_dirs in zip(hosts, instances, strict=True):
            folder = output_dirs[name]
            for relative, _ in _folder_files(folder):
                if relative in writers:
                    raise StepFailed(
                        f"output {name}: instances {writers[relative]} and {host} both wrote {relative}; "
                        "under one S3 prefix one would replace the other (name each instance's files "
                        "after its host in /opt/ml/config/resourceconfig.json)",
                        ALGORITHM_ERROR,
                        log_tail(job.log_path),
                    )
                writers[relative] = host


# ---------------------------------------------------------------- Training (TensorFlow script mode)
def decode_hyperparameters(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """As sagemaker-training-toolkit reads hyperparameters.json: each value JSON-decoded where it parses."""
    decoded = {}
    for key, value in hyperparameters.items():
        try:
            decoded[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            decoded[key] = value
    return decoded


def to_cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """sagemaker-training-toolkit's ``mapping.to_cmd_args``: sorted ``--key value``, dicts as ``k=v,...``."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        args.append(f"--{key}" if len(key) > 1 else f"-{key}")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append(str(value))
    return args


def training_env(
    job: StepJob, opt_ml: Path, hyperparameters: dict[str, Any], user_hps: dict[str, Any],
    channels: list[str], program: str,
) -> dict[str, str]:  # fmt: skip
    """The ``SM_*`` variables the framework container sets for a script-mode job."""
    cpus = os.cpu_count() or 1
    env = {
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DIR": str(opt_ml / "output"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(opt_ml / "output" / "intermediate"),
        "SM_INPUT_DIR": str(opt_ml / "input"),
        "SM_INPUT_CONFIG_DIR": str(opt_ml / "input" / "config"),
        "SM_INPUT_DATA_CONFIG": _compact_json({c: {"TrainingInputMode": "File"} for c in channels}),
        "SM_CHANNELS": _compact_json(sorted(channels)),
        "SM_HPS": _compact_json(user_hps),
        "SM_USER_ARGS": _compact_json(to_cmd_args(user_hps)),
        "SM_NUM_CPUS": str(cpus),
        "SM_NUM_GPUS": "0",
        "SM_NUM_NEURONS": "0",
        "SM_HOSTS": _compact_json(["algo-1"]),
        "SM_CURRENT_HOST": "algo-1",
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "SM_MODULE_DIR": str(hyperparameters.get("sagemaker_submit_directory", "")),
        "SM_MODULE_NAME": Path(program).stem,
        "SM_USER_ENTRY_POINT": program,
        "SM_LOG_LEVEL": str(hyperparameters.get("sagemaker_container_log_level", 20)),
        "SM_FRAMEWORK_MODULE": "sagemaker_tensorflow_container.training:main",
        "SM_CURRENT_INSTANCE_TYPE": "local",
        "TRAINING_JOB_NAME": job.job_name,
    }
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = str(opt_ml / "input" / "data" / channel)
    for key, value in user_hps.items():  # SM_HP_<KEY> as the toolkit spells it (dashes kept)
        env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else _compact_json(value)
    return env


def _compact_json(value: Any) -> str:
    """How sagemaker-training-toolkit writes non-string values into SM_* variables."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def run_training(job: StepJob, arguments: dict[str, Any]) -> StepOutcome:
    raw_hps = {key: to_string(value) for key, value in (arguments.get("HyperParameters") or {}).items()}
    hyperparameters = decode_hyperparameters(raw_hps)
    program = hyperparameters.get("sagemaker_program")
    submit = hyperparameters.get("sagemaker_submit_directory")
    training_image = arguments.get("AlgorithmSpecification", {}).get("TrainingImage", "")
    stand_in = None if program else built_in_stand_in(training_image)
    if stand_in:
        program = stand_in
    elif not program or not submit:
        raise StepFailed(
            "local training runs script mode and the built-in algorithms with a local stand-in "
            f"({', '.join(builtin.STAND_INS)}) only: HyperParameters need sagemaker_program and "
            "sagemaker_submit_directory (JSON-quoted, see docs/design.md)",
            INTERNAL_ERROR,
        )
    user_hps = {k: v for k, v in hyperparameters.items() if k not in SAGEMAKER_HYPERPARAMETERS}
    channels = [c["ChannelName"] for c in arguments.get("InputDataConfig", [])]
    output_path = arguments.get("OutputDataConfig", {}).get("S3OutputPath")
    if not output_path:
        raise StepFailed("OutputDataConfig.S3OutputPath is missing", INTERNAL_ERROR)
    with job_tree(job) as opt_ml:
        code_dir = opt_ml / "code"
        code_dir.mkdir(parents=True)
        if stand_in:  # the project's own code, as a framework container would get it
            from pipelines.code_bundle import CodeBundle

            sourcedir = CodeBundle(bucket="local", prefix="stand-in").step(stand_in).sourcedir
            with tarfile.open(fileobj=io.BytesIO(sourcedir)) as tar:
                tar.extractall(code_dir, filter="data")
        else:
            archive = local_s3_path(job.s3, submit, "sagemaker_submit_directory")
            if not archive.is_file():
                missing = f"sagemaker_submit_directory {submit} does not exist in local S3 ({archive})"
                raise StepFailed(missing)
            with tarfile.open(archive) as tar:
                tar.extractall(code_dir, filter="data")
        if not (code_dir / program).is_file():
            raise StepFailed(f"sagemaker_program {program} is not in {submit}")
        for channel in arguments.get("InputDataConfig", []):
            source = channel["DataSource"].get("S3DataSource")
            if source is None:
                raise StepFailed(
                    f"channel {channel['ChannelName']}: only S3DataSource runs locally", INTERNAL_ERROR
                )
            destination = opt_ml / "input" / "data" / channel["ChannelName"]
            if source.get("S3DataType") == "AugmentedManifestFile":
                try:
                    builtin.materialise_augmented_manifest(
                        job.s3, source["S3Uri"], list(source.get("AttributeNames") or []), destination
                    )
                except builtin.ChannelError as exc:
                    raise StepFailed(f"channel {channel['ChannelName']}: {exc}", CLIENT_ERROR) from None
            else:
                download_s3(job.s3, source["S3Uri"], destination)
        for folder in ("model", "output/data", "output/intermediate", "input/config"):
            (opt_ml / folder).mkdir(parents=True, exist_ok=True)
        _write_json(opt_ml / "input" / "config" / "hyperparameters.json", raw_hps)
        _write_json(
            opt_ml / "input" / "config" / "inputdataconfig.json",
            {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for c in channels},
        )
        _write_json(
            opt_ml / "input" / "config" / "resourceconfig.json",
            {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"},
        )
        env = container_env(arguments.get("Environment", {}), job.base_env, opt_ml)
        env.update(training_env(job, opt_ml, hyperparameters, user_hps, channels, program))
        # The toolkit puts the code directory first on the module path, ahead of the job's own entries.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH", "")) if p)
        # The framework container runs the program with its own Python: here, the image's environment's.
        python = step_python(job, arguments.get("AlgorithmSpecification", {}).get("TrainingImage", ""))
        env = environments.on_path(env, python)
        command = [python, str(code_dir / program), *to_cmd_args(user_hps)]
        max_runtime = arguments.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        try:
            seconds = run_process(job, command, env, code_dir, max_runtime)
        except StepFailed as failed:
            failure = opt_ml / "output" / "failure"  # the toolkit's convention for the reason
            if failure.is_file() and failure.read_text().strip():
                failed.reason = f"{failed.reason}: {failure.read_text().strip()[:500]}"
            raise
        model_uri = model_artifacts_uri(output_path, job.job_name)
        _upload_tar(job.s3, opt_ml / "model", model_uri)
        if any((opt_ml / "output" / "data").iterdir()):
            _upload_tar(
                job.s3,
                opt_ml / "output" / "data",
                f"{output_path.rstrip('/')}/{job.job_name}/output/output.tar.gz",
            )
    metrics = training_metrics(
        job.log_path, arguments.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
    )
    properties = {
        **arguments,
        "TrainingJobName": job.job_name,
        "TrainingJobArn": _arn(job.region, f"training-job/{job.job_name.lower()}"),
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "ModelArtifacts": {"S3ModelArtifacts": model_uri},
        "FinalMetricDataList": metrics,
    }
    return StepOutcome(properties, {}, seconds)


def built_in_stand_in(image_uri: str) -> str | None:
    """The project script standing in for the built-in algorithm ``image_uri`` runs, or None."""
    image = environments.parse_image_uri(image_uri)
    if image is None or image.repository not in builtin.STAND_INS:
        return None
    environments.image_family(image_uri)  # the region's registry account, or EnvironmentUnavailable
    return builtin.stand_in_program(image.repository)


def model_artifacts_uri(output_path: str, job_name: str) -> str:
    """Where SageMaker puts a training job's ``model.tar.gz`` (``ModelArtifacts.S3ModelArtifacts``)."""
    return f"{output_path.rstrip('/')}/{job_name}/output/model.tar.gz"


def training_metrics(log_path: Path, definitions: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The last value each MetricDefinition's regex finds in the log, as FinalMetricDataList."""
    if not definitions or not log_path.is_file():
        return []
    text = log_path.read_text(errors="replace")
    metrics = []
    for definition in definitions:
        found = re.findall(definition["Regex"], text)
        if found:
            value = found[-1][0] if isinstance(found[-1], tuple) else found[-1]
            with contextlib.suppress(ValueError):
                metrics.append(
                    {"MetricName": definition["Name"], "Value": float(value), "Timestamp": time.time()}
                )
    return metrics


def _upload_tar(s3: LocalS3Client, folder: Path, uri: str) -> None:
    """``folder`` as a tar.gz at ``uri``, written to a temporary name and renamed (never half a model)."""
    destination = local_s3_path(s3, uri, "model artifacts")
    if destination.is_dir() or not destination.name or uri.endswith("/"):
        raise StepFailed(f"model artifacts {uri}: not an object key", REQUEST_REFUSED)
    _bucket_folder(s3, uri, "model artifacts").mkdir(parents=True, exist_ok=True)
    staging = s3.base / ".tmp"
    staging.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=staging, prefix=in_progress_prefix(), suffix=".tar.gz")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        # Weights barely compress: the fastest level costs ~1 % in size and saves seconds per model.
        with tarfile.open(tmp, "w:gz", compresslevel=MODEL_TAR_COMPRESSLEVEL) as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, destination)  # staging and the bucket share the workspace's filesystem
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str))


# ---------------------------------------------------------------- RegisterModel, Model, Fail
def _stringify_maps(request: dict[str, Any]) -> dict[str, Any]:
    """String maps (metadata, container environment) hold strings on AWS; resolved JsonGets may not."""
    request = json.loads(json.dumps(request, default=str))
    if "CustomerMetadataProperties" in request:
        request["CustomerMetadataProperties"] = {
            k: to_string(v) for k, v in request["CustomerMetadataProperties"].items()
        }
    specs = [
        request.get("InferenceSpecification") or {},
        *(request.get("AdditionalInferenceSpecifications") or []),
    ]
    for spec in specs:
        for container in spec.get("Containers", []):
            if "Environment" in container:
                container["Environment"] = {k: to_string(v) for k, v in container["Environment"].items()}
    return request


def run_register(job: StepJob, arguments: dict[str, Any]) -> StepOutcome:
    """CreateModelPackage in the local registry; the group is created if missing, as the step does on AWS."""
    from botocore.exceptions import ParamValidationError  # the local clients are botocore-validated here

    request = _stringify_maps(arguments)
    group = request.get("ModelPackageGroupName")
    if not group:
        raise StepFailed("RegisterModel without ModelPackageGroupName: the local registry is versioned only")
    try:
        job.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
    except job.sagemaker.exceptions.ClientError:
        job.sagemaker.create_model_package_group(ModelPackageGroupName=group)
    try:
        arn = job.sagemaker.create_model_package(**request)["ModelPackageArn"]
    except job.sagemaker.exceptions.ClientError as exc:
        raise StepFailed(f"CreateModelPackage: {exc}") from None
    except (ValueError, ParamValidationError) as exc:  # botocore's is no ValueError; the stand-in's is
        raise StepFailed(f"CreateModelPackage: {exc}") from None
    described = job.sagemaker.describe_model_package(ModelPackageName=arn)
    described.pop("ResponseMetadata", None)
    properties = json.loads(json.dumps(described, default=lambda v: v.isoformat()))
    return StepOutcome(properties)


def run_model(job: StepJob, arguments: dict[str, Any]) -> StepOutcome:
    """CreateModel: nothing to host locally, so it records the model's name and ARN."""
    name = job.job_name
    return StepOutcome(
        {**arguments, "ModelName": name, "ModelArn": _arn(job.region, f"model/{name.lower()}")}
    )


RUNNERS: dict[str, Callable[..., StepOutcome]] = {
    "Processing": run_processing,
    "Training": run_training,
    "RegisterModel": run_register,
    "Model": run_model,
}
