"""A separate virtualenv with donkeycar 5.3.0 (``donkeycar[pc]``), the reference the benchmarks compare with.

donkeycar pins TensorFlow 2.15 and numpy < 2, which cannot share the project's environment (TF 2.21), so
it lives in ``.bench/donkeycar-5.3.0/`` (gitignored), made once and reused by every benchmark
(``benchmarks/train.py``, ``benchmarks/edge.py``). A lock file keeps two benchmarks from installing into it
at the same time; ``.installed`` marks a complete install.

    python benchmarks/donkeycar_env.py          # make it (or report why it cannot be made)
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / ".bench"
DONKEYCAR_VERSION = "5.3.0"
REQUIREMENT = f"donkeycar[pc]=={DONKEYCAR_VERSION}"
# donkeycar 5.3.0 declares Requires-Python >=3.11,<3.12 (TensorFlow 2.15 has no wheels for 3.12+).
SUPPORTED_PYTHON = (3, 11)
INSTALL_TIMEOUT_S = 1800


class DonkeycarEnvError(RuntimeError):
    """donkeycar cannot be installed here; the message says why (shown by the benchmarks as is)."""


@dataclass(frozen=True)
class DonkeycarEnv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def donkey(self) -> Path:
        return self.root / "bin" / "donkey"

    @property
    def marker(self) -> Path:
        return self.root / ".installed"

    def is_ready(self) -> bool:
        return self.marker.is_file() and self.python.exists() and self.donkey.exists()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another benchmark installs
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_python() -> str:
    """A Python 3.11 interpreter: this one if it is 3.11, else ``python3.11`` on PATH."""
    if sys.version_info[:2] == SUPPORTED_PYTHON:
        return sys.executable
    import shutil

    found = shutil.which("python{}.{}".format(*SUPPORTED_PYTHON))
    if not found:
        raise DonkeycarEnvError(
            f"donkeycar {DONKEYCAR_VERSION} needs Python 3.11 (TensorFlow 2.15); none found"
        )
    return found


def _run(cmd: list[str], log: Path, timeout: float) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DonkeycarEnvError(f"{cmd[2:4]} timed out after {timeout:.0f} s (log: {log})") from exc
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-8:])
        raise DonkeycarEnvError(
            f"`{' '.join(cmd[-3:])}` failed (exit {result.returncode}); log {log}:\n{tail}"
        )


def ensure_donkeycar_env(bench_dir: Path = BENCH_DIR, *, progress: bool = True) -> DonkeycarEnv:
    """The donkeycar venv, installing it on first use (several minutes: TensorFlow 2.15 is ~500 MB).

    Raises DonkeycarEnvError when it cannot be made (no Python 3.11, no package index, ...).
    """
    env = DonkeycarEnv(bench_dir / f"donkeycar-{DONKEYCAR_VERSION}")
    if env.is_ready():
        return env
    with _locked(bench_dir / f"donkeycar-{DONKEYCAR_VERSION}.lock"):
        if env.is_ready():  # made by another benchmark while we waited
            return env
        log = bench_dir / f"donkeycar-{DONKEYCAR_VERSION}-install.log"
        log.write_text("")
        started = time.perf_counter()
        if progress:
            print(f"making {env.root} with {REQUIREMENT} (first run only; log: {log})", flush=True)
        if not env.python.exists():
            _run([_find_python(), "-m", "venv", str(env.root)], log, 300)
        _run([str(env.python), "-m", "pip", "install", "--quiet", REQUIREMENT], log, INSTALL_TIMEOUT_S)
        if not env.donkey.exists():
            raise DonkeycarEnvError(f"{REQUIREMENT} installed but {env.donkey} is missing")
        env.marker.write_text(f"{REQUIREMENT}\n")
        if progress:
            print(f"donkeycar environment ready in {time.perf_counter() - started:.0f} s", flush=True)
    return env


def donkeycar_python() -> Path:
    """The donkeycar venv's python, made on first use (benchmarks/edge.py looks this name up).

    When the venv cannot be made the reason goes to stderr and the returned path does not exist.
    """
    try:
        return ensure_donkeycar_env().python
    except DonkeycarEnvError as exc:
        print(f"donkeycar_env: {exc}", file=sys.stderr)
        return DonkeycarEnv(BENCH_DIR / f"donkeycar-{DONKEYCAR_VERSION}").python


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=f"Make the {REQUIREMENT} virtualenv under .bench/.")
    parser.parse_args(argv)
    try:
        env = ensure_donkeycar_env()
    except DonkeycarEnvError as exc:
        print(f"donkeycar_env: cannot make the donkeycar environment: {exc}", file=sys.stderr)
        return 1
    print(env.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
