"""Model registry, configuration and catalog: the bookkeeping an operator relies on."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_migrations import database_urls, empty_postgres

from biofuse.catalog import DONE, FAILED, RUNNING, Catalog, SpeechSegment, Track
from biofuse.config import load_settings
from biofuse.errors import ConfigError, ModelMissingError
from biofuse.registry import SPECS, Registry, file_sha256


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
    # a model copied as it is (checked, not converted): AdaFace's converted path is in test_face_*
    import torch
    from biofuse.modalities.gait.gaitbase import build_gaitbase

    weights = tmp_path / "official.pt"
    torch.manual_seed(0)
    torch.save({"model": build_gaitbase().state_dict(), "iteration": 60000}, weights)
    registry = Registry(tmp_path / "models")
    added = registry.add("gaitbase-casiab", weights)
    assert added.sha256 == file_sha256(weights)
    assert registry.resolve("gaitbase-casiab").model_id == added.model_id
    target = tmp_path / "models" / "gaitbase-casiab" / "gaitbase-casiab.pt"
    with open(target, "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(ModelMissingError, match="changed since they were added"):
        Registry(tmp_path / "models").verify("gaitbase-casiab")


PACKAGED = sorted(name for name, spec in SPECS.items() if spec.package is not None)
USER_ADDED = sorted(name for name, spec in SPECS.items() if spec.package is None)


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_weights_ship_their_sha256_and_verify_against_it(
    tmp_path: Path, name: str
) -> None:
    spec = SPECS[name]
    assert spec.sha256 is not None and len(spec.sha256) == 64
    registry = Registry(tmp_path / "models")
    try:
        registry.locate(name)
    except ModelMissingError:
        pytest.skip(f"{spec.package} is not installed here")
    assert registry.verify(name).sha256 == spec.sha256
    assert registry.resolve(name).sha256 == spec.sha256


def test_one_byte_appended_to_packaged_weights_fails_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import shutil

    from typer.testing import CliRunner

    from biofuse.cli import app

    name = "gait-compact-casiab"
    shipped = Registry(tmp_path / "models").locate(name)["weights"]
    # The same files in a package of our own, so the real one is never touched.
    package = tmp_path / "site" / "tampered_gait"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    copy = package / SPECS[name].files["weights"]
    shutil.copyfile(shipped, copy)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(SPECS, name, dataclasses.replace(SPECS[name], package="tampered_gait"))
    home = tmp_path / "home"
    monkeypatch.setenv("BIOFUSE_HOME", str(home))
    runner = CliRunner()
    result = runner.invoke(app, ["--home", str(home), "models", "verify", name])
    assert result.exit_code == 0, result.output  # an exact copy verifies

    with open(copy, "ab") as handle:
        handle.write(b"\x00")
    result = runner.invoke(app, ["--home", str(home), "models", "verify", name])
    assert result.exit_code == 1 and "bad" in result.output, result.output
    assert "differ from the released ones" in " ".join(result.output.split())
    with pytest.raises(ModelMissingError, match="differ from the released ones"):
        Registry(home / "models").resolve(name)


def _random_source(tmp_path: Path, name: str, as_folder: bool) -> Path:
    """Random bytes where the weights go (for ECAPA also a release-shaped folder of them)."""
    import numpy as np

    rng = np.random.default_rng(sum(name.encode()))
    if not as_folder:
        path = tmp_path / "download" / f"{name}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(rng.bytes(4096))
        return path
    from biofuse.modalities.voice.ecapa import REQUIRED_FILES

    folder = tmp_path / "download" / name
    folder.mkdir(parents=True)
    for file_name in REQUIRED_FILES:
        (folder / file_name).write_bytes(rng.bytes(4096))
    return folder


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
@pytest.mark.parametrize("name", USER_ADDED)
def test_models_add_refuses_random_bytes_for_every_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, as_folder: bool
) -> None:
    from typer.testing import CliRunner

    from biofuse.cli import app

    source = _random_source(tmp_path, name, as_folder)
    home = tmp_path / "home"
    monkeypatch.setenv("BIOFUSE_HOME", str(home))
    result = CliRunner().invoke(app, ["--home", str(home), "models", "add", name, str(source)])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert not (home / "models" / name).exists()  # nothing copied, not even in part
    registry = Registry(home / "models")
    assert registry.record(name) == {}
    assert dict((s.name, state) for s, state in registry.status())[name].startswith("missing")


def test_ecapa_release_folder_with_published_yaml_and_random_checkpoints_is_refused(
    tmp_path: Path,
) -> None:
    import numpy as np
    from biofuse.modalities.voice.ecapa import REQUIRED_FILES

    pytest.importorskip("speechbrain")
    from test_ecapa import HPARAMS

    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for file_name in REQUIRED_FILES:
        (folder / file_name).write_bytes(rng.bytes(4096))
    (folder / "hyperparams.yaml").write_text(HPARAMS)
    with pytest.raises(ModelMissingError, match="not a plain weights file"):
        Registry(tmp_path / "models").add("ecapa-voxceleb", folder)
    assert not (tmp_path / "models" / "ecapa-voxceleb").exists()


def test_concurrent_index_writers_merge_and_readers_never_see_a_torn_file(
    tmp_path: Path,
) -> None:
    # Ray starts several actors at once and each resolves its model, writing the hash cache.
    registry = Registry(tmp_path / "models")

    def write(i: int) -> None:
        registry._update_index(lambda index: index["hash_cache"].__setitem__(f"key{i}", "sha"))

    def read(_: int) -> int:
        return len(Registry(tmp_path / "models")._read_index()["hash_cache"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(write if i % 2 else read, i) for i in range(400)]
        for job in jobs:
            job.result()  # a torn file raises JSONDecodeError here
    assert len(registry._read_index()["hash_cache"]) == 200
    assert not list((tmp_path / "models").glob("*.tmp"))


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


@pytest.fixture(params=database_urls())
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    """An empty, migrated catalog on SQLite, and on PostgreSQL when one is configured."""
    if request.param == "sqlite":
        return Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    empty_postgres(request.param)
    return Catalog(request.param)


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


def test_a_video_lease_goes_to_one_owner_until_released_or_expired(catalog: Catalog) -> None:
    video = catalog.register_video("d" * 64, "/archive/z.mp4", 10)
    assert catalog.claim_video(video.id, "worker-a", lease_s=60)
    assert not catalog.claim_video(video.id, "worker-b", lease_s=60), "held by worker-a"
    assert catalog.claim_video(video.id, "worker-a", lease_s=60), "its owner may retry"
    got = catalog.video(video.id)
    assert (got.status, got.lease_owner, got.attempts) == (RUNNING, "worker-a", 2)
    assert not catalog.release_video(video.id, "worker-b", status=DONE), "not b's lease"
    assert catalog.release_video(video.id, "worker-a", status=FAILED, error="boom")
    assert catalog.claim_video(video.id, "worker-b", lease_s=0.2), "released: free again"
    time.sleep(0.3)  # worker-b died without releasing: its lease runs out
    assert not catalog.renew_lease(video.id, "worker-c", lease_s=60)
    assert catalog.claim_video(video.id, "worker-c", lease_s=60)
    assert not catalog.renew_lease(video.id, "worker-b", lease_s=60), "b lost it"
    assert catalog.release_video(video.id, "worker-c", status=DONE)
    assert not catalog.claim_video(video.id, "worker-a", lease_s=60), "done is never re-claimed"
    assert catalog.video(video.id).lease_owner is None


def test_concurrent_claims_give_each_video_to_exactly_one_worker(catalog: Catalog) -> None:
    ids = [catalog.register_video(f"{i:064d}", f"/v{i}.mp4", 1).id for i in range(40)]

    def worker(name: str) -> list[int]:
        return [v for v in ids if catalog.claim_video(v, name, lease_s=60)]

    with ThreadPoolExecutor(4) as pool:
        taken = list(pool.map(worker, ["w0", "w1", "w2", "w3"]))
    assert sorted(v for mine in taken for v in mine) == ids


def test_config_reads_lists_and_fusion_weights_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path))
    monkeypatch.setenv("BIOFUSE_FUSION_WEIGHTS", "face=2, voice=0.5")
    monkeypatch.setenv("BIOFUSE_MODALITIES", "face, gait")
    settings = load_settings()
    assert settings.fusion_weights == {"face": 2.0, "voice": 0.5}  # was: not settable
    assert settings.modalities == ["face", "gait"]
    monkeypatch.setenv("BIOFUSE_FUSION_WEIGHTS", '{"face": 3, "gait": 1.5}')
    assert load_settings().fusion_weights == {"face": 3.0, "gait": 1.5}
    monkeypatch.setenv("BIOFUSE_FUSION_WEIGHTS", "face")
    with pytest.raises(ConfigError, match="fusion_weights"):
        load_settings()


@pytest.mark.parametrize("kind", ["face", "voice", "gait", "body"])
def test_config_refuses_a_model_name_of_no_registry_model(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path))
    monkeypatch.setenv(f"BIOFUSE_{kind.upper()}_MODEL", "resemblyzer-ge2f")
    # face_model is a Literal of the face models; the others are checked against the registry
    expected = "face_model .*adaface-ir18" if kind == "face" else f"{kind}_model 'resemblyzer-ge2f'"
    with pytest.raises(ConfigError, match=expected):
        load_settings()
    monkeypatch.setenv(f"BIOFUSE_{kind.upper()}_MODEL", "dlib-resnet")  # a model of another kind
    if kind != "face":
        with pytest.raises(ConfigError, match=f"not a {kind} model"):
            load_settings()
