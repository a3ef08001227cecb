"""Decoding with PyAV: frames at a per-modality rate and 16 kHz mono audio.

Everything downstream works on numpy arrays; this is the only module that
knows about containers and codecs. Undecodable input raises MediaError with a
reason a person can act on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from biofuse.errors import MediaError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    size_bytes: int
    duration_s: float
    fps: float | None
    width: int | None
    height: int | None
    has_video: bool
    has_audio: bool


@dataclass(frozen=True)
class Frame:
    index: int  # index among decoded frames of the video stream
    time_s: float
    image: np.ndarray  # (H, W, 3) uint8 RGB


class DecodeInterrupted(MediaError):
    """Decoding stopped part-way (truncated or damaged file) after `decoded_s` seconds."""

    def __init__(self, message: str, decoded_s: float) -> None:
        super().__init__(message)
        self.decoded_s = decoded_s


def scan_videos(root: Path) -> tuple[list[Path], dict[str, str]]:
    """The files under `root` named like videos, in a stable order, and the entries so named
    that are no file to decode (a broken symbolic link, a FIFO, a folder), each with why.

    Files with other suffixes are not videos and are not reported. A FIFO is never opened.
    """
    root = Path(root)
    if root.is_file():
        return [root], {}
    if not root.is_dir():
        raise MediaError(f"{root}: no such file or folder")
    videos: list[Path] = []
    skipped: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        if p.is_file():
            videos.append(p)
        elif p.is_symlink() and not p.exists():
            skipped[str(p)] = "a broken symbolic link"
        elif p.is_dir():
            skipped[str(p)] = "a folder, not a video file"
        else:
            skipped[str(p)] = "not a regular file (a FIFO, socket or device)"
    return videos, skipped


def content_hash(path: Path, chunk: int = 4 << 20) -> str:
    """sha256 of the bytes: a video's identity in the catalog, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _why(exc: BaseException) -> str:
    """A decoder error in words: FFmpeg's message without its errno number or the C call."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc)


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable media file ({_why(exc)})") from exc


def probe(path: Path) -> MediaInfo:
    """Container facts without decoding the streams."""
    path = Path(path)
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = 0.0
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif video is not None and video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        fps = float(video.average_rate) if video is not None and video.average_rate else None
        return MediaInfo(
            path=path,
            size_bytes=path.stat().st_size,
            duration_s=float(duration),
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            has_video=video is not None,
            has_audio=audio is not None,
        )


def iter_frames(path: Path, fps: float | None = None) -> Iterator[Frame]:
    """Decode the first video stream in order, keeping about `fps` frames per second.

    Every frame is decoded (inter-frame codecs need it) but only the kept ones are
    converted to RGB. A damaged file that fails part-way raises DecodeInterrupted
    after the frames it could decode.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        native = float(stream.average_rate) if stream.average_rate else 25.0
        step = 1.0 / fps if fps else 0.0
        next_time = 0.0
        index = -1
        last_time = 0.0
        try:
            for frame in container.decode(stream):
                index += 1
                time_s = float(frame.time) if frame.time is not None else index / native
                last_time = time_s
                if step and time_s + 1e-6 < next_time:
                    continue
                next_time = (next_time if step else time_s) + step
                if step and next_time <= time_s:  # a jump in timestamps: resynchronise
                    next_time = time_s + step
                yield Frame(index, time_s, frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as exc:
            if index < 0:
                raise MediaError(f"{path}: no decodable video frames ({_why(exc)})") from exc
            raise DecodeInterrupted(
                f"{path}: decoding stopped at {last_time:.1f} s ({_why(exc)})", last_time
            ) from exc
        if index < 0:
            raise MediaError(f"{path}: the video stream has no frames")


def read_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream, downmixed to mono float32 at `sample_rate` Hz."""
    chunks = list(iter_audio(path, sample_rate))
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def iter_audio(path: Path, sample_rate: int = 16000) -> Iterator[np.ndarray]:
    """`read_audio`'s samples as they are decoded, a block at a time (their concatenation is
    `read_audio`'s array): a long recording never has to be in memory whole."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        decoded = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    decoded += len(block)
                    yield block
            for out in resampler.resample(None):
                block = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                decoded += len(block)
                yield block
        except av.FFmpegError as exc:
            if not decoded:
                raise MediaError(f"{path}: no decodable audio ({_why(exc)})") from exc
            raise DecodeInterrupted(
                f"{path}: audio decoding stopped at {decoded / sample_rate:.1f} s ({_why(exc)})",
                decoded / sample_rate,
            ) from exc


def read_image(path: Path) -> np.ndarray:
    """A still image as (H, W, 3) uint8 RGB (enrollment photos)."""
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: not an image")
        try:
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:  # a text file named .jpg opens, then fails to decode
            raise MediaError(f"{path}: not a decodable image ({_why(exc)})") from exc
    raise MediaError(f"{path}: the image has no decodable frame")
