"""Where the pipeline lives: region, role, bucket, prefix, names, endpoint.

Each setting comes from its flag, else its environment variable, else the config file (``robocar.toml``
in the working directory, or ``--config``), else its default where one makes sense. A setting that is
still missing is an error that names the flag, the variable and the config key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "robocar.toml"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says how to provide it."""


@dataclass(frozen=True)
class Setting:
    key: str  # also the attribute name and the config-file key
    flag: str
    env: tuple[str, ...]
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("region", "--region", ("ROBOCAR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), None, "AWS region"),
    Setting("role", "--role", ("ROBOCAR_ROLE_ARN",), None, "the pipeline's execution role ARN"),
    Setting("bucket", "--bucket", ("ROBOCAR_BUCKET",), None, "S3 bucket for data, code and artifacts"),
    Setting("prefix", "--prefix", ("ROBOCAR_PREFIX",), "robocar", "key prefix inside the bucket"),
    Setting(
        "pipeline_name", "--pipeline-name", ("ROBOCAR_PIPELINE_NAME",), "robocar-pipeline", "pipeline name"
    ),
    Setting(
        "model_package_group",
        "--model-package-group",
        ("ROBOCAR_MODEL_PACKAGE_GROUP",),
        "robocar-pilots",
        "model package group in the registry",
    ),  # fmt: skip
    Setting(
        "endpoint_url",
        "--endpoint-url",
        ("ROBOCAR_ENDPOINT_URL",),
        None,
        "AWS endpoint (e.g. a moto server: http://127.0.0.1:5000)",
    ),  # fmt: skip
)
# Values that let a definition be printed with no account at all; never used to talk to AWS.
EXAMPLE_VALUES = {
    "region": "us-east-1",
    "role": "arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    "bucket": "robocar-data-123456789012",
}


@dataclass(frozen=True)
class Settings:
    region: str
    role: str
    bucket: str
    prefix: str
    pipeline_name: str
    model_package_group: str
    endpoint_url: str | None


def add_arguments(parser: Any) -> None:
    """Add every setting's flag (and ``--config``) to an argparse parser."""
    group = parser.add_argument_group("where the pipeline lives (flag > environment > robocar.toml)")
    for s in SETTINGS:
        default = f" (default: {s.default})" if s.default else ""
        group.add_argument(s.flag, dest=s.key, default=None, help=f"{s.help}; env {s.env[0]}{default}")
    group.add_argument("--config", type=Path, default=None, help=f"config file (default: ./{CONFIG_FILE})")


def _config_values(path: Path | None) -> dict[str, Any]:
    candidate = path or Path(CONFIG_FILE)
    if not candidate.exists():
        if path is not None:
            raise SettingsError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(candidate.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {candidate} is not valid TOML: {exc}") from exc
    section = data.get("robocar", data)
    unknown = sorted(set(section) - {s.key for s in SETTINGS})
    if unknown:
        raise SettingsError(f"config file {candidate}: unknown key(s) {', '.join(unknown)}")
    return section


def resolve(args: Any, *, use_examples: bool = False) -> Settings:
    """Settings from parsed flags, the environment and the config file.

    ``use_examples`` fills region/role/bucket with placeholders (account 123456789012): for printing
    a definition, never for calling AWS.
    """
    config = _config_values(getattr(args, "config", None))
    values: dict[str, str | None] = {}
    missing = []
    for s in SETTINGS:
        value = getattr(args, s.key, None)
        value = value or next((os.environ[e] for e in s.env if os.environ.get(e)), None)
        value = value or config.get(s.key) or s.default
        if value is None and use_examples:
            value = EXAMPLE_VALUES.get(s.key)
        if value is None and s.key != "endpoint_url":
            missing.append(f"{s.flag} (or ${s.env[0]}, or '{s.key}' in {CONFIG_FILE})")
        values[s.key] = value
    if missing:
        raise SettingsError("missing setting(s): " + "; ".join(missing))
    if not str(values["role"]).startswith("arn:"):
        raise SettingsError(
            f"--role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), got {values['role']!r}"
        )
    return Settings(**values)  # type: ignore[arg-type]
