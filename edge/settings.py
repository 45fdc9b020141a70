"""The one way ``robocar`` and ``robocar-edge`` are configured: the settings table and its resolver.

Each setting has one flag, its environment variables and one ``robocar.toml`` key (``[robocar]`` table,
in the working directory or ``--config``), and one default, all in ``SETTINGS`` below. A value comes from
the flag, else the first environment variable that is set and not empty, else the config file, else the
default (``resolve``). Both CLIs read every setting through this module, so a setting has the same name,
the same variable and the same key everywhere.

Where commands act, the local workspace or AWS, is one setting too (``backend``), chosen by one rule
(``choose_backend``). Standard library only: the car runs it (``pip install .[edge]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.aws import LOCAL_ROOT_ENV  # the workspace's variable: local steps and the client factory read it
from edge.registry import DEFAULT_CAR_TARGET

CONFIG_FILE = "robocar.toml"
CONFIG_TABLE = "robocar"
CONFIG_MAX_BYTES = 64 * 1024  # robocar.toml holds a few dozen short values; anything bigger is not one
BACKENDS = ("local", "aws")
# The image recipes' trainers (pipelines/image_recipe.py); the first is the default.
TRAINING_ALGORITHMS = ("gluon", "builtin")
# The recipes, each with the pipeline and model package group it uses when the user names none (the
# pilot's are the table's defaults below, so existing workspaces and stacks keep their names).
RECIPE_NAMES = {
    "pilot": ("robocar-pipeline", "robocar-pilots"),
    "classifier": ("robocar-classifier", "robocar-classifiers"),
    "detection": ("robocar-detector", "robocar-detectors"),
}
LEVELS = ("flag", "environment", "config", "default")  # precedence, first wins

DEFAULT_WORKSPACE = ".robocar"  # ignored by git; the local S3 folder, registry and executions live here


# Values that let a definition be printed, and the local workspace be used, with no account at all (the
# local pipeline's bucket is this one too); never used to talk to AWS.
EXAMPLE_VALUES = {
    "region": "us-east-1",
    "role": "arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    "bucket": "robocar-data-123456789012",
}


class SettingsError(ValueError):
    """A setting is missing, malformed or contradicts another; the message says how to provide it."""


@dataclass(frozen=True)
class Setting:
    key: str  # the attribute (argparse dest) and the robocar.toml key
    flag: str
    env: tuple[str, ...]  # the first one set wins; env[0] is the one to document
    default: str | None
    help: str
    aliases: tuple[str, ...] = ()  # other flags accepted for it (kept where scripts and docs use them)
    numeric: bool = False  # robocar.toml may write it as a TOML number
    choices: tuple[str, ...] = ()  # the only values accepted (argparse lists them in --help)


SETTINGS: tuple[Setting, ...] = (
    # Where the pipeline lives.
    Setting("region", "--region", ("ROBOCAR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), None, "AWS region"),
    Setting("role", "--role", ("ROBOCAR_ROLE_ARN",), None, "the pipeline's execution role ARN"),
    Setting("bucket", "--bucket", ("ROBOCAR_BUCKET",), None, "S3 bucket for data, code and artifacts"),
    Setting("prefix", "--prefix", ("ROBOCAR_PREFIX",), "robocar", "key prefix inside the bucket"),
    Setting(
        "recipe",
        "--recipe",
        ("ROBOCAR_RECIPE",),
        "pilot",
        "which recipe's pipeline (its pipeline name and model package group follow unless given)",
        choices=tuple(RECIPE_NAMES),
    ),  # fmt: skip
    Setting(
        "training_algorithm",
        "--training-algorithm",
        ("ROBOCAR_TRAINING_ALGORITHM",),
        TRAINING_ALGORITHMS[0],
        "an image recipe's trainer: gluon (the project's, in the MXNet container) or builtin (SageMaker's "
        "built-in algorithm); fixed when the definition is built",
        choices=TRAINING_ALGORITHMS,
    ),  # fmt: skip
    Setting(
        "pipeline_name",
        "--pipeline-name",
        ("ROBOCAR_PIPELINE_NAME",),
        RECIPE_NAMES["pilot"][0],
        "pipeline name",
    ),
    Setting(
        "model_package_group",
        "--model-package-group",
        ("ROBOCAR_MODEL_PACKAGE_GROUP",),
        RECIPE_NAMES["pilot"][1],
        "model package group in the registry",
        aliases=("--group",),
    ),  # fmt: skip
    Setting(
        "endpoint_url",
        "--endpoint-url",
        ("ROBOCAR_ENDPOINT_URL",),
        None,
        "AWS endpoint, e.g. a moto server http://127.0.0.1:5000 (implies --backend aws)",
    ),  # fmt: skip
    # Where commands act. ROBOCAR_EDGE_REGISTRY stays accepted: the component versions already on cars set
    # it in their recipe's Lifecycle Setenv (edge/greengrass/recipe.yaml; https://docs.aws.amazon.com/
    # greengrass/v2/developerguide/component-recipe-reference.html), and a created version cannot be
    # edited: greengrassv2 has CreateComponentVersion and DeleteComponent, no update (botocore's model).
    Setting(
        "backend",
        "--backend",
        ("ROBOCAR_BACKEND", "ROBOCAR_EDGE_REGISTRY"),
        "local",
        "where commands act: the local workspace or AWS (--local, --aws)",
    ),  # fmt: skip
    Setting(
        "workspace",
        "--workspace",
        (LOCAL_ROOT_ENV,),
        DEFAULT_WORKSPACE,
        "the local workspace: S3 folder, registry, executions (implies --backend local)",
        aliases=("--local-root",),
    ),  # fmt: skip
    # The car.
    Setting(
        "edge_target",
        "--edge-target",
        ("ROBOCAR_EDGE_TARGET",),
        DEFAULT_CAR_TARGET,
        "the car's edge target (Neo device name) whose artifact it installs",
        aliases=("--target",),
    ),  # fmt: skip
    Setting(
        "edge_root",
        "--root",
        ("ROBOCAR_EDGE_ROOT",),
        f"{DEFAULT_WORKSPACE}/car",
        "the car's model folder (state.json, current, models/)",
    ),  # fmt: skip
    Setting(
        "edge_interval",
        "--interval",
        ("ROBOCAR_EDGE_INTERVAL",),
        "0",
        "poll the registry every N seconds (0: once before driving, or never while driving)",
        numeric=True,
    ),  # fmt: skip
    Setting(
        "edge_source",
        "--source",
        ("ROBOCAR_EDGE_SOURCE",),
        "camera",
        "frame source: camera[:N], tub:PATH, folder:PATH, video:PATH or a path",
    ),  # fmt: skip
    Setting(
        "edge_prefer",
        "--prefer",
        ("ROBOCAR_EDGE_PREFER",),
        None,
        "artifact to drive with: a runtime (litert), a precision (int8), both (litert-int8) or a file name "
        "(default: the package's default)",
    ),  # fmt: skip
    Setting(
        "car_id",
        "--car-id",
        ("ROBOCAR_CAR_ID",),
        None,
        "this car's name in upload keys and MQTT topics: telemetry, serve (default: the host name)",
    ),  # fmt: skip
    Setting(
        "edge_tubs",
        "--tubs",
        ("ROBOCAR_EDGE_TUBS",),
        f"{DEFAULT_WORKSPACE}/car/tubs",
        "the folder the recorder writes tubs into and the uploader sends closed sessions from",
    ),  # fmt: skip
    Setting(
        "upload_max_rate",
        "--max-rate",
        ("ROBOCAR_UPLOAD_MAX_RATE",),
        None,
        "cap the average upload rate, bytes/s with K/M suffix, e.g. 500K (default: no cap)",
    ),  # fmt: skip
    Setting(
        "telemetry_rate",
        "--telemetry-rate",
        ("ROBOCAR_TELEMETRY_RATE",),
        "2",
        "telemetry records per second on the telemetry topic, 0 for none (docs/telemetry.md)",
        numeric=True,
    ),  # fmt: skip
    Setting("mqtt_host", "--mqtt-host", ("ROBOCAR_MQTT_HOST",), None, "MQTT broker host (none: no MQTT)"),
    Setting("mqtt_port", "--mqtt-port", ("ROBOCAR_MQTT_PORT",), "1883", "MQTT broker port", numeric=True),
    Setting("mqtt_topic", "--mqtt-topic", ("ROBOCAR_MQTT_TOPIC",), "robocar/drive", "MQTT topic"),
    Setting("mqtt_username", "--mqtt-username", ("ROBOCAR_MQTT_USERNAME",), None, "MQTT user name"),
    Setting("mqtt_password", "--mqtt-password", ("ROBOCAR_MQTT_PASSWORD",), None, "MQTT password"),
    # `robocar-edge serve` (edge/serve.py): the car's MQTT inference service.
    Setting(
        "serve_request_topic",
        "--request-topic",
        ("ROBOCAR_SERVE_REQUEST_TOPIC",),
        None,
        "the topic (or topic filter) requests arrive on (default: robocar/CAR-ID/requests)",
    ),  # fmt: skip
    Setting(
        "serve_result_topic",
        "--result-topic",
        ("ROBOCAR_SERVE_RESULT_TOPIC",),
        None,
        "the topic answers and errors are published on (default: robocar/CAR-ID/results)",
    ),  # fmt: skip
    Setting(
        "serve_images_root",
        "--images-root",
        ("ROBOCAR_SERVE_IMAGES_ROOT",),
        None,
        "the folder a request's image_path must be inside (default: image paths are refused)",
    ),  # fmt: skip
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BACKEND_KEYS = ("backend", "workspace", "endpoint_url")


def setting(key: str) -> Setting:
    return BY_KEY[key]


def default_of(key: str) -> str:
    """A setting's default, for code that needs the value itself (e.g. a dataclass field's default)."""
    value = BY_KEY[key].default
    if value is None:
        raise KeyError(f"setting {key} has no default")
    return value


@dataclass(frozen=True)
class Resolved:
    """Each resolved setting's value (None: unset) and where it came from: ``flag``, ``$VARIABLE``,
    ``config`` or ``default``."""

    values: Mapping[str, str | None]
    sources: Mapping[str, str]
    environ: Mapping[str, str]

    def __getitem__(self, key: str) -> str | None:
        return self.values[key]

    def given(self, key: str) -> bool:
        """Set by the user (flag, environment or config file), not the default."""
        return self.values.get(key) is not None and self.sources.get(key) != "default"

    def level(self, key: str) -> int:
        source = self.sources[key]
        return LEVELS.index("environment") if source.startswith("$") else LEVELS.index(source)

    def where(self, key: str) -> str:
        """How the user gave a setting, for a message that refuses it."""
        return where(BY_KEY[key], self.sources[key])


def where(item: Setting, source: str) -> str:
    if source == "flag":
        return item.flag
    if source == "config":
        return f"'{item.key}' in {CONFIG_FILE}"
    if source == "default":
        return f"{item.flag} (default)"
    return source  # $VARIABLE


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config: Path | None = None,
    keys: Iterable[str] | None = None,
) -> Resolved:
    """Each setting of ``keys`` (default: all): flag > environment > config file > default.

    ``flags`` maps keys to the parsed flag values (None or empty: not given). ``config`` is the file
    named by ``--config`` (it must exist), else ``./robocar.toml`` when there is one. Raises
    SettingsError for an unreadable config file, an unknown key in it, or a bad backend.
    """
    environ = os.environ if environ is None else environ
    table = config_values(config)
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for key in keys if keys is not None else BY_KEY:
        item = BY_KEY[key]
        value, source = flags.get(key), "flag"
        if value is None or value == "":
            value, source = next(((environ[e], f"${e}") for e in item.env if environ.get(e)), (None, ""))
        if value is None:
            value, source = table.get(key), "config"
        if value is None or value == "":
            value, source = item.default, "default"
        values[key], sources[key] = (None if value is None else str(value)), source
    resolved = Resolved(values, sources, environ)
    for key, value in values.items():
        allowed = BY_KEY[key].choices
        if allowed and value not in allowed:
            raise SettingsError(f"{resolved.where(key)} must be one of {', '.join(allowed)}, got {value!r}")
    if "backend" in values and values["backend"] not in BACKENDS:
        raise SettingsError(
            f"{resolved.where('backend')} must be 'local' or 'aws', got {values['backend']!r}"
        )
    return resolved


def with_recipe_names(resolved: Resolved) -> dict[str, str | None]:
    """The resolved values, with the recipe's own pipeline name and model package group wherever the user
    named none (``RECIPE_NAMES``): two recipes never share a pipeline or a group by accident."""
    values = dict(resolved.values)
    names = RECIPE_NAMES[str(values.get("recipe") or BY_KEY["recipe"].default)]
    for key, name in zip(("pipeline_name", "model_package_group"), names, strict=True):
        if key in values and not resolved.given(key):
            values[key] = name
    return values


def resolve_args(args: Any, keys: Iterable[str], environ: Mapping[str, str] | None = None) -> Resolved:
    """``resolve`` with an argparse namespace's flags (attributes named by the keys) and ``--config``."""
    keys = tuple(keys)
    return resolve({k: getattr(args, k, None) for k in keys}, environ, getattr(args, "config", None), keys)


