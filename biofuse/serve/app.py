"""Analyst access: a token-protected JSON API over the catalog and a small local web page.

Read-only: analysts see what the flows recorded (tracks, identify results, the
gallery version) and never trigger processing. Every request, refused and unrouted ones
included, leaves an `AuditEntry` row saying who asked what from which address and which
ids they saw; secrets in it are redacted, and requests that show no data are counted on
one row per client and minute, so a flood of them cannot fill the catalog.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotation objects of
# the route functions, which refer to names local to `create_app`.

import datetime as dt
import functools
import ipaddress
import logging
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import func, select, update
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from biofuse.catalog import (
    AuditEntry,
    Catalog,
    Enrollment,
    GalleryVersion,
    Identity,
    Result,
    Run,
    SpeechSegment,
    Track,
    Video,
)
from biofuse.config import Settings
from biofuse.errors import BiofuseError, ConfigError, MediaError
from biofuse.fusion.fuse import open_set_threshold
from biofuse.serve.thumbnails import thumbnail
from biofuse.serve.tokens import Principal, digest, parse_tokens, read_tokens_file

STATIC = Path(__file__).with_name("static")
log = logging.getLogger(__name__)
MAX_AUDITED_IDS = 200
MAX_AUDITED_PARAMS = 16  # query parameters kept per row, each key and value cut to:
MAX_AUDITED_CHARS = 200
AGGREGATE_S = 60.0  # requests that show no data: one row per client, kind and minute
# query parameters whose values are never stored (a token in the URL, a password, ...)
SECRET_PARAM = re.compile(r"token|passw|secret|key|auth|credential|session|cookie|sig", re.I)
REDACTED = "[redacted]"
LOOPBACK_HOST = re.compile(r"^(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$")
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
MAX_ID = 2**31 - 1  # catalog ids are 32-bit integers on PostgreSQL
TEXT = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refuse it as a 422, not a 500


# -- response models (they are the OpenAPI schema) -----------------------------------------
class VideoOut(BaseModel):
    id: int
    name: str
    status: str
    duration_s: float | None
    tracks: int


class TopCandidate(BaseModel):
    identity: str
    fused_llr: float
    decision: str  # match | unknown


class TrackOut(BaseModel):
    key: str
    video_id: int
    video: str
    start_s: float
    end_s: float
    detections: int
    quality: float | None
    top: TopCandidate | None


class ModalityEvidence(BaseModel):
    score: float
    llr: float
    quality: float | None
    model_id: str | None


class CandidateOut(BaseModel):
    rank: int
    identity: str
    fused_llr: float
    modalities: dict[str, ModalityEvidence]


class DecisionOut(BaseModel):
    decision: str  # the identity named, or "unknown"
    threshold_llr: float | None
    prior_in_gallery: float
    gallery_size: int
    threshold_from: str
    gallery_version: int | None = None  # the version decided against; None: live enrollments
    fusion_method: str | None = None
    contributions: dict[str, float]  # modality -> LLR it added to the top candidate
    why: str


class SegmentOut(BaseModel):
    key: str
    start_s: float
    end_s: float
    quality: float | None


class TrackDetail(TrackOut):
    run_id: int | None
    speech: list[SegmentOut]
    candidates: list[CandidateOut]
    decision: DecisionOut | None


class IdentityOut(BaseModel):
    name: str
    enrollments: dict[str, int]  # modality -> enrollment rows
    tracks_named: int  # tracks whose latest decision names this identity


class GalleryOut(BaseModel):
    version: int | None
    created_at: str | None
    model_ids: dict[str, str]
    template_counts: dict[str, int]
    calibration: dict[str, dict[str, Any]]


class AuditOut(BaseModel):
    at: str
    who: str
    client: str | None
    action: str
    params: dict[str, Any]
    status: int
    result_count: int
    result_ids: list[Any]
    request_count: int  # requests counted on this row (repeated ones that showed no data)
    last_at: str | None


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or unknown token"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"model": Problem, "description": "the token's role is not admin"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": Problem, "description": "no such item"},
}


# -- the audit log -----------------------------------------------------------------------
def _clean(text: str, limit: int = MAX_AUDITED_CHARS) -> str:
    """Text any catalog stores: no NUL (PostgreSQL refuses it), valid UTF-8, bounded."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Audit:
    """Writes one row per request; rows that show no data are aggregated per client."""

    def __init__(self, catalog: Catalog, known: dict[str, Principal]) -> None:
        self.catalog = catalog
        self.known = known
        self._open: dict[tuple[str, ...], tuple[int, float]] = {}  # key -> row id, until
        self._lock = threading.Lock()

    def _secret(self, value: str) -> bool:
        return len(value) >= 16 and digest(value) in self.known

    def redact_params(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, value in query:
            if len(params) == MAX_AUDITED_PARAMS:
                params["..."] = f"{len(query) - MAX_AUDITED_PARAMS} more parameters"
                break
            secret = SECRET_PARAM.search(key) or self._secret(value)
            params[_clean(key, 64)] = REDACTED if secret else _clean(value)
        return params

    def redact_path(self, path: str) -> str:
        return "/".join(REDACTED if self._secret(p) else p for p in path.split("/"))

    def write(
        self,
        scope: Scope,
        who: str,
        status: int,
        ids: list[Any] | None = None,
        route: str | None = None,
    ) -> None:
        ids = ids or []
        client = _clean(scope["client"][0], 64) if scope.get("client") else None
        action = _clean(f"{scope['method']} {self.redact_path(scope['path'])}")
        query = Request(scope).query_params.multi_items()
        aggregate = status >= 400 or who == "anonymous"
        key = (str(client), who, str(status), f"{scope['method']} {route or 'unrouted'}")
        entry = AuditEntry(
            who=_clean(who),
            client=client,
            action=action,
            params=self.redact_params(query),
            status=status,
            result_count=len(ids),
            result_ids=[_clean(i) if isinstance(i, str) else i for i in ids][:MAX_AUDITED_IDS],
            request_count=1,
        )
        if not aggregate:  # a row of its own: what this analyst was shown
            with self.catalog.session() as s:
                s.add(entry)
            return
        now = time.monotonic()
        with self._lock:  # one row per key and window, however many threads answer
            if len(self._open) > 4096:
                self._open = {k: v for k, v in self._open.items() if v[1] > now}
            row_id, until = self._open.get(key, (None, 0.0))
            if row_id is not None and until > now:
                with self.catalog.session() as s:
                    counted = s.execute(
                        update(AuditEntry)
                        .where(AuditEntry.id == row_id)
                        .values(
                            request_count=AuditEntry.request_count + 1,
                            last_at=dt.datetime.now(dt.UTC),
                        )
                    ).rowcount
                if counted:
                    return
            with self.catalog.session() as s:
                s.add(entry)
                s.flush()
                row_id = entry.id
            self._open[key] = (row_id, now + AGGREGATE_S)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Outermost layer: the Host check, security headers, and the audit row of every request.

    The row is written when the response starts and before it is sent: a request whose
    row cannot be written gets a 500, never its data.
    """

    def __init__(self, app: ASGIApp, audit: Audit, check_host: bool, hosts: list[str]) -> None:
        self.app, self.audit, self.check_host = app, audit, check_host
        self.hosts = {h.lower() for h in hosts}  # also answered on loopback (a proxy's name)

    def who(self, scope: Scope) -> Principal | None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.audit.known.get(digest(token.strip()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        principal = self.who(scope)
        started: list[int] = []

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started.append(status)
                route = getattr(scope.get("route"), "path", None)
                await run_in_threadpool(
                    self.audit.write,
                    scope,
                    principal.name if principal else "anonymous",
                    status,
                    state.get("audit_ids"),
                    route or ("/static" if scope["path"].startswith("/static/") else None),
                )
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if scope["path"].startswith("/api/") or scope["path"] == "/openapi.json":
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if self.check_host:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = re.sub(r":\d{1,5}$", "", host).lower()
            if not LOOPBACK_HOST.match(host) and name not in self.hosts:
                # DNS rebinding: a page of another site reaching this loopback server
                response = JSONResponse({"detail": "invalid Host header"}, status_code=400)
                await response(scope, receive, audited_send)
                return
        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started:  # the 500 that the server answers is audited too
                try:
                    name = principal.name if principal else "anonymous"
                    await run_in_threadpool(self.audit.write, scope, name, 500)
                except Exception:
                    log.exception("could not audit a failed request")
            raise


def _shown(request: Request, ids: list[Any]) -> None:
    """The ids this response shows, for its audit row."""
    request.state.audit_ids = ids


# -- the app ------------------------------------------------------------------------------
def create_app(
    settings: Settings, tokens: list[str] | None = None, host: str | None = None
) -> FastAPI:
    """The analyst app over the catalog of `settings`; tokens add to `settings.api_tokens`
    and `settings.api_tokens_file`. Bound to a loopback `host` (default: serve_host), it
    answers only requests whose Host header names loopback (no DNS rebinding)."""
    entries = [*settings.api_tokens, *(tokens or [])]
    if settings.api_tokens_file is not None:
        entries += read_tokens_file(Path(settings.api_tokens_file))
    known = parse_tokens(entries)
    if not known:
        raise ConfigError(
            "no API tokens: pass `biofuse serve --tokens-file FILE` (lines NAME[:ROLE]=TOKEN), "
            "set BIOFUSE_API_TOKENS or api_tokens in biofuse.toml; "
            "`biofuse serve --new-token NAME` makes a token"
        )
    catalog = Catalog(settings.catalog_url)
    audit = Audit(catalog, known)
    thumbs = Path(settings.home) / "thumbnails"
    bearer = HTTPBearer(auto_error=False, description="an analyst token from the operator")
    app = FastAPI(
        title="biofuse analyst API",
        version="1",
        description="Tracks, identify results and the gallery; every request is audited.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the schema is /openapi.json
        redoc_url=None,
    )

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        given = credentials.credentials if credentials is not None else ""
        found = known.get(digest(given)) if given else None
        if found is None:
            raise HTTPException(401, "missing or unknown token", {"WWW-Authenticate": "Bearer"})
        return found

    def analyst(p: Annotated[Principal, Depends(principal)]) -> str:
        return p.name

    def admin(p: Annotated[Principal, Depends(principal)]) -> str:
        if p.role != "admin":
            raise HTTPException(403, "the audit log is for tokens of the admin role")
        return p.name

    Analyst = Annotated[str, Depends(analyst)]
    Admin = Annotated[str, Depends(admin)]

    def not_found(request: Request, who: str, what: str) -> HTTPException:
        return HTTPException(404, what)

    @app.get("/api/videos", response_model=list[VideoOut], responses=ERRORS)
    def videos(
        request: Request,
        who: Analyst,
        name: Annotated[str | None, Query(max_length=200, pattern=TEXT)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[VideoOut]:
        """Videos in the catalog (optionally those whose file name contains `name`)."""
        with catalog.session() as s:
            counts = select(Track.video_id, func.count().label("n")).group_by(Track.video_id)
            sub = counts.subquery()
            query = (
                select(Video, func.coalesce(sub.c.n, 0))
                .outerjoin(sub, sub.c.video_id == Video.id)
                .order_by(Video.id)
            )
            if name:  # `%` and `_` are literal characters here, not LIKE wildcards
                query = query.where(Video.path.contains(name, autoescape=True))
            rows = s.execute(query.limit(limit)).all()
        out = [
            VideoOut(
                id=v.id, name=Path(v.path).name, status=v.status, duration_s=v.duration_s, tracks=n
            )
            for v, n in rows
        ]
        _shown(request, [v.id for v in out])
        return out

    @app.get("/api/tracks", response_model=list[TrackOut], responses=ERRORS)
    def tracks(
        request: Request,
        who: Analyst,
        video_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        start_s: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        end_s: Annotated[float | None, Query(ge=0, le=1e9)] = None,
        identity: Annotated[str | None, Query(max_length=200, pattern=TEXT)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> list[TrackOut]:
        """Tracks by video, by time range (overlapping it) or by the identity ranked first."""
        with catalog.session() as s:
            query = select(Track, Video.path).join(Video, Video.id == Track.video_id)
            if video_id is not None:
                query = query.where(Track.video_id == video_id)
            if start_s is not None:
                query = query.where(Track.end_s >= start_s)
            if end_s is not None:
                query = query.where(Track.start_s <= end_s)
            if identity:
                latest = _latest_results(s, rank=1, identity=identity)
                query = query.where(Track.key.in_(list(latest)))
            rows = s.execute(
                query.order_by(Track.video_id, Track.start_s).offset(offset).limit(limit)
            ).all()
            top = _latest_results(s, rank=1, keys=[t.key for t, _ in rows])
        out = [_track_out(t, path, top.get(t.key)) for t, path in rows]
        _shown(request, [t.key for t in out])
        return out

    @app.get("/api/tracks/{key}", response_model=TrackDetail, responses=NOT_FOUND)
    def track(
        request: Request, who: Analyst, key: Annotated[str, PathParam(max_length=200, pattern=TEXT)]
    ) -> TrackDetail:
        """One track: its speech, ranked candidates with per-modality evidence, the decision."""
        with catalog.session() as s:
            detail = track_detail(s, key, settings)
        if detail is None:
            raise not_found(request, who, f"no track {key!r}; list them with /api/tracks")
        _shown(request, [c.identity for c in detail.candidates])
        return detail

    @app.get("/api/tracks/{key}/record", responses=NOT_FOUND)
    def track_record(
        request: Request, who: Analyst, key: Annotated[str, PathParam(max_length=200, pattern=TEXT)]
    ) -> JSONResponse:
        """The sealed decision record of the track's newest decision (the page's export)."""
        from biofuse.serve.record import decision_record

        try:
            record = decision_record(catalog, settings, key)
        except BiofuseError as exc:
            raise not_found(request, who, str(exc)) from None
        _shown(request, [c["identity"] for c in record["candidates"]])
        name = "".join(ch if ch.isalnum() else "_" for ch in key)
        return JSONResponse(
            record,
            headers={"Content-Disposition": f'attachment; filename="decision-{name}.json"'},
        )

    @app.get(
        "/api/tracks/{key}/thumbnail/{kind}",
        response_class=FileResponse,
        responses={
            **NOT_FOUND,
            200: {"content": {"image/jpeg": {}}, "description": "a JPEG"},
        },
    )
    def track_thumbnail(
        request: Request,
        who: Analyst,
        key: Annotated[str, PathParam(max_length=200, pattern=TEXT)],
        kind: Literal["face", "body"],
    ) -> FileResponse:
        """The face or body of the track at its best view (cached after the first request)."""
        with catalog.session() as s:
            row = s.execute(
                select(Track.boxes, Video.path)
                .join(Video, Video.id == Track.video_id)
                .where(Track.key == key)
            ).first()
        if row is None:
            raise not_found(request, who, f"no track {key!r}")
        try:
            file = thumbnail(thumbs, key, kind, Path(row[1]), row[0])
        except MediaError as exc:  # its text names server paths: logged, not answered
            log.warning("no %s thumbnail of %s: %s", kind, key, exc)
            raise not_found(request, who, f"no {kind} thumbnail of this track") from exc
        _shown(request, [key])
        return FileResponse(file, media_type="image/jpeg")

    @app.get("/api/identities", response_model=list[IdentityOut], responses=ERRORS)
    def identities(request: Request, who: Analyst) -> list[IdentityOut]:
        """Enrolled identities with their evidence and how many tracks were named as them."""
        with catalog.session() as s:
            enrolled = s.execute(
                select(Identity.name, Enrollment.modality, func.count())
                .join(Enrollment, Enrollment.identity_id == Identity.id)
                .group_by(Identity.name, Enrollment.modality)
            ).all()
            named: dict[str, int] = {}
            for rows in _latest_results(s, rank=1).values():
                r, name = rows[0]
                if r.decision == "match":
                    named[name] = named.get(name, 0) + 1
        by_name: dict[str, dict[str, int]] = {}
        for name, modality, n in enrolled:
            by_name.setdefault(name, {})[modality] = n
        out = [
            IdentityOut(name=n, enrollments=e, tracks_named=named.get(n, 0))
            for n, e in sorted(by_name.items())
        ]
        _shown(request, [i.name for i in out])
        return out

    @app.get("/api/gallery", response_model=GalleryOut, responses=ERRORS)
    def gallery(request: Request, who: Analyst) -> GalleryOut:
        """The current gallery version (all nulls and empties before the first rebuild)."""
        with catalog.session() as s:
            row = s.scalar(select(GalleryVersion).where(GalleryVersion.current.is_(True)))
        m = row.manifest if row is not None else {}
        out = GalleryOut(
            version=row.number if row is not None else None,
            created_at=m.get("created_at"),
            model_ids=m.get("model_ids", {}),
            template_counts=m.get("template_counts", {}),
            calibration=m.get("calibration", {}),
        )
        _shown(request, [out.version] if out.version is not None else [])
        return out

    @app.get("/api/audit", response_model=list[AuditOut], responses=ADMIN_ERRORS)
    def audit_log(
        request: Request,
        who: Admin,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        analyst_name: Annotated[
            str | None, Query(alias="who", max_length=200, pattern=TEXT)
        ] = None,
    ) -> list[AuditOut]:
        """The newest audit entries (before this request), optionally of one analyst; for
        tokens of the admin role."""
        with catalog.session() as s:
            query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if analyst_name:
                query = query.where(AuditEntry.who == analyst_name)
            rows = list(s.scalars(query))
        return [
            AuditOut(
                at=r.at.isoformat(),
                who=r.who,
                client=r.client,
                action=r.action,
                params=r.params,
                status=r.status,
                result_count=r.result_count,
                result_ids=r.result_ids,
                request_count=r.request_count,
                last_at=r.last_at.isoformat() if r.last_at else None,
            )
            for r in rows
        ]

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        Guard,
        audit=audit,
        check_host=_is_loopback(host or settings.serve_host),
        hosts=settings.serve_allowed_hosts,
    )
    return app


# -- queries ------------------------------------------------------------------------------
def track_detail(s: Any, key: str, settings: Settings) -> TrackDetail | None:
    """One track with its speech, ranked candidates and decision (None: no such track)."""
    row = s.execute(
        select(Track, Video.path).join(Video, Video.id == Track.video_id).where(Track.key == key)
    ).first()
    if row is None:
        return None
    t, path = row
    speech = list(
        s.scalars(
            select(SpeechSegment)
            .where(SpeechSegment.track_id == t.id)
            .order_by(SpeechSegment.start_s)
        )
    )
    ranked = _latest_results(s, keys=[key]).get(key, [])
    run = s.get(Run, ranked[0][0].run_id) if ranked else None
    size = _gallery_size(s)
    qualities = {
        "face": t.quality,
        "voice": max((g.quality or 0.0 for g in speech), default=None),
    }
    candidates = [_candidate(r, name, qualities, settings) for r, name in ranked]
    return TrackDetail(
        **_track_out(t, path, ranked).model_dump(),
        run_id=run.id if run else None,
        speech=[
            SegmentOut(key=g.key, start_s=g.start_s, end_s=g.end_s, quality=g.quality)
            for g in speech
        ],
        candidates=candidates,
        decision=_decision(candidates, ranked, run, size, settings) if ranked else None,
    )


def _latest_results(
    s: Any,
    keys: list[str] | None = None,
    rank: int | None = None,
    identity: str | None = None,
) -> dict[str, list[tuple[Result, str]]]:
    """probe key -> its (Result, identity name) rows of the newest identify run, by rank."""
    # Narrow the newest-run lookup to the probes asked about before grouping: grouping all of
    # `results` (1M rows at 100k videos) on every call took 1.5 s on SQLite.
    newest_runs = select(Result.probe_key, func.max(Result.run_id).label("run_id"))
    if keys is not None:
        newest_runs = newest_runs.where(Result.probe_key.in_(keys))
    if identity is not None:
        ranked_it = (
            select(Result.probe_key)
            .join(Identity, Identity.id == Result.identity_id)
            .where(Identity.name == identity, Result.rank == (rank or 1))
        )
        newest_runs = newest_runs.where(Result.probe_key.in_(ranked_it))
    newest = newest_runs.group_by(Result.probe_key).subquery()
    query = (
        select(Result, Identity.name)
        .join(newest, (newest.c.probe_key == Result.probe_key) & (newest.c.run_id == Result.run_id))
        .join(Identity, Identity.id == Result.identity_id)
        .order_by(Result.probe_key, Result.rank)
    )
    if keys is not None:
        query = query.where(Result.probe_key.in_(keys))
    if rank is not None:
        query = query.where(Result.rank == rank)
    if identity is not None:
        query = query.where(Identity.name == identity)
    out: dict[str, list[tuple[Result, str]]] = {}
    for r, name in s.execute(query).all():
        out.setdefault(r.probe_key, []).append((r, name))
    return out


def _gallery_size(s: Any) -> int:
    """Identities the open-set threshold was set for: the current version's, else enrolled."""
    row = s.scalar(select(GalleryVersion).where(GalleryVersion.current.is_(True)))
    if row is not None and row.manifest.get("identities"):
        return len(row.manifest["identities"])
    return s.scalar(select(func.count(func.distinct(Enrollment.identity_id)))) or 0


