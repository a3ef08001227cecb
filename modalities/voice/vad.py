"""Speech activity detection: where in a recording someone speaks, as turns long enough to embed.

The speaker encoder needs a second or more of continuous speech; a turn that is too short gives
no embedding rather than a bad one, so this stage drops it. Three detectors:

- `silero` (the default): Silero VAD v6 (a small neural detector, MIT), whose TorchScript model
  ships inside the `silero-vad` PyPI package, so it runs offline; 32 ms frames at 16 kHz, fixed.
  On AMI meetings it diarizes better than webrtc (DER 43.7 % vs 54.1 %) with almost no
  false-alarm speech, and LibriSpeech verification is at least as good (benchmarks/voice_*.py);
- `webrtc`: the WebRTC GMM detector (`webrtcvad`) on 16-bit PCM frames;
- `energy`: a pure-numpy log-energy threshold relative to the recording's own noise floor, for
  installations without `webrtcvad` and as a cross-check on clean audio.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

WEBRTC_RATES = (8000, 16000, 32000, 48000)
WEBRTC_FRAME_MS = (10, 20, 30)
SMOOTH_S = 0.15  # majority filter width: removes isolated frame flips of either kind
HANGOVER_S = 0.03  # speech is kept this long after the detector stops firing (soft offsets)
# Frames WebRTC itself keeps reporting speech after a long voiced run ("overhang", a telephony
# feature; webrtc vad_core.c), by aggressiveness 0-1 / 2-3 and frame length. We take it off so
# both detectors share one boundary rule: our own short hangover, then `merge_gap_s`.
WEBRTC_OVERHANG_FRAMES = {
    (False, 10): 14,
    (False, 20): 7,
    (False, 30): 5,
    (True, 10): 9,
    (True, 20): 5,
    (True, 30): 3,
}
SILENCE_DBFS = -90.0  # frames quieter than this are digital silence, not a noise floor
NOISE_PERCENTILE = 5.0  # energy percentile taken as the noise floor (5% of pauses suffice)
SPEECH_PERCENTILE = 95.0  # energy percentile taken as the speech level
MIN_CONTRAST_DB = 6.0  # below this speech/noise contrast the energy detector finds nothing
MAX_MARGIN_DB = 12.0  # threshold above the floor on clean audio: quiet phonemes stay speech
MARGIN_FRACTION = 0.3  # on noisier audio the margin shrinks with the speech/noise contrast
SNR_RANGE_DB = (-20.0, 60.0)
VAD_METHODS = ("webrtc", "energy", "silero")
SILERO_RATE = 16000
SILERO_FRAME = 512  # samples per Silero decision at 16 kHz (its only frame size there)
SILERO_THRESHOLD = 0.5  # speech probability above which a frame is speech (Silero's default)
_SILERO_LOCK = threading.Lock()  # the model keeps recurrent state: one recording at a time


@dataclass(frozen=True)
class SpeechTurn:
    """A span of continuous speech, in seconds from the start of the recording."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def detect_speech(
    samples: np.ndarray,
    sample_rate: int = 16000,
    method: str = "silero",
    aggressiveness: int = 2,
    frame_ms: int = 30,
    min_turn_s: float = 1.0,
    merge_gap_s: float = 0.3,
    max_turn_s: float = 10.0,
) -> list[SpeechTurn]:
    """Speech turns of a mono recording, merged, split and filtered for embedding.

    Turns closer than `merge_gap_s` are joined (a breath is not a change of turn); turns longer
    than `max_turn_s` are split into near-equal pieces (so one long monologue yields several
    pieces of evidence and a missed speaker change cannot pollute a whole minute); turns shorter
    than `min_turn_s` are dropped.
    """
    samples = _as_mono_float(samples)
    if sample_rate <= 0 or frame_ms <= 0:
        raise ValueError(
            f"sample rate and frame length must be positive: {sample_rate}, {frame_ms}"
        )
    frame_s = max(1, int(sample_rate * frame_ms / 1000)) / sample_rate
    if method == "webrtc":
        flags = _webrtc_flags(samples, sample_rate, aggressiveness, frame_ms)
    elif method == "energy":
        flags = _energy_flags(samples, sample_rate, frame_ms)
    elif method == "silero":
        flags = _silero_flags(samples, sample_rate)
        frame_s = SILERO_FRAME / SILERO_RATE
    else:
        raise ValueError(f"unknown VAD method {method!r}; use one of {VAD_METHODS}")
    return turns_from_flags(
        flags, frame_s, len(samples) / sample_rate, min_turn_s, merge_gap_s, max_turn_s
    )


