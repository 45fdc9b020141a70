"""SageMaker Neo for CompileForEdge: target devices, the CreateCompilationJob request, jobs and outputs.

What Neo gets is one ``.onnx`` within ONNX 1.7 in a tar.gz (``processing/onnx_export.py``, docs/neo.md).
The request per target, as the API reference documents it
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateCompilationJob.html):

* ``InputConfig``: ``S3Uri`` of that archive, ``Framework`` ``ONNX`` and ``DataInputConfig``
  ``{"<input name>": [1, 3, H, W]}`` (MXNET/ONNX/DARKNET take the NCHW shape,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_InputConfig.html). No
  ``FrameworkVersion`` for ONNX: the same page says it "is only supported for the MXNet, PyTorch,
  TensorFlow and TensorFlow Lite frameworks". The classifier (``processing/compile_classifier.py``)
  sends its MXNet symbol and params instead, framework ``MXNET`` with a ``FrameworkVersion``.
* ``OutputConfig``: ``S3OutputLocation`` (one prefix per target), ``TargetDevice`` and, where the table
  in ``neo_targets.json`` has a row, ``CompilerOptions`` (required for NVIDIA accelerators,
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_OutputConfig.html).
* ``RoleArn``, ``StoppingCondition.MaxRuntimeInSeconds`` and a ``CompilationJobName`` within the
  ``EntityName`` pattern ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``.

Nothing here imports ONNX or TensorFlow: the control plane imports ``parse_targets`` from here.
"""

from __future__ import annotations

import difflib
import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edge.archives import write_reproducible_tar_gz
from edge.artifacts import sha256_file
from edge.frames import INPUT_SCALING
from edge.s3_uri import split_s3_uri
from processing.edge_package import (
    PACKAGE_NAME,
    CompileError,
    CompileFailed,
    base_manifest,
    compiled_entry,
    finish_manifest,
    json_bytes,
    log,
    write_package,
)

NEO_TARGETS = Path(__file__).with_name("neo_targets.json")
NEO_FRAMEWORK = "ONNX"
NEO_INPUT_NAME = "neo-input.tar.gz"  # the archive Neo reads: one .onnx, nothing else
NEO_ONNX_FILE = "model.onnx"
NEO_INPUT_PREFIX = "input"  # under --output-s3-uri, next to Neo's per-target output folders
REQUEST_NAME = "create_compilation_job.json"  # what --dry-run writes per target
JOB_NAME_MAX = 63  # EntityName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
NEO_DONE = {"COMPLETED"}
NEO_FAILED = {"FAILED", "STOPPED"}


# ----------------------------------------------------------------------------------------- targets


@cache
def _neo_targets() -> dict[str, Any]:
    return json.loads(NEO_TARGETS.read_text())


def vendored_target_devices() -> list[str]:
    """Neo's TargetDevice names as shipped with this script (for containers and devices without botocore)."""
    return list(_neo_targets()["target_devices"])


def botocore_target_devices() -> list[str] | None:
    """The TargetDevice enum of the installed botocore's SageMaker model, or None without botocore."""
    try:
        import botocore.session
    except ImportError:
        return None
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TargetDevice").enum)


def target_devices() -> list[str]:
    return botocore_target_devices() or vendored_target_devices()


def parse_targets(text: str, allowed: Sequence[str]) -> list[str]:
    """``"jetson_nano,rasp4b"`` -> de-duplicated targets in order, each a Neo TargetDevice."""
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not targets:
        raise CompileError("--targets is empty: name at least one Neo target device, e.g. jetson_nano")
    for target in targets:
        if target not in allowed:
            close = difflib.get_close_matches(target, allowed, n=3)
            hint = (
                f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(allowed))}"
            )
            raise CompileError(f"unknown Neo target device {target!r}{hint}")
    return targets


def compiler_options(target: str) -> dict[str, Any] | None:
    """The target's CompilerOptions from the one table (neo_targets.json, with its documentation URLs)."""
    return _neo_targets()["compiler_options"]["targets"].get(target)


# ----------------------------------------------------------------------------------------- request


@dataclass(frozen=True)
class NeoInput:
    """The archive Neo compiles and the input it declares (name and NCHW shape, batch first)."""

    archive: Path
    input_name: str
    input_shape: tuple[int, ...]
    sha256: str
    framework: str = NEO_FRAMEWORK
    framework_version: str | None = None  # InputConfig.FrameworkVersion: MXNet, PyTorch, TF, TFLite only


def write_neo_input(onnx_bytes: bytes, dest: Path, input_name: str, input_shape: Sequence[int]) -> NeoInput:
    """The tar.gz Neo reads: exactly one ``model.onnx`` at its top level, reproducibly written."""
    package = write_reproducible_tar_gz({NEO_ONNX_FILE: onnx_bytes}, dest)
    return NeoInput(dest, input_name, tuple(int(d) for d in input_shape), package["sha256"])


