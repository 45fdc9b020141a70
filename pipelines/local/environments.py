"""Which Python runs a step locally, decided by the image its definition names.

On AWS a step runs in its image; locally a Python environment stands in for it. The image URI
(``<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>``) names a family by its repository:

- TensorFlow deep learning containers: the project's own environment (``sys.executable``);
- MXNet deep learning containers and the built-in MXNet algorithms: an MXNet environment built on first use
  from ``requirements/mxnet.txt`` (mxnet 1.9.1 needs numpy 1.23.5, which the project's numpy 2 excludes);
- anything else: refused before the execution starts (``unmapped_images``).

Built environments live in ``<cache>/<family>-<digest>/`` (the cache: ``$ROBOCAR_ENV_CACHE``, else
``<workspace>/envs``); the digest covers the requirements file and the Python, so an edit to either gives
a new folder. Each is built in a temporary folder and renamed into place under a file lock: a crash never
leaves a half-built environment in use, and two runs never both build it. docs/local-environments.md.

The SDK is imported only to check a built-in algorithm's registry account, when such an image appears.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import sysconfig
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from edge.atomic_files import atomic_write_json, file_lock
from pipelines.local.expressions import ExpressionError, Scope, resolve

VENV = "venv"  # the project's own environment: no building, no lookup
MXNET = "mxnet"
REQUIREMENTS_DIR = Path(__file__).parent / "requirements"
CACHE_VARIABLE = "ROBOCAR_ENV_CACHE"
MARKER = "robocar-env.json"  # written last inside the temporary folder: a folder without it is not an env
DIGEST_CHARS = 16  # 64 bits of the SHA-256 name a folder: no collision in a cache of a few environments
# Repository -> family. DLC repositories are named the same in every region and account
# (https://aws.github.io/deep-learning-containers/reference/available_images/).
REPOSITORY_FAMILIES = {
    "tensorflow-training": VENV,
    "tensorflow-inference": VENV,
    "mxnet-training": MXNET,
    "mxnet-inference": MXNET,
    "robocar-mxnet": MXNET,  # the project's own MXNet image (infra/images/mxnet), built from the same pins
    "image-classification": MXNET,
    "object-detection": MXNET,
}
# SageMaker's built-in algorithms sit in a registry account that differs per region ("Docker Registry
# Paths and Example Code",
# https://docs.aws.amazon.com/sagemaker/latest/dg-ecr-paths/sagemaker-algo-docker-registry-paths.html):
# the account must be that region's, else the image is someone's own repository of the same name.
BUILT_IN_ALGORITHMS = frozenset({"image-classification", "object-detection"})
# ``registry/repository[:tag]`` or ``registry/repository[@digest]`` (AlgorithmSpecification.TrainingImage,
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AlgorithmSpecification.html); ECR hosts
# are ``<account>.dkr.ecr[-fips].<region>.amazonaws.com`` (``.com.cn`` in China).
_ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repository>[a-z0-9][a-z0-9._/-]*?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)

Runner = Callable[[list[str]], None]  # runs a command to completion; raises when it fails
Note = Callable[[str], None]  # shows a line of progress


class EnvironmentUnavailable(Exception):
    """No local environment stands in for an image, or building it failed; the message says which."""


@dataclass(frozen=True)
class EcrImage:
    account: str
    region: str
    repository: str


def parse_image_uri(uri: str) -> EcrImage | None:
    """The account, region and repository of an ECR image URI; None for anything else."""
    match = _ECR_IMAGE.fullmatch(uri)
    if not match or not (match["tag"] or match["digest"]):
        return None
    return EcrImage(match["account"], match["region"], match["repository"])


@cache
def built_in_registry_account(algorithm: str, region: str) -> str | None:
    """The account of the region's registry for a built-in algorithm (None where the SDK knows none)."""
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise EnvironmentUnavailable(
            f"cannot check {algorithm}'s registry account without the sagemaker SDK: pip install .[pipeline]"
        ) from None
    try:
        image = parse_image_uri(image_uris.retrieve(algorithm, region))
    except ValueError:  # the SDK has no registry for this region
        return None
    return image.account if image else None


def image_family(uri: str) -> str:
    """The family of environment that stands in for ``uri``; EnvironmentUnavailable says why none does."""
    if not uri:
        raise EnvironmentUnavailable("the step names no image")
    image = parse_image_uri(uri)
    if image is None:
        raise EnvironmentUnavailable("not an ECR image URI with a tag or digest")
    family = REPOSITORY_FAMILIES.get(image.repository)
    if family is None:
        raise EnvironmentUnavailable(f"no family for repository {image.repository!r}")
    if image.repository in BUILT_IN_ALGORITHMS:
        account = built_in_registry_account(image.repository, image.region)
        if account != image.account:
            where = f"is {account}" if account else "is unknown to the SDK"
            raise EnvironmentUnavailable(
                f"the built-in algorithm {image.repository}'s registry account in {image.region} {where}, "
                f"not {image.account}"
            )
    return family


