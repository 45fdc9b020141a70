"""The local endpoint: an approved package served over HTTP on 127.0.0.1, as SageMaker hosts it.

SageMaker runs an inference container that answers ``GET /ping`` (200 when healthy) and
``POST /invocations`` (the request body and its ``Content-Type``, the ``Accept`` the client asked for)
on one port (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html). Here
each endpoint is one detached server process (``serve``) of that contract, running the recipe's handler
in the recipe's environment, the recipe read from the model's own files (``recipe_of_model``):

- classifier (an ``mxnet-inference`` image): ``inference/classifier.py`` in the MXNet environment
  (``pipelines.local.environments``); probabilities by class id as JSON;
- detection (an ``mxnet-inference`` image too): ``inference/detector.py`` in the MXNet environment;
  ``{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}``;
- pilot (a ``tensorflow-inference`` image): the package's SavedModel through
  ``inference.inference.predict_payload`` in the project's environment; ``{"angle", "throttle"}``.

Requests are served by a thread each (``ThreadingHTTPServer``). A body over ``MAX_BODY_BYTES`` gets 413
without being read, a content type the handler does not take 415, a body it cannot read (a truncated
JPEG) 400, an ``Accept`` it cannot answer 406; each with ``{"error": message}``. A handler bug answers
500 the same way; nothing a request sends stops the server.

The control side (``deploy``, ``status``, ``delete``, ``invoke``, ``invoke_async``) is what
``robocar endpoint ... --local`` calls. Its state is ``<workspace>/endpoints/<name>.json``; each
deployment's model and log live in ``<workspace>/endpoints/<name>/<deployment>/``.

The server each endpoint runs is ``inference/server.py`` (``python -m inference.server serve``), the very
server the endpoint image runs on AWS, here bound to 127.0.0.1 with the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.atomic_files import atomic_write_json
from inference.server import JSON_TYPE, PILOT, recipe_of

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# EndpointName (CreateEndpoint): at most 63 characters of this pattern; it also keeps names out of paths.
ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
# Importing MXNet and loading a model takes ~10 s on an idle core; a shared 2-core machine is slower.
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0


class EndpointError(Exception):
    """A local endpoint that cannot be deployed, found or invoked; the message says why."""


# --------------------------------------------------------------------------- the control side
def check_name(name: str) -> str:
    if not ENDPOINT_NAME.fullmatch(name):
        raise EndpointError(
            f"endpoint name {name!r}: 1 to 63 of [a-zA-Z0-9-], starting and ending alphanumeric"
        )
    return name


def endpoints_dir(workspace: Path) -> Path:
    return Path(workspace) / "endpoints"


def state_file(workspace: Path, name: str) -> Path:
    return endpoints_dir(workspace) / f"{check_name(name)}.json"


def read_state(workspace: Path, name: str) -> dict[str, Any] | None:
    path = state_file(workspace, name)
    return json.loads(path.read_text()) if path.is_file() else None


def recipe_of_model(model_dir: Path) -> str:
    """The recipe whose handler serves the unpacked model: its trainer's marker file
    (``inference.server.recipe_of``, what the image's ``serve`` decides by), not the image: one MXNet
    image serves classifiers and detectors."""
    try:
        return recipe_of(model_dir)
    except SystemExit as exc:
        raise EndpointError(str(exc)) from None


def python_for(recipe: str, workspace: Path) -> str:
    """The interpreter of the recipe's environment (built on first use for MXNet)."""
    if recipe == PILOT:
        return sys.executable
    from pipelines.local import environments

    environment = environments.ensure_environment(
        environments.MXNET,
        environments.cache_root(workspace),
        run=lambda command: subprocess.run(command, check=True, stdout=subprocess.DEVNULL),
        note=environments.print_note,
    )
    return str(environments.environment_python(environment))


def fetch_model(workspace: Path, model_data_url: str, folder: Path) -> Path:
    """The package's model.tar.gz from local S3, unpacked (checked member by member) into ``folder/model``."""
    from edge.artifacts import safe_extract
    from edge.s3_uri import split_s3_uri
    from pipelines.local.s3 import LocalS3Client

    bucket, key = split_s3_uri(model_data_url)
    archive = folder / "model.tar.gz"
    LocalS3Client(workspace).download_file(bucket, key, str(archive))
    safe_extract(archive, folder / "model")
    archive.unlink()
    return folder / "model"


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: another command started it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(url: str, timeout: float = 5.0) -> bool:
    try:
        status, _, _ = request(url, "GET", "/ping", b"", {}, timeout)
    except OSError:
        return False
    return status == 200


def request(
    url: str, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float = 60.0
) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type", ""), answer.read()
    finally:
        connection.close()


def start_server(recipe: str, python: str, model_dir: Path, folder: Path, port: int) -> dict[str, Any]:
    """Start the detached server process and wait until /ping answers 200; ``{"pid", "port", "url"}``."""
    ready = folder / "ready.json"
    log = folder / "server.log"
    command = [
        python, "-m", "inference.server", "serve", "--recipe", recipe, "--model-dir", str(model_dir),
        "--host", HOST, "--port", str(port), "--ready-file", str(ready),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: outlives the command that deployed it, and ^C there
        )  # fmt: skip
    _STARTED.append(process)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise EndpointError(f"the {recipe} server exited with status {process.returncode}:\n{tail}")
        if ready.is_file():
            url = f"http://{HOST}:{json.loads(ready.read_text())['port']}"
            if ping(url):
                return {"pid": process.pid, "port": int(urlsplit(url).port or 0), "url": url}
        time.sleep(0.2)
    stop_process(process.pid)
    raise EndpointError(f"the {recipe} server did not answer /ping within {READY_TIMEOUT_S:.0f} s; see {log}")


_STARTED: list[subprocess.Popen[bytes]] = []  # kept so that Popen never warns the servers still run


def stop_process(pid: int) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not stopped within STOP_TIMEOUT_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)


