"""The SQL catalog: what was seen, what was processed, what failed and why.

SQLAlchemy 2.0 so that SQLite (default) and PostgreSQL (by URL) run the same code.
The catalog never holds embeddings; those live in the Zarr store under the
keys recorded here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from biofuse.errors import CatalogError

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Video(Base):
    __tablename__ = "videos"
    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    has_audio: Mapped[bool | None]
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    error: Mapped[str | None] = mapped_column(Text)  # why it failed (status failed)
    notes: Mapped[str | None] = mapped_column(Text)  # what was skipped (e.g. no audio)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processing_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # Who is processing it and until when (see Catalog.claim_video): two workers on one
    # archive each take a video only while nobody else holds an unexpired lease on it.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Track(Base):
    """A person seen across frames; its store rows are keyed by `key`."""

    __tablename__ = "tracks"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(96), unique=True, index=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="face")
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    n_detections: Mapped[int] = mapped_column(Integer)
    boxes: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [[t, x0, y0, x1, y1], ...]
    quality: Mapped[float | None] = mapped_column(Float)


class SpeechSegment(Base):
    __tablename__ = "speech_segments"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(96), unique=True, index=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id"), index=True)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    quality: Mapped[float | None] = mapped_column(Float)


class Identity(Base):
    __tablename__ = "identities"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Enrollment(Base):
    """One piece of enrollment evidence: a store row of an identity for one model."""

    __tablename__ = "enrollments"
    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    media_path: Mapped[str] = mapped_column(Text)
    media_hash: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str] = mapped_column(String(96))
    store_key: Mapped[str] = mapped_column(String(128), unique=True)
    quality: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # process | enroll | identify
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Result(Base):
    """One ranked candidate for one probe (track or speech segment) of an identify run."""

    __tablename__ = "results"
    # The analyst's queries at 100,000 videos (benchmarks/catalog_scale.py): a probe's newest
    # run is an index-only lookup, and "tracks ranked first as X" starts from the identity.
    __table_args__ = (
        Index("ix_results_probe_key_run_id", "probe_key", "run_id"),
        Index("ix_results_identity_id_rank", "identity_id", "rank"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    probe_key: Mapped[str] = mapped_column(String(96), index=True)
    video_id: Mapped[int | None] = mapped_column(ForeignKey("videos.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    fused_llr: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # modality -> score, llr
    decision: Mapped[str] = mapped_column(String(16))  # match | unknown
    # What the probe's decision was taken on (the same on each of its rows; migration 0003),
    # so the analyst page explains it as it was decided, whatever the gallery became since.
    # NULL on rows written before 0003.
    threshold_llr: Mapped[float | None] = mapped_column(Float)  # the open-set threshold
    threshold_from: Mapped[str | None] = mapped_column(String(16))  # prior | operator
    prior_in_gallery: Mapped[float | None] = mapped_column(Float)
    gallery_size: Mapped[int | None] = mapped_column(Integer)  # comparable identities (N)
    gallery_version: Mapped[int | None] = mapped_column(Integer)  # None: live enrollments
    fusion_method: Mapped[str | None] = mapped_column(String(32))


def redact_url(text: str, url: str | None = None) -> str:
    """`text` (a database URL, or a message that may quote `url`) with the password masked."""
    url = text if url is None else url
    scheme, sep, rest = url.partition("://")
    credentials = rest.rpartition("@")[0] if sep else url.rpartition("@")[0]
    user, colon, password = credentials.partition(":")
    if not colon or not password:
        return text
    return text.replace(f"{user}:{password}@", f"{user}:***@").replace(password, "***")


class Catalog:
    """Thin access layer: sessions plus the few queries the stages need."""

    def __init__(self, url: str, upgrade: bool = True) -> None:
        """Open the catalog and bring its schema to the newest migration (`upgrade=False`:
        leave the schema as it is, for tests of the migrations themselves)."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url, future=True)
            if url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            if upgrade:
                from biofuse.migrations import upgrade_to_head

                upgrade_to_head(self.engine)
        except (SQLAlchemyError, ValueError) as exc:
            # never the database password: neither the URL nor an error that quotes it
            raise CatalogError(
                f"cannot open the catalog at {redact_url(url)}: {redact_url(str(exc), url)}"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except Exception:
                session.rollback()
                raise

    # -- videos ---------------------------------------------------------------------
    def register_video(self, content_hash: str, path: str, size_bytes: int) -> Video:
        """The video row for this content; the same bytes under a new name are one video."""
        with self.session() as s:
            video = s.scalar(select(Video).where(Video.content_hash == content_hash))
            if video is None:
                video = Video(content_hash=content_hash, path=path, size_bytes=size_bytes)
                s.add(video)
                s.flush()
            elif video.path != path and video.status != DONE:
                video.path = path
            return video

    def video(self, video_id: int) -> Video:
        with self.session() as s:
            video = s.get(Video, video_id)
            if video is None:
                raise CatalogError(f"no video with id {video_id}")
            return video

    def update_video(self, video_id: int, **fields: Any) -> None:
        with self.session() as s:
            video = s.get(Video, video_id)
            if video is None:
                raise CatalogError(f"no video with id {video_id}")
            for name, value in fields.items():
                setattr(video, name, value)

    def replace_video_evidence(
        self, video_id: int, tracks: list[Track], segments: list[tuple[SpeechSegment, str | None]]
    ) -> None:
        """Tracks and speech segments of one video, written in one transaction.

        `segments` pairs each segment with the key of the track it belongs to (or None).
        Earlier rows of a failed attempt are replaced, so a retry never duplicates.
        """
        with self.session() as s:
            for model in (SpeechSegment, Track):
                for row in s.scalars(select(model).where(model.video_id == video_id)):
                    s.delete(row)
            s.flush()
            by_key = {}
            for track in tracks:
                track.video_id = video_id
                s.add(track)
                by_key[track.key] = track
            s.flush()
            for segment, track_key in segments:
                segment.video_id = video_id
                segment.track_id = by_key[track_key].id if track_key else None
                s.add(segment)

    def claim_video(self, video_id: int, owner: str, lease_s: float) -> bool:
        """Take the video for `owner` for `lease_s` seconds; False if done or leased to another.

        One conditional UPDATE, so the claim is atomic on SQLite and PostgreSQL alike;
        a lease its owner stopped renewing (a killed worker) expires and can be re-claimed.
        The owner may re-claim its own lease (a task retry).
        """
        now = utcnow()
        claim = (
            update(Video)
            .where(
                Video.id == video_id,
                Video.status != DONE,
                or_(
                    Video.lease_owner.is_(None),
                    Video.lease_owner == owner,
                    Video.lease_expires_at < now,
                ),
            )
            .values(
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_s),
                status=RUNNING,
                attempts=Video.attempts + 1,
                error=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            return s.execute(claim).rowcount == 1

    def renew_lease(self, video_id: int, owner: str, lease_s: float) -> bool:
        """Push the expiry forward; False if the lease was lost (expired and re-claimed)."""
        renew = (
            update(Video)
            .where(Video.id == video_id, Video.lease_owner == owner)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            return s.execute(renew).rowcount == 1

    def release_video(self, video_id: int, owner: str, **fields: Any) -> bool:
        """Set `fields` (the outcome) and drop the lease, only if `owner` still holds it."""
        release = (
            update(Video)
            .where(Video.id == video_id, Video.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **fields)
            .execution_options(synchronize_session=False)
        )
        with self.session() as s:
            return s.execute(release).rowcount == 1

    def video_counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(Video.status, func.count()).group_by(Video.status)).all()
            return {status: count for status, count in rows}

    # -- identities -----------------------------------------------------------------
    def identity(self, name: str, create: bool = False) -> Identity | None:
        with self.session() as s:
            found = s.scalar(select(Identity).where(Identity.name == name))
            if found is None and create:
                found = Identity(name=name)
                s.add(found)
                s.flush()
            return found

    # -- runs -----------------------------------------------------------------------
    def start_run(self, kind: str, params: dict[str, Any]) -> int:
        with self.session() as s:
            run = Run(kind=kind, params=params)
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.status, run.summary, run.finished_at = status, summary, utcnow()


WAL_SWITCH_TRIES = 100  # x 0.1 s: two processes opening a new catalog at once


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The wait first, so that every statement after it waits out another process's lock;
    # foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    _ensure_wal(cursor)
    cursor.close()


def _ensure_wal(cursor: Any) -> None:
    """WAL lets the CLI read status while a flow writes. It is a property of the file, so
    only the first connection switches; when two `biofuse process` runs open a new catalog
    together, the switch can answer "database is locked" without waiting (seen on CI), so
    it is retried for a while."""
    import sqlite3
    import time

    for attempt in range(WAL_SWITCH_TRIES):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_TRIES - 1:
                raise
            time.sleep(0.1)


# -- gallery versions and the analyst audit log (ops issue; appended, owned by flows/rebuild.py
# and biofuse/serve) ------------------------------------------------------------------------
class GalleryVersion(Base):
    """One built gallery (templates + calibration under `path`); exactly one row is current.

    Readers resolve the current row once and read only its folder, which is complete
    before the row exists, so switching versions is one catalog transaction.
    """

    __tablename__ = "gallery_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # sha256 of the inputs
    current: Mapped[bool] = mapped_column(default=False, index=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One analyst query: who asked what, from where, when, and which results they were shown.

    Requests that show no data (refused ones, the public page) from one client are counted
    on one row per minute (`request_count`, `last_at`) rather than one row each.
    """

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(200))  # method and path
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[int] = mapped_column(Integer)  # HTTP status returned
    result_count: Mapped[int] = mapped_column(Integer, default=0)
    result_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)  # first 200 ids shown
    client: Mapped[str | None] = mapped_column(String(64), index=True)  # the peer's address
    request_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
