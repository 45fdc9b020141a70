"""benchmarks/serving.py's two load generators against the real inference server (a stand-in handler):
the Python clients read the model-time header, wrk's summary is parsed, and failures are counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from inference.server import InvocationServer


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("serving")


def _serve(handler) -> Iterator[str]:
    server = InvocationServer(("127.0.0.1", 0), handler, max_body_bytes=1 << 20, workers=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def endpoint() -> Iterator[str]:
    def answer(body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        if body == b"refuse":
            raise ValueError("refused")  # a handler bug: 500
        return b'{"angle": 0.0}', "application/json"

    yield from _serve(answer)


def test_python_clients_read_the_model_time_of_each_answer(bench, endpoint: str) -> None:
    run = bench.load(endpoint, b"photo", "image/jpeg", clients=2, requests=20)
    assert run["requests"] == 20 and run["failed"] == 0
    assert run["rps"] > 0
    assert 0 <= run["model_p50_ms"] < run["p50_ms"]  # the handler's time is inside the request's
    assert run["added_p50_ms"] == pytest.approx(run["p50_ms"] - run["model_p50_ms"])


def test_python_clients_count_refused_requests_as_failures(bench, endpoint: str) -> None:
    run = bench.load(endpoint, b"refuse", "image/jpeg", clients=2, requests=6)
    assert run["failed"] == 6 and run["failures"] == ["HTTP 500"]


def test_wrk_units_are_read_as_milliseconds(bench) -> None:
    assert bench.wrk_ms("912.00us") == pytest.approx(0.912)
    assert bench.wrk_ms("3.46ms") == pytest.approx(3.46)
    assert bench.wrk_ms("1.20s") == pytest.approx(1200.0)


def test_wrk_drives_the_server_and_its_summary_is_read(bench, endpoint: str, tmp_path: Path) -> None:
    body = tmp_path / "payload.jpg"
    body.write_bytes(b"photo")
    run = bench.load_wrk(endpoint, body, "image/jpeg", clients=8, seconds=1)
    assert run["requests"] > 0 and run["rps"] > 0
    assert run["failed"] == 0
    assert 0 < run["p50_ms"] <= run["p99_ms"]


def test_wrk_counts_non_2xx_answers_as_failures(bench, endpoint: str, tmp_path: Path) -> None:
    body = tmp_path / "payload.jpg"
    body.write_bytes(b"refuse")
    run = bench.load_wrk(endpoint, body, "image/jpeg", clients=4, seconds=1)
    assert run["requests"] > 0 and run["failed"] >= run["requests"]


def test_a_client_resetting_its_connection_prints_no_traceback(
    endpoint: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket
    import struct
    import time

    port = int(endpoint.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nphoto")
    assert client.recv(4096).startswith(b"HTTP/1.1 200")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    client.close()
    time.sleep(0.3)  # the server's thread reads the reset
    assert "ConnectionResetError" not in capfd.readouterr().err
