"""Preprocess step: DonkeyCar tubs (v2, v1) or Ground Truth manifests -> train/validation/test shards.

Runs in a SageMaker Processing container and, unchanged, as a local process::

    python processing/preprocess.py --input DIR --output DIR [options]

Output (docs/contracts.md section 2): ``OUTPUT/{train,validation,test}/shard-*.npz`` + ``dataset.json``
and ``OUTPUT/report/data_report.json``, which accounts for every record of every tub
(read = accepted + rejected + deleted) with the reason of each rejection. On one of several instances
(``/opt/ml/config/resourceconfig.json``) the names carry the instance's host (``dataset-algo-2.json``,
``data_report-algo-2.json``); ``read_data_report`` merges the instances' reports. How records are counted and
indexed: ``processing/tubs.py``; Ground Truth image resolution: ``processing/ground_truth.py``; splits:
``processing/splits.py``. The output is byte-identical for a given input, options and seed, whatever
``--workers``.

Every input is bounded (``processing/limits.py``, the ``--max-*`` flags, docs/data-limits.md): a record
over a limit is rejected with its reason, an input over a limit is refused. Exit status: 0 ok; 1 the
quality gate; 2 bad input or options, in one line (``processing/errors.py``); 70 a bug (``--debug``
prints its traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifacts import ArtifactError, ExtractLimits, safe_extract
from edge.frames import FrameSpec
from processing.errors import ARCHIVE_READ_ERRORS, UserError, add_debug_flag, run_main
from processing.ground_truth import class_list, read_ground_truth
from processing.images import ShardResult, ShardTask, build_shard, release_frame_buffers
from processing.limits import DEFAULT_LIMITS, FLAGS, DataLimits, LimitError, RecordBudget, limit_text
from processing.records import RecordValidator
from processing.shards import (
    DEFAULT_SHARD_SIZE,
    host_suffix,
    natural_order,
    prepare_split_dir,
    shard_name,
    write_dataset_json,
)
from processing.splits import (
    SPLIT_MODES,
    SPLITS,
    FrameKey,
    TubUnits,
    describe_modes,
    fractions_from,
    split_frames,
)
from processing.tubs import (
    Candidate,
    Source,
    SourceError,
    SourceReport,
    discover_sources,
    read_v1_tub,
    read_v2_tub,
    walk_input,
)

DEFAULT_INPUT = "/opt/ml/processing/input/data"
DEFAULT_OUTPUT = "/opt/ml/processing/output"
# Where SageMaker Processing names the job's instances: {"current_host": "algo-1", "hosts": [...]}
# (https://docs.aws.amazon.com/sagemaker/latest/dg/build-your-own-processing-container.html).
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
MAX_RESOURCE_CONFIG_BYTES = 1 << 20  # SageMaker's is ~100 bytes per host, at most 100 hosts
MAX_INSTANCES = 100  # ProcessingClusterConfig.InstanceCount's maximum (botocore's service model)
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # a DNS label, e.g. algo-2
REPORT_FORMAT = "robocar-data-report/1"
REPORT_JSON = "data_report.json"
AUTO_SHARDS, MIN_AUTO_SHARD = 16, 256
# Each worker holds one shard's frames: 2,048 default 160x120 frames are 118 MB; larger frames make
# smaller shards so that a 4096x4096 camera cannot ask for 100 GB.
MAX_SHARD_FRAME_BYTES = 512 << 20
MAX_FRAME_SIDE = 4096  # pixels: a 4K camera is 3840x2160


def auto_shard_size(candidates: int, frame_bytes: int = 120 * 160 * 3) -> int:
    """Shards small enough that a pool has work to balance, never more than the contract's 2,048 frames
    nor ``MAX_SHARD_FRAME_BYTES`` of frames.

    A function of the data only (never of --workers), so the output stays the same for any worker count.
    """
    by_count = min(DEFAULT_SHARD_SIZE, max(MIN_AUTO_SHARD, -(-candidates // AUTO_SHARDS)))
    return max(1, min(by_count, MAX_SHARD_FRAME_BYTES // frame_bytes))


class PreprocessError(UserError):
    """Bad input or options: reported as one line, exit status 2."""


class DataQualityError(UserError):
    """The data failed the step's quality gate (nothing accepted, too many rejections): exit status 1."""

    exit_status = 1
    label = "data rejected"


@dataclasses.dataclass(frozen=True)
class Instance:
    """This Processing instance among the job's (``resourceconfig.json``)."""

    host: str
    hosts: tuple[str, ...]

    @property
    def part(self) -> str | None:
        """The host that names this instance's files, or None when it is the job's only instance."""
        return self.host if len(self.hosts) > 1 else None


