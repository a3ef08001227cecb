"""Alembic migrations of the catalog schema, applied by `Catalog` when it opens a database.

Why on open rather than a separate `biofuse db upgrade` step: every entry point (CLI,
flows, workers on other machines, the analyst server) opens the catalog the same way, so
a new release can never run against an old schema, and an operator has nothing to forget.
Concurrent openers are serialised (a PostgreSQL advisory lock, a lock file beside a
SQLite file), and a database already at the newest revision costs one SELECT.

Databases created before migrations existed (tables but no `alembic_version`) hold the
schema of revision 0001 and are stamped as such before upgrading.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, inspect, text

HERE = Path(__file__).resolve().parent
FIRST_REVISION = "0001"
_PG_LOCK_KEY = 0x62696F66  # "biof": one advisory lock id for biofuse schema changes


def alembic_config(connection: Connection | None = None) -> Config:
    """A Config pointing at this package; `connection` is used by env.py when given."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "biofuse/migrations/versions holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Only one process migrates a database at a time."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                conn.commit()
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with FileLock(f"{engine.url.database}.migrate.lock", timeout=300):
            yield
    else:
        yield


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`, adopting a pre-migration database as 0001."""
    with _migration_lock(engine), engine.begin() as conn:
        if current_revision(conn) is None and inspect(conn).has_table("videos"):
            command.stamp(alembic_config(conn), FIRST_REVISION)
        command.upgrade(alembic_config(conn), revision)


def upgrade_to_head(engine: Engine) -> None:
    """The fast path for every open: one SELECT when the schema is already current."""
    with engine.connect() as conn:
        if current_revision(conn) == head_revision():
            return
    upgrade(engine)
