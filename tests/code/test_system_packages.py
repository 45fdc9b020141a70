"""System packages are declared once (system-packages.txt) and installed by `make system`, never by a test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def declared() -> list[str]:
    lines = (REPO / "system-packages.txt").read_text().splitlines()
    return [name for line in lines if (name := line.split("#", 1)[0].strip())]


def test_the_broker_is_declared_and_no_python_file_installs_packages() -> None:
    assert "mosquitto" in declared()
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    this = Path(__file__).relative_to(REPO).as_posix()
    installing = [n for n in tracked if n != this and '"apt-get"' in (REPO / n).read_text(errors="replace")]
    assert installing == []


def test_a_missing_package_without_root_stops_make_with_the_command_to_run(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, script in {"dpkg": "exit 1", "id": "echo 1000"}.items():  # nothing installed, not root
        (shims / name).write_text(f"#!/bin/sh\n{script}\n")
        (shims / name).chmod(0o755)
    result = subprocess.run(
        ["make", "--no-print-directory", "system"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode != 0
    assert f"install them with: sudo apt-get install {' '.join(declared())}" in result.stderr
