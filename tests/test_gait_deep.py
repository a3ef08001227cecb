"""GaitBase-family extractor (official and compact configs) and the compact model's training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from biofuse.flows.models import build_model
from biofuse.modalities.base import Extractor
from biofuse.modalities.gait.casiab import read_subject
from biofuse.modalities.gait.compact import (
    COMPACT_CONFIG,
    Recipe,
    identity_loss,
    packed_training_set,
    train,
    triplet_loss,
)
from biofuse.modalities.gait.extractors import GaitBaseExtractor
from biofuse.modalities.gait.gaitbase import (
    GAITBASE_CASIAB,
    GaitBase,
    base_sil_cutting,
    build_gaitbase,
    gait_distance,
    load_gaitbase,
)
from biofuse.modalities.items import SilhouetteSequence

from biofuse.config import Settings
from biofuse.errors import ModelMissingError
from biofuse.registry import Registry

WEIGHTS = Path(__file__).resolve().parents[1] / "modalities" / "gait" / "weights"


def random_sequence(key: str, frames: int, seed: int) -> SilhouetteSequence:
    """A blob-shaped silhouette that moves: enough structure for distinct embeddings."""
    rng = np.random.default_rng(seed)
    out = np.zeros((frames, 64, 64), np.uint8)
    for t in range(frames):
        x0 = 22 + int(rng.integers(-3, 4))
        out[t, 4 + t % 5 : 60, x0 : x0 + 20] = 255
        out[t, rng.integers(0, 64, 40), rng.integers(0, 64, 40)] = 255
    return SilhouetteSequence(key, out)


@pytest.fixture(scope="module")
def seeded_gaitbase(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, GaitBase]:
    """A seeded GaitBase saved as an OpenGait checkpoint and added to a fresh registry."""
    torch.manual_seed(7)
    model = build_gaitbase(GAITBASE_CASIAB)
    folder = tmp_path_factory.mktemp("gaitbase")
    path = folder / "GaitBase_DA-60000.pt"
    torch.save({"model": model.state_dict(), "iteration": 60000}, path)
    registry = Registry(folder / "models")
    registry.add("gaitbase-casiab", path)
    return registry, model


def test_official_checkpoint_embeds_through_the_registry_like_the_graph(
    seeded_gaitbase: tuple[Registry, GaitBase],
) -> None:
    registry, model = seeded_gaitbase
    extractor = GaitBaseExtractor(registry.resolve("gaitbase-casiab"), GAITBASE_CASIAB)
    extractor.prepare("cpu")
    assert isinstance(extractor, Extractor)
    assert extractor.dim == 256 * 16 and extractor.model_id.startswith("gaitbase-casiab-")
    items = [random_sequence("a", 7, 1), random_sequence("b", 12, 2)]
    rows = extractor.embed(items)
    assert rows.keys == ["a", "b"] and rows.vectors.shape == (2, 4096)
    with torch.no_grad():
        direct = [
            model(torch.from_numpy(base_sil_cutting(item.frames))[None]).reshape(-1).numpy()
            for item in items
        ]
    np.testing.assert_allclose(rows.vectors, np.stack(direct), atol=1e-4)
    # Rows reshape to the evaluator's [n, c, p]; a sequence is nearest itself.
    dist = gait_distance(rows.vectors.reshape(-1, 256, 16), rows.vectors.reshape(-1, 256, 16))
    assert list(np.argmin(dist, axis=1)) == [0, 1] and dist[0, 1] > 0


def test_small_packed_calls_give_the_same_rows_and_blank_tracks_no_row(
    seeded_gaitbase: tuple[Registry, GaitBase],
) -> None:
    registry, _ = seeded_gaitbase
    resolved = registry.resolve("gaitbase-casiab")
    whole = GaitBaseExtractor(resolved, GAITBASE_CASIAB)
    chunked = GaitBaseExtractor(resolved, GAITBASE_CASIAB, max_frames_per_call=8)
    blank = SilhouetteSequence("blank", np.zeros((4, 64, 64), np.uint8))
    items = [random_sequence("a", 6, 3), blank, random_sequence("b", 5, 4)]
    one, many = whole.embed(items), chunked.embed(items)
    assert one.keys == many.keys == ["a", "b"]
    np.testing.assert_allclose(one.vectors, many.vectors, atol=1e-5)
    assert one.quality[0] == pytest.approx(6 / 30)
    assert len(whole.embed([blank])) == 0
    # A frame cap keeps evenly spaced frames; quality still counts the whole track.
    capped = GaitBaseExtractor(resolved, GAITBASE_CASIAB, max_frames_per_sequence=3)
    long_track = random_sequence("long", 12, 5)
    picked = SilhouetteSequence("picked", long_track.frames[[0, 6, 11]])
    rows = capped.embed([long_track])
    np.testing.assert_allclose(rows.vectors, whole.embed([picked]).vectors, atol=1e-5)
    assert rows.quality[0] == pytest.approx(12 / 30)


def test_gaitbase_without_weights_says_how_to_add_them(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="models add gaitbase-casiab"):
        build_model("gait", Settings(home=tmp_path, gait_model="gaitbase-casiab"))


def test_triplet_loss_is_zero_when_subjects_are_apart_and_positive_when_mixed() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.zeros(4, 3, 2)
    apart[2:, 0] += 5.0  # subject 1 sits 5 away from subject 0 in every part
    assert triplet_loss(apart, labels).item() == 0.0
    # Swapped: each anchor's positive is 5 away, its negatives 0 and 5 away, so the two
    # triplets cost 5 + 0.2 and 0 + 0.2; both violate, the mean is 2.7.
    mixed = apart[[0, 2, 1, 3]]
    assert triplet_loss(mixed, labels).item() == pytest.approx(2.7, abs=1e-4)
    logits = torch.zeros(4, 2, 3)
    logits[torch.arange(4), labels] = 1.0
    assert identity_loss(logits, labels) < identity_loss(-logits, labels)


def test_compact_training_is_deterministic_and_its_checkpoint_loads(
    shared_data: Path, tmp_path: Path
) -> None:
    root = shared_data / "casiab"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    sequences = [
        (subject, packed)
        for subject in ("001", "002", "003")
        for (condition, _), packed in sorted(read_subject(root, subject).items())
        if condition in ("nm-01", "bg-01")
    ]
    data = packed_training_set(sequences)
    assert data.classes == 3
    recipe = Recipe(
        subjects_per_batch=2, sequences_per_subject=2, frames_per_sequence=3, iterations=2
    )
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GaitBase(COMPACT_CONFIG)
        summary = train(model, data, recipe)
        assert summary["iterations"] == 2 and np.isfinite(summary["triplet"])
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    initial = GaitBase(COMPACT_CONFIG).state_dict()
    assert not torch.equal(states[0]["FCs.fc_bin"], initial["FCs.fc_bin"])
    path = tmp_path / "compact.pt"
    torch.save({"model": states[0], "iteration": 2}, path)
    loaded = load_gaitbase(path, COMPACT_CONFIG)
    assert all(torch.equal(loaded.state_dict()[k], states[0][k]) for k in states[0])
    with pytest.raises(ModelMissingError, match="does not fit"):
        load_gaitbase(path, GAITBASE_CASIAB)


def test_the_committed_compact_default_separates_unseen_casiab_subjects(
    shared_data: Path, tmp_path: Path
) -> None:
    """The default gait model (trained on 001-074) on casiab-dev's test-range subjects."""
    root = shared_data / "casiab-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    import json
    import pickle

    model = build_model("gait", Settings(home=tmp_path))
    assert model.model_id.startswith("gait-compact-casiab-") and model.dim == 64 * 16
    report = json.loads((WEIGHTS / "gait-compact-casiab.json").read_text())
    assert report["subjects"] == "001-074" and len(report["data_sha256"]) == 64
    assert (WEIGHTS / "gait-compact-casiab.pt").stat().st_size <= 20 * 2**20
    subjects = ("075", "076", "077", "078", "079", "080")
    items = []
    for s in subjects:
        for c in ("nm-01", "nm-02", "nm-05"):
            with open(root / s / c / "090" / "090.pkl", "rb") as handle:
                items.append(SilhouetteSequence(f"{s}/{c}", pickle.load(handle)))
    rows = model.embed(items)
    assert len(rows) == 18
    vec = dict(zip(rows.keys, rows.vectors.reshape(-1, 64, 16)))
    gallery = np.stack([vec[f"{s}/{c}"] for s in subjects for c in ("nm-01", "nm-02")])
    owner = np.repeat(np.arange(len(subjects)), 2)
    probes = np.stack([vec[f"{s}/nm-05"] for s in subjects])
    nearest = owner[np.argmin(gait_distance(probes, gallery), axis=1)]
    assert list(nearest) == list(range(len(subjects)))
