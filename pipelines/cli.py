"""The one console script, ``robocar``: each area registers its own subcommands here.

Imports of heavy modules (sagemaker, TensorFlow) happen inside the commands, so that ``robocar edge``
works on a device that has neither.

This is the one place that turns what a command raises into an exit status (``run_command``):

- bad input (a setting, a parameter, a definition, a file, the workspace, what AWS refuses): one line
  ``robocar: error: ...`` on stderr, exit status 2, as argparse does for a bad flag;
- a bug: one line naming the exception and asking for a rerun with ``--debug``, exit status 70
  (``EX_SOFTWARE`` in sysexits.h: an internal software error); ``robocar --debug ...`` prints the
  traceback too;
- Ctrl-C: exit status 130 (128 + SIGINT, as a shell reports it).
Commands raise; none prints its own error line (docs/local-mode-safety.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

PROG = "robocar"
EXIT_BAD_INPUT = 2
EXIT_BUG = 70  # EX_SOFTWARE, sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (`robocar ... | head`)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, run and deploy the robocar SageMaker Pipeline: DonkeyCar tubs in, pilot out.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from pipelines import commands

    commands.register_all(sub)
    return parser


def one_line(text: object) -> str:
    """``text`` on one line: reports (botocore's, a definition's problems) come with line breaks."""
    return " ".join(str(text).split())


def fail(message: object) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """What commands raise for input a user can fix: ValueError (settings, parameters, definitions,
    botocore's ParamValidationError), OSError (files, the workspace), InfraError (the stack)."""
    types: list[type[BaseException]] = [ValueError, OSError]
    try:
        from pipelines.infra import InfraError
    except ImportError:  # a car without the control plane's dependencies
        pass
    else:
        types.append(InfraError)
    return tuple(types)


def bad_input_message(exc: BaseException) -> str | None:
    """The line that explains ``exc`` to the user, or None when ``exc`` is a bug."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):  # ClientError, AWS or local
        return str(exc)
    if isinstance(exc, ValueError) or type(exc).__name__ == "ParamValidationError":  # botocore's is none
        return str(exc) or type(exc).__name__
    if type(exc).__module__.split(".")[0] == "botocore":  # no credentials, no endpoint, no region...
        return f"{exc} (on AWS: check credentials and --region; or use --local / --endpoint-url)"
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        return f"{exc.strerror}: {names}" if names else exc.strerror
    if isinstance(exc, _bad_input_types()):
        return str(exc) or type(exc).__name__
    return None


def run_command(handler: Callable[[Any], Any], args: Any, *, debug: bool = False) -> int:
    """Run a command's handler and turn what it raises into one line and an exit status."""
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit; point it at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        message = bad_input_message(exc)
        if message is not None:
            return fail(message)
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} (a bug: rerun with "
            f"`{PROG} --debug ...` to see where, and report it)",
            file=sys.stderr,
        )
        return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
