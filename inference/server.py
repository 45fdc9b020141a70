"""The inference server: a model served over HTTP as SageMaker hosts it, one implementation for the
endpoint container and the local endpoint.

SageMaker runs an inference container as ``<image> serve`` and expects ``GET /ping`` (200 when healthy)
and ``POST /invocations`` (the request body and its ``Content-Type``, the ``Accept`` the client asked
for) on port 8080 (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html).
This server is that contract around each recipe's handler:

- classifier: ``inference/classifier.py`` (the MXNet serving contract's model_fn/input_fn/predict_fn/
  output_fn); probabilities by class id as JSON, with class names on ``Accept: application/json;
  verbose=true``;
- detection: ``inference/detector.py`` (the same four functions for a ``training/detector.py`` model);
  ``{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}`` normalised, as the built-in
  object-detection endpoint answers, with class names on ``Accept: application/json; verbose=true``;
- pilot: the package's SavedModel through ``inference.inference.predict_payload``; ``{"angle",
  "throttle"}``.

Requests are served by a thread each (``ThreadingHTTPServer``). A body over ``MAX_BODY_BYTES`` gets 413
without being read, a content type the handler does not take 415, a body it cannot read (a truncated
JPEG) 400, an ``Accept`` it cannot answer 406; each with ``{"error": message}``. A handler bug answers
500 the same way; nothing a request sends stops the server.

    python -m inference.server serve --recipe classifier     # in the container: /opt/ml/model, :8080
    python -m inference.server serve --recipe pilot --model-dir M --host 127.0.0.1 --port 0 --ready-file R

Module-level imports are the standard library and ``edge`` only, so it starts in the MXNet environment,
which has neither the control plane's packages nor TensorFlow. ``pipelines/local/endpoint_server.py``
starts it locally; ``infra/images/mxnet/serve`` in the image.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_json

# SageMaker's real-time payload limit: InvokeEndpoint's Body is at most 6291456 bytes (6 MB; botocore's
# sagemaker-runtime model, BodyBlob max;
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html).
MAX_BODY_BYTES = 6 * 1024 * 1024
# A refused body up to this size is read and dropped before the 413, so that the client sees the answer.
MAX_DISCARD_BYTES = 64 * 1024 * 1024
CLASSIFIER, DETECTION, PILOT = "classifier", "detection", "pilot"
JSON_TYPE = "application/json"
MODEL_TIME_HEADER = "X-Robocar-Model-Ms"  # the handler's own time for the request, for benchmarks/serving.py
# Where SageMaker puts the model and which port it calls (the inference container contract above).
CONTAINER_MODEL_DIR = Path("/opt/ml/model")
CONTAINER_HOST, CONTAINER_PORT = "0.0.0.0", 8080  # noqa: S104 (the container's network is SageMaker's)

AUTO = "auto"
# The file each recipe's trainer writes into its model directory (training/classifier.py,
# training/detector.py, training/export.py).
RECIPE_MARKERS = {"classifier-spec.json": CLASSIFIER, "detector-spec.json": DETECTION, "model.json": PILOT}


def recipe_of(model_dir: Path) -> str:
    """The recipe whose model ``model_dir`` holds, by its trainer's marker file."""
    for marker, recipe in RECIPE_MARKERS.items():
        if (model_dir / marker).is_file():
            return recipe
    raise SystemExit(f"{model_dir} holds none of {', '.join(RECIPE_MARKERS)}: not a model this server serves")


Handler = Callable[[bytes, str | None, str | None], tuple[bytes, str]]  # body, type, accept -> body, type


def classifier_handler(model_dir: Path) -> Handler:
    from inference import classifier

    model = classifier.model_fn(model_dir)

    def handle(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        x = classifier.photo_input(body, content_type, model.transform)
        return classifier.response(classifier.probabilities(model, x), accept, model.classes)

    return handle


def detection_handler(model_dir: Path) -> Handler:
    from inference import classifier, detector

    model = detector.model_fn(model_dir)

    def handle(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        x = classifier.photo_input(body, content_type, model.transform)
        return detector.response(detector.detections(model, x), accept, model.classes)

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


HANDLERS: dict[str, Callable[[Path], Handler]] = {
    CLASSIFIER: classifier_handler,
    DETECTION: detection_handler,
    PILOT: pilot_handler,
}


def error_status(exc: Exception) -> int:
    """The 4xx a handler's refusal carries (``PayloadError.status_code``), else 500."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(exc, ValueError) and isinstance(status, int) and 400 <= status < 500 else 500


def default_workers(recipe: str) -> int:
    """How many requests run the handler at once. The classifier and the detector (MXNet both): one, since
    MXNet's operators already spread one forward over every core and its forwards take turns
    (``inference.classifier``); more only adds contention (measured for the classifier: 169 requests/s
    serial against 141 from two threads, benchmarks/README.md). The pilot: one per core (TensorFlow's
    forwards run in parallel: 226 serial, 402 from two threads)."""
    return 1 if recipe in (CLASSIFIER, DETECTION) else os.cpu_count() or 1


class InvocationServer(ThreadingHTTPServer):
    daemon_threads = True  # a client that hangs never keeps the process from stopping
    request_queue_size = 128  # the benchmark's 32 clients connect at once; the default backlog is 5

    def __init__(self, address: tuple[str, int], handler: Handler, max_body_bytes: int, workers: int) -> None:
        super().__init__(address, InvocationRequestHandler)
        self.handler, self.max_body_bytes = handler, max_body_bytes
        # Every connection has its thread, but only ``workers`` run the handler: the others wait here
        # instead of fighting over the cores (SageMaker's model servers bound their workers the same way).
        self.workers = threading.BoundedSemaphore(workers)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a reset kept-alive connection: load generators end that way) is not
        the server's error: no traceback for it; anything else is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, aborted, broken pipe
            return
        super().handle_error(request, client_address)


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
    recipe: str,
    model_dir: Path,
    port: int,
    ready_file: Path | None,
    max_body_bytes: int,
    workers: int | None = None,
    host: str = CONTAINER_HOST,
) -> None:
    """Load the model, listen, write ``{"port", "pid"}`` to ``ready_file``, then serve until SIGTERM."""
    handler = HANDLERS[recipe](model_dir)
    server = InvocationServer((host, port), handler, max_body_bytes, workers or default_workers(recipe))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if ready_file is not None:
        atomic_write_json(ready_file, {"port": server.server_address[1], "pid": os.getpid()})
    print(f"serving {recipe} from {model_dir} on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a model as a SageMaker inference container does.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve /ping and /invocations (the container's defaults)")
    run.add_argument(
        "--recipe", choices=[AUTO, *sorted(HANDLERS)], default=AUTO,
        help="whose handler (auto: from the model directory's files)",
    )  # fmt: skip
    run.add_argument("--model-dir", type=Path, default=CONTAINER_MODEL_DIR)
    run.add_argument("--host", default=CONTAINER_HOST)
    # SageMaker may name another port in SAGEMAKER_BIND_TO_PORT (the inference container contract).
    run.add_argument(
        "--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", CONTAINER_PORT))
    )
    run.add_argument("--ready-file", type=Path, default=None, help="write {port, pid} here once listening")
    run.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    run.add_argument("--workers", type=int, help="requests running the handler at once (default: per recipe)")
    args = parser.parse_args(argv)
    recipe = recipe_of(args.model_dir) if args.recipe == AUTO else args.recipe
    serve(recipe, args.model_dir, args.port, args.ready_file, args.max_body_bytes, args.workers, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
