"""Decoding real videos, and clear errors for everything that is not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_audio_only_mp4, write_bad_corpus

from biofuse import media
from biofuse.errors import MediaError

# duration (s), fps, width, height, has_audio: from ../shared/data/video/README.md (ffprobe)
REAL = {
    "opencv_vtest_pedestrians.avi": (79.5, 10.0, 768, 576, False),
    "face_recognition_short_hamilton_clip.mp4": (10.0, 29.97, 640, 360, True),
    "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4": (8.06, 25.0, 512, 512, True),
    "videoretalking_face_2.mp4": (5.04, 25.0, 844, 844, True),
    "videoretalking_face_5.mp4": (4.90, 25.0, 524, 524, True),
}


@pytest.fixture(scope="module")
def videos(shared_data: Path) -> Path:
    folder = shared_data / "video"
    if not folder.is_dir():
        pytest.skip("../shared/data/video is absent")
    return folder


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_video_probe_matches_ffprobe(videos: Path, name: str) -> None:
    duration, fps, width, height, has_audio = REAL[name]
    info = media.probe(videos / name)
    assert info.duration_s == pytest.approx(duration, abs=0.1)
    assert info.fps == pytest.approx(fps, rel=0.01)
    assert (info.width, info.height, info.has_audio) == (width, height, has_audio)


def test_frames_come_at_the_requested_rate_in_order(videos: Path) -> None:
    frames = list(media.iter_frames(videos / "videoretalking_face_2.mp4", fps=5.0))
    times = np.array([f.time_s for f in frames])
    assert 24 <= len(frames) <= 26  # 5.04 s at 5 fps
    assert np.all(np.diff(times) > 0.15) and np.all(np.diff(times) < 0.25)
    assert frames[0].image.shape == (844, 844, 3) and frames[0].image.dtype == np.uint8


def test_msmpeg4_avi_decodes(videos: Path) -> None:
    frames = []
    for frame in media.iter_frames(videos / "opencv_vtest_pedestrians.avi", fps=2.0):
        frames.append(frame)
        if len(frames) == 10:
            break
    assert frames[-1].time_s == pytest.approx(4.5, abs=0.11)
    assert frames[0].image.shape == (576, 768, 3)


def test_audio_is_16k_mono_of_the_right_length(videos: Path) -> None:
    samples = media.read_audio(videos / "face_recognition_short_hamilton_clip.mp4")
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / 16000 == pytest.approx(10.0, abs=0.1)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(samples**2)))
    assert -35 < rms_dbfs < -15  # README: mean level -30..-22 dBFS: real sound, not silence


def test_video_without_audio_says_so(videos: Path) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        media.read_audio(videos / "opencv_vtest_pedestrians.avi")


def test_bad_inputs_raise_media_errors_with_reasons(tmp_path: Path, videos: Path) -> None:
    write_bad_corpus(tmp_path, videos / "videoretalking_face_5.mp4")
    with pytest.raises(MediaError, match="empty file"):
        media.probe(tmp_path / "zero_bytes.mp4")
    with pytest.raises(MediaError, match="not a readable media file"):
        media.probe(tmp_path / "notes_renamed.mp4")
    with pytest.raises(MediaError, match="not a readable media file"):
        list(media.iter_frames(tmp_path / "truncated.mp4", 5))
    with pytest.raises(MediaError, match="no video stream"):
        list(media.iter_frames(tmp_path / "audio_only.mp4", 5))
    with pytest.raises(MediaError, match="no such file"):
        media.probe(tmp_path / "absent.mp4")
    assert not media.probe(tmp_path / "video_only.mp4").has_audio


def test_audio_only_file_reads_as_audio(tmp_path: Path) -> None:
    write_audio_only_mp4(tmp_path / "a.mp4", seconds=2.0)
    samples = media.read_audio(tmp_path / "a.mp4")
    assert len(samples) / 16000 == pytest.approx(2.0, abs=0.07)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16000 / len(samples) == pytest.approx(220, abs=2)


def test_read_image_gives_rgb(shared_data: Path) -> None:
    image = media.read_image(shared_data / "lfw-dev/images/Tony_Blair/Tony_Blair_0001.jpg")
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8


def test_content_hash_ignores_the_name(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"same bytes")
    (tmp_path / "b.avi").write_bytes(b"same bytes")
    assert media.content_hash(tmp_path / "a.mp4") == media.content_hash(tmp_path / "b.avi")


def test_decoder_errors_read_as_words_without_errno(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("a text file, renamed\n" * 50)
    (tmp_path / "notes.jpg").write_text("a text file, renamed\n" * 50)
    for read in (media.probe, media.read_image):
        path = tmp_path / ("notes.mp4" if read is media.probe else "notes.jpg")
        with pytest.raises(MediaError) as caught:
            read(path)
        assert "Errno" not in str(caught.value) and "Invalid data found" in str(caught.value)
        assert str(caught.value).count(str(path)) == 1


def test_scan_reports_what_is_named_like_a_video_but_is_no_file(tmp_path: Path) -> None:
    import os

    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "absent.mp4")
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "folder.avi").mkdir()
    (tmp_path / "readme.txt").write_text("not named like a video: not reported")
    videos, skipped = media.scan_videos(tmp_path)
    assert videos == [tmp_path / "a.mp4"]
    assert skipped == {
        str(tmp_path / "folder.avi"): "a folder, not a video file",
        str(tmp_path / "gone.mp4"): "a broken symbolic link",
        str(tmp_path / "pipe.mp4"): "not a regular file (a FIFO, socket or device)",
    }
