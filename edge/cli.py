"""``robocar edge ...`` (and ``robocar-edge ...`` on the car): pull, run, status, rollback, upload, component.

Only argparse and the standard library at import time: the agent, the drive loop and the runtimes are
imported by the command that needs them, so ``--help`` is instant and the car needs no SDK or TensorFlow.
Settings come from flags, else environment variables, else ``robocar.toml``, else their defaults: the
table and resolver of edge/settings.py, which ``robocar`` reads too (same flags, variables and keys), and
its one rule for the local workspace or AWS (``choose_backend``; default: local).

Exit status: 0 done; 1 the command ran but did not get there (``pull``: not on the newest model; ``run``:
no frame driven; ``upload``: an upload stopped, it stays queued); 2 bad input, said in one line (a flag, a
corrupt ``state.json``, an unreadable folder, a package that cannot be driven); 70 (``EX_SOFTWARE``) an
exception none of our checks names, i.e. a bug: one line with its type. ``--debug`` adds the traceback to
either.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edge import settings

EXIT_BAD_INPUT = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE: an internal software error
STORAGE_KEYS = ("backend", "workspace", "region", "endpoint_url")  # where the car's AWS calls go
REGISTRY_KEYS = ("model_package_group", "recipe", "edge_target", *STORAGE_KEYS)


def _add_registry(parser: argparse.ArgumentParser) -> None:
    settings.add_arguments(parser, REGISTRY_KEYS, "model registry (flag > environment > robocar.toml)")


def _add_root(parser: argparse.ArgumentParser) -> None:
    settings.add_arguments(parser, ("edge_root",), "the car")


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true",
        help="log at debug level and print the traceback of an error (default: one line)",
    )  # fmt: skip


def _add_model_choice(parser: argparse.ArgumentParser) -> None:
    settings.add_arguments(parser, ("edge_prefer",), "the artifact")


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
    settings.add_arguments(pull, ("edge_interval",), "polling")
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
        "folder:PATH, video:PATH, or a path (a tub folder, an image folder or a video file). An installed "
        "classifier (docs/classifier.md) classifies them instead: the top-k classes of each photo.",
    )  # fmt: skip
    _add_root(run)
    _add_registry(run)
    _add_model_choice(run)
    run.add_argument(
        "--model", type=Path, help="drive with this extracted package folder (no agent, no pull)"
    )
    settings.add_arguments(run, ("edge_source", "edge_interval"), "frames and polling")
    run.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    run.add_argument(
        "--rate", type=float, default=0.0, help="pace a replay at N frames/s (default: as fast as possible)"
    )
    run.add_argument(
        "--threads", type=int, default=1, help="runtime threads (default: 1, leaving cores to the camera)"
    )
    run.add_argument("--no-pull", action="store_true", help="do not ask the registry before driving")
    run.add_argument(
        "--jsonl", "--output",
        help="append one JSON line per command (or classification) to this file ('-' for standard output)",
    )  # fmt: skip
    run.add_argument(
        "--images",
        type=Path,
        help="the photos of this folder (every .jpg/.jpeg/.png, 2 before 10): folder:DIR",
    )
    run.add_argument(
        "--top-k", type=int, default=3, help="classifier: the classes shown per photo (default: 3)"
    )
    run.add_argument(
        "--min-score", type=float, default=0.5,
        help="detector: the boxes reported per photo score at least this (default: 0.5)",
    )  # fmt: skip
    run.add_argument(
        "--actuator", choices=("none", "pca9685-stub"), default="none",
        help="motor/servo output; pca9685-stub maps commands to donkeycar PWM pulses without hardware",
    )  # fmt: skip
    run.add_argument("--summary-json", type=Path, help="also write the final summary as JSON here")
    run.add_argument("--quiet", action="store_true", help="no live line, warnings only")
    _add_recording(run.add_argument_group("recording (docs/recording.md)"), "--record")
    mqtt_keys = ("mqtt_host", "mqtt_port", "mqtt_topic", "mqtt_username", "mqtt_password")
    settings.add_arguments(run, mqtt_keys, "MQTT (published when a broker is given)")
    mqtt = _add_mqtt_connection(run)
    settings.add_arguments(run, ("telemetry_rate", "car_id"), "telemetry (docs/telemetry.md)")
    mqtt.add_argument(
        "--telemetry-frame", action="store_true", help="add the camera frame (80 px wide JPEG, base64)"
    )
    mqtt.add_argument(
        "--telemetry-topic", help="(default: robocar/telemetry/CAR-ID, what the IoT rule reads)"
    )
    _add_debug(run)
    run.set_defaults(handler=_guard(_run))

    _add_record_command(commands)
    _add_serve_command(commands)

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

    _configure_upload(commands)

    component = commands.add_parser(
        "component", help="create the Greengrass v2 component version of an approved package",
        description="Render edge/greengrass/recipe.yaml for a model package (its artifact URI and digest for "
        "--target) and create the component version with greengrassv2 CreateComponentVersion.",
    )  # fmt: skip
    _add_registry(component)
    from edge.greengrass import component as greengrass_component  # standard library only at import

    greengrass_component.add_arguments(component)
    component.set_defaults(handler=_guard(_component))


def _add_mqtt_connection(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The connection's client id and TLS files (``_mqtt_config`` reads them)."""
    mqtt = parser.add_argument_group("MQTT connection")
    mqtt.add_argument("--mqtt-client-id", default="", help="client id (default: robocar-<pid>)")
    mqtt.add_argument("--mqtt-ca", help="CA bundle for TLS (e.g. AWS IoT Core)")
    mqtt.add_argument("--mqtt-cert", help="client certificate for TLS")
    mqtt.add_argument("--mqtt-key", help="client key for TLS")
    return mqtt


