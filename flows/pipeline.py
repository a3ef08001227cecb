"""One video from bytes to evidence: decode -> detect+track -> extract -> per-track rows.

Pure functions over the model calls they are given, so the same code runs with
models in Ray actors (flows) or in this process (tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biofuse import media
from biofuse.config import Settings
from biofuse.errors import MediaError
from biofuse.tracking import link_detections, overlap_s
from flows.models import FrameFaces
from modalities.base import Embeddings

FaceCall = Any  # flows.actors.ModelHandle over list[image] -> list[FrameFaces]
VoiceCall = Any  # flows.actors.ModelHandle over list[AudioSegment] -> Embeddings

FRAMES_PER_CALL = 8  # frames sent to the face model at once (the actor batches across videos)


@dataclass
class TrackEvidence:
    key: str
    start_s: float
    end_s: float
    boxes: list[list[float]]  # [t, x0, y0, x1, y1]
    quality: float


@dataclass
class SegmentEvidence:
    key: str
    start_s: float
    end_s: float
    quality: float
    track_key: str | None  # the one person on screen while this was said, if exactly one


@dataclass
class VideoEvidence:
    tracks: list[TrackEvidence] = field(default_factory=list)
    face: Embeddings | None = None  # one row per track (key = track key)
    segments: list[SegmentEvidence] = field(default_factory=list)
    voice: Embeddings | None = None  # one row per speech segment (key = segment key)
    notes: list[str] = field(default_factory=list)
    decoded_s: float = 0.0
    frames_analyzed: int = 0


def _face_tracks(
    path: Path, prefix: str, settings: Settings, face_call: FaceCall, evidence: VideoEvidence
) -> None:
    from modalities.face.dlib_face import DLIB_SAME_PERSON_COS, aggregate_track

    per_frame: list[tuple[float, FrameFaces]] = []
    batch: list[media.Frame] = []

    def flush() -> None:
        if batch:
            faces = face_call([f.image for f in batch])
            per_frame.extend(zip([f.time_s for f in batch], faces))
            batch.clear()

    try:
        for frame in media.iter_frames(path, settings.face_fps):
            batch.append(frame)
            evidence.decoded_s = frame.time_s
            if len(batch) >= FRAMES_PER_CALL:
                flush()
    except media.DecodeInterrupted as exc:
        evidence.notes.append(f"video truncated: {exc}")
    flush()
    evidence.frames_analyzed = len(per_frame)
    linked = link_detections(
        [(t, [tuple(b) for b in faces.boxes]) for t, faces in per_frame],
        iou_threshold=settings.track_iou,
        max_gap_s=settings.track_max_gap_s,
        min_detections=settings.track_min_frames,
    )
    vectors, quality, keys = [], [], []
    for n, track in enumerate(linked):
        rows = np.stack([per_frame[f][1].vectors[d] for f, d in track.members])
        weights = np.array([per_frame[f][1].quality[d] for f, d in track.members])
        template, track_quality = aggregate_track(rows, weights, DLIB_SAME_PERSON_COS)
        key = f"{prefix}:t{n:04d}"
        evidence.tracks.append(
            TrackEvidence(
                key,
                track.start_s,
                track.end_s,
                [[round(t, 3), *map(float, b)] for t, b in zip(track.times, track.boxes)],
                track_quality,
            )
        )
        vectors.append(template)
        quality.append(track_quality)
        keys.append(key)
    if keys:
        evidence.face = Embeddings(
            np.stack(vectors), np.array(quality, np.float32), keys, face_call.model_id
        )


def _speech_segments(
    path: Path, prefix: str, settings: Settings, voice_call: VoiceCall, evidence: VideoEvidence
) -> None:
    from modalities.voice.resemblyzer_voice import turn_segments
    from modalities.voice.vad import detect_speech

    try:
        samples = media.read_audio(path)
    except media.DecodeInterrupted as exc:
        evidence.notes.append(f"audio truncated: {exc}")
        return
    turns = detect_speech(samples, method=settings.vad, min_turn_s=settings.min_turn_s)
    if not turns:
        evidence.notes.append("no speech found")
        return
    segments = turn_segments(samples, turns, f"{prefix}:voice")
    rows = voice_call(segments)
    if len(rows) == 0:
        return
    evidence.voice = rows
    by_key = {s.key: (t, s) for t, s in zip(turns, segments)}
    for key, q in zip(rows.keys, rows.quality):
        turn, _ = by_key[key]
        on_screen = [
            tr.key
            for tr in evidence.tracks
            if overlap_s(turn.start, turn.end, tr.start_s, tr.end_s) > 0
        ]
        evidence.segments.append(
            SegmentEvidence(
                key, turn.start, turn.end, float(q), on_screen[0] if len(on_screen) == 1 else None
            )
        )


def analyze_video(
    path: Path,
    content_hash: str,
    settings: Settings,
    face_call: FaceCall | None,
    voice_call: VoiceCall | None,
) -> VideoEvidence:
    """All evidence of one video. Raises MediaError when nothing at all can be decoded."""
    info = media.probe(path)
    if not info.has_video:
        raise MediaError(
            f"{path}: no video stream (audio-only file); enroll audio with `biofuse enroll`"
        )
    prefix = content_hash[:16]
    evidence = VideoEvidence()
    if face_call is not None:
        _face_tracks(path, prefix, settings, face_call, evidence)
    if voice_call is not None:
        if info.has_audio:
            _speech_segments(path, prefix, settings, voice_call, evidence)
        else:
            evidence.notes.append("no audio stream: voice skipped")
    return evidence


def probe_evidence(
    evidence_rows: dict[str, Embeddings], segments: list[SegmentEvidence], track_keys: list[str]
) -> dict[str, dict[str, tuple[np.ndarray, float]]]:
    """Per probe, per modality: one vector and its quality.

    A probe is a person track (face template plus the voice of the segments linked
    to it) or a speech segment nobody on screen can claim (voice only).
    """
    from fusion.templates import build_templates

    probes: dict[str, dict[str, tuple[np.ndarray, float]]] = {k: {} for k in track_keys}
    face = evidence_rows.get("face")
    if face is not None:
        for key, vec, q in zip(face.keys, face.vectors, face.quality):
            if key in probes:
                probes[key]["face"] = (vec, float(q))
    voice = evidence_rows.get("voice")
    if voice is not None and len(voice):
        owner = {s.key: (s.track_key or s.key) for s in segments}
        labels = [owner.get(k, k) for k in voice.keys]
        names, templates = build_templates(voice.vectors, voice.quality, labels)
        for name, template in zip(names, templates):
            qualities = [q for lab, q in zip(labels, voice.quality) if lab == name]
            probes.setdefault(name, {})["voice"] = (template, float(max(qualities)))
    return probes
