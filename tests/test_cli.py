"""The `biofuse` command as an operator meets it: clear messages, right exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from biofuse.cli import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the --home option sets BIOFUSE_HOME; monkeypatch puts the old value back afterwards
    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_models_list_shows_what_is_installed(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "models", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "dlib-resnet" in result.output and "installed" in result.output
    assert "adaface-ir101" in result.output and "missing" in result.output


def test_models_add_with_a_missing_file_fails_clearly(home: Path) -> None:
    result = runner.invoke(
        app, ["--home", str(home), "models", "add", "adaface-ir101", "/nope.ckpt"]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_models_verify_packaged_defaults(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "models", "verify"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") >= 2


def test_status_of_a_new_home_is_empty_not_an_error(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "status"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "identities 0" in result.output


def test_enroll_refuses_missing_files_before_doing_anything(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "enroll", "Someone", "/no/such.jpg"])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_identify_refuses_an_unknown_track_key(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "identify", "no-such-video:t0001"])
    assert result.exit_code == 2
    assert "neither a file nor a known track key: no-such-video:t0001" in result.output


def _failed_video(home: Path, path: str, error: str) -> None:
    from biofuse.catalog import FAILED, Catalog

    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    video = catalog.register_video(f"hash-{path}", path, 1)
    catalog.update_video(video.id, status=FAILED, error=error)


def test_status_shows_paths_and_errors_as_text_not_markup(home: Path) -> None:
    home.mkdir(parents=True)
    _failed_video(home, "foo[/x]/bad.mp4", "foo[/x]/bad.mp4: not a readable media file")
    _failed_video(home, "cam[bold red]EVIL.mp4", "[red]boom[/red]")
    result = runner.invoke(app, ["--home", str(home), "status"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "foo[/x]/bad.mp4" in result.output  # was: MarkupError, a traceback
    assert "cam[bold red]EVIL.mp4" in result.output  # was: shown as camEVIL.mp4
    assert "[red]boom[/red]" in result.output


def test_error_messages_are_not_read_as_markup(home: Path, tmp_path: Path) -> None:
    photo = tmp_path / "x[/]" / "missing[bold].jpg"
    result = runner.invoke(app, ["--home", str(home), "enroll", "Eve [/]", str(photo)])
    assert result.exit_code == 2, result.output
    assert "missing[bold].jpg" in result.output


@pytest.fixture
def bad_inputs(tmp_path: Path) -> list[Path]:
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture, a text file named .jpg\n")
    folder = tmp_path / "holiday.mp4"
    folder.mkdir()
    return [text, folder]


def _identities(home: Path) -> list[str]:
    from sqlalchemy import select

    from biofuse.catalog import Catalog, Identity

    if not (home / "catalog.sqlite").exists():
        return []
    with Catalog(f"sqlite:///{home / 'catalog.sqlite'}").session() as s:
        return list(s.scalars(select(Identity.name)))


def test_enroll_with_no_usable_file_enrolls_nothing_and_fails(
    home: Path, bad_inputs: list[Path]
) -> None:
    args = ["--home", str(home), "enroll", "Eve", *map(str, bad_inputs)]
    result = runner.invoke(app, args, terminal_width=250)
    assert result.exit_code == 1, result.output  # was: a traceback (text .jpg, or a folder)
    assert "notes.jpg: not a decodable image (Invalid data found" in result.output
    assert "holiday.mp4: a folder" in result.output
    assert "nothing enrolled" in result.output and "Errno" not in result.output
    assert result.output.count("notes.jpg") == 1  # was: "skipped X: X: ..."
    assert _identities(home) == []


def test_enroll_strict_refuses_the_whole_call_before_enrolling(
    home: Path, bad_inputs: list[Path], shared_data: Path
) -> None:
    photo = sorted((shared_data / "lfw-dev/images/Tony_Blair").glob("*.jpg"))[0]
    args = ["--home", str(home), "enroll", "--strict", "Tony", str(photo), *map(str, bad_inputs)]
    result = runner.invoke(app, args, terminal_width=250)
    assert result.exit_code == 2, result.output
    assert "2 of 3 files cannot be enrolled (--strict)" in result.output
    assert _identities(home) == []


@pytest.mark.slow
def test_enroll_skips_bad_files_and_prints_a_markup_name_as_text(
    home: Path, bad_inputs: list[Path], shared_data: Path
) -> None:
    import ray

    photo = sorted((shared_data / "lfw-dev/images/Tony_Blair").glob("*.jpg"))[0]
    args = ["--home", str(home), "enroll", "Eve [/]", *map(str, bad_inputs), str(photo)]
    try:
        result = runner.invoke(app, args, terminal_width=250)
    finally:
        ray.shutdown()
    # was: `Eve [/]` committed, then MarkupError; the bad files crashed with a traceback
    assert result.exit_code == 0, result.output
    assert "Eve [/]: 1 files enrolled, 1 new store rows" in result.output
    assert "skipped" in result.output and "holiday.mp4: a folder" in result.output
    assert "files" in result.output and "1/1" in result.output  # the progress bar
    assert _identities(home) == ["Eve [/]"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("face_fps = \n", "cannot read config file"),
        ("face_fsp = 3\n", "unknown setting 'face_fsp'"),
        ('face_fps = "fast"\n', "face_fps (BIOFUSE_FACE_FPS): Input should be a valid number"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["models", "list"]])
def test_config_errors_are_one_line_not_a_traceback(
    home: Path,
    tmp_path: Path,
    toml: str,
    message: str,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "biofuse.toml"
    config.write_text(toml)
    monkeypatch.setenv("BIOFUSE_CONFIG", str(config))  # --config sets it: put it back afterwards
    result = runner.invoke(app, ["--home", str(home), "--config", str(config), *command])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.startswith("error:") and result.output.count("\n") == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_model_name_typo_is_refused_before_ray_starts(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    (tmp_path / "archive").mkdir()
    monkeypatch.setenv("BIOFUSE_VOICE_MODEL", "resemblyzer-ge2f")
    result = runner.invoke(app, ["--home", str(home), "process", str(tmp_path / "archive")])
    assert result.exit_code == 2, result.output
    assert "voice_model 'resemblyzer-ge2f' is not a voice model" in result.output
    assert not ray.is_initialized()


def test_process_of_an_empty_folder_answers_at_once_and_names_what_it_skipped(
    home: Path, tmp_path: Path
) -> None:
    import os
    import time

    import ray

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "gone.mp4").symlink_to(tmp_path / "absent.mp4")
    os.mkfifo(archive / "pipe.mp4")
    (archive / "folder.mkv").mkdir()
    started = time.perf_counter()
    result = runner.invoke(app, ["--home", str(home), "process", str(archive)], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 10  # was: 32 s, Ray and Prefect started first
    assert "processed 0 of 0 videos" in result.output and not ray.is_initialized()
    assert "gone.mp4: a broken symbolic link" in result.output  # was: skipped silently
    assert "pipe.mp4: not a regular file" in result.output
    assert "folder.mkv: a folder" in result.output


def test_calibrate_with_an_unknown_method_lists_the_methods(home: Path, tmp_path: Path) -> None:
    scores = tmp_path / "s.csv"
    scores.write_text("probe,identity,modality,score,label\n")
    result = runner.invoke(
        app, ["--home", str(home), "calibrate", str(scores), "--method", "nosuch"]
    )
    assert result.exit_code == 2, result.output
    assert "unknown fusion method 'nosuch': use one of sum, mean, max, weighted" in result.output
    assert "learned fusion" not in result.output


def test_report_of_a_binary_file_names_the_file(home: Path, tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe\xfa" * 100)
    result = runner.invoke(app, ["--home", str(home), "report", str(video)], terminal_width=250)
    assert result.exit_code == 2, result.output
    assert f"{video}: not a score file (binary data, not UTF-8 text)" in result.output


def test_python_dash_m_biofuse_is_the_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "biofuse", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "enroll" in done.stdout and "process" in done.stdout


def test_commands_turn_ray_and_prefect_telemetry_off(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in ("RAY_USAGE_STATS_ENABLED", "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    assert runner.invoke(app, ["--home", str(home), "status"]).exit_code == 0
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY"] == "false"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_prefect_home_defaults_to_the_biofuse_home(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("PREFECT_HOME")  # conftest's; put back afterwards
    assert runner.invoke(app, ["--home", str(home), "status"]).exit_code == 0
    assert os.environ["PREFECT_HOME"] == str(home / "prefect")  # was: ~/.prefect
    assert (home / "prefect").is_dir()  # Prefect itself makes only the last folder
    assert os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "false"
    monkeypatch.setenv("PREFECT_HOME", str(home / "elsewhere"))  # the operator's choice stands
    assert runner.invoke(app, ["--home", str(home), "status"]).exit_code == 0
    assert os.environ["PREFECT_HOME"] == str(home / "elsewhere")


def test_process_of_an_archive_already_processed_answers_from_the_catalog(
    home: Path, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing new to do: answered in seconds, before Ray and Prefect start (was ~35 s)."""
    import shutil
    import time

    import ray

    from biofuse import media
    from biofuse.catalog import DONE, FAILED, Catalog, Run
    from biofuse.cli import _already_done
    from biofuse.config import load_settings

    source = shared_data / "video" / "face_recognition_short_hamilton_clip.mp4"
    if not source.is_file():
        pytest.skip("../shared/data/video is absent")
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(source, archive / "a.mp4")
    shutil.copy(source, archive / "copy-of-a.mp4")  # the same bytes: one video
    other = tmp_path / "new.mp4"
    other.write_bytes(source.read_bytes()[:-7])  # other bytes: a video never processed
    catalog = Catalog(load_settings(home=str(home)).catalog_url)
    video = catalog.register_video(media.content_hash(source), str(archive / "a.mp4"), 1)
    catalog.update_video(video.id, status=DONE)

    started = time.perf_counter()
    result = runner.invoke(app, ["--home", str(home), "process", str(archive)], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 5
    assert "already done 1 of 1 videos" in result.output, result.output
    assert "1 of the 2 files repeat another file's content" in result.output
    assert not ray.is_initialized()
    with catalog.session() as s:  # no process run was started
        assert s.query(Run).count() == 0

    # anything not done sends the archive to the flow: a new file, or a failed video
    assert _already_done([archive / "a.mp4", other]) is None
    assert _already_done([archive / "a.mp4"]) == 1
    catalog.update_video(video.id, status=FAILED)
    assert _already_done([archive / "a.mp4"]) is None
    catalog.engine.dispose()
    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path / "new-home"))  # no catalog yet: the flow
    assert _already_done([archive / "a.mp4"]) is None


