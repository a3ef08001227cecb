"""Voice extractor: SpeechBrain's ECAPA-TDNN trained on VoxCeleb (192-d, cosine metric).

The weights are the official `speechbrain/spkrec-ecapa-voxceleb` release folder, added once with
`biofuse models add ecapa-voxceleb FOLDER`. The release's `hyperparams.yaml` is executable
configuration (HyperPyYAML's `!new:` builds any importable class, `!apply:` calls anything), so
it is never run: the network is built by our code from the release's published hyperparameters
(`RELEASE_HPARAMS`), with SpeechBrain's own `Fbank`, `InputNormalization` and `ECAPA_TDNN`
classes, and only tensors are read from the folder (`torch.load(weights_only=True)`). The yaml
is at most parsed as plain data, and a folder whose yaml asks for anything but the published
classes and values is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.modalities.base import Embeddings, l2_normalise
from biofuse.modalities.voice.resemblyzer_voice import (
    SAMPLE_RATE,
    SILENT_RMS,
    AudioSegment,
    segment_quality,
)

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec, ResolvedModel, install_folder

HPARAMS_FILE = "hyperparams.yaml"
CHECKPOINTS = ("embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt")
REQUIRED_FILES = (HPARAMS_FILE, *CHECKPOINTS, "label_encoder.txt")
MAX_HPARAMS_BYTES = 1 << 20
ADD_HINT = "run `biofuse models add ecapa-voxceleb FOLDER` with the official release folder"

# speechbrain/spkrec-ecapa-voxceleb's hyperparams.yaml: each module it builds, its class and
# arguments (`!ref <n_mels>` = 80, `!ref <out_n_neurons>` = 7205). Everything else in that file
# (pretrained_path, modules, label_encoder, pretrainer) only wires these to the checkpoints.
N_MELS = 80
EMBEDDING_DIM = 192
RELEASE_HPARAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "compute_features": ("speechbrain.lobes.features.Fbank", {"n_mels": N_MELS}),
    "mean_var_norm": (
        "speechbrain.processing.features.InputNormalization",
        {"norm_type": "sentence", "std_norm": False},
    ),
    "embedding_model": (
        "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN",
        {
            "input_size": N_MELS,
            "channels": [1024, 1024, 1024, 1024, 3072],
            "kernel_sizes": [5, 3, 3, 3, 1],
            "dilations": [1, 2, 3, 4, 1],
            "attention_channels": 128,
            "lin_neurons": EMBEDDING_DIM,
        },
    ),
    "classifier": (
        "speechbrain.lobes.models.ECAPA_TDNN.Classifier",
        {"input_size": EMBEDDING_DIM, "out_neurons": 7205},
    ),
    "mean_var_norm_emb": (
        "speechbrain.processing.features.InputNormalization",
        {"norm_type": "global", "std_norm": False},
    ),
}
# The other classes the release's yaml names (wiring only; never built here).
_RELEASE_WIRING = {
    "label_encoder": "speechbrain.dataio.encoder.CategoricalEncoder",
    "pretrainer": "speechbrain.utils.parameter_transfer.Pretrainer",
}


# -- the release's yaml, as data ----------------------------------------------------------


class _Tagged:
    """A YAML node carrying a HyperPyYAML tag (`!new:...`, `!ref`, ...): data, never built."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value

    def __repr__(self) -> str:
        return f"{self.tag} {self.value!r}"


def _load_yaml_as_data(text: str) -> Any:
    """Parse HyperPyYAML as plain data: safe types only, every `!tag` kept as `_Tagged`.

    Built on yaml.SafeLoader, so Python tags (`!!python/object`...) are still refused, and no
    class is imported or constructed whatever the file says.
    """
    import yaml

    class PlainLoader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
        value: Any
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)
        return _Tagged("!" + suffix, value)

    PlainLoader.add_multi_constructor("!", tagged)
    return yaml.load(text, Loader=PlainLoader)  # noqa: S506 - a SafeLoader subclass


def _walk_tags(value: Any, where: str, seen: set[int]) -> list[tuple[str, _Tagged]]:
    """Every tagged node with its place; each container once (YAML aliases can share or loop)."""
    found: list[tuple[str, _Tagged]] = []
    if isinstance(value, _Tagged | Mapping | list):
        if id(value) in seen:
            return found
        seen.add(id(value))
    if isinstance(value, _Tagged):
        found.append((where, value))
        found += _walk_tags(value.value, where, seen)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found += _walk_tags(item, f"{where}.{key}" if where else str(key), seen)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _walk_tags(item, f"{where}[{i}]", seen)
    return found


