"""One video from bytes to evidence: decode -> detect+track -> extract -> per-track rows.

Pure functions over the model calls they are given, so the same code runs with
models in Ray actors (flows) or in this process (tests, benchmarks).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.flows.models import FrameFaces
from biofuse.modalities.base import Embeddings
from biofuse.modalities.voice.vad import SpeechTurn

from biofuse import media
from biofuse.config import Settings
from biofuse.errors import MediaError
from biofuse.registry import MODALITIES, spec_for
from biofuse.tracking import LinkedTrack, link_faces, overlap_s, track_persons

FaceCall = Any  # biofuse.flows.actors.ModelHandle over list[image] -> list[FrameFaces]
VoiceCall = Any  # biofuse.flows.actors.ModelHandle over list[AudioSegment] -> Embeddings
PersonCall = Any  # biofuse.flows.actors.ModelHandle over list[image] -> list[FramePersons]
TrackCall = Any  # ModelHandle over list[SilhouetteSequence | PoseSequence | PersonCrops]

FRAMES_PER_CALL = 8  # frames sent to the face model at once (the actor batches across videos)
# A face belongs to the person whose box holds the face's centre in its top part (head and
# shoulders: the top 40 % of a standing person's box), in at least half of its frames.
FACE_IN_PERSON_TOP = 0.4
# Frames per person track handed to gait and body: the middle of the track, 6.4 s at 10 fps
# (gait needs a walking cycle or two; pose ratios settle in a few dozen frames).
TRACK_FRAMES_FOR_MODELS = 64
CROP_PAD = 0.3  # of the box height around each crop, above the segmenters' own padding
# evidence rows keyed by track (voice: by segment), as the modalities declare
TRACK_MODALITIES = tuple(m.name for m in MODALITIES.values() if m.keyed_by == "track")


@dataclass
class TrackEvidence:
    key: str
    start_s: float
    end_s: float
    boxes: list[list[float]]  # [t, x0, y0, x1, y1]: the person's boxes, or the face's
    quality: float
    kind: str = "face"  # "person" (a tracked body, maybe with a face) or "face" (face only)


@dataclass
class SegmentEvidence:
    key: str
    start_s: float
    end_s: float
    quality: float
    # the person this was said by: the one track on screen meanwhile, or the track its speaker
    # was seen as (see `link_turns`); None if nobody on screen can claim it
    track_key: str | None


def _rows_of(modality: str) -> property:
    """`evidence.face` etc.: a view of `evidence.rows[modality]` (None when absent)."""

    def get(self: VideoEvidence) -> Embeddings | None:
        return self.rows.get(modality)

    def put(self: VideoEvidence, value: Embeddings | None) -> None:
        if value is None:
            self.rows.pop(modality, None)
        else:
            self.rows[modality] = value

    return property(get, put)


@dataclass
class VideoEvidence:
    tracks: list[TrackEvidence] = field(default_factory=list)
    # modality -> its rows: one per track (key = track key) or per speech segment (voice),
    # as the modality declares (`biofuse.registry.MODALITIES`); absent when none were made
    rows: dict[str, Embeddings] = field(default_factory=dict)
    segments: list[SegmentEvidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decoded_s: float = 0.0
    frames_analyzed: int = 0

    face = _rows_of("face")
    voice = _rows_of("voice")
    gait = _rows_of("gait")
    body = _rows_of("body")


def needs_person_tracks(settings: Settings) -> bool:
    """Person tracks cost a person pass at `person_fps` (background subtraction ~25 ms, HOG
    0.3-0.9 s per 768x576 frame on CPU, benchmarks/results/person_tracking.md): they are made
    when a configured modality declares that it hangs on a person's body (gait, body)."""
    wanted = [MODALITIES[m] for m in settings.modalities if m in MODALITIES]
    return settings.person_fps > 0 and any(m.needs_person_tracks for m in wanted)


def pipeline_kinds(settings: Settings) -> list[str]:
    """The model kinds `analyze_video` is given: the modalities, plus the person detector."""
    kinds = list(settings.modalities)
    return kinds + ["person"] if needs_person_tracks(settings) else kinds


