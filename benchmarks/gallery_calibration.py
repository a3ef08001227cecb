"""Is the rebuild's calibration refit from enrollment pairs safe? Cllr on LFW pairs, before/after.

The nightly rebuild (flows/rebuild.py) refits each modality's score -> LLR map on
leave-one-out enrollment pairs once there are enough of them, and identify then uses
it. This script enrolls LFW identities on photos that lfw-dev/pairs.tsv does not use through
the production face model, fits exactly as the rebuild does, and scores both the
shipped default and the refit on the 900 LFW pairs (the cosines in
results/lfw_dlib_scores.tsv, on which the default itself was fitted: its Cllr there is
in-sample, a lower bound), so the figures say how much worse the refit calibrates
comparisons it never saw.

    .venv/bin/python benchmarks/gallery_calibration.py   # writes results/gallery_calibration.*
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from biofuse.flows.actors import local_handle  # noqa: E402
from biofuse.flows.rebuild import calibration_shift, enrollment_pairs, fit_calibration  # noqa: E402
from biofuse.fusion.calibration import load_default  # noqa: E402
from biofuse.fusion.metrics import cllr  # noqa: E402

from biofuse import media  # noqa: E402
from biofuse.config import load_settings, shared_data_dir  # noqa: E402


def lfw_pair_cosines(scores_tsv: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 900 pair cosines benchmarks/lfw_dlib.py wrote (the default was fitted on them)."""
    with open(scores_tsv) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return np.array([float(r["cosine"]) for r in rows]), np.array([int(r["same"]) for r in rows])


def pair_images(lfw: Path) -> set[str]:
    """File names of every image pairs.tsv uses: enrollment photos are chosen among the rest."""
    with open(lfw / "pairs.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {
        f"{r[n]}_{int(r[i]):04d}.jpg"
        for r in rows
        for n, i in (("name1", "idx1"), ("name2", "idx2"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--photos", type=int, default=4, help="enrollment photos per identity")
    args = parser.parse_args()
    lfw = shared_data_dir() / "lfw-dev"
    used = pair_images(lfw)
    people = []
    for folder in sorted(p for p in (lfw / "images").iterdir() if p.is_dir()):
        free = [p for p in sorted(folder.glob("*.jpg")) if p.name not in used]
        if len(free) >= args.photos:
            people.append((folder.name, free[: args.photos]))
    people = people[: args.identities]

    face = local_handle("face", load_settings(modalities=["face"]))
    vectors, labels = [], []
    started = time.perf_counter()
    for name, photos in people:
        for photo in photos:
            (found,) = face([media.read_image(photo)])
            if len(found.vectors):  # the largest face is the subject, as in enrollment
                areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (
                    found.boxes[:, 3] - found.boxes[:, 1]
                )
                vectors.append(found.vectors[int(np.argmax(areas))])
                labels.append(name)
    embed_s = time.perf_counter() - started
    vectors_arr = np.stack(vectors)
    scores, targets = enrollment_pairs(vectors_arr, np.ones(len(vectors_arr)), labels)
    default = load_default(face.model_id)
    refit, counts = fit_calibration(face.model_id, scores, targets, min_pairs=20)

    cos, same = lfw_pair_cosines(REPO_ROOT / "benchmarks" / "results" / "lfw_dlib_scores.tsv")
    figures = {
        "model_id": face.model_id,
        "identities": len(people),
        "enrollment_rows": len(vectors_arr),
        **counts,
        "default": {
            "slope": default.slope,
            "offset": default.offset,
            "max_abs_llr": default.max_abs_llr,
            "fitted_on": default.fitted_on,
        },
        "refit": {"slope": refit.slope, "offset": refit.offset, "max_abs_llr": refit.max_abs_llr},
        "max_abs_llr_change": calibration_shift(default, refit),
        "lfw_pairs": int(len(same)),
        "cllr_default": cllr(default.transform(cos[same == 1]), default.transform(cos[same == 0])),
        "cllr_refit": cllr(refit.transform(cos[same == 1]), refit.transform(cos[same == 0])),
        "embed_s": round(embed_s, 1),
    }
    out = REPO_ROOT / "benchmarks" / "results" / "gallery_calibration"
    out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "# Calibration refit from enrollment pairs (flows/rebuild.py)\n\n"
        f"{figures['identities']} LFW identities, photos not used by pairs.tsv, "
        f"{figures['enrollment_rows']} enrollment photos ({args.photos} each), model "
        f"{figures['model_id']}: {counts['genuine_pairs']} genuine and "
        f"{counts['impostor_pairs']} impostor leave-one-out pairs.\n\n"
        "| calibration | slope | offset | Cllr on the 900 LFW pairs (bits) |\n|---|---|---|---|\n"
        f"| shipped default | {default.slope:.2f} | {default.offset:.2f} | "
        f"{figures['cllr_default']:.3f} |\n"
        f"| rebuild refit | {refit.slope:.2f} | {refit.offset:.2f} | "
        f"{figures['cllr_refit']:.3f} |\n\n"
        f"Largest LLR change over cosine [-0.2, 1]: {figures['max_abs_llr_change']:.2f}.\n"
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