_REF = re.compile(r"<([A-Za-z_][\w.]*)>")


def _resolve_refs(value: Any, top: Mapping[str, Any]) -> Any:
    """`!ref <name>` -> the top-level plain value it names (what the published file uses)."""
    if isinstance(value, _Tagged) and value.tag == "!ref" and isinstance(value.value, str):
        match = _REF.fullmatch(value.value.strip())
        if match and match.group(1) in top and not isinstance(top[match.group(1)], _Tagged):
            return top[match.group(1)]
        return value
    if isinstance(value, Mapping):
        return {k: _resolve_refs(v, top) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, top) for v in value]
    return value


def check_hyperparams(path: Path) -> None:
    """Refuse a hyperparams.yaml that is not the release's: parsed as data, nothing is built.

    Every class the file names must be the one the release names at that key, and the
    arguments of the modules that compute an embedding must be the published ones: the network
    is built from `RELEASE_HPARAMS`, so a file asking for anything else would be silently
    ignored otherwise.
    """
    import yaml

    where = f"ecapa-voxceleb: {path}"
    if path.stat().st_size > MAX_HPARAMS_BYTES:  # the release's is about 2 KB
        raise ModelMissingError(f"{where} is too large for a hyperparams file; {ADD_HINT}")
    try:
        data = _load_yaml_as_data(path.read_text(encoding="utf-8"))
        tags = _walk_tags(data, "", set())
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelMissingError(
            f"{where} is not plain YAML ({_first_line(exc)}); {ADD_HINT}"
        ) from exc
    if not isinstance(data, Mapping):
        raise ModelMissingError(f"{where} is not a mapping of hyperparameters; {ADD_HINT}")
    allowed = {key: cls for key, (cls, _) in RELEASE_HPARAMS.items()} | _RELEASE_WIRING
    for place, node in tags:
        if node.tag == "!ref":
            continue
        top_key = place.split(".", 1)[0]
        if (
            node.tag.startswith("!new:")
            and place == top_key
            and allowed.get(top_key) == (node.tag.removeprefix("!new:"))
        ):
            continue
        raise ModelMissingError(
            f"{where} uses {node.tag!r} at {place!r}; the release's hyperparams build only "
            f"SpeechBrain's {', '.join(sorted(set(allowed.values())))} at their own keys, and "
            f"biofuse never runs a model folder's yaml; {ADD_HINT}"
        )
    for key, (cls, expected) in RELEASE_HPARAMS.items():
        node = data.get(key)
        if not isinstance(node, _Tagged) or not (
            node.value is None or isinstance(node.value, Mapping)
        ):
            raise ModelMissingError(f"{where} has no {key!r} (!new:{cls}); {ADD_HINT}")
        try:
            got = _resolve_refs(dict(node.value or {}), data)
        except RecursionError as exc:  # an alias that contains itself
            raise ModelMissingError(f"{where}: {key} refers to itself; {ADD_HINT}") from exc
        if got != expected:
            differing = "; ".join(
                f"{k}: {got.get(k, '(absent)')!r}, published {expected.get(k, '(absent)')!r}"
                for k in sorted(set(got) | set(expected), key=str)
                if got.get(k, "(absent)") != expected.get(k, "(absent)")
            )
            raise ModelMissingError(
                f"{where}: {key} differs from the published speechbrain/spkrec-ecapa-voxceleb "
                f"hyperparameters ({differing}); only the official release is supported; "
                f"{ADD_HINT}"
            )


# -- the release's checkpoints, as tensors ------------------------------------------------