class _Rate:
    """Keeps about `fps` of the frames it is shown, by the rule media.iter_frames uses."""

    def __init__(self, fps: float) -> None:
        self.step = 1.0 / fps if fps > 0 else 0.0
        self.next_time = 0.0

    def wants(self, time_s: float) -> bool:
        if not self.step:
            return True
        if time_s + 1e-6 < self.next_time:
            return False
        self.next_time += self.step
        if self.next_time <= time_s:  # a jump in timestamps: resynchronise
            self.next_time = time_s + self.step
        return True


def _rates(settings: Settings, faces: bool, persons: bool) -> dict[str, float]:
    return {
        "face": settings.face_fps if faces else 0.0,
        "person": settings.person_fps if persons else 0.0,
    }


def _frame_pass(
    path: Path,
    settings: Settings,
    face_call: FaceCall | None,
    person_call: PersonCall | None,
    evidence: VideoEvidence,
) -> tuple[list[tuple[float, FrameFaces]], list[tuple[float, Any]]]:
    """One decode: face detections at `face_fps`, person detections at `person_fps`."""
    rates = _rates(settings, face_call is not None, person_call is not None)
    samplers = {kind: _Rate(fps) for kind, fps in rates.items() if fps > 0}
    calls = {"face": face_call, "person": person_call}
    found: dict[str, list[tuple[float, Any]]] = {"face": [], "person": []}
    batches: dict[str, list[media.Frame]] = {kind: [] for kind in samplers}
    # a fixed camera: people by background subtraction, here, over this video's frames in
    # order (the subtractor is stateful; an actor batching many videos' frames cannot hold
    # it); only frames it cannot use (the camera moves) go to the HOG actor
    background = _background_pass(settings) if "person" in samplers else None

    def flush(kind: str) -> None:
        batch = batches[kind]
        if batch:
            found[kind].extend(
                zip([f.time_s for f in batch], calls[kind]([f.image for f in batch]))
            )
            batch.clear()

    try:
        for frame in media.iter_frames(path, max(rates.values())):
            evidence.decoded_s = frame.time_s
            for kind, sampler in samplers.items():
                if sampler.wants(frame.time_s):
                    if kind == "person" and background is not None:
                        _background_frames(background, settings, frame, found, batches)
                    else:
                        batches[kind].append(frame)
                    if len(batches[kind]) >= FRAMES_PER_CALL:
                        flush(kind)
    except media.DecodeInterrupted as exc:
        evidence.notes.append(f"video truncated: {exc}")
    if background is not None:
        _background_frames(background, settings, None, found, batches)
        if background.frames_fallback:
            evidence.notes.append(
                f"person: {background.frames_fallback} frames without a usable background "
                f"({'HOG' if settings.person_detector == 'auto' else 'skipped'})"
            )
    for kind in samplers:
        flush(kind)
    found["person"].sort(key=lambda item: item[0])
    evidence.frames_analyzed = len(found["face"]) or len(found["person"])
    return found["face"], found["person"]


def _background_pass(settings: Settings) -> Any:
    if settings.person_detector == "hog":
        return None
    from biofuse.modalities.body.background import BackgroundPersonPass

    return BackgroundPersonPass(min_height_px=settings.person_min_height_px)


