"""The contract every registry entry keeps (issue 13, item 4), parametrised over the registry.

Each declared model builds from its declaration alone (packaged weights, or a seeded stand-in
in its publisher's release format added through `Registry.add`), embeds a tiny real input of
its declared kind, returns finite rows of its declared dim, and has a metric, a calibration and
(face models) an outlier cosine that load. A new registry entry is covered without editing this
file; one that ships no weights needs a release writer in tests/seeded_models.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from biofuse.fusion.calibration import load_default
from biofuse.fusion.scores import metric_for_model, similarity

from biofuse.config import Settings
from biofuse.registry import METRICS, SPECS, Registry, spec_for

# entries whose build or embedding takes seconds on a CPU (deep nets, speechbrain)
HEAVY = {
    "adaface-ir50",
    "adaface-ir101",
    "gaitbase-casiab",
    "clip3dreid-student-rn50",
    "ecapa-voxceleb",
    "deepgaitv2-casiab",
    "kprpe-vit-base-webface4m",
}


def _entries() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
        for name in sorted(SPECS)
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contract-home")


def _install(name: str, home: Path) -> None:
    """Packaged models are already there; the others get a seeded release, added as a user's."""
    spec = SPECS[name]
    registry = Registry(home / "models")
    if spec.package is not None:
        return
    try:
        registry.locate(name)
        return
    except Exception:
        pass
    from seeded_models import RELEASES

    if name not in RELEASES:
        pytest.skip(f"{name}: no seeded release writer in tests/seeded_models.py")
    folder = home / "releases" / name
    folder.mkdir(parents=True, exist_ok=True)
    registry.add(name, RELEASES[name](folder))


def _face_input(shared: Path) -> np.ndarray:
    from PIL import Image

    path = shared / "lfw-dev" / "images" / "Tony_Blair" / "Tony_Blair_0001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return np.asarray(Image.open(path).convert("RGB"))


def _voice_input(shared: Path) -> list[Any]:
    import soundfile
    from biofuse.modalities.voice.resemblyzer_voice import SAMPLE_RATE, AudioSegment

    root = shared / "voice-dev" / "librispeech"
    files = sorted(root.rglob("*.flac"))[:1] if root.is_dir() else []
    if not files:
        pytest.skip(f"no LibriSpeech utterance under {root}")
    samples, rate = soundfile.read(files[0], dtype="float32")
    assert rate == SAMPLE_RATE
    return [AudioSegment("utt", samples[: 3 * SAMPLE_RATE])]


def _gait_input(shared: Path) -> list[Any]:
    from biofuse.modalities.items import SilhouetteSequence

    path = shared / "casiab-dev" / "075" / "nm-01" / "090" / "090.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with open(path, "rb") as handle:
        frames = pickle.load(handle)  # the data README's loader: one ndarray
    return [SilhouetteSequence("075/nm-01/090", frames[:20])]


def _person_track(shared: Path) -> tuple[list[np.ndarray], list[tuple[float, ...]]]:
    import cv2
    from test_body import TRACK_LEN, track_box

    path = shared / "video" / "opencv_vtest_pedestrians.avi"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    capture = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(TRACK_LEN):
        ok, bgr = capture.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, [track_box(i) for i in range(TRACK_LEN)]


def _embed(name: str, settings: Settings, shared: Path) -> tuple[np.ndarray, str]:
    """Rows of one tiny real input through the model built from its declaration alone."""
    from biofuse.flows.models import build_model

    spec = SPECS[name]
    if spec.modality == "face":
        model = build_model("face", settings)
        (found,) = model.analyze([_face_input(shared)])
        return found.vectors, model.model_id
    model = build_model(spec.modality, settings)
    if spec.input == "audio-segment":
        items = _voice_input(shared)
    elif spec.input == "silhouette-sequence":
        items = _gait_input(shared)
    elif spec.input == "pose-sequence":
        from biofuse.modalities.body.anthropometric import track_pose

        frames, boxes = _person_track(shared)
        items = [track_pose("vtest#1", frames, boxes)]
    elif spec.input == "person-crops":
        from biofuse.modalities.body.clip_student import PersonCrops

        frames, boxes = _person_track(shared)
        crops = [f[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])] for f, b in zip(frames, boxes)]
        items = [PersonCrops("vtest#1", crops[:4])]
    else:  # a new input kind needs its tiny input here
        pytest.fail(f"{name}: no tiny input for declared input {spec.input!r}")
    rows = model.embed(items)
    return rows.vectors, model.model_id


