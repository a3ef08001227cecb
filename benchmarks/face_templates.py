"""Video face templates: plain averaging vs quality-weighted, outlier-rejecting aggregation.

lfw-dev's 12 template people (>= 16 photos each, `people.tsv`) stand in for tracks. Each trial
splits a person's photos into two disjoint halves, one track per half; in each track a third
of the frames stay sharp and the rest are replaced by degraded copies (downscaled so the
inter-eye distance is 24-40 px, then Gaussian-blurred), the low-quality frames a distant
camera gives. Every frame goes through the production face path (`FaceFrameAnalyzer`:
detection, alignment, embedding, per-face quality); a degraded copy where no face is found
is simply absent, as in a video. The two halves' templates are then compared:
verification (every A template against every B template) and closed-set identification
(A tracks searched in a gallery of B templates and vice versa). A second scenario adds two
frames of another person (not one of the 12) to every track: an identity switch.

    .venv/bin/python benchmarks/face_templates.py      # writes benchmarks/results/face_templates.*
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.fusion.metrics import cmc, eer, tar_at_far  # noqa: E402
from biofuse.modalities.face.dlib_face import aggregate_track  # noqa: E402
from lfw_dlib import decode_rgb, pct, write_atomic  # noqa: E402

from biofuse.config import load_settings, shared_data_dir  # noqa: E402

EYE_PX_RANGE = (24.0, 40.0)  # the degraded inter-eye distance
BLUR_SIGMA_RANGE = (1.0, 2.5)  # px, at the reduced size
SHARP_SHARE = 1 / 3
INTRUDER_FRAMES = 2
FAR_TARGET = 1e-2


@dataclass
class Frame:
    vector: np.ndarray
    quality: float
    inter_eye_px: float


def largest(faces) -> Frame | None:  # noqa: ANN001 - biofuse.flows.models.FrameFaces
    if len(faces.boxes) == 0:
        return None
    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    i = int(np.argmax(area))
    return Frame(faces.vectors[i], float(faces.quality[i]), float(faces.inter_eye_px[i]))


def degrade(rgb: np.ndarray, eye_px: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale so the eyes are 24-40 px apart, then blur: a small, soft face."""
    target = rng.uniform(*EYE_PX_RANGE)
    scale = min(1.0, target / max(eye_px, 1.0))
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    sigma = rng.uniform(*BLUR_SIGMA_RANGE)
    return np.ascontiguousarray(cv2.GaussianBlur(small, (0, 0), sigma))