ONLY_INSTANCE = Instance("algo-1", ("algo-1",))


def read_instance(path: Path) -> Instance:
    """The instance ``resourceconfig.json`` describes; no file (outside SageMaker): the only instance."""
    if not path.is_file():
        return ONLY_INSTANCE
    if path.stat().st_size > MAX_RESOURCE_CONFIG_BYTES:
        raise PreprocessError(f"{path}: more than {MAX_RESOURCE_CONFIG_BYTES:,} bytes")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise PreprocessError(f"{path}: not JSON ({exc})") from None
    host = config.get("current_host") if isinstance(config, dict) else None
    hosts = config.get("hosts") if isinstance(config, dict) else None
    names = hosts if isinstance(hosts, list) else []
    valid = all(isinstance(name, str) and HOST_NAME.fullmatch(name) for name in [host, *names])
    if not valid or not 0 < len(names) <= MAX_INSTANCES or len(set(names)) != len(names) or host not in names:
        raise PreprocessError(
            f'{path}: expected {{"current_host": HOST, "hosts": [HOST, ...]}} with current_host among '
            f"at most {MAX_INSTANCES} distinct host names (letters, digits, '-')"
        )
    return Instance(host, tuple(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preprocess.py",
        description="Turn DonkeyCar tubs (v2 and v1, nested, mixed) or SageMaker Ground Truth "
        "image-classification manifests into train/validation/test shards, accounting for every record.",
        epilog="Exit status: 0 ok; 1 the data failed the quality gate (nothing accepted, or the rejected "
        "fraction above --max-reject-fraction); 2 bad input or options. The report is written in every "
        "case that gets as far as reading the data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--input", type=Path, default=Path(DEFAULT_INPUT), help="folder searched for tubs/manifests"
    )
    io.add_argument("--output", type=Path, default=Path(DEFAULT_OUTPUT), help="folder for splits and report")
    io.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        metavar="MANIFEST",
        help="read this Ground Truth output manifest (relative to --input or absolute) instead of tubs; "
        "without it, *.manifest files under --input are used when there are no tubs",
    )
    io.add_argument("--label-attribute", default=None, help="Ground Truth label attribute (default: detect)")
    frames = parser.add_argument_group("frames (edge.frames.FrameSpec)")
    frames.add_argument("--camera-height", type=int, default=120, help="expected image height")
    frames.add_argument("--camera-width", type=int, default=160, help="expected image width")
    frames.add_argument("--crop-top", type=int, default=0, help="rows removed at the top")
    frames.add_argument("--crop-bottom", type=int, default=0, help="rows removed at the bottom")
    frames.add_argument(
        "--height", type=int, default=None, help="frame height (default: rows left after crop)"
    )
    frames.add_argument("--width", type=int, default=None, help="frame width (default: camera width)")
    split = parser.add_argument_group("splits")
    split.add_argument("--train-fraction", type=float, default=0.7)
    split.add_argument("--validation-fraction", type=float, default=0.15, help="test gets the remainder")
    split.add_argument(
        "--split-by",
        choices=SPLIT_MODES,
        default="auto",
        help="unit of assignment: whole sessions, or contiguous blocks of a session; auto, tub by tub: "
        "session when the tub has at least 10 sessions, else blocks",
    )
    split.add_argument(
        "--block-frames",
        type=int,
        default=200,
        help="record indexes per block (10 s at 20 Hz); in auto mode smaller when a tub would make "
        "fewer than 20 blocks",
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--resource-config",
        type=Path,
        default=Path(RESOURCE_CONFIG),
        help="SageMaker's description of the job's instances (current_host, hosts); without the file "
        "this is the only instance. On one of several, every input must be a tub archive, and the "
        "output names carry the host",
    )
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes decoding images")
    run.add_argument(
        "--shard-size",
        type=int,
        default=0,
        metavar="N",
        help=f"candidate frames per shard, at most {DEFAULT_SHARD_SIZE}; 0: {DEFAULT_SHARD_SIZE}, down to "
        f"{MIN_AUTO_SHARD} when the data would make fewer than {AUTO_SHARDS} shards (so that several "
        "processes can build them at once)",
    )
    run.add_argument(
        "--max-reject-fraction",
        type=float,
        default=0.25,
        help="fail when rejected / (accepted + rejected) exceeds this",
    )
    add_debug_flag(run)
    add_limit_flags(parser)
    return parser


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The ``--max-*`` flags of ``DataLimits`` (read back by ``limits_from``)."""
    bounds = parser.add_argument_group(
        "limits (docs/data-limits.md): a record over one is rejected, an input over one refused (exit 2)"
    )
    defaults = DataLimits()
    for field in dataclasses.fields(DataLimits):
        bounds.add_argument(
            FLAGS[field.name],
            dest=f"limit_{field.name}",
            type=int,
            default=getattr(defaults, field.name),
            metavar="N",
            help=LIMIT_HELP[field.name],
        )


LIMIT_HELP = {
    "tub_records": "records of one tub or Ground Truth manifest, and its largest record index + 1",
    "total_records": "records of the whole input",
    "sources": "tubs, manifests and archives in the input",
    "line_bytes": "bytes of one catalog line, Ground Truth manifest line or v1 record file",
    "metadata_bytes": "bytes of manifest.json, meta.json, exclude.json or a catalog_manifest",
    "image_bytes": "bytes of one image file",
    "classes": "Ground Truth class ids (0..N-1)",
}


def limits_from(args: argparse.Namespace) -> DataLimits:
    values = {field.name: getattr(args, f"limit_{field.name}") for field in dataclasses.fields(DataLimits)}
    for name, value in values.items():
        if value < 1:
            raise PreprocessError(f"{FLAGS[name]} must be at least 1, got {value}")
    return DataLimits(**values)


def frame_spec_from(args: argparse.Namespace) -> FrameSpec:
    height = args.height if args.height is not None else args.camera_height - args.crop_top - args.crop_bottom
    sides = {"--camera-height": args.camera_height, "--camera-width": args.camera_width, "--height": height}
    sides["--width"] = args.width if args.width is not None else args.camera_width
    for flag, value in sides.items():
        if value > MAX_FRAME_SIDE:
            raise PreprocessError(f"bad frame options: {flag} {value} is more than {MAX_FRAME_SIDE} pixels")
    try:
        return FrameSpec(
            camera_height=args.camera_height,
            camera_width=args.camera_width,
            crop_top=args.crop_top,
            crop_bottom=args.crop_bottom,
            height=height,
            width=args.width if args.width is not None else args.camera_width,
        )
    except ValueError as exc:
        raise PreprocessError(f"bad frame options: {exc}") from None


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")  # what the "new data" rule starts a run for
# A tub is thousands of small files; these bound what the uploaded archives of one run may unpack to
# (max_total_bytes: all of them together).
TUB_ARCHIVE_LIMITS = ExtractLimits(max_members=2_000_000, max_file_bytes=64 << 20, max_total_bytes=64 << 30)
ARCHIVE_ERRORS = (ArtifactError, tarfile.TarError, *ARCHIVE_READ_ERRORS)  # processing/errors.py says which
NAME_CLASH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError)


def archive_error(exc: BaseException, dest: Path) -> str:
    """Why an archive could not be unpacked, naming the member (not the scratch folder) where known."""
    filename = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and filename:
        member = os.path.relpath(filename, dest) if str(filename).startswith(str(dest)) else filename
        why = exc.strerror or str(exc)
        if isinstance(exc, NAME_CLASH_ERRORS):
            why += ": the archive holds a folder and a file of the same name"
        return f"cannot unpack {member}: {why}"
    if isinstance(exc, ArtifactError):
        return str(exc)
    return f"damaged or unsupported archive ({type(exc).__name__}: {exc})"


class DamagedArchive(ArtifactError):
    """A tar archive with bytes after the last member it can parse."""


def verify_tar_complete(archive: Path) -> None:
    """Read a tar archive to its end before anything of it is unpacked.

    ``tarfile`` ends the member list without a word at the first header it cannot parse (a damaged
    archive would unpack to a partial tub), and a gzip stream's CRC is checked only once it is read to
    its end. So every header is read (data is skipped, or decompressed and dropped), and what follows
    the last member must be the zero blocks that end a tar. Zip members carry their own CRC, checked
    on extraction.
    """
    if zipfile.is_zipfile(archive):
        return
    with tarfile.open(archive, "r:*") as tar:
        while tar.next() is not None:
            pass
        stream = tar.fileobj
        stream.seek(tar.offset)
        while chunk := stream.read(1 << 20):
            if chunk.count(0) != len(chunk):
                raise DamagedArchive(
                    f"damaged: the bytes after member {len(tar.members)} (offset {tar.offset:,}) "
                    "are not a tar header"
                )


def unpack_archives(root: Path, scratch: Path, limits: DataLimits) -> list[Source]:
    """The tubs inside every archive under ``root``, unpacked safely into ``scratch``.

    A tub from ``runs/day1.tar.gz`` is named ``runs/day1.tar.gz/<folder in the archive>`` in the report.
    An archive that is unreadable, damaged or unsafe (links, ``..``, absolute paths, a name used twice,
    over the limits) stops the step, and so does a symbolic link to an archive (never followed).
    """
    archives = sorted(  # names first: a stat per file of a tub's thousands of images costs more than the walk
        Path(folder) / name
        for folder, _, names in walk_input(root)
        for name in names
        if name.lower().endswith(ARCHIVE_SUFFIXES)
    )
    if len(archives) > limits.sources:
        raise LimitError(
            f"the input holds {len(archives):,} archives, more than {limit_text(limits, 'sources')}"
        )
    sources: list[Source] = []
    unpacked = 0
    for number, archive in enumerate(archives):
        name = archive.relative_to(root).as_posix()
        if not archive.is_file():
            continue
        dest = scratch / f"archive-{number}"
        budget = dataclasses.replace(
            TUB_ARCHIVE_LIMITS, max_total_bytes=TUB_ARCHIVE_LIMITS.max_total_bytes - unpacked
        )
        try:
            verify_tar_complete(archive)
            written = safe_extract(archive, dest, budget)
        except ARCHIVE_ERRORS as exc:
            raise PreprocessError(f"archive {name}: {archive_error(exc, dest)}") from None
        unpacked += sum((dest / member).stat().st_size for member in written)
        for source in discover_sources(dest):
            inner = source.path.relative_to(dest).as_posix()
            sources.append(Source(source.path, source.format, name if inner == "." else f"{name}/{inner}"))
    return sources


def select_sources(
    args: argparse.Namespace, scratch: Path, limits: DataLimits, instance: Instance = ONLY_INSTANCE
) -> list[Source]:
    if instance.part is not None and not args.input.exists():
        return []  # an instance given no object (fewer objects than instances) may get no folder either
    if not args.input.is_dir():
        raise PreprocessError(f"--input {args.input} is not a folder")
    if instance.part is not None:
        return instance_sources(args, scratch, limits, instance)
    if args.ground_truth is not None:
        path = args.ground_truth if args.ground_truth.is_absolute() else args.input / args.ground_truth
        if not path.is_file():
            raise PreprocessError(f"--ground-truth {path} does not exist")
        return [Source(path, "ground-truth", path.name)]
    sources = sorted(
        discover_sources(args.input) + unpack_archives(args.input, scratch, limits), key=lambda s: s.name
    )
    if len(sources) > limits.sources:
        raise LimitError(
            f"the input holds {len(sources):,} tubs and manifests, more than {limit_text(limits, 'sources')}"
        )
    tubs = [s for s in sources if s.format != "ground-truth"]
    manifests = [s for s in sources if s.format == "ground-truth"]
    if tubs and manifests:
        names = ", ".join(s.name for s in manifests)
        raise PreprocessError(
            f"--input holds both tubs and Ground Truth manifests ({names}); pass --ground-truth to choose"
        )
    if not sources:
        raise PreprocessError(
            "no tub (manifest.json, or meta.json + record_N.json), tub archive or *.manifest under "
            f"{args.input}"
        )
    return tubs or manifests


def instance_sources(
    args: argparse.Namespace, scratch: Path, limits: DataLimits, instance: Instance
) -> list[Source]:
    """The tubs of one of several instances, each of which is given a share of the input's objects
    (ShardedByS3Key, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProcessingS3Input.html).

    A tub is read whole only when it is one object: a tub uploaded as loose files would be split
    between instances (each would read a part, or miss its manifest.json and skip it without a word),
    so any file that is not a tub archive refuses the run, naming it. An instance given no object
    reads nothing and writes empty outputs (fewer objects than instances). Ground Truth manifests are
    refused: class ids and images are resolved over the whole manifest.
    """
    hosts = len(instance.hosts)
    if args.ground_truth is not None:
        raise PreprocessError(f"--ground-truth needs a single instance; this job has {hosts}")
    for folder, _, names in walk_input(args.input):
        for name in sorted(names):
            if not name.lower().endswith(ARCHIVE_SUFFIXES):
                loose = (Path(folder) / name).relative_to(args.input).as_posix()
                raise PreprocessError(
                    f"{loose} is not a tub archive: on {hosts} instances every input object must be one "
                    f"({', '.join(ARCHIVE_SUFFIXES)}), because each instance is given a share of the objects "
                    "and a tub's loose files would be split between instances; upload each tub as an "
                    "archive, or run on one instance"
                )
    sources = sorted(unpack_archives(args.input, scratch, limits), key=lambda s: s.name)
    if len(sources) > limits.sources:
        raise LimitError(f"the input holds {len(sources):,} tubs, more than {limit_text(limits, 'sources')}")
    manifests = [s.name for s in sources if s.format == "ground-truth"]
    if manifests:
        raise PreprocessError(
            f"Ground Truth manifests ({', '.join(manifests)}) need a single instance; this job has {hosts}"
        )
    return sources


def read_sources(
    sources: Sequence[Source],
    args: argparse.Namespace,
    limits: DataLimits,
    read_manifest: Callable[..., tuple[SourceReport, list[Candidate]]] = read_ground_truth,
) -> tuple[list[SourceReport], list[Candidate], list[int], dict[int, str]]:
    """Read every source: (reports, candidates, the report number of each candidate, classes);
    a Ground Truth manifest by ``read_manifest`` (image classification unless told otherwise)."""
    budget = RecordBudget(limits)
    validators = {
        "v2": RecordValidator("tub_v2_record"),
        "v1": RecordValidator("tub_v1_record"),
        "ground-truth": RecordValidator("ground_truth_record"),
    }
    reports: list[SourceReport] = []
    candidates: list[Candidate] = []
    owners: list[int] = []
    classes: dict[int, str] = {}
    for source in sources:
        try:
            if source.format == "v2":
                report, found = read_v2_tub(source, validators["v2"], limits, budget)
            elif source.format == "v1":
                report, found = read_v1_tub(source, validators["v1"], limits, budget)
            else:
                report, found = read_manifest(
                    source,
                    validators["ground-truth"],
                    args.input,
                    classes,
                    args.label_attribute,
                    limits,
                    budget,
                )
        except (SourceError, ValueError) as exc:
            raise PreprocessError(f"cannot read {source.format} {source.name}: {exc}") from None
        owners.extend([len(reports)] * len(found))
        reports.append(report)
        candidates.extend(found)
    return reports, candidates, owners, classes


THREADED_FRAMEWORKS = ("tensorflow", "torch", "jax")  # run thread pools that may hold locks at fork


def pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` (fastest; the default on Linux), unless a framework that runs its own thread pools is
    loaded in this interpreter (tests, notebooks): forking while another thread holds a lock can
    deadlock the child, so then ``forkserver``. numpy's idle BLAS threads are fork-safe."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    if not any(name in sys.modules for name in THREADED_FRAMEWORKS):
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["processing.images"])
    return context


def shard_tasks(
    split_dir: Path,
    positions: Sequence[int],
    candidates: Sequence[Candidate],
    tub_names: Sequence[str],
    spec: FrameSpec,
    shard_size: int,
    classifier: bool,
    limits: DataLimits = DEFAULT_LIMITS,
    host: str | None = None,
) -> list[ShardTask]:
    """One task per ``shard_size`` consecutive candidates of a split (written to a temporary name)."""
    tasks = []
    for number, start in enumerate(range(0, len(positions), shard_size)):
        chunk = [candidates[p] for p in positions[start : start + shard_size]]
        columns: dict[str, np.ndarray] = {
            "session": np.array([c.session for c in chunk], dtype=np.str_),
            "tub": np.array([tub_names[p] for p in positions[start : start + shard_size]], dtype=np.str_),
            "index": np.array([c.index for c in chunk], dtype=np.int64),
            "timestamp_ms": np.array([c.timestamp_ms for c in chunk], dtype=np.int64),
        }
        if classifier:
            columns["label"] = np.array([c.label for c in chunk], dtype=np.int64)
        else:
            columns["angle"] = np.array([c.angle for c in chunk], dtype=np.float32)
            columns["throttle"] = np.array([c.throttle for c in chunk], dtype=np.float32)
        path = str(split_dir / f".part{host_suffix(host)}-{number:05d}.npz")
        tasks.append(ShardTask(path, [c.image_path for c in chunk], columns, spec, limits))
    return tasks


def write_splits(
    args: argparse.Namespace,
    spec: FrameSpec,
    reports: list[SourceReport],
    candidates: list[Candidate],
    owners: list[int],
    by_split: dict[str, list[int]],
    extra: dict[str, Any],
    limits: DataLimits = DEFAULT_LIMITS,
    host: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Build every shard (in a pool of ``--workers`` processes, or here), then name and list them.

    Shards come back in order, so the shard names, and each split's fingerprint over them, are the
    same whatever the worker count. ``host``: this instance's, when it is one of several.
    """
    classifier = "classes" in extra
    shard_size = args.shard_size or auto_shard_size(len(candidates), frame_bytes(spec))
    tub_names = [reports[o].tub for o in owners]
    split_dirs = {split: prepare_split_dir(args.output, split, host) for split in SPLITS}
    jobs: list[tuple[str, list[int], ShardTask]] = []
    for split in SPLITS:
        positions = by_split[split]
        tasks = shard_tasks(
            split_dirs[split], positions, candidates, tub_names, spec, shard_size, classifier, limits, host
        )
        for number, task in enumerate(tasks):
            jobs.append((split, positions[number * shard_size : (number + 1) * shard_size], task))
    workers = min(args.workers, len(jobs))
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(pool_context().Pool(workers))
            results: Iterator[ShardResult] = pool.imap(build_shard, [task for _, _, task in jobs])
        else:
            pool = None
            results = (build_shard(task) for _, _, task in jobs)
        try:
            return _collect(jobs, results, split_dirs, reports, candidates, owners, spec, extra, host)
        finally:
            release_frame_buffers()


