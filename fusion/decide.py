"""Decisions from fused scores: closed-set rank-k lists and the open-set threshold for a
target false-positive identification rate, fitted on the operator's labelled data.

`OperatorCalibration` is what `biofuse calibrate` writes and `identify` reads: one score ->
LLR map per modality (with the model id it was fitted for), the fusion method, and the
threshold on the fused score that met the FPIR target on the labelled probes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.metrics import dir_at_rank, fpir
from biofuse.fusion.rules import RULES, fuse_rule

from biofuse.errors import GalleryError


def top_k(fused: np.ndarray, k: int) -> np.ndarray:
    """(P, k) column indices of each row's k best scores, best first; NaN ranks last.

    Ties keep column order (stable), so the same input always gives the same list.
    """
    f = np.nan_to_num(np.asarray(fused, np.float64), nan=-np.inf)
    return np.argsort(-f, axis=1, kind="stable")[:, :k]


def threshold_for_fpir(nonmated_top: np.ndarray, target_fpir: float) -> float:
    """The smallest threshold t with FPIR(t) = share of non-mated tops >= t <= target.

    Candidates are the non-mated top scores themselves (a tie with t is a false positive,
    as in `metrics.fpir`), so t lands just on the next distinct score above the budget:
    the lowest threshold, hence the fewest misses, the budget allows. With a budget below
    1/n the threshold is above every non-mated score (the next float up).
    """
    tops = np.sort(np.asarray(nonmated_top, np.float64).reshape(-1))
    if tops.size == 0 or not np.isfinite(tops).all():
        raise ValueError("need finite top scores of at least one non-mated probe")
    if not 0.0 <= target_fpir <= 1.0:
        raise ValueError("target_fpir must be within [0, 1]")
    candidates = np.unique(tops)
    rates = (tops.size - np.searchsorted(tops, candidates, side="left")) / tops.size
    ok = np.flatnonzero(rates <= target_fpir)
    return float(candidates[ok[0]]) if ok.size else float(np.nextafter(tops[-1], np.inf))


def leave_own_out(fused: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """Each mated probe's row without its own identity: a non-mated search of the rest.

    When the labelled set has no probes of people outside the gallery, this is the honest
    stand-in: the probe's best impostor score is what a stranger like it would get.
    """
    f = np.asarray(fused, np.float64)
    keep = np.ones(f.shape, bool)
    keep[np.arange(len(f)), np.asarray(true_index)] = False
    return f[keep].reshape(len(f), f.shape[1] - 1)


@dataclass
class OperatorCalibration:
    """Per-modality calibration + fusion method + open-set threshold, fitted on labelled data."""

    calibrations: dict[str, LinearCalibration]
    model_ids: dict[str, str]
    fusion_method: str = "sum"
    weights: dict[str, float] = field(default_factory=dict)
    threshold: float = float("inf")
    target_fpir: float = 0.01
    report: dict[str, Any] = field(default_factory=dict)

    def fuse(
        self, scores: dict[str, np.ndarray], quality: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """(P, I) fused score from raw per-modality (P, I) tables (NaN = absent)."""
        names = [m for m in self.calibrations if m in scores]
        if not names:
            raise GalleryError(f"no calibrated modality among {sorted(scores)}")
        llrs = [self.calibrations[m].transform(scores[m]) for m in names]
        if self.fusion_method not in RULES:
            raise GalleryError(
                f"fusion method {self.fusion_method!r} is a learned fusion: apply it with "
                "biofuse.fusion.learned.LearnedFusion"
            )
        weights = [self.weights.get(m, 1.0) for m in names]
        quals = [quality[m] for m in names] if quality is not None else None
        return fuse_rule(llrs, self.fusion_method, weights, quals)  # type: ignore[arg-type]

    def check_model_ids(self, model_ids: dict[str, str]) -> None:
        wrong = {
            m: i for m, i in model_ids.items() if m in self.model_ids and self.model_ids[m] != i
        }
        if wrong:
            raise GalleryError(
                f"the calibration was fitted for {self.model_ids} but identify uses {wrong}; "
                "refit it on labelled scores of these models (`biofuse calibrate`)"
            )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["calibrations"] = {m: asdict(c) for m, c in self.calibrations.items()}
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> OperatorCalibration:
        data = json.loads(Path(path).read_text())
        data["calibrations"] = {m: LinearCalibration(**c) for m, c in data["calibrations"].items()}
        return cls(**data)


def fit_operator_calibration(
    scores: dict[str, np.ndarray],
    quality: dict[str, np.ndarray],
    true_index: np.ndarray,
    model_ids: dict[str, str],
    fusion_method: str = "sum",
    target_fpir: float = 0.01,
    weights: dict[str, float] | None = None,
) -> OperatorCalibration:
    """Fit calibrations and the open-set threshold on a labelled probe set.

    `scores[m]` is (P, I) raw scores (NaN = absent), `quality[m]` (P,), `true_index` (P,)
    the probe's gallery column or -1 for a probe of someone not enrolled (non-mated). The
    threshold meets `target_fpir` on the non-mated probes; with none, on the mated probes'
    leave-own-out rows (see `leave_own_out`).
    """
    t = np.asarray(true_index).reshape(-1)
    mated = t >= 0
    if not mated.any():
        raise ValueError("the labelled set has no mated probe (true_index >= 0)")
    calibrations = {}
    for m, s in scores.items():
        labels = np.zeros(s.shape, int)
        labels[np.flatnonzero(mated), t[mated]] = 1
        have = ~np.isnan(s)
        calibrations[m] = LinearCalibration(
            fitted_on=f"{int(labels[have].sum())} genuine and {int((1 - labels[have]).sum())} "
            f"impostor trials, fitted {dt.date.today().isoformat()} by biofuse calibrate"
        ).fit(s[have], labels[have])
    cal = OperatorCalibration(calibrations, model_ids, fusion_method, weights or {})
    fused = cal.fuse(scores, quality)
    fused = np.nan_to_num(fused, nan=-np.inf)
    if (~mated).any():
        nonmated, how = fused[~mated], "non-mated probes"
    else:
        nonmated, how = leave_own_out(fused[mated], t[mated]), "leave-own-out mated probes"
    tops = nonmated.max(axis=1)
    tops = tops[np.isfinite(tops)]
    cal.threshold = threshold_for_fpir(tops, target_fpir)
    cal.target_fpir = target_fpir
    finite = np.where(np.isfinite(fused[mated]), fused[mated], np.finfo(float).min)
    cal.report = {
        "mated_probes": int(mated.sum()),
        "nonmated_probes": int(len(tops)),
        "threshold_from": how,
        "fpir_at_threshold": fpir(tops[:, None], cal.threshold),
        "dir_rank1_at_threshold": dir_at_rank(finite, t[mated], cal.threshold),
        "fitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return cal
