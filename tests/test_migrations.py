"""Alembic migrations: the migrated schema is exactly the models', on SQLite and PostgreSQL,
from an empty database and from the previous revision, with the data kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from biofuse import migrations
from biofuse.catalog import DONE, Base, Catalog


def database_urls() -> list:
    """SQLite always; PostgreSQL when BIOFUSE_TEST_POSTGRES_URL names a server (make test)."""
    pg = os.environ.get("BIOFUSE_TEST_POSTGRES_URL")
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            pg,
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not pg, reason="set BIOFUSE_TEST_POSTGRES_URL (make test starts a server)"
                ),
            ],
        ),
    ]


def empty_postgres(url: str) -> None:
    """Drop every table of the test database, alembic's bookkeeping included."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=database_urls())
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    empty_postgres(request.param)
    return request.param


def schema_diff(engine: Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrations.current_revision(conn)


def test_upgrade_from_empty_gives_exactly_the_models_schema(empty_url: str) -> None:
    catalog = Catalog(empty_url)  # opening migrates
    assert revision(catalog.engine) == migrations.head_revision() != migrations.FIRST_REVISION
    assert schema_diff(catalog.engine) == []
    catalog.engine.dispose()


def test_upgrade_from_0001_keeps_the_data(empty_url: str) -> None:
    engine = create_engine(empty_url)
    migrations.upgrade(engine, migrations.FIRST_REVISION)
    assert revision(engine) == "0001"
    assert "lease_owner" not in {c["name"] for c in inspect(engine).get_columns("videos")}
    stamp = "2026-01-02 03:04:05"
    with engine.begin() as conn:  # rows as the 0001 code wrote them
        conn.execute(
            text(
                "INSERT INTO videos (id, content_hash, path, size_bytes, status, attempts,"
                " created_at, updated_at) VALUES (7, :h, '/a/x.mp4', 10, 'done', 1, :t, :t)"
            ),
            {"h": "c" * 64, "t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO tracks (key, video_id, kind, start_s, end_s, n_detections, boxes)"
                " VALUES ('k:t0000', 7, 'face', 0.5, 4.0, 12, '[]')"
            )
        )
    migrations.upgrade(engine)
    assert revision(engine) == migrations.head_revision()
    assert schema_diff(engine) == []
    catalog = Catalog(empty_url)
    video = catalog.video(7)
    assert (video.path, video.status, video.lease_owner) == ("/a/x.mp4", DONE, None)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT end_s FROM tracks WHERE video_id = 7")).scalar() == 4.0
    engine.dispose()
    catalog.engine.dispose()


def test_catalog_made_before_migrations_is_adopted_as_0001(empty_url: str) -> None:
    engine = create_engine(empty_url)
    migrations.upgrade(engine, migrations.FIRST_REVISION)
    with engine.begin() as conn:  # what `create_all` left before migrations existed
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO identities (name, created_at) VALUES ('alice', '2026-01-01 00:00:00')"
            )
        )
    catalog = Catalog(empty_url)
    assert revision(engine) == migrations.head_revision()
    assert catalog.identity("alice") is not None
    assert schema_diff(engine) == []
    engine.dispose()
    catalog.engine.dispose()


def test_unversioned_catalog_with_todays_tables_upgrades_without_clashing(empty_url: str) -> None:
    """A development catalog that `create_all` made from newer models (no alembic_version)."""
    engine = create_engine(empty_url)
    Base.metadata.create_all(engine)
    Catalog(empty_url).engine.dispose()
    assert revision(engine) == migrations.head_revision()
    assert schema_diff(engine) == []
    engine.dispose()


def test_upgrade_from_0002_keeps_results_and_adds_their_decision_basis(empty_url: str) -> None:
    """0003 adds, per result, what its decision was taken on; rows written before keep their
    values with no recorded basis (NULL), and the step can be undone."""
    from alembic import command

    engine = create_engine(empty_url)
    migrations.upgrade(engine, "0002")
    stamp = "2026-01-02 03:04:05"
    with engine.begin() as conn:  # a result as the 0002 code wrote it
        conn.execute(
            text(
                "INSERT INTO runs (id, kind, status, params, summary, started_at)"
                " VALUES (1, 'identify', 'done', '{}', '{}', :t)"
            ),
            {"t": stamp},
        )
        conn.execute(
            text("INSERT INTO identities (id, name, created_at) VALUES (1, 'alice', :t)"),
            {"t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO results (run_id, probe_key, rank, identity_id, fused_llr, scores,"
                " decision) VALUES (1, 'v:t0000', 1, 1, 2.5, '{}', 'match')"
            )
        )
    migrations.upgrade(engine)
    assert revision(engine) == migrations.head_revision()
    assert schema_diff(engine) == []
    basis = "threshold_llr, threshold_from, prior_in_gallery, gallery_size, gallery_version"
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT fused_llr, decision, {basis}, fusion_method FROM results"))
        assert row.one() == (2.5, "match", None, None, None, None, None, None)
    with engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0002")
    assert "threshold_llr" not in {c["name"] for c in inspect(engine).get_columns("results")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT fused_llr FROM results")).scalar() == 2.5
    engine.dispose()
