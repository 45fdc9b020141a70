"""The container code, uploaded explicitly and addressed by content.

The definition refers to ``s3://{bucket}/{prefix}/code/{sha256}/...``: the same code gives the same
URIs (so the definition is byte-identical between builds and SageMaker's step cache holds), changed
code gives new ones. Building only hashes local files; ``upload`` is the one place that writes to S3.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the containers import: the scripts' own packages and the leaf library they share.
CONTAINER_PACKAGES = ("processing", "training", "inference", "edge")
SOURCEDIR_NAME = "sourcedir.tar.gz"
TRAINING_REQUIREMENTS = "training/requirements.txt"
# Source only: caches, editor files and test leftovers must not change the bundle's hash.
BUNDLED_SUFFIXES = frozenset({".py", ".json", ".yaml", ".yml", ".txt", ".jpg", ".png"})


def _container_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for package in CONTAINER_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            hidden = any(part.startswith((".", "__pycache__")) for part in path.relative_to(root).parts)
            if path.is_file() and not hidden and path.suffix in BUNDLED_SUFFIXES:
                files.append(path)
    return files


def deterministic_targz(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar.gz whose bytes depend only on names and contents (no mtimes, owners or gzip timestamp)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@dataclass(frozen=True)
class CodeBundle:
    """The container code under ``root`` and where it lives in S3."""

    bucket: str
    prefix: str
    root: Path = REPO_ROOT

    @cached_property
    def files(self) -> dict[str, bytes]:
        """Relative POSIX path -> content, for every file the containers need."""
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in _container_files(self.root)}

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix.strip('/')}/code/{self.sha256}"

    @property
    def uri(self) -> str:
        """The folder holding every container file (a Processing input)."""
        return f"s3://{self.bucket}/{self.key_prefix}/"

    def script_uri(self, relative_path: str) -> str:
        if relative_path not in self.files:
            raise FileNotFoundError(f"{relative_path} is not part of the container code under {self.root}")
        return f"s3://{self.bucket}/{self.key_prefix}/{relative_path}"

    @property
    def sourcedir_uri(self) -> str:
        """The training code as the framework containers expect it (``sagemaker_submit_directory``)."""
        return f"s3://{self.bucket}/{self.key_prefix}/{SOURCEDIR_NAME}"

    @cached_property
    def sourcedir(self) -> bytes:
        """Every container file, plus ``requirements.txt`` at the root: the framework container installs it
        before the training script runs (its script-mode contract reads that one name at that place)."""
        requirements = self.files[TRAINING_REQUIREMENTS]
        return deterministic_targz([*self.files.items(), ("requirements.txt", requirements)])

    def objects(self) -> dict[str, bytes]:
        """S3 key -> bytes for everything ``upload`` writes."""
        objects = {f"{self.key_prefix}/{name}": data for name, data in self.files.items()}
        objects[f"{self.key_prefix}/{SOURCEDIR_NAME}"] = self.sourcedir
        return objects

    def upload(self, s3_client: Any) -> int:
        """Put the bundle into S3, skipping it when it is already there (its key names its content).

        Returns the number of objects written.
        """
        marker = f"{self.key_prefix}/{SOURCEDIR_NAME}"
        try:
            s3_client.head_object(Bucket=self.bucket, Key=marker)
            return 0
        except Exception as exc:  # botocore ClientError 404/NoSuchKey, or the local client's equivalent
            if "404" not in str(exc) and "NoSuchKey" not in str(exc) and "Not Found" not in str(exc):
                raise
        objects = self.objects()
        # The marker goes last: its presence means the whole bundle is there.
        for key in sorted(objects, key=lambda k: k == marker):
            s3_client.put_object(Bucket=self.bucket, Key=key, Body=objects[key])
        return len(objects)
