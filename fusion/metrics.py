"""Verification and identification metrics, in pure numpy.

Convention everywhere: a higher score means "more similar", and a comparison is accepted
when `score >= threshold`. Pass negated distances for distance-type scores. Tied scores are
never split by a threshold: every threshold is either a score itself (ROC) or a point
strictly between two distinct scores (accuracy), so results do not depend on input order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtri


class RocCurve(NamedTuple):
    """Operating points, from the strictest threshold (+inf: accept nothing) downwards."""

    far: np.ndarray  # impostor comparisons accepted / impostor comparisons
    tar: np.ndarray  # genuine comparisons accepted / genuine comparisons
    thresholds: np.ndarray  # accept when score >= threshold; thresholds[0] = +inf

    @property
    def frr(self) -> np.ndarray:
        return 1.0 - self.tar


class DetCurve(NamedTuple):
    """The ROC's operating points as error rates, for DET plots (probit axes)."""

    fmr: np.ndarray  # false match rate: impostor comparisons accepted
    fnmr: np.ndarray  # false non-match rate: genuine comparisons rejected
    thresholds: np.ndarray  # accept when score >= threshold; thresholds[0] = +inf


class FnirAtFpir(NamedTuple):
    """Open-set miss rate at the threshold that keeps false positives within budget."""

    fnir: float
    threshold: float


class KFoldResult(NamedTuple):
    """Per held-out fold: accuracy at the threshold chosen on the other folds."""

    folds: np.ndarray  # fold ids, sorted
    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population std (ddof=0), as the LFW protocol reports it."""
        return float(np.std(self.accuracies))


def _scores(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"no {what} scores")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} scores contain NaN or inf")
    return x


def roc(genuine: np.ndarray, impostor: np.ndarray) -> RocCurve:
    """FAR and TAR at every distinct score used as a threshold (plus +inf first)."""
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    thresholds = np.unique(np.concatenate([gen, imp]))[::-1]
    gen_sorted = np.sort(gen)
    imp_sorted = np.sort(imp)
    # count of scores >= t = n - (count of scores < t)
    tar = (gen.size - np.searchsorted(gen_sorted, thresholds, side="left")) / gen.size
    far = (imp.size - np.searchsorted(imp_sorted, thresholds, side="left")) / imp.size
    return RocCurve(
        far=np.concatenate([[0.0], far]),
        tar=np.concatenate([[0.0], tar]),
        thresholds=np.concatenate([[np.inf], thresholds]),
    )


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate: where FAR = FRR, linearly interpolated between ROC points.

    Along the ROC, FRR - FAR falls from 1 (accept nothing) to -1 (accept all); the EER is
    read where that difference crosses 0.
    """
    curve = roc(genuine, impostor)
    diff = curve.frr - curve.far
    i = int(np.argmax(diff <= 0))  # first point where FRR <= FAR; exists since diff[-1] = -1
    if diff[i] == 0:
        return float(curve.far[i])
    alpha = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(curve.far[i - 1] + alpha * (curve.far[i] - curve.far[i - 1]))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Best TAR at any threshold whose FAR does not exceed `far` (no interpolation)."""
    if not 0.0 <= far <= 1.0:
        raise ValueError("far must be within [0, 1]")
    curve = roc(genuine, impostor)
    return float(curve.tar[curve.far <= far].max())


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Midpoints between distinct scores, plus one below all and one above all."""
    distinct = np.unique(scores)
    mids = (distinct[:-1] + distinct[1:]) / 2.0
    return np.concatenate([[distinct[0] - 1.0], mids, [distinct[-1] + 1.0]])


def _labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} scores")
    if not np.isin(labels, [0, 1]).all():
        raise ValueError("labels must be 0 (impostor) or 1 (genuine)")
    return labels.astype(bool)


