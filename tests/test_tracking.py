"""Linking detections across frames: ByteTrack-style person tracking, the same tracker for
faces, and plain IoU linking of the last box (the baseline)."""

from __future__ import annotations

import numpy as np
import pytest

from biofuse.tracking import (
    BoxKalman,
    ByteTrackParams,
    iou_matrix,
    link_detections,
    link_faces,
    mot_scores,
    overlap_s,
    track_persons,
)


def test_iou_of_hand_worked_boxes() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    # overlap 5x10=50, union 100+100-50=150 -> 1/3; disjoint -> 0; identical -> 1
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 0.0, 1.0]])


@pytest.mark.parametrize("link", [link_detections, link_faces])
def test_two_people_crossing_slowly_keep_their_tracks(link) -> None:
    frames = []
    for i in range(10):
        t = i * 0.2
        left = (10 + 2 * i, 10, 60 + 2 * i, 60)
        right = (200 - 2 * i, 12, 250 - 2 * i, 62)
        frames.append((t, [right, left] if i % 2 else [left, right]))  # detector order varies
    tracks = link(frames, iou_threshold=0.3)
    assert len(tracks) == 2
    for track in tracks:
        xs = [b[0] for b in track.boxes]
        assert len(track) == 10
        assert all(abs(x1 - x0) == 2 for x0, x1 in zip(xs, xs[1:]))  # never swapped


@pytest.mark.parametrize("link", [link_detections, link_faces])
def test_a_gap_longer_than_max_gap_starts_a_new_track(link) -> None:
    box = (0, 0, 50, 50)
    frames = [(0.0, [box]), (0.2, [box]), (3.0, [box]), (3.2, [box])]
    assert len(link(frames, max_gap_s=1.0)) == 2
    assert len(link(frames, max_gap_s=5.0)) == 1


@pytest.mark.parametrize("link", [link_detections, link_faces])
def test_single_frame_detections_are_dropped_as_noise(link) -> None:
    frames = [(0.0, [(0, 0, 50, 50)]), (0.2, [(0, 0, 50, 50), (300, 300, 340, 340)]), (0.4, [])]
    tracks = link(frames, min_detections=2)
    assert len(tracks) == 1 and len(tracks[0]) == 2


def test_a_face_missed_for_a_few_frames_while_moving_stays_one_track() -> None:
    # 5 fps (face_fps), a 60-px face moving 20 px per frame, missed for frames 6..9 (0.8 s,
    # under the 1 s gap): it comes back 100 px from its last box, where the motion model
    # expects it. Issue 18 item 14: linking the last box split such a face in two.
    face = [(20 * i, 100, 20 * i + 60, 160) for i in range(16)]
    frames = [(i / 5, [] if 6 <= i <= 9 else [face[i]]) for i in range(16)]
    tracks = link_faces(frames)
    assert len(tracks) == 1 and len(tracks[0]) == 12
    assert len(link_detections(frames)) == 2  # the old linker splits it


def test_a_face_that_speeds_up_stays_one_track() -> None:
    # a 60-px face at 5 fps, 2 px per frame faster each frame up to 40 px per frame, where
    # two successive boxes overlap by IoU 0.2 < 0.3: the motion model follows the speed
    x, boxes = 0.0, []
    for i in range(24):
        boxes.append((x, 100.0, x + 60, 160.0))
        x += min(2.0 * (i + 1), 40.0)
    frames = [(i / 5, [b]) for i, b in enumerate(boxes)]
    tracks = link_faces(frames)
    assert len(tracks) == 1 and len(tracks[0]) == 24
    # the old linker loses it at full speed: the rest are single detections, dropped
    assert [len(t) for t in link_detections(frames)] == [17]


def test_overlap_seconds() -> None:
    assert overlap_s(0, 2, 1, 5) == 1
    assert overlap_s(0, 1, 2, 3) == 0


# --- ByteTrack-style person tracking ------------------------------------------------------


def _box(cx: float, cy: float, w: float = 40, h: float = 100) -> tuple[float, ...]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _frames(people: list[list[tuple | None]], scores: list[list[float]] | None = None) -> list:
    """[(time, boxes, scores)] at 10 fps from per-person box lists (None: not detected)."""
    out = []
    for i in range(len(people[0])):
        boxes, sc = [], []
        for p, track in enumerate(people):
            if track[i] is not None:
                boxes.append(track[i])
                sc.append(scores[p][i] if scores else 2.0)
        out.append((i / 10, np.asarray(boxes, float).reshape(-1, 4), np.asarray(sc, float)))
    return out


