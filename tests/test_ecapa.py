"""ECAPA voice extractor: loads a release-shaped folder offline through SpeechBrain's classes.

The official weights are not redistributable here, so the folder is built from a randomly
initialised ECAPA-TDNN with the release's hyperparameters. Matching the same torch modules run
directly proves the folder's weights (not some other copy) are loaded and that padding and
relative lengths are passed through; it says nothing about accuracy.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from biofuse.modalities.base import Extractor
from biofuse.modalities.voice.ecapa import REQUIRED_FILES, EcapaExtractor
from biofuse.modalities.voice.resemblyzer_voice import SAMPLE_RATE, AudioSegment, segment_quality

from biofuse.errors import ModelMissingError
from biofuse.registry import SPECS, ResolvedModel

torch = pytest.importorskip("torch")
pytest.importorskip("speechbrain")

N_MELS = 80
N_SPEAKERS = 7205  # VoxCeleb2 dev speakers: the release classifier's output size

# Written for this test in the layout of the release's hyperparams.yaml (same keys, same values).
HPARAMS = f"""\
n_mels: {N_MELS}
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: {N_SPEAKERS}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def build_release(folder: Path, seed: int = 0) -> dict[str, Any]:
    """A release-shaped folder from freshly initialised modules; returns those modules."""
    from speechbrain.dataio.encoder import CategoricalEncoder
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    embedding_model = ECAPA_TDNN(
        input_size=N_MELS,
        channels=[1024, 1024, 1024, 1024, 3072],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        lin_neurons=192,
    ).eval()
    # Random batch-norm statistics too, so a load that skipped them would not match by luck.
    with torch.no_grad():
        for module in embedding_model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    classifier = Classifier(input_size=192, out_neurons=N_SPEAKERS)
    emb_norm = InputNormalization(norm_type="global", std_norm=False)
    emb_norm.train()
    emb_norm(torch.randn(16, 1, 192), torch.ones(16))  # gives it global statistics to save
    torch.save(embedding_model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    emb_norm._save(folder / "mean_var_norm_emb.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable([f"id{10000 + i}" for i in range(N_SPEAKERS)])
    labels.save(folder / "label_encoder.txt")
    (folder / "hyperparams.yaml").write_text(HPARAMS)
    return {
        "features": Fbank(n_mels=N_MELS),
        "norm": InputNormalization(norm_type="sentence", std_norm=False).eval(),
        "embedding_model": embedding_model,
    }


def direct_embeddings(modules: dict[str, Any], waves: list[np.ndarray]) -> np.ndarray:
    """The same pipeline run by hand: pad, fbanks, sentence norm, ECAPA with relative lengths."""
    longest = max(len(w) for w in waves)
    padded = torch.zeros(len(waves), longest)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = torch.from_numpy(wave)
    lens = torch.tensor([len(w) / longest for w in waves])
    with torch.no_grad():
        feats = modules["norm"](modules["features"](padded), lens)
        out = modules["embedding_model"](feats, lens).reshape(len(waves), -1).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def resolved(folder: Path) -> ResolvedModel:
    return ResolvedModel(SPECS["ecapa-voxceleb"], {"folder": folder}, "ab" * 32)


def two_turns(shared_data_root: Path | None) -> list[np.ndarray]:
    """Two LibriSpeech utterances of different speakers (cut to 6 s and 3.5 s to stay fast)."""
    root = shared_data_root / "voice-dev" / "librispeech" if shared_data_root else None
    if root is not None and root.is_dir():
        import soundfile

        speakers = sorted(p for p in root.iterdir() if p.is_dir())[:2]
        waves = []
        for speaker, seconds in zip(speakers, (6.0, 3.5)):
            samples, rate = soundfile.read(sorted(speaker.glob("*.flac"))[0], dtype="float32")
            assert rate == SAMPLE_RATE
            waves.append(samples[: int(seconds * SAMPLE_RATE)])
        return waves
    rng = np.random.default_rng(0)  # synthetic: voiced-like harmonics plus noise
    waves = []
    for seconds, f0 in ((6.0, 120.0), (3.5, 210.0)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        waves.append((0.05 * wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32))
    return waves


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during an offline model load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def data_root(request: pytest.FixtureRequest) -> Path | None:
    try:
        return request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return None


def test_release_folder_loads_offline_and_matches_the_modules_run_directly(
    tmp_path: Path, no_network: None, data_root: Path | None
) -> None:
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    modules = build_release(folder)
    waves = two_turns(data_root)
    extractor = EcapaExtractor(resolved(folder))
    assert isinstance(extractor, Extractor)
    assert extractor.model_id == "ecapa-voxceleb-" + "ab" * 6

    started = time.perf_counter()
    extractor.prepare("cpu")
    load_s = time.perf_counter() - started
    segments = [
        AudioSegment("long", waves[0], snr_db=20.0),
        AudioSegment("too-short", waves[1][: int(0.5 * SAMPLE_RATE)]),
        AudioSegment("short", waves[1]),
    ]
    started = time.perf_counter()
    got = extractor.embed(segments)
    embed_s = time.perf_counter() - started
    print(f"ecapa load {load_s:.1f} s, embed {embed_s:.1f} s")

    assert got.keys == ["long", "short"]
    assert got.vectors.shape == (2, 192) and got.vectors.dtype == np.float32
    assert np.isfinite(got.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-5)
    expected = direct_embeddings(modules, waves)
    np.testing.assert_allclose(got.vectors, expected, atol=1e-5)
    # Relative lengths make padding nearly harmless: the short turn alone gives almost the same
    # row (cosine ~0.99994 here; ~0.95 if the batch ignored its lengths).
    alone = extractor.embed([AudioSegment("short", waves[1])]).vectors[0]
    assert float(alone @ got.vectors[1]) > 0.999
    # Different turns give different directions: the rows are not one constant vector.
    assert float(got.vectors[0] @ got.vectors[1]) < 0.999
    np.testing.assert_allclose(
        got.quality, [segment_quality(6.0, 20.0), segment_quality(3.5, None)], rtol=1e-5
    )
    # Nothing was left in, or linked from, the release folder.
    assert sorted(p.name for p in folder.iterdir()) == sorted(REQUIRED_FILES)


def test_folder_without_embedding_weights_names_the_missing_file(
    tmp_path: Path, no_network: None
) -> None:
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    for name in REQUIRED_FILES:
        if name != "embedding_model.ckpt":
            (folder / name).write_text("placeholder\n")
    extractor = EcapaExtractor(resolved(folder))
    with pytest.raises(ModelMissingError, match="embedding_model.ckpt") as caught:
        extractor.prepare("cpu")
    assert "biofuse models add ecapa-voxceleb FOLDER" in str(caught.value)


# The attack of issue 18: SpeechBrain's own module path reaches subprocess, so a prefix
# allowlist of "!new:speechbrain." let it through and the command ran when the model loaded.
POPEN = (
    'pwn: !new:speechbrain.utils.superpowers.subprocess.Popen {args: "touch PWNED", shell: True}'
)


def test_a_hyperparams_yaml_that_runs_a_command_is_refused_and_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    from typer.testing import CliRunner

    from biofuse.cli import app

    monkeypatch.chdir(tmp_path)  # where `touch PWNED` would write
    folder = tmp_path / "download" / "spkrec-ecapa-voxceleb"
    build_release(folder)  # checkpoints of the release's keys and shapes
    (folder / "hyperparams.yaml").write_text(HPARAMS + POPEN + "\n")
    home = tmp_path / "home"
    monkeypatch.setenv("BIOFUSE_HOME", str(home))
    result = CliRunner().invoke(
        app, ["--home", str(home), "models", "add", "ecapa-voxceleb", str(folder)]
    )
    assert result.exit_code != 0, result.output
    assert "speechbrain.utils.superpowers.subprocess.Popen" in " ".join(result.output.split())
    assert not (home / "models" / "ecapa-voxceleb").exists()  # nothing installed
    # A folder planted by hand is refused at load too, before anything is built.
    with pytest.raises(ModelMissingError, match="never runs a model folder's yaml"):
        EcapaExtractor(resolved(folder)).prepare("cpu")
    time.sleep(0.5)  # Popen does not wait: give a started command time to leave its trace
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("lin_neurons: 192", "lin_neurons: 256"), "lin_neurons"),
        (("n_mels: 80", "n_mels: 40"), "n_mels"),
        (("norm_type: sentence", "norm_type: global"), "norm_type"),
        (("attention_channels: 128", "attention_channels: 64"), "attention_channels"),
        (("embedding_model: !new:", "embedding: !new:"), "at 'embedding'"),
    ],
)
def test_hyperparams_that_differ_from_the_published_ones_are_refused(
    tmp_path: Path, change: tuple[str, str], named: str
) -> None:
    from biofuse.registry import Registry

    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    for name in REQUIRED_FILES:
        (folder / name).write_text("placeholder\n")  # refused before any checkpoint is read
    assert change[0] in HPARAMS
    (folder / "hyperparams.yaml").write_text(HPARAMS.replace(*change))
    registry = Registry(tmp_path / "models")
    with pytest.raises(ModelMissingError, match=named) as caught:
        registry.add("ecapa-voxceleb", folder)
    assert "published" in str(caught.value) or "at their own keys" in str(caught.value)
    assert not (tmp_path / "models" / "ecapa-voxceleb").exists()
    assert registry.record("ecapa-voxceleb") == {}


