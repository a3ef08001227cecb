"""Tracks: detections linked across frames.

Linkers with one output type (`LinkedTrack`):
- `track_persons`: ByteTrack-style multi-person tracking. A constant-velocity
  Kalman filter predicts each box; high-confidence detections are matched first
  (IoU, Hungarian); low-confidence ones then only extend tracks seen in the
  previous frame (they are mostly real people the detector is unsure of, rarely
  new ones) and never start one; a track is born after `min_hits` matches in a
  row and dies `max_age_s` after its last match.
- `link_faces`: the same tracker and motion model for faces: every face detection
  is confident (one matching stage), a track is born at its first detection, and
  tracks shorter than `min_detections` are dropped. A face that moves, or is missed
  for a few frames, stays one track where linking the last box split it in two.
- `link_detections`: plain IoU linking of the last box, without motion; kept as the
  baseline the benchmarks compare against (benchmarks/track_fragmentation.py).
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
    scores: list[float] = field(default_factory=list)  # detector scores (zeros for faces)

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


@dataclass(frozen=True)
class ByteTrackParams:
    """Association thresholds (ByteTrack's names); scores are on the detector's own scale.

    The defaults suit OpenCV's HOG people detector (its SVM margin is the score): on the
    annotated pedestrian span a margin of 1.0 to start tracks and three hits to confirm
    them cut false tracks most; the IoU and age settings barely mattered there
    (benchmarks/person_tracking.py).
    """

    high_score: float = 1.0  # first-stage detections; also the least score that starts a track
    low_score: float = -0.5  # second-stage detections: between low_score and high_score
    match_iou: float = 0.2  # first stage: predicted box vs high-confidence detection
    low_match_iou: float = 0.5  # second stage: stricter, a weak detection must sit on the track
    tentative_iou: float = 0.3  # a not-yet-born track vs the leftover high detections
    min_hits: int = 3  # matches in a row before a track is born (reported)
    max_age_s: float = 1.5  # a track unmatched this long is dead


class BoxKalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with time steps in seconds.

    Noise scales with the box height, as in SORT/ByteTrack, so a near person and
    a far one are equally sure in relative terms.
    """

    POSITION_STD = 1 / 20  # per unit height, measurement and process
    VELOCITY_STD = 1 / 10  # per unit height per second

    def __init__(self, box: Box) -> None:
        z = self._measure(box)
        self.x = np.concatenate([z, np.zeros(4)])
        h = max(z[3], 1.0)
        std = np.r_[[2 * self.POSITION_STD * h] * 4, [10 * self.VELOCITY_STD * h] * 4]
        self.P = np.diag(std**2)

    @staticmethod
    def _measure(box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=float)

    def predict(self, dt: float) -> None:
        F = np.eye(8)
        F[:4, 4:] = dt * np.eye(4)
        h = max(self.x[3], 1.0)
        q = np.r_[[self.POSITION_STD * h * dt] * 4, [self.VELOCITY_STD * h * dt] * 4]
        self.x = F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.P = F @ self.P @ F.T + np.diag(q**2)

    def update(self, box: Box) -> None:
        H = np.eye(4, 8)
        r = (self.POSITION_STD * max(self.x[3], 1.0)) ** 2
        S = H @ self.P @ H.T + r * np.eye(4)
        K = self.P @ H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (self._measure(box) - H @ self.x)
        self.P = (np.eye(8) - K @ H) @ self.P

    @property
    def box(self) -> Box:
        cx, cy, w, h = self.x[:4]
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@dataclass
class _LiveTrack:
    kalman: BoxKalman
    linked: LinkedTrack
    hits_in_a_row: int = 1
    born: bool = False

    def update(self, frame: int, det: int, time_s: float, box: np.ndarray, score: float) -> None:
        """Correct the motion model with a matched detection and record it."""
        self.kalman.update(tuple(float(v) for v in box))
        self.add(frame, det, time_s, tuple(float(v) for v in box), float(score))

    def add(self, frame: int, det: int, time_s: float, box: Box, score: float) -> None:
        self.linked.members.append((frame, det))
        self.linked.times.append(time_s)
        self.linked.boxes.append(box)
        self.linked.scores.append(score)


def _match(
    tracks: list[_LiveTrack], boxes: np.ndarray, candidates: list[int], min_iou: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching of tracks' predicted boxes to the candidate detections.

    Returns (track, detection) pairs, unmatched track positions, unmatched detections.
    """
    if not tracks or not candidates:
        return [], list(range(len(tracks))), list(candidates)
    predicted = np.asarray([t.kalman.box for t in tracks], dtype=float)
    overlap = iou_matrix(predicted, boxes[candidates])
    rows, cols = linear_sum_assignment(-overlap)
    pairs = [(int(r), candidates[c]) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]
    used_t = {r for r, _ in pairs}
    used_d = {d for _, d in pairs}
    return (
        pairs,
        [i for i in range(len(tracks)) if i not in used_t],
        [d for d in candidates if d not in used_d],
    )


def track_persons(
    frames: list[tuple[float, np.ndarray, np.ndarray]], params: ByteTrackParams | None = None
) -> list[LinkedTrack]:
    """Link per-frame person detections into tracks, ByteTrack's way.

    `frames` is [(time, boxes (n, 4) x0y0x1y1, scores (n,))] in time order.
    Detections below `params.low_score` are ignored. Returns the born tracks,
    each with every detection it was matched to (also those before its birth),
    sorted by start time.
    """
    p = params or ByteTrackParams()
    live: list[_LiveTrack] = []
    finished: list[_LiveTrack] = []
    last_time: float | None = None
    for frame, (time_s, boxes_in, scores_in) in enumerate(frames):
        boxes = np.asarray(boxes_in, dtype=float).reshape(-1, 4)
        scores = np.asarray(scores_in, dtype=float).reshape(-1)
        previous = last_time
        dt = 0.0 if last_time is None else time_s - last_time
        last_time = time_s
        for track in live:
            track.kalman.predict(dt)
        still = []
        for track in live:
            dead = time_s - track.linked.end_s > p.max_age_s
            (finished if dead else still).append(track)
        live = still

        high = [i for i in range(len(scores)) if scores[i] >= p.high_score]
        low = [i for i in range(len(scores)) if p.low_score <= scores[i] < p.high_score]
        born = [t for t in live if t.born]
        tentative = [t for t in live if not t.born]

        # 1) born tracks (seen lately or not) vs confident detections
        pairs, left_t, left_high = _match(born, boxes, high, p.match_iou)
        for t, d in pairs:
            born[t].update(frame, d, time_s, boxes[d], scores[d])
        # 2) tracks seen in the previous frame, still unmatched, vs unsure detections:
        # recovers people the detector half-sees (occluded, blurred) without starting tracks
        rest = [born[i] for i in left_t if born[i].linked.end_s == previous]
        pairs, _, _ = _match(rest, boxes, low, p.low_match_iou)
        for t, d in pairs:
            rest[t].update(frame, d, time_s, boxes[d], scores[d])
        # 3) tracks not yet born vs the confident leftovers; an unmatched one is dropped
        pairs, unmatched_tentative, left_high = _match(tentative, boxes, left_high, p.tentative_iou)
        for t, d in pairs:
            track = tentative[t]
            track.update(frame, d, time_s, boxes[d], scores[d])
            track.hits_in_a_row += 1
            track.born = track.hits_in_a_row >= p.min_hits
        dropped = {id(tentative[i]) for i in unmatched_tentative}
        live = [t for t in live if id(t) not in dropped]
        # 4) the confident leftovers start tracks
        for d in left_high:
            box = tuple(float(v) for v in boxes[d])
            track = _LiveTrack(BoxKalman(box), LinkedTrack(), born=p.min_hits <= 1)
            track.add(frame, d, time_s, box, float(scores[d]))
            live.append(track)
    finished.extend(live)
    tracks = [t.linked for t in finished if t.born]
    return sorted(tracks, key=lambda t: (t.start_s, t.boxes[0][0]))


def link_faces(
    frames: list[tuple[float, list[Box]]],
    iou_threshold: float = 0.3,
    max_gap_s: float = 1.0,
    min_detections: int = 2,
) -> list[LinkedTrack]:
    """Face tracks by `track_persons`' motion model; arguments as `link_detections`'.

    `frames` is [(time, boxes)] in time order. A detection joins the live track whose
    Kalman-predicted box overlaps it most (one-to-one, Hungarian) if the IoU reaches
    `iou_threshold`; a track not matched for `max_gap_s` ends; tracks of fewer than
    `min_detections` detections are dropped as likely false detections.
    """
    params = ByteTrackParams(
        high_score=-np.inf,  # every face detection is matched in the first stage...
        low_score=-np.inf,  # ...so the second (weak detections) stage has nothing to do
        match_iou=iou_threshold,
        min_hits=1,  # born at once: short tracks are dropped below, as link_detections does
        max_age_s=max_gap_s,
    )
    tracks = track_persons(
        [(t, np.asarray(b, dtype=float).reshape(-1, 4), np.zeros(len(b))) for t, b in frames],
        params,
    )
    return [t for t in tracks if len(t) >= min_detections]


def mot_scores(
    truth: list[tuple[int, int, Box]], hypotheses: list[tuple[int, int, Box]], min_iou: float = 0.5
) -> dict[str, float]:
    """CLEAR-MOT and identity scores (motmetrics) of tracks against ground truth.

    Both are rows of (frame, id, box); only frames that have ground truth rows are
    scored, so a sparse annotation (every 10th frame) scores the tracks there.
    """
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted({f for f, _, _ in truth})
    for frame in frames:
        t = [(i, b) for f, i, b in truth if f == frame]
        h = [(i, b) for f, i, b in hypotheses if f == frame]
        tb = np.asarray([b for _, b in t], dtype=float).reshape(-1, 4)
        hb = np.asarray([b for _, b in h], dtype=float).reshape(-1, 4)
        distance = 1.0 - iou_matrix(tb, hb)
        distance[distance > 1.0 - min_iou] = np.nan
        acc.update([i for i, _ in t], [i for i, _ in h], distance, frameid=frame)
    names = ["mota", "motp", "idf1", "num_switches", "num_misses", "num_false_positives"]
    summary = mm.metrics.create().compute(acc, metrics=names + ["num_objects"], name="all")
    out = {name: float(summary[name].iloc[0]) for name in names + ["num_objects"]}
    out["motp"] = 1.0 - out["motp"]  # motmetrics reports the mean distance; say the mean IoU
    return out
