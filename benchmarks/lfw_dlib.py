"""LFW verification accuracy of biofuse's offline face pipeline, on the lfw-dev pairs.

Runs exactly what production runs (JPEG decode -> DlibFaceDetector -> largest face ->
DlibFaceEmbedder) over the 900 pairs of `shared/data/lfw-dev/pairs.tsv` and reports the
LFW protocol figure (3-fold accuracy, threshold chosen on the other two folds) for our
cosine score and for dlib's raw Euclidean distance, so it can be set against the
dataset README's baseline (98.33 % at 0.6, 98.22 % three-fold).

    .venv/bin/python benchmarks/lfw_dlib.py            # writes benchmarks/results/lfw_dlib.*

Data: $BIOFUSE_SHARED_DATA, else `shared/data` beside the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from biofuse.fusion.metrics import (  # noqa: E402
    eer,
    kfold_verification_accuracy,
    roc,
    tar_at_far,
)
from biofuse.modalities.face import (  # noqa: E402
    DlibFaceDetector,
    DlibFaceEmbedder,
    FaceChip,
    FaceDetection,
    largest_face,
)

from biofuse.config import shared_data_dir  # noqa: E402
from biofuse.registry import Registry  # noqa: E402

CENTRE_BOX = (70.0, 70.0, 180.0, 180.0)  # the README baseline's fallback for 250x250 LFW images
DLIB_THRESHOLD = 0.6  # dlib's published Euclidean threshold
FAR_TARGET = 1e-2


@dataclass
class Pair:
    fold: int
    a: str
    b: str
    same: int
    name1: str = ""
    idx1: int = 0
    name2: str = ""
    idx2: int = 0


def read_pairs(lfw: Path) -> list[Pair]:
    def rel(name: str, idx: str) -> str:
        return f"images/{name}/{name}_{int(idx):04d}.jpg"

    with open(lfw / "pairs.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        Pair(
            int(r["fold"]),
            rel(r["name1"], r["idx1"]),
            rel(r["name2"], r["idx2"]),
            int(r["same"]),
            r["name1"],
            int(r["idx1"]),
            r["name2"],
            int(r["idx2"]),
        )
        for r in rows
    ]


def write_pair_scores(path: Path, pairs: list[Pair], cosine: np.ndarray, dist: np.ndarray) -> None:
    """Per-pair scores, so calibration and fusion can be fitted without re-embedding."""
    lines = ["fold\tname1\tidx1\tname2\tidx2\tsame\tcosine\teuclidean_raw"]
    lines += [
        f"{p.fold}\t{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}\t{p.same}\t{c:.6f}\t{d:.6f}"
        for p, c, d in zip(pairs, cosine, dist, strict=True)
    ]
    write_atomic(path, "\n".join(lines) + "\n")


def decode_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def nearest_centre(dets: list[FaceDetection], shape: tuple[int, ...]) -> FaceDetection:
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(
        dets,
        key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2,
    )


def evaluate(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    """Every figure for one score (higher = more similar)."""
    kf = kfold_verification_accuracy(scores, labels, folds)
    gen, imp = scores[labels == 1], scores[labels == 0]
    curve = roc(gen, imp)
    auc = float(np.trapezoid(curve.tar, curve.far))
    return {
        "kfold_accuracy": {
            "per_fold": {int(f): float(a) for f, a in zip(kf.folds, kf.accuracies, strict=True)},
            "thresholds": {int(f): float(t) for f, t in zip(kf.folds, kf.thresholds, strict=True)},
            "mean": kf.mean,
            "std": kf.std,
        },
        "tar_at_far_1e-2": tar_at_far(gen, imp, FAR_TARGET),
        "eer": eer(gen, imp),
        "auc": auc,
        "mean_genuine": float(gen.mean()),
        "mean_impostor": float(imp.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--limit", type=int, default=0, help="use N evenly spaced pairs (smoke test)"
    )
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import track

    console = Console()
    lfw = (args.data or shared_data_dir()) / "lfw-dev"
    if not (lfw / "pairs.tsv").is_file():
        console.print(f"[red]lfw-dev not found at {lfw}; set BIOFUSE_SHARED_DATA[/red]")
        return 2
    pairs = read_pairs(lfw)
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]  # spans all folds
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})

    with tempfile.TemporaryDirectory() as models_dir:
        model = Registry(Path(models_dir)).resolve("dlib-resnet")
    detector = DlibFaceDetector(model, upsample=1)
    embedder = DlibFaceEmbedder(model)
    t0 = time.perf_counter()
    detector.prepare()
    embedder.prepare()
    load_s = time.perf_counter() - t0

    chips: list[FaceChip] = []
    fallback: set[str] = set()
    multi, centre_differs = 0, 0
    t_decode = t_detect = 0.0
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    for rel in track(images, description="detect + align", console=console):
        t = time.perf_counter()
        rgb = decode_rgb(lfw / rel)
        t_decode += time.perf_counter() - t
        t = time.perf_counter()
        (dets,) = detector.detect([rgb])
        face = largest_face(dets)
        if face is None:
            face = detector.detect_in_box(rgb, CENTRE_BOX)
            fallback.add(rel)
        elif len(dets) > 1:
            multi += 1
            centre_differs += nearest_centre(dets, rgb.shape) is not face
        t_detect += time.perf_counter() - t
        chips.append(FaceChip(rel, face.chip, face.quality))
    t = time.perf_counter()
    emb = embedder.embed(chips)  # one call: dlib batches the chips internally
    t_embed = time.perf_counter() - t
    wall_s = time.perf_counter() - wall0
    cpu_s = time.process_time() - cpu0

    row = {k: i for i, k in enumerate(emb.keys)}
    raw = emb.vectors * emb.extra["raw_norm"][:, None]
    ia = np.array([row[p.a] for p in pairs])
    ib = np.array([row[p.b] for p in pairs])
    cosine = np.einsum("ij,ij->i", emb.vectors[ia], emb.vectors[ib]).astype(np.float64)
    dist = np.linalg.norm(raw[ia] - raw[ib], axis=1).astype(np.float64)
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    cos_res = evaluate(cosine, labels, folds)
    euc_res = evaluate(-dist, labels, folds)  # negated: metrics expect higher = more similar
    for key in ("thresholds",):
        euc_res["kfold_accuracy"][key] = {f: -t for f, t in euc_res["kfold_accuracy"][key].items()}
    euc_res["mean_genuine"], euc_res["mean_impostor"] = (
        -euc_res["mean_genuine"],
        -euc_res["mean_impostor"],
    )
    fixed_correct = (dist < DLIB_THRESHOLD) == (labels == 1)
    euc_res["accuracy_at_0.6"] = float(fixed_correct.mean())
    euc_res["errors_at_0.6"] = {
        "false_non_match": int(((dist >= DLIB_THRESHOLD) & (labels == 1)).sum()),
        "false_match": int(((dist < DLIB_THRESHOLD) & (labels == 0)).sum()),
    }

    # cosine errors at each fold's cross-validated threshold, for inspection
    cos_th = cos_res["kfold_accuracy"]["thresholds"]
    errors = [
        {"fold": p.fold, "a": p.a, "b": p.b, "same": p.same, "cosine": round(float(c), 4)}
        for p, c in zip(pairs, cosine, strict=True)
        if (c >= cos_th[p.fold]) != bool(p.same)
    ]

    comparison: dict = {}
    baseline_path = lfw / "baseline_dlib_pairs.tsv"
    if baseline_path.is_file() and not args.limit:
        with open(baseline_path, newline="") as handle:
            base = np.array([float(r["dlib_dist"]) for r in csv.DictReader(handle, delimiter="\t")])
        diff = np.abs(dist - base)
        comparison = {
            "readme_accuracy_at_0.6": 0.9833,
            "readme_kfold_accuracy": 0.9822,
            "median_abs_distance_difference": float(np.median(diff)),
            "max_abs_distance_difference": float(diff.max()),
            "pairs_with_distance_difference_over_0.01": int((diff > 0.01).sum()),
            "pairs_deciding_differently_at_0.6": int(
                ((dist < DLIB_THRESHOLD) != (base < DLIB_THRESHOLD)).sum()
            ),
        }

    n = len(images)
    result = {
        "benchmark": "lfw-dev pairs.tsv, dlib-resnet via biofuse.modalities.face",
        "genuine_pairs": int(labels.sum()),
        "impostor_pairs": int((labels == 0).sum()),
        "model_id": embedder.model_id,
        "pairs": len(pairs),
        "images": n,
        "fallback_images": len(fallback),
        "fallback_pairs": int(sum(p.a in fallback or p.b in fallback for p in pairs)),
        "fallback_list": sorted(fallback),
        "images_with_several_faces": multi,
        "largest_face_not_nearest_centre": int(centre_differs),
        "cosine": cos_res,
        "euclidean_raw": euc_res,
        "cosine_errors_at_cv_threshold": errors,
        "vs_readme_baseline": comparison,
        "timing": {
            "ms_per_image_wall": 1000 * wall_s / n,
            "ms_per_image_cpu": 1000 * cpu_s / n,
            "ms_per_image_decode": 1000 * t_decode / n,
            "ms_per_image_detect_landmarks_chip": 1000 * t_detect / n,
            "ms_per_image_embed": 1000 * t_embed / n,
            "model_load_s": load_s,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "dlib": __import__("dlib").__version__,
            "loadavg_1min": os.getloadavg()[0],
        },
    }

    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "lfw_dlib.json", json.dumps(result, indent=2) + "\n")
    write_atomic(args.out / "lfw_dlib.md", markdown(result))
    write_pair_scores(args.out / "lfw_dlib_scores.tsv", pairs, cosine, dist)
    plot_roc(args.out / "lfw_dlib_roc.png", cosine, -dist, labels)
    console.print(markdown(result))
    return 0


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(r: dict) -> str:
    c, e, t = r["cosine"], r["euclidean_raw"], r["timing"]

    def kfold_row(name: str, res: dict, fmt: str) -> str:
        k = res["kfold_accuracy"]
        folds = " / ".join(pct(a) for a in k["per_fold"].values())
        ths = " / ".join(format(v, fmt) for v in k["thresholds"].values())
        return (
            f"| {name} | {pct(k['mean'])} ± {100 * k['std']:.2f} | {folds} | {ths} | "
            f"{pct(res['tar_at_far_1e-2'])} | {pct(res['eer'])} | {res['auc']:.4f} |"
        )

    lines = [
        f"# LFW (lfw-dev, {r['pairs']} pairs): biofuse face pipeline, dlib-resnet",
        "",
        "Written by `benchmarks/lfw_dlib.py`; do not edit by hand.",
        "",
        f"Model `{r['model_id']}`; {r['pairs']} pairs, {r['images']} images. Pipeline: "
        "JPEG decode, HOG detector (upsample 1), largest face, 5-point alignment, "
        "150x150 chip, ResNet 128-d. No HOG face: centre box (70,70)-(180,180).",
        "",
        "| score | 3-fold accuracy (mean ± std) | folds 1 / 2 / 3 | thresholds (other folds) "
        "| TAR @ FAR=1e-2 | EER | AUC |",
        "|---|---|---|---|---|---|---|",
        kfold_row("cosine (unit vectors)", c, ".4f"),
        kfold_row("Euclidean (raw dlib)", e, ".3f"),
        "",
        f"- Accuracy at dlib's Euclidean threshold 0.6: **{pct(e['accuracy_at_0.6'])}** "
        f"({e['errors_at_0.6']['false_non_match']} false non-matches, "
        f"{e['errors_at_0.6']['false_match']} false matches). "
        "README baseline: 98.33 % at 0.6, 98.22 % ± 0.16 three-fold.",
        f"- Mean score: cosine {c['mean_genuine']:.3f} genuine / {c['mean_impostor']:.3f} "
        f"impostor; distance {e['mean_genuine']:.3f} / {e['mean_impostor']:.3f}.",
        f"- No HOG face (centre-box fallback): **{r['fallback_images']}** images, in "
        f"{r['fallback_pairs']} pairs. Several faces: {r['images_with_several_faces']} images; "
        f"largest face is not the one nearest the centre in "
        f"{r['largest_face_not_nearest_centre']}.",
        f"- {r['images']} distinct images are used by the pairs; the README counts its 13 "
        "fallbacks over every file in the folder (1,666, template-only photos included).",
        f"- Cosine on unit vectors vs dlib's raw Euclidean distance: "
        f"{pct(c['kfold_accuracy']['mean'])} vs {pct(e['kfold_accuracy']['mean'])} 3-fold, "
        f"EER {pct(c['eer'])} vs {pct(e['eer'])}. dlib trained its metric on raw descriptors, "
        "whose length the unit vectors drop (`extra['raw_norm']` keeps it).",
        f"- TAR @ FAR=1e-2 is read on {r['impostor_pairs']} impostor pairs, so it allows "
        f"{int(FAR_TARGET * r['impostor_pairs'])} false matches.",
    ]
    cmp_ = r.get("vs_readme_baseline") or {}
    if cmp_:
        lines.append(
            f"- Against the README's per-pair distances: median |Δ| "
            f"{cmp_['median_abs_distance_difference']:.4f}, max "
            f"{cmp_['max_abs_distance_difference']:.3f}; "
            f"{cmp_['pairs_deciding_differently_at_0.6']} pairs decide differently at 0.6."
        )
    lines += [
        "",
        "| time per image | ms |",
        "|---|---|",
        f"| wall, whole pipeline | {t['ms_per_image_wall']:.1f} |",
        f"| CPU, whole pipeline | {t['ms_per_image_cpu']:.1f} |",
        f"| JPEG decode | {t['ms_per_image_decode']:.1f} |",
        f"| detect + landmarks + chip | {t['ms_per_image_detect_landmarks_chip']:.1f} |",
        f"| embed (batched) | {t['ms_per_image_embed']:.1f} |",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, load {r['machine']['loadavg_1min']:.1f}, "
        f"dlib {r['machine']['dlib']}, Python {r['machine']['python']}.",
        "",
        "![ROC](lfw_dlib_roc.png)",
        "",
    ]
    return "\n".join(lines)


def plot_roc(path: Path, cosine: np.ndarray, neg_dist: np.ndarray, labels: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for name, s in (("cosine", cosine), ("raw Euclidean", neg_dist)):
        curve = roc(s[labels == 1], s[labels == 0])
        far = np.clip(curve.far, 1e-3, 1.0)  # a log axis cannot show FAR 0
        ax.step(
            far,
            curve.tar,
            where="post",
            label=f"{name} (EER {pct(eer(s[labels == 1], s[labels == 0]))})",
        )
    ax.axvline(FAR_TARGET, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    ax.set_ylim(0.8, 1.001)
    ax.set_xlabel(f"false accept rate ({int((labels == 0).sum())} impostor pairs)")
    ax.set_ylabel(f"true accept rate ({int(labels.sum())} genuine pairs)")
    ax.set_title("lfw-dev, dlib-resnet via biofuse")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
