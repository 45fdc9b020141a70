"""``robocar edge ...`` (and ``robocar-edge ...`` on the car): pull, run, status, rollback, component.

Only argparse and the standard library at import time: the agent, the drive loop and the runtimes are
imported by the command that needs them, so ``--help`` is instant and the car needs no SDK or TensorFlow.
Settings come from flags, else environment variables (the same ones the rest of the project reads).

Exit status: 0 done; 1 the command ran but did not get there (``pull``: not on the newest model; ``run``:
no frame driven); 2 bad input, said in one line (a flag, a corrupt ``state.json``, an unreadable folder,
a package that cannot be driven); 70 (``EX_SOFTWARE``) an exception none of our checks names, i.e. a bug:
one line with its type. ``--debug`` adds the traceback to either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_WORKSPACE = ".robocar"  # where the local pipeline keeps its S3 folder and registry
DEFAULT_ROOT = ".robocar/car"
DEFAULT_GROUP = "robocar-pilots"
DEFAULT_TARGET = "rasp4b"
DEFAULT_TOPIC = "robocar/drive"
EXIT_BAD_INPUT = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE: an internal software error


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _env_float(name: str) -> float:
    value = _env(name, "0") or "0"
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"robocar edge: error: {name}={value!r} is not a number") from None


def _add_registry(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model registry (flag > environment)")
    group.add_argument(
        "--group", default=_env("ROBOCAR_MODEL_PACKAGE_GROUP", DEFAULT_GROUP),
        help=f"model package group; env ROBOCAR_MODEL_PACKAGE_GROUP (default: {DEFAULT_GROUP})",
    )  # fmt: skip
    group.add_argument(
        "--target", default=_env("ROBOCAR_EDGE_TARGET", DEFAULT_TARGET),
        help=f"this car's edge target (Neo device name); env ROBOCAR_EDGE_TARGET (default: {DEFAULT_TARGET})",
    )  # fmt: skip
    group.add_argument(
        "--local-root", "--workspace", dest="local_root", default=None,
        help=f"the local workspace whose registry and S3 folder to use; env ROBOCAR_LOCAL_ROOT "
        f"(default: ./{DEFAULT_WORKSPACE} unless --aws)",
    )  # fmt: skip
    group.add_argument(
        "--aws", action="store_true",
        help="use AWS (boto3) instead of the local workspace; env ROBOCAR_EDGE_REGISTRY=aws",
    )  # fmt: skip
    group.add_argument("--region", default=_env("ROBOCAR_REGION") or _env("AWS_REGION"), help="AWS region")
    group.add_argument(
        "--endpoint-url", default=_env("ROBOCAR_ENDPOINT_URL"),
        help="AWS endpoint (e.g. a moto server); env ROBOCAR_ENDPOINT_URL",
    )  # fmt: skip


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, default=Path(_env("ROBOCAR_EDGE_ROOT", DEFAULT_ROOT) or DEFAULT_ROOT),
        help=f"the car's model folder (state.json, current, models/); env ROBOCAR_EDGE_ROOT "
        f"(default: {DEFAULT_ROOT})",
    )  # fmt: skip


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true",
        help="log at debug level and print the traceback of an error (default: one line)",
    )  # fmt: skip


def _add_model_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefer", default=_env("ROBOCAR_EDGE_PREFER"),
        help="artifact to drive with: a runtime (litert), a precision (int8), both (litert-int8) or a file "
        "name (default: the package's default)",
    )  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the edge subcommands to ``parser`` (``robocar edge`` or ``robocar-edge``)."""
    commands = parser.add_subparsers(dest="edge_command", metavar="ACTION", required=True)

    pull = commands.add_parser(
        "pull", help="install the newest approved model for this car (once, or every --interval seconds)",
        description="Find the newest Approved package with an artifact for --target, download it, verify its "
        "SHA-256, unpack it safely, smoke-test it and swap it in; on any failure keep the current model. "
        "Exit status 0 when the car ends up on the newest model, 1 otherwise (offline, refused, none "
        "approved).",
    )  # fmt: skip
    _add_root(pull)
    _add_registry(pull)
    _add_model_choice(pull)
    pull.add_argument(
        "--interval", type=float, default=_env_float("ROBOCAR_EDGE_INTERVAL"),
        help="poll every N seconds; env ROBOCAR_EDGE_INTERVAL (default: once)",
    )  # fmt: skip
    local = pull.add_argument_group("install an archive already on the car (e.g. delivered by Greengrass)")
    local.add_argument("--archive", type=Path, help="model.tar.gz to install instead of downloading")
    local.add_argument("--sha256", help="its SHA-256 as the registry records it (required with --archive)")
    local.add_argument("--model-package-arn", help="the package it belongs to (required with --archive)")
    _add_debug(pull)
    pull.set_defaults(handler=_guard(_pull))

    run = commands.add_parser(
        "run", help="drive: frames -> pilot -> actuators / JSON lines / MQTT, with live fps and latency",
        description="Drive with the installed model (pulling first unless --no-pull), following new models "
        "as the agent installs them (--interval: poll while driving). Frame sources: camera[:N], tub:PATH, "
        "folder:PATH, video:PATH, or a path (a tub folder, an image folder or a video file).",
    )  # fmt: skip
    _add_root(run)
    _add_registry(run)
    _add_model_choice(run)
    run.add_argument(
        "--model", type=Path, help="drive with this extracted package folder (no agent, no pull)"
    )
    run.add_argument(
        "--source", default=_env("ROBOCAR_EDGE_SOURCE", "camera"), help="frame source (default: camera)"
    )
    run.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    run.add_argument(
        "--rate", type=float, default=0.0, help="pace a replay at N frames/s (default: as fast as possible)"
    )
    run.add_argument(
        "--threads", type=int, default=1, help="runtime threads (default: 1, leaving cores to the camera)"
    )
    run.add_argument("--no-pull", action="store_true", help="do not ask the registry before driving")
    run.add_argument(
        "--interval", type=float, default=_env_float("ROBOCAR_EDGE_INTERVAL"),
        help="poll the registry every N seconds while driving; env ROBOCAR_EDGE_INTERVAL (default: never)",
    )  # fmt: skip
    run.add_argument(
        "--jsonl", help="append one JSON line per command to this file ('-' for standard output)"
    )
    run.add_argument(
        "--actuator", choices=("none", "pca9685-stub"), default="none",
        help="motor/servo output; pca9685-stub maps commands to donkeycar PWM pulses without hardware",
    )  # fmt: skip
    run.add_argument("--summary-json", type=Path, help="also write the final summary as JSON here")
    run.add_argument("--quiet", action="store_true", help="no live line, warnings only")
    mqtt = run.add_argument_group("MQTT (published when a broker is given)")
    mqtt.add_argument(
        "--mqtt-host", default=_env("ROBOCAR_MQTT_HOST"), help="broker host; env ROBOCAR_MQTT_HOST"
    )
    mqtt.add_argument("--mqtt-port", type=int, default=int(_env("ROBOCAR_MQTT_PORT", "1883") or 1883))
    mqtt.add_argument(
        "--mqtt-topic", default=_env("ROBOCAR_MQTT_TOPIC", DEFAULT_TOPIC), help=f"(default: {DEFAULT_TOPIC})"
    )
    mqtt.add_argument("--mqtt-client-id", default="", help="client id (default: robocar-<pid>)")
    mqtt.add_argument("--mqtt-username", default=_env("ROBOCAR_MQTT_USERNAME"))
    mqtt.add_argument("--mqtt-password", default=_env("ROBOCAR_MQTT_PASSWORD"))
    mqtt.add_argument("--mqtt-ca", help="CA bundle for TLS (e.g. AWS IoT Core)")
    mqtt.add_argument("--mqtt-cert", help="client certificate for TLS")
    mqtt.add_argument("--mqtt-key", help="client key for TLS")
    _add_debug(run)
    run.set_defaults(handler=_guard(_run))

    status = commands.add_parser(
        "status", help="show the installed model, the previous one and the last check"
    )
    _add_root(status)
    status.add_argument("--json", action="store_true", help="print state.json as JSON")
    _add_debug(status)
    status.set_defaults(handler=_guard(_status))

    rollback = commands.add_parser(
        "rollback", help="go back to the previous model and reject the current one"
    )
    _add_root(rollback)
    rollback.add_argument("--reason", default="rolled back by hand", help="recorded in state.json")
    _add_debug(rollback)
    rollback.set_defaults(handler=_guard(_rollback))

    component = commands.add_parser(
        "component", help="create the Greengrass v2 component version of an approved package",
        description="Render edge/greengrass/recipe.yaml for a model package (its artifact URI and digest for "
        "--target) and create the component version with greengrassv2 CreateComponentVersion.",
    )  # fmt: skip
    _add_registry(component)
    from edge.greengrass import component as greengrass_component  # standard library only at import

    greengrass_component.add_arguments(component)
    component.set_defaults(handler=_guard(_component))