def test_demo_truth_is_per_track_and_bystanders_are_expected_unknown() -> None:
    """A sample video shows one person; another (smaller) face in the same photo is a bystander
    whom nobody enrolled: expected 'unknown', never counted against the video's person."""
    from biofuse.cli import BYSTANDER, _expected_decisions

    decisions = [
        {"video_id": 1, "probe": "a:t0000"},
        {"video_id": 1, "probe": "a:t0001"},
        {"video_id": 2, "probe": "b:t0000"},
        {"video_id": 2, "probe": "b:spk00"},
    ]
    truth = {"cam01.mp4": "Tony_Blair", "cam02.mp4": None}
    names = {1: "cam01.mp4", 2: "cam02.mp4"}
    widths = {"a:t0000": 31.0, "a:t0001": 80.0, "b:t0000": 40.0}
    expected = _expected_decisions(decisions, truth, names, widths)
    assert expected == {
        "a:t0000": "unknown" + BYSTANDER,
        "a:t0001": "Tony_Blair",
        "b:t0000": "unknown",
        "b:spk00": "unknown",
    }


def test_explain_verify_refuses_what_is_not_a_record(tmp_path: Path) -> None:
    """A saved record is user input: garbage, a JSON list or a missing file is a clear refusal."""
    from typer.testing import CliRunner

    from biofuse.cli import app as cli

    garbage, listed = tmp_path / "garbage.json", tmp_path / "list.json"
    garbage.write_bytes(b"\xff\x00not json")
    listed.write_text('["sha256"]')
    runner = CliRunner()
    bad = runner.invoke(cli, ["explain", "--verify", str(garbage)])
    assert bad.exit_code == 2 and "cannot read the record" in bad.output
    assert runner.invoke(cli, ["explain", "--verify", str(listed)]).exit_code == 1
    gone = runner.invoke(cli, ["explain", "--verify", str(tmp_path / "nope.json")])
    assert gone.exit_code == 2 and "nope.json" in gone.output
