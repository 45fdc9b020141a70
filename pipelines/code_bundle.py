"""The container code: one bundle per step, each uploaded explicitly and addressed by its own content.

SageMaker's step cache keys on the code a step names (``ProcessingInputs``; ``HyperParameters`` for
training, whose ``sagemaker_submit_directory`` is the code: "Default cache key attributes",
https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html). So each step names a bundle
holding only what its entry script runs: an edit reruns the steps that run the edited code and no other.

A step's bundle is
- its entry script and every project module the script may import (``pipelines.import_graph``: imports
  at module level, inside functions and inside ``try/except ImportError``, and strings naming a module);
- the data files beside those modules: each file directly in an imported module's folder whose suffix is
  in ``DATA_SUFFIXES`` (``processing/*.schema.json``, ``processing/neo_targets.json``;
  ``edge/assets/smoke_frame.jpg`` once ``edge.assets`` is named). Sub-folders come only as imported packages;
- its container's contract files: for Processing ``processing/bootstrap.py`` (the entrypoint every
  Processing step runs, ``steps.containers.script_command``) with what it imports, and
  ``processing/requirements.txt``; for Training ``requirements.txt`` at the root of ``sourcedir.tar.gz``.

It lives at ``s3://{bucket}/{prefix}/code/{sha256 of the bundle}/``: the files themselves (a Processing
input) or ``sourcedir.tar.gz`` (the training job's ``sagemaker_submit_directory``). Building only reads and
hashes local files, each once; ``upload`` is the one place that writes to S3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from edge.archives import reproducible_tar_gz
from pipelines.import_graph import project_modules

REPO_ROOT = Path(__file__).resolve().parents[1]
# The packages the containers get code from: the scripts' own packages and the leaf library they share.
CONTAINER_PACKAGES = ("processing", "training", "inference", "edge")
Layout = Literal["processing", "training"]
# The scripts the steps run (steps/*.py), each with the way its container receives code.
ENTRY_SCRIPTS: Mapping[str, Layout] = {
    "processing/preprocess.py": "processing",
    "processing/evaluate.py": "processing",
    "processing/compile.py": "processing",
    "training/train.py": "training",
    "processing/preprocess_classifier.py": "processing",
    "processing/evaluate_classifier.py": "processing",
    "processing/compile_classifier.py": "processing",
    "training/classifier.py": "training",
    "processing/preprocess_detection.py": "processing",
    "processing/evaluate_detection.py": "processing",
    "processing/compile_detection.py": "processing",
    "training/detector.py": "training",
}
# What a container installs depends on its image. The MXNet image's scripts ship that image's own pins
# (infra/images/mxnet: the image is built from them, so its bootstrap installs nothing) under the
# contract's name: processing/requirements.txt, or the source directory's requirements.txt.
MXNET_REQUIREMENTS = "pipelines/local/requirements/mxnet.txt"
REQUIREMENTS_OF: Mapping[str, str] = {
    "processing/evaluate_classifier.py": MXNET_REQUIREMENTS,
    "processing/compile_classifier.py": MXNET_REQUIREMENTS,
    "training/classifier.py": MXNET_REQUIREMENTS,
    "processing/evaluate_detection.py": MXNET_REQUIREMENTS,
    "processing/compile_detection.py": MXNET_REQUIREMENTS,
    "training/detector.py": MXNET_REQUIREMENTS,
}
PROCESSING_ENTRYPOINT = "processing/bootstrap.py"
PROCESSING_REQUIREMENTS = "processing/requirements.txt"
TRAINING_REQUIREMENTS = "training/requirements.txt"
SOURCEDIR_NAME = "sourcedir.tar.gz"
# Data only: caches, editor files and test leftovers beside the modules must not change a bundle's hash.
DATA_SUFFIXES = frozenset({".json", ".yaml", ".yml", ".txt", ".jpg", ".png"})
# HeadObject of a missing key: 404 with s3:ListBucket on the bucket, else 403, which ``upload`` raises
# rather than guess (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html). "NoSuchKey" is
# GetObject's code, which some emulators also answer HeadObject with.
MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def data_files(module: Path) -> list[Path]:
    """The data files shipped beside a module: files directly in its folder with a suffix in DATA_SUFFIXES."""
    return sorted(
        path
        for path in module.parent.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix in DATA_SUFFIXES
    )


def bundle_paths(script: str, layout: Layout, root: Path = REPO_ROOT) -> list[str]:
    """Root-relative POSIX paths of the files a step running ``script`` gets (``sourcedir`` adds one)."""
    root = root.resolve()
    entries = [script, PROCESSING_ENTRYPOINT] if layout == "processing" else [script]
    modules = {m for entry in entries for m in project_modules(root / entry, root, CONTAINER_PACKAGES)}
    files = modules | {data for module in modules for data in data_files(module)}
    contract = PROCESSING_REQUIREMENTS if layout == "processing" else TRAINING_REQUIREMENTS
    return sorted({path.relative_to(root).as_posix() for path in files} | {contract})


def _is_missing_key(exc: Exception) -> bool:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") in MISSING_KEY_CODES


@dataclass(frozen=True)
class StepBundle:
    """One step's code: ``files`` is what its container sees in its code folder, named by its content."""

    bucket: str
    prefix: str
    script: str
    layout: Layout
    files: Mapping[str, bytes]  # root-relative POSIX path -> content

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.layout.encode() + b"\0")  # the same files in the other layout differ
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix.strip('/')}/code/{self.sha256}"

    @property
    def folder_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}/"

    @property
    def uri(self) -> str:
        """What the step names: the folder (a Processing input) or the ``sourcedir.tar.gz`` (Training)."""
        return self.folder_uri if self.layout == "processing" else f"{self.folder_uri}{SOURCEDIR_NAME}"

    @cached_property
    def sourcedir(self) -> bytes:
        """The code as the framework containers take it, plus ``requirements.txt`` at the root: the
        container installs it before the script runs (its script-mode contract reads that one name there)."""
        if self.layout != "training":
            raise ValueError(f"{self.script} runs in a Processing container: it takes no source directory")
        requirements = self.files[TRAINING_REQUIREMENTS]
        return reproducible_tar_gz({**self.files, "requirements.txt": requirements})

    def objects(self) -> dict[str, bytes]:
        """S3 key -> bytes for everything ``upload`` writes."""
        if self.layout == "training":
            return {f"{self.key_prefix}/{SOURCEDIR_NAME}": self.sourcedir}
        return {f"{self.key_prefix}/{name}": data for name, data in self.files.items()}

    @property
    def marker_key(self) -> str:
        """Written last: its presence means the whole bundle is there (the step's entrypoint)."""
        last = SOURCEDIR_NAME if self.layout == "training" else PROCESSING_ENTRYPOINT
        return f"{self.key_prefix}/{last}"

    def upload(self, s3_client: Any) -> int:
        """Put the bundle into S3 unless it is there already (its key names its content); objects written."""
        try:
            s3_client.head_object(Bucket=self.bucket, Key=self.marker_key)
            return 0
        except Exception as exc:  # botocore's ClientError, or the local client's
            if not _is_missing_key(exc):
                raise
        objects = self.objects()
        for key in sorted(objects, key=lambda k: k == self.marker_key):
            s3_client.put_object(Bucket=self.bucket, Key=key, Body=objects[key])
        return len(objects)


