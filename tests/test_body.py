"""Body modality on real video: silhouettes and pose for a person track, body-shape embeddings.

The track is the man walking right from the lamp post at the start of the pedestrian video:
OpenCV's HOG people detector found him in frames 0, 6 and 12 (boxes below); the frames between
use linearly interpolated boxes, as a tracker would give.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from biofuse.modalities.base import Extractor
from biofuse.modalities.body.anthropometric import (
    EMBEDDED_FEATURES,
    FEATURES,
    L_ANKLE,
    L_EAR,
    NOSE,
    R_ANKLE,
    R_EAR,
    REFERENCE_RATIOS,
    AnthropometricBodyExtractor,
    body_proportions,
    proportions_to_embedding,
    segment_lengths,
    track_pose,
    weighted_median,
)
from biofuse.modalities.body.silhouettes import (
    PersonSegmenter,
    main_blob,
    padded_crop,
    person_mask,
    track_silhouettes,
)
from biofuse.modalities.items import PoseSequence

from biofuse.config import Settings
from biofuse.registry import Registry

pytest.importorskip("mediapipe")

HOG_BOXES = {0: (232, 190, 305, 335), 6: (270, 186, 341, 328), 12: (310, 176, 378, 313)}
TRACK_LEN = 13


def track_box(i: int) -> tuple[float, ...]:
    a, b = (0, 6) if i <= 6 else (6, 12)
    t = (i - a) / (b - a)
    return tuple((1 - t) * np.array(HOG_BOXES[a]) + t * np.array(HOG_BOXES[b]))


@pytest.fixture(scope="module")
def video_frames(shared_data: Path) -> list[np.ndarray]:
    """The first 13 frames (the track) plus every 16th frame to 795 (for a median background)."""
    path = shared_data / "video" / "opencv_vtest_pedestrians.avi"
    if not path.is_file():
        pytest.skip(f"pedestrian video not found at {path}")
    capture = cv2.VideoCapture(str(path))
    frames = []
    for i in range(795):
        ok, bgr = capture.read()
        if not ok:
            break
        if i < TRACK_LEN or i % 16 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


@pytest.fixture(scope="module")
def track(video_frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[float, ...]]]:
    return video_frames[:TRACK_LEN], [track_box(i) for i in range(TRACK_LEN)]


# -- silhouettes ---------------------------------------------------------------------------------


def test_padded_crop_grows_the_box_and_stays_in_the_frame() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    crop, origin = padded_crop(frame, (50, 20, 70, 60), pad=0.25)  # 10 px margin
    assert origin == (40, 10) and crop.shape == (60, 40, 3)
    crop, origin = padded_crop(frame, (-30, 80, 10, 140), pad=0.0)
    assert origin == (0, 80) and crop.shape == (20, 10, 3)
    assert padded_crop(frame, (300, 20, 400, 60), pad=0.0) is None


def test_main_blob_keeps_the_tracked_person_not_a_bigger_neighbour() -> None:
    mask = np.zeros((100, 100), bool)
    mask[10:90, 5:40] = True  # neighbour, larger, mostly outside the box
    mask[30:80, 60:75] = True  # the tracked person, inside the box
    kept = main_blob(mask, (50, 20, 90, 95))
    assert kept[50, 65] and not kept[50, 20]


def test_person_mask_agrees_with_background_subtraction(
    video_frames: list[np.ndarray], track: tuple[list[np.ndarray], list[tuple[float, ...]]]
) -> None:
    """The fixed camera gives an independent reference: the median of frames over 80 s is the
    empty street, and pixels far from it are foreground. Both MediaPipe segmenters agree with it
    (measured IoU 0.81-0.90 per frame on this track)."""
    background = np.median(np.stack(video_frames[TRACK_LEN:]), axis=0).astype(np.int16)
    frames, boxes = track
    for method in ("pose", "selfie"):
        segmenter = PersonSegmenter(method)
        for i in (0, 6, 12):
            found = person_mask(frames[i], boxes[i], segmenter)
            assert found is not None
            mask, confidence = found
            crop, (ox, oy) = padded_crop(frames[i], boxes[i])
            assert mask.shape == crop.shape[:2] and set(np.unique(mask)) <= {0, 255}
            assert 0.5 < confidence <= 1.0
            ref = background[oy : oy + crop.shape[0], ox : ox + crop.shape[1]]
            moved = np.abs(crop.astype(np.int16) - ref).max(axis=2) > 30
            moved = cv2.morphologyEx(moved.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3)))
            fg, moved = mask > 0, moved > 0
            iou = (fg & moved).sum() / (fg | moved).sum()
            assert iou > 0.75, (method, i, iou)
        segmenter.close()


def test_track_silhouettes_are_opengait_frames(
    track: tuple[list[np.ndarray], list[tuple[float, ...]]],
) -> None:
    frames, boxes = track
    seq = track_silhouettes("vtest#1", frames, boxes, method="selfie")
    assert seq is not None and seq.key == "vtest#1"
    assert seq.frames.shape == (TRACK_LEN, 64, 64) and seq.frames.dtype == np.uint8
    assert 0.5 < seq.quality <= 1.0
    for sil in seq.frames:
        rows = np.flatnonzero((sil >= 128).any(axis=1))
        assert rows[0] <= 1 and rows[-1] >= 62  # height-normalised to 64
        mass = sil.sum(axis=0, dtype=np.int64)
        assert np.flatnonzero(np.cumsum(mass) > mass.sum() / 2)[0] == 32  # OpenGait's centre
        # A walker seen from above-side: taller than wide.
        cols = np.flatnonzero((sil >= 128).any(axis=0))
        assert 8 <= cols[-1] - cols[0] + 1 <= 40


def test_track_silhouettes_without_a_person_is_none() -> None:
    grass = np.full((200, 200, 3), (60, 140, 50), np.uint8)
    assert track_silhouettes("empty", [grass] * 3, [(50, 20, 100, 180)] * 3) is None
    assert track_silhouettes("none", [], []) is None
    with pytest.raises(ValueError, match="2 frames but 1 boxes"):
        track_silhouettes("bad", [grass, grass], [(0, 0, 10, 10)])


# -- pose and proportions ------------------------------------------------------------------------


def standing_skeleton(scale: float = 1.0, dx: float = 0.0) -> np.ndarray:
    """(33, 3) keypoints of a symmetric upright figure with known segment lengths, all visible."""
    kp = np.zeros((33, 3), np.float32)
    kp[:, 2] = 1.0
    pts = {
        NOSE: (0, 0),
        7: (-6, -2),  # ears
        8: (6, -2),
        11: (-20, 15),  # shoulders
        12: (20, 15),
        13: (-22, 45),  # elbows
        14: (22, 45),
        15: (-23, 70),  # wrists
        16: (23, 70),
        23: (-15, 65),  # hips
        24: (15, 65),
        25: (-15, 110),  # knees
        26: (15, 110),
        27: (-15, 155),  # ankles
        28: (15, 155),
        29: (-17, 160),  # heels
        30: (17, 160),
        31: (-5, 162),  # toes
        32: (5, 162),
    }
    for index, (x, y) in pts.items():
        kp[index, :2] = (x * scale + dx, y * scale)
    return kp


def test_segment_lengths_of_a_known_skeleton() -> None:
    lengths, weights = segment_lengths(standing_skeleton()[None])
    got = dict(zip(FEATURES, lengths[0]))
    assert got["head_neck"] == pytest.approx(15.0)
    assert got["torso"] == pytest.approx(50.0)
    assert got["thigh"] == pytest.approx(45.0) and got["shank"] == pytest.approx(45.0)
    assert got["upper_arm"] == pytest.approx(np.hypot(2, 30))
    assert got["shoulder_width"] == pytest.approx(40.0) and got["hip_width"] == pytest.approx(30.0)
    assert got["head_width"] == pytest.approx(12.0)
    np.testing.assert_array_equal(weights, 1.0)


def test_proportions_ignore_scale_position_and_a_bad_frame() -> None:
    base = body_proportions(standing_skeleton()[None])
    assert base is not None
    ratios, _ = base
    assert ratios[FEATURES.index("torso")] == pytest.approx(50 / 155)  # skeletal height 155
    frames = [standing_skeleton(s, dx) for s, dx in [(0.5, 10), (1.3, 300), (2.0, -50)]]
    wild = standing_skeleton()
    wild[13:17, 1] += 80  # one frame with absurd arms
    found = body_proportions(np.stack(frames + [wild]))
    assert found is not None
    np.testing.assert_allclose(found[0], ratios, rtol=1e-5)  # the median ignores the wild frame


def test_invisible_landmarks_do_not_count() -> None:
    hidden = standing_skeleton()
    hidden[[25, 27], 2] = 0.1  # left knee and ankle occluded: right leg alone gives the legs
    hidden[[25, 27], 1] += 40  # ... and their positions are garbage
    found = body_proportions(np.stack([hidden, standing_skeleton()]))
    assert found is not None
    ref = body_proportions(standing_skeleton()[None])
    assert ref is not None
    np.testing.assert_allclose(found[0], ref[0], rtol=1e-5)
    earless = standing_skeleton()
    earless[[L_EAR, R_EAR], 2] = 0.0  # head width never seen: NaN, the descriptor still exists
    found = body_proportions(earless[None])
    assert found is not None and np.isnan(found[0][FEATURES.index("head_width")])
    assert np.isfinite(proportions_to_embedding(found[0])).all()
    legless = standing_skeleton()
    legless[25:29, 2] = 0.0
    assert body_proportions(legless[None]) is None


def test_quality_grows_with_frames_and_visibility() -> None:
    one = body_proportions(standing_skeleton()[None])
    ten = body_proportions(np.stack([standing_skeleton()] * 10))
    dim = standing_skeleton()
    dim[:, 2] = 0.6
    faint = body_proportions(np.stack([dim] * 10))
    assert one is not None and ten is not None and faint is not None
    assert one[1] == pytest.approx(0.1) and ten[1] == pytest.approx(1.0)
    assert faint[1] == pytest.approx(0.6)


def test_weighted_median() -> None:
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([1.0, 1.0, 1.0])) == 2.0
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([1.0, 1.0, 5.0])) == 100.0


def test_embedding_is_the_unit_direction_away_from_the_average_adult() -> None:
    longer_legs = REFERENCE_RATIOS.copy()
    longer_legs[FEATURES.index("shank")] *= 1.2
    longer_legs[FEATURES.index("hip_width")] *= 3  # widths are not embedded: view-dependent
    vec = proportions_to_embedding(longer_legs)
    assert vec.shape == (len(EMBEDDED_FEATURES),)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    assert vec[EMBEDDED_FEATURES.index("shank")] == pytest.approx(1.0, abs=1e-6)


def test_track_pose_on_real_video_puts_keypoints_on_the_person(
    track: tuple[list[np.ndarray], list[tuple[float, ...]]],
) -> None:
    frames, boxes = track
    seq = track_pose("vtest#1", frames, boxes)
    assert seq is not None and seq.keypoints.shape == (TRACK_LEN, 33, 3)
    np.testing.assert_allclose(seq.box_heights, [b[3] - b[1] for b in boxes], rtol=1e-6)
    for kp, (x0, y0, x1, y1) in zip(seq.keypoints, boxes):
        # frame pixels, inside the detector box; head above ankles; visible
        assert (kp[[NOSE, L_ANKLE, R_ANKLE], 0] > x0).all() and (kp[:, 0] < x1).all()
        assert y0 < kp[NOSE, 1] < kp[L_ANKLE, 1] < y1 and kp[R_ANKLE, 1] < y1
        assert kp[NOSE, 2] > 0.5
    few = track_pose("vtest#1", frames, boxes, max_frames=4)
    assert few is not None
    np.testing.assert_array_equal(few.keypoints, seq.keypoints[[0, 4, 8, 12]])
    found = body_proportions(seq.keypoints)
    assert found is not None
    # A real adult's 2-D proportions sit near the textbook ones (within a factor of 2).
    ratios, quality = found
    assert quality > 0.5
    assert (np.abs(np.log(ratios[:6] / REFERENCE_RATIOS[:6])) < np.log(2)).all(), ratios


def test_extractor_through_the_registry_and_the_model_factory(
    tmp_path: Path, track: tuple[list[np.ndarray], list[tuple[float, ...]]]
) -> None:
    resolved = Registry(tmp_path / "models").resolve("mediapipe-pose-anthropometric")
    assert set(resolved.paths) == {"detector", "landmarks"}
    assert all(p.is_file() and p.suffix == ".tflite" for p in resolved.paths.values())
    extractor = AnthropometricBodyExtractor(resolved)
    assert isinstance(extractor, Extractor)
    assert extractor.model_id.startswith("mediapipe-pose-anthropometric-")
    frames, boxes = track
    seq = track_pose("vtest#1", frames, boxes)
    assert seq is not None
    empty = PoseSequence("nobody", np.zeros((0, 33, 3), np.float32), np.zeros(0, np.float32))
    out = extractor.embed([seq, empty])
    assert out.keys == ["vtest#1"] and out.vectors.shape == (1, len(EMBEDDED_FEATURES))
    assert np.linalg.norm(out.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    # The first and second halves of one walk give nearby descriptors.
    halves = extractor.embed(
        [
            PoseSequence("a", seq.keypoints[:6], seq.box_heights[:6]),
            PoseSequence("b", seq.keypoints[6:], seq.box_heights[6:]),
        ]
    )
    assert float(halves.vectors[0] @ halves.vectors[1]) > 0.5

    from biofuse.flows.models import build_model

    settings = Settings(home=tmp_path / "home")
    assert settings.body_model == "mediapipe-pose-anthropometric"
    body = build_model("body", settings)
    assert body.model_id == extractor.model_id and body.dim == len(EMBEDDED_FEATURES) == 5
    np.testing.assert_array_equal(body.embed([seq]).vectors, out.vectors)
