"""How the container scripts end: one line for the user's mistakes, a traceback only for our bugs.

``processing/preprocess.py``, ``processing/evaluate.py`` and ``training/train.py`` run their body
through ``run_main``:

* a ``UserError`` (bad data, archive, folder, number or option) prints ``<prog>: <label>: <message>``
  on one line and exits with the error's ``exit_status`` (2, bad input; preprocess's quality gate
  uses 1);
* an ``OSError`` (a folder that cannot be read or written, a full disk) is the environment, not the
  code: one line, exit status 2;
* anything else is a bug in this code: one line naming it and exit status 70 (``EX_SOFTWARE`` of
  sysexits.h, "an internal software error"), or, with ``--debug``, the whole traceback.

Standard library only: every container imports it.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import traceback
import zlib
from collections.abc import Callable

EXIT_BAD_INPUT = 2
EXIT_BUG = 70  # sysexits.h EX_SOFTWARE; 1 is preprocess's quality gate, 2 bad input
MAX_LINE_CHARS = 2000  # a message quoting hostile data (a 1 MiB line) must stay one readable line


# What unpacking a damaged archive raises besides edge.artifacts.ArtifactError (safe_extract lets these
# through): a truncated gzip stream EOFError, a corrupt one zlib.error or gzip.BadGzipFile (an OSError);
# a name that is both a folder and a file FileExistsError, NotADirectoryError or IsADirectoryError
# (OSError); an encrypted zip member RuntimeError, an unsupported zip compression NotImplementedError (a
# RuntimeError); corrupt xz or bz2 data lzma.LZMAError or OSError. Caught around unpacking only.
ARCHIVE_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError)


class UserError(Exception):
    """A problem with what the user gave the script (data, folders, options): no traceback."""

    exit_status = EXIT_BAD_INPUT
    label = "error"


def clip(text: str, limit: int) -> str:
    """``text`` on one line and at most ``limit`` characters (the cut is marked)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    marker = f"... ({len(flat):,} chars)"
    return flat[: max(limit - len(marker), 0)] + marker


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an internal error (a bug), print the whole traceback instead of one line",
    )


def run_main(prog: str, body: Callable[[], int], *, debug: bool = False) -> int:
    """``body()``'s exit status; an exception becomes one line on stderr and its exit status."""
    try:
        return body()
    except UserError as exc:
        print(f"{prog}: {exc.label}: {clip(str(exc), MAX_LINE_CHARS)}", file=sys.stderr, flush=True)
        return exc.exit_status
    except OSError as exc:
        print(f"{prog}: error: {clip(str(exc), MAX_LINE_CHARS)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: say so in one line, the traceback is one flag away
        if debug:
            traceback.print_exc()
        else:
            detail = clip(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, MAX_LINE_CHARS)
            print(
                f"{prog}: internal error (a bug, not your input): {detail}; --debug prints the traceback",
                file=sys.stderr,
                flush=True,
            )
        return EXIT_BUG
