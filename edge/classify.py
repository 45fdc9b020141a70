"""The car classifies: an installed classifier package answers each photo with its top-k classes.

A classifier package (``processing/compile_classifier.py``; manifest ``"task": "classification"``) holds
``manifest.json`` with ``classes`` (names by id), ``input_transform`` (``edge.photos.PhotoTransform``: how
training prepared photos) and ONNX artifacts (float32, int8) that take ``data`` [1, 3, H, W] float32 and
answer one probability per class. It installs through the agent like a pilot (verified SHA-256s, smoke
test, the fastest passing artifact measured on the car, rollback); ``robocar-edge run`` then classifies
photos from the pilot's frame sources or a folder (``--images``) with ``classify``, writing each result as
a JSON line and publishing it on MQTT (``topic_for``) when a broker is configured.

Every photo goes through ``edge.photos.prepare``, the transform training, evaluation and compilation use.
Numpy, Pillow and onnxruntime only: this module runs on the car.
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge import photos, runtimes
from edge.agent import PROBABILITY_SUM_TOLERANCE, SmokeTestError
from edge.photos import PhotoError, PhotoTransform, check_input_spec

log = logging.getLogger("robocar.edge.classify")

TOPIC_SUFFIX = "classifications"  # robocar/<car id>/classifications
CLASSIFIER_RUNTIMES = ("onnxruntime",)  # what compile_classifier's local mode writes
# The install record's figures of the chosen artifact (edge.agent.smoke_test copies them).
SMOKE_FIGURES = ("task", "classes", "top", "probability", "latency_ms")


class ClassifierError(runtimes.PilotError):
    """A classifier package that cannot be run here: bad manifest, runtime, or answers of the wrong size."""


def topic_for(car_id: str) -> str:
    """The MQTT topic a car publishes its classifications on when none is configured."""
    return f"robocar/{car_id}/{TOPIC_SUFFIX}"


def is_classifier(package_dir: str | Path) -> bool:
    """Whether an extracted package says it is a classifier (False when its manifest cannot be read)."""
    return runtimes.package_task(package_dir) == runtimes.CLASSIFICATION_TASK


def check_manifest(manifest: Mapping[str, Any]) -> tuple[list[str], PhotoTransform]:
    """(class names, photo transform) of a classifier manifest; ClassifierError names what is wrong.

    Each artifact's ``input`` (when given) must be float32 of the transform's shape [1, 3, H, W], or the
    transformed photo's uint8 pixel blocks (``edge.photos.check_input_spec``): a package whose artifact
    takes another size would be fed photos it was not compiled for.
    """
    classes = manifest.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(name, str) and name for name in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ClassifierError(f"the manifest's classes must be 2 or more distinct names, got {classes!r}")
    spec = manifest.get("input_transform")
    if not isinstance(spec, dict):
        raise ClassifierError("the manifest has no input_transform (edge.photos.PhotoTransform.as_dict)")
    try:
        transform = PhotoTransform.from_dict(spec)
    except PhotoError as exc:
        raise ClassifierError(f"the manifest's input_transform: {exc}") from exc
    for artifact in manifest["artifacts"]:
        given = (artifact.get("input") or {}) if isinstance(artifact, dict) else {}
        wrong = check_input_spec(given, transform)
        if wrong:
            raise ClassifierError(f"{artifact.get('file')} {wrong}")
    return list(classes), transform


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable (class, probability), most probable first (ties: the lower class id)."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def _output_index(artifact: Mapping[str, Any], offered: Sequence[str]) -> int:
    """Which session output holds the probabilities: the manifest's output by ``name``, else ``index``."""
    specs = [o for o in artifact.get("outputs") or [] if isinstance(o, dict)]
    wanted = next((o for o in specs if o.get("meaning") == "probabilities"), specs[0] if specs else {})
    if wanted.get("name") in offered:
        return list(offered).index(wanted["name"])
    index = wanted.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(offered):
        raise ClassifierError(
            f"{artifact.get('file')}: manifest output {wanted} is not among the model's outputs "
            f"{list(offered)}"
        )
    return index


def onnx_artifact(
    package_dir: Path, artifact: Mapping[str, Any], threads: int, error: type[Exception], what: str
) -> Any:
    """The ONNX Runtime session of a package's artifact (its runtime must be onnxruntime, ``threads`` at
    least 1); ``error`` says what is wrong, naming ``what`` runs only there ("classifiers")."""
    if str(artifact.get("runtime")) not in CLASSIFIER_RUNTIMES:
        raise error(f"{artifact.get('file')}: {what} run on {', '.join(CLASSIFIER_RUNTIMES)}")
    if threads < 1:
        raise error(f"threads must be >= 1, got {threads}")
    path = runtimes.package_path(package_dir, artifact.get("file"))
    try:
        return runtimes.onnx_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own types for corrupt or incompatible models
        raise error(f"onnxruntime cannot load {path.name}: {exc}") from exc


