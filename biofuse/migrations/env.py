"""Alembic environment: run against the connection biofuse hands over (see __init__.py).

`alembic -c ...` from the command line is not used; `Catalog` and the tests call
`biofuse.migrations.upgrade`, which passes a live connection in `config.attributes`.
"""

from __future__ import annotations

from alembic import context

from biofuse.catalog import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "biofuse migrations run through biofuse.migrations.upgrade(engine) "
        "(opening a Catalog does it), not through the alembic command line"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by table copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