def neo_input_s3_uri(output_s3_uri: str, neo_input: NeoInput) -> str:
    """Where the archive goes: content-addressed under the step's Neo prefix (same model, same key)."""
    return f"{output_s3_uri.rstrip('/')}/{NEO_INPUT_PREFIX}/{neo_input.sha256[:16]}/{NEO_INPUT_NAME}"


def neo_job_name(target: str, input_sha256: str, now: float) -> str:
    """Unique per Neo input, target and second, within EntityName's pattern and 63 characters."""
    name = f"robocar-{target.replace('_', '-')}-{input_sha256[:8]}-{int(now)}"
    return name[:JOB_NAME_MAX].rstrip("-")  # the pattern ends in a letter or digit


def input_config(s3_uri: str, neo_input: NeoInput) -> dict[str, Any]:
    config = {
        "S3Uri": s3_uri,
        "DataInputConfig": json.dumps({neo_input.input_name: list(neo_input.input_shape)}),
        "Framework": neo_input.framework,
    }
    if neo_input.framework_version is not None:
        config["FrameworkVersion"] = neo_input.framework_version
    return config


def compilation_job_request(
    name: str,
    target: str,
    inputs: Mapping[str, Any],
    output_s3_uri: str,
    role_arn: str,
    timeout_s: int,
) -> dict[str, Any]:
    """CreateCompilationJob's parameters for one target device."""
    output: dict[str, Any] = {
        "S3OutputLocation": f"{output_s3_uri.rstrip('/')}/{target}/",
        "TargetDevice": target,
    }
    options = compiler_options(target)
    if options is not None:
        output["CompilerOptions"] = json.dumps(options, sort_keys=True)  # "in JSON format" (OutputConfig)
    return {
        "CompilationJobName": name,
        "RoleArn": role_arn,
        "InputConfig": dict(inputs),
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": int(timeout_s)},
    }


def requests_for_targets(
    targets: Sequence[str],
    neo_input: NeoInput,
    *,
    input_s3_uri: str,
    output_s3_uri: str,
    role_arn: str,
    timeout_s: int,
    now: float,
) -> dict[str, dict[str, Any]]:
    """One request per target, all compiling the same input; job names carry the input's digest."""
    inputs = input_config(input_s3_uri, neo_input)
    # Neo's output goes under the input's digest, not under the execution: the step's arguments then
    # stay the same for the same model, so SageMaker's cache (AppSpecification is part of its key) can
    # serve the step, and two executions compiling different models never share a folder.
    output_base = f"{output_s3_uri.rstrip('/')}/{neo_input.sha256[:16]}"
    return {
        target: compilation_job_request(
            neo_job_name(target, neo_input.sha256, now), target, inputs, output_base, role_arn, timeout_s
        )
        for target in targets
    }