def step_image(step_type: str, arguments: dict[str, Any]) -> Any:
    """The image a Processing or Training step runs (an expression until resolved); None for others."""
    if step_type == "Processing":
        return arguments.get("AppSpecification", {}).get("ImageUri")
    if step_type == "Training":
        return arguments.get("AlgorithmSpecification", {}).get("TrainingImage")
    return None


def unmapped_images(steps: Iterable[Any], scope: Scope) -> list[str]:
    """``"<image> (<why>: step 'S', ...)"`` for each image of ``steps`` (PlannedSteps) no environment runs.

    An image that depends on another step's properties resolves only while running: the step checks it then.
    """
    problems: dict[str, tuple[str, list[str]]] = {}
    for step in steps:
        expression = step_image(step.type, step.spec.get("Arguments", {}))
        if expression is None:
            continue
        try:
            uri = resolve(expression, scope)
        except ExpressionError:
            continue
        try:
            image_family(str(uri))
        except EnvironmentUnavailable as unavailable:
            problems.setdefault(str(uri), (str(unavailable), []))[1].append(f"step {step.name!r}")
    return [f"{uri} ({why}: {', '.join(names)})" for uri, (why, names) in problems.items()]


# ---------------------------------------------------------------- built environments
def cache_root(workspace: Path) -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or Path(workspace) / "envs")


def requirements_file(family: str) -> Path:
    return REQUIREMENTS_DIR / f"{family}.txt"


def environment_path(family: str, root: Path) -> Path:
    """``root/<family>-<digest of the requirements and of the Python the environment is made from>``."""
    digest = hashlib.sha256(requirements_file(family).read_bytes())
    digest.update(f"\0{sys.implementation.cache_tag}-{sysconfig.get_platform()}".encode())
    return root / f"{family}-{digest.hexdigest()[:DIGEST_CHARS]}"


def environment_python(environment: Path) -> Path:
    return environment / "bin" / "python"


def is_built(environment: Path) -> bool:
    """Built completely (the marker) and its interpreter still runs from here (the base Python exists)."""
    return (environment / MARKER).is_file() and environment_python(environment).exists()


def print_note(message: str) -> None:
    print(f"[local environments] {message}", file=sys.stderr, flush=True)


def ensure_environment(family: str, root: Path, *, run: Runner, note: Note) -> Path:
    """The built environment of ``family`` under ``root``, built first when missing."""
    environment = environment_path(family, root)
    if is_built(environment):
        return environment
    note(
        f"building the {family} environment in {environment} from {requirements_file(family).name} "
        "(about a minute; if another run is building it, waiting for that one)"
    )
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{environment.name}.lock"):
        if is_built(environment):
            note(f"another run built {environment} meanwhile: using it")
            return environment
        for stale in root.glob(f".tmp-{environment.name}-*"):  # a crashed build's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        _build(family, environment, run)
        note(f"{family} environment ready in {time.monotonic() - started:.0f} s: {environment}")
    return environment


def _build(family: str, environment: Path, run: Runner) -> None:
    """Build in a temporary sibling folder, mark it complete, then rename it into place."""
    tmp = environment.with_name(f".tmp-{environment.name}-{uuid.uuid4().hex[:8]}")
    try:
        run([sys.executable, "-m", "venv", str(tmp)])  # venv bases it on this venv's own base Python
        # Wheels only: a source build of these packages takes hours or fails, pip's message is clearer.
        run([
            str(environment_python(tmp)), "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off", "--only-binary", ":all:",
            "-r", str(requirements_file(family)),
        ])  # fmt: skip
        atomic_write_json(
            tmp / MARKER,
            {
                "family": family,
                "requirements": requirements_file(family).read_text(),
                "python": sys.version,
                "built": datetime.now(UTC).isoformat(),
            },
        )
        if environment.exists():  # without its marker (is_built), or its base Python gone: replace it
            old = environment.with_name(f".tmp-{environment.name}-old-{uuid.uuid4().hex[:8]}")
            os.replace(environment, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, environment)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def interpreter(image_uri: str, workspace: Path, *, run: Runner, note: Note) -> str:
    """The Python that runs a step whose image is ``image_uri``: this one for the venv family (no work)."""
    try:
        family = image_family(image_uri)
    except EnvironmentUnavailable as unavailable:
        raise EnvironmentUnavailable(
            f"local mode has no environment for {image_uri}: {unavailable}"
        ) from None
    if family == VENV:
        return sys.executable
    return str(environment_python(ensure_environment(family, cache_root(workspace), run=run, note=note)))


def on_path(env: dict[str, str], python: str) -> dict[str, str]:
    """The step's variables with its interpreter's folder first on PATH, as its image's Python is."""
    if python == sys.executable:
        return env
    return {**env, "PATH": os.pathsep.join(p for p in (str(Path(python).parent), env.get("PATH")) if p)}


def pip_errors(log_text: str) -> str:
    """Why a build failed, from its output: pip's last warning (e.g. the index unreachable) and its errors."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    warnings = [line for line in lines if line.startswith("WARNING:")][-1:]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return " ".join(warnings + errors) or (lines[-1] if lines else "")
