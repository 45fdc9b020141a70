"""Suite-wide: offline by construction. Sockets reach loopback only; AWS credentials are fakes."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "SAGEMAKER_VALIDATE_ROLE": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
os.environ.update(FAKE_AWS_ENV)
# A developer's own settings must not leak into the tests.
for leaked in [n for n in os.environ if n.startswith("ROBOCAR_")] + ["AWS_PROFILE", "AWS_ENDPOINT_URL"]:
    os.environ.pop(leaked, None)


class NetworkBlocked(RuntimeError):
    """A test tried to reach beyond this machine."""


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(sock: socket.socket, address, *, _real=_connect):  # type: ignore[no-untyped-def]
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(str(address[0])):
        raise NetworkBlocked(f"tests are offline: connection to {address!r} blocked")
    return _real(sock, address)


def _guarded_connect_ex(sock: socket.socket, address):  # type: ignore[no-untyped-def]
    return _guarded_connect(sock, address, _real=_connect_ex)


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
        raise NetworkBlocked(f"tests are offline: name lookup of {host!r} blocked")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo


SITECUSTOMIZE = """
import socket

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo


def _connect_guarded(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
        raise OSError(f"network blocked in this test: {address!r}")
    return _connect(self, address)


def _getaddrinfo_guarded(host, *args, **kwargs):
    if host not in LOOPBACK:
        raise OSError(f"network blocked in this test: lookup of {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _connect_guarded
socket.getaddrinfo = _getaddrinfo_guarded
"""


@pytest.fixture
def offline_subprocess_env(tmp_path):  # type: ignore[no-untyped-def]
    """Environment for a child Python with fake credentials and the same network guard (sitecustomize)."""
    guard = tmp_path / "netguard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, **FAKE_AWS_ENV, "HOME": str(tmp_path), "PYTHONPATH": str(guard)}


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """The interpreter of the MXNet environment local mode runs MXNet images in, built on first use into
    the test cache ($ROBOCAR_ENV_CACHE, else ~/.cache/robocar-envs) and reused across runs."""
    import subprocess
    from pathlib import Path

    from pipelines.local import environments

    cache = Path(os.environ.get(environments.CACHE_VARIABLE) or Path.home() / ".cache" / "robocar-envs")
    environment = environments.ensure_environment(
        environments.MXNET, cache, run=lambda command: subprocess.run(command, check=True), note=print
    )
    return str(environments.environment_python(environment))
