"""Who spoke when inside one recording: speaker segments and per-speaker templates.

Speech found by the VAD is covered by short sliding windows (1.5 s every 0.75 s, never across a
pause), each window is embedded with the configured speaker encoder, and the windows are
clustered on cosine distance: agglomerative (average linkage, a distance threshold tuned on AMI
meetings) by default, or spectral with the speaker count taken from the eigengap. Every speech
frame then takes the speaker of the nearest embedded window, so boundaries fall within half a
hop of the truth. A speaker carried by a single window is folded into the nearest larger
speaker: one 1.5 s window is too weak evidence for a new person, and is usually overlapped or
noisy speech (tuned with the threshold on the AMI train excerpts).

The encoder is passed in as a callable over `AudioSegment`s, so this module runs the same with
the model in this process (tests, benchmarks) or in a Ray actor (flows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from biofuse.modalities.base import Embeddings, l2_normalise
from biofuse.modalities.voice.resemblyzer_voice import SAMPLE_RATE, AudioSegment, voice_template
from biofuse.modalities.voice.stream import SpilledAudio, embed_in_batches
from biofuse.modalities.voice.vad import SpeechTurn, split_turn

EmbedCall = Callable[[list[AudioSegment]], Embeddings]

FRAME_S = 0.01  # resolution of the speech mask and of the output segments
# Speech regions handed to diarization keep short bursts too (they get the nearest window's
# speaker); only the turns embedded afterwards must reach the encoder's minimum duration.
MIN_REGION_S = 0.25
# Cosine-distance threshold of average-linkage clustering for Resemblyzer GE2E windows, chosen
# on the AMI train excerpts (benchmarks/voice_ami.py). Another encoder needs its own value.
DEFAULT_THRESHOLD = 0.35


@dataclass(frozen=True)
class DiarizationParams:
    """The diarization's hyper-parameters, kept together so a run can record them."""

    window_s: float = 1.5
    hop_s: float = 0.75
    method: Literal["agglomerative", "spectral"] = "agglomerative"
    threshold: float = DEFAULT_THRESHOLD  # agglomerative: cosine distance at which to stop
    max_speakers: int = 8  # spectral: largest speaker count the eigengap may choose
    # speakers with fewer windows are folded into the nearest larger one (not a new person)
    min_speaker_windows: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.hop_s <= self.window_s:
            raise ValueError(f"need 0 < hop_s <= window_s, got {self.hop_s}, {self.window_s}")
        if self.method not in ("agglomerative", "spectral"):
            raise ValueError(f"unknown clustering {self.method!r}; agglomerative or spectral")


@dataclass(frozen=True)
class SpeakerSegment:
    """A stretch of one speaker's speech, in seconds from the start of the recording."""

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Diarization:
    """Speaker segments of one recording, and the windows they were decided from."""

    segments: list[SpeakerSegment]
    windows: list[SpeechTurn] = field(default_factory=list)  # embedded windows
    window_speakers: list[str] = field(default_factory=list)  # the speaker of each window

    @property
    def speakers(self) -> list[str]:
        return sorted({s.speaker for s in self.segments})

    def turns(
        self, min_turn_s: float = 1.0, max_turn_s: float = 10.0
    ) -> list[tuple[SpeechTurn, str]]:
        """Speaker turns to embed: each segment split into pieces of at most `max_turn_s`,
        pieces shorter than `min_turn_s` dropped (too short to give a reliable embedding)."""
        out = []
        for seg in self.segments:
            for piece in split_turn(SpeechTurn(seg.start, seg.end), max_turn_s):
                if piece.duration >= min_turn_s:
                    out.append((piece, seg.speaker))
        return out


@dataclass(frozen=True)
class SpeakerTemplate:
    """One speaker's evidence: its turn rows (what cohort score normalisation needs) and the
    quality-weighted mean of those unit rows, renormalised (what is scored with cosine)."""

    speaker: str
    rows: Embeddings
    template: np.ndarray
    quality: float  # the best turn's quality: a speaker is as usable as its best turn


def turn_key(prefix: str, speaker: str, turn: SpeechTurn) -> str:
    """The store / catalog key of one diarized turn: `{prefix}:{speaker}@{start}-{end}`.

    The speaker is part of the key, so whoever reads the turn back (the catalog, the store)
    knows its speaker without another column.
    """
    return f"{prefix}:{speaker}@{turn.start:.2f}-{turn.end:.2f}"


