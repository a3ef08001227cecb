"""Offline default voice extractor: Resemblyzer's GE2E speaker encoder (256-d, cosine metric).

Its weights ship inside the `resemblyzer` PyPI package, so it runs with nothing downloaded.
We feed it speech turns that our own VAD already cut, so Resemblyzer's `preprocess_wav` (which
resamples and trims silences with webrtcvad mode 3) is not applied; only its volume
normalisation is kept, because the encoder's input is a linear (not log) mel spectrogram and it
was trained on audio raised to -30 dBFS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from biofuse.modalities.base import Embeddings, l2_normalise
from biofuse.modalities.voice.stream import SpilledAudio
from biofuse.modalities.voice.vad import SpeechTurn, noise_power, snr_db

from biofuse.registry import ResolvedModel

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16000
TARGET_DBFS = -30.0  # resemblyzer hparams.audio_norm_target_dBFS, raise-only as in training
SILENT_RMS = 1e-5  # below this a segment carries no voice at all: no row, not a row of noise
PARTIAL_RATE = 1.3  # partial windows (1.6 s) per second, resemblyzer's default
PARTIAL_MIN_COVERAGE = 0.75
FULL_QUALITY_S = 4.0  # duration beyond which more speech no longer raises quality
SNR_MIDPOINT_DB = 10.0
SNR_SCALE_DB = 3.0


@dataclass
class AudioSegment:
    """One stretch of one person's speech: 16 kHz float32 mono samples."""

    key: str
    samples: np.ndarray
    snr_db: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def turn_segments(
    samples: Any,
    turns: Sequence[SpeechTurn],
    key: str,
    sample_rate: int = SAMPLE_RATE,
    floor: float | None | str = "measure",
) -> list[AudioSegment]:
    """Cut a recording's speech turns into segments keyed `key@start-end`, with their SNR.

    The SNR is measured against the same recording's non-speech parts, so quality reflects this
    recording's channel rather than an absolute level. `samples` is an array or a
    `stream.SpilledAudio`; `floor`, when given, is the recording's noise floor (`noise_power`
    of all its turns: cutting the turns a batch at a time must not change it).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"voice segments are {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    if not isinstance(samples, SpilledAudio):
        samples = np.asarray(samples, dtype=np.float32)
    if floor == "measure":
        if isinstance(samples, SpilledAudio):
            raise ValueError("give the noise floor of spilled audio (vad.StreamingVAD.powers)")
        floor = noise_power(samples, list(turns), sample_rate)
    out = []
    for turn in turns:
        a, b = round(turn.start * sample_rate), round(turn.end * sample_rate)
        span = samples[a:b]
        out.append(
            AudioSegment(
                key=f"{key}@{turn.start:.2f}-{turn.end:.2f}",
                samples=span,
                # the same mean square as over samples[a:b] of the whole recording
                snr_db=snr_db(span, SpeechTurn(0.0, len(span) / sample_rate), floor, sample_rate),
            )
        )
    return out


def segment_quality(duration_s: float, snr: float | None) -> float:
    """0..1: saturating in duration (4 s is enough), logistic in SNR around 10 dB (1 if unknown)."""
    duration_q = min(1.0, max(0.0, duration_s) / FULL_QUALITY_S)
    if snr is None or not math.isfinite(snr):
        return duration_q
    snr_q = 1.0 / (1.0 + math.exp(-(snr - SNR_MIDPOINT_DB) / SNR_SCALE_DB))
    return duration_q * snr_q


def normalise_volume(samples: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to `target_dbfs` RMS; loud audio is left as is (as in training)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0.0:
        return samples
    gain_db = target_dbfs - 20.0 * math.log10(rms)
    if gain_db <= 0.0:
        return samples
    return (samples * 10.0 ** (gain_db / 20.0)).astype(np.float32)


class ResemblyzerExtractor:
    """GE2E d-vectors: one unit 256-d row per speech segment of at least `min_duration_s`.

    Each segment is cut into 1.6 s partial windows (1.3 per second); the segment's embedding is
    the renormalised mean of its partials' embeddings, as Resemblyzer's `embed_utterance` does.
    All partials of one `embed` call go through the encoder together, in batches of
    `max_partials`.
    """

    name = "resemblyzer-ge2e"
    dim = 256

    def __init__(
        self, model: ResolvedModel, min_duration_s: float = 1.0, max_partials: int = 256
    ) -> None:
        self.model = model
        self.min_duration_s = min_duration_s
        self.max_partials = max_partials
        self._encoder: Any = None
        self._device = "cpu"

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Load the encoder once; later calls with the same device do nothing."""
        if self._encoder is not None and device == self._device:
            return
        import torch
        from resemblyzer import VoiceEncoder

        weights = self.model.paths["encoder"]
        # VoiceEncoder calls torch.load without weights_only; loading once here with
        # weights_only=True refuses a checkpoint that would run code when unpickled.
        torch.load(weights, map_location="cpu", weights_only=True)
        encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=weights)
        self._encoder = encoder.eval()
        self._device = device
        # First mel spectrogram and first LSTM call pay one-off set-up costs (librosa's lazy
        # imports, kernel selection); pay them here, not inside the first timed batch.
        warm_up = np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2).astype(np.float32)
        self._encode(np.stack(self._partial_mels(0.01 * warm_up)))

    def embed(self, items: Sequence[AudioSegment]) -> Embeddings:
        if not items:
            return Embeddings.empty(self.dim, self.model_id)
        if self._encoder is None:
            self.prepare(self._device)
        kept: list[AudioSegment] = []
        mels: list[np.ndarray] = []
        owner: list[int] = []
        for item in items:
            samples = _check_samples(item)
            if len(samples) / SAMPLE_RATE < self.min_duration_s:
                continue
            if float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENT_RMS:
                continue
            partials = self._partial_mels(normalise_volume(samples))
            mels.extend(partials)
            owner.extend([len(kept)] * len(partials))
            kept.append(item)
        if not kept:
            return Embeddings.empty(self.dim, self.model_id)
        partial_vectors = self._encode(np.stack(mels))
        sums = np.zeros((len(kept), self.dim), np.float64)
        np.add.at(sums, np.asarray(owner), partial_vectors)
        vectors = l2_normalise(sums)
        durations = np.array([it.duration_s for it in kept], np.float32)
        quality = np.array(
            [segment_quality(float(d), it.snr_db) for d, it in zip(durations, kept)], np.float32
        )
        return Embeddings(
            vectors=vectors,
            quality=quality,
            keys=[it.key for it in kept],
            model_id=self.model_id,
            extra={"duration_s": durations},
        )

    def _partial_mels(self, samples: np.ndarray) -> list[np.ndarray]:
        """Mel frames of each 1.6 s window; the last is zero-padded if mostly covered."""
        from resemblyzer import VoiceEncoder, audio

        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(samples), PARTIAL_RATE, PARTIAL_MIN_COVERAGE
        )
        needed = wav_slices[-1].stop
        if needed >= len(samples):
            samples = np.pad(samples, (0, needed - len(samples)))
        mel = audio.wav_to_mel_spectrogram(samples)
        return [mel[s] for s in mel_slices]

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(mels), self.max_partials):
                batch: torch.Tensor = torch.from_numpy(mels[start : start + self.max_partials])
                out.append(self._encoder(batch.to(self._encoder.device)).float().cpu().numpy())
        return np.concatenate(out)


def voice_template(embeddings: Embeddings) -> np.ndarray:
    """One speaker template: the quality-weighted mean of the rows, renormalised.

    Weighting by quality lets long, clean enrollment turns dominate short, noisy ones; if every
    quality is zero, rows count equally rather than giving no template.
    """
    if len(embeddings) == 0:
        raise ValueError("no voice embeddings to build a template from")
    weights = np.clip(embeddings.quality.astype(np.float64), 0.0, None)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    mean = (weights[:, None] * embeddings.vectors.astype(np.float64)).sum(0) / weights.sum()
    return l2_normalise(mean[None, :])[0]


def _check_samples(item: AudioSegment) -> np.ndarray:
    samples = np.asarray(item.samples)
    if samples.ndim != 1:
        raise ValueError(f"segment {item.key!r}: expected mono samples, got shape {samples.shape}")
    return samples.astype(np.float32, copy=False)