# ---- plumbing -----------------------------------------------------------------------------------------
def _user_errors() -> tuple[type[Exception], ...]:
    from edge import agent, artifacts, drive, frames, runtimes, sources

    return (
        agent.AgentError,
        artifacts.ArtifactError,
        drive.DriveError,
        frames.FrameError,
        sources.SourceError,
        runtimes.PilotError,
    )


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (our errors, and OSError: a folder that cannot be read or written) is one line on
    stderr and exit 2; any other exception is a bug: one line with its type and exit 70. ``--debug``
    prints the traceback too."""

    def guarded(args: argparse.Namespace) -> int:
        debug = getattr(args, "debug", False)
        _setup_logging(getattr(args, "quiet", False), debug)
        try:
            return handler(args)
        except (*_user_errors(), *_component_errors(), OSError) as exc:
            _report(exc, debug, f"robocar edge: error: {exc}")
            return EXIT_BAD_INPUT
        except Exception as exc:
            hint = "" if debug else " (--debug shows the traceback)"
            _report(exc, debug, f"robocar edge: unexpected {type(exc).__name__}: {exc}{hint}")
            return EXIT_BUG

    return guarded


def _report(exc: BaseException, debug: bool, line: str) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(line, file=sys.stderr)


def _component_errors() -> tuple[type[Exception], ...]:
    from edge.greengrass.component import ComponentError

    return (ComponentError,)


def _setup_logging(quiet: bool, debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if debug:  # ours only: botocore's debug log prints every request, signed headers included
        logging.getLogger("robocar").setLevel(logging.DEBUG)


def registry_location(args: argparse.Namespace) -> Path | None:
    """The local workspace to use, or None for AWS. Local is the project's default (docs/design.md).

    Order: --local-root; --aws or --endpoint-url; $ROBOCAR_LOCAL_ROOT; $ROBOCAR_EDGE_REGISTRY=aws;
    else ./.robocar, the workspace the local pipeline writes.
    """
    from edge.agent import AgentError

    env_root = _env("ROBOCAR_LOCAL_ROOT")
    if args.local_root:
        return Path(args.local_root)
    if args.aws or args.endpoint_url:
        if env_root:
            raise AgentError(f"ROBOCAR_LOCAL_ROOT={env_root} selects the local registry: unset it to use AWS")
        return None
    if env_root:
        return Path(env_root)
    registry = (_env("ROBOCAR_EDGE_REGISTRY", "local") or "local").lower()
    if registry not in ("local", "aws"):
        raise AgentError(f"ROBOCAR_EDGE_REGISTRY must be 'local' or 'aws', got {registry!r}")
    return Path(DEFAULT_WORKSPACE) if registry == "local" else None


def _clients(args: argparse.Namespace, root: Path | None = None) -> Any:
    from edge.aws import clients

    root = root or registry_location(args)
    return clients(local_root=root, region=args.region, endpoint_url=None if root else args.endpoint_url)


class _NoRegistry:
    """Stands in for registry clients that could not be made: every call fails as an unreachable
    registry does, so a check reports ``offline`` and the car keeps its model."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def unavailable(**kwargs: Any) -> Any:
            raise ConnectionError(f"no registry client ({self.reason})")

        return unavailable