def speaker_of_key(key: str) -> str | None:
    """`{prefix}:{speaker}` of a diarized turn key; None for a key without a speaker."""
    head, at, _span = key.rpartition("@")
    return head if at and head.rpartition(":")[2].startswith("spk") else None


def speaker_templates(rows: Embeddings, speakers: Sequence[str]) -> dict[str, SpeakerTemplate]:
    """Group turn rows by speaker (`speakers[i]` owns row i) into one template per speaker."""
    if len(speakers) != len(rows):
        raise ValueError(f"{len(speakers)} speaker labels for {len(rows)} rows")
    out: dict[str, SpeakerTemplate] = {}
    for name in sorted(set(speakers)):
        own = rows.take([i for i, s in enumerate(speakers) if s == name])
        out[name] = SpeakerTemplate(name, own, voice_template(own), float(own.quality.max()))
    return out


def diarize(
    samples: np.ndarray,
    speech: Sequence[SpeechTurn],
    embed: EmbedCall,
    params: DiarizationParams | None = None,
    num_speakers: int | None = None,
    key: str = "win",
) -> Diarization:
    """Speaker segments of a 16 kHz mono recording whose speech regions are `speech`.

    `num_speakers`, when known, replaces the threshold (or the eigengap) with that count.
    """
    params = params or DiarizationParams()
    if not isinstance(samples, SpilledAudio):  # a long recording stays in its file
        samples = np.asarray(samples, dtype=np.float32)
    total_s = len(samples) / SAMPLE_RATE
    mask = speech_mask(speech, total_s)
    windows = sliding_windows(speech, params)
    if not windows:
        return Diarization([])

    def segments(a: int, b: int) -> list[AudioSegment]:  # a batch of windows' audio at a time
        return [
            AudioSegment(
                f"{key}@{w.start:.2f}-{w.end:.2f}",
                samples[round(w.start * SAMPLE_RATE) : round(w.end * SAMPLE_RATE)],
            )
            for w in windows[a:b]
        ]

    rows = embed_in_batches(embed, segments, len(windows))
    by_key = {f"{key}@{w.start:.2f}-{w.end:.2f}": w for w in windows}
    kept = [by_key[k] for k in rows.keys]  # the encoder drops silent or too-short windows
    if not kept:
        return Diarization([])
    labels = cluster(rows.vectors, params, num_speakers)
    if num_speakers is None:  # a given count is taken as it is
        labels = fold_small_speakers(rows.vectors, labels, params.min_speaker_windows)
    labels = _relabel_by_first_appearance(labels)
    names = [f"spk{int(label):02d}" for label in labels]
    return Diarization(_segments(mask, kept, names), kept, names)


def speech_mask(speech: Sequence[SpeechTurn], total_s: float) -> np.ndarray:
    """One flag per FRAME_S frame: inside a speech region or not."""
    n = int(round(total_s / FRAME_S))
    mask = np.zeros(n, bool)
    for turn in speech:
        a, b = max(0, round(turn.start / FRAME_S)), min(n, round(turn.end / FRAME_S))
        mask[a:b] = True
    return mask


def sliding_windows(speech: Sequence[SpeechTurn], params: DiarizationParams) -> list[SpeechTurn]:
    """Windows every `hop_s` inside each speech region, the last one flush with its end.

    A window never spans a pause between regions: speakers mostly change at pauses, and a
    window of two voices (or of voice and silence) lands between the speakers' clusters. A
    region shorter than a window is one window of its own length (the encoder drops it if it is
    below its minimum duration; its frames then take the nearest window's speaker).
    """
    out = []
    for region in sorted(speech, key=lambda t: t.start):
        if region.duration <= params.window_s:
            if region.duration > 0:
                out.append(region)
            continue
        last = region.end - params.window_s
        starts = np.arange(region.start, last + 1e-9, params.hop_s)
        if last - starts[-1] > FRAME_S:  # else the tail window is (nearly) the previous one
            starts = np.append(starts, last)
        out.extend(SpeechTurn(float(a), float(a + params.window_s)) for a in starts)
    return out


