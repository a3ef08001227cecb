"""Chimeric multi-modal set: virtual identity i = LFW-dev person i + voice speaker i.

Builds the per-modality embeddings that `chimeric_fusion.py` scores, with our real extractors
(dlib ResNet on dlib chips for faces, Resemblyzer GE2E for voices), and caches them under
~/.cache/biofuse-bench (never in the repository):

- voice speakers: the 18 LibriSpeech/VCTK/VCC speakers of voice-dev/librispeech and every AMI
  speaker of voice-dev/ami-excerpts with at least `MIN_AMI_SPEECH_S` of speech that no other
  speaker overlaps (turns from the RTTMs), sorted by name;
- face people: LFW-dev people with >= 2 images, most images first (then by name), so that the
  virtual identities have as many probes as the face set allows;
- enrollment: the person's first image; the speaker's first `ENROL_S` seconds of speech;
- probes: every other image (at most `MAX_PROBES`), each paired with the next `probe_s`
  second crop of the speaker's remaining speech (crops are reused cyclically when a speaker
  has fewer crops than the person has images; the count is reported).

Gait (optional): CASIA-B test subject 075 + i through `gei-pca-lda-casiab` (see `gait_rows`).

Run directly to fill the cache: `.venv/bin/python benchmarks/chimeric_data.py --voice-s 1.5
--face-scale 0.12 0.3`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.config import shared_data_dir  # noqa: E402

SR = 16000
ENROL_S = 4.0
MIN_AMI_SPEECH_S = 6.0  # the 4 s enrollment plus at least one 2 s probe crop
MAX_PROBES = 12
CACHE = Path.home() / ".cache" / "biofuse-bench"


@dataclass(frozen=True)
class VoiceSpeaker:
    name: str
    corpus: str
    chunks: tuple[np.ndarray, ...]  # this speaker's speech, in order


def _ami_speakers(root: Path) -> list[VoiceSpeaker]:
    """Turns of each AMI speaker from the RTTMs, minus any time another speaker talks."""
    import soundfile

    by_speaker: dict[str, list[np.ndarray]] = {}
    for rttm in sorted(root.glob("*.rttm")):
        audio, rate = soundfile.read(rttm.with_suffix(".wav"), dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        assert rate == SR, f"{rttm}: {rate} Hz"
        turns = []
        for line in rttm.read_text().splitlines():
            f = line.split()
            if f and f[0] == "SPEAKER":
                turns.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
        for start, end, who in turns:
            mask = np.ones(round((end - start) * SR), bool)
            for s2, e2, other in turns:
                if other != who and s2 < end and e2 > start:
                    a = max(0, round((s2 - start) * SR))
                    b = min(len(mask), round((e2 - start) * SR))
                    mask[a:b] = False
            seg = audio[round(start * SR) : round(start * SR) + len(mask)][mask[: len(audio)]]
            if len(seg) >= SR // 2:
                by_speaker.setdefault(f"AMI-{who}", []).append(seg)
    return [
        VoiceSpeaker(name, "ami", tuple(chunks))
        for name, chunks in sorted(by_speaker.items())
        if sum(len(c) for c in chunks) / SR >= MIN_AMI_SPEECH_S
    ]


def _read_speakers(root: Path) -> list[VoiceSpeaker]:
    import soundfile

    ls = root / "librispeech"
    utts: dict[str, list[np.ndarray]] = {}
    with open(ls / "utterances.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            samples, rate = soundfile.read(ls / row["path"], dtype="float32")
            assert rate == SR
            utts.setdefault(row["speaker"], []).append(samples)
    speakers = [VoiceSpeaker(k, "librispeech", tuple(v)) for k, v in sorted(utts.items())]
    return sorted(speakers + _ami_speakers(root / "ami-excerpts"), key=lambda s: s.name)


def voice_crops(speaker: VoiceSpeaker, probe_s: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """(enrollment audio, probe crops): the first ENROL_S s of speech, then probe_s crops."""
    speech = np.concatenate(speaker.chunks)
    n_enrol, n_probe = round(ENROL_S * SR), round(probe_s * SR)
    rest = speech[n_enrol:]
    crops = [rest[a : a + n_probe] for a in range(0, len(rest) - n_probe + 1, n_probe)]
    return speech[:n_enrol], crops


def _face_people(lfw: Path) -> list[tuple[str, list[str]]]:
    people = []
    with open(lfw / "people.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["n_images"]) >= 2:
                images = sorted(p.name for p in (lfw / "images" / row["name"]).glob("*.jpg"))
                people.append((row["name"], images))
    people.sort(key=lambda p: (-len(p[1]), p[0]))
    return people


@dataclass
class ChimericSet:
    """Embeddings of the virtual identities: enrolment rows and probe rows per modality."""

    identities: list[str]  # "face person + voice speaker"
    face_enrol: np.ndarray  # (N, 128)
    face_enrol_q: np.ndarray
    voice_enrol: np.ndarray  # (N, 256)
    voice_enrol_q: np.ndarray
    probe_identity: np.ndarray  # (P,) index into identities
    face_probe: np.ndarray  # (P, 128)
    face_probe_q: np.ndarray
    voice_probe: np.ndarray  # (P, 256)
    voice_probe_q: np.ndarray
    info: dict
    gait_enrol: np.ndarray | None = None  # (N, d) templates, when gait is included
    gait_enrol_q: np.ndarray | None = None
    gait_probe: np.ndarray | None = None  # (P, d)
    gait_probe_q: np.ndarray | None = None


def degrade(rgb: np.ndarray, scale: float) -> np.ndarray:
    """A probe seen from further away: downsampled by `scale`, then back to the original size.

    The face keeps its pixel geometry (so the detector and the centre-box fallback still apply)
    but loses the detail a distant camera would not resolve.
    """
    import cv2

    if scale >= 1.0:
        return rgb
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _embed_faces(lfw: Path, rels: list[str], scales: list[float]) -> tuple[np.ndarray, np.ndarray]:
    from biofuse.modalities.face.dlib_face import (
        DlibFaceDetector,
        DlibFaceEmbedder,
        FaceChip,
        largest_face,
    )
    from lfw_dlib import CENTRE_BOX, decode_rgb

    from biofuse.registry import Registry

    with tempfile.TemporaryDirectory() as models_dir:
        model = Registry(Path(models_dir)).resolve("dlib-resnet")
    detector, embedder = DlibFaceDetector(model, upsample=1), DlibFaceEmbedder(model)
    detector.prepare()
    embedder.prepare()
    chips = []
    for rel, scale in zip(rels, scales, strict=True):
        rgb = degrade(decode_rgb(lfw / "images" / rel), scale)
        (dets,) = detector.detect([rgb])
        face = largest_face(dets) or detector.detect_in_box(rgb, CENTRE_BOX)
        chips.append(FaceChip(rel, face.chip, face.quality))
    emb = embedder.embed(chips)
    assert emb.keys == rels
    return emb.vectors, emb.quality


def _embed_voices(segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from biofuse.modalities.voice.resemblyzer_voice import AudioSegment, ResemblyzerExtractor

    from biofuse.registry import Registry

    with tempfile.TemporaryDirectory() as models_dir:
        model = Registry(Path(models_dir)).resolve("resemblyzer-ge2e")
    ex = ResemblyzerExtractor(model)
    ex.prepare("cpu")
    items = [AudioSegment(str(i), s) for i, s in enumerate(segments)]
    emb = ex.embed(items)
    assert len(emb) == len(items), "a voice crop was dropped (silent or too short)"
    return emb.vectors, emb.quality


GAIT_ENROL = [f"nm-0{i}" for i in (1, 2)]  # two normal walks, every view
GAIT_PROBE = ["nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]  # later walks, bags, coats


def gait_rows(
    root: Path, probes_per_identity: list[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """GEI+PCA+LDA (the GAIT engineer's `gei-pca-lda-casiab`) rows of CASIA-B test subjects.

    Identity i is test subject 075 + i (never seen in the model's training, 001-074). Its
    template is the quality-weighted mean of nm-01 and nm-02 at all 11 views; each probe is a
    different sequence drawn (seeded) from nm-05/06, bg-01/02 and cl-01/02 at any view.
    """
    from biofuse.fusion.templates import build_templates
    from biofuse.modalities.gait.casiab import TEST_SUBJECTS, read_subject, unpack
    from biofuse.modalities.gait.gei import GeiGaitExtractor
    from biofuse.modalities.items import SilhouetteSequence

    from biofuse.registry import Registry

    with tempfile.TemporaryDirectory() as models_dir:
        model = Registry(Path(models_dir)).resolve("gei-pca-lda-casiab")
    ex = GeiGaitExtractor(model)
    ex.prepare()
    rng = np.random.default_rng(seed)
    enrol, enrol_q, probes, probe_q, picked = [], [], [], [], []
    for subject, n_probes in zip(TEST_SUBJECTS, probes_per_identity, strict=False):
        seqs = read_subject(root, subject)
        gal = [
            SilhouetteSequence(f"{c}_{v}", unpack(x))
            for (c, v), x in seqs.items()
            if c in GAIT_ENROL
        ]
        emb = ex.embed(gal)
        _, template = build_templates(emb.vectors, emb.quality, ["x"] * len(emb))
        enrol.append(template[0])
        enrol_q.append(float(np.mean(emb.quality)))
        pool = sorted(k for k in seqs if k[0] in GAIT_PROBE)
        choice = [pool[j] for j in rng.choice(len(pool), size=n_probes, replace=False)]
        emb = ex.embed([SilhouetteSequence(f"{c}_{v}", unpack(seqs[(c, v)])) for c, v in choice])
        if len(emb) != n_probes:
            raise SystemExit(f"CASIA-B {subject}: a probe sequence had no foreground")
        probes.append(emb.vectors)
        probe_q.append(emb.quality)
        picked += [f"{subject}/{c}/{v}" for c, v in choice]
    info = {
        "subjects": f"{TEST_SUBJECTS[0]}-{TEST_SUBJECTS[len(enrol) - 1]}",
        "model_id": ex.model_id,
        "enrol": f"{'+'.join(GAIT_ENROL)} x 11 views, quality-weighted template",
        "probe_conditions": GAIT_PROBE,
        "probe_condition_counts": {c: sum(f"/{c}/" in p for p in picked) for c in GAIT_PROBE},
    }
    return (
        np.stack(enrol),
        np.array(enrol_q, np.float32),
        np.concatenate(probes),
        np.concatenate(probe_q),
        info,
    )


def _cached(name: str, build) -> dict[str, np.ndarray]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    arrays = build()
    np.savez(path, **arrays)
    return arrays


def load_chimeric(
    probe_s: float = 2.0,
    face_scale: tuple[float, float] = (1.0, 1.0),
    data: Path | None = None,
    gait: bool = False,
) -> ChimericSet:
    """The set; probe images are degraded by a scale drawn uniformly from `face_scale`."""
    root = data or shared_data_dir()
    lfw = root / "lfw-dev"
    speakers = _read_speakers(root / "voice-dev")
    people = _face_people(lfw)[: len(speakers)]
    speakers = speakers[: len(people)]
    enrol_audio, probe_audio, owners, face_rels, scales = [], [], [], [], []
    rng = np.random.default_rng(0)
    reused = 0
    for i, (spk, (person, images)) in enumerate(zip(speakers, people, strict=True)):
        enrol, crops = voice_crops(spk, probe_s)
        if not crops:
            raise SystemExit(f"{spk.name}: no {probe_s} s probe crop after enrollment")
        enrol_audio.append(enrol)
        face_rels.append(f"{person}/{images[0]}")
        scales.append(1.0)  # enrollment photos are good: the gallery is curated
        for j, img in enumerate(images[1 : 1 + MAX_PROBES]):
            face_rels.append(f"{person}/{img}")
            scales.append(float(rng.uniform(*face_scale)))
            probe_audio.append(crops[j % len(crops)])
            reused += j >= len(crops)
            owners.append(i)
    n = len(speakers)
    face_key = hashlib.sha256(
        "\n".join(f"{r} {s:.6f}" for r, s in zip(face_rels, scales, strict=True)).encode()
    ).hexdigest()[:12]
    faces = _cached(
        f"chimeric_face_{face_key}",
        lambda: dict(zip(("v", "q"), _embed_faces(lfw, face_rels, scales), strict=True)),
    )
    audio_key = hashlib.sha256(
        b"".join(a.tobytes() for a in enrol_audio + probe_audio)
    ).hexdigest()[:12]
    voices = _cached(
        f"chimeric_voice_{audio_key}",
        lambda: dict(zip(("v", "q"), _embed_voices(enrol_audio + probe_audio), strict=True)),
    )
    enrol_rows = np.array([face_rels.index(f"{p}/{imgs[0]}") for p, imgs in people])
    probe_rows = np.setdiff1d(np.arange(len(face_rels)), enrol_rows)
    gait_arrays: tuple = (None, None, None, None)
    gait_info = None
    if gait:
        counts = np.bincount(np.array(owners), minlength=n).tolist()
        *gait_arrays, gait_info = gait_rows(root / "casiab", counts)
    return ChimericSet(
        gait_enrol=gait_arrays[0],
        gait_enrol_q=gait_arrays[1],
        gait_probe=gait_arrays[2],
        gait_probe_q=gait_arrays[3],
        identities=[f"{p}+{s.name}" for (p, _), s in zip(people, speakers, strict=True)],
        face_enrol=faces["v"][enrol_rows],
        face_enrol_q=faces["q"][enrol_rows],
        voice_enrol=voices["v"][:n],
        voice_enrol_q=voices["q"][:n],
        probe_identity=np.array(owners),
        face_probe=faces["v"][probe_rows],
        face_probe_q=faces["q"][probe_rows],
        voice_probe=voices["v"][n:],
        voice_probe_q=voices["q"][n:],
        info={
            "identities": n,
            "probes": len(owners),
            "voice_speakers": {
                "librispeech_vctk_vcc": sum(s.corpus == "librispeech" for s in speakers),
                "ami": sum(s.corpus == "ami" for s in speakers),
            },
            "probe_voice_s": probe_s,
            "enrol_voice_s": ENROL_S,
            "probe_voice_crops_reused": int(reused),
            "max_probes_per_identity": MAX_PROBES,
            "probe_face_scale_range": list(face_scale),
            "gait": gait_info,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fill the chimeric embedding cache")
    parser.add_argument("--voice-s", type=float, default=2.0)
    parser.add_argument("--face-scale", type=float, nargs=2, default=(1.0, 1.0))
    parser.add_argument("--gait", action="store_true", help="add CASIA-B gait (GEI model)")
    args = parser.parse_args()
    s = load_chimeric(args.voice_s, tuple(args.face_scale), gait=args.gait)
    print(json.dumps(s.info, indent=2))
