"""Templates, scores, calibration and fused decisions on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.calibration import LinearCalibration, load_default, model_name
from biofuse.fusion.fuse import identify, open_set_threshold, sum_llr
from biofuse.fusion.scores import ModalityScores, cosine_scores
from biofuse.fusion.templates import build_templates

from biofuse.errors import ModelMissingError

NAN = np.nan


def test_sum_llr_masks_missing_modalities() -> None:
    face = np.array([[2.0, NAN], [1.0, NAN]])
    voice = np.array([[NAN, NAN], [3.0, -1.0]])
    fused = sum_llr([face, voice])
    np.testing.assert_array_equal(fused[0], [2.0, NAN])  # face alone = face
    np.testing.assert_array_equal(fused[1], [4.0, -1.0])  # voice alone = voice


def test_fusing_one_modality_returns_that_modality() -> None:
    llr = np.array([[0.5, -2.0, 3.0]])
    np.testing.assert_array_equal(sum_llr([llr]), llr)


def test_templates_are_quality_weighted_unit_means() -> None:
    vectors = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    names, templates = build_templates(vectors, np.array([1.0, 3.0, 1.0]), ["a", "a", "b"])
    assert names == ["a", "b"]
    # a: (1*[1,0] + 3*[0,1]) / |.| = [1,3]/sqrt(10)
    np.testing.assert_allclose(templates[0], np.array([1, 3]) / np.sqrt(10), atol=1e-6)
    np.testing.assert_allclose(templates[1], [0, 1])


def test_cosine_scores() -> None:
    probes = np.array([[3.0, 4.0]])
    templates = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_scores(probes, templates), [[0.6, 0.8]], atol=1e-6)


def table(modality: str, scores: list[list[float]]) -> ModalityScores:
    s = np.array(scores, np.float32)
    return ModalityScores(
        modality,
        f"{modality}-m",
        [f"p{i}" for i in range(len(s))],
        ["alice", "bob"],
        s,
        np.ones(len(s), np.float32),
    )


def test_identify_ranks_by_fused_llr_and_says_unknown_below_threshold() -> None:
    calibration = {"face": LinearCalibration(10, -5), "voice": LinearCalibration(4, -2)}
    face = table("face", [[0.9, 0.2], [0.3, 0.4], [NAN, NAN]])
    voice = table("voice", [[0.6, 0.7], [NAN, NAN], [0.1, 0.9]])
    decisions = identify([face, voice], calibration, top_k=2, threshold_llr=0.0)
    # p0: alice = (9-5) + (2.4-2) = 4.4 ; bob = (2-5) + (2.8-2) = -2.2
    assert decisions[0].decision == "alice"
    assert decisions[0].candidates[0].fused_llr == pytest.approx(4.4, abs=1e-5)
    assert decisions[0].candidates[1].identity == "bob"
    # p1: face only: alice -2, bob -1: the best is still below 0 -> unknown
    assert decisions[1].decision == "unknown" and decisions[1].candidates[0].identity == "bob"
    assert decisions[1].modalities == ["face"]
    assert set(decisions[1].candidates[0].per_modality) == {"face"}
    # p2: voice only: bob = 3.6 - 2 = 1.6
    assert decisions[2].decision == "bob" and decisions[2].modalities == ["voice"]


def test_identify_uses_the_configured_rule() -> None:
    calibration = {"face": LinearCalibration(10, -5), "voice": LinearCalibration(4, -2)}
    face = table("face", [[0.9, 0.2], [0.3, 0.4], [NAN, NAN]])
    voice = table("voice", [[0.6, 0.7], [NAN, NAN], [0.1, 0.9]])
    # p0 LLRs: face alice 4, bob -3; voice alice 0.4, bob 0.8
    mx = identify([face, voice], calibration, top_k=2, threshold_llr=0.0, method="max")
    assert mx[0].candidates[0].fused_llr == pytest.approx(4.0, abs=1e-5)
    assert mx[0].candidates[1].fused_llr == pytest.approx(0.8, abs=1e-5)
    # weights face 3, voice 1, rescaled to sum to 2: alice (3*4 + 0.4) / 2 = 6.2
    w = identify(
        [face, voice],
        calibration,
        threshold_llr=0.0,
        method="weighted",
        weights={"face": 3.0, "voice": 1.0},
    )
    assert w[0].candidates[0].fused_llr == pytest.approx(6.2, abs=1e-5)
    assert w[2].candidates[0].fused_llr == pytest.approx(1.6, abs=1e-5)  # voice alone: itself


def test_open_set_threshold_grows_with_the_gallery() -> None:
    # one identity, even prior: odds (0.5 / 1) / (1 - 0.5) = 1 -> threshold 0
    assert open_set_threshold(1, 0.5) == pytest.approx(0.0)
    # 5 identities: prior 0.1 each -> odds 0.1/0.9 -> threshold ln 9
    assert open_set_threshold(5, 0.5) == pytest.approx(np.log(9))
    assert open_set_threshold(1000) > open_set_threshold(10)
    face = table("face", [[0.9, 0.2]])
    cal = {"face": LinearCalibration(10, -5)}  # alice llr 4.0
    assert identify([face], cal)[0].decision == "alice"  # 2 ids: threshold ln 3 = 1.1
    assert identify([face], cal, prior_in_gallery=0.01)[0].decision == "unknown"  # ln 199 = 5.3


def test_calibration_bounds_the_llr() -> None:
    cal = LinearCalibration(100.0, -90.0, max_abs_llr=6.0)
    np.testing.assert_allclose(cal.transform(np.array([0.0, 0.9, 1.0])), [-6.0, 0.0, 6.0])
    fitted = LinearCalibration().fit(
        np.array([0.1, 0.2, 0.8, 0.9, 0.95]), np.array([0, 0, 1, 1, 1])
    )
    assert fitted.max_abs_llr == pytest.approx(np.log(3))  # 2 non-target trials: odds <= 3:1


def test_logistic_calibration_recovers_a_known_llr() -> None:
    rng = np.random.default_rng(0)
    # scores ~ N(+1, 1) for targets and N(-1, 1) for non-targets: true LLR = 2 * score
    tar, non = rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000)
    cal = LinearCalibration().fit(np.r_[tar, non], np.r_[np.ones(20000), np.zeros(20000)])
    assert cal.slope == pytest.approx(2.0, abs=0.08)
    assert cal.offset == pytest.approx(0.0, abs=0.05)


def test_model_names_and_defaults() -> None:
    assert model_name("dlib-resnet-db0eeebc77c4") == "dlib-resnet"
    assert model_name("custom") == "custom"
    # a model declared calibration="unfitted" gets the bounded guess, by its declaration
    unfitted = load_default("adaface-ir18-000000000000")
    assert unfitted.fitted_on.startswith("none") and unfitted.max_abs_llr == 2.0
    # an undeclared model is an error, never a silent guess (issue 13)
    with pytest.raises(ModelMissingError, match="no registry declaration"):
        load_default("never-heard-of-000000000000")


def test_shipped_gait_maps_are_fitted_on_people_the_gait_models_never_saw() -> None:
    # a map fitted on the training subjects is overconfident on an operator's strangers
    for name in ("gait-compact-casiab", "gei-pca-lda-casiab"):
        fitted_on = load_default(f"{name}-0123456789ab").fitted_on
        assert fitted_on.startswith("CASIA-B test subjects 075-124, not seen in training")


def test_part_euclidean_templates_stay_in_the_raw_embedding_space() -> None:
    # gait-compact rows are compared raw (part-averaged Euclidean): a renormalised template
    # would sit at distance ~|probe| from every probe. 16 parts x 1 channel.
    from biofuse.fusion.scores import metric_for_model, similarity

    metric = metric_for_model("gait-compact-casiab-0123456789ab")
    ones = np.ones(16, np.float32)
    vectors = np.stack([0 * ones, 4 * ones, 1 * ones])
    names, templates = build_templates(vectors, np.array([1.0, 3.0, 0.5]), ["a", "a", "b"], metric)
    assert names == ["a", "b"]
    # a: (1*0 + 3*4) / (1+3) = 3 in every part; b: its one row
    np.testing.assert_allclose(templates, [3 * ones, ones], atol=1e-6)
    # a probe of 3s: distance 0 to a, |3-1| = 2 in each part to b
    np.testing.assert_allclose(similarity(3 * ones[None], templates, metric), [[0.0, -2.0]])


def test_face_templates_score_the_mean_cosine_to_the_enrolled_rows() -> None:
    from biofuse.fusion.scores import metric_for_model, similarity

    metric = metric_for_model("dlib-resnet-0123456789ab")
    assert metric == "mean-cosine"
    vectors = np.array([[1, 0], [0, 1], [0, 2]], np.float32)
    names, templates = build_templates(vectors, np.array([1.0, 3.0, 1.0]), ["a", "a", "b"], metric)
    probe = np.array([[2.0, 0.0]], np.float32)
    # (1 * cos 0 + 3 * cos 90) / 4, not the cosine to the renormalised mean (1 / sqrt(10))
    np.testing.assert_allclose(similarity(probe, templates, metric), [[0.25, 0.0]], atol=1e-6)


@pytest.mark.slow
def test_one_person_gallery_does_not_name_an_unenrolled_face(shared_data, tmp_path) -> None:
    """Issue 18 item 14: Silvio Berlusconi's face was named Tony_Blair at LLR +0.48 when
    Blair (three LFW photos, as `biofuse sample-archive` enrolls him) was the whole gallery:
    the renormalised template lifted every cosine by 1/0.98, two LLR at dlib's slope."""
    from biofuse.flows.models import FaceFrameAnalyzer
    from biofuse.fusion.scores import metric_for_model, score_modality

    from biofuse import media
    from biofuse.config import Settings

    lfw = shared_data / "lfw-dev" / "images"
    if not lfw.is_dir():
        pytest.skip(f"{lfw} is absent")
    analyzer = FaceFrameAnalyzer(Settings(home=tmp_path / "home"))
    analyzer.prepare()

    def face_row(path):
        (found,) = analyzer.analyze([media.read_image(path)])
        i = int(np.argmax(found.boxes[:, 2] - found.boxes[:, 0]))
        return found.vectors[i], float(found.quality[i])

    blair = sorted((lfw / "Tony_Blair").glob("*.jpg"))
    enrolled = [face_row(p) for p in blair[:3]]
    probes = {
        "berlusconi": face_row(sorted((lfw / "Silvio_Berlusconi").glob("*.jpg"))[-1]),
        "blair": face_row(blair[-1]),  # a photo of Blair not enrolled: still named
    }
    model_id = analyzer.model_id
    metric = metric_for_model(model_id)
    names, templates = build_templates(
        np.stack([v for v, _ in enrolled]),
        np.array([q for _, q in enrolled]),
        ["Tony_Blair"] * 3,
        metric,
    )
    table = score_modality("face", model_id, list(probes), probes, names, templates, metric)
    decisions = {d.probe: d for d in identify([table], {"face": load_default(model_id)}, top_k=1)}
    assert decisions["berlusconi"].decision == "unknown", decisions["berlusconi"].candidates
    assert decisions["blair"].decision == "Tony_Blair"
