"""`biofuse gallery forget NAME`: one identity erased from everything under the home.

Real parts: the dlib face model in this process, the Zarr store, the SQLite catalog, a
gallery version built by the rebuild, and thumbnail files where the analyst page caches them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.context import Context
from biofuse.flows.forget import forget_identity
from biofuse.flows.gallery import enroll_media
from biofuse.flows.rebuild import current_gallery, rebuild
from sqlalchemy import select
from typer.testing import CliRunner

from biofuse.catalog import Enrollment, GalleryVersion, Identity, Result
from biofuse.cli import app
from biofuse.serve.thumbnails import cached_paths


def _photos(shared: Path, name: str, n: int) -> list[Path]:
    return sorted((shared / "lfw-dev" / "images" / name).glob("*.jpg"))[:n]


def _home_files_naming(home: Path, text: str) -> list[Path]:
    needle = text.encode()
    return [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def home(tmp_path: Path, shared_data: Path) -> Path:
    """Blair and Chavez enrolled, a gallery version built, an identify result and thumbnails."""
    from biofuse.flows.actors import local_handle

    from biofuse.config import load_settings

    if not (shared_data / "lfw-dev" / "images").is_dir():
        pytest.skip("../shared/data/lfw-dev is absent")
    home = tmp_path / "home"
    ctx = Context.open(home=str(home), modalities=["face"])
    ctx.handles["face"] = local_handle("face", load_settings(modalities=["face"]))
    for name in ("Tony_Blair", "Hugo_Chavez"):
        for photo in _photos(shared_data, name, 3):
            enroll_media(ctx, name, photo)
    assert rebuild(ctx)["version"] == 1
    video = ctx.catalog.register_video("f" * 64, str(tmp_path / "cam.mp4"), 1)
    run = ctx.catalog.start_run("identify", {})
    with ctx.catalog.session() as s:
        ids = {i.name: i.id for i in s.scalars(select(Identity))}
        for rank, name in enumerate(["Tony_Blair", "Hugo_Chavez"], start=1):
            s.add(
                Result(
                    run_id=run,
                    probe_key=f"{'f' * 12}:t0001",
                    video_id=video.id,
                    rank=rank,
                    identity_id=ids[name],
                    fused_llr=3.0 - rank,
                    decision="match" if rank == 1 else "unknown",
                )
            )
    for file in cached_paths(home / "thumbnails", f"{'f' * 12}:t0001", Path(video.path)):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"\xff\xd8 a cached face of Tony_Blair")
    ctx.catalog.engine.dispose()
    return home


def test_forget_erases_one_identity_everywhere_and_keeps_the_others(home: Path) -> None:
    ctx = Context.open(home=str(home), modalities=["face"])
    blair = ctx.catalog.identity("Tony_Blair")
    assert blair is not None and _home_files_naming(home, "Tony_Blair")
    (face_group,) = [(m, i) for m, i, _ in ctx.store.groups() if m == "face"]
    before = ctx.store.read(*face_group)
    chavez_keys = [k for k in before.keys if not k.startswith(f"enr:{blair.id}:")]
    blair_vectors = before.vectors[[k.startswith(f"enr:{blair.id}:") for k in before.keys]]

    report = forget_identity(ctx, "Tony_Blair", prefect=False)

    assert report["enrollments"] == 3 and report["store_rows"] == 3
    assert report["results"] == 1 and report["gallery_versions"] == 1
    assert report["thumbnails"] == 2
    # the catalog
    with ctx.catalog.session() as s:
        assert list(s.scalars(select(Identity.name))) == ["Hugo_Chavez"]
        assert {e.identity_id for e in s.scalars(select(Enrollment))} != {blair.id}
        assert len(list(s.scalars(select(Result)))) == 1
        (version,) = s.scalars(select(GalleryVersion))
        assert version.manifest["identities"] == ["Hugo_Chavez"]
    # the store: his rows gone, hers intact, and none of his vectors left in the arrays
    after = ctx.store.read(*face_group)
    assert sorted(after.keys) == sorted(chavez_keys)
    for key in chavez_keys:
        assert np.array_equal(
            after.vectors[list(after.keys).index(key)],
            before.vectors[list(before.keys).index(key)],
        )
    import zarr

    raw = zarr.open_group(f"{ctx.store.root}/{face_group[0]}/{face_group[1]}", mode="r")
    everything = np.asarray(raw["vectors"][:])
    for vector in blair_vectors:
        assert not np.isclose(everything, vector).all(axis=1).any()
    # the gallery version: re-read with its checksums
    snapshot = current_gallery(ctx.catalog)
    assert snapshot is not None
    assert snapshot.templates(*face_group)[0] == ["Hugo_Chavez"]
    # nothing under the home names him any more (catalog pages, manifests, thumbnails)
    assert _home_files_naming(home, "Tony_Blair") == []
    # a second forget says there is no such identity
    runner = CliRunner()
    result = runner.invoke(app, ["--home", str(home), "gallery", "forget", "Tony_Blair", "--yes"])
    assert result.exit_code == 2 and "no enrolled identity is named 'Tony_Blair'" in result.output


def test_forget_needs_yes(home: Path) -> None:
    result = CliRunner().invoke(app, ["--home", str(home), "gallery", "forget", "Tony_Blair"])
    assert result.exit_code == 2 and "--yes" in result.output
    ctx = Context.open(home=str(home))
    assert ctx.catalog.identity("Tony_Blair") is not None


@pytest.mark.slow
def test_prefect_keeps_its_records_under_the_biofuse_home_and_forget_clears_them(
    tmp_path: Path, shared_data: Path
) -> None:
    """`python -m biofuse` as an operator runs it: no ~/.prefect, duplicates counted once."""
    import os
    import shutil
    import subprocess
    import sys

    user = tmp_path / "user"  # the operator's ~
    user.mkdir()
    home = tmp_path / "biofuse-home"
    archive = tmp_path / "archive"
    archive.mkdir()
    clip = shared_data / "video" / "videoretalking_face_3.mp4"
    shutil.copy(clip, archive / "a.mp4")
    shutil.copy(clip, archive / "b.mp4")  # the same bytes twice: one video
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BIOFUSE_"))}
    env |= {"HOME": str(user), "BIOFUSE_MODALITIES": "face", "BIOFUSE_FACE_ACTORS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def biofuse(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "biofuse", "--home", str(home), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    photo = _photos(shared_data, "Tony_Blair", 1)[0]  # first, into a home not yet made
    assert "Tony_Blair: 1 files enrolled" in biofuse("enroll", "Tony_Blair", str(photo))
    out = biofuse("process", str(archive))
    assert "1/1" in out and "1/2" not in out  # was: the bar ended at 1/2
    assert "1 of the 2 files repeat another file's content" in out
    assert "usage stats" not in out.lower()
    assert (home / "prefect" / "prefect.db").is_file()
    assert not (user / ".prefect").exists()  # was: names and paths in ~/.prefect
    assert _home_files_naming(home / "prefect", "Tony_Blair")  # the enroll run's parameters
    out = biofuse("gallery", "forget", "Tony_Blair", "--yes")
    assert "1 Prefect enroll runs" in out
    assert _home_files_naming(home, "Tony_Blair") == []  # Prefect's database vacuumed too
    assert _home_files_naming(user, "Tony_Blair") == []
