"""Offline body-shape default: limb and torso proportions from MediaPipe Pose keypoints.

Each frame of a person track gets MediaPipe Pose's 33 landmarks on a padded crop of its box
(`track_pose`). The descriptor is a set of segment lengths divided by a skeletal height (the sum
of the head, torso and leg segments, which unlike the box height does not shrink when a walker
bends a knee), combined over frames by a visibility-weighted median so a few bad fits do not
move it. Left and right segments are averaged: MediaPipe swaps the sides of people seen from
behind or in profile.

The embedding keeps the five bones along the body's axis (torso, thigh, shank, upper arm,
forearm): each proportion's log-ratio to an average adult's (Drillis & Contini's segment
fractions of stature), L2-normalised, so cosine compares the *direction* in which a body departs
from average. It is a weak biometric (EER ~30% on the pedestrian video: 2-D lengths change with
the view, and a few pixels of keypoint noise on a 100 px person are several percent), useful as
soft, quality-weighted evidence in fusion, never alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from biofuse.modalities.base import Embeddings, l2_normalise
from biofuse.modalities.body.silhouettes import BOX_PAD, padded_crop
from biofuse.modalities.items import PoseSequence

from biofuse.registry import ResolvedModel

NUM_LANDMARKS = 33
NOSE, L_EAR, R_EAR = 0, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_FOOT, R_FOOT = 29, 30, 31, 32

# Segment fractions of stature for an average adult (Drillis & Contini 1966, as tabulated in
# Winter's "Biomechanics and Motor Control of Human Movement"): the centre of our log-ratios.
_STATURE = {
    "head_neck": 0.10,  # nose to shoulder line
    "torso": 0.288,  # shoulder line (0.818 H) to hip line (0.530 H)
    "thigh": 0.245,
    "shank": 0.246,
    "upper_arm": 0.186,
    "forearm": 0.146,
    "shoulder_width": 0.259,
    "hip_width": 0.191,
    "foot": 0.152,
    "head_width": 0.075,  # ear to ear
}
# Our height is skeletal (head_neck + torso + thigh + shank), not stature: re-express the means.
_SKELETAL_FRACTION = sum(_STATURE[k] for k in ("head_neck", "torso", "thigh", "shank"))
FEATURES: tuple[str, ...] = (
    "head_neck",
    "torso",
    "thigh",
    "shank",
    "upper_arm",
    "forearm",
    "shoulder_width",
    "hip_width",
    "foot",
    "head_width",
)
REFERENCE_RATIOS = np.array([_STATURE[f] / _SKELETAL_FRACTION for f in FEATURES], np.float32)
# What the embedding uses: the bones along the body's long axis, whose image length depends
# least on which way a person faces. Widths (shoulders, hips, ears) and the foot lie across or
# along the walking direction and change several-fold as people turn; nose-to-shoulders moves
# with head pitch. On the pedestrian video all 10 gave EER 43.5%, these 5 gave 28-30%
# (benchmarks/body_shape.py; chosen on that same data, with this physical reason).
EMBEDDED_FEATURES: tuple[str, ...] = ("torso", "thigh", "shank", "upper_arm", "forearm")
EMBEDDED_INDEX = np.array([FEATURES.index(f) for f in EMBEDDED_FEATURES])

MIN_VISIBILITY = 0.5  # MediaPipe's own "landmark is in view" cut
FULL_QUALITY_FRAMES = 10  # frames beyond which more views no longer raise quality


def _mid(kp: np.ndarray, a: int, b: int) -> np.ndarray:
    return (kp[:, a, :2] + kp[:, b, :2]) / 2


def _dist(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - q, axis=-1)


def _pair(kp: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Length of segment a-b per frame and its weight (the smaller visibility of its ends)."""
    return _dist(kp[:, a, :2], kp[:, b, :2]), np.minimum(kp[:, a, 2], kp[:, b, 2])


