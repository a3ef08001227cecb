"""The analyst API and page on a catalog built by a real small run (two videos, two people).

The run (process two talking-head videos, enroll AOC and Tony Blair, identify) is
built once for the module; the API, schemathesis and headless Chromium all read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from biofuse.catalog import AuditEntry, Catalog, Track
from biofuse.config import Settings, load_settings
from biofuse.errors import CatalogError, ConfigError
from biofuse.serve.app import create_app, parse_tokens
from biofuse.serve.tokens import Principal, digest

TOKEN = "s3cret-analyst-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "adm1n-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REPO = Path(__file__).resolve().parents[1]
LOCAL = "http://localhost"  # bound to loopback, the app answers only loopback Host names


def local_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), base_url=LOCAL)


def catalog_urls() -> list:
    """SQLite always; PostgreSQL when BIOFUSE_TEST_POSTGRES_URL names a server (make test)."""
    pg = os.environ.get("BIOFUSE_TEST_POSTGRES_URL")
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            pg,
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not pg, reason="set BIOFUSE_TEST_POSTGRES_URL"),
            ],
        ),
    ]


@pytest.fixture(params=catalog_urls())
def small(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on an empty catalog (SQLite, and PostgreSQL where there is one) with an
    analyst (alice) and an admin (root)."""
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    if request.param != "sqlite":
        url = request.param
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    return load_settings(
        home=str(tmp_path),
        catalog_url=url,
        api_tokens=[f"alice={TOKEN}", f"root:admin={ADMIN_TOKEN}"],
    )


def audit_rows(settings: Settings) -> list[AuditEntry]:
    with Catalog(settings.catalog_url).session() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# -- without a run -------------------------------------------------------------------------
def test_tokens_are_audited_by_name_or_by_digest() -> None:
    tokens = parse_tokens(["alice=abcdefghijklmnop", "xyzxyzxyzxyzxyzxyz", "bob:admin=" + "b" * 16])
    assert tokens[digest("abcdefghijklmnop")] == Principal("alice", "analyst")
    assert tokens[digest("b" * 16)] == Principal("bob", "admin")
    bare = tokens[digest("xyzxyzxyzxyzxyzxyz")].name
    assert bare.startswith("token-") and "xyz" not in bare
    assert parse_tokens([f"carol=sha256:{digest(TOKEN)}"]) == {
        digest(TOKEN): Principal("carol", "analyst")
    }
    with pytest.raises(ConfigError, match="empty token"):
        parse_tokens(["bob="])
    with pytest.raises(ConfigError, match="unknown role"):
        parse_tokens(["bob:root=" + "b" * 16])


def test_tokens_are_kept_hashed_and_no_error_shows_a_secret(tmp_path: Path) -> None:
    """Issue 18 item 9: settings hold only digests; a short token, a wrongly typed
    api_tokens or a bad catalog URL is reported without the secret."""
    settings = load_settings(home=str(tmp_path), api_tokens=[f"alice={TOKEN}"])
    assert settings.api_tokens == [f"alice:analyst=sha256:{digest(TOKEN)}"]
    assert TOKEN not in repr(settings) and TOKEN not in settings.model_dump_json()
    # a string is a comma-separated list (as from the environment); a table is the wrong type
    for bad in (["alice=short-SECRET"], {"alice": "LONG-ENOUGH-SECRET-VALUE"}):
        with pytest.raises(ConfigError) as caught:
            load_settings(home=str(tmp_path), api_tokens=bad)
        assert "SECRET" not in str(caught.value), caught.value
    config = tmp_path / "biofuse.toml"
    config.write_text('api_tokens = { alice = "LONG-ENOUGH-SECRET-VALUE" }\n')
    with pytest.raises(ConfigError, match="api_tokens") as caught:
        load_settings(config)
    assert "SECRET" not in str(caught.value)
    for url in (
        "postgresql+psycopg://bob:DBSECRET@127.0.0.1:1/db",  # nothing listens on port 1
        "postgresql://bob:DB/SECRET@host:notaport/db",
        "bob:DBSECRET@host/db",
    ):
        with pytest.raises(CatalogError) as caught:
            Catalog(url)
        assert "SECRET" not in str(caught.value) and "bob:***@" in str(caught.value)


