"""Valkey (Redis protocol) client with a blocking connection pool.

The default pool raises once 100 connections are in use; a blocking pool makes
a burst of calls wait for a free connection instead.
"""

from __future__ import annotations

import redis.asyncio as redis


def connect(url: str, *, max_connections: int = 50, timeout_s: float = 5.0) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, decode_responses=True, socket_connect_timeout=timeout_s
    )
    return redis.Redis(connection_pool=pool)
