"""Voice extractor: SpeechBrain's ECAPA-TDNN trained on VoxCeleb (192-d, cosine metric).

The weights are the official `speechbrain/spkrec-ecapa-voxceleb` release folder, added once with
`biofuse models add ecapa-voxceleb FOLDER`. We load it with SpeechBrain's own classes so the
features (80 fbanks, per-sentence mean normalisation) and the network are exactly the release's,
but only from that local folder: the hub is switched off and SpeechBrain's fetcher may not use
the network, so a missing file is our clear error rather than a silent download.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biofuse.errors import ModelMissingError
from biofuse.registry import ResolvedModel
from modalities.base import Embeddings, l2_normalise
from modalities.voice.resemblyzer_voice import (
    SAMPLE_RATE,
    SILENT_RMS,
    AudioSegment,
    segment_quality,
)

HPARAMS_FILE = "hyperparams.yaml"
CHECKPOINTS = ("embedding_model.ckpt", "mean_var_norm_emb.ckpt", "classifier.ckpt")
REQUIRED_FILES = (HPARAMS_FILE, *CHECKPOINTS, "label_encoder.txt")
# hyperparams.yaml is executable configuration (`!new:` builds any importable class), so only
# SpeechBrain's own classes and plain references may appear in it.
_YAML_TAG = re.compile(r"!!?[^\s\[\]{},]+")
_ALLOWED_PLAIN_TAGS = {"!ref", "!copy", "!tuple"}
_ALLOWED_CALL_TAGS = ("!new:speechbrain.", "!name:speechbrain.")


def check_release_folder(folder: Path) -> None:
    """Refuse a folder that is not a complete release before SpeechBrain sees it.

    SpeechBrain would otherwise try to resolve a missing file elsewhere (the hub), or fail deep
    inside its fetcher with a message that does not say how to fix it.
    """
    add = "run `biofuse models add ecapa-voxceleb FOLDER` with the official release folder"
    if not folder.is_dir():
        raise ModelMissingError(f"ecapa-voxceleb: model folder {folder} does not exist; {add}")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ModelMissingError(
                f"ecapa-voxceleb: {name} is missing from {folder} (a release folder holds "
                f"{', '.join(REQUIRED_FILES)}); {add}"
            )
    text = (folder / HPARAMS_FILE).read_text(encoding="utf-8")
    for tag in _YAML_TAG.findall(text):
        if tag in _ALLOWED_PLAIN_TAGS or tag.startswith(_ALLOWED_CALL_TAGS):
            continue
        raise ModelMissingError(
            f"ecapa-voxceleb: {folder / HPARAMS_FILE} uses {tag!r}; only SpeechBrain classes "
            f"and !ref are accepted in a release's hyperparams; {add}"
        )


def check_checkpoints_are_weights(folder: Path) -> None:
    """Open every .ckpt with `weights_only=True` before SpeechBrain loads it.

    SpeechBrain 1.1.2 calls `torch.load(path)` without `weights_only`; torch >= 2.6 defaults that
    to True, but the TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD variable turns it off. A file that passes
    here holds only tensors and plain containers, so unpickling it again cannot run code.
    """
    import pickle

    import torch

    for name in CHECKPOINTS:
        path = folder / name
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise ModelMissingError(
                f"ecapa-voxceleb: {path} is not a plain weights file ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); re-add the official release "
                "with `biofuse models add ecapa-voxceleb FOLDER`"
            ) from exc


class EcapaExtractor:
    """ECAPA-TDNN x-vectors: one unit 192-d row per speech segment of at least `min_duration_s`.

    A batch pads its segments to the longest one and passes relative lengths (`wav_lens`), which
    SpeechBrain's sentence normalisation and attentive statistics pooling use to ignore the
    padding. Segments are sorted by length and cut into batches of at most `max_batch_s` padded
    seconds, so one long turn does not make every short turn pay for its padding.
    Embeddings are the release's raw x-vectors (`encode_batch(normalize=False)`, as SpeechBrain's
    own `SpeakerRecognition.verify_batch` scores them), L2-normalised for the cosine metric.
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
        folder = self.folder.resolve()
        check_release_folder(folder)
        check_checkpoints_are_weights(folder)
        # Set before SpeechBrain imports huggingface_hub, which reads it once at import.
        os.environ["HF_HUB_OFFLINE"] = "1"
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig, FetchFrom, FetchSource, LocalStrategy

        # SpeechBrain returns any file already in `savedir` instead of the source's, so a fresh,
        # empty savedir per load means only this folder's files can be loaded; NO_LINK reads them
        # in place, leaving nothing behind.
        savedir = Path(tempfile.mkdtemp(prefix="biofuse-ecapa-"))
        try:
            encoder = EncoderClassifier.from_hparams(
                source=FetchSource(FetchFrom.LOCAL, str(folder)),
                hparams_file=HPARAMS_FILE,
                savedir=savedir,
                overrides={"pretrained_path": str(folder)},
                local_strategy=LocalStrategy.NO_LINK,
                fetch_config=FetchConfig(allow_network=False, allow_updates=False),
                run_opts={"device": device},
            )
        finally:
            shutil.rmtree(savedir, ignore_errors=True)
        if encoder is None:  # only with download_only=True, which we never pass
            raise ModelMissingError(f"ecapa-voxceleb: SpeechBrain loaded nothing from {folder}")
        self._encoder = encoder.eval()
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
            out = self._encoder.encode_batch(torch.from_numpy(padded), lens, normalize=False)
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
