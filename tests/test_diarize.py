"""Diarization inside a recording, speaker templates, and how speakers become probes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.pipeline import SegmentEvidence, TrackEvidence, link_turns, probe_evidence
from biofuse.modalities.base import Embeddings
from biofuse.modalities.voice import AudioSegment, ResemblyzerExtractor, SpeechTurn, detect_speech
from biofuse.modalities.voice.diarize import (
    MIN_REGION_S,
    Diarization,
    DiarizationParams,
    SpeakerSegment,
    cluster,
    diarize,
    fold_small_speakers,
    sliding_windows,
    speaker_of_key,
    speaker_templates,
    speech_mask,
    turn_key,
)
from biofuse.modalities.voice.vad import merge_turns

SR = 16000


def two_directions(n_a: int, n_b: int, spread: float = 0.15, seed: int = 0) -> np.ndarray:
    """Unit rows scattered around two orthogonal directions (two "speakers")."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16, dtype=np.float32)[:2]
    rows = np.concatenate([np.repeat(centres[:1], n_a, 0), np.repeat(centres[1:], n_b, 0)])
    rows = rows + spread * rng.standard_normal(rows.shape).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- clustering and windows on synthetic inputs -------------------------------------------------


@pytest.mark.parametrize("method", ["agglomerative", "spectral"])
def test_clustering_separates_two_speakers_without_being_told_how_many(method: str) -> None:
    vectors = two_directions(12, 8)
    labels = cluster(vectors, DiarizationParams(method=method))
    assert len(set(labels[:12].tolist())) == 1 and len(set(labels[12:].tolist())) == 1
    assert labels[0] != labels[12]
    # One speaker stays one speaker.
    assert len(set(cluster(vectors[:12], DiarizationParams(method=method)).tolist())) == 1


def test_a_known_speaker_count_replaces_the_threshold() -> None:
    vectors = two_directions(10, 10)
    far_threshold = DiarizationParams(threshold=1.9)  # would merge everything
    assert len(set(cluster(vectors, far_threshold).tolist())) == 1
    assert len(set(cluster(vectors, far_threshold, num_speakers=2).tolist())) == 2


def test_a_speaker_of_one_window_is_folded_into_the_nearest_speaker() -> None:
    vectors = two_directions(6, 6)
    odd = vectors[0] + 0.4 * vectors[6]  # one window, closer to speaker 0
    vectors = np.vstack([vectors, odd / np.linalg.norm(odd)])
    labels = np.array([0] * 6 + [1] * 6 + [2])
    folded = fold_small_speakers(vectors, labels, min_windows=2)
    assert folded.tolist() == [0] * 6 + [1] * 6 + [0]
    # With nobody large enough, nothing is folded.
    assert fold_small_speakers(vectors[:2], np.array([0, 1]), 2).tolist() == [0, 1]


def test_windows_stay_inside_speech_regions() -> None:
    speech = [SpeechTurn(1.0, 4.0), SpeechTurn(4.5, 5.7), SpeechTurn(6.0, 6.3)]
    assert speech_mask(speech, 8.0).sum() == 300 + 120 + 30
    windows = sliding_windows(speech, DiarizationParams())
    # Every 0.75 s in the first region, the last flush with its end; the short regions are a
    # window each (never one spanning the pauses between regions).
    assert [x for w in windows for x in (w.start, w.end)] == pytest.approx(
        [1.0, 2.5, 1.75, 3.25, 2.5, 4.0, 4.5, 5.7, 6.0, 6.3]
    )
    tail = sliding_windows([SpeechTurn(0.0, 2.0)], DiarizationParams())
    assert [x for w in tail for x in (w.start, w.end)] == pytest.approx([0.0, 1.5, 0.5, 2.0])
    assert sliding_windows([], DiarizationParams()) == []