def test_checkpoints_that_do_not_fit_the_release_are_refused(tmp_path: Path) -> None:
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    from biofuse.registry import Registry

    folder = tmp_path / "spkrec-ecapa-voxceleb"
    build_release(folder)
    smaller = ECAPA_TDNN(input_size=N_MELS, lin_neurons=192)  # SpeechBrain's defaults: 512 ch
    torch.save(smaller.state_dict(), folder / "embedding_model.ckpt")
    with pytest.raises(ModelMissingError, match="embedding_model.ckpt does not fit"):
        Registry(tmp_path / "models").add("ecapa-voxceleb", folder)
    assert not (tmp_path / "models" / "ecapa-voxceleb").exists()


def test_embeddings_equal_speechbrains_own_loader_on_a_benign_release(
    tmp_path: Path, no_network: None
) -> None:
    """Parity with SpeechBrain's `EncoderClassifier` (which runs the yaml: ours, written above)."""
    from speechbrain.inference.speaker import EncoderClassifier
    from speechbrain.utils.fetching import FetchConfig, FetchFrom, FetchSource, LocalStrategy

    folder = tmp_path / "spkrec-ecapa-voxceleb"
    build_release(folder, seed=3)
    waves = two_turns(None)
    extractor = EcapaExtractor(resolved(folder))
    extractor.prepare("cpu")
    ours = extractor.encode(waves)
    reference = EncoderClassifier.from_hparams(
        source=FetchSource(FetchFrom.LOCAL, str(folder)),
        hparams_file="hyperparams.yaml",
        savedir=tmp_path / "savedir",
        overrides={"pretrained_path": str(folder)},
        local_strategy=LocalStrategy.NO_LINK,
        fetch_config=FetchConfig(allow_network=False, allow_updates=False),
    )
    longest = max(len(w) for w in waves)
    padded = torch.zeros(len(waves), longest)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = torch.from_numpy(wave)
    lens = torch.tensor([len(w) / longest for w in waves])
    with torch.no_grad():
        theirs = reference.encode_batch(padded, lens, normalize=False).reshape(len(waves), -1)
    assert ours.shape == (2, 192) and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_hyperparams_that_would_run_other_code_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    for name in REQUIRED_FILES:
        (folder / name).write_text("placeholder\n")
    (folder / "hyperparams.yaml").write_text("boom: !apply:os.system ['true']\n")
    with pytest.raises(ModelMissingError, match="!apply:os.system"):
        EcapaExtractor(resolved(folder)).prepare("cpu")


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    for name in REQUIRED_FILES:
        (folder / name).write_text("placeholder\n")
    (folder / "hyperparams.yaml").write_text(HPARAMS)
    torch.save({"weights": torch.zeros(2), "payload": Path("/tmp")}, folder / "classifier.ckpt")
    torch.save({"w": torch.zeros(2)}, folder / "embedding_model.ckpt")
    torch.save({"w": torch.zeros(2)}, folder / "mean_var_norm_emb.ckpt")
    with pytest.raises(ModelMissingError, match="classifier.ckpt"):
        EcapaExtractor(resolved(folder)).prepare("cpu")


