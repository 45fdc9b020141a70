"""The state of one review: the pre-labelled records, the reviewer's decisions, and the files they make.

``robocar label review`` (review.py) serves this over HTTP; this module knows nothing of HTTP.

Files, for an output manifest ``OUT`` (docs/labelling-review.md):

- ``OUT + ".journal"``: the truth. One JSON line per decision, appended and fsynced before the page is told
  "saved"; a later line for the same record replaces the earlier one. A last line cut short (the process
  killed mid-append) was never answered, so it is dropped when the review starts again.
- ``OUT``: Ground Truth's adjustment output, rewritten atomically (``edge/atomic_files.py``) from the
  journal after every decision, so a reader sees the previous whole file or the new one. Each decided
  record is the input record unchanged plus ``B`` and ``B-metadata`` (``adjustment-status``,
  ``human-annotated: "yes"``: https://docs.aws.amazon.com/sagemaker/latest/dg/sms-data-verify-manifest.html).
- ``OUT + ".rejected"``: the rejected input records with ``rejected-reason``, so ``OUT`` stays a pure
  Ground Truth manifest.

Starting again with the same ``OUT`` replays the journal and rewrites both outputs, so a run killed between
the journal's append and the rename loses nothing either.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.labelling.manifest import (
    CATEGORIES,
    CLASSIFICATION,
    DETECTION,
    REVIEWED_SUFFIX,
    TASK_TYPES,
    check_attribute,
    classes_of_categories,
    creation_date,
    find_attribute,
    write_records,
)
from pipelines.labelling.manifest import read_records as read_manifest_records
from processing.ground_truth import (
    ADJUSTMENT_STATUS,
    CLASSIFICATION_TYPE,
    HUMAN_ANNOTATED,
    METADATA_SUFFIX,
    class_list,
)
from processing.ground_truth_boxes import DETECTION_TYPE

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: two reviews of one output are not refused
    fcntl = None  # type: ignore[assignment]

KINDS = {task_type: kind for kind, task_type in TASK_TYPES.items()}
ACCEPT, CORRECT, REJECT = "accept", "correct", "reject"
ADJUSTED, UNADJUSTED = "adjusted", "unadjusted"
OUTPUT_SUFFIX = ".reviewed.manifest"
JOURNAL_SUFFIX, REJECTED_SUFFIX = ".journal", ".rejected"
JOB_NAME_MAX_CHARS = 63  # LabelingJobName (CreateLabelingJob, botocore's model)
MAX_BOXES = 1000  # per image; a labeller's photo has tens
MAX_REASON_CHARS = 1000
MAX_MANIFEST_RECORDS = 1_000_000  # each one is rewritten into OUT per decision: ~1 KB a record
EDGE_TOLERANCE_PX = 1.0  # as Preprocess's (processing/ground_truth_boxes.py): a box may overhang by a pixel


class ReviewError(ValueError):
    """A manifest, journal or output that cannot be reviewed; the message says why."""


class DecisionError(ValueError):
    """A decision the review refuses (the page gets 400 and nothing is saved)."""


@dataclass(frozen=True)
class Decision:
    index: int
    action: str
    label: Any  # the class name (classification) or the boxes (detection) of a correction; else None
    reason: str | None
    created: str  # Ground Truth's creation-date: YYYY-MM-DDTHH:MM:SS.ffffff, UTC

    def as_posted(self) -> dict[str, Any]:
        posted: dict[str, Any] = {"index": self.index, "action": self.action}
        if self.action == CORRECT:
            posted["boxes" if isinstance(self.label, list) else "class"] = self.label
        if self.action == REJECT and self.reason is not None:
            posted["reason"] = self.reason
        return posted


def default_output(manifest: Path) -> Path:
    return manifest.with_name(manifest.name.removesuffix(".manifest") + OUTPUT_SUFFIX)


# --------------------------------------------------------------------------- reading the input
def read_records(manifest: Path) -> list[dict[str, Any]]:
    """The manifest's records (``pipelines.labelling.manifest.read_records``); none is an error too."""
    try:
        records = read_manifest_records(manifest)
    except ValueError as exc:
        raise ReviewError(str(exc)) from None
    if not records:
        raise ReviewError(f"{manifest}: no records to review")
    if len(records) > MAX_MANIFEST_RECORDS:
        raise ReviewError(f"{manifest}: more than {MAX_MANIFEST_RECORDS} records; split it")
    return records


