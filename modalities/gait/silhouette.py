"""OpenGait's silhouette pretreatment: a person mask of any size -> the 64x64 frame GaitBase saw.

Gait models are trained on CASIA-B/OU-MVLP silhouettes that OpenGait's `datasets/pretreatment.py`
normalised in one fixed way; masks from our own segmenter must go through the same steps or the
embeddings drift. Our own implementation of those steps, per frame:

1. drop the frame if its pixel sum is <= 10000 (OpenGait's "no data" test, on 0..255 values);
2. keep the rows from the first to the last row holding any non-zero pixel (all columns kept);
3. resize to height 64 keeping the aspect ratio (width `int(64 * w / h)`, bicubic);
4. find the x-centre as the first column where the cumulative column mass exceeds half the total
   (the mass median, on the resized frame); drop the frame if that column is 0, as OpenGait does;
5. cut 64 columns centred there, zero-padded where they run past the frame.

`to_model_input` then takes the centre 64x44 in 0..1, what the network consumes.

Step 3 resizes the whole row strip, so where a person stands in the frame sets the sub-pixel
phase of the resampling, and step 4's integer column can flip by one near a tie: the output is
exact for OpenGait's own frames and odd-integer enlargements on the pixel grid, and otherwise
equal up to those two effects (figures: benchmarks/body_silhouettes.py). We keep both on
purpose: they are what the published GaitBase weights were trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from biofuse.modalities.gait.gaitbase import base_sil_cutting

__all__ = [
    "OPENGAIT_MIN_FOREGROUND_SUM",
    "OpenGaitPretreatment",
    "pretreat_sequence",
    "pretreat_silhouette",
    "to_model_input",
]

# OpenGait skips frames whose 0..255 pixel sum is <= 10000 (about 39 fully white pixels).
OPENGAIT_MIN_FOREGROUND_SUM = 10000


def _as_grey_mask(mask: np.ndarray) -> np.ndarray:
    """2-D uint8 in 0..255: OpenGait's thresholds assume 255 is foreground.

    Boolean masks and 0/1 masks (e.g. `np.unpackbits` output) are scaled to 0/255; otherwise a
    whole 0/1 person could fall under the 10000 pixel-sum threshold and be dropped.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a silhouette mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"silhouette values must lie in 0..255, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    if arr.size and arr.max() == 1:
        return arr * np.uint8(255)
    return arr


@dataclass(frozen=True)
class OpenGaitPretreatment:
    """The pretreatment as a value: call it on one mask, or `.sequence` on a track's masks.

    `size` is OpenGait's `img_size` (64 for every published GaitBase); `min_foreground_sum` is its
    empty-frame threshold, on 0..255 values, kept as a field so other frame sizes can tune it.
    """

    size: int = 64
    min_foreground_sum: int = OPENGAIT_MIN_FOREGROUND_SUM

    def __post_init__(self) -> None:
        if self.size < 2 or self.size % 2:
            raise ValueError(f"size must be an even number >= 2, got {self.size}")

    def __call__(self, mask: np.ndarray) -> np.ndarray | None:
        """(H, W) mask -> (size, size) uint8, or None where OpenGait would drop the frame."""
        img = _as_grey_mask(mask)
        if int(img.sum(dtype=np.int64)) <= self.min_foreground_sum:
            return None

        rows = np.flatnonzero(img.any(axis=1))
        img = img[rows[0] : rows[-1] + 1, :]

        # Height decides the scale: people are taller than wide, so height 64 fits them all.
        width = max(1, int(self.size * img.shape[1] / img.shape[0]))
        img = cv2.resize(img, (width, self.size), interpolation=cv2.INTER_CUBIC)

        column_mass = img.sum(axis=0, dtype=np.int64)
        total = int(column_mass.sum())
        above_half = np.flatnonzero(np.cumsum(column_mass) > total / 2)
        # Bicubic ringing can clip a tiny mask to nothing; OpenGait also rejects a centre at 0.
        if above_half.size == 0 or above_half[0] == 0:
            return None
        x_center = int(above_half[0])

        half = self.size // 2
        padded = np.pad(img, ((0, 0), (half, half)))
        # Padded column x_center is original column x_center - half: the window is centred.
        return np.ascontiguousarray(padded[:, x_center : x_center + self.size])

    def sequence(self, masks: Iterable[np.ndarray]) -> np.ndarray:
        """Masks of one track -> (T, size, size) uint8 of the kept frames (T may be 0)."""
        kept = [out for out in (self(m) for m in masks) if out is not None]
        if not kept:
            return np.zeros((0, self.size, self.size), dtype=np.uint8)
        return np.stack(kept)


OPENGAIT_PRETREATMENT = OpenGaitPretreatment()


def pretreat_silhouette(mask: np.ndarray) -> np.ndarray | None:
    """One mask -> OpenGait's 64x64 uint8 frame, or None if OpenGait would drop it."""
    return OPENGAIT_PRETREATMENT(mask)


def pretreat_sequence(masks: Iterable[np.ndarray]) -> np.ndarray:
    """A track's masks ((T, H, W) array or any iterable of (H, W)) -> (T', 64, 64) uint8."""
    return OPENGAIT_PRETREATMENT.sequence(masks)


def to_model_input(seq: np.ndarray) -> np.ndarray:
    """(T, 64, 64) uint8 pretreated frames -> (T, 64, 44) float32 in 0..1 for GaitBase.

    Exactly OpenGait's `BaseSilCuttingTransform` (10 columns cut from each side, / 255), which
    `base_sil_cutting` already implements; one code path keeps training and inference aligned.
    """
    seq = np.asarray(seq)
    if seq.ndim != 3 or seq.shape[1:] != (64, 64):
        raise ValueError(f"expected pretreated frames (T, 64, 64), got shape {seq.shape}")
    return base_sil_cutting(seq)
