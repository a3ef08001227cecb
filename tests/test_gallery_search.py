"""Gallery search through the version's FAISS index (issue 16, item 1): the rebuild writes and
verifies the index with the version, and identify's results through a shortlist equal the
brute-force ones. A real catalog, Zarr store, rebuild and identify flow body (the World of
tests/test_identify_evidence.py: random vectors where the pipeline would write them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.context import Context
from biofuse.flows.rebuild import current_gallery, read_version, rebuild
from biofuse.fusion.scores import metric_for_model, similarity
from biofuse.fusion.search import GalleryIndex, choose_kind, indexed

from biofuse.errors import GalleryError
from tests.test_identify_evidence import MODALITIES, World, _near

N_IDENTITIES = 40


def _world(tmp_path: Path, seed: int = 3) -> tuple[World, list[str]]:
    rng = np.random.default_rng(seed)
    world = World(tmp_path / "home")
    for i in range(N_IDENTITIES):
        have = [m for m in MODALITIES if rng.random() < 0.8] or ["face"]
        world.enroll(f"id{i:03d}", {m: rng.standard_normal(16) for m in have})
    probes = {}
    for n in range(8):  # six near an enrolled identity, two strangers
        like = world.gallery[f"id{5 * n:03d}"] if n < 6 else {}
        probes[f"v1:t{n:04d}"] = {
            m: _near(like[m], rng, 0.3) if m in like else rng.standard_normal(16)
            for m in MODALITIES
            if rng.random() < 0.85 or m == "face"
        }
    probes["v1:spk00"] = {
        "voice": _near(world.gallery["id010"].get("voice", np.ones(16)), rng, 0.3)
    }
    world.probes(probes)
    return world, list(probes)


def _rebuild(world: World, **settings: object) -> dict:
    world.overrides.update(settings)
    ctx = Context.open(**world.overrides)
    report = rebuild(ctx)
    ctx.catalog.engine.dispose()
    return report


def _same(a: dict[str, dict], b: dict[str, dict], exact_scores: bool = True) -> None:
    assert a.keys() == b.keys()
    for probe in a:
        x, y = a[probe], b[probe]
        for field in ("decision", "modalities", "gallery_size", "threshold_llr"):
            assert x[field] == y[field], (probe, field)
        assert [c["identity"] for c in x["candidates"]] == [c["identity"] for c in y["candidates"]]
        for cx, cy in zip(x["candidates"], y["candidates"]):
            assert cx["fused_llr"] == pytest.approx(cy["fused_llr"], abs=1e-5)
            assert cx["per_modality"].keys() == cy["per_modality"].keys()


def test_the_rebuild_writes_and_verifies_an_index_for_cosine_models_only(tmp_path: Path) -> None:
    world, _ = _world(tmp_path)
    report = _rebuild(world)
    folder = Path(report["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    for group in manifest["groups"]:
        metric = metric_for_model(group["model_id"])
        if not indexed(metric):  # gait: part-averaged Euclidean stays brute force
            assert "index" not in group
            continue
        index = group["index"]
        assert index["kind"] == "exact" and index["rows"] == len(group["identities"])
        assert (folder / index["file"]).is_file()
    assert any("index" in g for g in manifest["groups"])
    assert any("index" not in g for g in manifest["groups"])  # the gait model
    # no temporary file is left beside the version: it was written in the partial folder
    assert not list(folder.parent.glob(".partial-*"))

    # the index belongs to its version: a changed index file is refused like a changed .npz
    snapshot = current_gallery(world.ctx.catalog)
    assert snapshot is not None
    entry = next(g for g in manifest["groups"] if "index" in g)
    searcher = snapshot.search_index(entry["modality"], entry["model_id"])
    assert searcher is not None and searcher.kind == "exact"
    written = (folder / entry["index"]["file"]).read_bytes()
    (folder / entry["index"]["file"]).write_bytes(b"not an index")
    with pytest.raises(GalleryError, match="checksum"):
        read_version(folder, snapshot.number)
    (folder / entry["index"]["file"]).write_bytes(written)

    # a new index setting makes a new version, whose index switches with it
    again = _rebuild(world, gallery_index="hnsw")
    assert again["changed"] and again["version"] == report["version"] + 1
    manifest = json.loads((Path(again["path"]) / "manifest.json").read_text())
    assert {g["index"]["kind"] for g in manifest["groups"] if "index" in g} == {"hnsw"}


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_identify_through_the_index_gives_todays_results(tmp_path: Path, kind: str) -> None:
    world, _ = _world(tmp_path)
    _rebuild(world, gallery_index=kind)
    today = world.identify()  # a small gallery: every template scored, as before the index
    assert any(d["decision"] != "unknown" for d in today.values())
    # forced through the index: a shortlist as large as the gallery changes nothing
    world.overrides.update(gallery_shortlist_above=0, gallery_shortlist=N_IDENTITIES)
    _same(world.identify(), today)
    # a shortlist of 4 per probe and modality: same decisions, N and threshold (counted on
    # the whole gallery), and the same best candidate with the same fused LLR
    world.overrides.update(gallery_shortlist=4)
    short = world.identify()
    for probe, d in short.items():
        t = today[probe]
        for field in ("decision", "modalities", "gallery_size", "threshold_llr"):
            assert d[field] == t[field], (probe, field)
        assert d["candidates"][0]["identity"] == t["candidates"][0]["identity"]
        assert d["candidates"][0]["fused_llr"] == pytest.approx(t["candidates"][0]["fused_llr"])


def test_the_shortlist_is_ranked_by_exact_scores() -> None:
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((3000, 64)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    probes = templates[:20] + 0.05 * rng.standard_normal((20, 64)).astype(np.float32)
    exact = similarity(probes, templates, "cosine")
    best = np.argsort(-exact, axis=1)[:, :10]
    for kind in ("exact", "hnsw", "ivfpq"):
        found = GalleryIndex.build(templates, kind).shortlist(probes, 10)
        assert (found[:, 0] == np.arange(20)).all(), kind  # each probe's own template first
        scores = np.take_along_axis(exact, np.maximum(found, 0), axis=1)
        assert (np.diff(scores, axis=1) <= 1e-6).all(), kind  # in exact-score order
        if kind == "exact":
            np.testing.assert_array_equal(found, best)


def test_choose_kind() -> None:
    assert choose_kind(10, "auto", 100) == "exact"
    assert choose_kind(100, "auto", 100) == "hnsw"
    assert choose_kind(10, "ivfpq", 100) == "ivfpq"
    with pytest.raises(ValueError):
        choose_kind(10, "annoy")
