"""AdaFace from the user's checkpoint to track templates: `models add` -> registry -> pipeline.

A seeded IR-18 in the official Lightning layout stands in for a release checkpoint (none can
be downloaded here); everything after the file is the production path.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from biofuse.flows.models import FaceFrameAnalyzer
from biofuse.modalities.face.adaface import build_ir, chips_to_input, flip_fused
from biofuse.modalities.face.align import Dlib68Landmarker, align_face
from biofuse.modalities.face.quality import ADAFACE_NORM_REFERENCE, adaface_quality, same_person_cos
from test_adaface import seeded_state, write_lightning_ckpt
from typer.testing import CliRunner

from biofuse.cli import app
from biofuse.config import load_settings
from biofuse.errors import ConfigError, ModelMissingError
from biofuse.registry import Registry, file_sha256

runner = CliRunner()


def cli(*args: str) -> object:
    """Run `biofuse ...` without leaking --home's BIOFUSE_HOME into later tests."""
    # (MonkeyPatch.delenv of an unset variable records nothing to undo, so restore by hand)
    saved = {k: os.environ.pop(k, None) for k in ("BIOFUSE_HOME", "BIOFUSE_CONFIG")}
    try:
        return runner.invoke(app, list(args), terminal_width=200)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ir18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    backbone = seeded_state(18, seed=7)
    path = tmp_path_factory.mktemp("release") / "adaface_ir18_fake.ckpt"
    return write_lightning_ckpt(path, backbone), backbone


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, ir18) -> Path:
    """A biofuse home where the user ran `biofuse models add adaface-ir18 FILE.ckpt`."""
    home = tmp_path_factory.mktemp("home")
    ckpt, _ = ir18
    result = cli(
        "--home", str(home), "models", "add", "adaface-ir18", str(ckpt), "--training-set", "seeded"
    )
    assert result.exit_code == 0, result.output
    return home


def test_models_add_converts_the_checkpoint_and_records_its_provenance(home: Path, ir18) -> None:
    ckpt, backbone = ir18
    installed = home / "models" / "adaface-ir18" / "adaface-ir18.safetensors"
    record = json.loads((home / "models" / "registry.json").read_text())["models"]["adaface-ir18"]
    assert record["sha256"] == file_sha256(installed)
    assert record["source_sha256"] == file_sha256(ckpt) != record["sha256"]
    assert record["training_set"] == "seeded" and record["depth"] == "18"
    assert record["source_format"] == "lightning checkpoint"
    assert record["licence"].startswith("MIT") and record["source"] == str(ckpt.resolve())

    from safetensors.torch import load_file

    weights = load_file(str(installed))
    assert sorted(weights) == sorted(backbone)  # `model.` stripped, `head.*` dropped
    assert all(torch.equal(weights[k], backbone[k]) for k in backbone)
    resolved = Registry(home / "models").verify("adaface-ir18")
    assert resolved.sha256 == record["sha256"]


def test_models_add_refuses_a_truncated_or_mismatched_file(tmp_path: Path, ir18) -> None:
    ckpt, _ = ir18
    truncated = tmp_path / "adaface_ir18_cut.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    result = cli("--home", str(tmp_path / "h"), "models", "add", "adaface-ir18", str(truncated))
    assert result.exit_code == 2 and "truncated" in result.output, result.output
    assert not (tmp_path / "h" / "models" / "registry.json").exists()  # nothing recorded

    notes = tmp_path / "adaface_ir18.ckpt"
    notes.write_text("not weights\n" * 100)
    result = cli("--home", str(tmp_path / "h"), "models", "add", "adaface-ir18", str(notes))
    assert result.exit_code == 2 and "neither a PyTorch checkpoint" in result.output

    result = cli("--home", str(tmp_path / "h"), "models", "add", "adaface-ir50", str(ckpt))
    assert result.exit_code == 2 and "adaface-ir18" in result.output, result.output
    assert not (tmp_path / "h" / "models" / "adaface-ir50" / "adaface-ir50.safetensors").exists()


def test_face_model_is_a_config_value_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adaface-ir101"):
        load_settings(face_model="adaface-ir152")
    settings = load_settings(home=tmp_path, face_model="adaface-ir101")
    with pytest.raises(ModelMissingError, match="biofuse models add adaface-ir101"):
        FaceFrameAnalyzer(settings)


def test_quality_falls_with_size_confidence_and_feature_norm() -> None:
    q = adaface_quality(
        np.array([2.0, 2.0, 0.0, 2.0]),
        np.array([60.0, 20.0, 60.0, 60.0]),
        np.array([30.0, 30.0, 30.0, ADAFACE_NORM_REFERENCE / 2]),
    )
    best = 1 / (1 + math.exp(-4))
    np.testing.assert_allclose(q, [best, best / 2, 0.5, best / 2], rtol=1e-6)
    assert same_person_cos("dlib-resnet-db0eeebc77c4") == pytest.approx(0.90)
    assert same_person_cos("adaface-ir101") < 0.5