def _add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="answer inference requests from MQTT with the installed model (docs/serving.md)",
        description="Subscribe to the request topic; for each {\"id\", \"image_path\" | \"image_b64\"} "
        "request, run the installed model (a classifier: top-k classes; a detector: named boxes; a pilot: "
        "angle and throttle) and "
        "publish {\"id\", \"model_version\", \"latency_ms\", \"prediction\"} on the result topic (QoS 1); "
        "a request that cannot be answered gets {\"id\", \"error\"} there. Follows new models as the agent "
        "installs them (--interval: poll while serving); SIGTERM ends it with a summary line.",
    )  # fmt: skip
    _add_root(serve)
    _add_registry(serve)
    _add_model_choice(serve)
    serve.add_argument("--model", type=Path, help="serve this extracted package folder (no agent, no pull)")
    settings.add_arguments(serve, ("edge_interval",), "polling")
    serve.add_argument("--no-pull", action="store_true", help="do not ask the registry before serving")
    settings.add_arguments(
        serve, ("serve_request_topic", "serve_result_topic", "serve_images_root", "car_id"), "requests"
    )
    serve.add_argument(
        "--max-image-bytes", type=int,
        help="larger images are refused with an error (default: 8 MiB, edge.serve.DEFAULT_MAX_IMAGE_BYTES)",
    )  # fmt: skip
    serve.add_argument("--top-k", type=int, default=3, help="classifier: the classes per answer (default: 3)")
    serve.add_argument("--threads", type=int, default=1, help="runtime threads (default: 1)")
    serve.add_argument("--max-requests", type=int, default=None, help="stop after N requests")
    serve.add_argument("--summary-json", type=Path, help="also write the final summary as JSON here")
    settings.add_arguments(
        serve, ("mqtt_host", "mqtt_port", "mqtt_username", "mqtt_password"), "MQTT (the broker is required)"
    )
    _add_mqtt_connection(serve)
    _add_debug(serve)
    serve.set_defaults(handler=_guard(_serve), quiet=False)


def _configure_upload(commands: Any) -> None:
    upload = commands.add_parser(
        "upload", help="send closed tub sessions to the raw-data prefix (resumable, once per content)",
        description="Each closed session of each tub under --tubs (not the one a recorder has open) is "
        "re-written as a tub v2 of its own and archived reproducibly, so a tub that grows never sends "
        "a session twice; queued under <root>/upload "
        "(survives a reboot) and upload it to s3://BUCKET/PREFIX/raw/CAR-ID/<sha256>.tar.gz: multipart "
        "and resumable on AWS, one PutObject into the local workspace; an archive already there is not "
        "sent again. Exit status 0 when the queue is empty, 1 when an upload stopped (it stays queued "
        "and the next run resumes it). docs/upload.md.",
    )  # fmt: skip
    _add_root(upload)
    settings.add_arguments(
        upload,
        ("edge_tubs", "bucket", "prefix", "car_id", "upload_max_rate", "edge_interval", *STORAGE_KEYS),
        "where from and where to",
    )
    upload.add_argument("--once", action="store_true", help="one pass, then exit (also with --interval 0)")
    _add_debug(upload)
    upload.set_defaults(handler=_guard(_upload))


