"""LFW verification through the production face pipeline, for every configured face model.

Each lfw-dev image goes through `biofuse.flows.models.FaceFrameAnalyzer` exactly as a video frame
does (detection, 5 landmarks, alignment, embedding, per-face quality); the largest face
is the photo's subject. A photo where the pipeline finds no face gives no evidence, as in a
video, so its pairs are scored -1 (a non-match). Figures per model: 3-fold accuracy with the
threshold chosen on the other two folds, and TAR @ FAR=1e-2 (fusion/metrics.py).

    .venv/bin/python benchmarks/lfw_pipeline.py          # writes benchmarks/results/lfw_pipeline.*
    .venv/bin/python benchmarks/lfw_pipeline.py --home ~/.biofuse   # where `models add` put weights
    .venv/bin/python benchmarks/lfw_pipeline.py --models dlib-resnet \
        --detectors mtcnn:dlib5 mtcnn:points5 hog     # face detector (and MTCNN chip alignment)

Models whose weights are not installed get a row saying so (AdaFace needs the user's .ckpt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.flows.models import FaceFrameAnalyzer  # noqa: E402
from lfw_dlib import decode_rgb, evaluate, pct, read_pairs, write_atomic  # noqa: E402

from biofuse.config import load_settings, shared_data_dir  # noqa: E402
from biofuse.errors import ModelMissingError  # noqa: E402
from biofuse.registry import SPECS  # noqa: E402

NO_FACE_SCORE = -1.0  # the lowest cosine: a pair with a missing face is never accepted
FRAMES_PER_CALL = 8  # as flows/pipeline.py sends frames to the face model


def run_model(analyzer: FaceFrameAnalyzer, lfw: Path, images: list[str]) -> dict:
    """Largest-face embedding per image (None: no face), with timing."""
    vectors: dict[str, np.ndarray | None] = {}
    norms: list[float] = []
    quality: list[float] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, len(images), FRAMES_PER_CALL):
        names = images[start : start + FRAMES_PER_CALL]
        frames = [decode_rgb(lfw / rel) for rel in names]
        for rel, faces in zip(names, analyzer.analyze(frames), strict=True):
            if len(faces.boxes) == 0:
                vectors[rel] = None
                continue
            area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
            best = int(np.argmax(area))
            vectors[rel] = faces.vectors[best]
            quality.append(float(faces.quality[best]))
            if faces.feature_norm is not None and np.isfinite(faces.feature_norm[best]):
                norms.append(float(faces.feature_norm[best]))
    n = len(images)
    return {
        "vectors": vectors,
        "ms_per_image_wall": 1000 * (time.perf_counter() - wall0) / n,
        "ms_per_image_cpu": 1000 * (time.process_time() - cpu0) / n,
        "mean_quality": float(np.mean(quality)) if quality else None,
        "mean_feature_norm": float(np.mean(norms)) if norms else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--home", type=Path, default=None, help="biofuse home (model weights)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--models", nargs="*", default=[s.name for s in SPECS.values() if s.modality == "face"]
    )
    parser.add_argument("--limit", type=int, default=0, help="N evenly spaced pairs (smoke test)")
    parser.add_argument(
        "--detectors",
        nargs="*",
        default=["mtcnn", "hog"],
        help="face_detector values; mtcnn:ALIGNMENT also sets MTCNN's chip alignment for dlib",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (MTCNN, AdaFace)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    lfw = (args.data or shared_data_dir()) / "lfw-dev"
    if not (lfw / "pairs.tsv").is_file():
        print(f"lfw-dev not found at {lfw}; set BIOFUSE_SHARED_DATA", file=sys.stderr)
        return 2
    pairs = read_pairs(lfw)
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    rows: list[dict] = []
    for name, variant in [(m, d) for d in args.detectors for m in args.models]:
        detector, _, alignment = variant.partition(":")
        settings = load_settings(home=args.home, face_model=name, face_detector=detector)
        try:
            analyzer = FaceFrameAnalyzer(settings)
        except ModelMissingError as exc:
            rows.append(
                {
                    "model": name,
                    "detector": variant,
                    "status": "weights not installed",
                    "reason": str(exc),
                }
            )
            print(f"{name}: weights not installed", file=sys.stderr)
            continue
        if alignment and name == "dlib-resnet":
            analyzer.detector.chip_alignment = alignment
        variant = detector + (f":{analyzer.detector.chip_alignment}" if detector == "mtcnn" else "")
        t0 = time.perf_counter()
        analyzer.prepare("cpu")
        load_s = time.perf_counter() - t0
        run = run_model(analyzer, lfw, images)
        vectors = run.pop("vectors")
        missing = sorted(rel for rel, v in vectors.items() if v is None)
        scores = np.array(
            [
                NO_FACE_SCORE
                if vectors[p.a] is None or vectors[p.b] is None
                else float(vectors[p.a] @ vectors[p.b])
                for p in pairs
            ]
        )
        found = np.array([vectors[p.a] is not None and vectors[p.b] is not None for p in pairs])
        both = evaluate(scores[found], labels[found], folds[found])
        rows.append(
            {
                "model": name,
                "detector": variant,
                "status": "ok",
                "model_id": analyzer.model_id,
                "flip_tta": settings.face_flip_tta if name != "dlib-resnet" else None,
                "all_pairs": evaluate(scores, labels, folds),
                "pairs_with_both_faces": {"pairs": int(found.sum()), **both},
                "images_without_face": len(missing),
                "pairs_without_face": int((~found).sum()),
                "no_face_list": missing,
                "model_load_s": load_s,
                **run,
            }
        )
        print(f"{name} {variant}: done", file=sys.stderr)

    result = {
        "benchmark": "lfw-dev pairs.tsv through biofuse.flows.models.FaceFrameAnalyzer",
        "pairs": len(pairs),
        "genuine_pairs": int(labels.sum()),
        "images": len(images),
        "no_face_score": NO_FACE_SCORE,
        "models": rows,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0],
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "lfw_pipeline.json", json.dumps(result, indent=2) + "\n")
    write_atomic(args.out / "lfw_pipeline.md", markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"# LFW (lfw-dev, {r['pairs']} pairs): the face pipeline per model",
        "",
        "Written by `benchmarks/lfw_pipeline.py`; do not edit by hand.",
        "",
        f"{r['images']} images through `FaceFrameAnalyzer` (the code a video frame goes "
        "through), largest face per photo. 3-fold accuracy: threshold chosen on the other two "
        "folds. A photo with no face found gives no evidence: its pairs score "
        f"{r['no_face_score']:g} (never accepted).",
        "",
        "| model | detector | 3-fold accuracy (mean ± std) | thresholds | TAR @ FAR=1e-2 | EER | "
        "images without a face | 3-fold accuracy on pairs with both faces | ms/image (wall) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in r["models"]:
        if m["status"] != "ok":
            lines.append(f"| {m['model']} | {m.get('detector', '')} | {m['status']} | | | | | | |")
            continue
        a, b = m["all_pairs"], m["pairs_with_both_faces"]
        k = a["kfold_accuracy"]
        ths = " / ".join(f"{t:.3f}" for t in k["thresholds"].values())
        lines.append(
            f"| {m['model']} (`{m['model_id']}`) | {m.get('detector', 'hog')} | "
            f"{pct(k['mean'])} ± {100 * k['std']:.2f} | "
            f"{ths} | {pct(a['tar_at_far_1e-2'])} | {pct(a['eer'])} | "
            f"{m['images_without_face']} ({m['pairs_without_face']} pairs) | "
            f"{pct(b['kfold_accuracy']['mean'])} on {b['pairs']} | {m['ms_per_image_wall']:.1f} |"
        )
    lines += [
        "",
        "- TAR @ FAR=1e-2 is read on "
        f"{r['pairs'] - r['genuine_pairs']} impostor pairs, so it allows "
        f"{int((r['pairs'] - r['genuine_pairs']) * 1e-2)} false matches.",
        "- benchmarks/lfw_dlib.py gives dlib the README baseline's centre-box fallback for "
        "photos with no HOG face; here the pipeline has none, as for a video frame.",
        f"- Machine: {r['machine']['cpus']} CPUs shared, load {r['machine']['loadavg_1min']:.1f}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