def test_people_crossing_keep_their_identities_through_the_occlusion() -> None:
    # A walks right and B left at 12 px per frame on nearly the same row; B is hidden behind A
    # for frames 9..11. After it, B's last box sits where A now is: linking the last box swaps
    # them, the constant-velocity prediction does not.
    a = [_box(40 + 12 * i, 200) for i in range(20)]
    b = [_box(280 - 12 * i, 204) if not 9 <= i <= 11 else None for i in range(20)]
    frames = _frames([a, b])
    frames = [(t, bx[::-1], sc) if i % 2 else (t, bx, sc) for i, (t, bx, sc) in enumerate(frames)]
    tracks = track_persons(frames)
    assert sorted(len(t) for t in tracks) == [17, 20]
    for track in tracks:
        steps = np.diff([bx[0] for bx in track.boxes])
        assert np.all(steps > 0) or np.all(steps < 0)  # one direction: never swapped
    linked = link_detections([(t, [tuple(x) for x in bx]) for t, bx, _ in frames])
    swapped = [t for t in linked if len(set(np.sign(np.diff([x[0] for x in t.boxes])))) > 1]
    assert swapped  # the case really needs the motion model


def test_motion_prediction_bridges_an_occlusion_the_last_box_cannot() -> None:
    # 15 px per frame, hidden for frames 8..12: on reappearing the person is 75 px
    # from the last box (no overlap) but where the constant-velocity model expects
    person = [_box(50 + 15 * i, 200) if not 8 <= i <= 12 else None for i in range(20)]
    frames = _frames([person])
    tracks = track_persons(frames, ByteTrackParams(max_age_s=1.0))
    assert len(tracks) == 1 and len(tracks[0]) == 15
    # plain IoU linking of the last box splits it in two
    assert len(link_detections([(t, [tuple(b) for b in bx]) for t, bx, _ in frames])) == 2
    # a gap longer than max_age ends the track
    assert len(track_persons(frames, ByteTrackParams(max_age_s=0.3))) == 2


def test_low_confidence_detections_keep_a_track_alive_but_never_start_one() -> None:
    person = [_box(100 + 5 * i, 200) for i in range(15)]
    weak = [2.0] * 5 + [0.1] * 5 + [2.0] * 5  # half hidden in the middle: the detector is unsure
    ghost = [_box(600, 300)] * 15  # a steady low-score false detection elsewhere
    frames = _frames([person, ghost], [weak, [0.1] * 15])
    tracks = track_persons(frames, ByteTrackParams(high_score=0.5, low_score=0.0))
    assert len(tracks) == 1
    assert len(tracks[0]) == 15 and min(tracks[0].scores) == 0.1  # the weak ones were taken
    # one-stage matching (weak detections dropped) loses the middle five
    one_stage = track_persons(frames, ByteTrackParams(high_score=0.5, low_score=0.5))
    assert [len(t) for t in one_stage] == [10]


def test_a_track_is_born_after_min_hits_in_a_row() -> None:
    blip = [_box(300, 300) if i in (3, 4) else None for i in range(10)]
    frames = _frames([blip])
    assert track_persons(frames, ByteTrackParams(min_hits=3)) == []
    born = track_persons(frames, ByteTrackParams(min_hits=2))
    assert len(born) == 1 and [f for f, _ in born[0].members] == [3, 4]


def test_kalman_learns_a_constant_velocity() -> None:
    kalman = BoxKalman(_box(0, 100))
    for i in range(1, 15):
        kalman.predict(0.1)
        kalman.update(_box(20 * i, 100))  # 200 px per second
    kalman.predict(0.1)
    np.testing.assert_allclose(kalman.box, _box(300, 100), atol=2.0)


def test_mot_scores_count_an_identity_switch() -> None:
    a0, a1, b = (0, 0, 10, 20), (2, 0, 12, 20), (50, 0, 60, 20)
    truth = [(0, 1, a0), (0, 2, b), (1, 1, a1), (1, 2, b)]
    perfect = [(0, 7, a0), (0, 8, b), (1, 7, a1), (1, 8, b)]
    switched = [(0, 7, a0), (0, 8, b), (1, 9, a1), (1, 8, b)]  # track 7 lost, 9 takes over
    missed = [(0, 7, a0), (1, 7, a1)]
    assert mot_scores(truth, perfect)["mota"] == 1.0
    s = mot_scores(truth, switched)
    assert s["num_switches"] == 1 and abs(s["mota"] - 0.75) < 1e-9  # 1 - 1/4
    assert abs(s["idf1"] - 0.75) < 1e-9  # 3 of 4 ids agree on the best one-to-one mapping
    m = mot_scores(truth, missed)
    assert m["num_misses"] == 2 and abs(m["mota"] - 0.5) < 1e-9