class Classifier:
    """One artifact of a classifier package, loaded: a photo in, a probability per class out."""

    def __init__(
        self, package_dir: Path, artifact: Mapping[str, Any], manifest: Mapping[str, Any], threads: int
    ):
        self.classes, self.transform = check_manifest(manifest)
        self.artifact = dict(artifact)
        self.runtime = str(artifact.get("runtime"))
        self._session = onnx_artifact(package_dir, artifact, threads, ClassifierError, "classifiers")
        self._input_name = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._output_name = outputs[_output_index(artifact, outputs)]
        self.description = f"{artifact.get('file')} on {self.runtime}"

    def __call__(self, photo: str | Path | np.ndarray | Any) -> np.ndarray:
        """One photo (a file, a Pillow image or an RGB uint8 array) -> float32 probabilities [classes]."""
        batch = photos.prepare_for(photo, self.transform, self.artifact.get("input"))
        (raw,) = self._session.run([self._output_name], {self._input_name: batch})
        values = np.asarray(raw, dtype=np.float32).reshape(-1)
        if values.size != len(self.classes):
            raise ClassifierError(
                f"{self.artifact.get('file')} answers {values.size} probabilities "
                f"for {len(self.classes)} classes"
            )
        if not np.all(np.isfinite(values)):  # never published: the photo is skipped and counted
            raise ClassifierError(
                f"{self.artifact.get('file')} answers non-finite probabilities {values[:4]}"
            )
        return values


def open_classifier(package_dir: Path, *, prefer: str | None = None, threads: int = 1) -> Classifier:
    """An extracted classifier package -> its Classifier: ``prefer`` (a file, runtime or precision), else
    the artifact the agent measured fastest here (``runtimes.read_choice``), else the manifest's default."""
    manifest = runtimes.read_manifest(package_dir)
    if runtimes.task_of(manifest) != runtimes.CLASSIFICATION_TASK:
        raise ClassifierError(
            f"{package_dir} is not a classifier package (its task: {runtimes.task_of(manifest)})"
        )
    artifact = runtimes.choose_artifact(manifest, prefer, chosen=runtimes.read_choice(package_dir))
    return Classifier(Path(package_dir), artifact, manifest, threads)


