"""`biofuse calibrate`'s work: labelled score files -> calibrations, fusion and threshold.

Plain functions (no CLI, no Prefect) so that the nightly gallery rebuild can call them too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from biofuse.fusion.decide import (
    OperatorCalibration,
    fit_operator_calibration,
    leave_own_out,
    threshold_for_fpir,
)
from biofuse.fusion.learned import KINDS, LearnedFusion
from biofuse.fusion.metrics import dir_at_rank, fpir
from biofuse.fusion.report import LabelledScores, labelled_tables, read_rows


def trials(scores: LabelledScores, modalities: list[str]) -> tuple[np.ndarray, ...]:
    """Every (probe, identity) cell as a trial: (n, M) scores, (n, M) qualities, (n,) labels.

    Cells where no modality has a score are left out.
    """
    p, i = np.meshgrid(
        np.arange(len(scores.probes)), np.arange(len(scores.identities)), indexing="ij"
    )
    s = np.stack([scores.scores[m][p, i].reshape(-1) for m in modalities], axis=1)
    q = np.stack([scores.quality[m][p.reshape(-1)] for m in modalities], axis=1)
    q = np.where(np.isnan(s), np.nan, np.nan_to_num(q, nan=1.0))  # unknown quality: full
    labels = (scores.true_index[p.reshape(-1)] == i.reshape(-1)).astype(int)
    keep = ~np.all(np.isnan(s), axis=1)
    return s[keep], q[keep], labels[keep]


def calibrate_scores(
    scores: LabelledScores,
    model_ids: dict[str, str],
    method: str = "sum",
    target_fpir: float = 0.01,
    weights: dict[str, float] | None = None,
) -> tuple[OperatorCalibration, LearnedFusion | None]:
    """Fit per-modality calibrations and, for a learned `method`, the fusion model; then the
    open-set threshold on the fused scores for `target_fpir`."""
    modalities = sorted(scores.scores)
    missing = [m for m in modalities if m not in model_ids]
    if missing:
        raise ValueError(f"no model id for {missing}: pass --model-id MODALITY=MODEL_ID")
    rule = method if method not in KINDS else "sum"
    cal = fit_operator_calibration(
        scores.scores,
        scores.quality,
        scores.true_index,
        {m: model_ids[m] for m in modalities},
        rule,
        target_fpir,
        weights,
    )
    if method not in KINDS:
        return cal, None
    learned = LearnedFusion(method, modalities, [model_ids[m] for m in modalities])  # type: ignore[arg-type]
    learned.fit(*trials(scores, modalities))
    shape = (len(scores.probes), len(scores.identities))
    s = np.stack([scores.scores[m].reshape(-1) for m in modalities], axis=1)
    q = np.stack(
        [np.repeat(np.nan_to_num(scores.quality[m], nan=1.0), shape[1]) for m in modalities], axis=1
    )
    fused = np.nan_to_num(learned.llr(s, q).reshape(shape), nan=-np.inf)
    t = scores.true_index
    mated = t >= 0
    nonmated = fused[~mated] if (~mated).any() else leave_own_out(fused[mated], t[mated])
    tops = nonmated.max(axis=1)
    tops = tops[np.isfinite(tops)]
    cal.fusion_method = method
    cal.threshold = threshold_for_fpir(tops, target_fpir)
    finite = np.where(np.isfinite(fused[mated]), fused[mated], np.finfo(float).min)
    cal.report.update(
        fpir_at_threshold=fpir(tops[:, None], cal.threshold),
        dir_rank1_at_threshold=dir_at_rank(finite, t[mated], cal.threshold),
        learned_fusion=learned.report_,
    )
    return cal, learned


def calibrate_files(
    paths: list[Path],
    model_ids: dict[str, str],
    calibration_path: Path,
    learned_dir: Path,
    method: str = "sum",
    target_fpir: float = 0.01,
    weights: dict[str, float] | None = None,
) -> OperatorCalibration:
    """Read labelled score files, fit, and write what identify picks up."""
    rows = [row for path in paths for row in read_rows(path)]
    cal, learned = calibrate_scores(labelled_tables(rows), model_ids, method, target_fpir, weights)
    cal.report["score_files"] = [str(p) for p in paths]
    if learned is not None:
        learned.save(learned_dir)
        cal.report["learned_fusion_dir"] = str(learned_dir)
    cal.save(calibration_path)
    return cal
