"""Person detection + tracking on the pedestrian video: MOTA / IDF1, tracks per minute, speed.

Ground truth: tests/data/vtest_gt.csv, every 10th frame of frames 0..200 (20 s at 10 fps)
of ../shared/data/video/opencv_vtest_pedestrians.avi, drawn by hand (tests/data/README.md).
Tracks run on every frame at 10 fps and are scored with motmetrics (IoU >= 0.5) on the
annotated frames. Compared:

- detectors: OpenCV HOG people at three smallest-person heights (96 / 64 / 48 px, i.e. 1x,
  1.5x and 2x upscaling; 64 px is the default);
- trackers: ByteTrack-style (`track_persons`), the same with one-stage matching (low-score
  detections dropped), and plain IoU linking of the last box (`link_detections`);
- MediaPipe Pose (single-person, legacy `solutions.pose`) as a verifier of the default HOG
  boxes: each padded box crop goes through it, and a box whose landmarks (visibility-weighted,
  inside the box) reach 0.5 gains 1 on its score, else loses 1 (so it can only keep a track
  alive, never start one).

The default detector also runs on the whole video (79.5 s): tracks per minute, frames per
second of detector + tracker, and the detections of frames 0..200 are written to
tests/data/vtest_hog_detections.csv (the tracking test replays them). Detections are cached
under ~/.cache/biofuse-bench, keyed by the detector's settings.

Background subtraction (`biofuse.modalities.body.background`, the `person_detector` default on a
fixed camera) runs on the same span and on the whole video with OpenCV on one thread: MOTA,
IDF1, frames per second of the pass + tracker. Its foreground masks are compared with
MediaPipe selfie segmentation on the span's tracks: IoU of the OpenGait-pretreated 64x64
silhouettes of the same frames, and the cosine between each track's gait embedding
(gait-compact-casiab) from masks and from selfie, same track vs other tracks.

    nice -n 10 .venv/bin/python benchmarks/person_tracking.py
    nice -n 10 .venv/bin/python benchmarks/person_tracking.py --background-only  # keeps the
        # HOG rows of the last full run (results/person_tracking.json), ~1 min instead of ~20
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.modalities.body.person_detect import FramePersons, HogPersonDetector  # noqa: E402

from biofuse import media  # noqa: E402
from biofuse.config import shared_data_dir  # noqa: E402
from biofuse.tracking import (  # noqa: E402
    ByteTrackParams,
    LinkedTrack,
    link_detections,
    mot_scores,
    track_persons,
)

VIDEO = "video/opencv_vtest_pedestrians.avi"
FPS = 10.0
SPAN = 201  # frames 0..200 carry ground truth (every 10th)
GT = REPO / "tests" / "data" / "vtest_gt.csv"
DETECTIONS_CSV = REPO / "tests" / "data" / "vtest_hog_detections.csv"
RESULTS = REPO / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "biofuse-bench"
HEIGHTS = (96.0, 64.0, 48.0)  # smallest person the detector looks for
DEFAULT_UPSCALE = HogPersonDetector().upscale  # compared by upscale: the default's
PICTURE_FRAMES = (40, 90, 140, 190)

Truth = list[tuple[int, int, tuple[float, float, float, float]]]


def read_truth(path: Path = GT) -> Truth:
    with open(path, newline="") as handle:
        return [
            (int(r["frame"]), int(r["id"]), tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1")))
            for r in csv.DictReader(handle)
        ]


def read_detections(path: Path = DETECTIONS_CSV) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Recorded detections as the tracker's input: [(time, boxes, scores)] per frame."""
    rows: dict[int, list[list[float]]] = {}
    with open(path, newline="") as handle:
        for r in csv.DictReader(handle):
            rows.setdefault(int(r["frame"]), []).append(
                [float(r[k]) for k in ("x0", "y0", "x1", "y1", "score")]
            )
    out = []
    for frame in range(max(rows) + 1 if rows else 0):
        a = np.asarray(rows.get(frame, []), dtype=float).reshape(-1, 5)
        out.append((frame / FPS, a[:, :4], a[:, 4]))
    return out


def hypotheses(tracks: list[LinkedTrack]) -> Truth:
    """Track boxes on the annotated frames (every 10th) as (frame, track id, box) rows."""
    return [
        (frame, n, tuple(box))
        for n, track in enumerate(tracks)
        for (frame, _), box in zip(track.members, track.boxes)
        if frame % 10 == 0
    ]