@dataclass(frozen=True)
class Backend:
    """Where commands act: ``local_root`` (the workspace) when local; ``endpoint_url`` only on AWS."""

    name: str
    local_root: Path | None
    endpoint_url: str | None

    @property
    def is_local(self) -> bool:
        return self.local_root is not None


def choose_backend(resolved: Resolved) -> Backend:
    """The one rule for local vs AWS, the same in every command of both CLIs.

    ``backend`` says it (``--backend local|aws``, ``--local``, ``--aws``; ``$ROBOCAR_BACKEND``;
    ``backend`` in robocar.toml; default ``local``: nothing reaches AWS unless asked). A workspace given
    by the user implies ``local`` and an endpoint URL implies ``aws``, at the precedence of where they
    were given: ``--workspace ws`` beats ``backend = "aws"`` in robocar.toml, ``--aws`` beats
    ``$ROBOCAR_LOCAL_ROOT``. Two different answers at the same level (``--aws --workspace ws``) are an
    error, and so is AWS while ``$ROBOCAR_LOCAL_ROOT`` is set: the client factory (edge/aws.py) and local
    steps read that variable, so it would quietly keep everything local.
    """
    name = str(resolved["backend"])
    claims = [(resolved.level("backend"), name, f"{resolved.where('backend')} {name}")]
    if resolved.given("workspace"):
        claims.append((resolved.level("workspace"), "local", resolved.where("workspace")))
    if resolved.given("endpoint_url"):
        claims.append((resolved.level("endpoint_url"), "aws", resolved.where("endpoint_url")))
    top = min(level for level, _, _ in claims)
    winners = {name: why for level, name, why in claims if level == top}
    if len(winners) > 1:
        raise SettingsError(
            f"{winners['local']} selects the local workspace but {winners['aws']} selects AWS: give one"
        )
    (name,) = winners
    if name == "local":
        return Backend("local", Path(str(resolved["workspace"])), None)
    if resolved.environ.get(LOCAL_ROOT_ENV):
        raise SettingsError(
            f"{LOCAL_ROOT_ENV}={resolved.environ[LOCAL_ROOT_ENV]} selects the local workspace: "
            "unset it to use AWS"
        )
    return Backend("aws", None, resolved["endpoint_url"])