def prelabel_attribute(record: dict[str, Any]) -> tuple[str, str]:
    """``(A, kind)``: the record's pre-label attribute (``find_attribute``: the one not yet adjusted), of an
    image-classification or bounding-box job."""
    try:
        name = find_attribute(record)
    except ValueError as exc:
        raise ReviewError(str(exc)) from None
    task_type = record[name + METADATA_SUFFIX].get("type")
    if task_type not in KINDS:
        raise ReviewError(f"{name}: of type {task_type!r}, not {' or '.join(KINDS)}")
    return name, KINDS[task_type]


def checked_class_names(
    records: list[dict[str, Any]], attribute: str, kind: str, manifest: Path
) -> dict[int, str]:
    """Each record's pre-label checked as Preprocess checks a label (class ids, class names, image size,
    boxes inside the photo), and the class names by id they give; a record Preprocess would reject
    cannot be reviewed into a training label, so the manifest is refused with its reason."""
    from processing.ground_truth import check_class_id, checked_class_name, register_classes
    from processing.ground_truth_boxes import check_boxes_record
    from processing.limits import DEFAULT_LIMITS
    from processing.records import Rejection

    names: dict[int, str] = {}
    for number, record in enumerate(records):
        try:
            if kind == DETECTION:
                check_boxes_record(record, attribute, DEFAULT_LIMITS, names)
                continue
            meta = record[attribute + METADATA_SUFFIX]
            check_class_id(record[attribute], attribute, DEFAULT_LIMITS)
            class_name = checked_class_name(meta.get("class-name"), attribute + METADATA_SUFFIX)
            register_classes(names, {record[attribute]: class_name})
        except Rejection as exc:
            raise ReviewError(f"{manifest}: record {number}: {exc.reason}") from None
    return names


def class_names(named: dict[int, str], categories: Path | None) -> list[str]:
    """The review's classes by id: the label category file's (predict writes one beside the manifest),
    which must agree with the names the records give; without one, the records' (``class_<id>`` for an
    id none names)."""
    if categories is None:
        return class_list(named)
    names = read_categories(categories)
    for class_id, name in sorted(named.items()):
        listed = names[class_id] if class_id < len(names) else None
        if listed != name:
            raise ReviewError(f"{categories}: class {class_id} is {name!r} in the manifest, {listed!r} here")
    return names


