"""The Zarr store: rows appear only when a unit is committed, and never twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from biofuse.modalities.base import Embeddings

from biofuse.errors import StoreError
from biofuse.store import EmbeddingStore

REPO = Path(__file__).resolve().parents[1]


def rows_for(unit: str, n: int, dim: int = 8, model_id: str = "toy-000000000000") -> Embeddings:
    """Deterministic rows: anyone can recompute what a unit's rows must be."""
    seed = int.from_bytes(unit.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return Embeddings(
        vectors, rng.random(n).astype(np.float32), [f"{unit}:{i}" for i in range(n)], model_id
    )


def test_commit_then_read_returns_the_rows(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    a, b = rows_for("video-a", 3), rows_for("video-b", 2)
    assert store.commit("face", "video-a", a) == 3
    assert store.commit("face", "video-b", b) == 2
    got = store.read("face", a.model_id)
    assert got.keys.tolist() == a.keys + b.keys
    np.testing.assert_array_equal(got.vectors, np.concatenate([a.vectors, b.vectors]))
    assert got.units.tolist() == ["video-a"] * 3 + ["video-b"] * 2
    only_b = store.read("face", a.model_id, ["video-b:1"])
    np.testing.assert_array_equal(only_b.vectors, b.vectors[1:2])
    assert store.groups() == [("face", a.model_id, 5)]


def test_recommitting_a_unit_writes_nothing(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    rows = rows_for("video-a", 4)
    assert store.commit("face", "video-a", rows) == 4
    assert store.commit("face", "video-a", rows) == 0
    # a second process (a new store object) sees the same commit
    assert EmbeddingStore(tmp_path / "store").commit("face", "video-a", rows) == 0
    assert len(store.read("face", rows.model_id)) == 4


def test_growing_past_one_chunk_keeps_every_row(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    units = [rows_for(f"v{i}", 1500) for i in range(4)]  # 6000 rows > one 4096-row chunk
    for i, rows in enumerate(units):
        store.commit("voice", f"v{i}", rows)
    got = store.read("voice", units[0].model_id)
    assert len(got) == 6000
    np.testing.assert_array_equal(got.vectors[4500:], units[3].vectors)


def test_absent_group_reads_empty_and_dim_mismatch_is_an_error(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    assert len(store.read("face", "nothing-000000000000")) == 0
    assert not store.has_unit("face", "nothing-000000000000", "x")
    store.commit("face", "a", rows_for("a", 2, dim=8))
    with pytest.raises(StoreError, match="8-d rows"):
        store.commit("face", "b", rows_for("b", 2, dim=16))


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_urls_store_and_read_like_a_local_path(tmp_path: Path, scheme: str) -> None:
    """store_url may be any fsspec URL (s3:// at scale); memory:// and file:// stand in here."""
    url = (
        f"memory://biofuse-{tmp_path.name}/store" if scheme == "memory" else f"file://{tmp_path}/s"
    )
    store = EmbeddingStore(url)
    a, b = rows_for("video-a", 3), rows_for("video-b", 2)
    assert store.commit("face", "video-a", a) == 3
    assert store.commit("face", "video-b", b) == 2
    again = EmbeddingStore(url)  # a second writer sees the first's commits
    assert again.commit("face", "video-a", a) == 0
    assert again.has_unit("face", a.model_id, "video-b")
    got = again.read("face", a.model_id)
    np.testing.assert_array_equal(got.vectors, np.concatenate([a.vectors, b.vectors]))
    assert again.groups() == [("face", a.model_id, 5)]
    if scheme == "file":  # the same bytes as the plain-path store
        assert len(EmbeddingStore(tmp_path / "s").read("face", a.model_id)) == 5


WRITER = """
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_store import rows_for
from biofuse.store import EmbeddingStore
store = EmbeddingStore({root!r})
print("ready", flush=True)
for i in range({units}):
    store.commit("face", f"unit-{{i:03d}}", rows_for(f"unit-{{i:03d}}", 700, dim=256))
print("finished", flush=True)
"""


def check_consistent(root: Path, units: int) -> int:
    """Every visible unit is whole and correct, no key twice; returns the units visible."""
    got = EmbeddingStore(root).read("face", "toy-000000000000")
    assert len(set(got.keys.tolist())) == len(got.keys), "duplicate rows are visible"
    seen = sorted(set(got.units.tolist()))
    for unit in seen:
        expected = rows_for(unit, 700, dim=256)
        mask = got.units == unit
        assert mask.sum() == 700, f"{unit} is partially visible"
        np.testing.assert_array_equal(got.vectors[mask], expected.vectors)
    assert seen == [f"unit-{i:03d}" for i in range(len(seen))]
    assert len(seen) <= units
    return len(seen)


def orphan_rows(root: Path) -> int:
    """Rows written past the commit point by a writer that died (invisible to readers)."""
    import zarr

    group = zarr.open_group(str(root / "face" / "toy-000000000000"), mode="r")
    committed = int(group.attrs["committed"])
    # vectors are written first and are most of each unit's bytes (fill value 0)
    tail = group["vectors"][committed : committed + 700]
    return int(np.any(tail != 0, axis=1).sum())


@pytest.mark.slow
def test_writer_killed_mid_unit_leaves_no_partial_rows_and_rerun_completes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    units = 300  # ~50 ms each: every kill lands mid-stream
    script = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root), units=units)
    rng = np.random.default_rng(0)
    visible = []
    for _trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 1.0)))  # units (~50 ms each) are streaming now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        visible.append(check_consistent(root, units))
    assert visible[0] < units, "the writer finished before the first kill: make units bigger"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert "finished" in done.stdout, done.stderr
    assert check_consistent(root, units) == units


DIES_AT_COMMIT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from zarr.core.attributes import Attributes
from test_store import rows_for
from biofuse.store import EmbeddingStore

real_setitem = Attributes.__setitem__

def die_before_fourth_commit(self, key, value):
    # the worst moment: every row of unit 3 written, the commit point not yet moved
    if key == "committed" and value > 3 * 700:
        os.kill(os.getpid(), signal.SIGKILL)
    real_setitem(self, key, value)

Attributes.__setitem__ = die_before_fourth_commit
store = EmbeddingStore({root!r})
for i in range(5):
    store.commit("face", f"unit-{{i:03d}}", rows_for(f"unit-{{i:03d}}", 700, dim=256))
"""


@pytest.mark.slow
def test_writer_killed_at_the_commit_point_leaves_its_rows_invisible(tmp_path: Path) -> None:
    root = tmp_path / "store"
    args = {"repo": str(REPO), "tests": str(REPO / "tests"), "root": str(root)}
    died = subprocess.run([sys.executable, "-c", DIES_AT_COMMIT.format(**args)], timeout=120)
    assert died.returncode == -signal.SIGKILL
    assert orphan_rows(root) == 700, "unit 3's rows are on disk past the commit point"
    assert check_consistent(root, 5) == 3  # ... and invisible
    rerun = WRITER.format(units=5, **args)
    subprocess.run([sys.executable, "-c", rerun], check=True, timeout=120)
    assert check_consistent(root, 5) == 5  # unit 3 rewritten in place, nothing twice
    assert len(EmbeddingStore(root).read("face", "toy-000000000000")) == 5 * 700
