"""Fuse calibrated per-modality LLRs and decide: ranked candidates, open-set 'unknown'."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.rules import fuse_rule
from biofuse.fusion.scores import ModalityScores

if TYPE_CHECKING:
    from biofuse.fusion.learned import LearnedFusion


def sum_llr(llrs: list[np.ndarray]) -> np.ndarray:
    """Sum of the available modality LLRs (independent evidence); NaN = absent, masked.

    One modality fused alone returns that modality unchanged; a cell with no
    evidence in any modality stays NaN.
    """
    return fuse_rule(llrs, "sum")


def open_set_threshold(n_identities: int, prior_in_gallery: float = 0.5) -> float:
    """The fused LLR above which naming the top identity is more likely right than wrong.

    If the probe is in the gallery with probability p, spread evenly over N
    identities, one given identity has prior odds (p/N) / (1 - p/N); its posterior
    odds exceed 1 when the LLR exceeds the log of the inverse. A bigger gallery
    thus needs stronger evidence, which is what keeps false alarms from growing
    with the gallery. `identify` passes, per probe, the identities comparable with it
    (those it shares a modality with), not the whole gallery: see `identify`.
    """
    if n_identities < 1:
        raise ValueError("an empty gallery has no threshold")
    if not 0 < prior_in_gallery < 1:
        raise ValueError("prior_in_gallery must be in (0, 1)")
    prior = prior_in_gallery / n_identities
    return float(np.log((1 - prior) / prior))


@dataclass
class Candidate:
    identity: str
    rank: int
    fused_llr: float
    per_modality: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Decision:
    probe: str
    candidates: list[Candidate]
    decision: str  # the identity name, or "unknown"
    modalities: list[str]  # which modalities had evidence for this probe
    # The basis it was decided on, stored with each result so that it can be explained later
    # exactly as it was taken (a later enrollment changes the gallery, not this decision).
    threshold_llr: float | None = None  # None: nothing comparable, no threshold was applied
    comparable: int = 0  # identities sharing a modality with the probe: the open-set N
    prior_in_gallery: float | None = None
    threshold_from: str = "prior"  # "prior": open_set_threshold; "operator": a fitted one
    fusion_method: str = "sum"
    gallery_version: int | None = None  # set by the identify flow; None: live enrollments


def identify(
    tables: list[ModalityScores],
    calibrations: dict[str, LinearCalibration],
    top_k: int = 5,
    threshold_llr: float | None = None,
    prior_in_gallery: float = 0.5,
    method: str = "sum",
    weights: dict[str, float] | None = None,
    learned: LearnedFusion | None = None,
    comparable_n: list[int] | None = None,
) -> list[Decision]:
    """Rank identities per probe by fused LLR; the top one is named if above the threshold.

    Fusion is the rule `method` (biofuse.fusion.rules) over the calibrated LLRs, or `learned` when
    given (it refuses tables of other model ids). The threshold defaults to
    `open_set_threshold(N, prior_in_gallery)`, which assumes LLR outputs; thresholds for
    other methods come from `biofuse calibrate`.

    Only comparable identities take part for a probe: those with a score in at least one
    modality the probe has (a photo-only enrollee is not comparable with a voice-only
    probe). The others get no number: they are not ranked, not returned, and not counted
    in N. So `prior_in_gallery` reads as the prior that the probe is one of the identities
    it can be compared with, and enrolling someone who shares no modality with a probe
    changes neither its candidates nor its decision. A probe comparable with nobody is
    "unknown" with no candidates and no threshold.

    `comparable_n`, per probe, is N when the tables hold only a shortlist of the gallery
    (identify on a large gallery, fusion/search.py): N is then counted on the whole gallery.
    """
    if not tables:
        return []
    probes, identities = tables[0].probes, tables[0].identities
    for t in tables[1:]:
        if t.probes != probes or t.identities != identities:
            raise ValueError("score tables must share probes and identities")
    llrs = [calibrations[t.modality].transform(t.scores) for t in tables]
    if learned is not None:
        fused = learned.fuse_tables(tables)
        fusion_method = learned.kind
    else:
        w = [(weights or {}).get(t.modality, 1.0) for t in tables]
        fused = fuse_rule(llrs, method, w, [t.quality for t in tables])  # type: ignore[arg-type]
        fusion_method = method
    # a cell is comparable when some modality scored it; the rest get no number at all
    comparable = np.any([~np.isnan(t.scores) for t in tables], axis=0)
    fused = np.where(comparable, fused, np.nan)
    basis = {
        "prior_in_gallery": prior_in_gallery,
        "threshold_from": "prior" if threshold_llr is None else "operator",
        "fusion_method": fusion_method,
    }
    decisions = []
    for p, probe in enumerate(probes):
        present = [t.modality for t in tables if not np.all(np.isnan(t.scores[p]))]
        row = fused[p]
        n = int(np.count_nonzero(~np.isnan(row)))
        if not present or n == 0:
            decisions.append(Decision(probe, [], "unknown", present, None, 0, **basis))
            continue
        if comparable_n is not None:
            n, shown = int(comparable_n[p]), n
        else:
            shown = n
        threshold = threshold_llr
        if threshold is None:
            threshold = open_set_threshold(n, prior_in_gallery)
        order = np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable")[: min(top_k, shown)]
        candidates = []
        for rank, i in enumerate(order, start=1):
            per = {
                t.modality: {"score": float(t.scores[p, i]), "llr": float(llr[p, i])}
                for t, llr in zip(tables, llrs)
                if not np.isnan(t.scores[p, i])
            }
            candidates.append(Candidate(identities[i], rank, float(row[i]), per))
        best = candidates[0]
        decision = best.identity if best.fused_llr > threshold else "unknown"
        decisions.append(
            Decision(probe, candidates, decision, present, float(threshold), n, **basis)
        )
    return decisions