def check_release_folder(folder: Path) -> None:
    """Refuse a folder that is not a complete release, or whose yaml is not the release's."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ModelMissingError(f"ecapa-voxceleb: model folder {folder} {what}; {ADD_HINT}")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ModelMissingError(
                f"ecapa-voxceleb: {name} is missing from {folder} (a release folder holds "
                f"{', '.join(REQUIRED_FILES)}); {ADD_HINT}"
            )
    check_hyperparams(folder / HPARAMS_FILE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_tensors(path: Path) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never code."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
    ) as exc:
        raise ModelMissingError(
            f"ecapa-voxceleb: {path} is not a plain weights file ({exc.__class__.__name__}: "
            f"{_first_line(exc)}); re-add the official release with "
            "`biofuse models add ecapa-voxceleb FOLDER`"
        ) from exc


def check_checkpoints_are_weights(folder: Path) -> dict[str, Any]:
    """Every release checkpoint read as tensors only; returns them by file name."""
    return {name: _read_tensors(folder / name) for name in CHECKPOINTS}


def _state_dict(loaded: Any, path: Path) -> dict[str, Any]:
    import torch
    from speechbrain.utils.checkpoints import KEYS_MAPPING, map_old_state_dict_weights

    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise ModelMissingError(
            f"ecapa-voxceleb: {path} holds no state dict of tensors; {ADD_HINT}"
        )
    # SpeechBrain's own renames of old keys (a pure function over the names).
    return map_old_state_dict_weights(dict(loaded), KEYS_MAPPING)


def _load_strict(module: Any, loaded: Any, path: Path) -> None:
    """Every key present, none extra, every shape equal, or a clear refusal."""
    state = _state_dict(loaded, path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or wrong:
        raise ModelMissingError(
            f"ecapa-voxceleb: {path} does not fit the release's {type(module).__name__} "
            f"({len(missing)} keys missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, "
            f"e.g. {unexpected[:3]}; wrong shapes: {wrong[:3]}); {ADD_HINT}"
        )
    module.load_state_dict(state, strict=True)


def _check_embedding_norm(loaded: Any, path: Path) -> None:
    import torch

    ok = isinstance(loaded, Mapping) and all(
        isinstance(loaded.get(k), torch.Tensor) and loaded[k].numel() == EMBEDDING_DIM
        for k in ("glob_mean", "glob_std")
    )
    if not ok:
        raise ModelMissingError(
            f"ecapa-voxceleb: {path} is not the release's embedding statistics (glob_mean and "
            f"glob_std of {EMBEDDING_DIM} values); {ADD_HINT}"
        )


def _new(key: str) -> Any:
    """One release module, built by our code from `RELEASE_HPARAMS` (never from a yaml)."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
    from speechbrain.processing.features import InputNormalization

    classes = {
        "speechbrain.lobes.features.Fbank": Fbank,
        "speechbrain.processing.features.InputNormalization": InputNormalization,
        "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN": ECAPA_TDNN,
        "speechbrain.lobes.models.ECAPA_TDNN.Classifier": Classifier,
    }
    cls, kwargs = RELEASE_HPARAMS[key]
    return classes[cls](**kwargs)


def _build_encoder(folder: Path) -> Any:
    """Fbank -> sentence mean norm -> ECAPA-TDNN with the folder's weights, checked in full.

    The classifier and the embedding statistics are not used for embeddings (x-vectors are
    taken before them, as `encode_batch(normalize=False)` does) but are checked all the same,
    so a folder that is not the release is refused at `models add`, not later.
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; belt and braces
    check_release_folder(folder)
    loaded = check_checkpoints_are_weights(folder)
    embedding_model = _new("embedding_model")
    _load_strict(embedding_model, loaded["embedding_model.ckpt"], folder / "embedding_model.ckpt")
    _load_strict(_new("classifier"), loaded["classifier.ckpt"], folder / "classifier.ckpt")
    _check_embedding_norm(loaded["mean_var_norm_emb.ckpt"], folder / "mean_var_norm_emb.ckpt")

    return _EcapaEncoder(_new("compute_features"), _new("mean_var_norm"), embedding_model)


class _EcapaEncoder:
    """What SpeechBrain's `encode_batch(normalize=False)` computes, with our modules: fbanks,
    per-sentence mean normalisation, ECAPA-TDNN with relative lengths (module-level, so an
    extractor stays picklable)."""

    def __init__(self, features: Any, norm: Any, embedding_model: Any) -> None:
        self.modules = [features.eval(), norm.eval(), embedding_model.eval()]
        for module in self.modules:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def to(self, device: str) -> _EcapaEncoder:
        self.modules = [module.to(device) for module in self.modules]
        return self

    def __call__(self, wavs: Any, wav_lens: Any) -> Any:
        features, norm, embedding_model = self.modules
        feats = norm(features(wavs.float()), wav_lens)
        return embedding_model(feats, wav_lens)


def install_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add ecapa-voxceleb FOLDER`: copy the release's files (only those), check
    the copy in full, then install it in one rename, so a refused folder leaves nothing."""
    source = Path(source)
    check_release_folder(source)  # before copying anything: the files are all there
    install_folder(source, Path(target), REQUIRED_FILES, _build_encoder)
    return {"source_format": "speechbrain release folder (yaml checked, not run)"}