def test_turns_are_split_and_too_short_ones_dropped() -> None:
    result = Diarization(
        [SpeakerSegment(0.0, 0.6, "spk00"), SpeakerSegment(0.6, 25.0, "spk01")],
    )
    turns = result.turns(min_turn_s=1.0, max_turn_s=10.0)
    assert [s for _, s in turns] == ["spk01"] * 3
    assert turns[0][0].start == pytest.approx(0.6) and turns[-1][0].end == pytest.approx(25.0)
    assert result.speakers == ["spk00", "spk01"]


def test_turn_keys_carry_the_speaker() -> None:
    key = turn_key("abc123", "spk02", SpeechTurn(1.234, 5.0))
    assert key == "abc123:spk02@1.23-5.00"
    assert speaker_of_key(key) == "abc123:spk02"
    assert speaker_of_key("abc123:voice@1.23-5.00") is None
    assert speaker_of_key("abc123:t0001") is None


def test_speaker_templates_keep_rows_and_weight_them_by_quality() -> None:
    vectors = np.eye(4, dtype=np.float32)
    rows = Embeddings(vectors, np.array([1.0, 0.5, 0.2, 0.9], np.float32), list("abcd"), "m")
    got = speaker_templates(rows, ["s1", "s0", "s1", "s0"])
    assert list(got) == ["s0", "s1"]
    assert got["s1"].rows.keys == ["a", "c"]
    assert got["s1"].template == pytest.approx(np.array([1.0, 0, 0.2, 0]) / np.hypot(1, 0.2))
    assert got["s0"].quality == pytest.approx(0.9)
    with pytest.raises(ValueError, match="speaker labels"):
        speaker_templates(rows, ["s0"])


# -- linking speakers to person tracks, and probes -------------------------------------------


def track(key: str, start: float, end: float) -> TrackEvidence:
    return TrackEvidence(key, start, end, [], 1.0)


def test_a_speaker_seen_with_one_track_lends_it_its_off_screen_turns() -> None:
    tracks = [track("v:t0000", 0.0, 10.0), track("v:t0001", 5.0, 20.0)]
    turns = [
        (SpeechTurn(1.0, 4.0), "v:spk00"),  # only t0000 on screen
        (SpeechTurn(6.0, 8.0), "v:spk00"),  # both on screen: ambiguous by itself
        (SpeechTurn(25.0, 28.0), "v:spk00"),  # nobody on screen
        (SpeechTurn(12.0, 15.0), "v:spk01"),  # only t0001
        (SpeechTurn(30.0, 33.0), None),  # not diarized: stays unlinked
    ]
    assert link_turns(turns, tracks) == ["v:t0000", "v:t0000", "v:t0000", "v:t0001", None]


def test_a_speaker_seen_with_two_tracks_lends_neither_its_other_turns() -> None:
    tracks = [track("v:t0000", 0.0, 5.0), track("v:t0001", 10.0, 15.0)]
    turns = [
        (SpeechTurn(1.0, 3.0), "v:spk00"),
        (SpeechTurn(11.0, 13.0), "v:spk00"),
        (SpeechTurn(20.0, 23.0), "v:spk00"),
    ]
    assert link_turns(turns, tracks) == ["v:t0000", "v:t0001", None]


def test_an_unlinked_speaker_is_one_voice_probe_not_one_per_turn() -> None:
    keys = ["v:spk00@1.00-3.00", "v:spk01@4.00-6.00", "v:spk01@7.00-9.00", "v:voice@9.0-11.0"]
    vectors = np.eye(4, dtype=np.float32)
    rows = Embeddings(vectors, np.array([0.9, 0.4, 0.8, 0.5], np.float32), keys, "m")
    segments = [
        SegmentEvidence(keys[0], 1.0, 3.0, 0.9, "v:t0000"),
        SegmentEvidence(keys[1], 4.0, 6.0, 0.4, None),
        SegmentEvidence(keys[2], 7.0, 9.0, 0.8, None),
        SegmentEvidence(keys[3], 9.0, 11.0, 0.5, None),
    ]
    probes = probe_evidence({"voice": rows}, segments, ["v:t0000"])
    assert sorted(probes) == sorted(["v:t0000", "v:spk01", keys[3]])
    template, quality = probes["v:spk01"]["voice"]
    expected = np.array([0, 0.4, 0.8, 0]) / np.hypot(0.4, 0.8)
    assert template == pytest.approx(expected, abs=1e-6) and quality == pytest.approx(0.8)
    assert probes["v:t0000"]["voice"][0] == pytest.approx(vectors[0])


