"""Where the drive loop's camera frames come from: a camera, a recorded tub, a folder of images, a video.

Every source yields ``Frame``s holding a uint8 HxWx3 RGB image at the camera's size, which
``edge.frames.prepare_frame`` then crops/resizes exactly as in training. Tubs are read through
``edge/tubs.py``, the tub reader Preprocess builds on: the car needs neither pandas nor the processing unit.
OpenCV is optional (camera and video only) and imported when such a source is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge import frames, tubs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SourceError(Exception):
    """A frame source that cannot be opened (missing folder, no OpenCV, no camera)."""


@dataclass
class Frame:
    """One camera frame; ``recorded`` holds the tub's own angle/throttle when replaying a tub."""

    image: np.ndarray
    index: int
    origin: str
    recorded: dict[str, Any] = field(default_factory=dict)


class FrameSource(Protocol):
    description: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def _natural_key(path: Path) -> list[Any]:
    """``2.jpg`` before ``10.jpg``: donkeycar numbers its images without padding."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _load(path: Path) -> np.ndarray:
    return frames.decode_image(path.read_bytes())


class FolderSource:
    """Every image in a folder, in natural order."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise SourceError(f"{folder} is not a folder of images")
        self.paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key
        )
        if not self.paths:
            raise SourceError(f"{folder} holds no .jpg/.jpeg/.png images")
        self.description = f"folder {folder} ({len(self.paths)} images)"

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            yield Frame(_load(path), index, path.name)

    def close(self) -> None:
        pass


class TubSource:
    """Replays a donkeycar tub (v2 catalogs or v1 records) frame by frame, with the recorded commands."""

    def __init__(self, tub: Path) -> None:
        try:
            self.version, self.records = tubs.tub_records(tub)
        except (OSError, tubs.TubError) as exc:
            raise SourceError(f"{tub}: {exc}") from None
        self.image_dir = tubs.image_dir(tub, self.version)
        self.tub = tub
        self.description = f"tub v{self.version} {tub}"

    def __iter__(self) -> Iterator[Frame]:
        for index, record in enumerate(self.records):
            name = record.get(tubs.IMAGE_KEY)
            if not name:
                continue
            recorded = {k: record[k] for k in ("user/angle", "user/throttle", "user/mode") if k in record}
            yield Frame(_load(self.image_dir / name), index, f"{self.tub.name}/{name}", recorded)

    def close(self) -> None:
        pass


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise SourceError(
            "camera and video sources need OpenCV: pip install opencv-python-headless (or use a tub/folder)"
        ) from exc
    return cv2


class OpenCvSource:
    """A camera (by index) or a video file through OpenCV, converted BGR -> RGB at the camera's size."""

    def __init__(self, device: int | str, spec: frames.FrameSpec) -> None:
        self.cv2 = _cv2()
        self.capture = self.cv2.VideoCapture(device)
        if not self.capture.isOpened():
            raise SourceError(
                f"OpenCV cannot open {'camera' if isinstance(device, int) else 'video'} {device}"
            )
        if isinstance(device, int):
            self.capture.set(self.cv2.CAP_PROP_FRAME_WIDTH, spec.camera_width)
            self.capture.set(self.cv2.CAP_PROP_FRAME_HEIGHT, spec.camera_height)
        self.size = (spec.camera_width, spec.camera_height)
        self.description = f"camera {device}" if isinstance(device, int) else f"video {device}"

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                return
            if (bgr.shape[1], bgr.shape[0]) != self.size:
                bgr = self.cv2.resize(bgr, self.size, interpolation=self.cv2.INTER_AREA)
            yield Frame(self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB), index, self.description)
            index += 1

    def close(self) -> None:
        self.capture.release()


def open_source(value: str, spec: frames.FrameSpec) -> FrameSource:
    """``camera[:N]``, ``tub:PATH``, ``folder:PATH``, ``video:PATH``, or a path (its kind is guessed)."""
    kind, _, rest = value.partition(":")
    if kind == "camera":
        if rest and not rest.isdigit():
            raise SourceError(f"camera index must be a number, got {rest!r}")
        return OpenCvSource(int(rest or 0), spec)
    if kind in ("tub", "folder", "video") and rest:
        path = Path(rest)
    else:
        kind, path = "", Path(value)
    if not path.exists():
        raise SourceError(f"frame source {value!r}: {path} does not exist")
    if kind == "video" or (not kind and path.is_file()):
        return OpenCvSource(str(path), spec)
    if kind == "tub" or (not kind and path.is_dir() and tubs.tub_version(set(os.listdir(path)))):
        return TubSource(path)
    return FolderSource(path)
