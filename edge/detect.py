"""The car detects: anchors + class probabilities + box offsets -> boxes, the one decoder of the project.

An SSD answers, per anchor, a probability per class (class 0 is the background) and four offsets of a box
from the anchor. ``decode`` turns those into detections exactly as MXNet's
``contrib.MultiBoxDetection`` (MXNet 1.9.1, src/operator/contrib/multibox_detection.cc) does: the best
foreground class of each anchor, dropped below ``threshold``; the box decoded with the variances and
clipped to [0, 1]; a stable sort by score; the ``nms_topk`` best kept; greedy non-maximum suppression
within a class (across classes with ``force_suppress``). Evaluation, the car and the endpoint all call it,
and tests/model/test_detect_decode_multibox.py holds it equal to the operator within 1e-5.

The car's side (``Detector``): a detector package (``processing/compile_detection.py``; manifest
``"task": "detection"``) holds the heads as ONNX (float32, int8: ``data`` [1, 3, H, W] in, ``cls_prob``
and ``loc_preds`` out), the anchors as ``anchors.npy`` and ``decode``'s settings. It installs through the
agent like a classifier (verified SHA-256s, smoke test, the fastest passing artifact, rollback);
``robocar-edge run`` then prints each photo's boxes, writes them as JSON lines and publishes them on
MQTT (``topic_for``). ``decode`` computes with numpy only; the module imports edge.runtimes (numpy,
Pillow), and the runner loads onnxruntime when it opens a package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import runtimes

# [class_id, score, xmin, ymin, xmax, ymax]: the columns of a decoded detection (MultiBoxDetection's).
DETECTION_COLUMNS = ("class_id", "score", "xmin", "ymin", "xmax", "ymax")
DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)  # MultiBoxDetection's default, what SSD's targets are scaled by


class DecodeError(ValueError):
    """Inputs the decoder cannot pair up: shapes that disagree, parameters out of range."""


def decode_boxes(
    loc_preds: np.ndarray, anchors: np.ndarray, variances: Sequence[float] = DEFAULT_VARIANCES
) -> np.ndarray:
    """Offsets (A, 4) from anchors (A, 4) corner boxes -> boxes (A, 4) [xmin, ymin, xmax, ymax] clipped
    to [0, 1], in float32 in the operator's order of operations (so ties in NMS fall the same way); x and
    y side by side, as the operator computes each the same way."""
    scale = np.asarray(variances, dtype=np.float32)
    two = np.float32(2)
    size = anchors[:, 2:] - anchors[:, :2]
    centre = loc_preds[:, :2] * scale[:2] * size + (anchors[:, :2] + anchors[:, 2:]) / two
    half = np.exp(loc_preds[:, 2:] * scale[2:]) * size / two
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return np.clip(boxes, np.float32(0), np.float32(1), out=boxes)


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of corner boxes (N, 4) -> (N, N), in float32 and the operator's order of
    operations (so a pair exactly at the NMS threshold falls the same way); 0 where the union is empty
    (two boxes of no area). x and y side by side: each numpy call costs ~1 us whatever its size here."""
    zero = np.float32(0)
    overlap = np.minimum(boxes[:, None, 2:], boxes[:, 2:]) - np.maximum(boxes[:, None, :2], boxes[:, :2])
    np.maximum(zero, overlap, out=overlap)  # (N, N, 2): max(0, min(right) - max(left)), the same for y
    inter = overlap[..., 0] * overlap[..., 1]
    sides = boxes[:, 2:] - boxes[:, :2]
    area = sides[:, 0] * sides[:, 1]
    union = area[:, None] + area - inter
    iou = np.zeros_like(inter)  # divided only where the union is not empty: no division by zero to warn about
    return np.divide(inter, union, out=iou, where=~(union <= zero))


# Which row may suppress which: only a better box (an earlier row) a worse one. Cut from one table for the
# usual few dozen candidates (np.triu costs ~5 us a call).
_EARLIER_ROWS = ~np.tri(128, dtype=bool)