def check_probabilities(values: np.ndarray, classes: Sequence[str]) -> None:
    """A probability per class, each in [0, 1], summing to 1 (within edge.agent's softmax tolerance)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size != len(classes):
        raise SmokeTestError(f"the model answers {values.size} probabilities for {len(classes)} classes")
    if not np.all(np.isfinite(values)):
        raise SmokeTestError(f"the model's probabilities are not finite ({values[:4]})")
    if (  # 1e-3: float32 rounding of a softmax, as edge.agent.check_heads allows
        np.any(values < -1e-3)
        or np.any(values > 1 + 1e-3)
        or abs(values.sum() - 1.0) > PROBABILITY_SUM_TOLERANCE
    ):
        raise SmokeTestError(f"the model's answer is not a probability distribution (sum {values.sum():.4f})")


def smoke_check(classifier: Classifier, image: np.ndarray) -> dict[str, Any]:
    """The classifier on a photo (the agent's bundled camera frame) and on a black and a white one (a
    covered lens, the sun): each answer must be a probability distribution over its classes."""
    answers: list[np.ndarray] = []
    latency_ms = 0.0
    for label, photo in (("the smoke photo", image), ("a black photo", np.zeros_like(image)),
                         ("a white photo", np.full_like(image, 255))):  # fmt: skip
        try:
            started = time.perf_counter()
            answers.append(classifier(photo))
            latency_ms = latency_ms or (time.perf_counter() - started) * 1000.0
        except Exception as exc:  # any failure to run is a failed smoke test, named in the log
            raise SmokeTestError(f"smoke test cannot run the classifier on {label}: {exc}") from exc
        try:
            check_probabilities(answers[-1], classifier.classes)
        except SmokeTestError as exc:
            raise SmokeTestError(f"on {label}: {exc}") from None
    (name, probability), *_ = top_k(answers[0], classifier.classes, 1)
    return {
        "task": runtimes.CLASSIFICATION_TASK,
        "classes": list(classifier.classes),
        "top": name,
        "probability": round(probability, 4),
        "latency_ms": round(latency_ms, 3),
    }


# ---- the classification loop ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Classification:
    """What the classifier answered for one photo; ``to_json`` is what --output and MQTT receive."""

    frame: int
    origin: str
    top: list[tuple[str, float]]
    latency_ms: float
    model: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["top"] = [{"class": name, "probability": round(p, 6)} for name, p in self.top]
        record["class"], record["probability"] = record["top"][0]["class"], record["top"][0]["probability"]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def text(self) -> str:
        return f"{self.origin}: " + ", ".join(f"{name} {p:.3f}" for name, p in self.top)


@dataclass
class ClassifySummary:
    """``skipped``: photos that gave no answer (``failed`` of them: the classifier raised)."""

    photos: int
    skipped: int
    failed: int
    seconds: float
    fps: float
    latency_ms: dict[str, float]
    models: list[str]
    artifact: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lat = self.latency_ms
        return (
            f"classified {self.photos} photos from {self.source} in {self.seconds:.2f} s "
            f"({self.fps:.1f} fps), {self.skipped} skipped; latency ms mean {lat['mean']:.3f} "
            f"p50 {lat['p50']:.3f} p95 {lat['p95']:.3f} max {lat['max']:.3f}; "
            f"models {', '.join(self.models)} ({self.artifact})"
        )


def classify(
    source: Any,
    live: Any,
    outputs: Sequence[Any],
    *,
    k: int = 3,
    max_frames: int | None = None,
    rate_hz: float = 0.0,
    progress: Any = None,
    stop: Callable[[], bool] = lambda: False,
    show: Callable[[str], Any] | None = None,
) -> ClassifySummary:
    """Classify every photo of ``source`` (an edge.sources frame source) with ``live`` (an
    ``edge.drive.LivePilot`` opening classifiers, so a newly installed model takes over between photos)
    until it ends, ``max_frames``, or ``stop()``; each result goes to ``outputs`` (``apply``: JSON lines,
    MQTT) and, as a line, to ``show``. Latency is from the decoded photo to its probabilities."""
    if k < 1:
        raise ClassifierError(f"--top-k must be 1 or more, got {k}")

    def result_for(index: int, origin: str, probabilities: Any, latency_ms: float) -> Classification:
        top = top_k(probabilities, live.infer.classes, k)
        return Classification(index, origin, top, latency_ms, live.name, time.time())

    def progress_text(result: Classification) -> str:
        name, probability = result.top[0]
        return f"{name} {probability:.3f}"

    return answer_photos(
        source, live, outputs, result_for=result_for, progress_text=progress_text, max_frames=max_frames,
        rate_hz=rate_hz, progress=progress, stop=stop, show=show,
    )  # fmt: skip


def answer_photos(
    source: Any,
    live: Any,
    outputs: Sequence[Any],
    *,
    result_for: Callable[[int, str, Any, float], Any],
    progress_text: Callable[[Any], str],
    max_frames: int | None = None,
    rate_hz: float = 0.0,
    progress: Any = None,
    stop: Callable[[], bool] = lambda: False,
    show: Callable[[str], Any] | None = None,
) -> ClassifySummary:
    """The photo loop of a car that answers photos (a classifier, a detector): each photo of ``source``
    through ``live.infer``, its answer made a result by ``result_for(index, origin, answer, latency_ms)``
    (with ``to_json`` and ``text``), sent to ``outputs`` and ``show``; a photo the model cannot answer
    is skipped and counted. ``progress_text(result)`` ends the progress line."""
    from edge.drive import LoopClock, latency_stats

    latencies = array("d")
    clock = LoopClock(rate_hz)
    skipped = failed = 0
    photos_in = iter(source)
    while not stop() and (max_frames is None or len(latencies) < max_frames):
        try:
            frame = next(photos_in, None)
        except KeyboardInterrupt:  # Ctrl-C ends the run like the end of the source: summary, messages sent
            break
        if frame is None:
            break
        live.refresh()
        t0 = time.perf_counter()
        try:
            answer = live.infer(frame.image)
        except Exception as exc:  # one photo the model cannot answer must not end the run
            skipped += 1
            failed += not isinstance(exc, PhotoError)
            if skipped <= 5:
                log.warning("skipping photo %s: %s: %s", frame.origin, type(exc).__name__, exc)
            continue
        t1 = time.perf_counter()
        result = result_for(len(latencies), frame.origin, answer, (t1 - t0) * 1000.0)
        for output in outputs:
            output.apply(result)
        if show is not None:
            show(result.text())
        latencies.append(result.latency_ms)
        clock.done(t1)
        if progress is not None:
            progress.update(
                f"photos {len(latencies)}  {clock.fps():7.1f} fps  latency {result.latency_ms:6.3f} ms  "
                f"{progress_text(result)}  model {live.name}"
            )
        clock.wait(len(latencies))
    seconds = clock.seconds()
    if progress is not None:
        progress.finish()
    return ClassifySummary(
        photos=len(latencies),
        skipped=skipped,
        failed=failed,
        seconds=seconds,
        fps=len(latencies) / seconds if seconds > 0 else 0.0,
        latency_ms=latency_stats(latencies),
        models=live.names_used,
        artifact=live.infer.description,
        source=source.description,
    )