def add_arguments(parser: Any, keys: Iterable[str], title: str | None = None) -> None:
    """Add the flags of ``keys`` (and ``--config`` once) to an argparse parser; every flag defaults to
    None, so that ``resolve`` can tell a given flag from the environment, the config file and the default.
    ``backend`` adds ``--backend`` with its shorthands ``--local`` and ``--aws``, mutually exclusive."""
    group = parser.add_argument_group(title or f"settings (flag > environment > {CONFIG_FILE} > default)")
    for key in keys:
        item = BY_KEY[key]
        default = f"; default: {item.default}" if item.default is not None else ""
        text = f"{item.help} (env {item.env[0]}; {CONFIG_FILE}: {item.key}{default})"
        if key == "backend":
            choice = group.add_mutually_exclusive_group()
            choice.add_argument(item.flag, dest=key, choices=BACKENDS, default=None, help=text)
            choice.add_argument(
                "--local", dest=key, action="store_const", const="local", help="--backend local"
            )
            choice.add_argument("--aws", dest=key, action="store_const", const="aws", help="--backend aws")
        else:
            group.add_argument(
                item.flag, *item.aliases, dest=key, default=None, help=text,
                **({"choices": item.choices} if item.choices else {"metavar": key.upper()}),
            )  # fmt: skip
    if not any(action.dest == "config" for action in parser._actions):
        parser.add_argument(
            "--config", type=Path, default=None, help=f"settings file (default: ./{CONFIG_FILE} if present)"
        )