def _collect(
    jobs: Sequence[tuple[str, list[int], ShardTask]],
    results: Iterator[ShardResult],
    split_dirs: dict[str, Path],
    reports: list[SourceReport],
    candidates: list[Candidate],
    owners: list[int],
    spec: FrameSpec,
    extra: dict[str, Any],
    host: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Account for each shard's candidates and give its file its final name, in order."""
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    frames = dict.fromkeys(SPLITS, 0)
    sessions: dict[str, set[str]] = {split: set() for split in SPLITS}
    total, done = len(candidates), 0
    for (split, positions, task), result in zip(jobs, results, strict=True):
        for position, reason in zip(positions, result.reasons, strict=True):
            if reason is None:
                reports[owners[position]].accepted += 1
            else:
                reports[owners[position]].reject(candidates[position].index, reason)
        if result.frames:
            name = shard_name(len(shards[split]), host)
            final = split_dirs[split] / name
            os.replace(task.path, final)
            shards[split].append(name)
            frames[split] += result.frames
            sessions[split].update(result.sessions)
        done += len(positions)
        print(f"  {split}: {len(shards[split])} shards; frames {done}/{total}", file=sys.stderr, flush=True)
    return {
        split: write_dataset_json(
            split_dirs[split],
            split,
            shards[split],
            frames[split],
            sessions[split],
            spec,
            extra,
            host,
        )
        for split in SPLITS
    }


COUNTS = ("read", "accepted", "rejected", "deleted")


class ReportError(ValueError):
    """Instance reports that do not make one accounting (missing, repeated or disagreeing)."""


def accounting(tubs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``total`` and ``rejected_fraction`` over its tubs' entries."""
    totals = {key: sum(tub[key] for tub in tubs) for key in COUNTS}
    judged = totals["accepted"] + totals["rejected"]
    return {
        "total": {
            "tub": "total",
            "format": "+".join(sorted({tub["format"] for tub in tubs})),
            **totals,
            "rejections": [{"tub": tub["tub"], **entry} for tub in tubs for entry in tub["rejections"]],
        },
        "rejected_fraction": totals["rejected"] / judged if judged else 0.0,
    }


def split_shares(frames: dict[str, int], fractions: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Each split's frames, the fraction of all frames that is (the units' hashes make it approximate)
    and the fraction asked for."""
    total = sum(frames.values())
    return {
        split: {
            "frames": frames[split],
            "fraction": round(frames[split] / total, 4) if total else 0.0,
            "target_fraction": round(share, 4),
        }
        for split, share in zip(SPLITS, fractions, strict=True)
    }


def empty_split_warnings(splits: dict[str, dict[str, Any]]) -> list[str]:
    """A warning for each split asked for (target above 0) that holds no frame."""
    total = sum(entry["frames"] for entry in splits.values())
    return [
        f"the {split} split is empty (target {entry['target_fraction']:.0%} of {total} frames): every "
        "session or block fell in another split; add sessions or tubs, lower --block-frames, or change --seed"
        for split, entry in splits.items()
        if total and entry["target_fraction"] > 0 and entry["frames"] == 0
    ]


def build_report(
    args: argparse.Namespace,
    spec: FrameSpec,
    reports: list[SourceReport],
    datasets: dict[str, dict[str, Any]],
    plans: dict[str, TubUnits],
    fractions: Sequence[float],
    instance: Instance = ONLY_INSTANCE,
) -> dict[str, Any]:
    """This instance's data_report.json (without status), empty-split warnings when it is the only one."""
    broken = [r.tub for r in reports if r.unaccounted()]
    if broken:  # every record read is accepted, rejected or deleted; anything else is a bug here
        raise RuntimeError(f"read != accepted + rejected + deleted for {', '.join(broken)}")
    tubs = [r.to_dict() for r in reports]
    splits = split_shares({name: d["frames"] for name, d in datasets.items()}, fractions)
    for name, entry in splits.items():
        entry.update(sessions=datasets[name]["sessions"], fingerprint=datasets[name]["fingerprint"])
    return {
        "format": REPORT_FORMAT,
        "input": str(args.input),
        "instance": {"host": instance.host, "hosts": list(instance.hosts)},
        "tubs": tubs,
        **accounting(tubs),
        "max_reject_fraction": args.max_reject_fraction,
        "splits": splits,
        "split_by": describe_modes(list(plans.values())),
        "split_units": {tub: plan.to_dict() for tub, plan in plans.items()},
        "seed": args.seed,
        "frame_spec": spec.to_dict(),
        "warnings": empty_split_warnings(splits) if instance.part is None else [],
    }


def quality_failure(report: dict[str, Any]) -> str | None:
    """Why the data fails the step, or None. One of several instances judges its own tubs; one given no
    tub (fewer input objects than instances) passes. A merged report (no host) judges all tubs."""
    total, host, hosts = report["total"], report["instance"]["host"], report["instance"]["hosts"]
    if len(hosts) > 1 and host is not None and not report["tubs"]:
        return None
    where = REPORT_JSON if len(hosts) == 1 else report_name(host) if host else "data_report-*.json"
    if total["accepted"] == 0:
        return (
            f"no record was accepted (read {total['read']}, rejected {total['rejected']}, "
            f"deleted {total['deleted']})"
        )
    if report["rejected_fraction"] > report["max_reject_fraction"]:
        return (
            f"{total['rejected']} of {total['accepted'] + total['rejected']} records rejected "
            f"({report['rejected_fraction']:.1%} > --max-reject-fraction "
            f"{report['max_reject_fraction']:.1%}); "
            f"see report/{where}"
        )
    return None


def report_name(host: str | None = None) -> str:
    """``data_report.json``, or ``data_report-<host>.json`` for one of several instances."""
    return f"data_report{host_suffix(host)}.json"


AGREEING_FIELDS = ("format", "max_reject_fraction", "seed", "frame_spec")


def merge_reports(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One accounting from every instance's report: tubs in name order, totals, split shares and
    warnings over all of them; failed when any instance failed or the whole fails the gate.

    Refuses (ReportError) a set that is not every instance's report exactly once, reports that
    disagree on the run's settings, or a tub in two reports.
    """
    if len(parts) == 1:
        return dict(parts[0])
    hosts = parts[0]["instance"]["hosts"]
    found = [part["instance"]["host"] for part in parts]
    if sorted(found) != sorted(hosts) or any(part["instance"]["hosts"] != hosts for part in parts):
        raise ReportError(f"reports of instances {found}, the job's instances are {hosts}")
    by_host = sorted(parts, key=lambda part: hosts.index(part["instance"]["host"]))
    first = by_host[0]
    for part in by_host[1:]:
        for field in AGREEING_FIELDS:
            if part[field] != first[field]:
                raise ReportError(f"instance reports disagree on {field}: {part[field]!r}, {first[field]!r}")
    tubs = sorted((tub for part in by_host for tub in part["tubs"]), key=lambda tub: tub["tub"])
    names = [tub["tub"] for tub in tubs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ReportError(f"tubs read by more than one instance: {', '.join(repeated)}")
    broken = [tub["tub"] for tub in tubs if tub["read"] != tub["accepted"] + tub["rejected"] + tub["deleted"]]
    if broken:
        raise ReportError(f"read != accepted + rejected + deleted for {', '.join(broken)}")
    frames = {split: sum(part["splits"][split]["frames"] for part in by_host) for split in SPLITS}
    splits = split_shares(frames, [first["splits"][split]["target_fraction"] for split in SPLITS])
    for split, entry in splits.items():
        entry["sessions"] = sorted({s for part in by_host for s in part["splits"][split]["sessions"]})
        entry["parts"] = {part["instance"]["host"]: part["splits"][split]["fingerprint"] for part in by_host}
    # tubs in name order, as on one instance
    by_tub = sorted((item for part in by_host for item in part["split_units"].items()), key=lambda i: i[0])
    modes = {mode for part in by_host for mode in part["split_by"].split("+") if mode != "none"}
    merged = {
        **{field: first[field] for field in AGREEING_FIELDS},
        "input": first["input"],  # the same container path on every instance
        "instance": {"host": None, "hosts": list(hosts)},
        "tubs": tubs,
        **accounting(tubs),
        "splits": splits,
        "split_by": "+".join(sorted(modes)) or "none",
        "split_units": dict(by_tub),
        "warnings": empty_split_warnings(splits),
    }
    failures = [f"{part['instance']['host']}: {part['failure']}" for part in by_host if part.get("failure")]
    whole = quality_failure(merged)
    failures += [whole] if whole else []
    merged["status"] = "failed" if failures else "ok"
    merged["failure"] = "; ".join(failures) or None
    return merged


def read_data_report(report_dir: Path) -> dict[str, Any]:
    """The ``report`` output's accounting: its data_report.json, or every instance's merged."""
    single = report_dir / REPORT_JSON
    parts = sorted(report_dir.glob("data_report-*.json"), key=lambda path: natural_order(path.name))
    if single.is_file() == bool(parts):
        found = "both data_report.json and data_report-<host>.json" if parts else "no data_report.json"
        raise ReportError(f"{report_dir} holds {found}")
    return merge_reports([json.loads(path.read_text()) for path in parts or [single]])


def frame_bytes(spec: FrameSpec) -> int:
    return spec.height * spec.width * 3


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole step; returns data_report.json's content. Raises PreprocessError / DataQualityError."""
    spec = frame_spec_from(args)
    limits = limits_from(args)
    try:
        fractions = fractions_from(args.train_fraction, args.validation_fraction)
    except ValueError as exc:
        raise PreprocessError(str(exc)) from None
    if not 0 <= args.shard_size <= DEFAULT_SHARD_SIZE:
        raise PreprocessError(
            f"--shard-size must be 0 (auto) or 1..{DEFAULT_SHARD_SIZE} (the contract's limit)"
        )
    if args.shard_size * frame_bytes(spec) > MAX_SHARD_FRAME_BYTES:
        raise PreprocessError(
            f"--shard-size {args.shard_size} frames of {spec.width}x{spec.height} are more than "
            f"{MAX_SHARD_FRAME_BYTES >> 20} MiB per shard; at most "
            f"{MAX_SHARD_FRAME_BYTES // frame_bytes(spec)}"
        )
    if not 0.0 <= args.max_reject_fraction <= 1.0:
        raise PreprocessError(f"--max-reject-fraction must be in [0, 1], got {args.max_reject_fraction}")
    if args.workers < 1 or args.block_frames < 1:
        raise PreprocessError("--workers and --block-frames must be at least 1")
    if args.seed < 0:
        raise PreprocessError(f"--seed must be >= 0, got {args.seed}")
    instance = read_instance(args.resource_config)
    with tempfile.TemporaryDirectory(prefix="robocar-archives-") as scratch:
        sources = select_sources(args, Path(scratch), limits, instance)
        reports, candidates, owners, classes = read_sources(sources, args, limits)
        found = Found(sources, reports, candidates, owners, classes)
        return _split_and_write(args, spec, fractions, found, limits, instance)


@dataclasses.dataclass
class Found:
    """What reading the input found: its sources, their reports, the candidates and their owners."""

    sources: list[Source]
    reports: list[SourceReport]
    candidates: list[Candidate]
    owners: list[int]
    classes: dict[int, str]


def _split_and_write(
    args: argparse.Namespace,
    spec: FrameSpec,
    fractions: tuple[float, float, float],
    found: Found,
    limits: DataLimits,
    instance: Instance = ONLY_INSTANCE,
) -> dict[str, Any]:
    reports, candidates, owners = found.reports, found.candidates, found.owners
    keys = [FrameKey(reports[o].tub, c.session, c.index) for c, o in zip(candidates, owners, strict=True)]
    by_split, plans = split_frames(keys, fractions, args.seed, args.split_by, args.block_frames)
    classifier = bool(found.sources) and found.sources[0].format == "ground-truth"
    extra = {"classes": class_list(found.classes)} if classifier else {}
    datasets = write_splits(args, spec, reports, candidates, owners, by_split, extra, limits, instance.part)
    report = build_report(args, spec, reports, datasets, plans, fractions, instance)
    failure = quality_failure(report)
    report["status"] = "failed" if failure else "ok"
    report["failure"] = failure
    report_dir = args.output / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    if instance.part is None:  # the only instance owns the folder: no other run's parts stay beside it
        for stale in report_dir.glob("data_report-*.json"):
            stale.unlink()
    (report_dir / report_name(instance.part)).write_text(json.dumps(report, indent=2) + "\n")
    for tub in reports:
        print(tub.summary_line(), flush=True)
    for warning in report["warnings"]:
        print(f"preprocess: warning: {warning}", file=sys.stderr, flush=True)
    if failure:
        raise DataQualityError(failure)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("preprocess", lambda: _run_and_summarise(args), debug=args.debug)


def _run_and_summarise(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = run(args)
    total, splits = report["total"], report["splits"]
    seconds = time.perf_counter() - started
    print(
        f"total: read {total['read']}, accepted {total['accepted']}, rejected {total['rejected']}, "
        f"deleted {total['deleted']}; train {splits['train']['frames']}, validation "
        f"{splits['validation']['frames']}, test {splits['test']['frames']} frames (split by "
        f"{report['split_by']}); {seconds:.1f} s, {total['accepted'] / max(seconds, 1e-9):.0f} frames/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