def best_threshold_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score >= threshold` as "genuine".

    Among equally accurate thresholds the middle one (by position) is returned, which keeps
    the choice away from the edge of the best range and so generalises better across folds.
    """
    s = _scores(scores, "pair")
    y = _labels(labels, s.size)
    cands = _candidate_thresholds(s)
    # correct(t) = genuine with s >= t  +  impostors with s < t
    gen_sorted = np.sort(s[y])
    imp_sorted = np.sort(s[~y])
    gen_accepted = gen_sorted.size - np.searchsorted(gen_sorted, cands, side="left")
    imp_rejected = np.searchsorted(imp_sorted, cands, side="left")
    accuracy = (gen_accepted + imp_rejected) / s.size
    best = np.flatnonzero(accuracy == accuracy.max())
    pick = int(best[len(best) // 2])
    return float(cands[pick]), float(accuracy[pick])


def kfold_verification_accuracy(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray
) -> KFoldResult:
    """Accuracy on each fold at the threshold chosen on all the other folds (LFW protocol).

    `folds` gives each pair's fold id; there must be at least two folds.
    """
    s = _scores(scores, "pair")
    y = _labels(labels, s.size)
    f = np.asarray(folds).reshape(-1)
    if f.shape[0] != s.size:
        raise ValueError(f"{f.shape[0]} fold ids for {s.size} scores")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("k-fold evaluation needs at least two folds")
    accs, ths = [], []
    for k in ids:
        held = f == k
        threshold, _ = best_threshold_accuracy(s[~held], y[~held].astype(int))
        accs.append(float(np.mean((s[held] >= threshold) == y[held])))
        ths.append(threshold)
    return KFoldResult(ids, np.array(accs), np.array(ths))


def cmc(score_matrix: np.ndarray, true_index: np.ndarray, max_rank: int) -> np.ndarray:
    """Closed-set identification: cmc[k-1] = share of probes whose true identity is in the top k.

    `score_matrix` is (probes, gallery identities). A probe's rank is the number of gallery
    scores >= its true score, so ties count against it (a pessimistic rank).
    """
    m = np.asarray(score_matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"score_matrix must be (probes, gallery) and non-empty, got {m.shape}")
    if np.isnan(m).any():
        raise ValueError("score_matrix contains NaN")
    t = np.asarray(true_index).reshape(-1)
    if t.shape[0] != m.shape[0]:
        raise ValueError(f"{t.shape[0]} true indices for {m.shape[0]} probes")
    if not np.issubdtype(t.dtype, np.integer) or (t < 0).any() or (t >= m.shape[1]).any():
        raise ValueError("true_index must be gallery column indices (closed set)")
    if max_rank < 1:
        raise ValueError("max_rank must be >= 1")
    true_scores = m[np.arange(m.shape[0]), t]
    ranks = (m >= true_scores[:, None]).sum(axis=1)
    return np.array([(ranks <= k).mean() for k in range(1, max_rank + 1)])


def cllr(target_llrs: np.ndarray, nontarget_llrs: np.ndarray) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer): 0 is perfect, 1 is an LLR that says nothing.

    Cllr = (mean log2(1 + e^-llr) over targets + mean log2(1 + e^llr) over non-targets) / 2,
    with natural-log LLRs. It penalises miscalibration as well as poor discrimination, so it
    is the figure for judging a score -> LLR map. Infinite LLRs are allowed (a confident
    correct one costs 0, a confident wrong one costs inf); NaN is not.
    """
    tar = np.asarray(target_llrs, dtype=np.float64).reshape(-1)
    non = np.asarray(nontarget_llrs, dtype=np.float64).reshape(-1)
    for x, what in ((tar, "target"), (non, "non-target")):
        if x.size == 0:
            raise ValueError(f"no {what} LLRs")
        if np.isnan(x).any():
            raise ValueError(f"{what} LLRs contain NaN")
    # log(1 + e^x) as logaddexp(0, x): exact for large |x| where exp would overflow
    cost_tar = np.mean(np.logaddexp(0.0, -tar)) / np.log(2.0)
    cost_non = np.mean(np.logaddexp(0.0, non)) / np.log(2.0)
    return float(0.5 * (cost_tar + cost_non))


def det(genuine: np.ndarray, impostor: np.ndarray) -> DetCurve:
    """FMR and FNMR at every ROC threshold: the same points as `roc`, as two error rates.

    A DET plot draws FNMR against FMR on probit axes (see `probit`), where the error rates
    of Gaussian-like score distributions fall on near-straight lines.
    """
    curve = roc(genuine, impostor)
    return DetCurve(fmr=curve.far, fnmr=curve.frr, thresholds=curve.thresholds)


def probit(p: np.ndarray | float, eps: float = 1e-9) -> np.ndarray:
    """Standard-normal quantile of `p`, clipped to [eps, 1 - eps] so 0 and 1 stay finite.

    Error rates of exactly 0 or 1 (the ends of every DET curve) would otherwise map to
    -inf / +inf and break plot limits; clipping puts them just past the plotted range.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError("eps must be within (0, 0.5)")
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.asarray(ndtri(q))


def _search_matrix(scores: np.ndarray, what: str) -> np.ndarray:
    m = np.asarray(scores, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{what} scores must be (probes, gallery) and non-empty, got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{what} scores contain NaN or inf")
    return m


def _mated_true_scores_and_ranks(
    mated_scores: np.ndarray, true_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each mated probe's score for its own identity, and its pessimistic rank (as in `cmc`)."""
    m = _search_matrix(mated_scores, "mated")
    t = np.asarray(true_index).reshape(-1)
    if t.shape[0] != m.shape[0]:
        raise ValueError(f"{t.shape[0]} true indices for {m.shape[0]} mated probes")
    if not np.issubdtype(t.dtype, np.integer) or (t < 0).any() or (t >= m.shape[1]).any():
        raise ValueError("true_index must be gallery column indices (mated probes are enrolled)")
    true_scores = m[np.arange(m.shape[0]), t]
    ranks = (m >= true_scores[:, None]).sum(axis=1)
    return true_scores, ranks


def dir_at_rank(
    mated_scores: np.ndarray, true_index: np.ndarray, threshold: float, rank: int = 1
) -> float:
    """Detection and identification rate (ISO/IEC 19795-1, NIST FRVT 1:N): share of mated
    probes whose true identity is at rank <= `rank` with a score >= `threshold`.

    Open-set search must both find the mate and score it high enough to report it, so DIR is
    the closed-set CMC cut by the threshold. Ties: a probe's rank counts every gallery score
    >= its true score (a tie ranks it below the tied identity, as in `cmc`), and a true score
    equal to the threshold is accepted.
    """
    if rank < 1:
        raise ValueError("rank must be >= 1")
    true_scores, ranks = _mated_true_scores_and_ranks(mated_scores, true_index)
    return float(np.mean((ranks <= rank) & (true_scores >= threshold)))


def fpir(nonmated_scores: np.ndarray, threshold: float) -> float:
    """False positive identification rate: share of non-mated probes (nobody enrolled) whose
    top gallery score is >= `threshold`, i.e. that would return any candidate at all.

    Ties: a top score equal to the threshold is a false positive.
    """
    top = _search_matrix(nonmated_scores, "non-mated").max(axis=1)
    return float(np.mean(top >= threshold))


def fnir_at_fpir(
    mated_scores: np.ndarray,
    true_index: np.ndarray,
    nonmated_scores: np.ndarray,
    target_fpir: float,
    rank: int = 1,
) -> FnirAtFpir:
    """FNIR = 1 - DIR(rank) at the smallest threshold whose FPIR is <= `target_fpir`.

    The smallest admissible threshold gives the lowest miss rate the false-positive budget
    allows, which is how FRVT 1:N reports FNIR at fixed FPIR. Thresholds are drawn from the
    scores themselves (non-mated top scores and mated true scores) plus +inf, so a threshold
    never splits tied scores and the result does not depend on probe order; a non-mated top
    score tied with the threshold counts as a false positive, so with a tight budget the
    threshold lands on the next distinct score above the tie. With no admissible score the
    threshold is +inf (accept nothing, FNIR 1).
    """
    if not 0.0 <= target_fpir <= 1.0:
        raise ValueError("target_fpir must be within [0, 1]")
    if rank < 1:
        raise ValueError("rank must be >= 1")
    true_scores, ranks = _mated_true_scores_and_ranks(mated_scores, true_index)
    top = np.sort(_search_matrix(nonmated_scores, "non-mated").max(axis=1))
    candidates = np.unique(np.concatenate([top, true_scores]))  # ascending
    # FPIR(t) = (non-mated tops >= t) / n, non-increasing in t: the admissible candidates form
    # an upper tail, so the first admissible one in ascending order is the smallest.
    rates = (top.size - np.searchsorted(top, candidates, side="left")) / top.size
    admissible = np.flatnonzero(rates <= target_fpir)
    if admissible.size == 0:
        return FnirAtFpir(fnir=1.0, threshold=float("inf"))
    threshold = float(candidates[admissible[0]])
    detected = float(np.mean((ranks <= rank) & (true_scores >= threshold)))
    return FnirAtFpir(fnir=1.0 - detected, threshold=threshold)