def number(resolved: Resolved, key: str, kind: type[int] | type[float]) -> int | float:
    """A numeric setting's value; SettingsError names where a non-number came from."""
    value = resolved[key]
    try:
        return kind(str(value))
    except ValueError:
        raise SettingsError(
            f"{resolved.where(key)}={value!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None


def config_values(path: Path | None) -> dict[str, Any]:
    """The ``[robocar]`` table of the config file (``path``, else ./robocar.toml when present), checked:
    known keys only, each a string (a number where the setting is numeric)."""
    candidate = path or Path(CONFIG_FILE)
    if not candidate.exists():
        if path is not None:
            raise SettingsError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(_read_config(candidate))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {candidate} is not valid TOML: {exc}") from None
    section = data.get(CONFIG_TABLE, data)
    if not isinstance(section, dict):
        raise SettingsError(f"config file {candidate}: [{CONFIG_TABLE}] must be a table of settings")
    unknown = sorted(set(section) - set(BY_KEY))
    if unknown:
        raise SettingsError(f"config file {candidate}: unknown key(s) {', '.join(unknown)}")
    for key, value in section.items():
        numeric = BY_KEY[key].numeric and isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(value, str) and not numeric:  # TOML has types: region = 5 is an integer
            raise SettingsError(
                f"config file {candidate}: {key} must be a string (in quotes), got {_toml_type(value)} "
                f"{value!r}"
            )
    return section


def _read_config(candidate: Path) -> str:
    """The config file's text: a regular file of at most CONFIG_MAX_BYTES of UTF-8 (never a FIFO or a
    device, whose read could block or never end)."""
    if not candidate.is_file():
        raise SettingsError(f"config file {candidate} is not a regular file")
    try:
        with open(candidate, "rb") as handle:
            data = handle.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"config file {candidate} cannot be read: {exc.strerror}") from None
    if len(data) > CONFIG_MAX_BYTES:
        raise SettingsError(f"config file {candidate} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"config file {candidate} is not UTF-8 text (TOML is)") from None


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", list: "an array", dict: "a table"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "a date or time")
