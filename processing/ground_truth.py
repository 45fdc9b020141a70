"""SageMaker Ground Truth image-classification output manifests -> validated candidate frames.

A manifest is JSON lines; each line has ``source-ref`` and a label attribute ``K`` (the labeling job's
name for it) with ``K-metadata`` holding ``class-name``::

    {"source-ref": "s3://bucket/cats/1.jpg", "animal": 0,
     "animal-metadata": {"class-name": "cat", "type": "groundtruth/image-classification", ...}}

The record index is the 0-based line number (an empty or garbage line is a rejected record).

Where the image is. A relative ``source-ref`` is relative to the manifest's folder; an absolute local
path is used as is. For ``s3://BUCKET/KEY`` the S3 prefix the Processing input was copied from is not
known, so the image is the first file that exists among the suffixes of ``BUCKET/KEY`` (longest first:
``BUCKET/a/b/x.jpg``, ``a/b/x.jpg``, ``b/x.jpg``, ``x.jpg``) under the input folder, then under the
manifest's folder. A ref that resolves to nothing is rejected as ``image missing``.

Classes. ``classes[id]`` is the ``class-name`` of class id ``id``; ids never seen are named
``class_<id>``. A record whose class-name differs from the one first seen for its id is rejected
(``label conflict``).

Bounds (``processing/limits.py``). The manifest is streamed; a line over ``line_bytes`` is a rejected
record, and so is a class id of ``classes`` or more (``out of range``: the class list runs 0..max id,
so one id of 10^20 would otherwise ask for 10^20 names), a class-name over 256 characters, and a
``source-ref`` longer than a path or an S3 URI can be or with more than 32 path components (each
suffix of an S3 key costs a file-system lookup).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from edge.tubs import iter_lines
from processing.limits import DEFAULT_LIMITS, FLAGS, DataLimits, RecordBudget
from processing.records import RecordValidator, Rejection, parse_json_object
from processing.tubs import Candidate, Source, SourceError, SourceReport, overlong_line

METADATA_SUFFIX = "-metadata"
CLASSIFICATION_TYPE = "groundtruth/image-classification"  # K-metadata's type for an image-classification job
# "no" on the labels automated data labeling wrote itself
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-automated-labeling.html)
HUMAN_ANNOTATED = "human-annotated"
# What an adjustment job adds to its labels' metadata: "adjusted" or "unadjusted"
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-manifest.html).
ADJUSTMENT_STATUS = "adjustment-status"
MAX_CLASS_NAME_CHARS = 256  # a label is a word or a short phrase; dataset.json lists every one
# An S3 object key is at most 1,024 bytes (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html),
# a bucket name at most 63 characters (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
MAX_S3_REF_BYTES = len("s3://") + 63 + 1 + 1024
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_REF_PARTS = 32  # path components of a source-ref; real image keys have about 10


def label_attribute(
    record: dict[str, Any], wanted: str | None = None, kind: str = CLASSIFICATION_TYPE
) -> str:
    """The label attribute K of a record (K and K-metadata both present), or ``Rejection``.

    A line that a verification or adjustment job has seen carries that job's attribute too (it must
    have another name, https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-manifest.html);
    of several attributes, the one whose metadata ``type`` is ``kind`` (image classification, or a
    bounding-box job's ``groundtruth/object-detection``) is the label. When several are of that type (a
    model's pre-label and the review of it, ``robocar label review`` or an adjustment job: docs/labelling.md),
    the reviewed one, whose metadata has ``adjustment-status``, is the label.
    """
    if wanted is not None:
        if wanted not in record or wanted + METADATA_SUFFIX not in record:
            raise Rejection("schema", f"no label attribute {wanted!r} with {wanted + METADATA_SUFFIX!r}")
        return wanted
    names = sorted(k for k in record if k != "source-ref" and k + METADATA_SUFFIX in record)
    if len(names) > 1:
        of_kind = [k for k in names if _metadata_type(record[k + METADATA_SUFFIX]) == kind]
        reviewed = [k for k in of_kind if ADJUSTMENT_STATUS in record[k + METADATA_SUFFIX]]
        names = reviewed if len(reviewed) == 1 else of_kind if len(of_kind) == 1 else names
    if len(names) != 1:
        found = "none" if not names else ", ".join(names)
        raise Rejection("schema", f"expected one label attribute K with K-metadata, found {found}")
    return names[0]


def _metadata_type(metadata: Any) -> Any:
    return metadata.get("type") if isinstance(metadata, dict) else None


def check_source_ref(ref: str) -> None:
    """``Rejection`` for a ``source-ref`` no S3 object or file can have (too long, too deep)."""
    size = len(ref.encode("utf-8", "surrogatepass"))
    limit = MAX_S3_REF_BYTES if ref.startswith("s3://") else MAX_PATH_BYTES
    if size > limit:
        raise Rejection(
            "schema", f"source-ref of {size:,} bytes is longer than any S3 URI or path ({limit:,})"
        )
    if ref.count("/") > MAX_REF_PARTS + 2:  # + the two of "s3://"
        raise Rejection("schema", f"source-ref has more than {MAX_REF_PARTS} path components")


def resolve_image(ref: str, manifest_dir: Path, input_root: Path) -> Path | None:
    """The local file a ``source-ref`` names (rule in the module docstring), or None."""
    if ref.startswith("s3://"):
        parts = [p for p in PurePosixPath(ref[len("s3://") :]).parts if p not in ("", "/")]
        if not parts or ".." in parts:
            return None
        for base in (input_root, manifest_dir):
            for start in range(len(parts)):
                candidate = base.joinpath(*parts[start:])
                if candidate.is_file():
                    return candidate
        return None
    if "://" in ref or ".." in PurePosixPath(ref).parts:
        return None
    path = Path(ref) if Path(ref).is_absolute() else manifest_dir / ref
    return path if path.is_file() else None


# A record's check: (source-ref, the Candidate fields its label gives) or ``Rejection``.
RecordCheck = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


def read_manifest(
    source: Source,
    validator: RecordValidator,
    input_root: Path,
    check_record: RecordCheck,
    limits: DataLimits = DEFAULT_LIMITS,
    budget: RecordBudget | None = None,
) -> tuple[SourceReport, list[Candidate]]:
    """Read one manifest of any labeling task: each line parsed, validated, checked by
    ``check_record`` and its image found (the module docstring's rules), or rejected by index."""
    report = SourceReport(source.name, "ground-truth")
    budget = budget or RecordBudget(limits)
    try:
        handle = open(source.path, "rb")  # noqa: SIM115 - closed by the with below; only opening is "unreadable"
    except OSError as exc:
        raise SourceError(f"{source.path}: cannot read ({exc.strerror})") from None
    candidates: list[Candidate] = []
    with handle:
        for index, line in enumerate(iter_lines(handle, limits.line_bytes)):
            budget.admit(source.name, report.read + 1)
            report.read += 1
            try:
                if type(line) is int:
                    raise overlong_line(line, limits)
                record = parse_json_object(line)
                validator.check(record)
                ref, fields = check_record(record)
                image = resolve_image(ref, source.path.parent, input_root)
                if image is None:
                    raise Rejection("image missing", f"{ref} not found under the input folder")
            except Rejection as rejection:
                report.reject(index, rejection.reason)
                continue
            candidates.append(
                Candidate(index=index, image_path=str(image), session=source.name, timestamp_ms=-1, **fields)
            )
    return report, candidates


def read_ground_truth(
    source: Source,
    validator: RecordValidator,
    input_root: Path,
    classes: dict[int, str],
    attribute: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
    budget: RecordBudget | None = None,
) -> tuple[SourceReport, list[Candidate]]:
    """Read one image-classification manifest; ``classes`` (id -> class-name) is shared across
    manifests and filled in."""

    def check(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        label, ref, machine = _check_record(record, attribute, limits, classes)
        return ref, {"label": label, "machine_labelled": machine}

    return read_manifest(source, validator, input_root, check, limits, budget)


def _check_record(
    record: dict[str, Any],
    attribute: str | None,
    limits: DataLimits,
    classes: dict[int, str],
) -> tuple[int, str, bool]:
    """(class id, source-ref, machine-labelled) of a valid record; registers its class-name;
    ``Rejection`` otherwise."""
    name = label_attribute(record, attribute)
    label, metadata = record[name], record[name + METADATA_SUFFIX]
    check_class_id(label, name, limits)
    where = f"{name}{METADATA_SUFFIX}"
    class_name = checked_class_name(metadata.get("class-name") if isinstance(metadata, dict) else None, where)
    ref = record["source-ref"]
    check_source_ref(ref)
    register_classes(classes, {label: class_name})
    return label, ref, metadata.get(HUMAN_ANNOTATED) == "no"


def check_class_id(value: Any, where: str, limits: DataLimits) -> None:
    """``Rejection`` unless ``value`` is a class id: an integer in 0..``limits.classes`` - 1."""
    if type(value) is not int or value < 0:
        raise Rejection("schema", f"{where}: class id must be an integer >= 0, got {value!r}")
    if value >= limits.classes:
        raise Rejection(
            "out of range",
            f"{where}: class id {value} is not in 0..{limits.classes - 1} ({FLAGS['classes']})",
        )


def checked_class_name(value: Any, where: str) -> str:
    """``value`` if it can name a class (a non-empty string of at most 256 characters), else ``Rejection``."""
    if not isinstance(value, str) or not value:
        raise Rejection("schema", f"{where}: no class-name")
    if len(value) > MAX_CLASS_NAME_CHARS:
        raise Rejection("schema", f"{where}: class-name longer than {MAX_CLASS_NAME_CHARS} characters")
    return value


def register_classes(classes: dict[int, str], names: dict[int, str]) -> None:
    """Add ``names`` (id -> name) to ``classes``; ``label conflict`` (and nothing added) if an id is
    already known by another name."""
    for label, class_name in names.items():
        known = classes.get(label, class_name)
        if known != class_name:
            raise Rejection("label conflict", f"class id {label} is {class_name!r} here, {known!r} before")
    classes.update(names)


def class_list(classes: dict[int, str]) -> list[str]:
    """``classes[id]`` for ids 0..max; ids never seen get ``class_<id>``."""
    if not classes:
        return []
    return [classes.get(i, f"class_{i}") for i in range(max(classes) + 1)]