def _agent(args: argparse.Namespace) -> Any:
    """The agent with registry clients; a registry that cannot even be set up counts as offline."""
    from edge.agent import Agent

    location = registry_location(args)  # contradictory settings are an error, not "offline"
    try:
        aws = _clients(args, location)
        sagemaker, s3 = aws.sagemaker, aws.s3
    except Exception as exc:  # e.g. boto3 missing on a local-only car: the car still drives
        logging.getLogger("robocar.edge").warning("no registry client (%s): driving offline", exc)
        sagemaker = s3 = _NoRegistry(f"{type(exc).__name__}: {exc}")
    return Agent(
        args.root, group=args.group, target=args.target, sagemaker=sagemaker, s3=s3, prefer=args.prefer
    )


def _pull(args: argparse.Namespace) -> int:
    from edge import agent as agent_mod

    car = _agent(args)
    if args.archive:
        if not (args.sha256 and args.model_package_arn):
            raise agent_mod.AgentError("--archive needs --sha256 and --model-package-arn")
        if not args.archive.is_file():
            raise agent_mod.AgentError(f"--archive {args.archive} is not a file")
        candidate = agent_mod.Candidate(
            model_package_arn=args.model_package_arn,
            version=agent_mod.version_from_arn(args.model_package_arn),
            target=args.target,
            artifact_uri=args.archive.resolve().as_uri(),
            sha256=agent_mod.artifacts.normalize_sha256(args.sha256),
        )
        result = car.install_archive(args.archive, candidate)
    elif args.interval > 0:
        stop = threading.Event()
        with _stop_on_signals(stop):
            agent_mod.poll(car, args.interval, stop=stop.is_set)
        return 0
    else:
        result = car.check()
    print(f"{result.outcome}: {result.detail}")
    return 0 if result.outcome in ("installed", "up-to-date") else 1


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (Greengrass, systemd) and a first Ctrl-C set ``stop``, so the loop ends cleanly: motors
    stopped, messages flushed, summary printed. A second Ctrl-C interrupts at once (e.g. a camera that
    delivers nothing). The previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first_interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, first_interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    with _stop_on_signals(stop):
        return _drive(args, stop)


