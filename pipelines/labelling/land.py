"""``robocar label land REVIEWED [MACHINE_LABELLED ...]``: labelled records into the recipe's raw data.

The records of the manifests given (a review's output, and the machine-labelled records ``predict``
accepted) become one Ground Truth manifest, ``<prefix>/<raw folder>/labelled/<digest>/output.manifest``,
with each photo not yet under the raw folder copied beside it (``.../<digest>/images/<sha256><suffix>``) and
its ``source-ref`` pointing there; photos already under the raw folder stay where they are. The photos go
first and the manifest last, so the recipe's new-data rule (a ``*.manifest`` under the raw folder:
``pipelines.events``) sees one completed upload and starts one execution on AWS, as ``robocar trigger
watch`` does locally. ``<digest>`` is the SHA-256 of the landed records with each photo named by its own
SHA-256: the same labels on the same photos land on the same keys, and an object already there is not
written again, so landing twice starts nothing new (an object rewritten would be a new S3 event).

The recipe's Preprocess reads the manifest as any Ground Truth output: of a pre-label and its review in
one record, the review (``adjustment-status`` in its metadata) is the label
(``processing.ground_truth.label_attribute``), and the data report counts human and machine labels.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines import settings as settings_mod
from pipelines.labelling import manifest

LANDING_FOLDER = "labelled"
MANIFEST_NAME = "output.manifest"  # the name a labelling job gives its output manifest


def register(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "land",
        help="put reviewed (and machine-labelled) records and their photos under the recipe's raw data",
        description="Copy the records of the manifests given, and the photos they name that are not yet "
        "under <prefix>/<raw folder>/, into <prefix>/<raw folder>/labelled/<digest>/ as one Ground Truth "
        "manifest, so the recipe's new-data rule (robocar trigger watch locally) starts one execution. "
        "Landing the same records again writes nothing.",
    )
    p.add_argument(
        "manifests", type=Path, nargs="+", help="the reviewed manifest, then machine-labelled ones"
    )
    settings_mod.add_arguments(p, backend=True)
    p.set_defaults(handler=run)


@dataclass
class Landing:
    manifest_uri: str
    records: int
    human: int
    machine: int
    photos_copied: int
    objects_written: int

    def line(self) -> str:
        state = "landed" if self.objects_written else "already landed (nothing written)"
        return (
            f"{state}: {self.records} records ({self.human} reviewed by a person, {self.machine} machine "
            f"labels), {self.photos_copied} photos -> {self.manifest_uri}"
        )


def run(args: argparse.Namespace) -> int:
    from edge.aws import clients as make_clients
    from pipelines.datasets import raw_uri
    from pipelines.endpoint import aws_endpoint_clients

    settings, where = settings_mod.resolve_with_backend(args)
    if settings.recipe not in manifest.RECIPE_TASKS:
        raise ValueError("--recipe classifier or detection: only they read labelled photos")
    if where.is_local:  # the workspace's bucket is a folder made on first use; on AWS the stack's exists
        s3 = make_clients(local_root=where.local_root, region=settings.region).s3
        s3.create_bucket(Bucket=settings.bucket)
    else:
        s3 = aws_endpoint_clients(settings.region, where.endpoint_url).s3
    records = [record for path in args.manifests for record in manifest.read_records(path)]
    landing = land(s3, records, raw_uri(settings.bucket, settings.prefix, settings.recipe),
                   manifest.RECIPE_TASKS[settings.recipe])  # fmt: skip
    print(landing.line())
    return 0


def check_labelled(records: list[dict[str, Any]], task: str) -> tuple[int, int]:
    """(human, machine) labels; ValueError unless every record has a label of the task's type."""
    from processing.ground_truth import HUMAN_ANNOTATED, METADATA_SUFFIX, label_attribute
    from processing.records import Rejection

    if not records:
        raise ValueError("no records to land")
    human = 0
    for number, record in enumerate(records, start=1):
        try:
            name = label_attribute(record, None, manifest.TASK_TYPES[task])
        except Rejection as rejection:
            raise ValueError(f"record {number} ({record.get('source-ref')}): {rejection}") from None
        metadata = record[name + METADATA_SUFFIX]
        human += isinstance(metadata, dict) and metadata.get(HUMAN_ANNOTATED) != "no"
    return human, len(records) - human


def read_photo(s3: Any, ref: str) -> bytes:
    """A record's photo: an S3 object (the workspace's S3 locally) or a local file."""
    from edge.s3_uri import split_s3_uri

    if ref.startswith("s3://"):
        bucket, key = split_s3_uri(ref)
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    path = Path(ref)
    if not path.is_absolute():
        raise ValueError(f"source-ref {ref!r}: a local photo must be named by its absolute path")
    return path.read_bytes()


def land(s3: Any, records: list[dict[str, Any]], raw_prefix_uri: str, task: str) -> Landing:
    """Land ``records`` under ``raw_prefix_uri`` (``s3://bucket/<prefix>/<raw folder>/``), as above."""
    from edge.s3_uri import split_s3_uri
    from pipelines.datasets import object_exists

    human, machine = check_labelled(records, task)
    bucket, raw_key = split_s3_uri(raw_prefix_uri)
    names: dict[str, str] = {}  # source-ref -> the photo's file name by content (read twice, held never)
    for record in records:
        ref = record["source-ref"]
        if ref not in names and not ref.startswith(raw_prefix_uri):
            names[ref] = hashlib.sha256(read_photo(s3, ref)).hexdigest() + PurePosixPath(ref).suffix.lower()
    named = [{**r, "source-ref": names[r["source-ref"]]} if r["source-ref"] in names else r for r in records]
    digest = hashlib.sha256("".join(manifest.dumps(r) + "\n" for r in named).encode()).hexdigest()
    folder = f"{raw_key}{LANDING_FOLDER}/{digest}/"
    written = 0
    for ref, name in names.items():
        key = f"{folder}images/{name}"
        if not object_exists(s3, f"s3://{bucket}/{key}"):
            data = read_photo(s3, ref)
            if not name.startswith(hashlib.sha256(data).hexdigest()):
                raise ValueError(f"{ref} changed while it was being landed: land again")
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            written += 1
    landed = [
        {**r, "source-ref": f"s3://{bucket}/{folder}images/{names[r['source-ref']]}"}
        if r["source-ref"] in names else r
        for r in records
    ]  # fmt: skip
    body = "".join(manifest.dumps(r) + "\n" for r in landed).encode()
    key = folder + MANIFEST_NAME
    if not object_exists(s3, f"s3://{bucket}/{key}"):  # last: the object that completes the upload
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        written += 1
    return Landing(f"s3://{bucket}/{key}", len(records), human, machine, len(names), written)