def test_tokens_come_from_a_private_file_and_never_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18 item 9: `serve --token` (seen by `ps`) is refused; `--new-token` makes a
    token, a tokens file others can read is refused, a private one is used."""
    from typer.testing import CliRunner

    from biofuse.cli import app

    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path))
    runner = CliRunner()
    refused = runner.invoke(app, ["serve", "--token", f"alice={TOKEN}"])
    assert refused.exit_code == 2 and "--tokens-file" in refused.output
    made = runner.invoke(app, ["serve", "--new-token", "root:admin"])
    assert made.exit_code == 0, made.output
    line = next(x for x in made.output.splitlines() if x.startswith("root:admin="))
    hashed = next(x for x in made.output.splitlines() if "=sha256:" in x)
    fresh = line.removeprefix("root:admin=")
    assert len(fresh) >= 32 and hashed == f"root:admin=sha256:{digest(fresh)}"

    tokens = tmp_path / "tokens"
    tokens.write_text(f"# analysts\n\nalice={TOKEN}\n{line}\n")
    tokens.chmod(0o644)
    open_file = runner.invoke(app, ["serve", "--tokens-file", str(tokens)])
    assert open_file.exit_code == 2 and "readable by every user" in open_file.output
    tokens.chmod(0o600)
    settings = load_settings(home=str(tmp_path), api_tokens_file=tokens)
    client = local_client(settings)
    assert client.get("/api/audit", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert client.get("/api/gallery", headers=AUTH).status_code == 200
    tokens.write_text("alice=SHORT-SECRET\n")
    with pytest.raises(ConfigError, match="line 1") as caught:
        create_app(settings)
    assert "SECRET" not in str(caught.value)


def test_the_app_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no API tokens"):
        create_app(load_settings(home=str(tmp_path)))


def test_requests_without_the_token_get_401_and_are_audited(tmp_path: Path) -> None:
    settings = load_settings(home=str(tmp_path), api_tokens=[f"alice={TOKEN}"])
    client = local_client(settings)
    assert client.get("/api/tracks").status_code == 401
    wrong = client.get("/api/tracks", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/tracks", headers=AUTH).json() == []
    rows = [(a.who, a.status, a.request_count, a.client) for a in audit_rows(settings)]
    assert rows == [("anonymous", 401, 2, "testclient"), ("alice", 200, 1, "testclient")]
    page = client.get("/")  # the page itself is public; it holds no data
    assert page.status_code == 200 and "biofuse" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_tokens_come_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOFUSE_API_TOKENS", "bob=b0b-token-0123456789, carol=c4rol-token-0123456")
    settings = load_settings(home=str(tmp_path))
    client = TestClient(create_app(settings, ["dave:admin=d4ve-token-0123456"]), base_url=LOCAL)
    for token in ("b0b-token-0123456789", "c4rol-token-0123456", "d4ve-token-0123456"):
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/gallery", headers=headers).status_code == 200
    entries = client.get(
        "/api/audit", headers={"Authorization": "Bearer d4ve-token-0123456"}
    ).json()
    assert [e["who"] for e in entries] == ["dave", "carol", "bob"]
    assert client.get("/openapi.json").json()["info"]["title"] == "biofuse analyst API"


def test_serve_without_tokens_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from biofuse.cli import app

    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path))  # --home sets it; put the old value back
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path), "serve"], env={"BIOFUSE_API_TOKENS": ""}
    )
    assert result.exit_code == 2 and "--tokens-file" in result.output


def test_secrets_are_redacted_floods_counted_and_the_audit_log_is_for_admins(
    small: Settings,
) -> None:
    """Issue 18 item 4: `?token=SECRET` was stored verbatim even on 401 and shown to every
    analyst; 100 refused requests with 60 KB of parameters made 100 rows of 60 KB."""
    client = local_client(small)
    assert client.get("/api/videos", params={"token": TOKEN, "name": "x"}).status_code == 401
    noise = {f"p{i}": "x" * 1000 for i in range(60)}  # 60 KB of parameters
    for _ in range(100):
        assert client.get("/api/videos", params=noise).status_code == 401
    ok = client.get("/api/videos", params={"name": ADMIN_TOKEN, "api_key": "k"}, headers=AUTH)
    assert ok.status_code == 200
    assert client.get("/api/audit", headers=AUTH).status_code == 403  # analysts may not
    rows = client.get("/api/audit", headers=ADMIN).json()
    assert [(r["who"], r["status"], r["request_count"]) for r in rows] == [
        ("alice", 403, 1),
        ("alice", 200, 1),
        ("anonymous", 401, 101),  # one row: the same client refused on the same route
    ]
    stored = json.dumps(rows)
    assert TOKEN not in stored and ADMIN_TOKEN not in stored
    assert rows[1]["params"] == {"name": "[redacted]", "api_key": "[redacted]"}
    assert rows[2]["params"] == {"token": "[redacted]", "name": "x"}
    assert len(stored) < 4000
    with Catalog(small.catalog_url).session() as s:
        sizes = [len(json.dumps(a.params)) + len(a.action) for a in s.scalars(select(AuditEntry))]
    assert max(sizes) < 4000


def test_every_request_is_audited_with_the_client_address(small: Settings) -> None:
    """Issue 18 item 5: authenticated 422s (a NUL byte in a path, limit=99999, video_id=abc)
    and unrouted 404s left no row; on PostgreSQL a NUL byte failed the audit write."""
    client = local_client(small)
    asked = [
        ("/api/tracks/a%00b", AUTH, "alice", 422),
        ("/api/videos?limit=99999", AUTH, "alice", 422),
        ("/api/tracks?video_id=abc", AUTH, "alice", 422),
        ("/api/audit?who=%00", ADMIN, "root", 422),
        ("/api/nothing-here", AUTH, "alice", 404),
        ("/etc/passwd%00", {}, "anonymous", 404),
        ("/api/videos?na%00me=x%00", {}, "anonymous", 401),
    ]
    for path, headers, _, status in asked:
        assert client.get(path, headers=headers).status_code == status, path
    rows = audit_rows(small)
    assert [(r.who, r.status) for r in rows] == [(who, status) for _, _, who, status in asked]
    assert all(r.client == "testclient" for r in rows)
    assert rows[0].action == "GET /api/tracks/a\\x00b"
    assert rows[-1].params == {"na\\x00me": "x\\x00"}


def test_every_response_has_security_headers_and_api_ones_no_store(small: Settings) -> None:
    """Issue 18 item 12: no CSP, X-Frame-Options, nosniff or no-store anywhere."""
    client = local_client(small)
    for path, headers in (
        ("/", {}),
        ("/static/app.js", {}),
        ("/api/videos", AUTH),
        ("/api/videos", {}),
        ("/nope", {}),
    ):
        r = client.get(path, headers=headers)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert (r.headers.get("cache-control") == "no-store") == path.startswith("/api/"), path


def test_on_loopback_only_loopback_host_names_are_answered(small: Settings) -> None:
    """Issue 18 item 12: DNS rebinding (a page of evil.example resolving to 127.0.0.1)."""
    client = local_client(small)
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "localhost"):
        assert client.get("/api/gallery", headers={**AUTH, "Host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8765", "localhost.evil.example", "127.0.0.1.nip.io"):
        r = client.get("/api/gallery", headers={**AUTH, "Host": host})
        assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY", host
    assert audit_rows(small)[-1].status == 400
    public = TestClient(create_app(small, host="0.0.0.0"), base_url="http://analysts.example")
    assert public.get("/api/gallery", headers=AUTH).status_code == 200
    proxied = small.model_copy(update={"serve_allowed_hosts": ["analysts.example"]})
    public = TestClient(create_app(proxied), base_url="http://analysts.example:443")
    assert public.get("/api/gallery", headers=AUTH).status_code == 200


def test_name_search_is_literal_and_404s_name_no_server_path(small: Settings) -> None:
    """Issue 18 item 12: `%` and `_` matched as LIKE wildcards; a thumbnail 404 showed the
    video's path on the server."""
    catalog = Catalog(small.catalog_url)
    ids = {}
    for name in ("a_b.mp4", "a%b.mp4", "axb.mp4"):
        content = hashlib.sha256(name.encode()).hexdigest()
        ids[name] = catalog.register_video(content, f"/srv/secret-archive/{name}", 1).id
    with catalog.session() as s:
        track = Track(key="k:t0000", video_id=ids["axb.mp4"], start_s=0, end_s=1, n_detections=1)
        track.boxes = [[0.5, 1, 1, 20, 20]]
        s.add(track)
    client = local_client(small)

    def found(name: str) -> list[str]:
        videos = client.get("/api/videos", params={"name": name}, headers=AUTH).json()
        return [v["name"] for v in videos]

    assert found("_") == ["a_b.mp4"] and found("%") == ["a%b.mp4"] and len(found("a")) == 3
    thumb = client.get("/api/tracks/k:t0000/thumbnail/face", headers=AUTH)
    assert thumb.status_code == 404 and "secret-archive" not in thumb.text