def _drive(args: argparse.Namespace, stop: threading.Event) -> int:
    from edge import agent as agent_mod
    from edge import drive, sources

    log = logging.getLogger("robocar.edge")
    update: dict[str, str] | None = None
    if args.model:
        model_path = args.model
    else:
        model_path = args.root / "current"  # the agent's link (Agent.current_link)
        car, update = _update_before_driving(args)
        if update["outcome"] not in ("installed", "up-to-date", "skipped"):
            log.warning("update check: %s: %s; driving with the installed model", *update.values())
        if car is not None and args.interval > 0:
            threading.Thread(
                target=agent_mod.poll, args=(car, args.interval), kwargs={"stop": stop.is_set}, daemon=True
            ).start()
            if not model_path.exists():  # a new car: wait for the poller's first install, not crash-loop
                log.warning("no model installed yet: waiting for the first approved model (--interval)")
                while not model_path.exists() and not stop.wait(0.2):
                    pass

    def opener(path: Path) -> Any:
        return drive.open_pilot(path, prefer=args.prefer, threads=args.threads)

    pilot = drive.LivePilot(model_path, opener)
    log.info("driving with %s (%s)", pilot.name, pilot.infer.description)
    source = sources.open_source(args.source, pilot.infer.spec)
    outputs: list[Any] = []
    mqtt = None
    try:
        if args.jsonl:
            outputs.append(drive.JsonLinesWriter(args.jsonl))
        if args.actuator == "pca9685-stub":
            outputs.append(drive.PCA9685Actuator())
        if args.mqtt_host:
            mqtt = drive.MqttPublisher(
                drive.MqttConfig(
                    host=args.mqtt_host, port=args.mqtt_port, topic=args.mqtt_topic,
                    client_id=args.mqtt_client_id,
                    username=args.mqtt_username, password=args.mqtt_password,
                    ca_certs=args.mqtt_ca, certfile=args.mqtt_cert, keyfile=args.mqtt_key,
                )
            )  # fmt: skip
            outputs.append(mqtt)
        progress = None if args.quiet else drive.Progress(sys.stderr)
        summary = drive.drive(
            source,
            pilot,
            outputs,
            max_frames=args.max_frames,
            rate_hz=args.rate,
            progress=progress,
            stop=stop.is_set,
        )
    finally:
        stop.set()
        for output in outputs:
            output.close()
        source.close()
    print(summary.text())
    report = summary.to_dict()
    if update is not None:
        print(f"update check: {update['outcome']}: {update['detail']}")
        report["update"] = update
    if mqtt is not None:
        print(mqtt.summary())
        report["mqtt"] = {"topic": mqtt.config.topic, "sent": mqtt.sent, "acknowledged": mqtt.acknowledged}
    if args.summary_json:
        args.summary_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if summary.frames else 1


