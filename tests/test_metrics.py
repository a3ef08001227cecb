"""biofuse.fusion.metrics on small examples worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.metrics import (
    best_threshold_accuracy,
    cmc,
    eer,
    kfold_verification_accuracy,
    roc,
    tar_at_far,
)

# Four genuine and four impostor scores with one genuine/impostor tie at 0.5.
GENUINE = np.array([0.9, 0.8, 0.5, 0.3])
IMPOSTOR = np.array([0.6, 0.5, 0.2, 0.1])


def test_roc_steps_through_every_distinct_score_and_never_splits_a_tie() -> None:
    # thresholds:   inf  0.9   0.8   0.6   0.5   0.3   0.2   0.1
    # genuine >= t:  0    1     2     2     3     4     4     4    (of 4)
    # impostor >= t: 0    0     0     1     2     2     3     4    (of 4)
    # At 0.5 the tied genuine and impostor are accepted together: FAR jumps 1/4 -> 2/4
    # in the same step as TAR goes 2/4 -> 3/4; there is no point (TAR 3/4, FAR 1/4).
    curve = roc(GENUINE, IMPOSTOR)
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.9, 0.8, 0.6, 0.5, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(curve.tar, [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1])
    np.testing.assert_allclose(curve.far, [0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.frr, [1, 0.75, 0.5, 0.5, 0.25, 0, 0, 0])


def test_roc_does_not_depend_on_input_order() -> None:
    a = roc(GENUINE, IMPOSTOR)
    b = roc(GENUINE[::-1], IMPOSTOR[[2, 0, 3, 1]])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_eer_interpolates_where_frr_meets_far() -> None:
    # FRR - FAR along the ROC: 1, .75, .5, .25, -.25, ... ; it crosses 0 between the points
    # at t=0.6 (FAR .25, FRR .5) and t=0.5 (FAR .5, FRR .25): halfway, alpha = .25/.5 = .5.
    # EER = .25 + .5 * (.5 - .25) = .375 (and FRR there: .5 - .5 * .25 = .375, the same).
    assert eer(GENUINE, IMPOSTOR) == pytest.approx(0.375)


def test_eer_is_zero_when_classes_separate_and_one_when_they_are_swapped() -> None:
    # Separated: at t=0.7 FRR = 0 and FAR = 0 exactly.
    assert eer([0.9, 0.7], [0.2, 0.1]) == pytest.approx(0.0)
    # Swapped (genuine .2 .1, impostors .9 .7): thresholds inf .9 .7 .2 .1,
    # FAR 0 .5 1 1 1, FRR 1 1 1 .5 0, FRR - FAR = 1 .5 0 ... -> exactly 0 at t=.7, EER = 1.
    assert eer([0.2, 0.1], [0.9, 0.7]) == pytest.approx(1.0)


def test_tar_at_far_takes_the_best_threshold_within_the_far_budget() -> None:
    # FAR <= 0    at t in {inf, .9, .8}: best TAR 0.5
    # FAR <= .25  adds t=.6 (TAR .5): still 0.5 -- splitting the 0.5 tie would wrongly give .75
    # FAR <= .5   adds t=.5 and t=.3: TAR 1.0
    assert tar_at_far(GENUINE, IMPOSTOR, 0.0) == pytest.approx(0.5)
    assert tar_at_far(GENUINE, IMPOSTOR, 0.25) == pytest.approx(0.5)
    assert tar_at_far(GENUINE, IMPOSTOR, 0.49) == pytest.approx(0.5)
    assert tar_at_far(GENUINE, IMPOSTOR, 0.5) == pytest.approx(1.0)


def test_best_threshold_accuracy_picks_a_midpoint_between_distinct_scores() -> None:
    # scores 0.8(g) 0.6(i) 0.4(g) 0.1(i); candidates -0.9, .25, .5, .7, 1.8
    # correct = (genuine with s >= t) + (impostors with s < t):
    #   -0.9: 2+0=2   .25: 2+1=3   .5: 1+1=2   .7: 1+2=3   1.8: 0+2=2
    # Best 3/4 at candidates #1 and #3; the middle of [1, 3] by position is #3 -> 0.7.
    t, acc = best_threshold_accuracy([0.8, 0.6, 0.4, 0.1], [1, 0, 1, 0])
    assert acc == pytest.approx(0.75)
    assert t == pytest.approx(0.7)


def test_best_threshold_accuracy_unique_best() -> None:
    # 0.9(g) 0.7(g) 0.3(i) 0.2(g) 0.1(i): candidates -0.9 .15 .25 .5 .8 1.9
    #   correct:  3+0  3+1  2+1  2+2  1+2  0+2  -> best 4/5 at .5 only.
    t, acc = best_threshold_accuracy([0.9, 0.7, 0.3, 0.2, 0.1], [1, 1, 0, 1, 0])
    assert (t, acc) == (pytest.approx(0.5), pytest.approx(0.8))


def test_best_threshold_accuracy_cannot_separate_tied_scores() -> None:
    # 0.8(g) 0.5(g) 0.5(i) 0.2(i): a threshold either accepts both 0.5s or rejects both.
    # candidates -0.8 .35 .65 1.8: correct 2+0, 2+1, 1+2, 0+2 -> best 3/4, never 4/4;
    # best at #1 and #2, middle by position = #2 -> 0.65.
    t, acc = best_threshold_accuracy([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0])
    assert acc == pytest.approx(0.75)
    assert t == pytest.approx(0.65)


def test_kfold_chooses_each_threshold_on_the_other_folds() -> None:
    # fold 1: .9(g) .4(i)   fold 2: .7(g) .6(i)   fold 3: .5(g) .2(i)
    # held 1: train .7g .6i .5g .2i -> cands -.8 .35 .55 .65 1.7, correct 2 3 2 3 2
    #         -> best {.35, .65}, middle by position .65; test .9>=.65 ok, .4<.65 ok -> 1.0
    # held 2: train .9g .4i .5g .2i -> cands -.8 .3 .45 .7 1.9, correct 2 3 4 3 2 -> .45;
    #         test .7 accepted ok, .6 accepted (impostor) wrong -> 0.5
    # held 3: train .9g .4i .7g .6i -> cands -.6 .5 .65 .8 1.9, correct 2 3 4 3 2 -> .65;
    #         test .5 rejected (genuine) wrong, .2 rejected ok -> 0.5
    # mean 2/3; deviations 1/3, -1/6, -1/6 -> variance (4 + 1 + 1)/36/3 = 1/18.
    scores = [0.9, 0.4, 0.7, 0.6, 0.5, 0.2]
    labels = [1, 0, 1, 0, 1, 0]
    folds = [1, 1, 2, 2, 3, 3]
    res = kfold_verification_accuracy(scores, labels, folds)
    np.testing.assert_array_equal(res.folds, [1, 2, 3])
    np.testing.assert_allclose(res.accuracies, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(res.thresholds, [0.65, 0.45, 0.65])
    assert res.mean == pytest.approx(2 / 3)
    assert res.std == pytest.approx(np.sqrt(1 / 18))


def test_kfold_matches_the_lfw_dev_readme_spread() -> None:
    # README: test folds 98.33 / 98.00 / 98.33 -> "98.22 % +- 0.16" (population std).
    from biofuse.fusion.metrics import KFoldResult

    res = KFoldResult(np.array([1, 2, 3]), np.array([0.9833, 0.98, 0.9833]), np.zeros(3))
    assert res.mean == pytest.approx(0.98220, abs=1e-5)
    assert res.std == pytest.approx(0.00156, abs=1e-5)


def test_kfold_needs_two_folds() -> None:
    with pytest.raises(ValueError):
        kfold_verification_accuracy([0.1, 0.9], [0, 1], [1, 1])


def test_cmc_counts_ties_against_the_probe() -> None:
    # probe 0: true 0 scores .9, the best          -> rank 1
    # probe 1: true 1 scores .4, below .5 and .6   -> rank 3
    # probe 2: true 1 scores .7, tied with col 0   -> rank 2 (pessimistic)
    # cmc = [#rank<=1, #rank<=2, #rank<=3] / 3 = [1/3, 2/3, 3/3]
    m = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.6], [0.7, 0.7, 0.1]])
    np.testing.assert_allclose(cmc(m, np.array([0, 1, 1]), 3), [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(cmc(m, np.array([0, 1, 1]), 1), [1 / 3])


def test_cmc_rejects_open_set_probes() -> None:
    with pytest.raises(ValueError):
        cmc(np.eye(2), np.array([0, -1]), 2)


def test_metrics_reject_empty_and_nan_scores() -> None:
    with pytest.raises(ValueError):
        roc([], [0.1])
    with pytest.raises(ValueError):
        eer([np.nan, 0.2], [0.1])


def test_cllr_worked_by_hand() -> None:
    from biofuse.fusion.metrics import cllr

    # LLR 0 says nothing: log2(1 + e^0) = log2 2 = 1 for every trial -> Cllr = (1 + 1) / 2 = 1.
    assert cllr([0.0, 0.0, 0.0], [0.0]) == 1.0
    # LLR ln 3 (odds 3:1) on a target costs log2(1 + 1/3) = log2(4/3); the same LLR on a
    # non-target costs log2(1 + 3) = 2. One of each: (log2(4/3) + 2) / 2 = 1.20752...
    assert cllr([np.log(3.0)], [np.log(3.0)]) == pytest.approx((np.log2(4 / 3) + 2) / 2)
    assert cllr([np.log(3.0)], [np.log(3.0)]) == pytest.approx(1.2075187, abs=1e-7)
    # Sign flipped for the non-target (-ln 3): both cost log2(4/3) = 0.41504 -> Cllr 0.41504.
    assert cllr([np.log(3.0)], [-np.log(3.0)]) == pytest.approx(np.log2(4 / 3))
    # Each class is averaged on its own, whatever its size: targets {ln 3, -ln 3} cost
    # (log2(4/3) + 2) / 2 = 1.20752; one non-target at -inf costs 0 -> Cllr = 0.60376.
    assert cllr([np.log(3.0), -np.log(3.0)], [-np.inf]) == pytest.approx((np.log2(4 / 3) + 2) / 4)
    # Confident and right costs nothing; huge LLRs do not overflow.
    assert cllr([1e4], [-1e4]) == pytest.approx(0.0, abs=1e-12)
    assert cllr([-1e4], [0.0]) == pytest.approx((1e4 / np.log(2) + 1) / 2)


def test_cllr_rejects_empty_and_nan() -> None:
    from biofuse.fusion.metrics import cllr

    with pytest.raises(ValueError):
        cllr([], [0.0])
    with pytest.raises(ValueError):
        cllr([0.0], [np.nan])


def test_det_is_the_roc_as_two_error_rates() -> None:
    from biofuse.fusion.metrics import det

    # Same thresholds as the ROC test above; FMR = FAR, FNMR = 1 - TAR at each.
    curve = det(GENUINE, IMPOSTOR)
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.9, 0.8, 0.6, 0.5, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(curve.fmr, [0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.fnmr, [1, 0.75, 0.5, 0.5, 0.25, 0, 0, 0])


def test_probit_is_the_normal_quantile_and_stays_finite_at_0_and_1() -> None:
    from biofuse.fusion.metrics import probit

    # Phi(0) = .5, Phi(1) = .8413447, Phi(-1.959964) = .025 (the familiar 95% interval).
    np.testing.assert_allclose(
        probit([0.5, 0.8413447460685429, 0.025]), [0, 1, -1.959964], atol=1e-6
    )
    ends = probit(np.array([0.0, 1.0]))
    assert np.isfinite(ends).all()
    # Clipped to [1e-9, 1 - 1e-9]: Phi^-1(1e-9) = -5.9978 and the curve stays symmetric.
    assert ends[0] == pytest.approx(-5.997807, abs=1e-5)
    assert ends[1] == pytest.approx(-ends[0])
    assert probit(0.0, eps=1e-3) == pytest.approx(-3.090232, abs=1e-5)


# Open-set search: 3 enrolled identities (columns).
# Mated probes, true identity in TRUE:
#   m0 [.9 .2 .1] true 0: true score .9, the best              -> rank 1
#   m1 [.7 .6 .3] true 1: true score .6, below .7               -> rank 2 (true identity second)
#   m2 [.5 .5 .4] true 1: true score .5, tied with column 0     -> rank 2 (ties count against)
#   m3 [.1 .3 .4] true 2: true score .4, the best               -> rank 1
MATED = np.array([[0.9, 0.2, 0.1], [0.7, 0.6, 0.3], [0.5, 0.5, 0.4], [0.1, 0.3, 0.4]])
TRUE = np.array([0, 1, 1, 2])
# Non-mated probes (nobody enrolled); their top scores are .8 .5 .4 .3 .2.
NONMATED = np.array(
    [[0.8, 0.1, 0.2], [0.3, 0.5, 0.2], [0.4, 0.4, 0.1], [0.2, 0.1, 0.3], [0.1, 0.2, 0.1]]
)


def test_dir_needs_the_right_rank_and_a_score_over_the_threshold() -> None:
    from biofuse.fusion.metrics import cmc, dir_at_rank

    # t=.4, rank 1: m0 (.9) and m3 (.4, equal to the threshold: accepted) -> 2/4
    assert dir_at_rank(MATED, TRUE, 0.4) == pytest.approx(0.5)
    # t=.45, rank 1: m3's .4 now falls short -> m0 only, 1/4
    assert dir_at_rank(MATED, TRUE, 0.45) == pytest.approx(0.25)
    # t=.4, rank 2: all four are within rank 2 and score >= .4 -> 4/4
    assert dir_at_rank(MATED, TRUE, 0.4, rank=2) == pytest.approx(1.0)
    # t=.55, rank 2: m0 (.9) and m1 (.6) pass; m2 (.5) and m3 (.4) fall short -> 2/4
    assert dir_at_rank(MATED, TRUE, 0.55, rank=2) == pytest.approx(0.5)
    # With no threshold DIR is the closed-set CMC: ranks 1 2 2 1 -> [2/4, 4/4]
    for k in (1, 2):
        assert dir_at_rank(MATED, TRUE, -np.inf, rank=k) == pytest.approx(
            cmc(MATED, TRUE, 2)[k - 1]
        )


def test_fpir_counts_non_mated_probes_whose_top_score_reaches_the_threshold() -> None:
    from biofuse.fusion.metrics import fpir

    # tops .8 .5 .4 .3 .2
    assert fpir(NONMATED, 0.4) == pytest.approx(3 / 5)  # .8 .5 .4 (tie counts as a hit)
    assert fpir(NONMATED, 0.45) == pytest.approx(2 / 5)  # .8 .5
    assert fpir(NONMATED, 0.2) == pytest.approx(1.0)
    assert fpir(NONMATED, 0.9) == 0.0
    # Only the top score matters: n2 has .4 twice but is one false positive.
    assert fpir(NONMATED[2:3], 0.4) == 1.0


def test_fnir_at_fpir_takes_the_smallest_threshold_within_budget() -> None:
    from biofuse.fusion.metrics import fnir_at_fpir

    # Candidate thresholds = non-mated tops and mated true scores: .2 .3 .4 .5 .6 .8 .9
    # FPIR at each:                                               1 .8 .6 .4 .2 .2  0
    # Rank-1 mated true scores: m0 .9, m3 .4 (m1 and m2 are rank 2: misses at any threshold).
    #
    # budget .2: .6 is the smallest with FPIR <= .2 (a mated score, below the non-mated .8)
    #   DIR = m0 only = 1/4 -> FNIR .75
    r = fnir_at_fpir(MATED, TRUE, NONMATED, 0.2)
    assert r.threshold == pytest.approx(0.6)
    assert r.fnir == pytest.approx(0.75)
    # budget .6: threshold .4; the non-mated top .4 tied with it is counted (FPIR exactly .6);
    #   DIR = m0 (.9) + m3 (.4) = 2/4 -> FNIR .5
    fnir, threshold = fnir_at_fpir(MATED, TRUE, NONMATED, 0.6)
    assert (fnir, threshold) == (pytest.approx(0.5), pytest.approx(0.4))
    # budget .5: .4 would give FPIR .6 because of the tie, so the threshold cannot sit on it:
    #   the next candidate .5 (FPIR .4) -> m3's .4 is now missed, FNIR .75
    r = fnir_at_fpir(MATED, TRUE, NONMATED, 0.5)
    assert (r.fnir, r.threshold) == (pytest.approx(0.75), pytest.approx(0.5))
    # budget 0: threshold .9 (above every non-mated top); m0's .9 still passes -> FNIR .75
    r = fnir_at_fpir(MATED, TRUE, NONMATED, 0.0)
    assert (r.fnir, r.threshold) == (pytest.approx(0.75), pytest.approx(0.9))
    # budget 1: threshold .2 accepts everything; only the rank-2 probes miss -> FNIR .5,
    #   and at rank 2 nobody misses -> FNIR 0
    r = fnir_at_fpir(MATED, TRUE, NONMATED, 1.0)
    assert (r.fnir, r.threshold) == (pytest.approx(0.5), pytest.approx(0.2))
    assert fnir_at_fpir(MATED, TRUE, NONMATED, 1.0, rank=2).fnir == pytest.approx(0.0)


def test_fnir_at_fpir_with_no_admissible_score_rejects_everything() -> None:
    from biofuse.fusion.metrics import fnir_at_fpir, fpir

    # Candidates .3 (mated) and .5 (non-mated top): both have FPIR 1/1 > 0 -> +inf, FNIR 1.
    r = fnir_at_fpir(np.array([[0.3, 0.1]]), np.array([0]), np.array([[0.5, 0.2]]), 0.0)
    assert r.threshold == np.inf
    assert r.fnir == 1.0
    assert fpir(np.array([[0.5, 0.2]]), r.threshold) == 0.0


def test_open_set_metrics_do_not_depend_on_probe_order() -> None:
    from biofuse.fusion.metrics import fnir_at_fpir

    pm, pn = [3, 1, 0, 2], [4, 2, 0, 3, 1]
    for target in (0.0, 0.2, 0.5, 0.6, 1.0):
        a = fnir_at_fpir(MATED, TRUE, NONMATED, target)
        b = fnir_at_fpir(MATED[pm], TRUE[pm], NONMATED[pn], target)
        assert a == b


def test_open_set_metrics_reject_bad_input() -> None:
    from biofuse.fusion.metrics import dir_at_rank, fnir_at_fpir, fpir

    with pytest.raises(ValueError):
        fpir(np.array([0.1, 0.2]), 0.5)  # not (probes, gallery)
    with pytest.raises(ValueError):
        fpir(np.array([[0.1, np.nan]]), 0.5)
    with pytest.raises(ValueError):
        dir_at_rank(MATED, np.array([0, 1, 1, 3]), 0.5)  # column 3 does not exist
    with pytest.raises(ValueError):
        dir_at_rank(MATED, TRUE, 0.5, rank=0)
    with pytest.raises(ValueError):
        fnir_at_fpir(MATED, TRUE, NONMATED, 1.5)