@pytest.mark.parametrize("name", _entries())
def test_every_registry_entry_keeps_the_model_contract(
    name: str, home: Path, shared_data: Path
) -> None:
    spec = SPECS[name]
    _install(name, home)
    settings = Settings(home=home, **{f"{spec.modality}_model": name})
    vectors, model_id = _embed(name, settings, shared_data)
    assert vectors.ndim == 2 and len(vectors) >= 1, f"{name}: no row for a real input"
    assert vectors.shape[1] == spec.dim and np.isfinite(vectors).all()
    assert spec_for(model_id) is spec
    # declared metric, and it scores the rows against themselves (higher = more similar)
    assert metric_for_model(model_id) == spec.metric and spec.metric in METRICS
    self_score = similarity(vectors[:1], vectors[:1], spec.metric)  # type: ignore[arg-type]
    assert np.isfinite(self_score).all()
    # declared calibration loads (a fitted entry, an inline map or the declared guess)
    cal = load_default(model_id)
    assert np.isfinite(cal.slope) and np.isfinite(cal.offset) and cal.fitted_on
    # outlier cosine: every face model declares one; others declare none (unused)
    if spec.modality == "face":
        assert spec.same_person_cos is not None and -1 < spec.same_person_cos < 1
    # voice models carry their own diarization threshold
    if spec.modality == "voice":
        assert 0 < spec.setting("diarize_threshold") < 2


def test_a_declaration_without_metric_or_calibration_is_refused_at_once() -> None:
    from biofuse.registry import DeclarationError, ModelSpec

    base: dict[str, Any] = dict(
        name="toy",
        modality="face",
        files={"weights": "toy.bin"},
        licence="-",
        provenance="-",
        description="-",
        builder="toy_plugins:build",
        input="aligned-112",
        dim=8,
        metric="cosine",
        calibration="unfitted",
        same_person_cos=0.5,
    )
    ModelSpec(**base)
    for field, bad, says in [
        ("metric", "manhattan", "metric 'manhattan'"),
        ("calibration", "", "no calibration"),
        ("calibration", {"slope": 1.0}, "inline calibration lacks"),
        ("same_person_cos", None, "same_person_cos"),
        ("input", "wav", "input 'wav'"),
        ("builder", "nocolon", "builder"),
    ]:
        with pytest.raises(DeclarationError, match=says):
            ModelSpec(**(base | {field: bad}))
    with pytest.raises(TypeError):  # no default: a declaration must say it
        ModelSpec(**{k: v for k, v in base.items() if k != "metric"})


def test_modalities_are_declared_and_evidence_is_a_mapping() -> None:
    from biofuse.flows.pipeline import TRACK_MODALITIES, VideoEvidence, needs_person_tracks
    from biofuse.modalities.base import Embeddings

    from biofuse.registry import MODALITIES

    assert {m: d.keyed_by for m, d in MODALITIES.items()} == {
        "face": "track",
        "voice": "segment",
        "gait": "track",
        "body": "track",
    }
    assert set(TRACK_MODALITIES) == {"face", "gait", "body"}
    assert not needs_person_tracks(Settings(modalities=["face", "voice"]))
    assert needs_person_tracks(Settings(modalities=["face", "gait"]))
    assert not needs_person_tracks(Settings(modalities=["body"], person_fps=0))
    from biofuse.config import load_settings
    from biofuse.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown modality 'smell'"):
        load_settings(modalities=["face", "smell"])
    # every model's modality is a declared one
    assert {s.modality for s in SPECS.values()} <= set(MODALITIES)
    evidence = VideoEvidence()
    rows = Embeddings(np.ones((1, 2), np.float32), np.ones(1, np.float32), ["v:p0000"], "m")
    evidence.gait = rows  # the per-modality names are views of the one mapping
    assert evidence.rows == {"gait": rows} and evidence.face is None
    evidence.gait = None
    assert evidence.rows == {}