@pytest.fixture(scope="module")
def lfw_face(shared_data: Path) -> np.ndarray:
    path = shared_data / "lfw-dev" / "images" / "Tony_Blair" / "Tony_Blair_0001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.mark.slow
@pytest.mark.parametrize(("flip_tta", "detector"), [(True, "hog"), (False, "hog"), (True, "mtcnn")])
def test_analyzer_aligns_and_embeds_like_the_reference_network(
    home: Path, ir18, lfw_face: np.ndarray, flip_tta: bool, detector: str
) -> None:
    """One LFW photo through FaceFrameAnalyzer == the seeded graph on our own aligned chip.

    HOG faces are aligned from the 68-point predictor's five points, MTCNN faces from MTCNN's.
    """
    _, backbone = ir18
    settings = load_settings(
        home=home, face_model="adaface-ir18", face_flip_tta=flip_tta, face_detector=detector
    )
    analyzer = FaceFrameAnalyzer(settings)
    analyzer.prepare("cpu")
    (faces,) = analyzer.analyze([lfw_face])
    assert analyzer.model_id.startswith("adaface-ir18-") and analyzer.dim == 512
    assert faces.vectors.shape == (1, 512) and faces.boxes.shape == (1, 4)

    if detector == "hog":
        points = Dlib68Landmarker().landmarks5(lfw_face, tuple(faces.boxes[0]))
    else:
        ((det,),) = analyzer.detector.detect([lfw_face])
        points = det.points5
    chip = align_face(lfw_face, points)
    reference = build_ir(18)
    reference.load_state_dict(backbone, strict=True)
    x = chips_to_input(torch.from_numpy(chip[None]))
    with torch.no_grad():
        plain, norm = reference(x)
        want = flip_fused(reference, x)[0] if flip_tta else plain
    np.testing.assert_allclose(faces.vectors, want.numpy(), atol=1e-5)
    np.testing.assert_allclose(faces.feature_norm, norm[:, 0].numpy(), rtol=1e-5)
    assert faces.detector_score[0] > 0 and 20 < faces.inter_eye_px[0] < 80
    want_q = adaface_quality(faces.detector_score, faces.inter_eye_px, faces.feature_norm)
    np.testing.assert_allclose(faces.quality, want_q, rtol=1e-6)
    assert 0 < faces.quality[0] <= 1


@pytest.mark.slow
def test_video_tracks_come_out_as_adaface_templates(home: Path, shared_data: Path) -> None:
    """analyze_video on a real clip with the model in this process (no Ray)."""
    from biofuse.flows.actors import local_handle
    from biofuse.flows.pipeline import analyze_video

    clip = shared_data / "video" / "videoretalking_face_5.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    settings = load_settings(home=home, face_model="adaface-ir18", face_fps=2.0)
    handle = local_handle("face", settings)
    evidence = analyze_video(clip, "0" * 64, settings, {"face": handle})
    assert evidence.frames_analyzed >= 9  # 4.9 s at 2 fps
    assert len(evidence.tracks) >= 1 and evidence.face is not None
    face = evidence.face
    assert face.model_id == handle.model_id and face.model_id.startswith("adaface-ir18-")
    assert face.vectors.shape == (len(evidence.tracks), 512)
    np.testing.assert_allclose(np.linalg.norm(face.vectors, axis=1), 1.0, atol=1e-5)
    assert face.keys == [t.key for t in evidence.tracks]
    longest = max(evidence.tracks, key=lambda t: t.end_s - t.start_s)
    assert longest.end_s - longest.start_s > 3.0  # one talking head, tracked through the clip
    assert 0 < longest.quality <= 1


def test_dlib_default_records_detector_facts_and_no_feature_norm(
    tmp_path: Path, lfw_face: np.ndarray
) -> None:
    """The offline default: quality is face_quality(score, eyes); dlib has no quality norm."""
    from biofuse.modalities.face.dlib_face import face_quality

    analyzer = FaceFrameAnalyzer(load_settings(home=tmp_path))
    analyzer.prepare("cpu")
    (faces,) = analyzer.analyze([lfw_face])
    assert analyzer.model_id.startswith("dlib-resnet-") and faces.vectors.shape == (1, 128)
    assert analyzer.outlier_cos == pytest.approx(0.90)
    assert np.isnan(faces.feature_norm).all() and faces.detector_score[0] > 0
    want = face_quality(float(faces.detector_score[0]), float(faces.inter_eye_px[0]))
    assert faces.quality[0] == pytest.approx(want, rel=1e-6)
