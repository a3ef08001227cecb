"""Build the built-in sample archive from the real evaluation data in ../shared/data.

Nothing is downloaded and no data is copied into the repository: the probe videos
are *generated* here, each a moving photo of a real LFW person (a different photo
from those enrolled) over a noisy background with the speech of a real
LibriSpeech/VCTK speaker (a different utterance from the one enrolled). Identity i
is the chimeric pairing (LFW person i, speaker i). Real talking-face clips from
../shared/data/video are linked in beside them. `manifest.json` records the truth.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

from biofuse.config import shared_data_dir
from biofuse.errors import BiofuseError

FPS = 10
SIZE = (640, 360)  # width, height: a small surveillance-like frame
SECONDS = 8.0
SAMPLE_RATE = 16000

# (LFW person, speaker) pairs: identity i is both. The last enrolled pairs are
# followed by one pair that is never enrolled (the open-set "unknown").
PAIRS = [
    ("Tony_Blair", "LS-1688"),
    ("Laura_Bush", "VCTK-p225"),
    ("Hugo_Chavez", "LS-2033"),
    ("Renee_Zellweger", "VCC2016-SF1"),
    ("Silvio_Berlusconi", "LS-3005"),  # not enrolled
]
ENROLLED = 4
REAL_CLIPS = {
    # probe file -> (identity or None, enrollment clip)
    "videoretalking_face_3.mp4": (
        "Alexandria_Ocasio-Cortez",
        "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
    ),
    "videoretalking_face_2.mp4": (None, None),  # Eric Swalwell, never enrolled
}


@dataclass
class ProbeSpec:
    file: str
    identity: str | None  # None: not in the gallery
    has_audio: bool


def _photos(lfw: Path, person: str) -> list[Path]:
    return sorted((lfw / "images" / person).glob("*.jpg"))


def _utterances(librispeech: Path, speaker: str) -> list[Path]:
    with open(librispeech / "utterances.tsv") as handle:
        rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["speaker"] == speaker]
    return [librispeech / r["path"] for r in sorted(rows, key=lambda r: -float(r["duration_s"]))]


def _background(rng: np.random.Generator) -> np.ndarray:
    w, h = SIZE
    gradient = np.linspace(60, 140, w, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(gradient, (h, w, 3)).copy()
    base[int(h * 0.7) :] *= 0.6  # a "floor"
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def subject_tile(i: int, n: int = int(SECONDS * FPS)) -> tuple[int, int, int]:
    """Where frame i of n shows the probe photo: its top-left corner x, y and its side (px).

    The ground truth of where the one person of a generated video is (LFW photos are
    centred on the face), e.g. for benchmarks/track_fragmentation.py.
    """
    w, h = SIZE
    a = i / max(1, n - 1)
    side = int(150 + 40 * a)
    return int(60 + a * (w - side - 120)), int((h - side) / 2 + 10 * np.sin(6 * a)), side


def _frames(photo: Path, rng: np.random.Generator) -> list[np.ndarray]:
    """The photo drifting across the frame and slowly growing, like a person walking closer."""
    face = Image.open(photo).convert("RGB")
    background = _background(rng)
    frames = []
    n = int(SECONDS * FPS)
    for i in range(n):
        x, y, side = subject_tile(i, n)
        tile = np.asarray(face.resize((side, side), Image.BILINEAR))
        frame = background.copy()
        frame[y : y + side, x : x + side] = tile
        noise = rng.normal(0, 4, frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
    return frames


def _speech(utterance: Path) -> np.ndarray:
    samples, rate = sf.read(utterance, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        raise BiofuseError(f"{utterance}: expected {SAMPLE_RATE} Hz, found {rate} Hz")
    n = int(SECONDS * SAMPLE_RATE)
    out = np.zeros(n, np.float32)
    out[: min(n, len(samples))] = samples[:n]
    return out


def write_video(path: Path, frames: list[np.ndarray], audio: np.ndarray | None) -> None:
    """H.264 video (and AAC audio) with PyAV's bundled FFmpeg."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            step = 1024
            for start in range(0, len(audio), step):
                chunk = np.ascontiguousarray(audio[None, start : start + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


def build_sample_archive(target: Path, shared_data: Path | None = None) -> dict:
    """Write the archive videos and `manifest.json` (enrollment files and truth) into target."""
    shared = Path(shared_data or shared_data_dir())
    lfw, speech, real = shared / "lfw-dev", shared / "voice-dev" / "librispeech", shared / "video"
    for needed in (lfw, speech):
        if not needed.is_dir():
            raise BiofuseError(
                f"the sample archive is generated from {needed}, which is absent; put the "
                "shared evaluation data beside the repository or set BIOFUSE_SHARED_DATA"
            )
    archive = Path(target) / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    enroll: dict[str, list[str]] = {}
    probes: list[ProbeSpec] = []
    for i, (person, speaker) in enumerate(PAIRS):
        photos, utterances = _photos(lfw, person), _utterances(speech, speaker)
        if i < ENROLLED:
            enroll[person] = [str(p) for p in photos[:3]] + [str(utterances[0])]
        name = f"cam{i + 1:02d}_{person.split('_')[-1].lower()}.mp4"
        write_video(archive / name, _frames(photos[-1], rng), _speech(utterances[1]))
        probes.append(ProbeSpec(name, person if i < ENROLLED else None, True))
    # A camera without a microphone: face evidence only.
    person, _speaker = PAIRS[1]
    write_video(archive / "cam09_nomic.mp4", _frames(_photos(lfw, person)[-2], rng), None)
    probes.append(ProbeSpec("cam09_nomic.mp4", person, False))
    # A recording cut off mid-write: the operator must see why it failed.
    whole = (archive / "cam01_blair.mp4").read_bytes()
    (archive / "cam10_damaged.mp4").write_bytes(whole[: len(whole) // 3])
    probes.append(ProbeSpec("cam10_damaged.mp4", None, True))
    if real.is_dir():
        for probe, (identity, enrollment) in REAL_CLIPS.items():
            link = archive / f"real_{probe}"
            if not link.exists():
                link.symlink_to((real / probe).resolve())
            probes.append(ProbeSpec(link.name, identity, True))
            if identity and enrollment:
                enroll[identity] = [str(real / enrollment)]
    manifest = {
        "how": "generated by biofuse.sample_archive from ../shared/data (LFW photos, "
        "LibriSpeech/VCTK/VCC speech, real talking-face clips)",
        "enroll": enroll,
        "probes": [p.__dict__ for p in probes],
        "pairs": PAIRS,
    }
    (Path(target) / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
