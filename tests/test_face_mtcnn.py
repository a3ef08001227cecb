"""MTCNN, the default face detector: small faces in big frames, none in noise; HOG by setting."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from biofuse.flows.actors import actor_name
from biofuse.flows.models import FaceFrameAnalyzer
from biofuse.modalities.face.dlib_face import face_quality
from biofuse.modalities.face.mtcnn_detect import MtcnnFaceDetector, score_to_margin

from biofuse.config import load_settings
from biofuse.registry import Registry

LFW_FACE = (70.0, 70.0, 180.0, 180.0)  # where the face sits in a 250x250 lfw-dev photo


@pytest.fixture(scope="module")
def lfw(shared_data: Path) -> Path:
    root = shared_data / "lfw-dev"
    if not (root / "pairs.tsv").is_file():
        pytest.skip(f"lfw-dev not found at {root}")
    return root


@pytest.fixture(scope="module")
def mtcnn(tmp_path_factory: pytest.TempPathFactory) -> MtcnnFaceDetector:
    model = Registry(tmp_path_factory.mktemp("models")).resolve("dlib-resnet")
    detector = MtcnnFaceDetector(model, min_face_px=12)
    detector.prepare("cpu")
    return detector


def photo(lfw: Path, name: str, idx: int = 1) -> np.ndarray:
    path = lfw / "images" / name / f"{name}_{idx:04d}.jpg"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def noise_frame(seed: int) -> np.ndarray:
    """640x480 blurred noise: the background a distant face is pasted into."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2.0)


def pasted(rgb: np.ndarray, face_px: int, at: tuple[int, int], seed: int = 0):
    """The photo shrunk (INTER_AREA) so its face is `face_px` wide, pasted into a noise frame."""
    scale = face_px / (LFW_FACE[2] - LFW_FACE[0])
    side = round(rgb.shape[0] * scale)
    small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    frame = noise_frame(seed)
    x, y = at
    frame[y : y + side, x : x + side] = small
    box = tuple(v * scale for v in LFW_FACE)
    return frame, (x + box[0], y + box[1], x + box[2], y + box[3])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("name", ["Tony_Blair", "Laura_Bush"])
def test_finds_a_16px_face_in_a_640x480_frame(lfw: Path, mtcnn: MtcnnFaceDetector, name) -> None:
    frame, truth = pasted(photo(lfw, name), 16, at=(300, 200))
    (faces,) = mtcnn.detect([frame])
    best = max(faces, key=lambda f: iou(f.box, truth))
    assert iou(best.box, truth) >= 0.5, (best.box, truth)
    assert best.score > score_to_margin(0.9)  # a confident face, not a borderline blob
    assert best.points5.shape == (5, 2) and 3 < best.inter_eye_px < 12
    assert best.chip.shape == (150, 150, 3) and best.chip.dtype == np.uint8
    assert 0 < best.quality < 0.4  # a 16-px face is worth little to the embedder


def test_finds_nothing_on_noise_frames(mtcnn: MtcnnFaceDetector) -> None:
    frames = [noise_frame(seed) for seed in range(4)]
    assert mtcnn.detect(frames) == [[], [], [], []]
    assert mtcnn.detect([]) == []


def test_batch_of_mixed_sizes_answers_each_frame_in_order(
    lfw: Path, mtcnn: MtcnnFaceDetector
) -> None:
    """Frames of one size go through the cascade together; results stay in call order."""
    face = photo(lfw, "Tony_Blair")
    small, _ = pasted(face, 32, at=(100, 50))
    batch = [face, noise_frame(9), small, face]
    out = mtcnn.detect(batch)
    assert [len(f) >= 1 for f in out] == [True, False, True, True]
    (alone,) = mtcnn.detect([small])
    np.testing.assert_allclose(out[2][0].box, alone[0].box, atol=1e-3)
    np.testing.assert_allclose(out[0][0].box, out[3][0].box, atol=1e-3)
    # five points in face order: eyes above the nose, the nose above the mouth corners
    p = out[0][0].points5
    assert p[0, 0] < p[1, 0] and max(p[0, 1], p[1, 1]) < p[2, 1] < min(p[3, 1], p[4, 1])
    with pytest.raises(ValueError):
        mtcnn.detect([face.astype(np.float32)])


def test_score_is_a_margin_whose_quality_term_is_the_probability() -> None:
    for p in (0.7, 0.9, 0.999):
        assert 1 / (1 + math.exp(-2 * score_to_margin(p))) == pytest.approx(p, rel=1e-9)
        assert face_quality(score_to_margin(p), 40.0) == pytest.approx(p, rel=1e-9)
    assert math.isfinite(score_to_margin(1.0)) and math.isfinite(score_to_margin(0.0))


@pytest.mark.parametrize("detector", ["mtcnn", "hog"])
def test_face_detector_setting_picks_the_detector(tmp_path: Path, lfw: Path, detector) -> None:
    """mtcnn is the default; face_detector = "hog" gives dlib's HOG path as before."""
    settings = load_settings(home=tmp_path, face_detector=detector)
    assert load_settings(home=tmp_path).face_detector == "mtcnn"
    analyzer = FaceFrameAnalyzer(settings)
    analyzer.prepare("cpu")
    assert (
        type(analyzer.detector).__name__
        == {
            "mtcnn": "MtcnnFaceDetector",
            "hog": "DlibFaceDetector",
        }[detector]
    )
    face = photo(lfw, "Tony_Blair")
    (faces,) = analyzer.analyze([face])
    assert faces.vectors.shape == (1, 128) and faces.detector_score[0] > 0
    assert iou(tuple(faces.boxes[0]), LFW_FACE) > 0.4
    # the two detectors' rows describe the same person
    other = FaceFrameAnalyzer(
        load_settings(home=tmp_path, face_detector="hog" if detector == "mtcnn" else "mtcnn")
    )
    (again,) = other.analyze([face])
    assert float(faces.vectors[0] @ again.vectors[0]) > 0.93
    (small,) = analyzer.analyze([pasted(face, 16, at=(300, 200))[0]])
    assert (len(small.boxes) >= 1) == (detector == "mtcnn")  # HOG cannot see a 16-px face


def test_detector_settings_get_their_own_actor(tmp_path: Path) -> None:
    base = load_settings(home=tmp_path)
    names = {
        actor_name("face", base),
        actor_name("face", load_settings(home=tmp_path, face_detector="hog")),
        actor_name("face", load_settings(home=tmp_path, face_min_px=20)),
    }
    assert len(names) == 3


def test_quality_falls_with_face_size(lfw: Path, mtcnn: MtcnnFaceDetector) -> None:
    """The same face nearer and further: template weights (and quality fusion) trust it less."""
    face = photo(lfw, "Laura_Bush")
    quality = []
    for width in (112, 48, 24, 16):
        frame, truth = pasted(face, width, at=(200, 100))
        (faces,) = mtcnn.detect([frame])
        best = max(faces, key=lambda f: iou(f.box, truth))
        assert iou(best.box, truth) >= 0.5
        quality.append(best.quality)
    assert quality[0] > 0.9 and all(a > b for a, b in zip(quality, quality[1:])), quality
    assert quality[-1] < 0.25, quality