def _sides(kp: np.ndarray, left: tuple[int, int], right: tuple[int, int]) -> tuple[Any, Any]:
    """A limb's length: the visibility-weighted mean of its visible left and right copies.

    A hidden side (visibility < 0.5) is left out when the other is visible, since MediaPipe
    still guesses a position for it; with both hidden the low weight rejects the frame later.
    """
    (ll, lw), (rl, rw) = _pair(kp, *left), _pair(kp, *right)
    any_visible = (lw >= MIN_VISIBILITY) | (rw >= MIN_VISIBILITY)
    lw_used = np.where(any_visible & (lw < MIN_VISIBILITY), 0.0, lw)
    rw_used = np.where(any_visible & (rw < MIN_VISIBILITY), 0.0, rw)
    total = lw_used + rw_used
    length = (ll * lw_used + rl * rw_used) / np.maximum(total, 1e-6)
    weight = np.where(any_visible, np.maximum(lw_used, rw_used), (lw + rw) / 2)
    return length, weight


def segment_lengths(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 33, 3) keypoints -> per-frame lengths (T, F) in pixels and their weights (T, F)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"keypoints must be (T, {NUM_LANDMARKS}, 3), got {kp.shape}")
    vis = kp[:, :, 2]
    shoulders, hips = _mid(kp, L_SHOULDER, R_SHOULDER), _mid(kp, L_HIP, R_HIP)
    shoulder_w = np.minimum(vis[:, L_SHOULDER], vis[:, R_SHOULDER])
    hip_w = np.minimum(vis[:, L_HIP], vis[:, R_HIP])
    columns = {
        "head_neck": (_dist(kp[:, NOSE, :2], shoulders), np.minimum(vis[:, NOSE], shoulder_w)),
        "torso": (_dist(shoulders, hips), np.minimum(shoulder_w, hip_w)),
        "thigh": _sides(kp, (L_HIP, L_KNEE), (R_HIP, R_KNEE)),
        "shank": _sides(kp, (L_KNEE, L_ANKLE), (R_KNEE, R_ANKLE)),
        "upper_arm": _sides(kp, (L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW)),
        "forearm": _sides(kp, (L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST)),
        "shoulder_width": _pair(kp, L_SHOULDER, R_SHOULDER),
        "hip_width": _pair(kp, L_HIP, R_HIP),
        "foot": _sides(kp, (L_HEEL, L_FOOT), (R_HEEL, R_FOOT)),
        "head_width": _pair(kp, L_EAR, R_EAR),
    }
    lengths = np.stack([columns[f][0] for f in FEATURES], axis=1)
    weights = np.stack([columns[f][1] for f in FEATURES], axis=1)
    return lengths, weights


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at half the total weight (values sorted): robust to a few bad frames."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    return float(v[np.searchsorted(cumulative, cumulative[-1] / 2)])


def body_proportions(keypoints: np.ndarray) -> tuple[np.ndarray, float] | None:
    """A track's segment lengths over skeletal height (F,), and its quality 0..1.

    Per frame, a segment counts when both ends are visible (>= 0.5); the skeletal height needs
    head, torso and both leg segments. A proportion never seen is NaN; None when no frame yields
    a height or an embedded proportion is never seen (the descriptor would be incomparable).
    Quality: mean visibility of the embedded segments x frame coverage (10 frames = full).
    """
    lengths, weights = segment_lengths(keypoints)
    height = lengths[:, :4].sum(axis=1)  # head_neck + torso + thigh + shank
    height_ok = (weights[:, :4] >= MIN_VISIBILITY).all(axis=1) & (height > 0)
    if not height_ok.any():
        return None
    ratios = lengths[height_ok] / height[height_ok, None]
    w = np.where(weights[height_ok] >= MIN_VISIBILITY, weights[height_ok], 0.0)
    out = np.full(len(FEATURES), np.nan, np.float64)
    for j in range(len(FEATURES)):
        if w[:, j].sum() > 0:
            out[j] = weighted_median(ratios[:, j], w[:, j])
    if np.isnan(out[EMBEDDED_INDEX]).any():
        return None
    n_frames = int(height_ok.sum())
    coverage = min(1.0, n_frames / FULL_QUALITY_FRAMES)
    quality = float(w[:, EMBEDDED_INDEX].mean()) * coverage
    return out.astype(np.float32), quality


def proportions_to_embedding(ratios: np.ndarray) -> np.ndarray:
    """Embedded proportions' log-ratio to the average adult's, unit length: cosine compares the
    direction in which a body departs from average."""
    index = EMBEDDED_INDEX
    deviation = np.log(np.maximum(ratios[index], 1e-6) / REFERENCE_RATIOS[index])
    return l2_normalise(deviation[None, :])[0]


