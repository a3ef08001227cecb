"""Rule fusion and decisions on hand-worked numbers: absent is masked, one modality passes."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.decide import (
    OperatorCalibration,
    fit_operator_calibration,
    leave_own_out,
    threshold_for_fpir,
    top_k,
)
from biofuse.fusion.rules import RULES, fuse_rule

NAN = np.nan
A = np.array([[1.0, NAN]])
B = np.array([[3.0, 2.0]])
QA, QB = np.array([0.5]), np.array([0.25])


@pytest.mark.parametrize(
    ("rule", "want"),
    [
        ("sum", [4.0, 2.0]),
        ("mean", [2.0, 2.0]),
        ("max", [3.0, 2.0]),
        # weights (1, 3) rescaled to sum to the 2 present: (1*1 + 3*3) * 2/4 = 5; B alone: 2
        ("weighted", [5.0, 2.0]),
        # qualities (.5, .25): (.5*1 + .25*3) * 2/.75 = 10/3; B alone: 2
        ("quality", [10.0 / 3.0, 2.0]),
    ],
)
def test_rules_by_hand(rule: str, want: list[float]) -> None:
    fused = fuse_rule([A, B], rule, weights=[1.0, 3.0], qualities=[QA, QB])  # type: ignore[arg-type]
    np.testing.assert_allclose(fused, [want])


@pytest.mark.parametrize("rule", RULES)
def test_fusing_one_modality_returns_it(rule: str) -> None:
    llr = np.array([[0.5, -2.0, NAN], [3.0, 0.0, 1.0]])
    fused = fuse_rule([llr], rule, weights=[2.5], qualities=[np.array([0.1, 0.9])])  # type: ignore[arg-type]
    np.testing.assert_allclose(fused, llr)


@pytest.mark.parametrize("rule", RULES)
def test_an_absent_modality_is_masked_not_zero(rule: str) -> None:
    absent = np.full_like(B, NAN)
    kw = {"weights": [1.0, 3.0], "qualities": [QB, np.array([NAN])]}
    np.testing.assert_allclose(fuse_rule([B, absent], rule, **kw), B)  # type: ignore[arg-type]
    if rule in ("mean", "weighted", "quality"):  # a zero score would drag these towards 0
        zeros = np.zeros_like(B)
        zero = fuse_rule([B, zeros], rule, weights=[1.0, 3.0], qualities=[QB, QA])  # type: ignore[arg-type]
        assert (np.abs(zero) < np.abs(B)).all()


def test_all_absent_stays_nan_for_every_rule() -> None:
    for rule in RULES:
        fused = fuse_rule([A, np.full_like(A, NAN)], rule, weights=[1, 1], qualities=[QA, QA])  # type: ignore[arg-type]
        assert np.isnan(fused[0, 1]) and fused[0, 0] == pytest.approx(1.0)


def test_rules_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weights"):
        fuse_rule([A, B], "weighted")
    with pytest.raises(ValueError, match="> 0"):
        fuse_rule([A, B], "weighted", weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="quality"):
        fuse_rule([A, B], "quality")
    with pytest.raises(ValueError, match="unknown"):
        fuse_rule([A], "median")  # type: ignore[arg-type]


def test_top_k_is_stable_and_ranks_nan_last() -> None:
    fused = np.array([[0.2, NAN, 0.9, 0.2]])
    np.testing.assert_array_equal(top_k(fused, 3), [[2, 0, 3]])


def test_threshold_for_fpir_by_hand() -> None:
    tops = np.array([0.1, 0.5, 0.9, 0.9])  # FPIR at 0.1: 1, at 0.5: .75, at 0.9: .5
    assert threshold_for_fpir(tops, 0.75) == 0.5
    assert threshold_for_fpir(tops, 0.5) == 0.9
    above = threshold_for_fpir(tops, 0.25)  # nothing within budget: just above the top
    assert above > 0.9 and above == np.nextafter(0.9, 1.0)


def test_leave_own_out_drops_the_true_column() -> None:
    fused = np.array([[5.0, 1.0, 2.0], [0.0, 7.0, 3.0]])
    np.testing.assert_array_equal(leave_own_out(fused, np.array([0, 1])), [[1.0, 2.0], [0.0, 3.0]])


def test_operator_calibration_meets_the_fpir_target_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n_id, n_probe = 20, 200
    truth = np.where(np.arange(n_probe) < 150, np.arange(n_probe) % n_id, -1)  # 50 strangers
    face = rng.normal(0.2, 0.1, (n_probe, n_id))
    voice = rng.normal(0.3, 0.1, (n_probe, n_id))
    mated = truth >= 0
    face[mated, truth[mated]] += 0.4
    voice[mated, truth[mated]] += 0.3
    voice[::7] = NAN  # some probes without speech
    q = {"face": np.ones(n_probe), "voice": np.ones(n_probe)}
    ids = {"face": "dlib-resnet-aaaaaaaaaaaa", "voice": "resemblyzer-ge2e-bbbbbbbbbbbb"}
    cal = fit_operator_calibration({"face": face, "voice": voice}, q, truth, ids, "sum", 0.04)
    fused = cal.fuse({"face": face, "voice": voice}, q)
    fp = np.mean(np.nanmax(fused[~mated], axis=1) >= cal.threshold)
    assert fp <= 0.04 and cal.report["threshold_from"] == "non-mated probes"
    assert cal.report["dir_rank1_at_threshold"] > 0.8
    back = OperatorCalibration.load(cal.save(tmp_path / "calibration.json"))
    np.testing.assert_allclose(back.fuse({"face": face, "voice": voice}, q), fused)
    assert back.threshold == cal.threshold
    with pytest.raises(Exception, match="refit"):
        back.check_model_ids({"face": "dlib-resnet-cccccccccccc"})


def test_operator_calibration_without_strangers_uses_leave_own_out() -> None:
    scores = {"face": np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.4, 0.7]] * 2)}
    truth = np.array([0, 1, 2] * 2)
    cal = fit_operator_calibration(scores, {"face": np.ones(6)}, truth, {"face": "f"}, "sum", 0.0)
    assert cal.report["threshold_from"] == "leave-own-out mated probes"
    impostor_llr = LinearCalibration(**vars(cal.calibrations["face"])).transform(np.array([0.4]))
    assert cal.threshold > impostor_llr[0]  # above the best impostor (0.4): FPIR 0


@pytest.mark.parametrize("method", ["sum", "logistic"])
def test_calibrate_files_writes_what_identify_reads(method: str, tmp_path) -> None:
    from biofuse.fusion.learned import LearnedFusion
    from biofuse.fusion.operator import calibrate_files
    from biofuse.fusion.scorefiles import ScoreRow, write_score_csv

    rng = np.random.default_rng(1)
    rows = []
    for p in range(60):
        who = p % 12 if p < 48 else None  # 12 strangers
        for i in range(12):
            same = who == i
            rows.append(
                ScoreRow(f"p{p}", f"id{i}", "face", rng.normal(0.2 + 0.5 * same, 0.1), 1.0, same)
            )
            if p % 5:
                rows.append(
                    ScoreRow(
                        f"p{p}", f"id{i}", "voice", rng.normal(0.3 + 0.3 * same, 0.1), 1.0, same
                    )
                )
    write_score_csv(tmp_path / "s.csv", rows)
    ids = {"face": "f-1", "voice": "v-1"}
    cal = calibrate_files(
        [tmp_path / "s.csv"], ids, tmp_path / "cal.json", tmp_path / "fusion", method, 0.1
    )
    back = OperatorCalibration.load(tmp_path / "cal.json")
    assert back.fusion_method == method and back.threshold == cal.threshold
    assert back.report["fpir_at_threshold"] <= 0.1 and back.report["nonmated_probes"] == 12
    if method == "logistic":
        assert LearnedFusion.load(tmp_path / "fusion").model_ids == ["f-1", "v-1"]
