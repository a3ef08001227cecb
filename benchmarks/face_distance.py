"""The distance ladder: lfw-dev faces shrunk to W px in 640x480 frames, per face detector.

Per lfw-dev pair: the first photo is enrolled at full size through the production face path
(`biofuse.flows.models.FaceFrameAnalyzer`, largest face); the second is shrunk with INTER_AREA until
its face box (the central 110x110 of a 250x250 lfw-dev photo) is W px wide, pasted at a random
place into a 640x480 frame of blurred noise, then the whole frame gets sensor noise (sigma 4),
a Gaussian blur (sigma 0.6) and JPEG quality 75. Frames go to the analyzer 8 at a time, as
flows/pipeline.py sends them. Per W and detector:

- recall: a detection with box IoU >= 0.5 with the pasted face box;
- other detections per frame (boxes not on the pasted face; an lfw-dev photo sometimes shows a
  second person, so `noise frames` below is the clean false-detection figure);
- 3-fold verification accuracy (threshold from the other two folds, per W) and TAR @ FAR=1e-2,
  scoring a pair whose face was missed (or whose enrolment photo gave no face) as -1;
- ms per frame, wall and CPU (this process, torch on `--threads`).

Frames of pure blurred noise (no face) give false detections per frame for each detector.

    .venv/bin/python benchmarks/face_distance.py          # every 9th pair (100 pairs)
    .venv/bin/python benchmarks/face_distance.py --all    # all 900 pairs (~9x longer)
    .venv/bin/python benchmarks/face_distance.py --widths 16 12 --detectors mtcnn

Writes benchmarks/results/face_distance.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.flows.models import FaceFrameAnalyzer  # noqa: E402
from lfw_dlib import decode_rgb, evaluate, pct, read_pairs, write_atomic  # noqa: E402

from biofuse.config import load_settings, shared_data_dir  # noqa: E402

WIDTHS = (112, 64, 48, 32, 24, 16, 12)
FACE_BOX = (70.0, 70.0, 180.0, 180.0)  # the face in a 250x250 lfw-dev (deep-funneled) photo
FRAME_W, FRAME_H = 640, 480
NO_FACE_SCORE = -1.0
IOU_MATCH = 0.5
FRAMES_PER_CALL = 8
DEFAULT_STEP = 9  # every 9th pair: 100 pairs, 50 genuine / 50 impostor, all three folds


def noise_background(rng: np.random.Generator) -> np.ndarray:
    grey = rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)
    return cv2.GaussianBlur(grey, (0, 0), 2.0)


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, a little optical blur and JPEG 75, as a surveillance frame has."""
    noisy = frame.astype(np.float32) + rng.normal(0.0, 4.0, frame.shape).astype(np.float32)
    blurred = cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (0, 0), 0.6)
    ok, jpg = cv2.imencode(".jpg", blurred[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1])


