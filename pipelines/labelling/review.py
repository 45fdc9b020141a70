"""``robocar label review``: a local web page where a person accepts, corrects or rejects each pre-label.

The page (``review_page/``: HTML, JS and CSS, no build step, nothing from the network) talks to this
server on 127.0.0.1 only, through the JSON API below; tests and scripted reviewers use it too. What is
saved, where, and how a review resumes is review_session.py's; docs/labelling-review.md is the user's page.

- ``GET /``: the page; ``GET /static/<file>``: its files; ``GET /image/<i>``: record i's image (local file
  or S3: the workspace's local S3, or AWS, by the command's backend flags).
- ``GET /api/state``: kind, attributes, classes, total, decided, the first undecided record (``next``).
- ``GET /api/records/<i>``: the record's image URL and size, its pre-label and the decision made, if any.
- ``POST /api/decision``: ``{"index", "action": accept|correct|reject, "class" | "boxes" | "reason"}``;
  answered only once the decision is in the journal (fsynced) and the output rewritten. Bad input: 400
  ``{"error"}`` and nothing saved; the server keeps serving whatever a request sends (a bug is a 500).

Requests are served by a thread each (``ThreadingHTTPServer``); the session serialises decisions. A
request whose ``Host`` is not this server's address is refused (403), and a decision must be sent as
``application/json``, which a page of another site cannot POST here without a CORS preflight this server
never grants: together they keep other pages and DNS rebinding from deciding for the reviewer.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipelines.labelling.manifest import CATEGORIES
from pipelines.labelling.review_session import (
    OUTPUT_SUFFIX,
    DecisionError,
    ReviewSession,
)
from processing.limits import DEFAULT_LIMITS

HOST = "127.0.0.1"
PAGE = Path(__file__).with_name("review_page")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
JSON_TYPE = "application/json"
MAX_BODY_BYTES = 1 << 20  # a decision with MAX_BOXES boxes is ~100 KB
MAX_IMAGE_BYTES = DEFAULT_LIMITS.image_bytes  # Ground Truth's 40 MB, as Preprocess reads them


class ImageError(Exception):
    """A record's image that cannot be read (missing, too large, not an image)."""


class Images:
    """Each record's image bytes, content type and size, from a local path or S3 (clients made on first
    use, so a manifest of local files needs no AWS settings). Only what Pillow reads as an image is
    served: a manifest naming another kind of file shows nothing of it."""

    def __init__(self, session: ReviewSession, clients: Any = None) -> None:
        self.session = session
        self._clients = clients
        self._sizes: dict[int, tuple[int, int]] = {}

    def read(self, index: int) -> tuple[bytes, str]:
        ref = self.session.records[index]["source-ref"]
        try:
            data = self._s3(ref) if ref.startswith("s3://") else self._local(ref)
        except OSError as exc:
            raise ImageError(f"{ref}: {exc.strerror or exc}") from None
        except Exception as exc:  # botocore's ClientError, the local S3's: no such key, access denied
            raise ImageError(f"{ref}: {exc}") from None
        content_type, size = sniff(data, ref)
        self._sizes[index] = size
        return data, content_type

    def size(self, index: int) -> tuple[int, int] | None:
        """(width, height) the boxes are drawn in: a detection record's image_size; else the image's."""
        if self.session.kind == "detection":
            return self.session.image_size(index)
        if index not in self._sizes:
            try:
                self.read(index)
            except ImageError:
                return None
        return self._sizes[index]

    def _local(self, ref: str) -> bytes:
        path = Path(ref) if Path(ref).is_absolute() else self.session.manifest.parent / ref
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"{ref}: over {MAX_IMAGE_BYTES >> 20} MB")
        return path.read_bytes()

    def _s3(self, ref: str) -> bytes:
        from edge.s3_uri import split_s3_uri

        if self._clients is None:
            from edge.aws import clients

            self._clients = clients()
        bucket, key = split_s3_uri(ref)
        body = self._clients.s3.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageError(f"{ref}: over {MAX_IMAGE_BYTES >> 20} MB")
        return data


