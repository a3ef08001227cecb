"""Ray cluster mode: `ray start --head` on loopback, BIOFUSE_RAY_ADDRESS joins it, and a small
archive is processed with the model actors living in that cluster's workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")


def ray_env(**extra: str) -> dict[str, str]:
    """A loopback-only test cluster runs without a token (Ray 2.60's `ray start` default is
    token auth, which a real deployment keeps; see deploy/compose.yaml). Set explicitly for
    every process: a local `ray.init` earlier in this process exports RAY_AUTH_MODE=token."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(leader: subprocess.Popen) -> None:
    """SIGTERM the process group `leader` heads, then SIGKILL whatever is left."""
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(leader.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            leader.poll()  # reap the leader itself
            try:
                os.killpg(leader.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


@pytest.fixture
def ray_head() -> Iterator[tuple[str, int]]:
    """A one-node cluster in its own process group; torn down by signalling only that group.

    `ray stop` is not used: it stops every Ray process on the machine, including other
    people's. `--block` keeps `ray start` in the foreground as the group leader.
    """
    import ray

    ray.shutdown()  # a local Ray from an earlier test would hide the cluster
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Unix socket paths
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=ray_env(),
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited: {head.stderr.read().decode()[-2000:]}")
            check = subprocess.run(
                [str(RAY), "health-check", f"--address={address}"],
                capture_output=True,
                env=ray_env(),
            )
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(1)
        yield address, head.pid
    finally:
        ray.shutdown()
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


# The driver runs in its own process: a Ray driver that already ran a local Ray (earlier tests
# in this pytest process) keeps state that a second `ray.init` to another cluster trips on.
DRIVER = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
import ray
from biofuse.flows.actors import actor_name
from biofuse.flows.archive import run_process_archive
from biofuse.flows.context import Context

overrides = {{"home": {home!r}, "face_actors": 1}}
summary = run_process_archive({archive!r}, overrides=overrides)
ctx = Context.open(**overrides)
pids = {{}}
for kind in ("face", "voice"):
    info = ray.get(ray.get_actor(f"{{actor_name(kind, ctx.settings)}}-0").info.remote())
    # Ray workers lead their own process group; their parent, the raylet, does not
    stat = Path(f"/proc/{{info['pid']}}/stat").read_text()
    info["raylet_pgid"] = os.getpgid(int(stat.rsplit(")", 1)[1].split()[1]))
    pids[kind] = info
print(json.dumps({{
    "summary": summary,
    "gcs_address": ray.get_runtime_context().gcs_address,
    "ray_address": ctx.settings.ray_address,
    "actors": pids,
}}))
"""


def test_archive_is_processed_through_a_ray_cluster(
    ray_head: tuple[str, int], shared_data: Path, tmp_path: Path
) -> None:
    import json

    from biofuse.catalog import DONE, Catalog, Track, Video

    address, head_pgid = ray_head
    video = shared_data / "video" / "videoretalking_face_2.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is absent")
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(video, archive / video.name)
    home = tmp_path / "home"
    script = DRIVER.format(
        repo=str(Path(__file__).resolve().parents[1]), home=str(home), archive=str(archive)
    )
    driver = subprocess.run(
        [sys.executable, "-c", script],
        env=ray_env(BIOFUSE_RAY_ADDRESS=address),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    report = json.loads(driver.stdout.strip().splitlines()[-1])
    assert report["summary"] == {"videos": 1, "processed": 1, "failed": 0, "skipped": 0}

    # the driver joined the cluster (not a private local Ray) ...
    assert report["ray_address"] == address
    assert report["gcs_address"].endswith(f":{address.split(':')[1]}")
    # ... and the models ran in worker processes of that cluster
    for kind, info in report["actors"].items():
        assert info["items"] > 0
        assert info["raylet_pgid"] == head_pgid, f"the {kind} actor is not in the cluster"
    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    with catalog.session() as s:
        (row,) = s.query(Video).all()
        assert row.status == DONE and row.lease_owner is None
        assert s.query(Track).filter(Track.video_id == row.id).count() == 1
