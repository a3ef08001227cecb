"""identify on galleries and probes that share only some modalities (issue 18, items 1 and 3),
through the identify flow's body on a real Zarr store and catalog (SQLite; PostgreSQL too
where BIOFUSE_TEST_POSTGRES_URL is set), and the analyst page's "why" of what it stored.

Embeddings are small random vectors written where the pipeline would write them: enrollment
rows with their `Enrollment` rows, track rows keyed by the track, speech turns keyed by turn.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.context import Context
from biofuse.flows.gallery import identify
from biofuse.fusion.calibration import load_default
from biofuse.fusion.fuse import open_set_threshold
from biofuse.modalities.base import Embeddings, l2_normalise
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text

from biofuse.catalog import DONE, Enrollment, Identity, Result, SpeechSegment, Track
from biofuse.config import load_settings
from biofuse.serve.app import create_app

MODALITIES = ("face", "voice", "gait", "body")
DIM = 16  # gait rows are [channels, 16 parts]
TOKEN = "identify-evidence-token"


class World:
    """One home: a catalog, a store and one processed video whose probes we write."""

    def __init__(self, home: Path, catalog_url: str | None = None) -> None:
        self.overrides: dict = {"home": str(home), "modalities": list(MODALITIES)}
        if catalog_url:
            self.overrides["catalog_url"] = catalog_url
        self.ctx = Context.open(**self.overrides)
        self.models = {m: self.ctx.model_id(m) for m in MODALITIES}
        video = self.ctx.catalog.register_video("e" * 64, str(home / "v1.mp4"), 1)
        self.ctx.catalog.update_video(video.id, status=DONE)
        self.video_id = video.id
        self.gallery: dict[str, dict[str, np.ndarray]] = {}

    def enroll(self, name: str, vectors: dict[str, np.ndarray]) -> None:
        person = self.ctx.catalog.identity(name, create=True)
        assert person is not None
        for m, vec in vectors.items():
            key = f"enr:{person.id}:{m}"
            rows = Embeddings(
                vec[None].astype(np.float32), np.ones(1, np.float32), [key], self.models[m]
            )
            assert self.ctx.store.commit(m, f"enroll:{person.id}:{m}", rows) == 1
            with self.ctx.catalog.session() as s:
                s.add(
                    Enrollment(
                        identity_id=person.id,
                        media_path=f"{name}-{m}",
                        media_hash=f"{person.id}-{m}",
                        modality=m,
                        model_id=self.models[m],
                        store_key=key,
                        quality=1.0,
                    )
                )
        self.gallery[name] = dict(vectors)

    def probes(self, probes: dict[str, dict[str, np.ndarray]]) -> None:
        """Probe key -> modality -> vector. A track key (`v1:tNNNN`) gets its face, gait and
        body rows and a speech turn linked to it; a speaker key (`v1:spkNN`) is voice only,
        a turn nobody on screen claims."""
        tracks, segments = [], []
        rows: dict[str, tuple[list[str], list[np.ndarray]]] = {m: ([], []) for m in MODALITIES}
        for n, (key, vectors) in enumerate(probes.items()):
            on_screen = ":t" in key
            if on_screen:
                tracks.append(
                    Track(
                        key=key,
                        kind="face",
                        start_s=n,
                        end_s=n + 1.0,
                        n_detections=5,
                        boxes=[],
                        quality=1.0,
                    )
                )
            for m, vec in vectors.items():
                if m == "voice":
                    turn = f"{key}:s0@{n}.0-{n}.9" if on_screen else f"{key}@{n}.0-{n}.9"
                    segments.append(
                        (
                            SpeechSegment(key=turn, start_s=n, end_s=n + 0.9, quality=1.0),
                            key if on_screen else None,
                        )
                    )
                    rows[m][0].append(turn)
                else:
                    assert on_screen, "a speaker probe has a voice only"
                    rows[m][0].append(key)
                rows[m][1].append(vec)
        self.ctx.catalog.replace_video_evidence(self.video_id, tracks, segments)
        for m, (keys, vecs) in rows.items():
            if keys:
                emb = Embeddings(
                    np.stack(vecs).astype(np.float32),
                    np.ones(len(keys), np.float32),
                    keys,
                    self.models[m],
                )
                self.ctx.store.commit(m, f"v1:{m}", emb)

    def identify(self) -> dict[str, dict]:
        out = identify.fn([], overrides=self.overrides)  # the flow's body, no Prefect run
        json.dumps(out, allow_nan=False)  # what `identify --json` prints: no NaN anywhere
        return {d["probe"]: d for d in out}

    def stored(self) -> list[Result]:
        with self.ctx.catalog.session() as s:
            return list(
                s.scalars(select(Result).order_by(Result.run_id, Result.probe_key, Result.rank))
            )


def _near(vec: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    return vec + noise * rng.standard_normal(vec.shape)


def _check_run(world: World, decisions: dict[str, dict]) -> None:
    """No NaN; only identities sharing a modality with the probe are ranked; the decision
    follows from the threshold of the comparable identities."""
    for d in decisions.values():
        mine = set(d["modalities"])
        comparable = [n for n, g in world.gallery.items() if mine & set(g)]
        assert d["gallery_size"] == len(comparable)
        cands = d["candidates"]
        assert [c["rank"] for c in cands] == list(range(1, len(cands) + 1))
        assert len(cands) == min(len(comparable), world.ctx.settings.top_k)
        assert {c["identity"] for c in cands} <= set(comparable)
        llrs = [c["fused_llr"] for c in cands]
        assert all(np.isfinite(llrs)) and llrs == sorted(llrs, reverse=True)
        for c in cands:
            assert set(c["per_modality"]) == mine & set(world.gallery[c["identity"]])
            assert all(np.isfinite(v) for e in c["per_modality"].values() for v in e.values())
        if not comparable:
            assert d["decision"] == "unknown" and d["threshold_llr"] is None
            continue
        assert d["threshold_llr"] == pytest.approx(open_set_threshold(len(comparable), 0.5))
        top = cands[0]
        named = top["identity"] if top["fused_llr"] > d["threshold_llr"] else "unknown"
        assert d["decision"] == named
    rows = world.stored()
    assert all(np.isfinite(r.fused_llr) for r in rows)
    last = max((r.run_id for r in rows), default=None)
    written = {(r.probe_key, r.rank) for r in rows if r.run_id == last}
    assert written == {(p, c["rank"]) for p, d in decisions.items() for c in d["candidates"]}


subsets = st.sets(st.sampled_from(MODALITIES), min_size=1)
_homes = itertools.count()  # one fresh home per hypothesis example


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    gallery=st.lists(subsets, min_size=1, max_size=4),
    # the first probe lacks at least one modality, so someone can share none with it
    first=st.sets(st.sampled_from(MODALITIES), min_size=1, max_size=3),
    others=st.lists(subsets, max_size=2),
    targets=st.lists(st.integers(-1, 3), min_size=3, max_size=3),
    slot=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_identify_ranks_and_decides_on_shared_evidence_only(
    tmp_path: Path,
    gallery: list[set[str]],
    first: set[str],
    others: list[set[str]],
    targets: list[int],
    slot: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    home = tmp_path / f"h{next(_homes)}"
    world = World(home)
    names = [f"id{2 * i + 1:02d}" for i in range(len(gallery))]  # odd: the newcomer sorts between
    for name, have in zip(names, gallery):
        world.enroll(name, {m: rng.standard_normal(DIM) for m in sorted(have)})
    probes = {}
    for n, (have, target) in enumerate(zip([first, *others], targets)):
        # a probe near an enrolled identity's vectors where it has them, or a stranger
        like = world.gallery.get(names[target], {}) if 0 <= target < len(names) else {}
        probes[f"v1:t{n:04d}"] = {
            m: _near(like[m], rng, 0.3) if m in like else rng.standard_normal(DIM)
            for m in sorted(have)
        }
    world.probes(probes)
    before = world.identify()
    _check_run(world, before)

    # enrolling someone who shares no modality with the first probe changes nothing for it
    outside = [m for m in MODALITIES if m not in first]
    keep = rng.random(len(outside)) < 0.5
    keep[rng.integers(len(outside))] = True
    world.enroll(
        f"id{2 * slot:02d}", {m: rng.standard_normal(DIM) for m, k in zip(outside, keep) if k}
    )
    after = world.identify()
    _check_run(world, after)
    probe = "v1:t0000"
    was, now = before[probe], after[probe]
    assert now["decision"] == was["decision"]
    assert now["gallery_size"] == was["gallery_size"]
    assert now["threshold_llr"] == was["threshold_llr"]
    assert [(c["identity"], c["rank"], set(c["per_modality"])) for c in now["candidates"]] == [
        (c["identity"], c["rank"], set(c["per_modality"])) for c in was["candidates"]
    ]
    for a, b in zip(now["candidates"], was["candidates"]):
        assert a["fused_llr"] == pytest.approx(b["fused_llr"], abs=1e-5)
    world.ctx.catalog.engine.dispose()


def _database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    engine = create_engine(request.param)  # an empty PostgreSQL database
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return request.param


PG = os.environ.get("BIOFUSE_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            PG,
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG, reason="set BIOFUSE_TEST_POSTGRES_URL"),
            ],
        ),
    ]
)
def catalog_url(request: pytest.FixtureRequest) -> str | None:
    return _database(request)


def test_photo_only_enrollee_and_a_voice_only_speaker(
    tmp_path: Path, catalog_url: str | None
) -> None:
    """The issue's repro: Tony_Blair enrolled from photos and a wav, Laura_Bush from one photo,
    and a speaker nobody on screen claims (`v1:spk00`). It crashed with `NOT NULL constraint
    failed: results.fused_llr` (Laura_Bush's NaN fused score)."""
    rng = np.random.default_rng(18)
    world = World(tmp_path / "home", catalog_url)
    blair = {"face": rng.standard_normal(DIM), "voice": rng.standard_normal(DIM)}
    world.enroll("Tony_Blair", blair)
    world.enroll("Laura_Bush", {"face": rng.standard_normal(DIM)})
    world.probes(
        {
            "v1:spk00": {"voice": _near(blair["voice"], rng, 0.1)},
            "v1:t0000": {"face": _near(blair["face"], rng, 0.1)},
        }
    )
    decisions = world.identify()
    _check_run(world, decisions)
    speaker = decisions["v1:spk00"]
    assert [c["identity"] for c in speaker["candidates"]] == ["Tony_Blair"]
    assert speaker["gallery_size"] == 1 and speaker["threshold_llr"] == pytest.approx(0.0)
    assert speaker["decision"] == "Tony_Blair"
    face = decisions["v1:t0000"]
    assert [c["identity"] for c in face["candidates"]] == ["Tony_Blair", "Laura_Bush"]
    assert face["gallery_size"] == 2 and face["decision"] == "Tony_Blair"
    rows = [(r.probe_key, r.rank, r.gallery_size, r.decision) for r in world.stored()]
    assert rows == [
        ("v1:spk00", 1, 1, "match"),
        ("v1:t0000", 1, 2, "match"),
        ("v1:t0000", 2, 2, "unknown"),
    ]
    with world.ctx.catalog.session() as s:
        assert s.scalar(select(Identity.name).where(Identity.name == "Laura_Bush"))
    world.ctx.catalog.engine.dispose()


def test_why_explains_the_stored_decision_after_a_new_enrollment(
    tmp_path: Path, catalog_url: str | None
) -> None:
    """A face at fused LLR +0.5 named against a one-identity gallery (threshold 0) keeps that
    explanation when a second identity is enrolled later (whose threshold would be +1.1)."""
    rng = np.random.default_rng(3)
    world = World(tmp_path / "home", catalog_url)
    alice = l2_normalise(rng.standard_normal((1, DIM)))[0]
    world.enroll("alice", {"face": alice})
    cal = load_default(world.models["face"])
    cosine = (0.5 - cal.offset) / cal.slope  # the face score calibrated to LLR +0.5
    noise = rng.standard_normal(DIM)
    other = l2_normalise((noise - alice * (noise @ alice))[None])[0]  # orthogonal to alice
    probe = cosine * alice + np.sqrt(1 - cosine**2) * other
    world.probes({"v1:t0000": {"face": probe}})
    (d,) = world.identify().values()
    assert d["decision"] == "alice"
    assert d["candidates"][0]["fused_llr"] == pytest.approx(0.5, abs=1e-3)

    app_settings = load_settings(api_tokens=[f"analyst={TOKEN}"], **world.overrides)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def why() -> dict:
        client = TestClient(create_app(app_settings), base_url="http://localhost")
        return client.get("/api/tracks/v1:t0000", headers=auth).json()["decision"]

    first = why()
    world.enroll("bob", {"face": rng.standard_normal(DIM)})  # after the identify run
    later = why()
    assert later == first
    assert later["decision"] == "alice" and later["gallery_size"] == 1
    assert later["threshold_llr"] == pytest.approx(0.0)
    assert later["fusion_method"] == "sum" and later["gallery_version"] is None
    assert "fused LLR +0.5" in later["why"]
    assert "exceeds the open-set threshold +0.0 for 1 identities at prior 0.5" in later["why"]
    assert later["why"].endswith("decision: alice (sum fusion, live enrollments)")
    row = world.stored()[0]
    assert (row.threshold_llr, row.prior_in_gallery, row.gallery_size) == (0.0, 0.5, 1)
    assert (row.fusion_method, row.threshold_from, row.gallery_version) == ("sum", "prior", None)

    # a rebuilt gallery and a new run: this decision is explained from its own basis
    from biofuse.flows.rebuild import rebuild

    assert rebuild(world.ctx)["version"] == 1
    world.identify()
    now = why()
    assert now["gallery_version"] == 1 and now["gallery_size"] == 2
    assert now["threshold_llr"] == pytest.approx(np.log(3))
    assert now["why"].endswith("(sum fusion, gallery version 1)")
    world.ctx.catalog.engine.dispose()


def test_decision_record_is_self_contained_sealed_and_exported(tmp_path: Path) -> None:
    """issue 17: `biofuse explain KEY --json` and the page's export give one sealed record."""
    from typer.testing import CliRunner

    from biofuse.cli import app as cli
    from biofuse.serve.record import decision_record, verify

    rng = np.random.default_rng(5)
    world = World(tmp_path / "home")
    alice = l2_normalise(rng.standard_normal((1, DIM)))[0]
    world.enroll("alice", {"face": alice, "voice": l2_normalise(rng.standard_normal((1, DIM)))[0]})
    world.probes({"v1:t0000": {"face": alice}})
    (d,) = world.identify().values()
    assert d["decision"] == "alice"

    record = decision_record(world.ctx.catalog, world.ctx.settings, "v1:t0000")
    assert verify(record) and len(record["sha256"]) == 64
    assert record["decision"]["decision"] == "alice"
    assert record["decision"]["threshold_llr"] == pytest.approx(d["threshold_llr"])
    (top,) = record["candidates"]
    assert top["identity"] == "alice" and set(top["modalities"]) == {"face"}
    face = record["models"]["face"]
    assert face["model_id"] == world.models["face"] and len(face["weights_sha256"]) == 64
    assert face["weights_sha256"].startswith(face["model_id"].rsplit("-", 1)[1])
    cal = load_default(world.models["face"])
    assert record["calibrations"]["face"]["slope"] == pytest.approx(cal.slope)
    assert "lfw" in record["calibrations"]["face"]["fitted_on"]
    assert record["probe"]["video"]["content_hash"] == "e" * 64
    assert record["software"]["biofuse"]

    altered = json.loads(json.dumps(record))
    altered["decision"]["threshold_llr"] -= 1.0  # a later hand lowering the bar
    assert not verify(altered)

    saved, tampered = tmp_path / "record.json", tmp_path / "tampered.json"
    saved.write_text(json.dumps(record))
    tampered.write_text(json.dumps(altered))
    runner = CliRunner()
    assert runner.invoke(cli, ["explain", "--verify", str(saved)]).exit_code == 0
    bad = runner.invoke(cli, ["explain", "--verify", str(tampered)])
    assert bad.exit_code == 1 and "ALTERED" in bad.output

    app_settings = load_settings(api_tokens=[f"analyst={TOKEN}"], **world.overrides)
    client = TestClient(create_app(app_settings), base_url="http://localhost")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    exported = client.get("/api/tracks/v1:t0000/record", headers=auth)
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert verify(exported.json()) and exported.json()["candidates"] == record["candidates"]
    assert client.get("/api/tracks/v1:t9999/record", headers=auth).status_code == 404
    world.ctx.catalog.engine.dispose()