Aggregator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def aggregators(outlier_cos: float) -> dict[str, Aggregator]:
    def plain(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        m = v.mean(axis=0)
        return m / np.linalg.norm(m)

    def weighted(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        return aggregate_track(v, q, outlier_cos=-1.0)[0]  # every frame is an inlier

    def ours(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        return aggregate_track(v, q, outlier_cos=outlier_cos)[0]

    def best(v: np.ndarray, q: np.ndarray) -> np.ndarray:
        return v[int(np.argmax(q))]

    return {
        "plain mean": plain,
        "quality-weighted": weighted,
        "quality-weighted + outlier rejection (ours)": ours,
        "best-quality frame": best,
    }


def score_trials(
    people: list[str],
    sharp: dict[str, list[Frame | None]],
    soft: dict[str, list[Frame | None]],
    intruders: list[Frame],
    distractors: np.ndarray,
    outlier_cos: float,
    trials: int,
    with_intruders: bool,
    track_frames: int,
    seed: int,
) -> dict:
    """Genuine/impostor template scores and rank-1 per aggregator, pooled over trials.

    `track_frames` > 0 keeps that many frames of each half (a short track), else all.
    The gallery for each search is the other half's 12 templates plus `distractors`
    (one-photo templates of people outside the 12).
    """
    rng = np.random.default_rng(seed)
    aggs = aggregators(outlier_cos)
    gen: dict[str, list[float]] = {k: [] for k in aggs}
    imp: dict[str, list[float]] = {k: [] for k in aggs}
    rank1: dict[str, list[float]] = {k: [] for k in aggs}
    frames_used = []
    for _ in range(trials):
        halves: list[list[Frame]] = []
        for person in people:
            order = rng.permutation(len(sharp[person]))
            for half in (order[: len(order) // 2], order[len(order) // 2 :]):
                if track_frames > 0:
                    half = half[:track_frames]
                n_sharp = max(1, round(len(half) * SHARP_SHARE))
                track = [sharp[person][i] for i in half[:n_sharp]]
                track += [soft[person][i] for i in half[n_sharp:]]
                track = [f for f in track if f is not None]
                if with_intruders:
                    pick = rng.choice(len(intruders), INTRUDER_FRAMES, replace=False)
                    track += [intruders[i] for i in pick]
                halves.append(track)
                frames_used.append(len(track))
        for name, agg in aggs.items():
            t = np.stack(
                [
                    agg(np.stack([f.vector for f in tr]), np.array([f.quality for f in tr]))
                    for tr in halves
                ]
            )
            a, b = t[0::2], t[1::2]  # person i's two tracks
            truth = np.arange(len(people))
            for probe, other in ((a, b), (b, a)):
                s = probe @ np.concatenate([other, distractors]).T
                same = np.zeros_like(s, dtype=bool)
                same[truth, truth] = True
                gen[name] += s[same].tolist()
                imp[name] += s[~same].tolist()
                rank1[name].append(float(cmc(s, truth, 1)[0]))
    out = {}
    for name in aggs:
        g, i = np.array(gen[name]), np.array(imp[name])
        out[name] = {
            "rank1_mean": float(np.mean(rank1[name])),
            "rank1_std": float(np.std(rank1[name])),
            "eer": eer(g, i),
            "tar_at_far_1e-2": tar_at_far(g, i, FAR_TARGET),
            "mean_genuine": float(g.mean()),
            "mean_impostor": float(i.mean()),
            "d_prime": float((g.mean() - i.mean()) / np.sqrt(0.5 * (g.var() + i.var()))),
            "genuine_scores": len(g),
            "impostor_scores": len(i),
        }
    out["_frames_per_track_mean"] = float(np.mean(frames_used))
    return out


def _frame_json(f: Frame | None) -> list | None:
    return None if f is None else [f.vector.tolist(), f.quality, f.inter_eye_px]


def _frame_back(x: list | None) -> Frame | None:
    return None if x is None else Frame(np.array(x[0], np.float32), x[1], x[2])


def frames_to_json(frames: dict) -> dict:
    """The embedded frames as plain JSON (a cache under /tmp: no pickle, no repo file)."""
    return {
        k: {p: [_frame_json(f) for f in v] for p, v in frames[k].items()}
        if isinstance(frames[k], dict)
        else [_frame_json(f) for f in frames[k]]
        for k in frames
    }


def frames_from_json(data: dict) -> dict:
    return {
        k: {p: [_frame_back(f) for f in v] for p, v in data[k].items()}
        if isinstance(data[k], dict)
        else [_frame_back(f) for f in data[k]]
        for k in data
    }


def embed_frames(
    analyzer, lfw: Path, people: list[str], others: list[str], n_distractors: int, seed: int
) -> dict:  # noqa: ANN001 - biofuse.flows.models.FaceFrameAnalyzer
    """Every frame the trials draw from, embedded once through the pipeline's face model."""
    rng = np.random.default_rng(seed)
    sharp: dict[str, list[Frame | None]] = {}
    soft: dict[str, list[Frame | None]] = {}
    for person in people:
        paths = sorted((lfw / "images" / person).glob("*.jpg"))
        images = [decode_rgb(p) for p in paths]
        sharp[person] = [largest(f) for f in analyzer.analyze(images)]
        eyes = [f.inter_eye_px if f is not None else 45.0 for f in sharp[person]]
        small = [degrade(img, e, rng) for img, e in zip(images, eyes, strict=True)]
        soft[person] = [largest(f) for f in analyzer.analyze(small)]
    # people outside the 12: 40 give one clean photo each as identity-switch frames, the
    # next `n_distractors` one clean photo each as extra gallery templates
    picked = [others[i] for i in rng.choice(len(others), 40 + n_distractors, replace=False)]

    def first_photos(names: list[str]) -> list[Frame]:
        out: list[Frame] = []
        for start in range(0, len(names), 16):
            imgs = [
                decode_rgb(sorted((lfw / "images" / n).glob("*.jpg"))[0])
                for n in names[start : start + 16]
            ]
            out += [f for f in map(largest, analyzer.analyze(imgs)) if f is not None]
        return out

    return {
        "sharp": sharp,
        "soft": soft,
        "intruders": first_photos(picked[:40]),
        "distractors": first_photos(picked[40:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--home", type=Path, default=None, help="biofuse home (model weights)")
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--distractors", type=int, default=200, help="extra gallery people")
    parser.add_argument("--short-track", type=int, default=4, help="frames in a short track")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/biofuse-face-templates.json"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from biofuse.flows.models import FaceFrameAnalyzer

    lfw = (args.data or shared_data_dir()) / "lfw-dev"
    with open(lfw / "people.tsv", newline="") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    people = sorted(r["name"] for r in table if r["template"] == "1")
    others = sorted(r["name"] for r in table if r["template"] != "1")
    settings = load_settings(home=args.home, face_model=args.model)
    analyzer = FaceFrameAnalyzer(settings)
    key = (analyzer.model_id, args.seed, args.distractors, EYE_PX_RANGE, BLUR_SIGMA_RANGE)
    t0 = time.perf_counter()
    cached = json.loads(args.cache.read_text()) if args.cache.is_file() else None
    if cached is not None and cached["key"] == repr(key):  # re-scoring without re-embedding
        frames = frames_from_json(cached["frames"])
    else:
        analyzer.prepare("cpu")
        frames = embed_frames(analyzer, lfw, people, others, args.distractors, args.seed)
        cache = {"key": repr(key), "frames": frames_to_json(frames)}
        write_atomic(args.cache, json.dumps(cache))
    embed_s = time.perf_counter() - t0
    sharp, soft = frames["sharp"], frames["soft"]
    distractors = np.stack([f.vector for f in frames["distractors"]])

    scenarios = {}
    for track_frames in (0, args.short_track):
        for with_intruders in (False, True):
            label = (
                "whole half-track" if track_frames == 0 else f"short tracks ({track_frames} frames)"
            )
            label += f" + {INTRUDER_FRAMES} intruder frames" if with_intruders else ""
            scenarios[label] = score_trials(
                people,
                sharp,
                soft,
                frames["intruders"],
                distractors,
                analyzer.outlier_cos,
                args.trials,
                with_intruders,
                track_frames,
                args.seed,
            )
    flat_sharp = [f for person in people for f in sharp[person]]
    flat_soft = [f for person in people for f in soft[person]]
    result = {
        "benchmark": "lfw-dev template people as tracks: aggregation of frame embeddings",
        "model_id": analyzer.model_id,
        "outlier_cos": analyzer.outlier_cos,
        "people": people,
        "trials": args.trials,
        "gallery_distractors": len(distractors),
        "sharp_share": SHARP_SHARE,
        "eye_px_range": EYE_PX_RANGE,
        "blur_sigma_range": BLUR_SIGMA_RANGE,
        "frames": {
            "sharp": len(flat_sharp),
            "sharp_no_face": sum(f is None for f in flat_sharp),
            "soft": len(flat_soft),
            "soft_no_face": sum(f is None for f in flat_soft),
        },
        "degraded_inter_eye_px_median": float(
            np.median([f.inter_eye_px for f in flat_soft if f is not None])
        ),
        "quality_median": {
            "sharp": float(np.median([f.quality for f in flat_sharp if f is not None])),
            "degraded": float(np.median([f.quality for f in flat_soft if f is not None])),
        },
        "intruder_frames_available": len(frames["intruders"]),
        "embed_s": embed_s,
        "scenarios": scenarios,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "face_templates.json", json.dumps(result, indent=2) + "\n")
    write_atomic(args.out / "face_templates.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    f = r["frames"]
    lines = [
        "# Face track templates: plain averaging vs quality-weighted + outlier rejection",
        "",
        "Written by `benchmarks/face_templates.py`; do not edit by hand.",
        "",
        f"Model `{r['model_id']}` through `FaceFrameAnalyzer`; outlier cosine "
        f"{r['outlier_cos']:.2f}. {len(r['people'])} lfw-dev template people; per trial each "
        f"person's photos are split into two disjoint tracks, {pct(r['sharp_share'])} of a "
        "track's frames sharp, the rest degraded copies (inter-eye "
        f"{r['eye_px_range'][0]:.0f}-{r['eye_px_range'][1]:.0f} px, Gaussian blur sigma "
        f"{r['blur_sigma_range'][0]}-{r['blur_sigma_range'][1]} px). {r['trials']} trials; "
        "rank-1 is over 24 searches per trial (each track against a gallery of the 12 "
        f"other-half templates plus {r['gallery_distractors']} one-photo templates of other "
        "lfw-dev people); EER and TAR pool all trials' probe-vs-gallery scores.",
        "",
        f"- Frames: {f['sharp']} sharp ({f['sharp_no_face']} without a face found), "
        f"{f['soft']} degraded ({f['soft_no_face']} without a face found: absent from tracks). "
        f"Degraded inter-eye distance as measured: median {r['degraded_inter_eye_px_median']:.1f}"
        f" px. Median frame quality: sharp {r['quality_median']['sharp']:.3f}, degraded "
        f"{r['quality_median']['degraded']:.3f}.",
        "",
    ]
    for name, s in r["scenarios"].items():
        lines += [
            f"## {name} (mean {s['_frames_per_track_mean']:.1f} frames per track)",
            "",
            "| aggregation | rank-1 (mean ± std) | EER | TAR @ FAR=1e-2 | mean cos genuine / "
            "impostor | d' |",
            "|---|---|---|---|---|---|",
        ]
        for agg, m in s.items():
            if agg.startswith("_"):
                continue
            lines.append(
                f"| {agg} | {pct(m['rank1_mean'])} ± {100 * m['rank1_std']:.2f} | "
                f"{pct(m['eer'])} | {pct(m['tar_at_far_1e-2'])} | {m['mean_genuine']:.3f} / "
                f"{m['mean_impostor']:.3f} | {m['d_prime']:.2f} |"
            )
        lines.append("")
    lines += [
        f"Genuine / impostor template scores pooled: "
        f"{next(iter(r['scenarios'].values()))['plain mean']['genuine_scores']} / "
        f"{next(iter(r['scenarios'].values()))['plain mean']['impostor_scores']} "
        "(the trials re-split the same photos, so they are not independent).",
        f"Machine: {r['machine']['cpus']} CPUs shared, load {r['machine']['loadavg_1min']:.1f}; "
        f"embedding took {r['embed_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