def _update_before_driving(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """(the agent or None, what the update check said). Never raises: whatever the check raises (bad
    settings, a corrupt state.json, a full or read-only disk), the car drives with what is installed."""
    car = None
    try:
        car = _agent(args)
        if args.no_pull:
            return car, {"outcome": "skipped", "detail": "--no-pull"}
        result = car.check()
        return car, {"outcome": result.outcome, "detail": result.detail}
    except Exception as exc:
        logging.getLogger("robocar.edge").debug("traceback of the failed update check", exc_info=exc)
        failed = {"outcome": "check-failed", "detail": f"{type(exc).__name__}: {exc}"}
        if car is not None:
            with contextlib.suppress(Exception):  # a corrupt state.json cannot take it: the summary says it
                car.note(failed["outcome"], failed["detail"])
        return car, failed


def _status_line(record: Any) -> str:
    if not isinstance(record, dict):
        return "none"
    fields = (record.get(k) for k in ("folder", "model_package_arn", "sha256", "installed_at"))
    folder, arn, sha256, installed = (str(v) if v is not None else "?" for v in fields)
    return f"{folder}  {arn}  sha256 {sha256[:16]}  installed {installed}"


def _choice_lines(record: Any) -> list[str]:
    """The artifact the car drives and why, then each artifact's install-time figures (or failure)."""
    smoke = record.get("smoke_test") if isinstance(record, dict) else None
    if not isinstance(smoke, dict) or not smoke.get("artifact"):
        return []
    lines = [f"artifact  {smoke['artifact']}: {smoke.get('reason', '')}"]
    for entry in smoke.get("measured") or []:
        if not isinstance(entry, dict):
            continue
        name = f"  {str(entry.get('file')):24s} {str(entry.get('runtime') or '?'):12s}"
        if not entry.get("passed"):
            lines.append(f"{name} failed: {str(entry.get('error'))[:120]}")
        elif "fps" in entry:
            chosen = "  <- drives" if entry.get("file") == smoke["artifact"] else ""
            lines.append(
                f"{name} {entry['fps']:10,.0f} fps  median {entry.get('median_ms', 0):.3f} ms  "
                f"{entry.get('frames')} frames in {entry.get('seconds', 0):.2f} s{chosen}"
            )
    return lines


def _status(args: argparse.Namespace) -> int:
    from edge.agent import STATE_FORMAT, read_state_file

    state = read_state_file(args.root / "state.json")
    if state is None:
        print(f"no state in {args.root}: nothing pulled yet (robocar edge pull)")
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    last = state.get("last_check") if isinstance(state.get("last_check"), dict) else {}
    rejected = state.get("rejected") or {}
    lines = [
        f"root      {args.root} ({state.get('format', STATE_FORMAT)})",
        f"group     {state.get('group')}  target {state.get('target')}",
        f"current   {_status_line(state.get('current'))}",
        *_choice_lines(state.get("current")),
        f"previous  {state.get('previous') or 'none'}",
        f"last      {last.get('at', '-')}  {last.get('outcome', '-')}: {last.get('detail', '')}",
        f"rejected  {len(rejected)} package(s)",
    ]
    for key, entry in rejected.items():
        reason = entry.get("reason") if isinstance(entry, dict) else entry
        lines.append(f"  {key.split('#')[0]}: {str(reason)[:160]}")
    print("\n".join(lines))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from edge.agent import Agent, read_state_file

    state = read_state_file(args.root / "state.json") or {}
    car = Agent(
        args.root,
        group=str(state.get("group", DEFAULT_GROUP)),
        target=str(state.get("target", DEFAULT_TARGET)),
    )
    result = car.rollback(args.reason)
    print(f"{result.outcome}: {result.detail}")
    return 0 if result.outcome == "rolled-back" else 1


def _component(args: argparse.Namespace) -> int:
    from edge.greengrass import component

    return component.run(args, _clients)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robocar-edge",
        description="The robocar device: pull the approved pilot from the model registry and drive with it.",
    )
    configure(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
