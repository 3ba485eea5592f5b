"""PostgreSQL: one database, one schema per service, versioned SQL migrations.

Each service owns `services/<name>/migrations/NNNN_description.sql`. At start
the service applies the ones not yet recorded in `<schema>.schema_migrations`,
each in its own transaction, under an advisory lock so that replicas starting
together apply them once. The pool's connections use the service's schema as
their search_path, so the service's SQL never names another schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("db")
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """A migration file failed: waiting will not fix it, so the service stops."""


def migrations_in(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if not match:
            raise ValueError(f"migration file {path} must be named NNNN_description.sql")
        found.append((int(match.group(1)), path))
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations in {folder} share a version number")
    return found


async def migrate(con: asyncpg.Connection, schema: str, folder: Path) -> list[int]:
    """Apply the pending migrations of `folder` to `schema`; returns the versions applied."""
    applied_now = []
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"octavia.migrate.{schema}")
        await con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await con.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await con.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        for version, path in migrations_in(folder):
            if version in done:
                continue
            await con.execute(f'SET LOCAL search_path TO "{schema}"')
            try:
                await con.execute(path.read_text())
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {path.name} of schema {schema} failed: {exc}") from exc
            await con.execute(f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)', version, path.name)
            applied_now.append(version)
            log.info("db.migrated", schema=schema, version=version, file=path.name)
    return applied_now


async def _init_connection(con: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await con.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(url: str, schema: str, migrations: Path | None, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Migrate the service's schema, then open its pool (search_path = the schema)."""
    if migrations is not None and migrations.is_dir():
        con = await asyncpg.connect(url, timeout=5)
        try:
            await migrate(con, schema, migrations)
        finally:
            await con.close()
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": schema, "application_name": f"octavia-{schema}"},
        timeout=5,
    )
