"""Person tracks of the pedestrian video for the body benchmarks (cached under ~/.cache).

A simple, documented pass: OpenCV HOG people detections on every frame (the PERSON
engineer's `HogPersonDetector`, with body-tight boxes), linked by IoU with the project's
`link_detections` (Hungarian matching, 0.5 s gap). Long tracks only, since the body benchmarks
split each track in two halves. Not the project's full tracker: identity switches are possible,
which is why body_shape.py only counts as impostors tracks that are on screen together.

    .venv/bin/python benchmarks/body_tracks.py     # prints the tracks (and caches them)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.config import shared_data_dir  # noqa: E402
from biofuse.tracking import iou_matrix, link_detections  # noqa: E402

VIDEO = "video/opencv_vtest_pedestrians.avi"
FPS = 10.0
CACHE = Path.home() / ".cache" / "biofuse-bench" / "vtest_person_tracks_v1.json"
MIN_TRACK_FRAMES = 20
MIN_SCORE = 0.3  # HOG SVM margin: drop the weakest windows (lamp post, bollards)


@dataclass
class Track:
    track_id: int
    frames: list[int]  # frame indices, increasing
    boxes: list[tuple[float, float, float, float]]  # x0 y0 x1 y1 per frame


def read_video(path: Path | None = None) -> list[np.ndarray]:
    """Every frame of the pedestrian video as RGB uint8 (795 x 576 x 768 x 3, ~1 GB)."""
    path = path or shared_data_dir() / VIDEO
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise SystemExit(f"could not decode {path}")
    return frames


def detect_and_link(frames: list[np.ndarray]) -> list[Track]:
    from biofuse.modalities.body.person_detect import HogPersonDetector

    detector = HogPersonDetector(min_height_px=80.0)
    per_frame = []
    for i, frame in enumerate(frames):
        found = detector.detect([frame])[0]
        keep = found.scores >= MIN_SCORE
        per_frame.append((i / FPS, [tuple(map(float, b)) for b in found.boxes[keep]]))
    linked = link_detections(per_frame, iou_threshold=0.3, max_gap_s=0.5, min_detections=2)
    tracks = []
    for t in linked:
        if len(t) < MIN_TRACK_FRAMES:
            continue
        tracks.append(Track(len(tracks), [m[0] for m in t.members], [tuple(b) for b in t.boxes]))
    return tracks


def load_tracks(frames: list[np.ndarray] | None = None) -> list[Track]:
    """The cached tracks, or detect them (a few minutes on 2 cores) and cache them."""
    if CACHE.is_file():
        return [Track(**t) for t in json.loads(CACHE.read_text())]
    tracks = detect_and_link(frames if frames is not None else read_video())
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps([t.__dict__ for t in tracks]))
    return tracks


def concurrent_and_apart(a: Track, b: Track, max_iou: float = 0.2) -> bool:
    """On screen together at least 1 s, never overlapping much: surely two different people."""
    shared = sorted(set(a.frames) & set(b.frames))
    if len(shared) < FPS:
        return False
    ia = {f: i for i, f in enumerate(a.frames)}
    ib = {f: i for i, f in enumerate(b.frames)}
    boxes_a = np.array([a.boxes[ia[f]] for f in shared])
    boxes_b = np.array([b.boxes[ib[f]] for f in shared])
    overlap = np.diag(iou_matrix(boxes_a, boxes_b))
    return bool(overlap.max() <= max_iou)


if __name__ == "__main__":
    found = load_tracks()
    for t in found:
        h = np.mean([b[3] - b[1] for b in t.boxes])
        span = f"{t.frames[0]}-{t.frames[-1]} ({len(t.frames)})"
        print(f"track {t.track_id}: frames {span}, h {h:.0f}")