def cluster(
    vectors: np.ndarray, params: DiarizationParams, num_speakers: int | None = None
) -> np.ndarray:
    """Cluster labels 0..k-1 of unit rows."""
    n = len(vectors)
    if n == 1 or num_speakers == 1:
        return np.zeros(n, np.int64)
    if num_speakers is not None:
        num_speakers = min(num_speakers, n)
    if params.method == "spectral":
        return _spectral(vectors, params.max_speakers, num_speakers)
    from scipy.cluster.hierarchy import fcluster, linkage

    # Cosine distance of unit rows; average linkage is the usual choice for speaker clustering
    # (single linkage chains speakers together through overlapped windows).
    tree = linkage(l2_normalise(vectors).astype(np.float64), method="average", metric="cosine")
    if num_speakers is not None:
        labels = fcluster(tree, t=num_speakers, criterion="maxclust")
    else:
        labels = fcluster(tree, t=params.threshold, criterion="distance")
    return labels.astype(np.int64) - 1


def _spectral(vectors: np.ndarray, max_speakers: int, num_speakers: int | None) -> np.ndarray:
    """Spectral clustering of the cosine affinity; speaker count from the largest eigengap.

    Each row keeps only its strongest affinities (the top half, at least 3) before
    symmetrising, as in auto-tuning spectral clustering for diarization (Park et al. 2019):
    the weak similarities between different speakers otherwise blur the eigengap. Keeping less
    than half cuts one speaker's windows into disconnected groups, each its own "speaker"."""
    from scipy.linalg import eigh
    from sklearn.cluster import KMeans

    unit = l2_normalise(vectors).astype(np.float64)
    affinity = np.clip(unit @ unit.T, 0.0, 1.0)
    n = len(unit)
    keep = min(n, max(3, n // 2))
    pruned = np.zeros_like(affinity)
    top = np.argsort(-affinity, axis=1)[:, :keep]
    rows = np.arange(n)[:, None]
    pruned[rows, top] = affinity[rows, top]
    pruned = 0.5 * (pruned + pruned.T)
    np.fill_diagonal(pruned, 0.0)
    degree = pruned.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    laplacian = np.eye(n) - inv_sqrt[:, None] * pruned * inv_sqrt[None, :]
    eigenvalues, eigenvectors = eigh(laplacian)
    if num_speakers is None:
        limit = min(max_speakers, n - 1)
        gaps = np.diff(eigenvalues[: limit + 1])
        num_speakers = int(np.argmax(gaps)) + 1 if gaps.size else 1
    if num_speakers <= 1:
        return np.zeros(n, np.int64)
    embedding = l2_normalise(eigenvectors[:, :num_speakers])
    return KMeans(num_speakers, n_init=10, random_state=0).fit_predict(embedding).astype(np.int64)


def fold_small_speakers(vectors: np.ndarray, labels: np.ndarray, min_windows: int) -> np.ndarray:
    """Give the windows of speakers with fewer than `min_windows` windows to the nearest
    (cosine to centroid) speaker that has enough; unchanged if no speaker has enough."""
    labels = labels.copy()
    names, counts = np.unique(labels, return_counts=True)
    large = names[counts >= min_windows]
    if large.size == 0 or large.size == names.size:
        return labels
    unit = l2_normalise(vectors)
    centroids = l2_normalise(np.stack([unit[labels == n].mean(axis=0) for n in large]))
    small = ~np.isin(labels, large)
    labels[small] = large[np.argmax(unit[small] @ centroids.T, axis=1)]
    return labels


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], np.int64)


def _segments(
    mask: np.ndarray, windows: list[SpeechTurn], names: list[str]
) -> list[SpeakerSegment]:
    """Each speech frame gets the speaker of the nearest window centre; runs become segments."""
    frames = np.flatnonzero(mask)
    if frames.size == 0:
        return []
    centres = np.array([(w.start + w.end) / 2 for w in windows])  # ascending: windows are
    times = (frames + 0.5) * FRAME_S
    right = np.clip(np.searchsorted(centres, times), 0, len(centres) - 1)
    left = np.clip(right - 1, 0, len(centres) - 1)
    nearest = np.where(np.abs(times - centres[left]) <= np.abs(times - centres[right]), left, right)
    speaker = np.array(names)[nearest]
    # A run ends where the frames stop being contiguous or the speaker changes.
    breaks = np.flatnonzero((np.diff(frames) != 1) | (speaker[1:] != speaker[:-1])) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [frames.size]])
    return [
        SpeakerSegment(
            round(float(frames[a] * FRAME_S), 3),
            round(float((frames[b - 1] + 1) * FRAME_S), 3),
            str(speaker[a]),
        )
        for a, b in zip(starts.tolist(), ends.tolist())
    ]
