"""Person tracks -> gait silhouettes: MediaPipe person segmentation, then OpenGait pretreatment.

Gait models consume OpenGait-pretreated binary silhouettes (64x64). We segment each frame of a
track on a padded crop of its box (the segmenters work at 256 px input; cropping keeps a distant
person large enough), threshold the probability, keep the connected blob the box is about (a
padded crop may catch a neighbour), then run `biofuse.modalities.gait.silhouette`'s exact
pretreatment.

Two offline segmenters ship in MediaPipe 0.10.21: `selfie_segmentation` (the default) and the
pose model's `enable_segmentation` mask. On the pedestrian video's tracks (612 crops, against
background subtraction; benchmarks/body_silhouettes.py) selfie agrees better (mean IoU 0.764 vs
0.719; pose finds no person in 3% of crops) and is ~9x faster (35 vs 311 ms per crop on our
shared CPU), although it was trained on near, frontal people.

On a fixed camera the person path finds people by background subtraction
(`biofuse.modalities.body.background`), and its foreground masks are the silhouettes, the way
CASIA-B's were made: `mask_silhouettes` runs them through the same pretreatment, and a track
without enough usable masks falls back to the segmenter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from biofuse.modalities.gait.silhouette import pretreat_silhouette
from biofuse.modalities.items import SilhouetteSequence

SegmenterName = Literal["pose", "selfie"]
SEGMENTERS: tuple[SegmenterName, ...] = ("pose", "selfie")

MASK_THRESHOLD = 0.5  # MediaPipe's masks are probabilities; 0.5 is their decision boundary
BOX_PAD = 0.15  # of the box height on every side: limbs stick out of detector boxes


def padded_crop(
    frame: np.ndarray, box: Sequence[float], pad: float = BOX_PAD
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The box grown by `pad` x its height on each side, clipped to the frame; with its origin.

    None when the box lies outside the frame or is empty.
    """
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    margin = pad * max(0.0, y1 - y0)
    cx0, cy0 = max(0, int(np.floor(x0 - margin))), max(0, int(np.floor(y0 - margin)))
    cx1, cy1 = min(width, int(np.ceil(x1 + margin))), min(height, int(np.ceil(y1 + margin)))
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        return None
    return np.ascontiguousarray(frame[cy0:cy1, cx0:cx1]), (cx0, cy0)


def main_blob(mask: np.ndarray, box_in_crop: Sequence[float]) -> np.ndarray:
    """The connected component with most pixels inside the box (the tracked person), as bool."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background plus at most one blob
        return mask.astype(bool)
    x0, y0, x1, y1 = (max(0, int(round(v))) for v in box_in_crop)
    inside = labels[y0:y1, x0:x1]
    votes = np.bincount(inside.ravel(), minlength=count)[1:]
    if votes.sum() == 0:
        votes = np.bincount(labels.ravel(), minlength=count)[1:]
    return labels == 1 + int(np.argmax(votes))


class PersonSegmenter:
    """One MediaPipe segmentation graph, RGB crop -> person probability (H, W) float32 or None.

    MediaPipe graphs are not thread-safe and cost ~20 ms to build: hold one per worker
    (process or Ray actor) and reuse it across tracks.
    """

    def __init__(self, method: SegmenterName = "selfie") -> None:
        if method not in SEGMENTERS:
            raise ValueError(f"unknown segmenter {method!r}; choose one of {SEGMENTERS}")
        self.method = method
        self._graph: Any = None

    def _load(self) -> Any:
        import mediapipe as mp

        if self.method == "pose":
            # static_image_mode: crops of one track move in the frame, so the tracker's ROI
            # from the previous crop would point at the wrong place.
            return mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, enable_segmentation=True
            )
        return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        if self._graph is None:
            self._graph = self._load()
        result = self._graph.process(np.ascontiguousarray(crop, dtype=np.uint8))
        mask = result.segmentation_mask  # None from pose when it finds no person
        return None if mask is None else np.asarray(mask, dtype=np.float32)

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None


_DEFAULT_SEGMENTERS: dict[str, PersonSegmenter] = {}


def _default_segmenter(method: SegmenterName) -> PersonSegmenter:
    if method not in _DEFAULT_SEGMENTERS:
        _DEFAULT_SEGMENTERS[method] = PersonSegmenter(method)
    return _DEFAULT_SEGMENTERS[method]


def person_mask(
    frame: np.ndarray,
    box: Sequence[float],
    segmenter: PersonSegmenter,
    threshold: float = MASK_THRESHOLD,
    pad: float = BOX_PAD,
) -> tuple[np.ndarray, float] | None:
    """The tracked person's binary mask on the padded crop (uint8 0/255) and its mean confidence.

    None when the segmenter finds nobody. The crop, not the frame, is returned: OpenGait's
    pretreatment keeps all columns, so the crop's width fixes the horizontal resampling grid.
    """
    cut = padded_crop(frame, box, pad)
    if cut is None:
        return None
    crop, (ox, oy) = cut
    prob = segmenter(crop)
    if prob is None:
        return None
    fg = prob > threshold
    if not fg.any():
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    blob = main_blob(fg, (x0 - ox, y0 - oy, x1 - ox, y1 - oy))
    return blob.astype(np.uint8) * np.uint8(255), float(prob[blob].mean())


def track_silhouettes(
    key: str,
    frames: Sequence[np.ndarray],
    boxes: Sequence[Sequence[float]],
    *,
    method: SegmenterName = "selfie",
    segmenter: PersonSegmenter | None = None,
    threshold: float = MASK_THRESHOLD,
    pad: float = BOX_PAD,
) -> SilhouetteSequence | None:
    """A person track (RGB uint8 frames, x0 y0 x1 y1 boxes) -> its pretreated silhouettes.

    Frames where nobody is found or OpenGait's pretreatment drops the mask are left out; None
    when no frame is left. Quality = mean mask confidence x fraction of frames kept.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes for track {key!r}")
    if not frames:
        return None
    segmenter = segmenter or _default_segmenter(method)
    kept: list[np.ndarray] = []
    confidences: list[float] = []
    for frame, box in zip(frames, boxes, strict=True):
        found = person_mask(frame, box, segmenter, threshold, pad)
        if found is None:
            continue
        sil = pretreat_silhouette(found[0])
        if sil is not None:
            kept.append(sil)
            confidences.append(found[1])
    if not kept:
        return None
    quality = float(np.mean(confidences)) * len(kept) / len(frames)
    return SilhouetteSequence(key=key, frames=np.stack(kept), quality=quality)


MIN_MASK_FRAMES = 8  # fewer usable foreground masks than this (in a longer track): segment
MIN_MASK_SHARE = 0.5  # ... or masks for fewer than this share of the track's frames


def mask_silhouettes(key: str, masks: Sequence[Any]) -> SilhouetteSequence | None:
    """A track's background-subtraction masks (`PersonMask` or None per frame) -> silhouettes.

    None when the masks are unusable (too few frames have one, or OpenGait's pretreatment
    drops too many): the caller then segments the crops. Quality = share of frames kept.
    """
    if not masks:
        return None
    kept = [
        sil
        for sil in (pretreat_silhouette(m.unpack()) for m in masks if m is not None)
        if sil is not None
    ]
    # a short track with a mask in every frame is usable: segmenting its crops gives no more
    if len(kept) < min(MIN_MASK_FRAMES, len(masks)) or len(kept) < MIN_MASK_SHARE * len(masks):
        return None
    return SilhouetteSequence(key=key, frames=np.stack(kept), quality=len(kept) / len(masks))