def turns_from_flags(
    flags: np.ndarray,
    frame_s: float,
    total_s: float,
    min_turn_s: float = 1.0,
    merge_gap_s: float = 0.3,
    max_turn_s: float = 10.0,
) -> list[SpeechTurn]:
    """`detect_speech`'s turns from a detector's per-frame flags (see `StreamingVAD`)."""
    flags = _smooth(flags, frame_s)
    turns = _runs_to_turns(flags, frame_s, total_s)
    turns = merge_turns(turns, merge_gap_s)
    turns = [piece for turn in turns for piece in split_turn(turn, max_turn_s)]
    return [t for t in turns if t.duration >= min_turn_s]


def merge_turns(turns: list[SpeechTurn], max_gap_s: float) -> list[SpeechTurn]:
    """Join turns separated by less than `max_gap_s` (input sorted by start)."""
    merged: list[SpeechTurn] = []
    for turn in turns:
        if merged and turn.start - merged[-1].end < max_gap_s:
            merged[-1] = SpeechTurn(merged[-1].start, max(merged[-1].end, turn.end))
        else:
            merged.append(turn)
    return merged


def split_turn(turn: SpeechTurn, max_turn_s: float) -> list[SpeechTurn]:
    """Near-equal pieces no longer than `max_turn_s` (equal pieces, so none is a short leftover)."""
    if max_turn_s <= 0 or turn.duration <= max_turn_s:
        return [turn]
    n = int(np.ceil(turn.duration / max_turn_s))
    edges = np.linspace(turn.start, turn.end, n + 1)
    return [SpeechTurn(float(a), float(b)) for a, b in itertools.pairwise(edges)]


def noise_power(
    samples: np.ndarray,
    turns: list[SpeechTurn],
    sample_rate: int = 16000,
    frame_ms: int = 30,
    min_noise_s: float = 0.3,
) -> float | None:
    """Noise power (mean square) of the recording outside its speech turns.

    The median over non-speech frames, so that short speech left out of the turns (too short to
    keep, or a missed onset) barely moves it. None when under `min_noise_s` of non-speech exists:
    a recording that is all speech has no measurable noise floor.
    """
    samples = _as_mono_float(samples)
    frame = max(1, int(sample_rate * frame_ms / 1000))
    return noise_floor(_frame_powers(samples, frame), turns, frame / sample_rate, min_noise_s)


def noise_floor(
    powers: np.ndarray, turns: list[SpeechTurn], frame_s: float, min_noise_s: float = 0.3
) -> float | None:
    """`noise_power` from the recording's frame powers (mean squares of `frame_s` frames)."""
    if powers.size == 0:
        return None
    centres = (np.arange(powers.size) + 0.5) * frame_s
    outside = np.ones(powers.size, bool)
    for turn in turns:
        outside &= ~((centres >= turn.start) & (centres < turn.end))
    if outside.sum() * frame_s < min_noise_s:
        return None
    return float(np.median(powers[outside]))


def snr_db(
    samples: np.ndarray,
    turn: SpeechTurn,
    noise_floor: float | None,
    sample_rate: int = 16000,
) -> float | None:
    """Estimated SNR of one turn against the recording's own noise floor (from `noise_power`).

    The turn's power includes the noise, so the noise is subtracted before the ratio. Clipped to
    -20..60 dB (digital silence as "noise" would give infinity). None when the floor is unknown:
    the quality model then treats SNR as unknown rather than guessing.
    """
    if noise_floor is None:
        return None
    samples = _as_mono_float(samples)
    a = max(0, round(turn.start * sample_rate))
    b = min(len(samples), round(turn.end * sample_rate))
    if b <= a:
        return None
    turn_power = float(np.mean(np.square(samples[a:b], dtype=np.float64)))
    low, high = SNR_RANGE_DB
    if noise_floor <= 0:
        return high
    speech_power = max(turn_power - noise_floor, 1e-20)
    return float(np.clip(10.0 * np.log10(speech_power / noise_floor), low, high))


# -- detectors --------------------------------------------------------------------------------


def _as_mono_float(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32, copy=False)


def _webrtc_flags(
    samples: np.ndarray, sample_rate: int, aggressiveness: int, frame_ms: int
) -> np.ndarray:
    flags = _webrtc_raw_flags(samples, sample_rate, aggressiveness, frame_ms)
    return _trim_run_ends(flags, WEBRTC_OVERHANG_FRAMES[(aggressiveness >= 2, frame_ms)])


def _webrtc_vad(sample_rate: int, aggressiveness: int, frame_ms: int) -> Any:
    if sample_rate not in WEBRTC_RATES:
        raise ValueError(
            f"webrtc VAD needs a sample rate of {WEBRTC_RATES} Hz, got {sample_rate}; "
            "resample to 16 kHz or use method='energy'"
        )
    if frame_ms not in WEBRTC_FRAME_MS:
        raise ValueError(f"webrtc VAD needs frames of {WEBRTC_FRAME_MS} ms, got {frame_ms}")
    if not 0 <= aggressiveness <= 3:
        raise ValueError(f"webrtc aggressiveness is 0..3, got {aggressiveness}")
    try:
        import webrtcvad  # optional: the energy detector works without it
    except ImportError as exc:
        raise ImportError(
            "webrtc VAD needs the `webrtcvad` package; install it or use method='energy'"
        ) from exc

    return webrtcvad.Vad(aggressiveness)


