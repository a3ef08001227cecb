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
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
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
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    probe_key: Mapped[str] = mapped_column(String(96), index=True)
    video_id: Mapped[int | None] = mapped_column(ForeignKey("videos.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    fused_llr: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # modality -> score, llr
    decision: Mapped[str] = mapped_column(String(16))  # match | unknown


class Catalog:
    """Thin access layer: sessions plus the few queries the stages need."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url, future=True)
            if url.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise CatalogError(f"cannot open the catalog at {url}: {exc}") from exc
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI read status while a flow writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
