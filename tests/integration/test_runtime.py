"""The shared runtime against the real servers: migrations, JetStream, graceful shutdown."""

from __future__ import annotations

import signal
import uuid

import asyncpg
import pytest
from nats.js.api import AckPolicy

from octavia_runtime import bus, db
from octavia_runtime.config import ROOT

from .replicas import replica

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_into_the_services_own_schema(stack, tmp_path):
    schema = f"t_{uuid.uuid4().hex[:8]}"
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "0002_more.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    con = await asyncpg.connect(stack.database_url)
    try:
        assert await db.migrate(con, schema, tmp_path) == [1, 2]
        assert await db.migrate(con, schema, tmp_path) == [], "a restart applies nothing again"
        where = await con.fetchval("SELECT table_schema FROM information_schema.tables WHERE table_name = 'things'")
        assert where == schema
        (tmp_path / "0003_broken.sql").write_text("ALTER TABLE nowhere ADD COLUMN x int;")
        with pytest.raises(db.MigrationError, match="0003_broken.sql"):
            await db.migrate(con, schema, tmp_path)
        versions = await con.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
        assert [row["version"] for row in versions] == [1, 2], "a failed migration leaves no trace"
    finally:
        await con.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await con.close()


async def test_every_service_schema_exists_with_its_migrations(stack):
    con = await asyncpg.connect(stack.database_url)
    try:
        for schema in ("auth", "jobs", "billing", "media"):
            applied = await con.fetchval(f'SELECT count(*) FROM "{schema}".schema_migrations')
            assert applied == len(db.migrations_in(ROOT / "services" / schema / "migrations"))
    finally:
        await con.close()


async def test_the_ledger_refuses_edits_and_unbalanced_movements(stack):
    con = await asyncpg.connect(stack.database_url, server_settings={"search_path": "billing"})
    outer = con.transaction()
    await outer.start()
    try:
        # Checked per statement rather than at commit, so all of it can be rolled back after.
        await con.execute("SET CONSTRAINTS ALL IMMEDIATE")
        movement = await con.fetchval("INSERT INTO movements (reason, reference) VALUES (1, 'test') RETURNING id")
        with pytest.raises(asyncpg.RaiseError, match="does not balance"):
            async with con.transaction():
                await con.execute("INSERT INTO entries (movement_id, account, amount) VALUES ($1, 'test/a', 5)", movement)
        await con.execute(
            "INSERT INTO entries (movement_id, account, amount) VALUES ($1, 'test/a', 5), ($1, 'test/b', -5)", movement
        )
        for change in ("UPDATE entries SET amount = 6 WHERE movement_id = $1", "DELETE FROM entries WHERE movement_id = $1"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                async with con.transaction():
                    await con.execute(change, movement)
    finally:
        await outer.rollback()
        await con.close()


async def test_jetstream_streams_and_worker_consumers_are_declared_and_redeclaring_is_harmless(stack):
    nc = await bus.connect(stack.nats_url, "test")
    try:
        js = nc.jetstream()
        await bus.declare(js, bus.stage_workers("media"))  # a second declaration changes nothing
        tasks = await js.stream_info(bus.TASKS_STREAM)
        assert tasks.config.subjects == ["octavia.tasks.>"]
        for service in ("media", "transcribe", "translate", "tts"):
            for priority, wanted in zip(bus.PRIORITIES, bus.stage_workers(service), strict=True):
                consumer = await js.consumer_info(bus.TASKS_STREAM, f"{service}-worker-{priority}")
                assert consumer.config.filter_subjects == list(wanted.subjects)
                assert all(subject.endswith(f".{priority}") for subject in wanted.subjects)
        orchestrator = await js.consumer_info(bus.EVENTS_STREAM, bus.ORCHESTRATOR.durable)
        assert orchestrator.config.ack_policy == AckPolicy.EXPLICIT
    finally:
        await nc.close()


def test_a_service_shuts_down_gracefully_on_sigterm(stack, tmp_path):
    with replica(stack, "transcribe", tmp_path) as transcribe:
        transcribe.process.send_signal(signal.SIGTERM)
        assert transcribe.process.wait(timeout=15) == 0
        lines = transcribe.log.read_text()
        assert '"server.stopping"' in lines and '"server.stopped"' in lines