def greedy_nms(boxes: np.ndarray, classes: np.ndarray, limit: float, force_suppress: bool) -> np.ndarray:
    """Which of ``boxes`` (best score first) survive greedy NMS: a box is suppressed by a better
    surviving one of its class (any class with ``force_suppress``) when their IoU is >= ``limit``.

    One IoU matrix over the survivors of the threshold and top-k (a few dozen for a trained model, at
    most ``nms_topk``), then one vector operation per box that suppresses something: the box-by-box
    loop of the operator in Python cost about 25 us per candidate (benchmarks/README.md, "Detection")."""
    count = len(boxes)
    alive = np.ones(count, dtype=bool)
    if count < 2:
        return alive
    suppresses = pairwise_iou(boxes) >= np.float32(limit)
    if not force_suppress:
        suppresses &= classes[:, None] == classes
    suppresses &= _EARLIER_ROWS[:count, :count] if count <= len(_EARLIER_ROWS) else ~np.tri(count, dtype=bool)
    for i in np.flatnonzero(suppresses.any(axis=1)):
        if alive[i]:  # final: only earlier rows can suppress row i, and they have all been applied
            alive &= ~suppresses[i]
    return alive


def _as_inputs(
    cls_prob: np.ndarray, loc_preds: np.ndarray, anchors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three heads as float32 (C+1, A), (A, 4), (A, 4); a leading batch of one is accepted."""
    probabilities = np.asarray(cls_prob, dtype=np.float32)
    if probabilities.ndim == 3 and probabilities.shape[0] == 1:
        probabilities = probabilities[0]
    if probabilities.ndim != 2 or probabilities.shape[0] < 2:
        raise DecodeError(f"cls_prob must be (classes + 1, anchors), got {probabilities.shape}")
    count = probabilities.shape[1]
    offsets = np.asarray(loc_preds, dtype=np.float32).reshape(-1)
    corners = np.asarray(anchors, dtype=np.float32)
    if offsets.size != count * 4 or corners.size != count * 4:
        raise DecodeError(
            f"{count} anchors in cls_prob, but loc_preds has {offsets.size} values and anchors "
            f"{corners.size} (4 per anchor each)"
        )
    return probabilities, offsets.reshape(count, 4), corners.reshape(count, 4)


def decode(
    cls_prob: np.ndarray,
    loc_preds: np.ndarray,
    anchors: np.ndarray,
    *,
    threshold: float = 0.01,
    nms_threshold: float = 0.45,
    nms_topk: int = 400,
    variances: Sequence[float] = DEFAULT_VARIANCES,
    force_suppress: bool = False,
) -> np.ndarray:
    """One photo's SSD heads -> detections (K, 6) float32, rows ``DETECTION_COLUMNS``, best score first.

    ``cls_prob`` (C+1, A): class 0 the background, never reported (class_id 0 is the first real class);
    ``loc_preds`` (A*4,); ``anchors`` (A, 4) normalised corners. An anchor's class is its most probable
    foreground class (the lower id on a tie); it is dropped when that probability is below
    ``threshold``. ``nms_topk`` <= 0 keeps all before NMS; a box is suppressed by a better one of its
    class (any class with ``force_suppress``) when their IoU is >= ``nms_threshold``, which must be in
    (0, 1]: outside it the operator skips sorting and NMS altogether, which no caller here wants.
    """
    if not 0.0 < nms_threshold <= 1.0:
        raise DecodeError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
    if len(variances) != 4:
        raise DecodeError(f"variances must be 4 numbers, got {variances!r}")
    probabilities, offsets, corners = _as_inputs(cls_prob, loc_preds, anchors)
    foreground = probabilities[1:]
    # An anchor's score is its best foreground probability; the operator starts from -1 and takes a class
    # only when strictly greater, so NaN never wins (fmax skips it) and an anchor with nothing above -1
    # is no detection. The threshold comes before anything per anchor is computed: of 1,344 anchors a
    # trained model leaves a few dozen at 0.01 (benchmarks/README.md, "Detection").
    scores = np.fmax.reduce(foreground, axis=0)
    floor = np.float32(threshold)  # above -1, "not below it" is ">= it" (NaN fails both)
    passing = scores >= floor if floor > -1 else (scores > np.float32(-1)) & ~(scores < floor)
    kept = np.flatnonzero(passing)
    if kept.size == 0:
        return np.zeros((0, 6), dtype=np.float32)
    order = kept[np.argsort(-scores[kept], kind="stable")]  # std::stable_sort, descending score
    if 0 < nms_topk < order.size:
        order = order[:nms_topk]
    rows = np.empty((order.size, 6), np.float32)
    rows[:, 1] = scores[order]
    # the first class reaching the score (NaN never equals it): on a tie the lower class wins, as the
    # operator's strict > keeps
    rows[:, 0] = np.argmax(foreground[:, order] == rows[:, 1], axis=0)
    rows[:, 2:] = decode_boxes(offsets[order], corners[order], variances)
    return rows[greedy_nms(rows[:, 2:], rows[:, 0], nms_threshold, force_suppress)]


def decode_settings(spec: Mapping[str, Any]) -> dict[str, Any]:
    """decode's keyword arguments from a detector spec (``detector-spec.json``: its variances and NMS
    settings): evaluation, compilation and the endpoint decode with the settings the model trained with."""
    nms = spec.get("nms") or {}
    settings: dict[str, Any] = {}
    if "variances" in spec:
        settings["variances"] = tuple(float(v) for v in spec["variances"])
    if "threshold" in nms:
        settings["nms_threshold"] = float(nms["threshold"])
    if "topk" in nms:
        settings["nms_topk"] = int(nms["topk"])
    return settings


# ---- the car's detector -----------------------------------------------------------------------------
TOPIC_SUFFIX = "detections"  # robocar/<car id>/detections
HEAD_NAMES = ("cls_prob", "loc_preds")  # the ONNX heads' outputs (processing/compile_detection.py)
DEFAULT_MIN_SCORE = 0.5  # detections a car reports: decode keeps down to 0.01 for mAP, a car acts on these
# The install record's figures of the chosen artifact (edge.agent.smoke_test copies them).
SMOKE_FIGURES = ("task", "classes", "detections", "latency_ms")


def topic_for(car_id: str) -> str:
    """The MQTT topic a car publishes its detections on when none is configured."""
    return f"robocar/{car_id}/{TOPIC_SUFFIX}"


def is_detector(package_dir: str | Path) -> bool:
    """Whether an extracted package says it is a detector (False when its manifest cannot be read)."""
    return runtimes.package_task(package_dir) == runtimes.DETECTION_TASK


class DetectorError(runtimes.PilotError):
    """A detector package that cannot be run here: bad manifest, runtime, anchors, or heads of the wrong
    shape (a PilotError: the agent and the live loop treat it as any bad package)."""


def check_manifest(manifest: Mapping[str, Any]) -> tuple[list[str], Any, dict[str, Any]]:
    """(class names, photo transform, decode's keyword arguments) of a detector manifest; the checks
    of a classifier's manifest (edge.classify.check_manifest) plus ``anchors_file`` and ``decode``."""
    from edge.classify import ClassifierError
    from edge.classify import check_manifest as check_classes_and_transform

    if not isinstance(manifest.get("anchors_file"), str) or not manifest["anchors_file"]:
        raise DetectorError("the manifest names no anchors_file (the anchors.npy of compile_detection)")
    settings = manifest.get("decode")
    if not isinstance(settings, dict):
        raise DetectorError(
            "the manifest has no decode settings (variances, nms_threshold, nms_topk, threshold)"
        )
    known = {"variances", "nms_threshold", "nms_topk", "threshold"}
    try:
        classes, transform = check_classes_and_transform({**manifest, "classes": manifest.get("classes")})
    except ClassifierError as exc:
        raise DetectorError(str(exc)) from None
    kwargs = {k: v for k, v in settings.items() if k in known}
    if "variances" in kwargs:
        kwargs["variances"] = tuple(float(v) for v in kwargs["variances"])
    try:  # the settings must be ones decode takes: tried on one anchor
        decode(np.array([[1.0], [0.0]]), np.zeros(4), np.array([[0, 0, 1, 1]]), **kwargs)
    except (DecodeError, TypeError, ValueError) as exc:
        raise DetectorError(f"the manifest's decode settings: {exc}") from None
    return classes, transform, kwargs


def reporting_settings(settings: Mapping[str, Any], min_score: float | None) -> dict[str, Any]:
    """decode's settings for a car that reports only boxes scoring at least ``min_score``: the score
    threshold raised to it. The boxes it keeps are exactly those of the package's own threshold that score
    at least ``min_score`` (greedy NMS lets only a better box suppress one, top-k keeps the best first), and
    the few candidates above it make decoding cheap (benchmarks/README.md, "Detection")."""
    if min_score is None:
        return dict(settings)
    if not 0.0 <= min_score <= 1.0:
        raise DetectorError(f"--min-score must be in [0, 1], got {min_score}")
    return {**settings, "threshold": max(float(settings.get("threshold", 0.01)), float(min_score))}


class Detector:
    """One artifact of a detector package, loaded: a photo in, detections (K, 6) out (decode's rows).

    ``min_score``: the car reports only boxes scoring at least that, so ``__call__`` decodes with it as
    the threshold (``reporting_settings``); None keeps every box down to the package's threshold (mAP)."""

    def __init__(
        self,
        package_dir: Path,
        artifact: Mapping[str, Any],
        manifest: Mapping[str, Any],
        threads: int,
        min_score: float | None = None,
    ):
        from edge.classify import onnx_artifact

        self.classes, self.transform, self.settings = check_manifest(manifest)
        self.call_settings = reporting_settings(self.settings, min_score)
        self.artifact = dict(artifact)
        self.runtime = str(artifact.get("runtime"))
        self._session = onnx_artifact(package_dir, artifact, threads, DetectorError, "detectors")
        anchors_path = runtimes.package_path(package_dir, manifest["anchors_file"])
        try:
            self.anchors = np.load(anchors_path, allow_pickle=False).astype(np.float32).reshape(-1, 4)
        except (OSError, ValueError) as exc:
            raise DetectorError(f"cannot read the anchors {anchors_path.name}: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name
        offered = [o.name for o in self._session.get_outputs()]
        missing = [name for name in HEAD_NAMES if name not in offered]
        if missing:
            raise DetectorError(
                f"{artifact.get('file')} has no output {', '.join(missing)} (it offers {offered})"
            )
        self.description = f"{artifact.get('file')} on {self.runtime}"

    def heads(self, photo: Any) -> tuple[np.ndarray, np.ndarray]:
        """One photo -> (cls_prob (C+1, A), loc_preds (A*4,)), checked against the classes and anchors."""
        from edge import photos

        batch = photos.prepare_for(photo, self.transform, self.artifact.get("input"))
        cls_prob, loc_preds = self._session.run(list(HEAD_NAMES), {self._input_name: batch})
        count = len(self.anchors)
        cls_prob = (
            np.asarray(cls_prob, np.float32).reshape(-1, count) if np.size(cls_prob) % count == 0 else None
        )
        if cls_prob is None or cls_prob.shape[0] != len(self.classes) + 1 or np.size(loc_preds) != count * 4:
            raise DetectorError(
                f"{self.artifact.get('file')} answers heads of {np.size(loc_preds)} offsets and "
                f"{'?' if cls_prob is None else cls_prob.shape[0]} scores per anchor for {count} anchors and "
                f"{len(self.classes)} classes + background"
            )
        loc_preds = np.asarray(loc_preds, np.float32).reshape(-1)
        if not (np.all(np.isfinite(cls_prob)) and np.all(np.isfinite(loc_preds))):
            raise DetectorError(f"{self.artifact.get('file')} answers non-finite heads")
        return cls_prob, loc_preds

    def __call__(self, photo: Any) -> np.ndarray:
        """One photo (a file, a Pillow image or an RGB uint8 array) -> detections (K, 6), best first."""
        cls_prob, loc_preds = self.heads(photo)
        return decode(cls_prob, loc_preds, self.anchors, **self.call_settings)


def open_detector(
    package_dir: Path, *, prefer: str | None = None, threads: int = 1, min_score: float | None = None
) -> Detector:
    """An extracted detector package -> its Detector: ``prefer``, else the artifact the agent measured
    fastest here, else the manifest's default (as edge.classify.open_classifier); ``min_score``: what the
    car reports (``Detector``)."""
    manifest = runtimes.read_manifest(package_dir)
    if runtimes.task_of(manifest) != runtimes.DETECTION_TASK:
        raise DetectorError(
            f"{package_dir} is not a detector package (its task: {runtimes.task_of(manifest)})"
        )
    artifact = runtimes.choose_artifact(manifest, prefer, chosen=runtimes.read_choice(package_dir))
    return Detector(Path(package_dir), artifact, manifest, threads, min_score)


def smoke_check(detector: Detector, image: np.ndarray) -> dict[str, Any]:
    """The detector on the agent's smoke photo, a black and a white one: its class scores of every
    anchor must be a probability distribution and every decoded box inside the photo."""
    from edge.agent import PROBABILITY_SUM_TOLERANCE, SmokeTestError

    latency_ms, found = 0.0, None
    for label, photo in (("the smoke photo", image), ("a black photo", np.zeros_like(image)),
                         ("a white photo", np.full_like(image, 255))):  # fmt: skip
        try:
            started = time.perf_counter()
            cls_prob, loc_preds = detector.heads(photo)
            detections = decode(cls_prob, loc_preds, detector.anchors, **detector.settings)
            latency_ms = latency_ms or (time.perf_counter() - started) * 1000.0
        except Exception as exc:  # any failure to run is a failed smoke test, named in the log
            raise SmokeTestError(f"smoke test cannot run the detector on {label}: {exc}") from exc
        sums = cls_prob.astype(np.float64).sum(axis=0)
        # 1e-3: float32 rounding of a softmax; the sum's tolerance is edge.agent's for int8 softmax heads
        if np.any(cls_prob < -1e-3) or np.any(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE):
            raise SmokeTestError(
                f"on {label}: the class scores of an anchor are not a probability distribution"
            )
        if len(detections) and (detections[:, 2:].min() < 0 or detections[:, 2:].max() > 1):
            raise SmokeTestError(f"on {label}: a decoded box lies outside the photo")
        found = detections if found is None else found
    return {
        "task": "detection",
        "classes": list(detector.classes),
        "detections": int(np.sum(found[:, 1] >= DEFAULT_MIN_SCORE)),
        "latency_ms": round(latency_ms, 3),
    }


# ---- the detection loop -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Detections:
    """What the detector found in one photo; ``to_json`` is what --output and MQTT receive."""

    frame: int
    origin: str
    boxes: list[dict[str, Any]]  # {"class", "class_id", "score", "box": [xmin, ymin, xmax, ymax]}
    latency_ms: float
    model: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def text(self) -> str:
        if not self.boxes:
            return f"{self.origin}: nothing"
        return f"{self.origin}: " + ", ".join(
            f"{b['class']} {b['score']:.3f} [{' '.join(f'{v:.3f}' for v in b['box'])}]" for b in self.boxes
        )


def reported_boxes(detections: np.ndarray, classes: Sequence[str], min_score: float) -> list[dict[str, Any]]:
    """Decode's rows scoring at least ``min_score`` as the car reports them, best first."""
    return [
        {"class": classes[int(row[0])], "class_id": int(row[0]), "score": round(float(row[1]), 6),
         "box": [round(float(v), 6) for v in row[2:6]]}
        for row in detections if row[1] >= min_score
    ]  # fmt: skip


def detect(
    source: Any,
    live: Any,
    outputs: Sequence[Any],
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    max_frames: int | None = None,
    rate_hz: float = 0.0,
    progress: Any = None,
    stop: Callable[[], bool] = lambda: False,
    show: Callable[[str], Any] | None = None,
) -> Any:
    """Detect in every photo of ``source`` with ``live`` (an ``edge.drive.LivePilot`` opening detectors)
    the way ``edge.classify.classify`` classifies (its loop: ``answer_photos``); each photo's boxes of at
    least ``min_score`` go to ``outputs`` and ``show``. Returns the loop's summary."""
    from edge.classify import answer_photos

    if not 0.0 <= min_score <= 1.0:
        raise DetectorError(f"--min-score must be in [0, 1], got {min_score}")

    def result_for(index: int, origin: str, detections: np.ndarray, latency_ms: float) -> Detections:
        boxes = reported_boxes(detections, live.infer.classes, min_score)
        return Detections(index, origin, boxes, latency_ms, live.name, time.time())

    def progress_text(result: Detections) -> str:
        return f"{len(result.boxes)} boxes"

    summary = answer_photos(
        source, live, outputs, result_for=result_for, progress_text=progress_text, max_frames=max_frames,
        rate_hz=rate_hz, progress=progress, stop=stop, show=show,
    )  # fmt: skip
    return summary