@pytest.fixture(scope="module")
def run_home(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Process two videos, enroll two people, identify: all with the real models, no Ray."""
    videos = shared_data / "video"
    if not videos.is_dir():
        pytest.skip("../shared/data/video is absent")
    from biofuse.flows.archive import process_one_video, register_videos
    from biofuse.flows.context import Context
    from biofuse.flows.gallery import enroll_media, identify

    root = tmp_path_factory.mktemp("serve")
    archive = root / "archive"
    archive.mkdir()
    for name in ("videoretalking_face_3.mp4", "videoretalking_face_2.mp4"):
        shutil.copy(videos / name, archive / name)
    home = root / "home"
    ctx = Context.open(home=str(home))
    for kind in ctx.settings.modalities:
        ctx.model(kind, use_ray=False)
    for vid in register_videos(ctx, sorted(archive.iterdir())):
        assert process_one_video(ctx, vid) == "done"
    enroll_media(ctx, "AOC", videos / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4")
    for photo in sorted((shared_data / "lfw-dev/images/Tony_Blair").glob("*.jpg"))[:2]:
        enroll_media(ctx, "Tony_Blair", photo)
    identify.fn([], overrides={"home": str(home)})  # the flow's body, without a Prefect run
    ctx.catalog.engine.dispose()
    return home


@pytest.fixture(scope="module")
def settings(run_home: Path) -> Settings:
    return load_settings(
        home=str(run_home), api_tokens=[f"alice={TOKEN}", f"root:admin={ADMIN_TOKEN}"]
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> TestClient:
    return local_client(settings)


def _track(client: TestClient, video: str) -> dict:
    (track,) = [t for t in client.get("/api/tracks", headers=AUTH).json() if t["video"] == video]
    return track


@pytest.mark.slow
def test_tracks_are_found_by_video_time_and_identity(client: TestClient) -> None:
    videos = {v["name"]: v for v in client.get("/api/videos", headers=AUTH).json()}
    assert {n: v["tracks"] for n, v in videos.items()} == {
        "videoretalking_face_3.mp4": 1,
        "videoretalking_face_2.mp4": 1,
    }
    aoc_video = videos["videoretalking_face_3.mp4"]["id"]
    by_video = client.get("/api/tracks", params={"video_id": aoc_video}, headers=AUTH).json()
    assert [t["video"] for t in by_video] == ["videoretalking_face_3.mp4"]
    t = by_video[0]
    inside = {"start_s": t["start_s"] + 0.5, "end_s": t["start_s"] + 1.0}
    after = {"start_s": t["end_s"] + 100.0}
    assert len(client.get("/api/tracks", params=inside, headers=AUTH).json()) == 2
    assert client.get("/api/tracks", params=after, headers=AUTH).json() == []
    named = client.get("/api/tracks", params={"identity": "AOC"}, headers=AUTH).json()
    assert [x["key"] for x in named] == [t["key"]]
    assert named[0]["top"]["identity"] == "AOC" and named[0]["top"]["decision"] == "match"
    blair = client.get("/api/tracks", params={"identity": "Tony_Blair"}, headers=AUTH).json()
    assert t["key"] not in [x["key"] for x in blair]


@pytest.mark.slow
def test_a_track_shows_candidates_evidence_and_why_it_was_decided(client: TestClient) -> None:
    key = _track(client, "videoretalking_face_3.mp4")["key"]
    detail = client.get(f"/api/tracks/{key}", headers=AUTH).json()
    assert [c["identity"] for c in detail["candidates"]] == ["AOC", "Tony_Blair"]
    best = detail["candidates"][0]
    assert set(best["modalities"]) == {"face", "voice"}
    face = best["modalities"]["face"]
    assert face["score"] > 0.9 and face["model_id"].startswith("dlib-resnet-")
    assert face["quality"] == pytest.approx(detail["quality"])
    assert detail["speech"] and best["modalities"]["voice"]["quality"] > 0
    d = detail["decision"]
    assert d["decision"] == "AOC" and d["gallery_size"] == 2 and d["prior_in_gallery"] == 0.5
    assert d["threshold_llr"] == pytest.approx(np.log(3))  # prior 0.25 per identity: odds 3:1
    assert best["fused_llr"] > d["threshold_llr"]
    assert d["contributions"]["face"] == pytest.approx(face["llr"])
    assert "exceeds the open-set threshold +1.1 for 2 identities" in d["why"]

    other = _track(client, "videoretalking_face_2.mp4")["key"]  # never enrolled: unknown
    d2 = client.get(f"/api/tracks/{other}", headers=AUTH).json()["decision"]
    assert d2["decision"] == "unknown" and "does not exceed" in d2["why"]
    missing = client.get("/api/tracks/nope:t0000", headers=AUTH)
    assert missing.status_code == 404 and "no track" in missing.json()["detail"]


@pytest.mark.slow
def test_thumbnails_are_cached_jpegs_of_the_face_and_the_body(
    client: TestClient, settings: Settings
) -> None:
    import cv2

    key = _track(client, "videoretalking_face_3.mp4")["key"]
    sizes = {}
    for kind in ("face", "body"):
        response = client.get(f"/api/tracks/{key}/thumbnail/{kind}", headers=AUTH)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        sizes[kind] = image.shape
        assert image.shape[0] == 224 and image.std() > 10  # a picture, not a flat fill
    assert sizes["body"][1] > sizes["face"][1]  # the body crop is wider than the face crop
    cached = sorted(p.name for p in (settings.home / "thumbnails").glob("*.jpg"))
    assert len(cached) == 2
    bad = client.get(f"/api/tracks/{key}/thumbnail/hands", headers=AUTH)
    assert bad.status_code == 422


@pytest.mark.slow
def test_every_query_is_audited_with_who_what_and_the_ids_shown(
    client: TestClient, settings: Settings
) -> None:
    track = _track(client, "videoretalking_face_3.mp4")
    client.get(f"/api/tracks/{track['key']}", headers=AUTH)
    client.get("/api/audit", params={"limit": 1}, headers=ADMIN)
    entries = client.get("/api/audit", params={"limit": 3}, headers=ADMIN).json()
    newest, detail, listing = entries
    assert newest["action"] == "GET /api/audit" and newest["params"] == {"limit": "1"}
    assert newest["who"] == "root" and newest["client"] == "testclient"
    assert detail["who"] == "alice" and detail["action"] == f"GET /api/tracks/{track['key']}"
    assert detail["result_ids"] == ["AOC", "Tony_Blair"] and detail["result_count"] == 2
    assert listing["action"] == "GET /api/tracks" and track["key"] in listing["result_ids"]
    with Catalog(settings.catalog_url).session() as s:
        total = len(list(s.scalars(select(AuditEntry))))
    assert total >= 3


@pytest.mark.slow
def test_the_gallery_endpoint_follows_the_rebuilt_version(
    settings: Settings, tmp_path: Path
) -> None:
    from biofuse.flows.context import Context
    from biofuse.flows.rebuild import rebuild

    home = tmp_path / "home"
    shutil.copytree(settings.home, home)
    local = load_settings(home=str(home), api_tokens=[f"alice={TOKEN}"])
    web = local_client(local)
    assert web.get("/api/gallery", headers=AUTH).json()["version"] is None
    report = rebuild(Context.open(home=str(home)))
    gallery = web.get("/api/gallery", headers=AUTH).json()
    assert gallery["version"] == report["version"] == 1
    assert gallery["template_counts"] == {"face": 2, "voice": 1}  # Blair enrolled from photos


@pytest.fixture
def modules_hypothesis_can_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis reads `__file__` of every loaded module; SpeechBrain's lazy modules (loaded
    when an earlier test used ECAPA) raise on that for optional extras such as k2, which
    turned every fuzzed request into a spurious failure. Hide those modules meanwhile."""
    for name, module in list(sys.modules.items()):
        try:
            getattr(module, "__file__", None)
        except Exception:
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.slow
@pytest.mark.usefixtures("modules_hypothesis_can_walk")
def test_the_api_never_answers_500_to_schema_fuzzing(client: TestClient) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hyp_settings

    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", client.app, headers={"Host": "localhost"}
    )
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @hyp_settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=ADMIN, base_url=LOCAL)

        try:
            check()
        except Exception as exc:  # collected so that one report lists every operation
            failures.append(f"{op.label}: {exc}")
    assert failures == []