class EcapaExtractor:
    """ECAPA-TDNN x-vectors: one unit 192-d row per speech segment of at least `min_duration_s`.

    A batch pads its segments to the longest one and passes relative lengths (`wav_lens`), which
    SpeechBrain's sentence normalisation and attentive statistics pooling use to ignore the
    padding. Segments are sorted by length and cut into batches of at most `max_batch_s` padded
    seconds, so one long turn does not make every short turn pay for its padding.
    Embeddings are the release's raw x-vectors (what SpeechBrain's `encode_batch(normalize=False)`
    gives, as its own `SpeakerRecognition.verify_batch` scores them), L2-normalised for cosine.
    """

    name = "ecapa-voxceleb"
    dim = 192

    def __init__(
        self, model: ResolvedModel, min_duration_s: float = 1.0, max_batch_s: float = 240.0
    ) -> None:
        self.model = model
        self.min_duration_s = min_duration_s
        self.max_batch_s = max_batch_s
        self._encoder: Any = None
        self._device = "cpu"

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def folder(self) -> Path:
        return Path(self.model.paths["folder"])

    def prepare(self, device: str = "cpu") -> None:
        """Load the release once from its local folder; later calls with the same device do
        nothing. Nothing is fetched: a missing file raises ModelMissingError."""
        if self._encoder is not None and device == self._device:
            return
        self._encoder = _build_encoder(self.folder.resolve()).to(device)
        self._device = device

    def embed(self, items: Sequence[AudioSegment]) -> Embeddings:
        if not items:
            return Embeddings.empty(self.dim, self.model_id)
        if self._encoder is None:
            self.prepare(self._device)
        kept: list[tuple[AudioSegment, np.ndarray]] = []
        for item in items:
            samples = _check_samples(item)
            if len(samples) / SAMPLE_RATE < self.min_duration_s:
                continue
            if float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENT_RMS:
                continue
            kept.append((item, samples))
        if not kept:
            return Embeddings.empty(self.dim, self.model_id)
        vectors = np.zeros((len(kept), self.dim), np.float32)
        for batch in self._batches([len(s) for _, s in kept]):
            vectors[batch] = self.encode([kept[i][1] for i in batch])
        durations = np.array([it.duration_s for it, _ in kept], np.float32)
        quality = np.array(
            [segment_quality(float(d), it.snr_db) for d, (it, _) in zip(durations, kept)],
            np.float32,
        )
        return Embeddings(
            vectors=l2_normalise(vectors),
            quality=quality,
            keys=[it.key for it, _ in kept],
            model_id=self.model_id,
            extra={"duration_s": durations},
        )

    def encode(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (not normalised) x-vectors of one padded batch, in the given order."""
        import torch

        longest = max(len(w) for w in waves)
        padded = np.zeros((len(waves), longest), np.float32)
        for row, wave in enumerate(waves):
            padded[row, : len(wave)] = wave
        lens = torch.tensor([len(w) / longest for w in waves], dtype=torch.float32)
        with torch.inference_mode():
            out = self._encoder(torch.from_numpy(padded).to(self._device), lens.to(self._device))
        return out.reshape(len(waves), -1).float().cpu().numpy()

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped longest first, each group's padded size within `max_batch_s`."""
        budget = self.max_batch_s * SAMPLE_RATE
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups: list[list[int]] = []
        for i in order:
            # Longest first, so a group's padded size is its first length times its size.
            if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= budget:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups


def _check_samples(item: AudioSegment) -> np.ndarray:
    samples = np.asarray(item.samples)
    if samples.ndim != 1:
        raise ValueError(f"segment {item.key!r}: expected mono samples, got shape {samples.shape}")
    return samples.astype(np.float32, copy=False)