# ---- plumbing -----------------------------------------------------------------------------------------
def _user_errors() -> tuple[type[Exception], ...]:
    from edge import agent, artifacts, drive, frames, record, runtimes, serve, sources, telemetry, upload

    return (
        serve.ServeError,
        upload.UploadError,
        telemetry.TelemetryError,
        agent.AgentError,
        artifacts.ArtifactError,
        drive.DriveError,
        frames.FrameError,
        sources.SourceError,
        runtimes.PilotError,
        record.RecordError,
    )


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (our errors, and OSError: a folder that cannot be read or written) is one line on
    stderr and exit 2; any other exception is a bug: one line with its type and exit 70. ``--debug``
    prints the traceback too."""

    def guarded(args: argparse.Namespace) -> int:
        debug = getattr(args, "debug", False)
        _setup_logging(getattr(args, "quiet", False), debug)
        try:
            resolve_settings(args)
            return handler(args)
        except (*_user_errors(), *_component_errors(), settings.SettingsError, OSError) as exc:
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


def resolve_settings(args: argparse.Namespace) -> settings.Resolved:
    """The command's settings (flag > environment > robocar.toml > default), resolved once: their values
    replace the parsed flags in ``args`` (typed: the car's folder a Path, numbers numbers)."""
    found = getattr(args, "resolved", None)
    if found is not None:
        return found
    resolved = settings.resolve_args(args, [key for key in settings.BY_KEY if hasattr(args, key)])
    vars(args).update(settings.with_recipe_names(resolved))
    typed = {
        "edge_root": Path,
        "edge_tubs": Path,
        "edge_interval": float,
        "telemetry_rate": float,
        "mqtt_port": int,
    }
    for key, kind in typed.items():
        if key in resolved.values:
            value = Path(str(resolved[key])) if kind is Path else settings.number(resolved, key, kind)
            setattr(args, key, value)
    args.resolved = resolved
    return resolved


def registry_location(args: argparse.Namespace) -> Path | None:
    """The local workspace to use, or None for AWS: the one rule of both CLIs
    (``edge.settings.choose_backend``; default local, ./.robocar, the workspace the local pipeline writes)."""
    return _backend(args).local_root


def _backend(args: argparse.Namespace) -> settings.Backend:
    return settings.choose_backend(resolve_settings(args))


def _clients(args: argparse.Namespace, root: Path | None = None) -> Any:
    from edge.aws import clients

    where = _backend(args)
    return clients(local_root=root or where.local_root, region=args.region, endpoint_url=where.endpoint_url)


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
        args.edge_root, group=args.model_package_group, target=args.edge_target, sagemaker=sagemaker, s3=s3,
        prefer=args.edge_prefer,
    )  # fmt: skip


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
            target=args.edge_target,
            artifact_uri=args.archive.resolve().as_uri(),
            sha256=agent_mod.artifacts.normalize_sha256(args.sha256),
        )
        result = car.install_archive(args.archive, candidate)
    elif args.edge_interval > 0:
        stop = threading.Event()
        with _stop_on_signals(stop):
            agent_mod.poll(car, args.edge_interval, stop=stop.is_set)
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


