"""The SageMaker script-mode contract for the training scripts: hyperparameters arrive as flags and in
``SM_HPS`` (JSON, values possibly quoted strings), next to arguments the container adds for itself.

One parser rule for every trainer (``training/train.py``, ``training/classifier.py``): SM_HPS sets the
defaults of the flags the script knows, flags win, the container's own arguments are ignored, and a
misspelling of ours is refused with the closest name.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from processing.errors import UserError, run_main

# Arguments the SageMaker framework containers add on their own; accepted and ignored.
CONTAINER_ARGS = {"model_dir"}


class UsageError(UserError, ValueError):
    """Bad input from the user (a flag, a folder): reported as one line, no traceback."""


def unquote(raw: Any) -> Any:
    """``'"10"'`` -> ``'10'``: the container may pass hyperparameters JSON-encoded (strings in quotes)."""
    if isinstance(raw, str) and len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def typed(kind: type) -> Any:
    def convert(raw: Any) -> Any:
        value = unquote(raw)
        if kind is bool:
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {raw!r}")
        try:
            return kind(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {raw!r}") from exc

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def positive(kind: type) -> Any:
    base = typed(kind)

    def convert(raw: Any) -> Any:
        value = base(raw)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {raw!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def hyperparameters_from_env(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> dict[str, Any]:
    """SM_HPS -> parser defaults for the hyperparameters this script knows (others, like sagemaker_*,
    belong to the container)."""
    raw = environ.get("SM_HPS")
    if not raw:
        return {}
    try:
        hps = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"SM_HPS is not valid JSON: {exc}") from exc
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    values: dict[str, Any] = {}
    for key, value in hps.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in ("help", "debug"):  # not hyperparameters
            continue
        try:
            converted = (
                action.type(value if isinstance(value, str) else json.dumps(value)) if action.type else value
            )
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"hyperparameter {key}: {exc}") from exc
        if action.choices is not None and converted not in action.choices:
            raise UsageError(f"hyperparameter {key}: {converted!r} is not one of {list(action.choices)}")
        values[dest] = converted
    return values


def check_unknown(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> None:
    """Ignore the container's own arguments; refuse what looks like a misspelling of ours."""
    ours = [o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for token in unknown:
        if not token.startswith("--"):
            continue  # the value of an ignored option
        name = token[2:].split("=", 1)[0]
        if name in CONTAINER_ARGS or name.startswith("sagemaker_"):
            continue
        close = difflib.get_close_matches(name, ours, n=1, cutoff=0.75)
        if close:
            parser.error(f"unknown option --{name}; did you mean --{close[0]}?")
        print(f"{parser.prog}: ignoring unknown argument --{name}", file=sys.stderr)


def parse_script_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, environ: Mapping[str, str]
) -> argparse.Namespace:
    """Flags over SM_HPS over the parser's defaults; the container's extra arguments ignored."""
    try:
        parser.set_defaults(**hyperparameters_from_env(parser, environ))
    except UsageError as exc:
        parser.error(str(exc))
    args, unknown = parser.parse_known_args(argv)
    check_unknown(parser, unknown)
    return args


def add_container_paths(parser: argparse.ArgumentParser, environ: Mapping[str, str], contents: str) -> Any:
    """``--train``, ``--validation`` and ``--sm-model-dir`` defaulting to the container's SM_* folders;
    ``contents`` says what a channel holds. Returns the argument group (more paths may join it)."""
    paths = parser.add_argument_group("paths (SageMaker container defaults)")
    paths.add_argument(
        "--train", type=Path, default=environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
        help=f"train channel: {contents} (SM_CHANNEL_TRAIN)",
    )  # fmt: skip
    paths.add_argument(
        "--validation", type=Path,
        default=environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"),
        help="validation channel, same layout (SM_CHANNEL_VALIDATION)",
    )  # fmt: skip
    paths.add_argument(
        "--sm-model-dir", "--sm_model_dir", dest="model_dir", metavar="DIR", type=Path,
        default=environ.get("SM_MODEL_DIR", "/opt/ml/model"),
        help="model directory to write (SM_MODEL_DIR; the container's --model_dir S3 URI is ignored)",
    )  # fmt: skip
    return paths


def run_training_script(
    prog: str, config: Any, train: Callable[[Any], dict], kept: Callable[[dict], str]
) -> int:
    """Train, print which epoch was kept (``kept`` words its score) and where the model went; a user's
    mistake is one line and exit status 2 (``processing.errors.run_main``)."""

    def body() -> int:
        summary = train(config)
        print(
            f"{prog}: kept epoch {summary['epoch']} ({kept(summary)}); wrote {config.model_dir}", flush=True
        )
        return 0

    return run_main(prog, body, debug=config.debug)
