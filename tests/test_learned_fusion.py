"""Learned fusion: hand-checked features, real fits on separable data, safe persistence."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.learned import KINDS, LearnedFusion
from biofuse.fusion.scores import ModalityScores

from biofuse.errors import GalleryError, ModelMissingError

NAN = np.nan
IDS = ["dlib-resnet-aaaaaaaaaaaa", "resemblyzer-ge2e-bbbbbbbbbbbb"]


def _trials(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two modalities, each weakly separating; voice absent on a third of trials."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    face = rng.normal(0.2 + 0.35 * y, 0.12)
    voice = rng.normal(0.4 + 0.25 * y, 0.12)
    voice[rng.random(n) < 0.33] = NAN
    q = np.stack([rng.uniform(0.5, 1, n), np.where(np.isnan(voice), NAN, 1.0)], axis=1)
    return np.stack([face, voice], axis=1), q, y


def test_features_fill_a_missing_modality_with_no_evidence() -> None:
    f = LearnedFusion("logistic", ["face", "voice"], IDS)
    f.calibrations_ = [LinearCalibration(10.0, -5.0), LinearCalibration(2.0, 0.0)]
    x = f.features(np.array([[0.6, NAN]]), np.array([[0.7, NAN]]))
    # face: llr 10*.6-5 = 1, quality .7, present; voice: llr 0, quality 0, missing
    np.testing.assert_allclose(x, [[1.0, 0.7, 0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("kind", KINDS)
def test_learned_fusion_beats_each_modality_alone(kind: str) -> None:
    s, q, y = _trials()
    fusion = LearnedFusion(kind, ["face", "voice"], IDS).fit(s, q, y)  # type: ignore[arg-type]
    st, qt, yt = _trials(seed=1)
    llr = fusion.llr(st, qt)
    assert np.isfinite(llr).all()
    from biofuse.fusion.metrics import eer

    fused_eer = eer(llr[yt == 1], llr[yt == 0])
    face_eer = eer(st[yt == 1, 0], st[yt == 0, 0])
    assert fused_eer < face_eer
    assert fusion.report_["trials"] == 600 and 0.2 < fusion.report_["missing_rate"]["voice"] < 0.5


def test_all_modalities_absent_gives_nan() -> None:
    s, q, y = _trials()
    fusion = LearnedFusion("logistic", ["face", "voice"], IDS).fit(s, q, y)
    out = fusion.llr(np.array([[NAN, NAN], [0.6, NAN]]), np.array([[NAN, NAN], [1.0, NAN]]))
    assert np.isnan(out[0]) and np.isfinite(out[1])


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_the_same_llrs(kind: str, tmp_path) -> None:
    s, q, y = _trials()
    fusion = LearnedFusion(kind, ["face", "voice"], IDS).fit(s, q, y)  # type: ignore[arg-type]
    back = LearnedFusion.load(fusion.save(tmp_path / kind))
    np.testing.assert_allclose(back.llr(s, q), fusion.llr(s, q), rtol=1e-12)
    meta = json.loads((tmp_path / kind / "fusion.json").read_text())
    assert meta["model_ids"] == IDS and meta["report"]["genuine"] == int(y.sum())


def test_a_tampered_gboost_file_is_not_unpickled(tmp_path) -> None:
    s, q, y = _trials()
    folder = LearnedFusion("gboost", ["face", "voice"], IDS).fit(s, q, y).save(tmp_path / "g")
    blob = (folder / "gboost.pkl").read_bytes()
    (folder / "gboost.pkl").write_bytes(blob + b"x")
    assert hashlib.sha256(blob).hexdigest() in (folder / "fusion.json").read_text()
    with pytest.raises(ModelMissingError, match="sha256"):
        LearnedFusion.load(folder)


def test_refuses_scores_of_other_models() -> None:
    s, q, y = _trials()
    fusion = LearnedFusion("logistic", ["face", "voice"], IDS).fit(s, q, y)
    table = lambda m, i: ModalityScores(m, i, ["p"], ["x"], np.zeros((1, 1)), np.ones(1))  # noqa: E731
    ok = fusion.fuse_tables([table("face", IDS[0]), table("voice", IDS[1])])
    assert ok.shape == (1, 1)
    with pytest.raises(GalleryError, match="retrain"):
        fusion.fuse_tables([table("face", "adaface-ir101-cccccccccccc"), table("voice", IDS[1])])
