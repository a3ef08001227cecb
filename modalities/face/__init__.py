"""Face modality: detection, alignment, embedding and per-track templates.

The offline default is dlib (HOG detector, 5-point alignment, ResNet 128-d), shipped in
PyPI packages so it runs with no download.
"""

from modalities.face.dlib_face import (
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

__all__ = [
    "DLIB_SAME_PERSON_COS",
    "DlibFaceDetector",
    "DlibFaceEmbedder",
    "FaceChip",
    "FaceDetection",
    "aggregate_track",
    "face_quality",
    "largest_face",
    "track_inliers",
]
