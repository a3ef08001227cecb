"""Face modality: detection, alignment, embedding and per-track templates.

The offline default is dlib (HOG detector, 5-point alignment, ResNet 128-d), shipped in
PyPI packages so it runs with no download. AdaFace IR-18/50/101 (adaface.py) runs on the
same detector with 68-point landmarks aligned onto the ArcFace template (align.py) once the
user has added an official checkpoint (`biofuse models add adaface-irN FILE.ckpt`).
"""

from biofuse.modalities.face.dlib_face import (
    DLIB_SAME_PERSON_COS,
    DlibFaceDetector,
    DlibFaceEmbedder,
    FaceChip,
    FaceDetection,
    aggregate_track,
    face_quality,
    largest_face,
    track_inliers,
)
from biofuse.modalities.face.quality import adaface_quality, same_person_cos

__all__ = [
    "DLIB_SAME_PERSON_COS",
    "DlibFaceDetector",
    "DlibFaceEmbedder",
    "FaceChip",
    "FaceDetection",
    "adaface_quality",
    "aggregate_track",
    "face_quality",
    "largest_face",
    "same_person_cos",
    "track_inliers",
]
