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
