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

from modalities.face.dlib_face import DLIB_SAME_PERSON_COS, face_quality

ADAFACE_NORM_REFERENCE = math.sqrt(512.0)

# Cosine above which two faces are probably one person, used to reject a track's intruder
# frames. dlib's is measured on lfw-dev (see dlib_face.py). AdaFace's is NOT measured here
# (no official weights on this machine): ArcFace-family models put LFW impostor pairs near
# cosine 0 and their verification thresholds near 0.3, so 0.3 is the starting point;
# re-measure with `benchmarks/lfw_pipeline.py` once weights are installed.
SAME_PERSON_COS: dict[str, float] = {
    "dlib-resnet": DLIB_SAME_PERSON_COS,
    "adaface-ir18": 0.3,
    "adaface-ir50": 0.3,
    "adaface-ir101": 0.3,
}


def same_person_cos(model: str) -> float:
    """The outlier threshold for a model name or a model id ("<name>-<sha12>")."""
    for name, value in SAME_PERSON_COS.items():
        if model == name or model.startswith(f"{name}-"):
            return value
    raise KeyError(f"no same-person cosine known for face model {model!r}")


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