def make_frame(
    rgb: np.ndarray, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The photo shrunk so its face box is `width` px, pasted at random; the face box."""
    scale = width / (FACE_BOX[2] - FACE_BOX[0])
    h, w = (max(1, round(s * scale)) for s in rgb.shape[:2])
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    frame = noise_background(rng)
    x = int(rng.integers(0, FRAME_W - w + 1))
    y = int(rng.integers(0, FRAME_H - h + 1))
    frame[y : y + h, x : x + w] = small
    box = (x + FACE_BOX[0] * scale, y + FACE_BOX[1] * scale)
    box = (*box, box[0] + width, box[1] + width)
    return degrade(frame, rng), box


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def timed(analyzer: FaceFrameAnalyzer, frames: list[np.ndarray]) -> tuple[list, float, float]:
    """Analyzer output for frames, FRAMES_PER_CALL per call; wall and CPU seconds."""
    out: list = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(frames), FRAMES_PER_CALL):
        out.extend(analyzer.analyze(frames[start : start + FRAMES_PER_CALL]))
    return out, time.perf_counter() - wall0, time.process_time() - cpu0


def enrol(analyzer: FaceFrameAnalyzer, lfw: Path, names: list[str]) -> dict:
    vectors: dict[str, np.ndarray | None] = {}
    out, _, _ = timed(analyzer, [decode_rgb(lfw / rel) for rel in names])
    for rel, faces in zip(names, out, strict=True):
        if len(faces.boxes) == 0:
            vectors[rel] = None
            continue
        area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
        vectors[rel] = faces.vectors[int(np.argmax(area))]
    return vectors


def run_detector(detector: str, args, lfw: Path, pairs: list) -> dict:
    settings = load_settings(face_detector=detector, face_min_px=args.min_px)
    analyzer = FaceFrameAnalyzer(settings)
    analyzer.prepare("cpu")
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    enrolled = enrol(analyzer, lfw, sorted({p.a for p in pairs}))
    probes = {p.b: decode_rgb(lfw / p.b) for p in pairs}
    rows = []
    for width in args.widths:
        frames, boxes = [], []
        for i, p in enumerate(pairs):
            rng = np.random.default_rng([args.seed, width, i])  # same frames for every detector
            frame, box = make_frame(probes[p.b], width, rng)
            frames.append(frame)
            boxes.append(box)
        out, wall, cpu = timed(analyzer, frames)
        scores, found, others, eyes = [], [], 0, []
        for p, faces, box in zip(pairs, out, boxes, strict=True):
            overlaps = [iou(tuple(b), box) for b in faces.boxes]
            best = int(np.argmax(overlaps)) if overlaps else -1
            hit = best >= 0 and overlaps[best] >= IOU_MATCH
            found.append(hit)
            others += sum(o < IOU_MATCH for o in overlaps)
            if hit:
                eyes.append(float(faces.inter_eye_px[best]))
            ref = enrolled[p.a]
            scores.append(
                float(ref @ faces.vectors[best]) if hit and ref is not None else NO_FACE_SCORE
            )
        figures = evaluate(np.array(scores), labels, folds)
        rows.append(
            {
                "width": width,
                "recall": float(np.mean(found)),
                "other_detections_per_frame": others / len(pairs),
                "accuracy": figures["kfold_accuracy"]["mean"],
                "accuracy_std": figures["kfold_accuracy"]["std"],
                "tar_at_far_1e-2": figures["tar_at_far_1e-2"],
                "mean_inter_eye_px": float(np.mean(eyes)) if eyes else None,
                "ms_per_frame_wall": 1000 * wall / len(frames),
                "ms_per_frame_cpu": 1000 * cpu / len(frames),
            }
        )
        print(f"{detector} W={width}: {rows[-1]}", file=sys.stderr, flush=True)
    noise = [
        degrade(
            noise_background(np.random.default_rng([args.seed, 7, k])), np.random.default_rng(k)
        )
        for k in range(args.noise_frames)
    ]
    out, wall, cpu = timed(analyzer, noise)
    mtcnn = getattr(analyzer.detector, "chip_alignment", None)
    return {
        "detector": detector,
        "mtcnn_chip_alignment": mtcnn,
        "mtcnn_min_score": getattr(analyzer.detector, "min_score", None),
        "enrolment_photos_without_face": sum(v is None for v in enrolled.values()),
        "ladder": rows,
        "noise_frames": {
            "frames": len(noise),
            "false_detections_per_frame": sum(len(f.boxes) for f in out) / max(1, len(noise)),
            "ms_per_frame_wall": 1000 * wall / max(1, len(noise)),
            "ms_per_frame_cpu": 1000 * cpu / max(1, len(noise)),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--all", action="store_true", help="all 900 pairs (default every 9th)")
    parser.add_argument("--step", type=int, default=DEFAULT_STEP, help="every Nth pair")
    parser.add_argument("--widths", type=int, nargs="*", default=list(WIDTHS))
    parser.add_argument("--detectors", nargs="*", default=["mtcnn", "hog"])
    parser.add_argument("--min-px", type=float, default=12.0, help="face_min_px for MTCNN")
    parser.add_argument("--noise-frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    lfw = (args.data or shared_data_dir()) / "lfw-dev"
    if not (lfw / "pairs.tsv").is_file():
        print(f"lfw-dev not found at {lfw}; set BIOFUSE_SHARED_DATA", file=sys.stderr)
        return 2
    pairs = read_pairs(lfw)
    if not args.all:
        pairs = pairs[:: args.step]
    t0 = time.perf_counter()
    runs = [run_detector(d, args, lfw, pairs) for d in args.detectors]
    result = {
        "benchmark": "lfw-dev distance ladder through biofuse.flows.models.FaceFrameAnalyzer",
        "pairs": len(pairs),
        "genuine_pairs": int(sum(p.same for p in pairs)),
        "subset": "all" if args.all else f"every {args.step}th pair of pairs.tsv",
        "min_px": args.min_px,
        "seed": args.seed,
        "threads": args.threads,
        "runs": runs,
        "total_s": time.perf_counter() - t0,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "face_distance.json", json.dumps(result, indent=2) + "\n")
    write_atomic(args.out / "face_distance.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"# Faces at a distance: lfw-dev ladder, {r['pairs']} pairs ({r['subset']})",
        "",
        "Written by `benchmarks/face_distance.py`; do not edit by hand.",
        "",
        "First photo enrolled at full size; second shrunk (INTER_AREA) to a face box W px wide, "
        "pasted at random into a 640x480 blurred-noise frame, sensor noise, blur, JPEG 75. "
        "Recall: box IoU >= 0.5. A missed face scores -1 (non-match). Accuracy: 3-fold, "
        "threshold chosen on the other two folds at the same W. "
        f"TAR @ FAR=1e-2 on {r['pairs'] - r['genuine_pairs']} impostor pairs. MTCNN "
        f"face_min_px = {r['min_px']:g}; torch threads {r['threads']}.",
        "",
        "| detector | W px | recall | accuracy | TAR @ FAR=1e-2 | other detections/frame | "
        "inter-eye px | ms/frame wall | ms/frame CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for row in run["ladder"]:
            eyes = row["mean_inter_eye_px"]
            lines.append(
                f"| {run['detector']} | {row['width']} | {pct(row['recall'])} | "
                f"{pct(row['accuracy'])} | {pct(row['tar_at_far_1e-2'])} | "
                f"{row['other_detections_per_frame']:.3f} | "
                f"{'' if eyes is None else f'{eyes:.1f}'} | {row['ms_per_frame_wall']:.0f} | "
                f"{row['ms_per_frame_cpu']:.0f} |"
            )
    lines += [
        "",
        "| detector | noise frames | false detections/frame | ms/frame wall |",
        "|---|---|---|---|",
    ]
    for run in r["runs"]:
        n = run["noise_frames"]
        lines.append(
            f"| {run['detector']} | {n['frames']} | {n['false_detections_per_frame']:.3f} | "
            f"{n['ms_per_frame_wall']:.0f} |"
        )
    lines += [
        "",
        "- Enrolment photos without a face: "
        + ", ".join(f"{x['detector']} {x['enrolment_photos_without_face']}" for x in r["runs"])
        + ".",
        f"- Machine: {r['machine']['cpus']} CPUs shared, load {r['machine']['loadavg_1min']:.1f}; "
        f"whole run {r['total_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
