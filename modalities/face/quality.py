"""Per-face quality for AdaFace rows, and each face model's same-person cosine.

A track template weights its frames by quality (`aggregate_track`), so the quality of one
face must fall when the face is small, when the detector is unsure and, for AdaFace, when
the network itself finds little identity in the chip. The formula, per face:

    quality = logistic(2 * detector_score) * min(1, inter_eye_px / 40)    # face_quality
              * min(1, feature_norm / sqrt(512))                          # AdaFace only

The first two factors are `face_quality` (dlib_face.py): 0.5 at the HOG detector's own
threshold, ~0.98 for a clear frontal face, and a linear discount below 40 px between the
eyes. The third is AdaFace's own quality signal: its output BatchNorm1d (no affine)
standardises each of the 512 features over the training set, so a typical training face has
a feature norm near sqrt(512) ~ 22.6, and AdaFace's margin is built on low norms meaning hard
(low-quality) faces. Norms at or above that level count fully; a face with half of it counts
half. The reference is derived from the architecture, not fitted: no official weights were
available to measure it (benchmarks/face_templates.py re-measures with weights present).
"""

from __future__ import annotations

import math

import numpy as np
from biofuse.modalities.face.dlib_face import face_quality

ADAFACE_NORM_REFERENCE = math.sqrt(512.0)


def same_person_cos(model: str) -> float:
    """The outlier threshold for a model name or a model id ("<name>-<sha12>"): the cosine above
    which two faces are probably one person, declared in the model's registry entry
    (`ModelSpec.same_person_cos`; dlib's measured on lfw-dev, AdaFace's not measured here)."""
    from biofuse.registry import spec_for

    value = spec_for(model).same_person_cos
    if value is None:
        raise KeyError(f"model {model!r} declares no same-person cosine")
    return value


def adaface_quality(
    detector_score: np.ndarray, inter_eye_px: np.ndarray, feature_norm: np.ndarray
) -> np.ndarray:
    """The module docstring's formula, one value in 0..1 per face."""
    score = np.asarray(detector_score, dtype=np.float64).reshape(-1)
    eyes = np.asarray(inter_eye_px, dtype=np.float64).reshape(-1)
    norm = np.asarray(feature_norm, dtype=np.float64).reshape(-1)
    if not (score.shape == eyes.shape == norm.shape):
        raise ValueError(
            f"one value per face needed: scores {score.shape}, eyes {eyes.shape}, "
            f"norms {norm.shape}"
        )
    base = np.array([face_quality(s, e) for s, e in zip(score, eyes)], dtype=np.float64)
    norm_term = np.clip(np.nan_to_num(norm, nan=0.0) / ADAFACE_NORM_REFERENCE, 0.0, 1.0)
    return (base * norm_term).astype(np.float32)
