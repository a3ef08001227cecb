"""The items person-track extractors consume, shared by the tracker (producer) and the models.

A person track yields one `SilhouetteSequence` (gait) and one `PoseSequence` (body shape);
extractors turn a batch of them into `Embeddings` keyed by `key` (the track key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SilhouetteSequence:
    """A track's silhouettes after OpenGait pretreatment: (T, 64, 64) uint8, 0 or 255."""

    key: str
    frames: np.ndarray
    quality: float = 1.0  # of the segmentation (e.g. mean mask confidence), 0..1


@dataclass(frozen=True)
class PoseSequence:
    """A track's 2-D pose per frame: (T, K, 3) float32 of x, y (pixels) and visibility 0..1.

    K = 33 in MediaPipe Pose's landmark order.
    """

    key: str
    keypoints: np.ndarray
    box_heights: np.ndarray  # (T,) person box height in pixels, for the scale of each frame