def _track_out(t: Track, path: str, top: list[tuple[Result, str]] | None) -> TrackOut:
    best = None
    if top:
        r, name = top[0]
        best = TopCandidate(identity=name, fused_llr=r.fused_llr, decision=r.decision)
    return TrackOut(
        key=t.key,
        video_id=t.video_id,
        video=Path(path).name,
        start_s=t.start_s,
        end_s=t.end_s,
        detections=t.n_detections,
        quality=t.quality,
        top=best,
    )


def _configured_model(modality: str, settings: Settings) -> str | None:
    name = getattr(settings, f"{modality}_model", None)
    return None if name is None else _model_id(str(name), str(settings.models_dir))


@functools.lru_cache(maxsize=64)
def _model_id(name: str, models_dir: str) -> str:
    """name + weights digest, resolved once per process (hashing weights is not per request)."""
    from biofuse.registry import Registry

    try:
        return Registry(Path(models_dir)).resolve(name).model_id
    except BiofuseError:
        return name


def _candidate(
    r: Result, name: str, qualities: dict[str, float | None], settings: Settings
) -> CandidateOut:
    evidence = {}
    for modality, v in (r.scores or {}).items():
        # identify may record the model id per modality; else it is the configured one
        model_id = v.get("model_id") or _configured_model(modality, settings)
        evidence[modality] = ModalityEvidence(
            score=v["score"], llr=v["llr"], quality=qualities.get(modality), model_id=model_id
        )
    return CandidateOut(rank=r.rank, identity=name, fused_llr=r.fused_llr, modalities=evidence)