def read_categories(path: Path) -> list[str]:
    """Ground Truth's label category configuration: class id = position (``classes_of_categories``)."""
    try:
        names = classes_of_categories(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as exc:  # JSONDecodeError is one
        raise ReviewError(f"{path}: {exc}") from None
    if len(set(names)) != len(names):
        raise ReviewError(f"{path}: the labels must be distinct")
    return names


def check_output_attribute(name: str, attribute: str) -> str:
    try:
        check_attribute(name)
    except ValueError as exc:
        raise ReviewError(f"output {exc}") from None
    if name == attribute:
        raise ReviewError(f"output attribute {name!r}: must differ from the pre-label's {attribute!r}")
    return name


# --------------------------------------------------------------------------- the session
class ReviewSession:
    """The records under review and the decisions made; ``decide`` saves one before it returns."""

    def __init__(
        self,
        manifest: Path,
        output: Path | None = None,
        *,
        output_attribute: str | None = None,
        categories: Path | None = None,
    ) -> None:
        self.manifest = Path(manifest)
        self.output = Path(output) if output else default_output(self.manifest)
        if self.output.resolve() == self.manifest.resolve():
            raise ReviewError(f"--output {self.output}: the reviewed manifest cannot replace its input")
        self.records = read_records(self.manifest)
        self.attribute, self.kind = self._one_attribute()
        self.output_attribute = check_output_attribute(
            output_attribute or self.attribute + REVIEWED_SUFFIX, self.attribute
        )
        self.job_name = "labeling-job/" + self.output_attribute[:JOB_NAME_MAX_CHARS].rstrip("-")
        beside = self.manifest.with_name(CATEGORIES)
        named = checked_class_names(self.records, self.attribute, self.kind, self.manifest)
        self.classes = class_names(named, categories or (beside if beside.is_file() else None))
        if not self.classes:
            raise ReviewError(f"{self.manifest}: no class names; give --categories {CATEGORIES}")
        self.journal = self.output.with_name(self.output.name + JOURNAL_SUFFIX)
        self.rejected = self.output.with_name(self.output.name + REJECTED_SUFFIX)
        self.decisions: dict[int, Decision] = {}
        self._lock = threading.Lock()
        self._journal_handle = self._open_journal()
        try:
            self.write_outputs()  # what a run killed between the journal and the rename left stale
        except BaseException:
            self.close()
            raise

    def _one_attribute(self) -> tuple[str, str]:
        found = set()
        for number, record in enumerate(self.records):
            try:
                found.add(prelabel_attribute(record))
            except ReviewError as exc:
                raise ReviewError(f"{self.manifest}: record {number}: {exc}") from None
        if len(found) != 1:
            raise ReviewError(f"{self.manifest}: records of different attributes or kinds: {sorted(found)}")
        return found.pop()

    def close(self) -> None:
        self._journal_handle.close()

    # ------------------------------------------------------------------ the journal
    def _open_journal(self) -> Any:
        """Replay the journal (dropping a torn last line) and hold it open, locked, for appending."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.journal, "a+b")  # noqa: SIM115 (held for the session, closed by close())
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ReviewError(f"another review is writing {self.output} (journal locked)") from None
        try:
            handle.seek(0)
            data = handle.read()
            whole = data[: data.rfind(b"\n") + 1]
            for number, line in enumerate(whole.splitlines(), 1):
                self._replay(line, number)
            if len(whole) < len(data):  # killed mid-append: that decision was never answered "saved"
                handle.truncate(len(whole))
                os.fsync(handle.fileno())
        except BaseException:
            handle.close()  # and with it the lock
            raise
        return handle

    def _replay(self, line: bytes, number: int) -> None:
        try:
            entry = json.loads(line)
            decision = self.check(entry["decision"], created=entry["creation-date"])
        except (json.JSONDecodeError, KeyError, TypeError, DecisionError) as exc:
            raise ReviewError(f"{self.journal}:{number}: not a decision of this review ({exc})") from None
        if entry.get("source-ref") != self.records[decision.index]["source-ref"]:
            raise ReviewError(
                f"{self.journal}:{number}: record {decision.index} is {entry.get('source-ref')!r} there but "
                f"{self.records[decision.index]['source-ref']!r} in {self.manifest}: another manifest's"
            )
        self.decisions[decision.index] = decision

    def decide(self, posted: Any) -> Decision:
        """Check a posted decision, append it to the journal (fsynced), rewrite the outputs; DecisionError
        (nothing saved) for bad input."""
        decision = self.check(posted, created=creation_date(datetime.now(UTC)))
        entry = {
            "source-ref": self.records[decision.index]["source-ref"],
            "decision": decision.as_posted(),
            "creation-date": decision.created,
        }
        with self._lock:
            self._journal_handle.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
            self._journal_handle.flush()
            os.fsync(self._journal_handle.fileno())
            self.decisions[decision.index] = decision
            self.write_outputs()
        return decision

    def write_outputs(self) -> None:
        reviewed, rejected = [], []
        for index in sorted(self.decisions):
            decision, record = self.decisions[index], self.records[index]
            if decision.action == REJECT:
                rejected.append({**record, "rejected-reason": decision.reason or "rejected by the reviewer"})
            else:
                reviewed.append(self.reviewed_record(record, decision))
        write_records(self.output, reviewed)  # atomic; not fsynced: the journal is, and repairs it
        write_records(self.rejected, rejected)

    # ------------------------------------------------------------------ state
    def next_undecided(self) -> int | None:
        return next((i for i in range(len(self.records)) if i not in self.decisions), None)

    def counts(self) -> dict[str, int]:
        actions = [d.action for d in self.decisions.values()]
        return {action: actions.count(action) for action in (ACCEPT, CORRECT, REJECT)}

    # ------------------------------------------------------------------ checking a decision
    def check(self, posted: Any, *, created: str) -> Decision:
        if not isinstance(posted, dict):
            raise DecisionError("the decision must be a JSON object")
        index, action = posted.get("index"), posted.get("action")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.records):
            raise DecisionError(f"index: an integer from 0 to {len(self.records) - 1}, got {index!r}")
        allowed = {ACCEPT: set(), CORRECT: {"class"} if self.kind == CLASSIFICATION else {"boxes"}}
        allowed[REJECT] = {"reason"}
        if action not in allowed:
            raise DecisionError(f"action: one of accept, correct, reject, got {action!r}")
        unknown = set(posted) - {"index", "action"} - allowed[action]
        if unknown:
            raise DecisionError(f"{action} takes no {', '.join(sorted(unknown))}")
        label, reason = None, None
        if action == CORRECT and self.kind == CLASSIFICATION:
            label = self._class(posted.get("class"), "class")
        elif action == CORRECT:
            label = self._boxes(posted.get("boxes"), index)
        elif action == REJECT:
            reason = posted.get("reason")
            if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
                raise DecisionError(f"reason: a string of at most {MAX_REASON_CHARS} characters")
            reason = (reason.strip() or None) if reason else None
        return Decision(index, action, label, reason, created)

    def _class(self, name: Any, where: str) -> str:
        if name not in self.classes:
            raise DecisionError(f"{where}: one of {self.classes}, got {name!r}")
        return name

    def _boxes(self, boxes: Any, index: int) -> list[dict[str, Any]]:
        if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
            raise DecisionError(f"boxes: a list of at most {MAX_BOXES} boxes")
        width, height = self.image_size(index)
        return [self._box(box, f"boxes[{n}]", width, height) for n, box in enumerate(boxes)]

    def _box(self, box: Any, where: str, image_width: int, image_height: int) -> dict[str, Any]:
        """A box in whole pixels (Ground Truth's are integers), clipped to the image when it overhangs by
        at most EDGE_TOLERANCE_PX; ``confidence`` (a pre-label's, posted back) is dropped."""
        fields = ("left", "top", "width", "height")
        if not isinstance(box, dict) or set(box) - {"class", "confidence", *fields}:
            raise DecisionError(f"{where}: an object of class, left, top, width, height")
        values = [box.get(f) for f in fields]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or not all(
            math.isfinite(v) for v in values
        ):
            raise DecisionError(f"{where}: left, top, width and height must be finite numbers")
        left, top, width, height = values
        tolerance = EDGE_TOLERANCE_PX
        if left < -tolerance or top < -tolerance:
            raise DecisionError(f"{where}: outside the image")
        if left + width > image_width + tolerance or top + height > image_height + tolerance:
            raise DecisionError(f"{where}: outside the {image_width}x{image_height} image")
        x0, y0 = max(0, round(left)), max(0, round(top))
        x1, y1 = min(image_width, round(left + width)), min(image_height, round(top + height))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise DecisionError(f"{where}: empty (width and height must be at least 1 pixel)")
        name = self._class(box.get("class"), f"{where}.class")
        return {"class": name, "left": x0, "top": y0, "width": x1 - x0, "height": y1 - y0}

    # ------------------------------------------------------------------ the record's labels
    def image_size(self, index: int) -> tuple[int, int]:
        """A detection record's ``image_size`` (what its boxes are drawn in)."""
        size = self.records[index][self.attribute]["image_size"][0]
        return int(size["width"]), int(size["height"])

    def prelabel(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        label, meta = record[self.attribute], record[self.attribute + METADATA_SUFFIX]
        if self.kind == CLASSIFICATION:
            return {"class": self.class_name(label), "confidence": meta.get("confidence")}
        confidences = [o.get("confidence") for o in meta.get("objects") or []]
        boxes = []
        for n, box in enumerate(label.get("annotations") or []):
            confidence = confidences[n] if n < len(confidences) else None
            fields = {k: box[k] for k in ("left", "top", "width", "height")}
            boxes.append({"class": self.class_name(box["class_id"]), **fields, "confidence": confidence})
        return {"boxes": boxes}

    def class_name(self, class_id: int) -> str:
        return self.classes[class_id]  # every id the records use is a class (checked_class_names)

    def prelabel_as_label(self, index: int) -> Any:
        """The pre-label in a correction's form: a class name, or boxes without confidences."""
        prelabel = self.prelabel(index)
        if self.kind == CLASSIFICATION:
            return prelabel["class"]
        return [{k: v for k, v in box.items() if k != "confidence"} for box in prelabel["boxes"]]

    def reviewed_record(self, record: dict[str, Any], decision: Decision) -> dict[str, Any]:
        """The input record unchanged plus B and B-metadata, the adjustment job's output for the kind."""
        prelabel = self.prelabel_as_label(decision.index)
        label = decision.label if decision.action == CORRECT else prelabel
        adjusted = label != prelabel  # a "correction" to the very pre-label is GT's "unadjusted"
        meta = {
            "type": CLASSIFICATION_TYPE if self.kind == CLASSIFICATION else DETECTION_TYPE,
            "job-name": self.job_name,
            HUMAN_ANNOTATED: "yes",
            "creation-date": decision.created,
            ADJUSTMENT_STATUS: ADJUSTED if adjusted else UNADJUSTED,
        }
        if self.kind == CLASSIFICATION:
            value: Any = self.classes.index(label)
            meta.update({"class-name": label, "confidence": 1.0})
        else:
            value = {
                "image_size": record[self.attribute]["image_size"],
                "annotations": [
                    {"class_id": self.classes.index(box["class"]), **{k: box[k] for k in box if k != "class"}}
                    for box in label
                ],
            }
            meta["objects"] = [{"confidence": 1.0} for _ in label]
            meta["class-map"] = {str(i): name for i, name in enumerate(self.classes)}
        return {**record, self.output_attribute: value, self.output_attribute + METADATA_SUFFIX: meta}
