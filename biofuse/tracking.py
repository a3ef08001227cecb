"""Person tracks: detections linked across frames.

For now a track is a face track: boxes linked frame to frame by IoU with an
optimal assignment, ended after a gap. Full person tracking (motion model,
two-stage ByteTrack matching) replaces this with the gait work; the output
type stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass
class LinkedTrack:
    """Indices of the detections that form one track, in time order."""

    members: list[tuple[int, int]] = field(default_factory=list)  # (frame index, detection index)
    times: list[float] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)

    @property
    def start_s(self) -> float:
        return self.times[0]

    @property
    def end_s(self) -> float:
        return self.times[-1]

    def __len__(self) -> int:
        return len(self.members)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of (n, 4) and (m, 4) x0y0x1y1 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def link_detections(
    frames: list[tuple[float, list[Box]]],
    iou_threshold: float = 0.3,
    max_gap_s: float = 1.0,
    min_detections: int = 2,
) -> list[LinkedTrack]:
    """Link per-frame boxes into tracks.

    `frames` is [(time, boxes)] in time order. A detection joins the live track
    whose last box overlaps it most (one-to-one, Hungarian), if the IoU reaches
    `iou_threshold`; a track not extended for `max_gap_s` ends. Tracks shorter
    than `min_detections` are dropped as likely false detections.
    """
    live: list[LinkedTrack] = []
    finished: list[LinkedTrack] = []
    for frame_index, (time_s, boxes) in enumerate(frames):
        still_live = []
        for track in live:
            (finished if time_s - track.end_s > max_gap_s else still_live).append(track)
        live = still_live
        detections = np.asarray(boxes, dtype=float).reshape(-1, 4)
        last_boxes = np.asarray([t.boxes[-1] for t in live], dtype=float).reshape(-1, 4)
        overlap = iou_matrix(last_boxes, detections)
        matched: set[int] = set()
        if overlap.size:
            rows, cols = linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= iou_threshold:
                    live[r].members.append((frame_index, int(c)))
                    live[r].times.append(time_s)
                    live[r].boxes.append(tuple(detections[c]))
                    matched.add(int(c))
        for c in range(len(detections)):
            if c not in matched:
                live.append(LinkedTrack([(frame_index, c)], [time_s], [tuple(detections[c])]))
    finished.extend(live)
    tracks = [t for t in finished if len(t) >= min_detections]
    return sorted(tracks, key=lambda t: (t.start_s, t.boxes[0][0]))


def overlap_s(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))
