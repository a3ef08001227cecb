"""MediaPipe 0.10.21's legacy solutions run in our numpy-2 venv.

mediapipe is installed with --no-deps because it declares numpy<2; these tests are the proof
that its compiled graphs and packaged models still work with numpy 2, on a real frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

mp = pytest.importorskip("mediapipe")

# The man standing left of the lamp post in vtest frame 0 (about 90 px tall), padded.
PERSON_BOX = (230, 200, 305, 325)  # x0, y0, x1, y1 in the 768x576 frame


@pytest.fixture(scope="module")
def pedestrian_frame(shared_data: Path) -> np.ndarray:
    path = shared_data / "video" / "opencv_vtest_pedestrians.avi"
    if not path.is_file():
        pytest.skip(f"pedestrian video not found at {path}")
    capture = cv2.VideoCapture(str(path))
    ok, bgr = capture.read()
    capture.release()
    assert ok, f"could not decode the first frame of {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_numpy_is_2_beside_mediapipe() -> None:
    assert int(np.__version__.split(".")[0]) >= 2
    assert mp.__version__ == "0.10.21"


def test_pose_finds_a_standing_person(pedestrian_frame: np.ndarray) -> None:
    x0, y0, x1, y1 = PERSON_BOX
    crop = np.ascontiguousarray(pedestrian_frame[y0:y1, x0:x1])
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        result = pose.process(crop)
    assert result.pose_landmarks is not None
    lm = result.pose_landmarks.landmark
    assert len(lm) == 33
    nose, l_ankle, r_ankle = lm[0], lm[27], lm[28]
    # Upright: the head is above both ankles and the body spans most of the crop's height.
    assert nose.y < l_ankle.y and nose.y < r_ankle.y
    assert max(l_ankle.y, r_ankle.y) - nose.y > 0.5
    assert nose.visibility > 0.5


def test_selfie_segmentation_mask_has_the_frames_size(pedestrian_frame: np.ndarray) -> None:
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        result = seg.process(pedestrian_frame)
    mask = result.segmentation_mask
    assert mask.shape == pedestrian_frame.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_pose_segmentation_covers_the_person(pedestrian_frame: np.ndarray) -> None:
    x0, y0, x1, y1 = PERSON_BOX
    crop = np.ascontiguousarray(pedestrian_frame[y0:y1, x0:x1])
    with mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, enable_segmentation=True
    ) as pose:
        result = pose.process(crop)
    mask = result.segmentation_mask
    assert mask is not None and mask.shape == crop.shape[:2]
    fg = mask > 0.5
    # A person, not the whole crop and not nothing: between 8% and 60% of the padded box.
    assert 0.08 < fg.mean() < 0.6, fg.mean()
    # Foreground is in the middle columns where the walker is, not at the crop's sides.
    cols = fg.sum(axis=0)
    assert cols[crop.shape[1] // 3 : 2 * crop.shape[1] // 3].sum() > 0.5 * cols.sum()