def write_dry_run(out_dir: Path, requests: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """``OUT/<target>/create_compilation_job.json``: each request exactly as it would be sent."""
    written = []
    for target, request in requests.items():
        path = out_dir / target / REQUEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(json_bytes(request))
        written.append(path)
    return written


# -------------------------------------------------------------------------------------------- jobs


def wait_for_compilation(
    sagemaker: Any,
    names: Sequence[str],
    timeout_s: float,
    *,
    first_delay_s: float = 5.0,
    max_delay_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """Poll DescribeCompilationJob for all jobs with exponential backoff; fail on the first failed job.

    Boto3 has no waiter for compilation jobs. On timeout the unfinished jobs are stopped.
    """
    deadline = clock() + timeout_s
    pending, done = list(names), {}
    delay = first_delay_s
    while True:
        for name in list(pending):
            job = sagemaker.describe_compilation_job(CompilationJobName=name)
            status = job["CompilationJobStatus"]
            if status in NEO_FAILED:
                reason = job.get("FailureReason") or "no FailureReason given"
                raise CompileFailed(f"Neo compilation job {name} {status}: {reason}")
            if status in NEO_DONE:
                done[name] = job
                pending.remove(name)
                log(f"{name} completed")
        if not pending:
            return done
        remaining = deadline - clock()
        if remaining <= 0:
            for name in pending:
                try:
                    sagemaker.stop_compilation_job(CompilationJobName=name)
                except Exception as exc:  # stopping is a courtesy; the timeout is the error to report
                    log(f"could not stop {name}: {exc}")
            raise CompileFailed(
                f"Neo compilation timed out after {timeout_s:.0f} s: {', '.join(pending)} unfinished"
            )
        log(f"waiting for {', '.join(pending)} ({remaining:.0f} s left)")
        sleep(min(delay, remaining))
        delay = min(delay * 2, max_delay_s)


def _bucket_and_key(uri: str) -> tuple[str, str]:
    try:
        return split_s3_uri(uri)
    except ValueError as exc:
        raise CompileError(str(exc)) from None


def download_neo_output(s3: Any, artifacts_uri: str, dest: Path) -> Path:
    """Neo's ``S3ModelArtifacts`` is the compiled archive's URI (or, seen in moto, its output prefix)."""
    bucket, key = _bucket_and_key(artifacts_uri)
    if not key.endswith(".tar.gz"):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        archives = [o["Key"] for o in listed if o["Key"].endswith(".tar.gz")]
        if len(archives) != 1:
            raise CompileError(f"expected one compiled .tar.gz under {artifacts_uri}, found {len(archives)}")
        key = archives[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(dest))
    return dest


def neo_artifact(
    meta: Mapping[str, Any], neo_input: NeoInput, archive: Path, job: Mapping[str, Any], uri: str
) -> dict[str, Any]:
    """The manifest entry of a Neo-compiled model (runtime DLR), fed the car's frames transposed to NCHW."""
    return {
        "file": "neo",
        "runtime": "dlr",
        "precision": "float32",
        "input": {
            "name": neo_input.input_name,
            "shape": [int(v) for v in meta["input"]["shape"]],  # the frames the car feeds: [H, W, 3]
            "layout": "NCHW",  # Neo compiled the ONNX model for [1, 3, H, W]: edge.runtimes transposes
            "dtype": "float32",
            "normalization": INPUT_SCALING.normalization,
            "quantization": None,
        },
        # The ONNX graph's outputs are angle then throttle (processing/onnx_export.py); Neo keeps them.
        "outputs": [
            {"name": n, "index": i, "dtype": "float32", "quantization": None}
            for i, n in enumerate(("angle", "throttle"))
        ],
        "sha256": sha256_file(archive),
        "size_bytes": archive.stat().st_size,
        # DLR does not run in the Processing container: the device's smoke test checks the output.
        "accuracy_delta": None,
        "neo": {
            "job_name": job["CompilationJobName"],
            "job_arn": job.get("CompilationJobArn"),
            "s3_uri": uri,
            "input_sha256": neo_input.sha256,
        },
    }


@dataclass(frozen=True)
class NeoOutput:
    """One target's finished job and its compiled output, downloaded and unpacked."""

    job: dict[str, Any]
    uri: str  # the job's S3ModelArtifacts
    archive: Path  # Neo's compiled tar.gz as downloaded
    files: dict[str, Path]  # package member name (neo/...) -> unpacked file


def run_compilation_jobs(
    sagemaker: Any,
    s3: Any,
    targets: Sequence[str],
    neo_input: NeoInput,
    *,
    output_s3_uri: str,
    role_arn: str,
    timeout_s: int,
    work: Path,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, NeoOutput]:
    """Upload the Neo input, start one job per target, wait for all, download each output into ``work``."""
    input_uri = neo_input_s3_uri(output_s3_uri, neo_input)
    s3.upload_file(str(neo_input.archive), *_bucket_and_key(input_uri))
    log(f"uploaded the Neo input ({neo_input.sha256[:12]}) to {input_uri}")
    requests = requests_for_targets(
        targets,
        neo_input,
        input_s3_uri=input_uri,
        output_s3_uri=output_s3_uri,
        role_arn=role_arn,
        timeout_s=timeout_s,
        now=time.time(),
    )
    for target, request in requests.items():
        sagemaker.create_compilation_job(**request)
        log(f"started Neo compilation job {request['CompilationJobName']} for {target}")
    names = [r["CompilationJobName"] for r in requests.values()]
    finished = wait_for_compilation(sagemaker, names, timeout_s, sleep=sleep, clock=clock)
    outputs = {}
    for target, request in requests.items():
        job = finished[request["CompilationJobName"]]
        uri = job["ModelArtifacts"]["S3ModelArtifacts"]
        archive = download_neo_output(s3, uri, work / target / "neo.tar.gz")
        unpacked = work / target / "neo"
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        files = {
            f"neo/{p.relative_to(unpacked).as_posix()}": p for p in sorted(unpacked.rglob("*")) if p.is_file()
        }
        outputs[target] = NeoOutput(job, uri, archive, files)
    return outputs


def compile_with_neo(
    sagemaker: Any,
    s3: Any,
    meta: Mapping[str, Any],
    targets: Sequence[str],
    neo_input: NeoInput,
    *,
    output_s3_uri: str,
    role_arn: str,
    timeout_s: int,
    out_dir: Path,
    source_sha256: str | None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """The pilot through Neo: every target's output repackaged with a manifest; compiled.json's targets."""
    entries = {}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = run_compilation_jobs(
            sagemaker,
            s3,
            targets,
            neo_input,
            output_s3_uri=output_s3_uri,
            role_arn=role_arn,
            timeout_s=timeout_s,
            work=Path(tmp),
            sleep=sleep,
            clock=clock,
        )
        for target, output in outputs.items():
            artifact = neo_artifact(meta, neo_input, output.archive, output.job, output.uri)
            manifest = finish_manifest(base_manifest(target, meta, source_sha256), [artifact], "neo")
            package = write_package(output.files, manifest, out_dir / target / PACKAGE_NAME)
            entries[target] = compiled_entry(target, package, [artifact], "neo")
            log(f"{target}: {PACKAGE_NAME} sha256 {package['sha256']}")
    return entries
