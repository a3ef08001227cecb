"""Where MTCNN's five points fall on dlib's 150-px chips: mtcnn_detect.DLIB_CHIP_POINTS5.

MTCNN and dlib's HOG + 5-point predictor on the same lfw-dev photo (every 5th, first 300);
dlib's chip transform is read back from a chip cut out of a coordinate image (pixel = its own
x, y), and MTCNN's points are mapped through it. Prints mean, median and spread per point.

    .venv/bin/python benchmarks/mtcnn_chip_points.py
"""

import sys
import tempfile
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biofuse.modalities.face.dlib_face import DlibFaceDetector  # noqa: E402
from biofuse.modalities.face.mtcnn_detect import MtcnnFaceDetector  # noqa: E402

from biofuse.config import shared_data_dir  # noqa: E402
from biofuse.registry import Registry  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    paths = sorted((shared_data_dir() / "lfw-dev" / "images").glob("*/*.jpg"))[::5][:300]
    model = Registry(Path(tempfile.mkdtemp())).resolve("dlib-resnet")
    hog = DlibFaceDetector(model)
    hog.prepare()
    predictor = dlib.shape_predictor(str(model.paths["landmarks5"]))
    mtcnn = MtcnnFaceDetector(None, min_face_px=40, chip_alignment="none")
    mtcnn.prepare()
    yy, xx = np.mgrid[0:250, 0:250]
    coord = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)
    cy, cx = np.mgrid[0:150, 0:150]
    points = []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        if rgb.shape[:2] != (250, 250):
            continue
        (hog_faces,) = hog.detect([rgb])
        (mtcnn_faces,) = mtcnn.detect([rgb])
        if not hog_faces or not mtcnn_faces:
            continue
        x0, y0, x1, y1 = (round(v) for v in max(hog_faces, key=lambda f: f.area).box)
        shape = predictor(rgb, dlib.rectangle(x0, y0, x1, y1))
        src = dlib.get_face_chip(coord, shape, size=150, padding=0.25).astype(np.float64)
        ok = (src[..., :2] > 2).all(-1) & (src[..., :2] < 247).all(-1)
        a = np.stack([src[..., 0][ok], src[..., 1][ok], np.ones(ok.sum())], 1)  # image -> chip
        coef, *_ = np.linalg.lstsq(a, np.stack([cx[ok], cy[ok]], 1).astype(np.float64), rcond=None)
        face = max(mtcnn_faces, key=lambda f: f.box[2] - f.box[0])
        points.append(np.c_[face.points5, np.ones(5)] @ coef)
    pts = np.array(points)
    print(f"{len(pts)} photos")
    for label, value in (("mean", pts.mean(0)), ("median", np.median(pts, 0)), ("std", pts.std(0))):
        print(label, np.round(value, 1).tolist())


if __name__ == "__main__":
    main()