def _cache_key(detector: HogPersonDetector, frames: int) -> str:
    settings = {k: v for k, v in vars(detector).items() if not k.startswith("_")}
    return hashlib.sha256(f"{sorted(settings.items())}{frames}".encode()).hexdigest()[:16]


def detect_video(
    detector: HogPersonDetector, max_frames: int | None
) -> tuple[list[FramePersons], float]:
    """Detections of every frame (up to max_frames) and the detector's seconds per frame."""
    n = max_frames or 0
    cache = CACHE / f"vtest_hog_{_cache_key(detector, n)}.npz"
    if cache.is_file():
        data = np.load(cache)
        counts = data["counts"]
        cuts = np.r_[0, np.cumsum(counts)]
        found = [
            FramePersons(data["boxes"][a:b], data["scores"][a:b])
            for a, b in zip(cuts[:-1], cuts[1:])
        ]
        return found, float(data["seconds_per_frame"])
    detector.prepare()
    found, spent = [], 0.0
    for frame in media.iter_frames(shared_data_dir() / VIDEO, FPS):
        if max_frames is not None and frame.index >= max_frames:
            break
        start = time.perf_counter()
        found.extend(detector.detect([frame.image]))
        spent += time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        counts=np.array([len(f.scores) for f in found]),
        boxes=np.concatenate([f.boxes for f in found]).reshape(-1, 4),
        scores=np.concatenate([f.scores for f in found]),
        seconds_per_frame=spent / len(found),
    )
    return found, spent / len(found)


def as_frames(found: list[FramePersons]) -> list[tuple[float, np.ndarray, np.ndarray]]:
    return [(i / FPS, f.boxes, f.scores) for i, f in enumerate(found)]


def run_trackers(frames: list[tuple[float, np.ndarray, np.ndarray]]) -> dict[str, list]:
    params = ByteTrackParams()
    one_stage = ByteTrackParams(low_score=params.high_score)
    iou_frames = [(t, [tuple(b) for b in bx[s >= params.high_score]]) for t, bx, s in frames]
    return {
        "bytetrack": track_persons(frames, params),
        "bytetrack-one-stage": track_persons(frames, one_stage),
        "iou-link": link_detections(iou_frames, iou_threshold=0.3, max_gap_s=1.0),
    }