def test_empty_and_too_short_batches_give_no_rows(tmp_path: Path) -> None:
    extractor = EcapaExtractor(resolved(tmp_path / "absent"))
    assert len(extractor.embed([])) == 0
    extractor._encoder = object()  # never called: every segment is dropped before encoding
    short = AudioSegment("short", np.ones(SAMPLE_RATE // 2, np.float32))
    silent = AudioSegment("silent", np.zeros(2 * SAMPLE_RATE, np.float32))
    got = extractor.embed([short, silent])
    assert len(got) == 0 and got.dim == 192


def test_batches_keep_padding_within_budget() -> None:
    extractor = EcapaExtractor(resolved(Path("unused")), max_batch_s=10.0)
    lengths = [s * SAMPLE_RATE for s in (2, 9, 3, 1, 4)]
    groups = extractor._batches(lengths)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for group in groups:
        padded = max(lengths[i] for i in group) * len(group)
        assert padded <= 10 * SAMPLE_RATE or len(group) == 1
    assert groups[0] == [1]  # the 9 s turn cannot share with anything


@pytest.mark.slow  # builds and copies a second 85 MB release folder
def test_ecapa_added_through_the_cli_is_the_pipelines_voice_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, data_root: Path | None
) -> None:
    from biofuse.flows.models import VoiceEmbedder, build_model
    from typer.testing import CliRunner

    from biofuse.cli import app
    from biofuse.config import load_settings

    home = tmp_path / "home"
    monkeypatch.setenv("BIOFUSE_HOME", str(home))  # --home sets it; restored afterwards
    release = tmp_path / "download" / "spkrec-ecapa-voxceleb"
    modules = build_release(release, seed=1)
    settings = load_settings(home=str(home), voice_model="ecapa-voxceleb")
    with pytest.raises(ModelMissingError, match="biofuse models add ecapa-voxceleb"):
        VoiceEmbedder(settings)

    result = CliRunner().invoke(
        app, ["--home", str(home), "models", "add", "ecapa-voxceleb", str(release)]
    )
    assert result.exit_code == 0, result.output
    embedder = build_model("voice", settings)
    assert embedder.dim == 192 and embedder.model_id.startswith("ecapa-voxceleb-")
    waves = two_turns(data_root)
    got = embedder.embed([AudioSegment("a", waves[0]), AudioSegment("b", waves[1])])
    assert got.keys == ["a", "b"] and got.model_id == embedder.model_id
    # The registry's copy is what was loaded: the same rows as the modules run directly.
    np.testing.assert_allclose(got.vectors, direct_embeddings(modules, waves), atol=1e-5)


def test_an_unknown_voice_model_names_the_ones_that_work(tmp_path: Path) -> None:
    """Refused when the settings are read, before any actor could start, and by the builder."""
    from biofuse.flows.models import VoiceEmbedder

    from biofuse.config import Settings, load_settings
    from biofuse.errors import ConfigError

    with pytest.raises(ConfigError, match="use one of resemblyzer-ge2e, ecapa-voxceleb"):
        load_settings(home=str(tmp_path), voice_model="xvector-kaldi")
    # Settings() alone does not check names; the builder does
    settings = Settings(home=str(tmp_path), voice_model="xvector-kaldi")
    with pytest.raises(ModelMissingError, match="'resemblyzer-ge2e', 'ecapa-voxceleb'"):
        VoiceEmbedder(settings)