def sniff(data: bytes, ref: str) -> tuple[str, tuple[int, int]]:
    """The image's MIME type and (width, height), from its header only (Pillow does not decode it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "", "application/octet-stream"), image.size
    except (UnidentifiedImageError, OSError):
        raise ImageError(f"{ref}: not an image Pillow can read") from None


# --------------------------------------------------------------------------- the HTTP side
class ReviewServer:
    """The review's HTTP server, serving in a daemon thread from construction until ``close()``."""

    def __init__(self, session: ReviewSession, clients: Any = None, port: int = 0) -> None:
        self.session = session
        self.images = Images(session, clients)
        self.httpd = ThreadingHTTPServer((HOST, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.review = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="review-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
        self.session.close()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the API's answers
    def state(self) -> dict[str, Any]:
        s = self.session
        return {
            "kind": s.kind,
            "attribute": s.attribute,
            "output_attribute": s.output_attribute,
            "classes": s.classes,
            "total": len(s.records),
            "decided": len(s.decisions),
            "next": s.next_undecided(),
        }

    def record(self, index: int) -> dict[str, Any]:
        s = self.session
        size = self.images.size(index)
        decision = s.decisions.get(index)
        return {
            "index": index,
            "source_ref": s.records[index]["source-ref"],
            "image_url": f"/image/{index}",
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "prelabel": s.prelabel(index),
            "decision": decision.as_posted() if decision else None,
        }

    def decide(self, posted: Any) -> dict[str, Any]:
        self.session.decide(posted)
        return {"saved": True, "decided": len(self.session.decisions), "total": len(self.session.records),
                "next": self.session.next_undecided()}  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    server_version = "robocar-review"

    @property
    def review(self) -> ReviewServer:
        return self.server.review  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # a request per key press would bury the command's own lines

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _answer(self, route: Any) -> None:
        """Run the route; whatever it raises becomes a JSON error and the server keeps serving."""
        try:
            self._route_or_error(route)
        except ConnectionError:  # the page went away before its answer (a reload): no one to tell
            self.close_connection = True

    def _route_or_error(self, route: Any) -> None:
        try:
            if not self._host_is_ours():
                raise HttpError(HTTPStatus.FORBIDDEN, "this server answers only requests for " + HOST)
            route(urlsplit(self.path).path)
        except ConnectionError:
            raise
        except HttpError as exc:
            self._json(exc.status, {"error": exc.message})
        except (DecisionError, ImageError) as exc:
            self._json(HTTPStatus.BAD_REQUEST if isinstance(exc, DecisionError) else 502, {"error": str(exc)})
        except Exception as exc:  # a bug: answered, reported, and the next request is served
            print(f"review: {self.command} {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def _host_is_ours(self) -> bool:
        host = self.headers.get("Host", "")
        return host in (f"{HOST}:{self.review.port}", f"localhost:{self.review.port}")

    def _get(self, path: str) -> None:
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path == "/api/state":
            return self._json(HTTPStatus.OK, self.review.state())
        if path.startswith("/api/records/"):
            return self._json(HTTPStatus.OK, self.review.record(self._index(path)))
        if path.startswith("/image/"):
            data, content_type = self.review.images.read(self._index(path))
            return self._send(HTTPStatus.OK, data, content_type)
        raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _post(self, path: str) -> None:
        if path != "/api/decision":
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such action: {path}")
        if self.headers.get_content_type() != JSON_TYPE:
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"send the decision as {JSON_TYPE}")
        declared = self.headers.get("Content-Length") or "0"
        if not re.fullmatch(r"[0-9]{1,12}", declared):
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send the decision with its Content-Length")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a decision is at most {MAX_BODY_BYTES} bytes"
            )
        try:
            posted = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DecisionError(f"the body is not JSON: {exc}") from None
        self._json(HTTPStatus.OK, self.review.decide(posted))

    def _index(self, path: str) -> int:
        text = path.rsplit("/", 1)[-1]
        total = len(self.review.session.records)
        if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) >= total:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no record {text!r}: records are 0 to {total - 1}")
        return int(text)

    def _static(self, name: str) -> None:
        files = {p.name: p for p in PAGE.iterdir() if p.suffix in STATIC_TYPES}  # nothing else is served
        if name not in files:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        self._send(HTTPStatus.OK, files[name].read_bytes(), STATIC_TYPES[files[name].suffix])

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), JSON_TYPE)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a reload shows the decisions saved since
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def start_review_server(
    manifest: Path,
    output: Path,
    *,
    output_attribute: str | None = None,
    clients: Any = None,
    port: int = 0,
    categories: Path | None = None,
) -> ReviewServer:
    """Open (or resume) the review of ``manifest`` into ``output`` and serve it on 127.0.0.1 in a thread.

    ``clients`` (``edge.aws.clients(...)``) read ``s3://`` images; without them the environment's
    (``$ROBOCAR_LOCAL_ROOT`` or boto3) are made on the first S3 image. ``.url``, ``.close()``."""
    session = ReviewSession(manifest, output, output_attribute=output_attribute, categories=categories)
    try:
        return ReviewServer(session, clients, port)
    except BaseException:
        session.close()
        raise


# --------------------------------------------------------------------------- the CLI
def register(actions: argparse._SubParsersAction) -> None:
    from pipelines import settings as settings_mod

    description = "review pre-labels in a local web page: accept, correct or reject each; saved at once"
    p = actions.add_parser("review", help=description, description=description)
    p.add_argument("manifest", type=Path, help="the pre-labelled manifest (to-review.manifest)")
    p.add_argument(
        "--output", type=Path, default=None, help=f"the reviewed manifest (default: MANIFEST{OUTPUT_SUFFIX})"
    )
    p.add_argument(
        "--output-attribute", default=None, help="the reviewed labels' attribute (default: A + '-adjusted')"
    )
    p.add_argument(
        "--categories", type=Path, default=None, help=f"the class list (default: {CATEGORIES} beside it)"
    )
    p.add_argument("--port", type=int, default=0, help="127.0.0.1's port (default: any free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only; open no browser")
    settings_mod.add_arguments(p, backend=True)
    p.set_defaults(handler=review_command)


def review_command(args: argparse.Namespace) -> int:
    from edge import settings as core
    from edge.aws import clients
    from pipelines import settings as settings_mod

    where = settings_mod.backend(args)
    region = core.resolve_args(args, ("region",))["region"]
    aws = clients(local_root=where.local_root, region=region, endpoint_url=where.endpoint_url)
    server = start_review_server(  # a ReviewError is a ValueError: one line, exit status 2 (pipelines/cli.py)
        args.manifest, args.output, output_attribute=args.output_attribute, clients=aws, port=args.port,
        categories=args.categories,
    )  # fmt: skip
    session = server.session
    print(f"reviewing {len(session.records)} {session.kind} records of {args.manifest}: {server.url}")
    print(f"decisions go to {session.output} as they are made; Ctrl-C ends the review", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    counts = session.counts()
    print(
        f"saved {len(session.decisions)} of {len(session.records)} decisions ({counts['accept']} accepted, "
        f"{counts['correct']} corrected, {counts['reject']} rejected) to {session.output}"
        + (f"; rejected records in {session.rejected}" if counts["reject"] else "")
    )
    return 0