def _decision(
    candidates: list[CandidateOut],
    ranked: list[tuple[Result, str]],
    run: Run | None,
    size: int,
    settings: Settings,
) -> DecisionOut:
    """The open-set decision as recorded, with the threshold and evidence that explain it.

    From the basis identify stored with the result (threshold, prior, comparable identities,
    gallery version, fusion method), never from today's gallery: an enrollment made since
    must not change why an earlier decision was taken. Rows written before migration 0003
    have no stored basis; only for those is the threshold recomputed, and it says so.
    """
    top, (top_row, _) = candidates[0], ranked[0]
    named = top.identity if top_row.decision == "match" else "unknown"
    summary = run.summary if run is not None else {}
    prior = float(summary.get("prior_in_gallery", settings.prior_in_gallery))
    version, method = None, None
    if top_row.threshold_llr is not None:
        threshold, size = top_row.threshold_llr, top_row.gallery_size or 0
        if top_row.prior_in_gallery is not None:
            prior = top_row.prior_in_gallery
        version, method = top_row.gallery_version, top_row.fusion_method
        source = "recorded with the result when it was decided"
        if top_row.threshold_from == "operator":
            source += " (fitted by biofuse calibrate)"
    elif "threshold_llr" in summary:
        threshold, source = float(summary["threshold_llr"]), "recorded by the identify run"
        size = int(summary.get("gallery_size", size))
    elif size >= 1:
        threshold = open_set_threshold(size, prior)
        source = "recomputed from the current gallery size and the configured prior"
    else:
        threshold, source = None, "unknown: no gallery"
    contributions = {m: e.llr for m, e in top.modalities.items()}
    parts = ", ".join(f"{m} {v:+.1f}" for m, v in contributions.items()) or "no modality"
    bound = f"{threshold:+.1f}" if threshold is not None else "?"
    verb = "exceeds" if named != "unknown" else "does not exceed"
    if top_row.threshold_from == "operator":
        against = f"the operator's open-set threshold {bound}"
    else:
        against = f"the open-set threshold {bound} for {size} identities at prior {prior:g}"
    basis = ""
    if method is not None:
        gallery = f"gallery version {version}" if version is not None else "live enrollments"
        basis = f" ({method} fusion, {gallery})"
    why = (
        f"the best candidate {top.identity} has fused LLR {top.fused_llr:+.1f} ({parts}), "
        f"which {verb} {against}; decision: {named}{basis}"
    )
    return DecisionOut(
        decision=named,
        threshold_llr=threshold,
        prior_in_gallery=prior,
        gallery_size=size,
        threshold_from=source,
        gallery_version=version,
        fusion_method=method,
        contributions=contributions,
        why=why,
    )
