"""Camera images -> prepared frames (``edge.frames``), with a rejection reason for each one that fails.

This is the per-frame hot path of preprocessing and what the process pool runs: read the file, decode
(``decode_image``), check the camera size, crop/resize (``prepare_frame``), and write the shard. Frames
go straight into one preallocated array, and a worker writes its shard itself, so the pixels never
cross a process boundary.

Bounded: a file over ``max_image_bytes`` is rejected after reading that many bytes, and the size in an
image's header is checked against the camera before it is decoded, so a small file that claims
65,535 x 65,535 pixels is rejected without allocating them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge.frames import FrameError, FrameSpec, decode_image, jpeg_colour_size, prepare_frame
from processing.limits import DEFAULT_LIMITS, DataLimits, FileTooLarge, limit_text, read_limited
from processing.shards import normalise_arrays, write_shard

_reusable: dict[tuple[int, ...], np.ndarray] = {}  # per process: one frame buffer per shape


def frame_buffer(count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A [count, *shape] uint8 array reused from call to call in this process.

    A fresh 100 MB array costs a page fault per 4 KB on first touch (a third of the copy time here);
    reusing one keeps its pages mapped. Valid until the next call: callers write it out first.
    """
    buffer = _reusable.get(shape)
    if buffer is None or len(buffer) < count:
        buffer = _reusable[shape] = np.empty((count, *shape), dtype=np.uint8)
    return buffer[:count]


def release_frame_buffers() -> None:
    """Free the buffers ``frame_buffer`` keeps (for callers that run the step in a long-lived process)."""
    _reusable.clear()


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, without decoding it; None if the header is unreadable."""
    size = jpeg_colour_size(data)
    if size is not None:
        return size
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return img.size
    except Exception:  # Pillow raises several unrelated types; decode_image words the reason
        return None


def load_frames(
    paths: Sequence[str],
    spec: FrameSpec,
    out: np.ndarray | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
) -> tuple[np.ndarray, list[str | None]]:
    """(frames uint8 [k, H, W, 3] of the images that passed, reason or None for each path in order).

    The frames are written into ``out`` (at least ``len(paths)`` rows) when given, else a new array.
    """
    if out is None:
        out = np.empty((len(paths), *spec.input_shape), dtype=np.uint8)
    reasons: list[str | None] = []
    camera = (spec.camera_height, spec.camera_width)
    kept = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            data = read_limited(path, limits.image_bytes)
        except FileNotFoundError:
            reasons.append(f"image missing: {name}")
            continue
        except OSError as exc:
            reasons.append(f"image unreadable: {name}: {exc.strerror or exc}")
            continue
        except FileTooLarge:
            reasons.append(f"image unreadable: {name} is over {limit_text(limits, 'image_bytes')}")
            continue
        size = header_size(data)
        if size is not None and size[::-1] != camera:
            reasons.append(
                f"image wrong size: {name} is {size[0]}x{size[1]}, "
                f"expected {spec.camera_width}x{spec.camera_height}"
            )
            continue
        try:
            image = decode_image(data)
        except FrameError as exc:
            reasons.append(f"image unreadable: {name}: {exc}")
            continue
        if image.shape[:2] != camera:
            reasons.append(
                f"image wrong size: {name} is {image.shape[1]}x{image.shape[0]}, "
                f"expected {spec.camera_width}x{spec.camera_height}"
            )
            continue
        try:
            out[kept] = prepare_frame(image, spec)
        except FrameError as exc:  # defensive: decode_image always returns RGB of the checked size
            reasons.append(f"image unreadable: {name}: {exc}")
            continue
        kept += 1
        reasons.append(None)
    return out[:kept], reasons


@dataclass
class ShardTask:
    """One shard to build: up to ``shard_size`` candidate frames, in order, and where to write them.

    Shard boundaries are fixed by the candidates (before any image is decoded), so the output does not
    depend on how many processes build shards; a shard holds fewer frames when images are rejected.
    """

    path: str
    image_paths: list[str]
    columns: dict[str, np.ndarray]  # the contract's non-image arrays, one row per candidate
    spec: FrameSpec
    limits: DataLimits = DEFAULT_LIMITS


@dataclass
class ShardResult:
    reasons: list[str | None]  # per candidate: None (written) or why its image was rejected
    frames: int
    sessions: list[str]


def build_shard(task: ShardTask) -> ShardResult:
    """Decode, check and prepare every frame of ``task``, then write the shard (if any frame passed).

    Runs in a pool worker or in-process.
    """
    frames, reasons = load_frames(
        task.image_paths, task.spec, frame_buffer(len(task.image_paths), task.spec.input_shape), task.limits
    )
    kept = np.fromiter((reason is None for reason in reasons), dtype=bool, count=len(reasons))
    if not len(frames):
        return ShardResult(reasons, 0, [])
    arrays = {key: column[kept] for key, column in task.columns.items()}
    arrays["images"] = frames
    write_shard(Path(task.path), normalise_arrays(arrays, task.spec.input_shape))
    return ShardResult(reasons, len(frames), sorted(set(arrays["session"].tolist())))
