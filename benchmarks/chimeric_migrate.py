"""Cross-model alignment on LFW-dev: can a gallery from one face model be searched with another?

Only one face network runs offline here (dlib's ResNet), so the "models" are that network fed
three different real crops of the same face box, each a different embedding space in practice:
  A  dlib's own `get_face_chip` (its 5-point alignment, 150 px, padding 0.25): the shipped model;
  B  our ArcFace 5-point alignment placed at dlib's scale (benchmarks/lfw_alignment.py);
  C  the ArcFace 112 template naively scaled to 150 px (a tighter crop than dlib was trained on).
For each ordered pair (X -> Y): 3-fold cross-validation over LFW-dev's person-disjoint folds;
the map (fusion/migrate.py: ridge affine or orthogonal Procrustes) is fitted on the images of
two folds (the same image through both), then the held-out fold's 300 pairs are scored with
the first image through X ("old gallery") and the second through Y ("new probe"): before
(raw cosine across spaces), after (mapped X vs Y), and Y vs Y for reference. dlib -> AdaFace
could not be measured: no AdaFace weights are available offline.

    .venv/bin/python benchmarks/chimeric_migrate.py   # writes benchmarks/results/chimeric_migrate.*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.fusion import metrics  # noqa: E402
from biofuse.fusion.migrate import EmbeddingMap  # noqa: E402
from chimeric_data import CACHE  # noqa: E402
from lfw_dlib import CENTRE_BOX, decode_rgb, read_pairs  # noqa: E402

from biofuse.config import shared_data_dir  # noqa: E402

OUT = REPO_ROOT / "benchmarks" / "results"
MODELS = {"A": "dlib chip", "B": "ArcFace alignment at dlib scale", "C": "ArcFace 112 x 150/112"}


def embed_three(lfw: Path, images: list[str]) -> dict[str, np.ndarray]:
    import dlib
    from biofuse.modalities.face.align import (
        ARCFACE_TEMPLATE_112,
        align_face,
        apply_transform,
        similarity_transform,
    )
    from biofuse.modalities.face.dlib_face import CHIP_PADDING, CHIP_SIZE
    from lfw_alignment import dlib_chip_template, dlib_reference_models

    detector, sp5, net, lm68 = dlib_reference_models()
    dlib_tpl = dlib_chip_template()
    rgbs, chips_a, ours5, ours_in_dlib = [], [], [], []
    for rel in images:
        rgb = decode_rgb(lfw / rel)
        rects = detector(rgb, 1)
        rect = (
            max(rects, key=lambda r: r.area())
            if len(rects)
            else dlib.rectangle(*(round(v) for v in CENTRE_BOX))
        )
        shape = sp5(rgb, rect)
        p5 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        chips_a.append(
            np.ascontiguousarray(
                dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            )
        )
        q5 = lm68.landmarks5(rgb, (rect.left(), rect.top(), rect.right(), rect.bottom()))
        ours5.append(q5)
        ours_in_dlib.append(apply_transform(similarity_transform(p5, dlib_tpl), q5))
        rgbs.append(rgb)
    fit = similarity_transform(ARCFACE_TEMPLATE_112, np.mean(ours_in_dlib, axis=0))
    tpl_b = apply_transform(fit, ARCFACE_TEMPLATE_112)
    tpl_c = ARCFACE_TEMPLATE_112 * CHIP_SIZE / 112
    chips_b = [
        align_face(r, q, size=CHIP_SIZE, template=tpl_b) for r, q in zip(rgbs, ours5, strict=True)
    ]
    chips_c = [
        align_face(r, q, size=CHIP_SIZE, template=tpl_c) for r, q in zip(rgbs, ours5, strict=True)
    ]

    def embed(chips: list[np.ndarray]) -> np.ndarray:
        raw = np.array([np.asarray(d) for d in net.compute_face_descriptor(chips)])
        return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)

    return {"A": embed(chips_a), "B": embed(chips_b), "C": embed(chips_c)}


def verify(gal: np.ndarray, probe: np.ndarray, ia, ib, labels, folds) -> dict:
    s = np.einsum("ij,ij->i", gal[ia], probe[ib]).astype(np.float64)
    acc = metrics.kfold_verification_accuracy(s, labels, folds)
    gen, imp = s[labels == 1], s[labels == 0]
    return {
        "accuracy_3fold": acc.mean,
        "accuracy_std": acc.std,
        "eer": metrics.eer(gen, imp),
        "tar_at_far_0.01": metrics.tar_at_far(gen, imp, 1e-2),
        "scores": s,
    }


def main() -> int:
    lfw = shared_data_dir() / "lfw-dev"
    pairs = read_pairs(lfw)
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / "chimeric_migrate_abc.npz"
    if cache.exists():
        with np.load(cache) as z:
            emb = {k: z[k] for k in MODELS}
    else:
        emb = embed_three(lfw, images)
        np.savez(cache, **emb)
    row = {rel: i for i, rel in enumerate(images)}
    ia = np.array([row[p.a] for p in pairs])
    ib = np.array([row[p.b] for p in pairs])
    labels = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    image_fold = np.zeros(len(images), int)
    for p in pairs:
        image_fold[row[p.a]] = image_fold[row[p.b]] = p.fold
    results: dict[str, dict] = {}
    for x, y in (("A", "B"), ("A", "C"), ("C", "A"), ("B", "C")):
        entry: dict[str, dict] = {
            "before": verify(emb[x], emb[y], ia, ib, labels, folds),
            "reference_same_model": verify(emb[y], emb[y], ia, ib, labels, folds),
        }
        for method in ("procrustes", "ridge"):
            scores = np.zeros(len(pairs))
            for f in np.unique(folds):
                train = image_fold != f
                m = EmbeddingMap(method, alpha=0.1).fit(emb[x][train], emb[y][train])
                mapped = m.transform(emb[x])
                held = folds == f
                scores[held] = np.einsum("ij,ij->i", mapped[ia[held]], emb[y][ib[held]])
            gen, imp = scores[labels == 1], scores[labels == 0]
            acc = metrics.kfold_verification_accuracy(scores, labels, folds)
            entry[f"after_{method}"] = {
                "accuracy_3fold": acc.mean,
                "accuracy_std": acc.std,
                "eer": metrics.eer(gen, imp),
                "tar_at_far_0.01": metrics.tar_at_far(gen, imp, 1e-2),
            }
        same = np.einsum("ij,ij->i", emb[x], emb[y])
        entry["same_image_cosine_across_models"] = {
            "mean": float(same.mean()),
            "min": float(same.min()),
        }
        for v in entry.values():
            v.pop("scores", None)
        results[f"{x}->{y}"] = entry
    report = {
        "models": MODELS,
        "pairs": len(pairs),
        "images": len(images),
        "protocol": "3-fold by LFW-dev fold: map fitted on two folds' images, pairs of the third "
        "scored with image 1 through the source model and image 2 through the target model",
        "adaface": "not measured: no AdaFace weights offline",
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "chimeric_migrate.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Cross-model gallery migration on LFW-dev (benchmarks/chimeric_migrate.py)",
        "",
        f"{len(pairs)} pairs, {len(images)} images. Models: "
        + "; ".join(f"{k} = dlib ResNet on {v}" for k, v in MODELS.items())
        + ". "
        + report["protocol"]
        + ". dlib -> AdaFace could not be measured (no AdaFace "
        "weights offline).",
        "",
        "| gallery -> probe model | same image cos | before | after procrustes | after ridge "
        "| target alone |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        cell = lambda d: f"{100 * d['accuracy_3fold']:.2f} % (EER {100 * d['eer']:.2f} %)"  # noqa: E731
        same = e["same_image_cosine_across_models"]["mean"]
        cells = [cell(e[k]) for k in ("before", "after_procrustes", "after_ridge")]
        lines.append(
            f"| {name} | {same:.3f} | "
            + " | ".join(cells)
            + f" | {cell(e['reference_same_model'])} |"
        )
    (OUT / "chimeric_migrate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