def pose_confirmed(
    found: list[FramePersons], min_support: float = 0.5
) -> tuple[list[FramePersons], float]:
    """HOG boxes re-scored by MediaPipe Pose on their crops (see the module docstring), and the
    verifier's seconds per frame."""
    from biofuse.modalities.body.anthropometric import PoseEstimator

    cache = CACHE / f"vtest_pose_support_{len(found)}_{_boxes_digest(found)}.npz"
    if cache.is_file():
        data = np.load(cache)
        support, spent = list(data["support"]), float(data["seconds"])
        cuts = np.r_[0, np.cumsum([len(f.scores) for f in found])]
        per_frame = [np.asarray(support[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    else:
        estimator, per_frame, spent = PoseEstimator(), [], 0.0
        for frame in media.iter_frames(shared_data_dir() / VIDEO, FPS):
            if frame.index >= len(found):
                break
            h_img, w_img = frame.image.shape[:2]
            support, start = [], time.perf_counter()
            for x0, y0, x1, y1 in found[frame.index].boxes:
                h = y1 - y0
                cx0, cy0 = int(max(0, x0 - 0.3 * h)), int(max(0, y0 - 0.3 * h))
                cx1, cy1 = int(min(w_img, x1 + 0.3 * h)), int(min(h_img, y1 + 0.3 * h))
                points = estimator(frame.image[cy0:cy1, cx0:cx1])
                if points is None:
                    support.append(0.0)
                    continue
                x, y = points[:, 0] + cx0, points[:, 1] + cy0
                m = 0.2 * h
                inside = (x >= x0 - m) & (x <= x1 + m) & (y >= y0 - m) & (y <= y1 + m)
                support.append(float((points[:, 2] * inside).mean()))
            per_frame.append(np.asarray(support))
            spent += time.perf_counter() - start
        estimator.close()
        np.savez(cache, support=np.concatenate(per_frame), seconds=spent)
    rescored = [
        FramePersons(f.boxes, (f.scores + np.where(s >= min_support, 1.0, -1.0)).astype(np.float32))
        for f, s in zip(found, per_frame)
    ]
    return rescored, spent / len(found)


def _boxes_digest(found: list[FramePersons]) -> str:
    digest = hashlib.sha256()
    for f in found:
        digest.update(np.ascontiguousarray(f.boxes).tobytes())
    return digest.hexdigest()[:12]


def write_detections_csv(found: list[FramePersons]) -> None:
    with open(DETECTIONS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "x0", "y0", "x1", "y1", "score"])
        for frame, f in enumerate(found[:SPAN]):
            for box, score in zip(f.boxes, f.scores):
                writer.writerow([frame, *(f"{v:.1f}" for v in box), f"{score:.3f}"])


def draw_tracks(tracks: list[LinkedTrack], truth: Truth, path: Path) -> None:
    """A 2 x 2 sheet of annotated frames: track boxes and ids (colour), truth (thin white)."""
    import cv2

    images = {}
    for f in media.iter_frames(shared_data_dir() / VIDEO, FPS):
        if f.index in PICTURE_FRAMES:
            images[f.index] = f.image
        if f.index >= max(PICTURE_FRAMES):
            break
    palette = np.random.default_rng(7).integers(60, 255, size=(len(tracks) + 1, 3))
    tiles = []
    for frame in PICTURE_FRAMES:
        image = cv2.cvtColor(images[frame], cv2.COLOR_RGB2BGR)
        for f, _, box in truth:
            if f == frame:
                x0, y0, x1, y1 = map(int, box)
                cv2.rectangle(image, (x0, y0), (x1, y1), (255, 255, 255), 1)
        for n, track in enumerate(tracks):
            for (f, _), box in zip(track.members, track.boxes):
                if f == frame:
                    x0, y0, x1, y1 = map(int, box)
                    colour = tuple(int(c) for c in palette[n])
                    cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
                    cv2.putText(image, str(n), (x0, y0 - 4), 0, 0.9, colour, 2)
        cv2.putText(image, f"frame {frame} ({frame / FPS:.0f} s)", (10, 560), 0, 0.8, (0, 0, 0), 4)
        cv2.putText(
            image, f"frame {frame} ({frame / FPS:.0f} s)", (10, 560), 0, 0.8, (255, 255, 255), 2
        )
        tiles.append(image)
    sheet = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    sheet = cv2.resize(sheet, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def background_video(max_frames: int | None) -> tuple[list[FramePersons], float, int]:
    """Background-pass people of every frame (up to max_frames), its seconds per frame on one
    OpenCV thread, and the frames it handed to HOG (none expected: a fixed camera)."""
    import cv2
    from biofuse.modalities.body.background import BackgroundPersonPass

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    background = BackgroundPersonPass()
    decided, spent = [], 0.0
    try:
        for frame in media.iter_frames(shared_data_dir() / VIDEO, FPS):
            if max_frames is not None and frame.index >= max_frames:
                break
            start = time.perf_counter()
            decided.extend(background.feed(frame.time_s, frame.image))
            spent += time.perf_counter() - start
        start = time.perf_counter()
        decided.extend(background.finish())
        spent += time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads)
    empty = FramePersons(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    found = [people if people is not None else empty for _, _, people in decided]
    return found, spent / len(found), background.frames_fallback


def mask_vs_selfie(found: list[FramePersons], tracks: list[LinkedTrack]) -> dict[str, object]:
    """Silhouette IoU (pretreated 64x64) of foreground masks vs selfie segmentation on the same
    frames of the span's tracks, and gait embeddings of both per track."""
    from biofuse.flows.models import GaitEmbedder
    from biofuse.modalities.body.silhouettes import PersonSegmenter, mask_silhouettes, person_mask
    from biofuse.modalities.gait.silhouette import pretreat_silhouette
    from biofuse.modalities.items import SilhouetteSequence

    from biofuse.config import Settings

    images = {}
    for frame in media.iter_frames(shared_data_dir() / VIDEO, FPS):
        if frame.index >= len(found):
            break
        images[frame.index] = frame.image
    segmenter = PersonSegmenter("selfie")
    ious: list[float] = []
    from_masks, from_selfie = [], []
    selfie_s = 0.0
    for n, track in enumerate(tracks):
        sf = []
        for f, d in track.members:
            mask = found[f].masks[d] if found[f].masks else None
            a = pretreat_silhouette(mask.unpack()) if mask is not None else None
            start = time.perf_counter()
            cut = person_mask(images[f], found[f].boxes[d], segmenter)
            selfie_s += time.perf_counter() - start
            b = pretreat_silhouette(cut[0]) if cut is not None else None
            if a is not None and b is not None:
                ious.append(
                    float(((a > 127) & (b > 127)).sum() / max(1, ((a > 127) | (b > 127)).sum()))
                )
            if b is not None:
                sf.append(b)
        masks = [found[f].masks[d] if found[f].masks else None for f, d in track.members]
        seq = mask_silhouettes(f"t{n}", masks)
        if seq is not None and len(sf) >= 8:
            from_masks.append(seq)
            from_selfie.append(SilhouetteSequence(f"t{n}", np.stack(sf), 1.0))
    segmenter.close()
    gait = GaitEmbedder(Settings())
    gait.prepare()
    a = gait.embed(from_masks).vectors
    b = gait.embed(from_selfie).vectors
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = a @ b.T
    same = np.diag(cos)
    other = cos[~np.eye(len(cos), dtype=bool)]
    # does a track's mask embedding find its own selfie embedding first among all tracks?
    rank1 = float(np.mean(np.argmax(cos, axis=1) == np.arange(len(cos))))
    return {
        "frames_compared": len(ious),
        "silhouette_iou_mean": round(float(np.mean(ious)), 3),
        "silhouette_iou_median": round(float(np.median(ious)), 3),
        "silhouette_iou_p10": round(float(np.percentile(ious, 10)), 3),
        "tracks_with_gait_rows_from_masks": len(from_masks),
        "tracks": len(tracks),
        "gait_model": gait.model_id,
        "gait_cos_same_track_mean": round(float(same.mean()), 3),
        "gait_cos_other_tracks_mean": round(float(other.mean()), 3),
        "gait_rank1_mask_to_selfie": round(rank1, 3),
        "selfie_ms_per_crop": round(1000 * selfie_s / max(1, sum(len(t) for t in tracks)), 1),
    }


def background_results(truth: Truth) -> dict[str, object]:
    found, spf, fallback = background_video(None)
    span = as_frames(found[:SPAN])
    span_tracks = track_persons(span)
    row = {
        "detector": "background subtraction (MOG2, person_detector=background/auto)",
        "tracker": "bytetrack",
        "detector_s_per_frame": round(spf, 4),
        **{k: round(v, 4) for k, v in mot_scores(truth, hypotheses(span_tracks)).items()},
    }
    print(row)
    frames = as_frames(found)
    start = time.perf_counter()
    tracks = track_persons(frames)
    tracker_spf = (time.perf_counter() - start) / len(frames)
    whole = {
        "frames_tracked": len(frames),
        "frames_handed_to_hog": fallback,
        "tracks": len(tracks),
        "tracks_per_minute": round(len(tracks) / (len(frames) / FPS / 60), 1),
        "median_track_s": round(float(np.median([t.end_s - t.start_s for t in tracks])), 1),
        "detector_ms_per_frame": round(1000 * spf, 2),
        "tracker_ms_per_frame": round(1000 * tracker_spf, 2),
        "fps_detector_plus_tracker": round(1 / (spf + tracker_spf), 1),
        "opencv_threads": 1,
    }
    print(whole)
    gait = mask_vs_selfie(found[:SPAN], span_tracks)
    print(gait)
    return {"span": row, "whole_video": whole, "masks_vs_selfie": gait}


def background_only() -> None:
    """The background rows beside the HOG rows of the last full run (not re-measured)."""
    truth = read_truth()
    results = json.loads((RESULTS / "person_tracking.json").read_text())
    results["compared"] = [r for r in results["compared"] if not r["detector"].startswith("back")]
    results["background"] = background_results(truth)
    results["background"]["load_average_1min_at_start"] = os.getloadavg()[0]
    results["compared"].append(results["background"]["span"])
    (RESULTS / "person_tracking.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)


def main() -> None:
    if "--background-only" in sys.argv[1:]:
        background_only()
        return
    truth = read_truth()
    info = media.probe(shared_data_dir() / VIDEO)
    results: dict[str, object] = {
        "video": VIDEO,
        "annotated": {
            "frames": len({f for f, _, _ in truth}),
            "boxes": len(truth),
            "identities": len({i for _, i, _ in truth}),
            "span_s": (SPAN - 1) / FPS,
        },
        "tracker_params": asdict(ByteTrackParams()),
        "load_average_1min_at_start": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "compared": [],
    }
    compared: list[dict[str, object]] = []
    default_found: list[FramePersons] = []
    seconds_per_frame = 0.0
    for height in HEIGHTS:
        detector = HogPersonDetector(min_height_px=height)
        whole = detector.upscale == DEFAULT_UPSCALE  # the default runs on the whole video
        found, spf = detect_video(detector, None if whole else SPAN)
        if whole:
            default_found, seconds_per_frame = found, spf
        for name, tracks in run_trackers(as_frames(found[:SPAN])).items():
            scores = mot_scores(truth, hypotheses(tracks))
            compared.append(
                {
                    "detector": f"hog min_height_px={height:g} (upscale {96 / height:.1f}x)",
                    "tracker": name,
                    "detector_s_per_frame": round(spf, 3),
                    **{k: round(v, 4) for k, v in scores.items()},
                }
            )
            print(compared[-1])
    verified, pose_spf = pose_confirmed(default_found[:SPAN])
    tracks = track_persons(as_frames(verified))
    compared.append(
        {
            "detector": "hog min_height_px=64 + MediaPipe Pose verification",
            "tracker": "bytetrack",
            "detector_s_per_frame": round(seconds_per_frame + pose_spf, 3),
            **{k: round(v, 4) for k, v in mot_scores(truth, hypotheses(tracks)).items()},
        }
    )
    print(compared[-1])
    results["compared"] = compared

    frames = as_frames(default_found)
    start = time.perf_counter()
    tracks = track_persons(frames)
    tracker_spf = (time.perf_counter() - start) / len(frames)
    minutes = len(frames) / FPS / 60
    results["whole_video"] = {
        "duration_s": info.duration_s,
        "frames_tracked": len(frames),
        "tracks": len(tracks),
        "tracks_per_minute": round(len(tracks) / minutes, 1),
        "median_track_s": round(float(np.median([t.end_s - t.start_s for t in tracks])), 1),
        "detector_s_per_frame": round(seconds_per_frame, 3),
        "tracker_ms_per_frame": round(1000 * tracker_spf, 2),
        "fps_detector_plus_tracker": round(1 / (seconds_per_frame + tracker_spf), 2),
    }
    print(results["whole_video"])
    results["background"] = background_results(truth)
    results["compared"].append(results["background"]["span"])
    write_detections_csv(default_found)
    RESULTS.mkdir(exist_ok=True)
    span_tracks = track_persons(frames[:SPAN])
    draw_tracks(span_tracks, truth, RESULTS / "person_tracking.png")
    (RESULTS / "person_tracking.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)


def write_markdown(results: dict) -> None:
    w = results["whole_video"]
    a = results["annotated"]
    pose = next(r for r in results["compared"] if "MediaPipe" in r["detector"])
    bg = results.get("background")
    chosen = next(
        r
        for r in results["compared"]
        if r["detector"].startswith("hog min_height_px=64 ") and r["tracker"] == "bytetrack"
    )
    lines = [
        "# Person tracking on the pedestrian video (`benchmarks/person_tracking.py`)",
        "",
        f"Ground truth: {a['boxes']} hand-drawn boxes of {a['identities']} people on "
        f"{a['frames']} frames (every 10th of the first {a['span_s']:.0f} s at 10 fps), "
        "tests/data/vtest_gt.csv. Tracks run on every frame; scored on the annotated ones "
        "with motmetrics at IoU >= 0.5.",
        "",
        "| detector | tracker | MOTA | IDF1 | ID switches | misses | false positives | "
        "detector s/frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["compared"]:
        lines.append(
            f"| {r['detector']} | {r['tracker']} | {r['mota']:.3f} | {r['idf1']:.3f} | "
            f"{r['num_switches']:.0f} | {r['num_misses']:.0f} | {r['num_false_positives']:.0f} | "
            f"{r['detector_s_per_frame']:.2f} |"
        )
    lines += [
        "",
        f"Whole video ({w['duration_s']:.1f} s, {w['frames_tracked']} frames at 10 fps), "
        "default detector and tracker:",
        f"{w['tracks']} tracks = **{w['tracks_per_minute']} tracks per minute** (median "
        f"{w['median_track_s']} s long); detector {w['detector_s_per_frame']} s/frame, "
        f"tracker {w['tracker_ms_per_frame']} ms/frame: "
        f"**{w['fps_detector_plus_tracker']} frames/s** on this machine "
        f"({results['cpu_count']} cores shared, 1-min load average "
        f"{results['load_average_1min_at_start']:.1f} at the start).",
        "",
        "The detector's box margins and the tracker's thresholds were chosen on this same "
        "annotated span (it is the only truth we have), so the figures are optimistic for other "
        "scenes. Tracks per minute counts fragments too: a person lost for more than 1.5 s "
        "(behind the sign, in a group) comes back as a new track.",
        "",
        f"Chosen: HOG at 64 px with the ByteTrack-style tracker (best MOTA and IDF1). "
        f"MediaPipe Pose as a verifier of HOG's boxes lowers MOTA to {pose['mota']:.3f}: on "
        f"crops of background it still places a body ({pose['num_false_positives']:.0f} false "
        f"positives against {chosen['num_false_positives']:.0f}), and it costs "
        f"{pose['detector_s_per_frame'] - chosen['detector_s_per_frame']:.2f} s more per frame.",
        "",
        "![tracks](person_tracking.png)",
        "",
    ]
    if bg:
        s, w2, g = bg["span"], bg["whole_video"], bg["masks_vs_selfie"]
        lines[-3:-3] = [
            "## Background subtraction (fixed camera; `person_detector` auto/background)",
            "",
            f"On the annotated span: **MOTA {s['mota']:.3f}, IDF1 {s['idf1']:.3f}** "
            f"({s['num_switches']:.0f} ID switches, {s['num_misses']:.0f} misses, "
            f"{s['num_false_positives']:.0f} false positives; HOG 64 px: "
            f"{chosen['mota']:.3f} / {chosen['idf1']:.3f}). Whole video: "
            f"{w2['tracks']} tracks ({w2['tracks_per_minute']} per minute, median "
            f"{w2['median_track_s']} s), {w2['frames_handed_to_hog']} frames handed to HOG; "
            f"pass {w2['detector_ms_per_frame']} ms/frame + tracker "
            f"{w2['tracker_ms_per_frame']} ms/frame on one OpenCV thread: "
            f"**{w2['fps_detector_plus_tracker']} person frames/s** (HOG: "
            f"{w['fps_detector_plus_tracker']}; 1-min load average "
            f"{bg.get('load_average_1min_at_start', results['load_average_1min_at_start']):.1f}"
            f" on {results['cpu_count']} shared cores).",
            "",
            "Where it fails: people standing still fade into the background, and two people "
            "standing together half-hidden by the sign are broken into fragments (the span's "
            "longest miss); groups walking side by side are one blob, cut where it is "
            "thinnest. A moving camera (phase-correlation shift over 6 px on two frames "
            "running) sends its frames to HOG (tests/test_person_background.py).",
            "",
            f"Gait silhouettes from the foreground masks vs selfie segmentation, on the "
            f"span's {g['tracks']} tracks ({g['frames_compared']} frames both kept): "
            f"pretreated 64x64 silhouette IoU mean {g['silhouette_iou_mean']:.3f} (median "
            f"{g['silhouette_iou_median']:.3f}, 10th percentile "
            f"{g['silhouette_iou_p10']:.3f}). {g['tracks_with_gait_rows_from_masks']} tracks "
            f"made gait rows from masks; {g['gait_model']} cosine between a track's "
            f"mask and selfie embeddings {g['gait_cos_same_track_mean']:.3f} vs "
            f"{g['gait_cos_other_tracks_mean']:.3f} between different tracks; a track's "
            f"mask embedding finds its own selfie embedding first in "
            f"{100 * g['gait_rank1_mask_to_selfie']:.0f} % of tracks. No gait identity truth "
            f"exists for vtest, so this says the two silhouette sources agree, not which is "
            f"better; selfie costs {g['selfie_ms_per_crop']} ms per crop, masks nothing.",
            "",
        ]
    (RESULTS / "person_tracking.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