class PoseEstimator:
    """MediaPipe Pose (the `pose_landmark_full` model shipped in mediapipe 0.10.21) on crops.

    One graph per worker; not thread-safe. Static-image mode: consecutive crops of a track move,
    so MediaPipe's own landmark-to-ROI tracking would look in the wrong place.
    """

    def __init__(self) -> None:
        self._graph: Any = None

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        """RGB crop -> (33, 3) of x, y in crop pixels and visibility, or None if nobody found."""
        if self._graph is None:
            import mediapipe as mp

            self._graph = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        crop = np.ascontiguousarray(crop, dtype=np.uint8)
        result = self._graph.process(crop)
        if result.pose_landmarks is None:
            return None
        h, w = crop.shape[:2]
        return np.array(
            [(p.x * w, p.y * h, p.visibility) for p in result.pose_landmarks.landmark],
            dtype=np.float32,
        )

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None


_DEFAULT_ESTIMATOR: list[PoseEstimator] = []


def track_pose(
    key: str,
    frames: Sequence[np.ndarray],
    boxes: Sequence[Sequence[float]],
    *,
    estimator: PoseEstimator | None = None,
    pad: float = BOX_PAD,
    max_frames: int | None = None,
) -> PoseSequence | None:
    """A person track (RGB uint8 frames, x0 y0 x1 y1 boxes) -> keypoints in frame pixels.

    Frames where MediaPipe finds nobody are left out; None when none is left. `max_frames`
    spreads that many frames evenly over the track: pose costs ~70 ms a frame on CPU, and the
    descriptor's quality saturates at 10 frames.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes for track {key!r}")
    if max_frames is not None and len(frames) > max_frames:
        pick = np.unique(np.linspace(0, len(frames) - 1, max(1, max_frames)).round().astype(int))
        frames, boxes = [frames[i] for i in pick], [boxes[i] for i in pick]
    if estimator is None:
        if not _DEFAULT_ESTIMATOR:
            _DEFAULT_ESTIMATOR.append(PoseEstimator())
        estimator = _DEFAULT_ESTIMATOR[0]
    keypoints, heights = [], []
    for frame, box in zip(frames, boxes, strict=True):
        cut = padded_crop(frame, box, pad)
        if cut is None:
            continue
        crop, (ox, oy) = cut
        found = estimator(crop)
        if found is None:
            continue
        found[:, 0] += ox
        found[:, 1] += oy
        keypoints.append(found)
        heights.append(float(box[3]) - float(box[1]))
    if not keypoints:
        return None
    return PoseSequence(key, np.stack(keypoints), np.asarray(heights, np.float32))


class AnthropometricBodyExtractor:
    """Body-shape Extractor: PoseSequence batches -> unit proportion vectors (cosine metric).

    The pose model is a registry entry (`mediapipe-pose-anthropometric`, packaged in mediapipe)
    so the model_id changes when MediaPipe's pose weights do; `embed` itself needs only the
    keypoints, which `track_pose` computed where the frames were.
    """

    name = "mediapipe-pose-anthropometric"
    dim = len(EMBEDDED_FEATURES)

    def __init__(self, resolved: ResolvedModel) -> None:
        self.resolved = resolved

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Nothing to load: the descriptor is arithmetic on keypoints."""

    def embed(self, items: Sequence[PoseSequence]) -> Embeddings:
        vectors, quality, keys = [], [], []
        for item in items:
            found = body_proportions(item.keypoints) if len(item.keypoints) else None
            if found is None:
                continue  # missing evidence is absent, never a zero vector
            vector = proportions_to_embedding(found[0])
            if not np.isfinite(vector).all() or np.linalg.norm(vector) < 0.5:
                continue  # an exactly average body has no direction: no evidence, no zero row
            vectors.append(vector)
            quality.append(found[1])
            keys.append(item.key)
        if not keys:
            return Embeddings.empty(self.dim, self.model_id)
        return Embeddings(
            np.stack(vectors).astype(np.float32),
            np.asarray(quality, np.float32),
            keys,
            self.model_id,
        )