def _background_frames(
    background: Any,
    settings: Settings,
    frame: media.Frame | None,
    found: dict[str, list[tuple[float, Any]]],
    batches: dict[str, list[media.Frame]],
) -> None:
    """Feed a person frame (None: the end of the video) to the background pass; the frames it
    decides join `found`, those it cannot use go to the HOG batch ("auto") or stay empty."""
    from biofuse.modalities.body.person_detect import FramePersons

    decided = background.finish() if frame is None else background.feed(frame.time_s, frame.image)
    for time_s, image, people in decided:
        if people is not None:
            found["person"].append((time_s, people))
        elif settings.person_detector == "auto":
            batches["person"].append(media.Frame(-1, time_s, image))
        else:
            empty = FramePersons(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
            found["person"].append((time_s, empty))


def _face_owner(face: LinkedTrack, persons: list[LinkedTrack], tolerance_s: float) -> int | None:
    """The person track most of whose boxes hold this face track's centres in their top part."""
    votes: dict[int, int] = {}
    for time_s, (x0, y0, x1, y1) in zip(face.times, face.boxes):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for n, person in enumerate(persons):
            if not person.start_s - tolerance_s <= time_s <= person.end_s + tolerance_s:
                continue
            i = int(np.argmin(np.abs(np.asarray(person.times) - time_s)))
            if abs(person.times[i] - time_s) > tolerance_s:
                continue
            px0, py0, px1, py1 = person.boxes[i]
            if px0 <= cx <= px1 and py0 <= cy <= py0 + FACE_IN_PERSON_TOP * (py1 - py0):
                votes[n] = votes.get(n, 0) + 1
    if not votes:
        return None
    best = max(votes, key=lambda n: votes[n])
    return best if 2 * votes[best] >= len(face) else None


def _person_quality(track: LinkedTrack) -> float:
    """How sure the detector was of this person: mean logistic of its SVM margins."""
    return float(np.mean(1.0 / (1.0 + np.exp(-np.asarray(track.scores, dtype=float)))))


def _face_tracks(
    path: Path,
    prefix: str,
    settings: Settings,
    face_call: FaceCall | None,
    evidence: VideoEvidence,
    person_call: PersonCall | None = None,
    person_masks: list[list[Any] | None] | None = None,
) -> list[LinkedTrack]:
    """Face and person tracks; faces join the person they sit on. Returns the person tracks.

    `person_masks`, when given, receives each person frame's foreground masks (None for a
    frame HOG analysed), indexed as the tracks' members are.

    A person track's key is `{prefix}:pNNNN`, a face seen on nobody's body (talking heads,
    bodies cut off by the frame) is a face-only track `{prefix}:tNNNN`. A person's face
    template pools the detections of every face track that joined it.
    """
    from biofuse.modalities.face import aggregate_track, same_person_cos

    # each face model declares its own cosine scale for "the same person"
    outlier_cos = same_person_cos(face_call.model_id) if face_call is not None else 1.0
    per_frame, per_person_frame = _frame_pass(path, settings, face_call, person_call, evidence)
    faces = link_faces(
        [(t, [tuple(b) for b in found.boxes]) for t, found in per_frame],
        iou_threshold=settings.track_iou,
        max_gap_s=settings.track_max_gap_s,
        min_detections=settings.track_min_frames,
    )
    persons: list[LinkedTrack] = []
    if person_call is not None:
        persons = track_persons([(t, p.boxes, p.scores) for t, p in per_person_frame])
        if person_masks is not None:
            person_masks.extend(getattr(p, "masks", None) for _, p in per_person_frame)
    tolerance_s = 0.5 / settings.person_fps if settings.person_fps > 0 else 0.0
    owner = {n: _face_owner(face, persons, tolerance_s + 1e-3) for n, face in enumerate(faces)}
    vectors, quality, keys = [], [], []

    def face_template(members: list[LinkedTrack]) -> tuple[np.ndarray, float]:
        rows = np.stack([per_frame[f][1].vectors[d] for t in members for f, d in t.members])
        weights = np.array([per_frame[f][1].quality[d] for t in members for f, d in t.members])
        return aggregate_track(rows, weights, outlier_cos)

    for n, person in enumerate(persons):
        key = f"{prefix}:p{n:04d}"
        mine = [face for m, face in enumerate(faces) if owner[m] == n]
        track_quality = _person_quality(person)
        if mine:
            template, track_quality = face_template(mine)
            vectors.append(template)
            quality.append(track_quality)
            keys.append(key)
        evidence.tracks.append(
            TrackEvidence(
                key,
                person.start_s,
                person.end_s,
                [[round(t, 3), *map(float, b)] for t, b in zip(person.times, person.boxes)],
                track_quality,
                kind="person",
            )
        )
    for n, face in enumerate(faces):
        if owner[n] is not None:
            continue
        template, track_quality = face_template([face])
        key = f"{prefix}:t{n:04d}"
        evidence.tracks.append(
            TrackEvidence(
                key,
                face.start_s,
                face.end_s,
                [[round(t, 3), *map(float, b)] for t, b in zip(face.times, face.boxes)],
                track_quality,
            )
        )
        vectors.append(template)
        quality.append(track_quality)
        keys.append(key)
    if keys and face_call is not None:
        evidence.face = Embeddings(
            np.stack(vectors), np.array(quality, np.float32), keys, face_call.model_id
        )
    return persons


_BODY_MODELS_LOCK = threading.Lock()  # MediaPipe graphs are shared and not thread-safe


def _middle(track: LinkedTrack) -> range:
    """The members handed to gait and body: the middle TRACK_FRAMES_FOR_MODELS of the track."""
    first = max(0, (len(track) - TRACK_FRAMES_FOR_MODELS) // 2)
    return range(first, min(len(track), first + TRACK_FRAMES_FOR_MODELS))


def _person_crops(
    path: Path,
    settings: Settings,
    persons: list[LinkedTrack],
    evidence: VideoEvidence,
    with_faces: bool,
    only: set[int] | None = None,
) -> dict[int, tuple[list[np.ndarray], list[tuple[float, float, float, float]]]]:
    """A second decode: each person track's padded crops (and its boxes in them), middle part.

    Only crops are kept, never whole frames, so a long video costs no more memory than
    TRACK_FRAMES_FOR_MODELS crops per track. `only`: the tracks that need crops (default all).
    """
    wanted: dict[int, list[tuple[int, int]]] = {}  # person frame index -> [(track, member)]
    for n, track in enumerate(persons):
        if only is not None and n not in only:
            continue
        frames = [f for f, _ in track.members]
        for m in _middle(track):
            wanted.setdefault(frames[m], []).append((n, m))
    out: dict[int, tuple[list[np.ndarray], list[tuple[float, float, float, float]]]] = {
        n: ([], []) for n in range(len(persons))
    }
    if not wanted:
        return out
    # decode as the first pass did, so that person frame i is the same picture
    sampler, index = _Rate(settings.person_fps), -1
    try:
        for frame in media.iter_frames(path, max(_rates(settings, with_faces, True).values())):
            if not sampler.wants(frame.time_s):
                continue
            index += 1
            for n, m in wanted.get(index, []):
                x0, y0, x1, y1 = persons[n].boxes[m]
                pad = CROP_PAD * (y1 - y0)
                h, w = frame.image.shape[:2]
                cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
                cx1, cy1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
                if cx1 - cx0 < 2 or cy1 - cy0 < 2:
                    continue
                out[n][0].append(frame.image[cy0:cy1, cx0:cx1].copy())
                out[n][1].append((x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0))
            if index >= max(wanted, default=-1):
                break
    except media.DecodeInterrupted as exc:
        evidence.notes.append(f"video truncated on the second pass: {exc}")
    return out


def _person_evidence(
    path: Path,
    settings: Settings,
    persons: list[LinkedTrack],
    keys: list[str],
    gait_call: TrackCall | None,
    body_call: TrackCall | None,
    evidence: VideoEvidence,
    with_faces: bool,
    person_masks: list[list[Any] | None] | None = None,
) -> None:
    """Silhouettes -> gait rows and poses (or crops) -> body rows, one per person track.

    A track's silhouettes come from its background-subtraction masks where it has enough of
    them; otherwise (HOG frames, masks OpenGait drops) from selfie segmentation of its crops.
    """
    from biofuse.modalities.body.silhouettes import mask_silhouettes

    from_masks: dict[int, Any] = {}
    if gait_call is not None and person_masks:
        for n, key in enumerate(keys):
            members = [persons[n].members[m] for m in _middle(persons[n])]
            masks = [None if person_masks[f] is None else person_masks[f][d] for f, d in members]
            found = mask_silhouettes(key, masks)
            if found is not None:
                from_masks[n] = found
    need = set(range(len(keys))) if body_call is not None else set()
    if gait_call is not None:
        need |= {n for n in range(len(keys)) if n not in from_masks}
    crops = _person_crops(path, settings, persons, evidence, with_faces, need)
    silhouettes, poses, people = list(from_masks.values()), [], []
    # what the body model takes is declared in its registry entry (PoseSequence or PersonCrops)
    body_input = spec_for(body_call.model_id).input if body_call is not None else None
    with _BODY_MODELS_LOCK:
        for n, key in enumerate(keys):
            images, boxes = crops[n]
            if not images:
                continue
            if gait_call is not None and n not in from_masks:
                from biofuse.modalities.body.silhouettes import track_silhouettes

                found = track_silhouettes(key, images, boxes)
                if found is not None:
                    silhouettes.append(found)
            if body_call is not None and body_input == "person-crops":
                from biofuse.modalities.body.clip_student import PersonCrops

                people.append(PersonCrops(key, images))
            elif body_call is not None:
                from biofuse.modalities.body.anthropometric import track_pose

                pose = track_pose(key, images, boxes)
                if pose is not None:
                    poses.append(pose)
    if gait_call is not None:
        if silhouettes:
            evidence.gait = gait_call(silhouettes)
        if len(silhouettes) < len(keys):
            evidence.notes.append(f"gait: {len(keys) - len(silhouettes)} tracks had no silhouette")
    items = people or poses
    if body_call is not None:
        if items:
            evidence.body = body_call(items)
        if len(items) < len(keys):
            evidence.notes.append(f"body: {len(keys) - len(items)} tracks had no pose")


def _speech_segments(
    path: Path,
    prefix: str,
    settings: Settings,
    voice_call: VoiceCall,
    evidence: VideoEvidence,
    stream: bool = True,
) -> None:
    """Speech turns with their speaker (when diarizing) and the person track they belong to.

    Diarizing, the VAD's speech regions are cut into speaker turns, and each turn's key carries
    its speaker (`{prefix}:spkNN@start-end`); otherwise every VAD turn stands alone
    (`{prefix}:voice@start-end`). The encoder embeds each turn of at least `min_turn_s`.

    `stream` (the default): the audio is decoded a block at a time into the streaming VAD and
    a temporary file under the home, and embedded a batch of spans at a time
    (modalities/voice/stream.py), so memory does not grow with the recording's length;
    the turns and rows are those of the whole-file path (`stream=False`).
    """
    from biofuse.modalities.voice.stream import SpilledAudio
    from biofuse.modalities.voice.vad import StreamingVAD

    vad: StreamingVAD | None = None
    samples: Any
    try:
        if stream:
            samples = SpilledAudio(Path(settings.home) / "tmp")
            vad = StreamingVAD(settings.vad)
            for block in media.iter_audio(path):
                samples.append(block)
                vad.feed(block)
        else:
            samples = media.read_audio(path)
    except media.DecodeInterrupted as exc:
        evidence.notes.append(f"audio truncated: {exc}")
        if vad is not None:
            samples.close()
        return
    try:
        _speech_turns(prefix, settings, voice_call, evidence, samples, vad)
    finally:
        if vad is not None:
            samples.close()


def _speech_turns(
    prefix: str,
    settings: Settings,
    voice_call: VoiceCall,
    evidence: VideoEvidence,
    samples: Any,
    vad: Any,
) -> None:
    from biofuse.modalities.voice.diarize import MIN_REGION_S, DiarizationParams, diarize, turn_key
    from biofuse.modalities.voice.resemblyzer_voice import turn_segments
    from biofuse.modalities.voice.stream import embed_in_batches
    from biofuse.modalities.voice.vad import detect_speech, noise_floor, noise_power

    def detect(**kw: Any) -> list[SpeechTurn]:
        if vad is not None:
            return vad.turns(**kw)
        return detect_speech(samples, method=settings.vad, **kw)

    labelled: list[tuple[SpeechTurn, str | None]]
    if settings.diarize:
        regions = detect(min_turn_s=MIN_REGION_S, max_turn_s=0)
        window_s = max(1.5, settings.min_turn_s)  # every window must be long enough to embed
        params = DiarizationParams(
            window_s=window_s,
            hop_s=window_s / 2,
            method=settings.diarize_method,
            # the voice model's own threshold (its cosine scale), unless the settings set one
            threshold=spec_for(voice_call.model_id).setting("diarize_threshold", settings),
        )
        result = diarize(samples, regions, voice_call, params, key=f"{prefix}:win")
        labelled = list(result.turns(min_turn_s=settings.min_turn_s))
    else:
        turns = detect(min_turn_s=settings.min_turn_s)
        labelled = [(turn, None) for turn in turns]
    if not labelled:
        evidence.notes.append("no speech found")
        return
    all_turns = [turn for turn, _ in labelled]
    if vad is not None:  # the recording's noise floor from the streamed 30 ms frame powers
        floor = noise_floor(vad.powers(), all_turns, vad.frame / vad.sample_rate)
    else:
        floor = noise_power(samples, all_turns)
    by_key: dict[str, tuple[SpeechTurn, str | None]] = {}

    def segments(a: int, b: int) -> list[Any]:  # a batch of turns' audio at a time
        cut = turn_segments(samples, all_turns[a:b], f"{prefix}:voice", floor=floor)
        for segment, (turn, speaker) in zip(cut, labelled[a:b]):
            if speaker is not None:
                segment.key = turn_key(prefix, speaker, turn)
            by_key[segment.key] = (turn, speaker)
        return cut

    rows = embed_in_batches(voice_call, segments, len(labelled))
    if len(rows) == 0:
        return
    evidence.voice = rows
    kept = [by_key[key] for key in rows.keys]
    owners = link_turns(kept, evidence.tracks)
    for key, q, (turn, _), owner in zip(rows.keys, rows.quality, kept, owners):
        evidence.segments.append(SegmentEvidence(key, turn.start, turn.end, float(q), owner))


def link_turns(
    turns: list[tuple[SpeechTurn, str | None]], tracks: list[TrackEvidence]
) -> list[str | None]:
    """The person track each speech turn belongs to, or None.

    A turn said while exactly one track is on screen belongs to that track. A speaker whose
    on-screen turns all belong to the same single track lends it the rest of its turns too (said
    off screen, or while others were visible); a speaker seen with several tracks lends none,
    since diarization may have merged two people.
    """
    owners: list[str | None] = []
    for turn, _speaker in turns:
        on_screen = [
            tr.key for tr in tracks if overlap_s(turn.start, turn.end, tr.start_s, tr.end_s) > 0
        ]
        owners.append(on_screen[0] if len(on_screen) == 1 else None)
    seen_with: dict[str, set[str]] = {}
    for (_turn, speaker), owner in zip(turns, owners):
        if speaker is not None and owner is not None:
            seen_with.setdefault(speaker, set()).add(owner)
    return [
        owner
        if owner is not None or speaker is None or len(seen_with.get(speaker, ())) != 1
        else next(iter(seen_with[speaker]))
        for (_turn, speaker), owner in zip(turns, owners)
    ]


def analyze_video(
    path: Path, content_hash: str, settings: Settings, handles: Mapping[str, Any]
) -> VideoEvidence:
    """All evidence of one video. Raises MediaError when nothing at all can be decoded.

    `handles` maps a model kind ("face", "voice", "gait", "body", "person") to its model call;
    a kind absent from it is not run. With "person", people are tracked and faces join them;
    gait and body rows are made per person track. Without it, tracks are face tracks.
    """
    face_call, voice_call = handles.get("face"), handles.get("voice")
    person_call, gait_call, body_call = (handles.get(k) for k in ("person", "gait", "body"))
    info = media.probe(path)
    if not info.has_video:
        raise MediaError(
            f"{path}: no video stream (audio-only file); enroll audio with `biofuse enroll`"
        )
    prefix = content_hash[:16]
    evidence = VideoEvidence()
    if face_call is not None or person_call is not None:
        person_masks: list[list[Any] | None] = []
        persons = _face_tracks(
            path, prefix, settings, face_call, evidence, person_call, person_masks
        )
        if persons and (gait_call is not None or body_call is not None):
            keys = [t.key for t in evidence.tracks if t.kind == "person"]
            _person_evidence(
                path,
                settings,
                persons,
                keys,
                gait_call,
                body_call,
                evidence,
                face_call is not None,
                person_masks,
            )
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

    A probe is a track (its face, gait and body rows plus the voice of the segments linked
    to it) or a speaker nobody on screen can claim (voice only; a lone segment when the video
    was not diarized).
    """
    from biofuse.fusion.templates import build_templates

    probes: dict[str, dict[str, tuple[np.ndarray, float]]] = {k: {} for k in track_keys}
    for modality in TRACK_MODALITIES:  # one row per track, keyed by the track
        rows = evidence_rows.get(modality)
        if rows is not None:
            for key, vec, q in zip(rows.keys, rows.vectors, rows.quality):
                if key in probes:
                    probes[key][modality] = (vec, float(q))
    voice = evidence_rows.get("voice")
    if voice is not None and len(voice):
        from biofuse.modalities.voice.diarize import speaker_of_key

        # A track's voice is its linked turns; the rest is one probe per speaker (its key is
        # `{video}:spkNN`), or per turn when the video was not diarized.
        owner = {s.key: s.track_key for s in segments}
        labels = [owner.get(k) or speaker_of_key(k) or k for k in voice.keys]
        names, templates = build_templates(voice.vectors, voice.quality, labels)
        for name, template in zip(names, templates):
            qualities = [q for lab, q in zip(labels, voice.quality) if lab == name]
            probes.setdefault(name, {})["voice"] = (template, float(max(qualities)))
    return {key: rows for key, rows in probes.items() if rows}  # a person seen, nothing measured