# -- real speech ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> ResemblyzerExtractor:
    from biofuse.registry import Registry

    pytest.importorskip("resemblyzer")
    ex = ResemblyzerExtractor(
        Registry(tmp_path_factory.mktemp("models")).resolve("resemblyzer-ge2e")
    )
    ex.prepare("cpu")
    return ex


def utterances(root: Path, speaker: str) -> list[Path]:
    with open(root / "utterances.tsv", newline="") as handle:
        return [
            root / r["path"]
            for r in csv.DictReader(handle, delimiter="\t")
            if r["speaker"] == speaker
        ]


def two_readers(shared_data: Path) -> tuple[list[Path], list[Path]]:
    """Utterances of two LibriSpeech readers, A and B; skips without the set."""
    root = shared_data / "voice-dev" / "librispeech"
    if not (root / "utterances.tsv").exists():
        pytest.skip("voice-dev LibriSpeech set not found")
    return utterances(root, "LS-1688"), utterances(root, "LS-3080")


def two_reader_conversation(
    a: list[Path], b: list[Path], lead_s: float = 0.0
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Reader A, reader B, reader A again (<= 6 s each, 0.5 s apart) after `lead_s` of
    silence, with the true (start, end, reader) turns."""
    import soundfile

    gap = np.zeros(int(0.5 * SR), np.float32)
    parts, truth, t = [np.zeros(int(lead_s * SR), np.float32)], [], lead_s
    for path, who in ((a[1], "A"), (b[1], "B"), (a[2], "A")):
        wave = soundfile.read(path, dtype="float32")[0][: 6 * SR]
        parts += [wave, gap]
        truth.append((t, t + len(wave) / SR, who))
        t += (len(wave) + len(gap)) / SR
    return np.concatenate(parts), truth


def test_conversation_of_two_readers_is_split_into_their_turns(
    shared_data: Path, extractor: ResemblyzerExtractor
) -> None:
    import soundfile

    a, b = two_readers(shared_data)
    samples, truth = two_reader_conversation(a, b)
    regions = detect_speech(samples, min_turn_s=MIN_REGION_S, max_turn_s=0)
    result = diarize(samples, regions, extractor.embed)
    assert len(result.speakers) == 2
    # Each true turn is dominated (>= 85% of its speech) by one found speaker; A's two turns
    # share theirs, B's differs.
    owner = []
    for start, end, _ in truth:
        spoken = {}
        for seg in result.segments:
            overlap = max(0.0, min(end, seg.end) - max(start, seg.start))
            spoken[seg.speaker] = spoken.get(seg.speaker, 0.0) + overlap
        best = max(spoken, key=spoken.get)
        assert spoken[best] >= 0.85 * sum(spoken.values()), spoken
        owner.append(best)
    assert owner[0] == owner[2] != owner[1]

    # Templates of the found speakers: A's matches a held-out utterance of A, not of B.
    labelled = result.turns()
    from biofuse.modalities.voice import turn_segments

    segments = turn_segments(samples, [turn for turn, _ in labelled], "conv")
    rows = extractor.embed(segments)
    speakers = [lab for (_, lab), seg in zip(labelled, segments) if seg.key in set(rows.keys)]
    templates = speaker_templates(rows, speakers)
    held_out = extractor.embed(
        [
            AudioSegment(w, soundfile.read(p, dtype="float32")[0])
            for w, p in (("A", a[4]), ("B", b[4]))
        ]
    )
    scores = held_out.vectors @ templates[owner[0]].template
    assert scores[0] > scores[1] + 0.1


def test_ami_meeting_excerpt_with_reference_speech_finds_its_two_speakers(
    shared_data: Path, extractor: ResemblyzerExtractor
) -> None:
    """Clustering alone on far-field meeting audio: speech regions from the reference RTTM
    (webrtc's regions on this excerpt merge the speakers, see benchmarks/results/voice_ami.md)."""
    from biofuse import media

    root = shared_data / "voice-dev" / "ami-excerpts"
    if not (root / "dev00.wav").exists():
        pytest.skip("AMI excerpts not found")
    samples = media.read_audio(root / "dev00.wav")
    reference = []
    for line in (root / "dev00.rttm").read_text().splitlines():
        start, duration = map(float, line.split()[3:5])
        reference.append(SpeechTurn(start, start + duration))
    regions = merge_turns(sorted(reference, key=lambda t: t.start), 0.0)
    result = diarize(samples, regions, extractor.embed)
    assert 2 <= len(result.speakers) <= 3, result.speakers  # MEE009 and MEE012

    def holder(start: float, end: float) -> str:
        """The found speaker of most of [start, end], which must hold >= 70% of it."""
        spoken: dict[str, float] = {}
        for seg in result.segments:
            overlap = max(0.0, min(end, seg.end) - max(start, seg.start))
            spoken[seg.speaker] = spoken.get(seg.speaker, 0.0) + overlap
        best = max(spoken, key=spoken.__getitem__)
        assert spoken[best] >= 0.7 * (end - start), spoken
        return best

    # MEE009 speaks alone from 1.44 s to 13.15 s, MEE012 alone from 13.31 s to 16.92 s.
    assert holder(1.44, 13.15) != holder(13.4, 16.92)


def test_pipeline_default_threshold_is_the_tuned_one() -> None:
    from biofuse.modalities.voice.diarize import DEFAULT_THRESHOLD

    from biofuse.config import Settings
    from biofuse.registry import SPECS

    # unset in the settings: each voice model's declared threshold is used
    assert Settings().diarize_threshold is None
    ge2e = SPECS["resemblyzer-ge2e"]
    assert ge2e.setting("diarize_threshold", Settings()) == DEFAULT_THRESHOLD
    assert ge2e.setting("diarize_threshold", Settings(diarize_threshold=0.5)) == 0.5
    for spec in SPECS.values():
        if spec.modality == "voice":
            assert 0 < spec.setting("diarize_threshold") < 2, spec.name


@pytest.mark.slow  # encodes a 19 s video and runs the voice path twice
def test_pipeline_makes_one_voice_probe_per_speaker_of_an_unseen_conversation(
    shared_data: Path, tmp_path: Path
) -> None:
    from biofuse.flows.actors import local_handle
    from biofuse.flows.pipeline import analyze_video

    from biofuse.config import load_settings
    from biofuse.sample_archive import FPS, SIZE, write_video

    audio, _ = two_reader_conversation(*two_readers(shared_data), lead_s=0.5)
    blank = np.full((SIZE[1], SIZE[0], 3), 40, np.uint8)  # nobody on screen
    video = tmp_path / "conversation.mp4"
    write_video(video, [blank] * int(len(audio) / SR * FPS), audio)

    probes = {}
    for diarize_on in (True, False):
        settings = load_settings(home=str(tmp_path / "home"), diarize=diarize_on)
        voice = local_handle("voice", settings)
        evidence = analyze_video(video, "c0ffee" * 8, settings, {"voice": voice})
        assert evidence.tracks == [] and all(s.track_key is None for s in evidence.segments)
        probes[diarize_on] = probe_evidence({"voice": evidence.voice}, evidence.segments, [])
    # Diarized: reader A's two turns make one probe, B another; not one probe per turn.
    assert sorted(probes[True]) == ["c0ffeec0ffeec0ff:spk00", "c0ffeec0ffeec0ff:spk01"]
    assert len(probes[False]) >= 3
    a_probe = probes[True]["c0ffeec0ffeec0ff:spk00"]["voice"][0]
    b_probe = probes[True]["c0ffeec0ffeec0ff:spk01"]["voice"][0]
    assert float(a_probe @ b_probe) < 0.8
