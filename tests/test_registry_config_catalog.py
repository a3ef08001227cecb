"""Model registry, configuration and catalog: the bookkeeping an operator relies on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biofuse.catalog import DONE, Base, Catalog, SpeechSegment, Track
from biofuse.config import load_settings
from biofuse.errors import ConfigError, ModelMissingError
from biofuse.registry import Registry, file_sha256


def test_packaged_defaults_resolve_with_their_sha256(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    dlib = registry.resolve("dlib-resnet")
    assert set(dlib.paths) == {"landmarks5", "embedder"}
    assert (
        dlib.model_id.startswith("dlib-resnet-") and len(dlib.model_id) == len("dlib-resnet-") + 12
    )
    voice = registry.resolve("resemblyzer-ge2e")
    assert voice.sha256 == file_sha256(voice.paths["encoder"])
    assert registry.verify("resemblyzer-ge2e").sha256 == voice.sha256


def test_missing_user_model_says_how_to_add_it(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="biofuse models add adaface-ir101"):
        Registry(tmp_path).resolve("adaface-ir101")
    with pytest.raises(ModelMissingError, match="unknown model"):
        Registry(tmp_path).resolve("no-such-model")


def test_added_model_is_recorded_and_tampering_is_caught(tmp_path: Path) -> None:
    weights = tmp_path / "official.safetensors"
    weights.write_bytes(b"\x01" * 1000)
    registry = Registry(tmp_path / "models")
    added = registry.add("adaface-ir101", weights)
    assert added.sha256 == file_sha256(weights)
    assert registry.resolve("adaface-ir101").model_id == added.model_id
    target = tmp_path / "models" / "adaface-ir101" / "adaface-ir101.safetensors"
    target.write_bytes(b"\x02" * 1000)
    with pytest.raises(ModelMissingError, match="changed since they were added"):
        Registry(tmp_path / "models").verify("adaface-ir101")


def test_config_layers_file_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "biofuse.toml"
    config.write_text(f'home = "{tmp_path}"\nface_fps = 2.5\nbatch_size = 8\n')
    monkeypatch.setenv("BIOFUSE_BATCH_SIZE", "16")
    monkeypatch.setenv("BIOFUSE_MODALITIES", "face")
    settings = load_settings(config)
    assert settings.face_fps == 2.5 and settings.batch_size == 16
    assert settings.modalities == ["face"]
    assert settings.catalog_url == f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    monkeypatch.setenv("BIOFUSE_NUM_GPUS", "-1")
    with pytest.raises(ConfigError, match="num_gpus"):
        load_settings(config)


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "biofuse.toml"
    config.write_text("face_fsp = 3\n")
    with pytest.raises(ConfigError, match="face_fsp"):
        load_settings(config)


def catalog_urls() -> list:
    """SQLite always; PostgreSQL too when BIOFUSE_TEST_POSTGRES_URL names a server."""
    urls = [pytest.param("sqlite", id="sqlite")]
    pg = os.environ.get("BIOFUSE_TEST_POSTGRES_URL")
    urls.append(
        pytest.param(
            pg,
            id="postgresql",
            marks=pytest.mark.skipif(
                not pg, reason="set BIOFUSE_TEST_POSTGRES_URL to run the catalog on PostgreSQL"
            ),
        )
    )
    return urls


@pytest.fixture(params=catalog_urls())
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    if request.param == "sqlite":
        return Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog = Catalog(request.param)
    Base.metadata.drop_all(catalog.engine)  # a clean schema for each test
    Base.metadata.create_all(catalog.engine)
    return catalog


def test_catalog_keys_videos_by_content_and_replaces_evidence(catalog: Catalog) -> None:
    first = catalog.register_video("a" * 64, "/archive/x.mp4", 10)
    again = catalog.register_video("a" * 64, "/archive/renamed.mp4", 10)
    assert first.id == again.id
    other = catalog.register_video("b" * 64, "/archive/y.mp4", 10)
    assert other.id != first.id

    def evidence(n: int) -> tuple[list[Track], list[tuple[SpeechSegment, str | None]]]:
        tracks = [
            Track(key=f"v:t{i}", start_s=0, end_s=1, n_detections=2, boxes=[]) for i in range(n)
        ]
        return tracks, [(SpeechSegment(key="v:s0", start_s=0, end_s=1), "v:t0")]

    catalog.replace_video_evidence(first.id, *evidence(3))
    catalog.replace_video_evidence(first.id, *evidence(2))  # a retry: replaced, not added
    with catalog.session() as s:
        assert s.query(Track).count() == 2
        segment = s.query(SpeechSegment).one()
        assert s.get(Track, segment.track_id).key == "v:t0"
    catalog.update_video(first.id, status=DONE)
    assert catalog.video_counts() == {"done": 1, "pending": 1}