def _installed_model(args: argparse.Namespace, stop: threading.Event) -> tuple[Path, dict[str, str] | None]:
    """(the model folder to use, what the update check said): ``--model``, else the agent's ``current``
    link after an update check (unless --no-pull), with the registry polled every --interval seconds in
    a thread until ``stop``; a car with no model yet waits for the poller's first install."""
    from edge import agent as agent_mod

    log = logging.getLogger("robocar.edge")
    update: dict[str, str] | None = None
    if args.model:
        model_path = args.model
    else:
        model_path = args.edge_root / "current"  # the agent's link (Agent.current_link)
        car, update = _update_before_driving(args)
        if update["outcome"] not in ("installed", "up-to-date", "skipped"):
            log.warning("update check: %s: %s; driving with the installed model", *update.values())
        if car is not None and args.edge_interval > 0:
            threading.Thread(
                target=agent_mod.poll,
                args=(car, args.edge_interval),
                kwargs={"stop": stop.is_set},
                daemon=True,
            ).start()
            if not model_path.exists():  # a new car: wait for the poller's first install, not crash-loop
                log.warning("no model installed yet: waiting for the first approved model (--interval)")
                while not model_path.exists() and not stop.wait(0.2):
                    pass
    return model_path, update


def _drive(args: argparse.Namespace, stop: threading.Event) -> int:
    from edge import drive, sources

    log = logging.getLogger("robocar.edge")
    model_path, update = _installed_model(args, stop)

    def opener(path: Path) -> Any:
        return drive.open_pilot(path, prefer=args.edge_prefer, threads=args.threads)

    if _is_classifier(model_path) or _is_detector(model_path):
        return _classify(args, model_path, stop, update)
    pilot = drive.LivePilot(model_path, opener)
    log.info("driving with %s (%s)", pilot.name, pilot.infer.description)
    source = sources.open_source(_source(args), pilot.infer.spec)
    outputs: list[Any] = []
    mqtt = recorder = telemetry = None
    try:
        if args.jsonl:
            outputs.append(drive.JsonLinesWriter(args.jsonl))
        if args.actuator == "pca9685-stub":
            outputs.append(drive.PCA9685Actuator())
        if args.mqtt_host:
            mqtt = drive.MqttPublisher(_mqtt_config(args, args.mqtt_topic))
            outputs.append(mqtt)
            if args.telemetry_rate > 0:
                telemetry = _telemetry(args, mqtt, source)
                source = telemetry.tap or source
                outputs.append(telemetry)
        progress = None if args.quiet else drive.Progress(sys.stderr)
        recorder = _recorder(args, args.record) if args.record else None
        summary = drive.drive(
            source,
            pilot,
            outputs,
            max_frames=args.max_frames,
            rate_hz=args.rate,
            progress=progress,
            stop=stop.is_set,
            record=None if recorder is None else _pilot_recording(recorder),
        )
    finally:
        stop.set()
        for output in outputs:
            output.close()
        source.close()
        recording = None if recorder is None else recorder.close()  # what is queued reaches the disk
    print(summary.text())
    report = summary.to_dict()
    if recording is not None:
        print(recording.text(args.record))
        report["recording"] = recording.to_dict()
    if update is not None:
        print(f"update check: {update['outcome']}: {update['detail']}")
        report["update"] = update
    if mqtt is not None:
        print(mqtt.summary())
        report["mqtt"] = {"topic": mqtt.config.topic, "sent": mqtt.sent, "acknowledged": mqtt.acknowledged}
    if telemetry is not None:
        print(telemetry.summary())
        report["telemetry"] = {"topic": telemetry.topic, **telemetry.counts.__dict__}
    if args.summary_json:
        args.summary_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if summary.frames else 1


