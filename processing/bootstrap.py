"""Entry point of every Processing step: install what the script needs beyond its image, then run it.

    python3 /opt/ml/processing/input/code/processing/bootstrap.py processing/preprocess.py [args...]

The image (the TensorFlow training image) brings TensorFlow and its dependencies; the rest is pinned in
``processing/requirements.txt``. A requirement already installed at its pinned version costs nothing;
others are installed from ``wheels/`` beside the code when the bundle carries wheels (no index needed),
else from the package index. In local mode (``ROBOCAR_LOCAL_ROOT`` set) the project's own environment
stands in for the image: nothing is installed into it, a missing package stops the step with the command
that installs it. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import runpy
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = CODE_ROOT / "processing" / "requirements.txt"
WHEELS = CODE_ROOT / "wheels"
LOCAL_ROOT_ENV = "ROBOCAR_LOCAL_ROOT"
USAGE_ERROR = 2


def pinned(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``name==version`` lines -> {name: version}; comments and blank lines skipped."""
    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            name, separator, version = text.partition("==")
            if not separator:
                raise ValueError(f"{path}: {text!r} is not pinned as name==version")
            pins[name.strip()] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(pins: dict[str, str]) -> dict[str, str | None]:
    """{name: installed version or None} for every pin the environment does not satisfy exactly."""
    found = {name: installed_version(name) for name in pins}
    return {name: version for name, version in found.items() if version != pins[name]}


def install_command(requirements: Sequence[str], wheels: Path = WHEELS) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--quiet", *requirements]
    if wheels.is_dir():
        command += ["--no-index", "--find-links", str(wheels)]
    return command


def prepare(pins: dict[str, str], environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Make the environment hold the pins (in a container), or check it does (locally)."""
    missing = unmet(pins)
    if not missing:
        return
    requirements = [f"{name}=={pins[name]}" for name in missing]
    if environ.get(LOCAL_ROOT_ENV):
        absent = [name for name, version in missing.items() if version is None]
        if absent:
            raise SystemExit(
                f"bootstrap: {', '.join(absent)} not installed in this environment; "
                f"run: {sys.executable} -m pip install {' '.join(f'{n}=={pins[n]}' for n in absent)}"
            )
        return  # other versions locally: the project's environment stands in for the image
    print(f"bootstrap: installing {' '.join(requirements)}", flush=True)
    subprocess.run(install_command(requirements), check=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: bootstrap.py SCRIPT [ARGS...] (SCRIPT relative to the code folder)", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)
    script = CODE_ROOT / args[0]
    if not script.is_file():
        print(f"bootstrap: no script {script}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)
    prepare(pinned())
    sys.argv = [str(script), *args[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