@dataclass(frozen=True)
class CodeBundle:
    """The container code under ``root`` cut into one bundle per entry script, and where each lives in S3."""

    bucket: str
    prefix: str
    root: Path = REPO_ROOT

    _built: dict[str, StepBundle] = field(default_factory=dict, init=False, repr=False, compare=False)

    def step(self, script: str) -> StepBundle:
        """The bundle of the step running ``script``, its files read once: the hash a definition names is
        the hash of what ``upload`` puts, even if a file changes in between."""
        if script not in ENTRY_SCRIPTS:
            raise ValueError(f"{script} is not a step's entry script ({', '.join(ENTRY_SCRIPTS)})")
        if script not in self._built:
            layout = ENTRY_SCRIPTS[script]
            contract = PROCESSING_REQUIREMENTS if layout == "processing" else TRAINING_REQUIREMENTS
            source = {contract: REQUIREMENTS_OF.get(script, contract)}
            files = {
                name: (self.root / source.get(name, name)).read_bytes()
                for name in bundle_paths(script, layout, self.root)
            }
            self._built[script] = StepBundle(self.bucket, self.prefix, script, layout, files)
        return self._built[script]

    @property
    def steps(self) -> dict[str, StepBundle]:
        """Entry script -> its bundle, for every step."""
        return {script: self.step(script) for script in ENTRY_SCRIPTS}

    @property
    def folder_uri(self) -> str:
        """The folder holding every bundle, each under its own hash."""
        return f"s3://{self.bucket}/{self.prefix.strip('/')}/code/"

    def named_in(self, definition_text: str) -> list[StepBundle]:
        """The bundles a pipeline definition names (one per URI: steps may share a bundle)."""
        named = {bundle.uri: bundle for bundle in self.steps.values() if bundle.uri in definition_text}
        return [named[uri] for uri in sorted(named)]

    def upload(self, s3_client: Any, definition_text: str) -> int:
        """Upload every bundle the definition names, each skipped when already there; objects written."""
        return sum(bundle.upload(s3_client) for bundle in self.named_in(definition_text))