def _serve(args: argparse.Namespace) -> int:
    """``serve``: the MQTT inference service (edge/serve.py) until SIGTERM or --max-requests."""
    from edge import drive, serve
    from edge.upload import default_car_id

    if not args.mqtt_host:
        raise serve.ServeError(
            "--mqtt-host (or ROBOCAR_MQTT_HOST) is required: the broker requests come from"
        )
    request_topic, result_topic = serve.topics(
        args.serve_request_topic, args.serve_result_topic, args.car_id or default_car_id()
    )
    limits = serve.RequestLimits(
        images_root=Path(args.serve_images_root) if args.serve_images_root else None,
        max_image_bytes=serve.DEFAULT_MAX_IMAGE_BYTES
        if args.max_image_bytes is None
        else args.max_image_bytes,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            model_path, update = _installed_model(args, stop)
            live = drive.LivePilot(model_path, serve.model_opener(args.edge_prefer, args.threads))
            service = serve.InferenceService(live, limits, top_k=args.top_k)
            summary = serve.serve(
                service, _mqtt_config(args, result_topic), request_topic,
                stop=stop.is_set, max_requests=args.max_requests,
            )  # fmt: skip
        finally:
            stop.set()  # ends the registry poller
    print(summary.text())
    print(f"mqtt {result_topic}: {summary.mqtt['sent']} sent, {summary.mqtt['acknowledged']} acknowledged, "
          f"{summary.mqtt['failed']} failed")  # fmt: skip
    report = summary.to_dict()
    if update is not None:
        print(f"update check: {update['outcome']}: {update['detail']}")
        report["update"] = update
    if args.summary_json:
        args.summary_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _source(args: argparse.Namespace) -> str:
    """The frame source: ``--images DIR`` (a folder of photos) or ``--source``."""
    return f"folder:{args.images}" if args.images else args.edge_source


def _mqtt_config(args: argparse.Namespace, topic: str) -> Any:
    from edge import drive

    return drive.MqttConfig(
        host=args.mqtt_host, port=args.mqtt_port, topic=topic, client_id=args.mqtt_client_id,
        username=args.mqtt_username, password=args.mqtt_password,
        ca_certs=args.mqtt_ca, certfile=args.mqtt_cert, keyfile=args.mqtt_key,
    )  # fmt: skip


def _is_classifier(model_path: Path) -> bool:
    """Whether the model to run is a classifier package (edge/classify.py) rather than a pilot."""
    from edge import classify

    return model_path.exists() and classify.is_classifier(model_path)


def _is_detector(model_path: Path) -> bool:
    """Whether the model to run is a detector package (edge/detect.py)."""
    from edge import detect

    return model_path.exists() and detect.is_detector(model_path)


def _classify(
    args: argparse.Namespace, model_path: Path, stop: threading.Event, update: dict[str, str] | None
) -> int:
    """``run`` with an installed classifier (photos -> top-k classes) or detector (photos -> boxes of at
    least --min-score): each photo's answer printed, as JSON lines (--output) and on MQTT (the configured
    --mqtt-topic, else robocar/CAR-ID/classifications or robocar/CAR-ID/detections)."""
    from edge import classify, detect, drive, frames, sources
    from edge.upload import default_car_id

    kind = detect if _is_detector(model_path) else classify
    if args.actuator != "none" or args.record:
        what = "detector" if kind is detect else "classifier"
        raise classify.ClassifierError(f"a {what} does not drive: --actuator and --record are for pilots")

    def opener(path: Path) -> Any:
        if kind is detect:
            return detect.open_detector(
                path, prefer=args.edge_prefer, threads=args.threads, min_score=args.min_score
            )
        return classify.open_classifier(path, prefer=args.edge_prefer, threads=args.threads)

    def answer(source: Any, live: Any, outputs: list[Any], **loop: Any) -> Any:
        if kind is detect:
            return detect.detect(source, live, outputs, min_score=args.min_score, **loop)
        return classify.classify(source, live, outputs, k=args.top_k, **loop)

    live = drive.LivePilot(model_path, opener)
    verb = "detecting" if kind is detect else "classifying"
    logging.getLogger("robocar.edge").info("%s with %s (%s)", verb, live.name, live.infer.description)
    source = sources.open_source(_source(args), frames.FrameSpec())  # the camera's size for a camera
    outputs: list[Any] = []
    mqtt = None
    try:
        if args.jsonl:
            outputs.append(drive.JsonLinesWriter(args.jsonl))
        if args.mqtt_host:
            given = args.resolved.given("mqtt_topic")
            topic = args.mqtt_topic if given else kind.topic_for(args.car_id or default_car_id())
            mqtt = drive.MqttPublisher(_mqtt_config(args, topic))
            outputs.append(mqtt)
        summary = answer(
            source, live, outputs, max_frames=args.max_frames, rate_hz=args.rate,
            progress=None if args.quiet else drive.Progress(sys.stderr), stop=stop.is_set,
            show=functools.partial(print, flush=True),
        )  # fmt: skip
    finally:
        stop.set()
        for output in outputs:
            output.close()
        source.close()
    print(summary.text() if kind is classify else summary.text().replace("classified", "detected in", 1))
    report = summary.to_dict()
    if update is not None:
        print(f"update check: {update['outcome']}: {update['detail']}")
        report["update"] = update
    if mqtt is not None:
        print(mqtt.summary())
        report["mqtt"] = {"topic": mqtt.config.topic, "sent": mqtt.sent, "acknowledged": mqtt.acknowledged}
    if args.summary_json:
        args.summary_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if summary.photos else 1


# ---- recording: `robocar-edge record` and `run --record` (edge/record.py, docs/recording.md) -------------
def _add_recording(group: Any, tub_flag: str) -> None:
    """The tub to record into and when its sessions rotate (shared by ``record`` and ``run --record``)."""
    group.add_argument(
        tub_flag, dest="record", type=Path, required=tub_flag == "--tub",
        help="the donkeycar tub v2 folder to record into (created, or appended to as a new session); "
        "locked while recording: a second recorder on it is refused",
    )  # fmt: skip
    group.add_argument("--rotate-records", type=int, help="start a new session after N records")
    group.add_argument("--rotate-seconds", type=float, help="start a new session after S seconds")
    group.add_argument("--rotate-mb", type=float, help="start a new session after M MB written")
    group.add_argument(
        "--record-queue", type=int, default=64,
        help="records waiting for the disk before one is dropped (default: 64, 3.2 s at 20 Hz)",
    )  # fmt: skip
    group.add_argument(
        "--meta", action="append", default=[], metavar="KEY:VALUE",
        help="user metadata of a new tub (manifest.json line 3), as donkeycar's --meta",
    )  # fmt: skip


def _add_record_command(commands: Any) -> None:
    record = commands.add_parser(
        "record", help="record a donkeycar tub v2 while a person drives (a replayed tub or JSON lines)",
        description="The person drives: the actuators follow their controls and every frame is recorded "
        "(user/mode 'user'). Controls: 'recorded' (a replayed tub's own user/angle and user/throttle) or "
        "jsonl:PATH ('jsonl:-': standard input), one {\"angle\": a, \"throttle\": t} line per frame.",
    )  # fmt: skip
    _add_recording(record, "--tub")
    settings.add_arguments(record, ("edge_source",), "frames")
    record.add_argument("--controls", default="recorded", help="recorded | jsonl:PATH | jsonl:-")
    record.add_argument("--max-frames", type=int, default=None, help="stop after N recorded frames")
    record.add_argument("--rate", type=float, default=0.0, help="pace a replay at N frames/s")
    record.add_argument("--actuator", choices=("none", "pca9685-stub"), default="none")
    record.add_argument("--summary-json", type=Path, help="also write the recording's counts as JSON here")
    _add_debug(record)
    record.set_defaults(handler=_guard(_record), quiet=False)


def _recorder(args: argparse.Namespace, tub: Path) -> Any:
    from edge import record

    metadata = dict(item.split(":", 1) for item in args.meta if ":" in item)
    if len(metadata) != len(args.meta):
        raise record.RecordError(f"--meta takes KEY:VALUE, got {args.meta}")
    rotation = record.Rotation(
        records=args.rotate_records,
        seconds=args.rotate_seconds,
        bytes=None if args.rotate_mb is None else int(args.rotate_mb * 1e6),
    )
    writer = record.TubWriter(tub, metadata=metadata, rotation=rotation)
    return record.Recorder(writer, queue_size=args.record_queue)


def _pilot_recording(recorder: Any) -> Callable[[Any, Any], bool]:
    """``run --record``: the pilot drives (mode ``local``); the person's controls are the replayed tub's
    when there is one, else idle sticks, as donkeycar records its untouched joystick."""
    from edge import record

    def hook(frame: Any, command: Any) -> bool:
        person = record.recorded_controls(frame.recorded)
        values = record.record_values(frame.image, person, "local", (command.angle, command.throttle))
        return bool(recorder.submit(values, command.time))

    return hook


def _record(args: argparse.Namespace) -> int:
    from edge import drive, frames, record, sources

    kind, _, where = args.controls.partition(":")
    if args.controls != "recorded" and not (kind == "jsonl" and where):
        raise record.RecordError(f"--controls must be 'recorded' or jsonl:PATH, got {args.controls!r}")
    stop = threading.Event()
    source = sources.open_source(args.edge_source, frames.FrameSpec())
    if args.controls == "recorded" and not isinstance(source, sources.TubSource):
        source.close()
        raise record.RecordError(f"{source.description} holds no controls: give --controls jsonl:PATH")
    outputs: list[Any] = [drive.PCA9685Actuator()] if args.actuator == "pca9685-stub" else []
    recorder = _recorder(args, args.record)
    with contextlib.ExitStack() as stack:
        controls = None
        if kind == "jsonl":
            stream = sys.stdin if where == "-" else stack.enter_context(open(where, encoding="utf-8"))
            controls = record.json_lines_controls(iter(stream))
        try:
            with _stop_on_signals(stop):
                driven = record.drive_by_person(
                    source, recorder, outputs, controls=controls,
                    max_frames=args.max_frames, rate_hz=args.rate, stop=stop.is_set,
                )  # fmt: skip
        finally:
            for output in outputs:
                output.close()
            source.close()
            stats = recorder.close()
    print(f"drove {driven} frames from {source.description}; " + stats.text(args.record))
    if args.summary_json:
        args.summary_json.write_text(json.dumps({"frames": driven, **stats.to_dict()}, indent=2) + "\n")
    return 0 if stats.written else 1


def _telemetry(args: argparse.Namespace, mqtt: Any, source: Any) -> Any:
    """Rate-limited records on the MQTT connection (edge/telemetry.py), with the frame when asked."""
    from edge import telemetry
    from edge.upload import default_car_id

    car_id = args.car_id or default_car_id()

    def publish(topic: str, payload: bytes) -> bool:
        return mqtt.publish(topic, payload, telemetry=True)

    return telemetry.TelemetryPublisher(
        publish, args.telemetry_topic or telemetry.topic_for(car_id), car_id, rate_hz=args.telemetry_rate,
        tap=telemetry.FrameTap(source) if args.telemetry_frame else None,
    )  # fmt: skip


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
    if isinstance(smoke.get("classes"), list):  # a classifier (edge/classify.py) or detector (edge/detect.py)
        task, classes = smoke.get("task", "classification"), smoke["classes"]
        lines.insert(0, f"task      {task}: {len(classes)} classes ({', '.join(classes)})")
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

    state = read_state_file(args.edge_root / "state.json")
    if state is None:
        print(f"no state in {args.edge_root}: nothing pulled yet (robocar edge pull)")
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    last = state.get("last_check") if isinstance(state.get("last_check"), dict) else {}
    rejected = state.get("rejected") or {}
    lines = [
        f"root      {args.edge_root} ({state.get('format', STATE_FORMAT)})",
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

    state = read_state_file(args.edge_root / "state.json") or {}
    car = Agent(
        args.edge_root,
        group=str(state.get("group", settings.default_of("model_package_group"))),
        target=str(state.get("target", settings.default_of("edge_target"))),
    )
    result = car.rollback(args.reason)
    print(f"{result.outcome}: {result.detail}")
    return 0 if result.outcome == "rolled-back" else 1


def _upload(args: argparse.Namespace) -> int:
    from edge import upload

    bucket = args.bucket
    if not bucket and registry_location(args) is not None:  # the local pipeline's bucket (robocar run's)
        bucket = settings.EXAMPLE_VALUES["bucket"]
    if not bucket:
        raise upload.UploadError("--bucket (or ROBOCAR_BUCKET) is required: the data bucket to upload to")
    destination = upload.Destination(bucket, args.prefix, args.car_id or upload.default_car_id())
    destination.key("0" * 64)  # a car id S3 cannot hold is bad input before anything is archived
    queue = upload.UploadQueue(args.edge_root / "upload")
    rate = upload.TokenBucket(upload.parse_rate(args.upload_max_rate)) if args.upload_max_rate else None
    uploader = upload.Uploader(_clients(args).s3, queue, destination, bucket_rate=rate)
    stop = threading.Event()
    with _stop_on_signals(stop):
        while True:
            report = upload.upload_pass(args.edge_tubs, queue, uploader)
            print(report.line(), flush=True)
            if args.once or not args.edge_interval or stop.wait(args.edge_interval):
                return 0 if report.ok else 1


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
