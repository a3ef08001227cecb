"""MTCNN face detection (facenet-pytorch's bundled P-, R- and O-Nets), batched per call.

dlib's HOG detector slides an 80-px window and finds nothing below ~40 px without
upsampling (0 % at 24 px on lfw-dev frames, benchmarks/results/face_distance.md); MTCNN's
12-px P-Net finds 99 % at 24 px, 92 % at 16 px and 53 % at 12 px. Its weights ship inside
the `facenet-pytorch` wheel (installed with --no-deps by scripts/setup.sh: its declared pins
are old), so this runs offline. Frames of one call that share a size go through the cascade
as one batch, on the actor's device.

Each face gets MTCNN's five points (eye centres, nose tip, mouth corners: the ArcFace
template's points, `points5`) and a 150-px chip for dlib's ResNet, aligned one of two ways:

- "points5": a similarity from MTCNN's points onto `DLIB_CHIP_POINTS5`, where those points
  sit on dlib's own chips (measured: MTCNN run on dlib-aligned lfw-dev chips, averaged).
- "dlib5": dlib's 5-point shape predictor started from the MTCNN box, then dlib's own
  `get_face_chip`, exactly as the HOG path aligns.

benchmarks/lfw_pipeline.py measures both; `DEFAULT_CHIP_ALIGNMENT` is the better one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from biofuse.modalities.face.align import align_face
from biofuse.modalities.face.dlib_face import (
    CHIP_PADDING,
    CHIP_SIZE,
    FaceDetection,
    _check_rgb,
    face_quality,
)

from biofuse.registry import ResolvedModel

# P-, R-, O-Net probability thresholds and pyramid factor: facenet-pytorch's defaults.
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
# The O-Net probability a face must reach. On 40 degraded blurred-noise 640x480 frames the
# cascade's own 0.7 let through 3 false faces (p 0.74, 0.77, 0.83: 0.075 a frame); at 0.8 one
# (0.025 a frame), while recall on 50 lfw-dev faces moved 94 -> 92 % at 16 px, 72 -> 68 % at
# 12 px. Quality (face_quality) is this probability times the size term, so what passes and
# is small still counts little.
MIN_SCORE = 0.8

# Where MTCNN's five points (left eye, right eye, nose tip, left and right mouth corner, image
# left first) fall on dlib's 150-px chip (padding 0.25). Measured on 298 lfw-dev photos: MTCNN's
# points mapped through the transform of dlib's own chip (HOG box, 5-point predictor), median
# per point, then made left-right symmetric about x = 75 (benchmarks/mtcnn_chip_points.py).
DLIB_CHIP_POINTS5 = np.array(
    [
        [47.8, 46.6],
        [102.2, 46.6],
        [75.0, 78.8],
        [51.2, 105.7],
        [98.8, 105.7],
    ],
    dtype=np.float64,
)

CHIP_ALIGNMENTS = ("points5", "dlib5", "none")
DEFAULT_CHIP_ALIGNMENT = "points5"  # lfw-dev: 99.33 % vs dlib5 98.33 % (300 pairs)


def score_to_margin(probability: float) -> float:
    """MTCNN's O-Net probability as a HOG-like margin: logistic(2 * margin) == probability.

    `face_quality` takes logistic(2 * score) of a detector margin; giving it half the logit
    of MTCNN's probability makes its score term exactly that probability.
    """
    p = min(max(float(probability), 1e-6), 1.0 - 1e-6)
    return 0.5 * math.log(p / (1.0 - p))


def points5_eye_distance(points5: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(points5[0]) - np.asarray(points5[1])))


class MtcnnFaceDetector:
    """MTCNN boxes, probabilities and five points, with chips for the face embedders.

    `min_face_px`: the smallest face (box side) the pyramid looks for (its first level is
    scaled by 12 / min_face_px; below 12 the frame is upsampled, at a quadratic cost).
    `chip_alignment`: "points5", "dlib5" (needs `landmarks_model`, the dlib-resnet registry
    entry holding the 5-point predictor) or "none" (no 150-px chip, for embedders that align
    from `points5` themselves, e.g. AdaFace).
    """

    name = "mtcnn"

    def __init__(
        self,
        landmarks_model: ResolvedModel | None = None,
        min_face_px: float = 12.0,
        chip_alignment: str = DEFAULT_CHIP_ALIGNMENT,
        min_score: float = MIN_SCORE,
        thresholds: Sequence[float] = THRESHOLDS,
        factor: float = PYRAMID_FACTOR,
    ) -> None:
        if min_face_px < 4:
            raise ValueError("min_face_px must be >= 4")
        if chip_alignment not in CHIP_ALIGNMENTS:
            raise ValueError(f"chip_alignment must be one of {CHIP_ALIGNMENTS}")
        if chip_alignment == "dlib5" and landmarks_model is None:
            raise ValueError("chip_alignment='dlib5' needs the dlib-resnet model (its predictor)")
        self.landmarks_model = landmarks_model
        self.min_face_px = float(min_face_px)
        self.chip_alignment = chip_alignment
        self.min_score = float(min_score)
        self.thresholds = [float(t) for t in thresholds]
        self.factor = float(factor)
        self.device = "cpu"
        self._nets: tuple[Any, Any, Any] | None = None
        self._predictor: Any = None

    def prepare(self, device: str = "cpu") -> None:
        """Load the three nets (weights inside the wheel) onto `device` once."""
        if self._nets is not None:
            return
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.device = str(torch.device(device))
        nets = tuple(net().to(self.device).eval() for net in (PNet, RNet, ONet))
        self._nets = nets  # type: ignore[assignment]
        if self.chip_alignment == "dlib5":
            import dlib

            assert self.landmarks_model is not None
            self._predictor = dlib.shape_predictor(str(self.landmarks_model.paths["landmarks5"]))

    def _cascade(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(boxes (n, 5) with probability, points (n, 5, 2)) per frame; frames share a size."""
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        assert self._nets is not None
        pnet, rnet, onet = self._nets
        batch = torch.from_numpy(np.stack(frames))
        with torch.inference_mode():
            boxes, points = detect_face(
                batch, self.min_face_px, pnet, rnet, onet, self.thresholds, self.factor, self.device
            )
        out = []
        for b, p in zip(boxes, points):
            out.append(
                (
                    np.asarray(b, dtype=np.float32).reshape(-1, 5),
                    np.asarray(p, dtype=np.float32).reshape(-1, 5, 2),
                )
            )
        return out

    def _describe(self, image: np.ndarray, box5: np.ndarray, points5: np.ndarray) -> FaceDetection:
        h, w = image.shape[:2]
        x0, y0, x1, y1, prob = (float(v) for v in box5)
        box = (
            min(max(x0, 0.0), w),
            min(max(y0, 0.0), h),
            min(max(x1, 0.0), w),
            min(max(y1, 0.0), h),
        )
        score = score_to_margin(prob)
        landmarks = points5.astype(np.float32)
        if self.chip_alignment == "dlib5":
            import dlib

            rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
            shape = self._predictor(image, rect)
            chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        elif self.chip_alignment == "points5":
            chip = align_face(image, points5, size=CHIP_SIZE, template=DLIB_CHIP_POINTS5)
        else:
            chip = np.zeros((0, 0, 3), np.uint8)
        eye_px = points5_eye_distance(points5)
        return FaceDetection(
            box=box,
            landmarks5=landmarks,
            score=score,
            inter_eye_px=eye_px,
            chip=np.ascontiguousarray(chip, dtype=np.uint8),
            quality=face_quality(score, eye_px),
            points5=landmarks.astype(np.float64),
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        """Faces in each RGB uint8 frame, most probable first; [] for a frame with none."""
        if self._nets is None:
            self.prepare()
        frames = [_check_rgb(image) for image in images]
        out: list[list[FaceDetection]] = [[] for _ in frames]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append(i)
        for idx in by_shape.values():
            if min(frames[idx[0]].shape[:2]) < 12:
                continue  # smaller than P-Net's window: nothing to find
            for i, (boxes, points) in zip(idx, self._cascade([frames[i] for i in idx])):
                faces = []
                for b, p in zip(boxes, points):
                    if not np.isfinite(b).all() or not np.isfinite(p).all():
                        continue
                    if b[4] < self.min_score:
                        continue
                    faces.append(self._describe(frames[i], b, p))
                faces.sort(key=lambda f: f.score, reverse=True)
                out[i] = faces
        return out
