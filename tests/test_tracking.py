"""IoU linking of face boxes across frames."""

from __future__ import annotations

import numpy as np

from biofuse.tracking import iou_matrix, link_detections, overlap_s


def test_iou_of_hand_worked_boxes() -> None:
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    # overlap 5x10=50, union 100+100-50=150 -> 1/3; disjoint -> 0; identical -> 1
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 3, 0.0, 1.0]])


def test_two_people_crossing_slowly_keep_their_tracks() -> None:
    frames = []
    for i in range(10):
        t = i * 0.2
        left = (10 + 2 * i, 10, 60 + 2 * i, 60)
        right = (200 - 2 * i, 12, 250 - 2 * i, 62)
        frames.append((t, [right, left] if i % 2 else [left, right]))  # detector order varies
    tracks = link_detections(frames, iou_threshold=0.3)
    assert len(tracks) == 2
    for track in tracks:
        xs = [b[0] for b in track.boxes]
        assert len(track) == 10
        assert all(abs(x1 - x0) == 2 for x0, x1 in zip(xs, xs[1:]))  # never swapped


def test_a_gap_longer_than_max_gap_starts_a_new_track() -> None:
    box = (0, 0, 50, 50)
    frames = [(0.0, [box]), (0.2, [box]), (3.0, [box]), (3.2, [box])]
    assert len(link_detections(frames, max_gap_s=1.0)) == 2
    assert len(link_detections(frames, max_gap_s=5.0)) == 1


def test_single_frame_detections_are_dropped_as_noise() -> None:
    frames = [(0.0, [(0, 0, 50, 50)]), (0.2, [(0, 0, 50, 50), (300, 300, 340, 340)]), (0.4, [])]
    tracks = link_detections(frames, min_detections=2)
    assert len(tracks) == 1 and len(tracks[0]) == 2


def test_overlap_seconds() -> None:
    assert overlap_s(0, 2, 1, 5) == 1
    assert overlap_s(0, 1, 2, 3) == 0
