"""The local endpoint: an approved package served over HTTP on 127.0.0.1, as SageMaker hosts it.

SageMaker runs an inference container that answers ``GET /ping`` (200 when healthy) and
``POST /invocations`` (the request body and its ``Content-Type``, the ``Accept`` the client asked for)
on one port (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html). Here
each endpoint is one detached server process (``serve``) of that contract, running the recipe's handler
in the recipe's environment:

- classifier (an ``mxnet-inference`` image): ``inference/classifier.py`` in the MXNet environment
  (``pipelines.local.environments``); probabilities by class id as JSON;
- pilot (a ``tensorflow-inference`` image): the package's SavedModel through
  ``inference.inference.predict_payload`` in the project's environment; ``{"angle", "throttle"}``.

Requests are served by a thread each (``ThreadingHTTPServer``). A body over ``MAX_BODY_BYTES`` gets 413
without being read, a content type the handler does not take 415, a body it cannot read (a truncated
JPEG) 400, an ``Accept`` it cannot answer 406; each with ``{"error": message}``. A handler bug answers
500 the same way; nothing a request sends stops the server.

The control side (``deploy``, ``status``, ``delete``, ``invoke``, ``invoke_async``) is what
``robocar endpoint ... --local`` calls. Its state is ``<workspace>/endpoints/<name>.json``; each
deployment's model and log live in ``<workspace>/endpoints/<name>/<deployment>/``.

This file is also the server's script: ``python endpoint_server.py serve ...`` with the repository root
on ``PYTHONPATH``. Its module-level imports are the standard library and ``edge`` only, so it starts in
the MXNet environment, which has neither the control plane's packages nor TensorFlow.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.atomic_files import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# SageMaker's real-time payload limit: InvokeEndpoint's Body is at most 6291456 bytes (6 MB; botocore's
# sagemaker-runtime model, BodyBlob max;
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html).
MAX_BODY_BYTES = 6 * 1024 * 1024
# A refused body up to this size is read and dropped before the 413, so that the client sees the answer.
MAX_DISCARD_BYTES = 64 * 1024 * 1024
# EndpointName (CreateEndpoint): at most 63 characters of this pattern; it also keeps names out of paths.
ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
CLASSIFIER, PILOT = "classifier", "pilot"
JSON_TYPE = "application/json"
# Importing MXNet and loading a model takes ~10 s on an idle core; a shared 2-core machine is slower.
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0
MODEL_TIME_HEADER = "X-Robocar-Model-Ms"  # the handler's own time for the request, for benchmarks/serving.py

Handler = Callable[[bytes, str | None, str | None], tuple[bytes, str]]  # body, type, accept -> body, type


class EndpointError(Exception):
    """A local endpoint that cannot be deployed, found or invoked; the message says why."""


# --------------------------------------------------------------------------- the server process
def classifier_handler(model_dir: Path) -> Handler:
    from inference import classifier

    model = classifier.model_fn(model_dir)

    def handle(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        x = classifier.photo_input(body, content_type, model.transform)
        return classifier.response(classifier.probabilities(model, x), accept, model.classes)

    return handle


def pilot_handler(model_dir: Path) -> Handler:
    from inference.inference import PayloadError, predict_payload
    from processing.evaluate import load_serving_model

    loaded = load_serving_model(model_dir)

    def handle(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        media = (accept or JSON_TYPE).split(";")[0].strip().lower()
        if media not in (JSON_TYPE, "*/*", ""):
            raise PayloadError(f"cannot answer Accept {accept!r}; the pilot answers {JSON_TYPE}", 406)
        answer = predict_payload(body, content_type, loaded.predict, loaded.model_json)
        return json.dumps(answer).encode(), JSON_TYPE

    return handle


HANDLERS: dict[str, Callable[[Path], Handler]] = {CLASSIFIER: classifier_handler, PILOT: pilot_handler}


def error_status(exc: Exception) -> int:
    """The 4xx a handler's refusal carries (``PayloadError.status_code``), else 500."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(exc, ValueError) and isinstance(status, int) and 400 <= status < 500 else 500


def default_workers(recipe: str) -> int:
    """How many requests run the handler at once. The classifier: one, since MXNet's operators already
    spread one forward over every core and its forwards take turns (``inference.classifier``); more only
    adds contention (measured: 169 requests/s serial against 141 from two threads, benchmarks/README.md).
    The pilot: one per core (TensorFlow's forwards run in parallel: 226 serial, 402 from two threads)."""
    return 1 if recipe == CLASSIFIER else os.cpu_count() or 1


class InvocationServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that hangs never keeps the process from stopping
    request_queue_size = 128  # the benchmark's 32 clients connect at once; the default backlog is 5

    def __init__(self, address: tuple[str, int], handler: Handler, max_body_bytes: int, workers: int) -> None:
        super().__init__(address, InvocationRequestHandler)
        self.handler, self.max_body_bytes = handler, max_body_bytes
        # Every connection has its thread, but only ``workers`` run the handler: the others wait here
        # instead of fighting over the cores (SageMaker's model servers bound their workers the same way).
        self.workers = threading.BoundedSemaphore(workers)


class InvocationRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's connection serves many requests
    # The headers and the body leave in one segment: written apart, the body waits on Nagle's algorithm
    # for the client's delayed ACK of the headers, 40 ms on Linux (measured: +44 ms per request before).
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # buffered; handle_one_request flushes after each answer
    # A client that stops sending mid-request (or idles on a kept-alive connection) is dropped after this
    # many seconds instead of holding its thread forever; SageMaker gives a model 60 s to answer.
    timeout = 60
    server_version = "robocar-local-endpoint"
    server: InvocationServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would be most of the log; errors are logged where they happen

    def send_answer(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(self, status: int, message: str) -> None:
        self.send_answer(status, json.dumps({"error": message}).encode(), JSON_TYPE)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/ping":
            self.send_answer(200, b"{}", JSON_TYPE)
        else:
            self.send_error_json(404, f"no such path {self.path!r}: GET /ping, POST /invocations")

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/invocations":
            self.close_connection = True  # its body was not read
            self.send_error_json(404, f"no such path {self.path!r}: POST /invocations")
            return
        body = self.read_body()
        if body is None:
            return
        try:
            with self.server.workers:
                started = time.perf_counter()
                answer, content_type = self.server.handler(
                    body, self.headers.get("Content-Type"), self.headers.get("Accept")
                )
                model_ms = (time.perf_counter() - started) * 1000
        except Exception as exc:  # the handler's refusal (4xx) or its bug (500): answer, keep serving
            status = error_status(exc)
            if status == 500:
                traceback.print_exc()
            self.send_error_json(status, str(exc) or type(exc).__name__)
            return
        self.send_answer(200, answer, content_type, {MODEL_TIME_HEADER: f"{model_ms:.3f}"})

    def discard(self, length: int) -> None:
        """Read and drop a refused body, so the client, still sending, gets the answer and not a reset; a
        body over ``MAX_DISCARD_BYTES`` is not worth reading: the connection closes instead."""
        if length > MAX_DISCARD_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def read_body(self) -> bytes | None:
        """The request body, or None after answering why it is refused (the connection then closes)."""
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or raw is None:
            self.close_connection = True
            self.send_error_json(411, "send the body with a Content-Length")
            return None
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self.send_error_json(400, f"bad Content-Length {raw!r}")
            return None
        if length > self.server.max_body_bytes:
            self.discard(length)
            self.send_error_json(
                413, f"the body is {length} bytes; an invocation takes at most {self.server.max_body_bytes}"
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            self.send_error_json(400, f"the body ended after {len(body)} of {length} bytes")
            return None
        return body


def serve(
    recipe: str, model_dir: Path, port: int, ready_file: Path, max_body_bytes: int, workers: int | None = None
) -> None:
    """Load the model, listen, write ``{"port", "pid"}`` to ``ready_file``, then serve until SIGTERM."""
    handler = HANDLERS[recipe](model_dir)
    server = InvocationServer((HOST, port), handler, max_body_bytes, workers or default_workers(recipe))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    atomic_write_json(ready_file, {"port": server.server_address[1], "pid": os.getpid()})
    print(f"serving {recipe} from {model_dir} on http://{HOST}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()


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


def recipe_of_image(image: str) -> str:
    """The recipe whose handler serves ``image``: its environment family (MXNet: classifier, else pilot)."""
    from pipelines.local.environments import MXNET, image_family

    return CLASSIFIER if image_family(image) == MXNET else PILOT


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
        # -P: not this file's folder first on sys.path (its module names would shadow installed ones)
        python, "-P", str(Path(__file__).resolve()), "serve",
        "--recipe", recipe, "--model-dir", str(model_dir), "--port", str(port), "--ready-file", str(ready),
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

    workspace, port = Path(workspace), int(port or 0)  # None (a CLI flag not given) is "any free port"
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
    recipe = recipe_of_image(container["Image"])
    folder = endpoints_dir(workspace) / name / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    try:
        model_dir = fetch_model(workspace, container["ModelDataUrl"], folder)
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


# --------------------------------------------------------------------------- the script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a model as a SageMaker inference container does.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve /ping and /invocations on 127.0.0.1")
    run.add_argument("--recipe", choices=sorted(HANDLERS), required=True)
    run.add_argument("--model-dir", type=Path, required=True)
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--ready-file", type=Path, required=True)
    run.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    run.add_argument("--workers", type=int, help="requests running the handler at once (default: per recipe)")
    args = parser.parse_args(argv)
    serve(args.recipe, args.model_dir, args.port, args.ready_file, args.max_body_bytes, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