# -- the page in headless Chromium ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
def test_an_analyst_signs_in_searches_and_opens_a_track_in_chromium(
    served: str, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium / chromium-driver are not installed (apt-get install)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(served)
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.ID, "login-button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "refused"))
        field = browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(TOKEN)
        browser.find_element(By.ID, "login-button").click()
        wait.until(ec.visibility_of_element_located((By.ID, "search")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#identity option[value=AOC]")))
        Select(browser.find_element(By.ID, "identity")).select_by_visible_text("AOC")
        browser.find_element(By.ID, "search-button").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")) == 1)
        row = browser.find_element(By.CSS_SELECTOR, "#tracks tbody tr")
        assert "videoretalking_face_3.mp4" in row.text and "AOC" in row.text
        row.click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#candidates tbody tr")) == 2)
        wait.until(
            lambda b: b.execute_script(
                "return ['thumb-face','thumb-body'].every("
                "id => document.getElementById(id).naturalWidth > 0)"
            )
        )
        candidates = browser.find_element(By.ID, "candidates").text
        assert "AOC" in candidates and "Tony_Blair" in candidates and "dlib-resnet" in candidates
        assert "Decision: AOC" in browser.find_element(By.ID, "decision").text
        shot = REPO / "test-artifacts" / "analyst_page.png"
        shot.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(shot))
        errors = [
            e
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and "401" not in e["message"]  # the wrong token, above
        ]
        assert errors == [], json.dumps(errors)
    finally:
        browser.quit()
