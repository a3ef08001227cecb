"""Train the gait default (GEI + PCA + LDA) on CASIA-B subjects 001-074 only.

PCA and LDA sizes are chosen on a split inside the training subjects (fit on 001-050,
validate on 051-074 with the standard cross-view protocol: gallery nm-01..04, probes NM/BG/CL,
identical view excluded; the score is the mean of the three rank-1s). The chosen sizes are then
refitted on all 74 subjects. Test subjects 075-124 are never read here.

    nice -n 10 .venv/bin/python benchmarks/gait_train_gei.py

Writes modalities/gait/weights/gei-pca-lda-casiab.npz and gei-pca-lda-casiab.json (the
training report: data hash, sizes, sample counts, validation grid, time).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.modalities.gait.casiab import (  # noqa: E402
    TRAIN_SUBJECTS,
    SequenceLabel,
    cosine_similarity,
    data_sha256,
    iter_sequences,
    rank1_table,
)
from biofuse.modalities.gait.gei import (  # noqa: E402
    GeiPcaLda,
    gait_energy_image,
    principal_axes,
    usable_frames,
)

from biofuse.config import shared_data_dir  # noqa: E402

WEIGHTS = REPO / "modalities" / "gait" / "weights"
NAME = "gei-pca-lda-casiab"


def casiab_geis(
    root: Path, subjects: tuple[str, ...]
) -> tuple[np.ndarray, list[SequenceLabel], int]:
    """GEIs of every sequence with a non-empty frame, their labels and the frames used."""
    geis, labels, frames_used = [], [], 0
    for label, seq in iter_sequences(root, subjects):
        frames = usable_frames(seq)
        if len(frames):
            geis.append(gait_energy_image(frames))
            labels.append(label)
            frames_used += len(frames)
    return np.stack(geis), labels, frames_used


def validate(
    geis: np.ndarray,
    labels: list[SequenceLabel],
    fit_subjects: set[str],
    pca_dims: list[int],
    lda_fractions: list[float],
) -> list[dict]:
    """Standard-protocol rank-1 on the held-out training subjects for each size pair."""
    fit = np.array([lab.subject in fit_subjects for lab in labels])
    fit_labels = [lab.subject for lab, f in zip(labels, fit) if f]
    held_out = [lab for lab, f in zip(labels, fit) if not f]
    classes = len(set(fit_labels))
    axes = principal_axes(geis[fit])
    grid = []
    for pca_dim in pca_dims:
        for fraction in lda_fractions:
            lda_dim = max(1, round(fraction * (classes - 1)))
            model = GeiPcaLda.fit(geis[fit], fit_labels, pca_dim, lda_dim, axes)
            result = rank1_table(model.project(geis[~fit]), held_out, cosine_similarity).rank1
            score = float(np.mean(list(result.values())))
            grid.append(
                {"pca_dim": pca_dim, "lda_fraction": fraction, "lda_dim": lda_dim}
                | {k: round(v, 2) for k, v in result.items()}
                | {"mean": round(score, 2)}
            )
            print(f"pca {pca_dim:4d} lda {lda_dim:3d}: {result} mean {score:.2f}", flush=True)
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "casiab")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--subjects", type=int, default=74, help="first N training subjects")
    parser.add_argument("--val-from", type=int, default=51, help="first validation subject")
    parser.add_argument("--pca-dims", type=int, nargs="+", default=[100, 200, 300, 400, 600])
    parser.add_argument("--lda-fractions", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()

    start = time.perf_counter()
    subjects = TRAIN_SUBJECTS[: args.subjects]
    geis, labels, frames_used = casiab_geis(args.data, subjects)
    gei_s = time.perf_counter() - start
    print(f"{len(labels)} GEIs from {frames_used} frames in {gei_s:.1f} s", flush=True)

    fit_subjects = {s for s in subjects if int(s) < args.val_from}
    grid = validate(geis, labels, fit_subjects, args.pca_dims, args.lda_fractions)
    best = max(grid, key=lambda row: row["mean"])
    classes = len(subjects)
    lda_dim = max(1, round(best["lda_fraction"] * (classes - 1)))
    fit_start = time.perf_counter()
    model = GeiPcaLda.fit(geis, [lab.subject for lab in labels], best["pca_dim"], lda_dim)
    fit_s = time.perf_counter() - fit_start

    centred = geis - model.pca_mean
    energy = float(np.square(centred @ model.pca_basis).sum() / np.square(centred).sum())
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / f"{NAME}.npz"
    model.save(weights)
    report = {
        "model": NAME,
        "data": "CASIA-B (../shared/data/casiab, bit-packed OpenGait pretreatment)",
        "data_sha256": data_sha256(args.data, subjects),
        "subjects": f"{subjects[0]}-{subjects[-1]}",
        "sequences": len(labels),
        "frames": frames_used,
        "validation": {
            "fit_subjects": f"{subjects[0]}-{args.val_from - 1:03d}",
            "held_out_subjects": f"{args.val_from:03d}-{subjects[-1]}",
            "protocol": "gallery nm-01..04; probes NM/BG/CL; identical view excluded; rank-1 %",
            "grid": grid,
            "chosen": best,
        },
        "pca_dim": int(model.pca_basis.shape[1]),
        "pca_energy": round(energy, 4),
        "lda_dim": model.dim,
        "weights_bytes": weights.stat().st_size,
        "seconds": {
            "gei": round(gei_s, 1),
            "final_fit": round(fit_s, 1),
            "total": round(time.perf_counter() - start, 1),
        },
        "machine": f"{platform.machine()}, numpy {np.__version__}",
    }
    (args.out / f"{NAME}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("pca_dim", "lda_dim", "pca_energy", "seconds")}))


if __name__ == "__main__":
    main()
