"""Person detection on whole frames with OpenCV's HOG people detector (ships offline).

HOG's SVM window is 64 x 128 pixels with the person about 96 pixels tall inside it,
so frames are upscaled until the smallest person worth finding (`min_height_px`)
fills the window; the returned boxes are shrunk from the window to the body (the
median margins of HOG windows around the hand-drawn boxes of tests/data/vtest_gt.csv).
On the pedestrian video the default 64 px (1.5x upscale) tracks best: 96 px misses
most people, 48 px finds more of the small ones but adds false and broken tracks at
1.5x the cost; a pyramid step of 1.1 instead of 1.05 costs no recall and 40 % less time
(benchmarks/person_tracking.py).
The SVM margin is the score: ByteTrack-style association uses its low-margin
detections only to keep existing tracks alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

HOG_WINDOW_PERSON_PX = 96.0  # height of a person inside HOG's 64 x 128 window


@dataclass
class FramePersons:
    """The people found in one frame: boxes (x0, y0, x1, y1 pixels) and detector scores."""

    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32, the SVM margin: > 0 is a person, larger is surer
    # background subtraction's foreground per detection
    # (biofuse.modalities.body.background.PersonMask),
    # for gait silhouettes; None from HOG
    masks: list[Any] | None = None


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    HOG's own grouping merges overlapping windows badly at low thresholds; plain
    NMS on the raw windows keeps two people walking side by side apart.
    """
    from biofuse.tracking import iou_matrix

    order = np.argsort(-scores)
    keep: list[int] = []
    while len(order):
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        overlap = iou_matrix(boxes[best : best + 1], boxes[rest])[0]
        order = rest[overlap < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class HogPersonDetector:
    """OpenCV's default people SVM over HOG features, at the scale that finds small people."""

    name = "opencv-hog-people"

    def __init__(
        self,
        min_height_px: float = 64.0,
        min_score: float = -0.5,
        nms_iou: float = 0.4,
        shrink_x: float = 0.25,
        shrink_top: float = 0.18,
        shrink_bottom: float = 0.14,
        max_side_px: int = 1600,
        pyramid_step: float = 1.1,
    ) -> None:
        self.upscale = max(1.0, HOG_WINDOW_PERSON_PX / min_height_px)
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.shrink = (shrink_x, shrink_top, shrink_bottom)
        self.max_side_px = max_side_px
        self.pyramid_step = pyramid_step
        self._hog: cv2.HOGDescriptor | None = None

    def prepare(self, device: str = "cpu") -> None:
        """HOG runs on the CPU whatever the device; the SVM ships inside OpenCV."""
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, images: Sequence[np.ndarray]) -> list[FramePersons]:
        """One FramePersons per RGB frame."""
        if self._hog is None:
            self.prepare()
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> FramePersons:
        assert self._hog is not None
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        # cap the upscaled size: HOG's cost grows with the area
        scale = min(self.upscale, self.max_side_px / max(grey.shape))
        scale = max(scale, 1e-3)
        if scale != 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(
            grey,
            hitThreshold=self.min_score,
            winStride=(8, 8),
            padding=(8, 8),
            scale=self.pyramid_step,
        )
        if len(rects) == 0:
            return FramePersons(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        rects = np.asarray(rects, np.float64) / scale
        scores = np.asarray(weights, np.float64).reshape(-1)
        windows = np.column_stack(
            [rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]]
        )
        keep = nms(windows, scores, self.nms_iou)
        windows, scores = windows[keep], scores[keep]
        w = windows[:, 2] - windows[:, 0]
        h = windows[:, 3] - windows[:, 1]
        sx, st, sb = self.shrink
        boxes = np.column_stack(
            [
                windows[:, 0] + sx * w,
                windows[:, 1] + st * h,
                windows[:, 2] - sx * w,
                windows[:, 3] - sb * h,
            ]
        )
        height, width = image.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return FramePersons(boxes.astype(np.float32), scores.astype(np.float32))