def _webrtc_raw_flags(
    samples: np.ndarray, sample_rate: int, aggressiveness: int, frame_ms: int, vad: Any = None
) -> np.ndarray:
    """WebRTC's decision per frame; `vad` carries its state on from earlier samples."""
    if vad is None:
        vad = _webrtc_vad(sample_rate, aggressiveness, frame_ms)
    frame = sample_rate * frame_ms // 1000
    n = len(samples) // frame
    pcm = (np.clip(samples[: n * frame], -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    step = frame * 2
    flags = np.fromiter(
        (vad.is_speech(pcm[i * step : (i + 1) * step], sample_rate) for i in range(n)),
        dtype=bool,
        count=n,
    )
    return flags


@cache
def _silero_model() -> Any:
    """The packaged TorchScript model, loaded once per process.

    Importing `silero_vad` calls `torch.set_num_threads(1)` for the whole process; the thread
    count is put back so the speaker encoders in the same process keep theirs.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:
        raise ImportError(
            "silero VAD needs the `silero-vad` package (it ships the model file); install it "
            "or use method='webrtc'"
        ) from exc
    finally:
        torch.set_num_threads(threads)
    return load_silero_vad(onnx=False)


def _silero_flags(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate != SILERO_RATE:
        raise ValueError(
            f"silero VAD is used at {SILERO_RATE} Hz here, got {sample_rate}; resample first"
        )
    import torch

    n = len(samples) // SILERO_FRAME
    if n == 0:
        return np.zeros(0, bool)
    model = _silero_model()
    with _SILERO_LOCK, torch.inference_mode():
        # audio_forward resets the model's recurrent state, then scores every 512-sample frame.
        probs = model.audio_forward(torch.from_numpy(samples[: n * SILERO_FRAME]), sample_rate)
    return probs.reshape(-1)[:n].numpy() > SILERO_THRESHOLD


def _trim_run_ends(flags: np.ndarray, frames: int) -> np.ndarray:
    """Shorten every run of True by up to `frames` at its end (never below half its length)."""
    out = flags.copy()
    for start, end in _runs(flags):
        cut = min(frames, (end - start) // 2)
        out[end - cut : end] = False
    return out


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame index pairs of the runs of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _frame_powers(samples: np.ndarray, frame: int) -> np.ndarray:
    n = len(samples) // frame
    frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
    return np.mean(frames * frames, axis=1)


def _energy_flags(samples: np.ndarray, sample_rate: int, frame_ms: int) -> np.ndarray:
    """Frames louder than the noise floor by a margin that shrinks with the contrast.

    Floor and speech level are percentiles of the recording's own frame energies, so the
    threshold follows the recording's gain and background; digital silence is left out of the
    floor. The margin is 30% of the floor-to-level contrast (in dB), kept within 6..12 dB: a
    fixed fraction would cut quiet phonemes of clean read speech (40 dB of contrast), a fixed
    margin would miss speech that is only 10 dB above the noise.
    """
    frame = max(1, int(sample_rate * frame_ms / 1000))
    return _energy_flags_from_powers(_frame_powers(samples, frame))


def _energy_flags_from_powers(powers: np.ndarray) -> np.ndarray:
    energy_db = 10.0 * np.log10(powers + 1e-12)
    audible = energy_db[energy_db > SILENCE_DBFS]
    if audible.size == 0:
        return np.zeros(energy_db.size, bool)
    floor = np.percentile(audible, NOISE_PERCENTILE)
    level = np.percentile(audible, SPEECH_PERCENTILE)
    if level - floor < MIN_CONTRAST_DB:
        return np.zeros(energy_db.size, bool)
    margin = np.clip(MARGIN_FRACTION * (level - floor), MIN_CONTRAST_DB, MAX_MARGIN_DB)
    threshold = floor + margin
    return energy_db > threshold


# -- smoothing and turns ----------------------------------------------------------------------


def _smooth(flags: np.ndarray, frame_s: float) -> np.ndarray:
    """Majority filter, then hangover: a frame stays speech shortly after the last voiced one."""
    if flags.size == 0:
        return flags
    width = max(1, round(SMOOTH_S / frame_s) | 1)  # odd
    if width > 1:
        padded = np.pad(flags.astype(np.int32), width // 2, mode="edge")
        counts = np.convolve(padded, np.ones(width, np.int32), mode="valid")
        flags = counts > width // 2
    hang = round(HANGOVER_S / frame_s)
    if hang > 0:
        held = flags.copy()
        for k in range(1, hang + 1):
            held[k:] |= flags[:-k]
        flags = held
    return flags


def _runs_to_turns(flags: np.ndarray, frame_s: float, total_s: float) -> list[SpeechTurn]:
    return [
        SpeechTurn(float(s * frame_s), float(min(e * frame_s, total_s))) for s, e in _runs(flags)
    ]


# -- streaming ----------------------------------------------------------------------------------


class StreamingVAD:
    """`detect_speech` over a recording fed a block at a time: the same flags, frame by frame.

    Every detector here decides per frame (webrtc, silero: in order, silero carrying its
    recurrent state from frame to frame as its `audio_forward` does) or from per-frame
    powers (energy: percentiles over all frames, taken at the end), so only the flags, the
    frame powers and a part-frame of samples are kept: a few MB for hours of audio. The
    30 ms frame powers are kept for every method: `noise_floor` needs them for the SNR.
    """

    def __init__(
        self,
        method: str = "silero",
        sample_rate: int = 16000,
        aggressiveness: int = 2,
        frame_ms: int = 30,
    ) -> None:
        if method not in VAD_METHODS:
            raise ValueError(f"unknown VAD method {method!r}; use one of {VAD_METHODS}")
        self.method, self.sample_rate = method, sample_rate
        self.aggressiveness, self.frame_ms = aggressiveness, frame_ms
        self.frame = max(1, int(sample_rate * frame_ms / 1000))
        self.step = SILERO_FRAME if method == "silero" else self.frame
        if method == "webrtc":
            self._vad = _webrtc_vad(sample_rate, aggressiveness, frame_ms)
        if method == "silero":
            if sample_rate != SILERO_RATE:
                raise ValueError(f"silero VAD is used at {SILERO_RATE} Hz here, got {sample_rate}")
            self._model = _silero_model()
            self._silero_started = False
        self.samples_seen = 0
        self._flags: list[np.ndarray] = []
        self._powers: list[np.ndarray] = []
        self._rest = np.zeros(0, np.float32)  # samples not yet a whole detector frame
        self._power_rest = np.zeros(0, np.float32)  # ... not yet a whole 30 ms power frame

    @property
    def frame_s(self) -> float:
        return (
            (SILERO_FRAME / SILERO_RATE)
            if self.method == "silero"
            else self.frame / self.sample_rate
        )

    def feed(self, block: np.ndarray) -> None:
        block = _as_mono_float(block)
        self.samples_seen += len(block)
        rest = np.concatenate([self._power_rest, block])
        n = len(rest) // self.frame
        self._powers.append(_frame_powers(rest, self.frame))
        self._power_rest = rest[n * self.frame :]
        if self.method == "energy":
            return
        rest = np.concatenate([self._rest, block])
        n = len(rest) // self.step
        whole, self._rest = rest[: n * self.step], rest[n * self.step :]
        if n == 0:
            return
        if self.method == "webrtc":
            self._flags.append(
                _webrtc_raw_flags(
                    whole, self.sample_rate, self.aggressiveness, self.frame_ms, self._vad
                )
            )
        else:
            self._flags.append(self._silero(whole))

    def _silero(self, whole: np.ndarray) -> np.ndarray:
        import torch

        frames = torch.from_numpy(np.ascontiguousarray(whole)).reshape(-1, 1, SILERO_FRAME)
        out = np.empty(len(frames), np.float32)
        with _SILERO_LOCK, torch.inference_mode():
            if not self._silero_started:  # as audio_forward: fresh state at the recording's start
                self._model.reset_states()
                self._silero_started = True
            for i, frame in enumerate(frames):
                out[i] = float(self._model(frame, SILERO_RATE).reshape(-1)[0])
        return out > SILERO_THRESHOLD

    def powers(self) -> np.ndarray:
        """Mean square of every whole `frame_ms` frame so far (float64)."""
        return np.concatenate(self._powers) if self._powers else np.zeros(0)

    def flags(self) -> np.ndarray:
        if self.method == "energy":
            return _energy_flags_from_powers(self.powers())
        flags = np.concatenate(self._flags) if self._flags else np.zeros(0, bool)
        if self.method == "webrtc":
            overhang = WEBRTC_OVERHANG_FRAMES[(self.aggressiveness >= 2, self.frame_ms)]
            return _trim_run_ends(flags, overhang)
        return flags

    def turns(
        self, min_turn_s: float = 1.0, merge_gap_s: float = 0.3, max_turn_s: float = 10.0
    ) -> list[SpeechTurn]:
        return turns_from_flags(
            self.flags(),
            self.frame_s,
            self.samples_seen / self.sample_rate,
            min_turn_s,
            merge_gap_s,
            max_turn_s,
        )
