"""Face and body thumbnails of a track: one decoded frame, cropped, cached as JPEG on disk.

Decoding seeks (PyAV) instead of reading from the start as `biofuse.media.iter_frames`
does, so a thumbnail from the end of an hour of video costs one GOP, not the hour.
The frame is the one where the track's face box is largest (the closest, most
legible view). Tracks hold face boxes only, so the body crop is the region a
standing person occupies below that face (about 3 face widths by 7 face
heights), clipped to the frame.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import cv2
import numpy as np

from biofuse.errors import MediaError

THUMB_HEIGHT = 224


def best_box(boxes: list[list[float]]) -> list[float]:
    """[t, x0, y0, x1, y1] with the largest area (ties: the earliest)."""
    if not boxes:
        raise MediaError("the track has no boxes to take a thumbnail from")
    return max(boxes, key=lambda b: (b[3] - b[1]) * (b[4] - b[2]))


def frame_at(path: Path, time_s: float) -> np.ndarray:
    """The RGB frame shown at `time_s`: seek to the keyframe before it, decode forward."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.time_base is not None:
                container.seek(int(max(time_s - 1.0, 0.0) / stream.time_base), stream=stream)
            rate = float(stream.average_rate) if stream.average_rate else 25.0
            last = None
            for frame in container.decode(stream):
                last = frame
                if frame.time is not None and frame.time >= time_s - 0.5 / rate:
                    break
            if last is None:
                raise MediaError(f"{path}: no frame decodable near {time_s:.2f} s")
            return last.to_ndarray(format="rgb24")
    except FileNotFoundError as exc:
        raise MediaError(f"{path}: the video file is gone (moved or deleted?)") from exc
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode a frame at {time_s:.2f} s ({exc})") from exc


def crop_box(kind: str, box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel crop (x0, y0, x1, y1) for a face box: the face with a margin, or the body."""
    _, x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if kind == "face":
        region = (x0 - 0.25 * w, y0 - 0.35 * h, x1 + 0.25 * w, y1 + 0.2 * h)
    else:
        cx = (x0 + x1) / 2
        region = (cx - 1.5 * w, y0 - 0.5 * h, cx + 1.5 * w, y0 + 7.0 * h)
    a, b, c, d = (int(round(v)) for v in region)
    a, b = max(a, 0), max(b, 0)
    c, d = min(c, width), min(d, height)
    if c <= a or d <= b:
        raise MediaError(f"the {kind} box {box[1:]} lies outside the {width}x{height} frame")
    return a, b, c, d


def cached_paths(cache_dir: Path, track_key: str, video: Path) -> list[Path]:
    """Where a track's face and body thumbnails are cached (`biofuse gallery forget` erases)."""
    name = hashlib.sha1(f"{video}|{track_key}".encode()).hexdigest()[:20]
    return [cache_dir / f"{name}-{kind}.jpg" for kind in ("face", "body")]


def thumbnail(cache_dir: Path, track_key: str, kind: str, video: Path, boxes: list) -> Path:
    """The cached JPEG of a track's face or body; made on first request."""
    face, body = cached_paths(cache_dir, track_key, video)
    target = face if kind == "face" else body
    if target.is_file():
        return target
    box = best_box(boxes)
    image = frame_at(video, float(box[0]))
    x0, y0, x1, y1 = crop_box(kind, box, image.shape[1], image.shape[0])
    crop = image[y0:y1, x0:x1]
    scale = THUMB_HEIGHT / crop.shape[0]
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), THUMB_HEIGHT))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError(f"could not encode the {kind} thumbnail of {track_key}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(data.tobytes())
    partial.replace(target)  # concurrent requests never serve half a file
    return target