def deploy(
    workspace: Path,
    name: str,
    model_package_arn: str,
    *,
    port: int = 0,
    async_output: str | None = None,
    async_failure: str | None = None,
) -> dict[str, Any]:
    """Serve an Approved package as endpoint ``name``; returns its state once /ping answers 200.

    Idempotent: the same package (and async paths) already serving is returned as it is; another package
    replaces it blue/green, the new server answering before the old one stops. ``async_output`` and
    ``async_failure`` (S3 URIs, AsyncInferenceConfig's S3OutputPath and S3FailurePath; the failure path
    defaults to the output path) make ``invoke_async`` available.
    """
    from pipelines.local.registry import LocalSageMakerClient

    # Absolute: the server runs from the repository root, so a workspace relative to the caller's folder
    # (the default, .robocar) would name another folder there. None (a flag not given) is any free port.
    workspace, port = Path(workspace).resolve(), int(port or 0)
    current = status(workspace, name)
    wanted_async = {"async_output": async_output, "async_failure": async_failure or async_output}
    if (
        current
        and current["status"] == "InService"
        and current["package"] == model_package_arn
        and all(current.get(k) == v for k, v in wanted_async.items())
        and port in (0, current["port"])
    ):
        return current
    package = LocalSageMakerClient(workspace).describe_model_package(ModelPackageName=model_package_arn)
    if package.get("ModelApprovalStatus") != "Approved":
        raise EndpointError(
            f"{model_package_arn} is {package.get('ModelApprovalStatus')}; only an Approved package is served"
        )
    container = package["InferenceSpecification"]["Containers"][0]
    folder = endpoints_dir(workspace) / name / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    try:
        model_dir = fetch_model(workspace, container["ModelDataUrl"], folder)
        recipe = recipe_of_model(model_dir)
        python = python_for(recipe, workspace)
        if current and current["status"] == "InService" and port == current["port"]:
            stop_process(current["pid"])  # the port is taken: this replacement cannot be blue/green
        started = start_server(recipe, python, model_dir, folder, port)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    state = {
        "name": name,
        **started,
        "package": model_package_arn,
        "recipe": recipe,
        "image": container["Image"],
        "model_data_url": container["ModelDataUrl"],
        "folder": str(folder),
        **wanted_async,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(state_file(workspace, name), state)
    if current:
        retire(current)
    return {**state, "status": "InService"}


def serves_from(pid: int, folder: str) -> bool:
    """Whether process ``pid`` is the server started for ``folder`` (its command line names the folder's
    model), so that a recorded pid the system has since given to another process is never signalled."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return process_alive(pid) and not Path("/proc/self").exists()  # no /proc: trust the pid
    except OSError:
        return False
    return str(Path(folder) / "model").encode() in command


def retire(state: dict[str, Any]) -> None:
    """Stop a deployment's server (when it is still the one recorded) and remove its folder."""
    if serves_from(int(state["pid"]), state["folder"]):
        stop_process(int(state["pid"]))
    shutil.rmtree(state["folder"], ignore_errors=True)


def status(workspace: Path, name: str) -> dict[str, Any] | None:
    """The endpoint's state with ``"status"``: InService (its process answers /ping) or Failed; None when
    there is no such endpoint."""
    state = read_state(Path(workspace), name)
    if state is None:
        return None
    serving = process_alive(int(state["pid"])) and ping(state["url"])
    return {**state, "status": "InService" if serving else "Failed"}


def delete(workspace: Path, name: str) -> bool:
    """Stop the endpoint's server and forget it; False when there was none."""
    state = read_state(Path(workspace), name)
    if state is None:
        return False
    retire(state)
    state_file(Path(workspace), name).unlink(missing_ok=True)
    shutil.rmtree(endpoints_dir(Path(workspace)) / name, ignore_errors=True)
    return True


def invoke(url: str, body: bytes, content_type: str, accept: str = JSON_TYPE) -> tuple[int, str, bytes]:
    """POST /invocations as InvokeEndpoint does: (HTTP status, response content type, response body)."""
    return request(url, "POST", "/invocations", body, {"Content-Type": content_type, "Accept": accept})


def invoke_async(
    workspace: Path,
    name: str,
    input_uri: str,
    *,
    content_type: str = "application/x-image",
    accept: str = JSON_TYPE,
    inference_id: str | None = None,
) -> str:
    """InvokeEndpointAsync locally: the input object is sent to the endpoint and the answer written to
    ``<async_output>/<inference id>.out``, or a refusal to ``<async_failure>/<inference id>-error.out``
    (the names SageMaker gives them,
    https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html). Returns the
    output location. Unlike AWS it returns once the object is written (no queue to wait on)."""
    from edge.s3_uri import split_s3_uri
    from pipelines.local.s3 import LocalS3Client

    state = status(workspace, name)
    if state is None or state["status"] != "InService":
        raise EndpointError(f"endpoint {name!r} is not in service")
    if not state.get("async_output"):
        raise EndpointError(f"endpoint {name!r} was deployed without an async output path")
    s3 = LocalS3Client(Path(workspace))
    bucket, key = split_s3_uri(input_uri)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    inference_id = inference_id or str(uuid.uuid4())
    output = f"{state['async_output'].rstrip('/')}/{inference_id}.out"
    failure = f"{state['async_failure'].rstrip('/')}/{inference_id}-error.out"
    code, answer_type, answer = invoke(state["url"], body, content_type, accept)
    target = output if code == 200 else failure
    target_bucket, target_key = split_s3_uri(target)
    s3.put_object(Bucket=target_bucket, Key=target_key, Body=answer, ContentType=answer_type or JSON_TYPE)
    return output
