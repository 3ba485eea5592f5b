"""Rate limits kept in Valkey, shared by every replica of a service.

Each limit is a generic cell rate algorithm (GCRA): `requests` per `period_s`
spread evenly, with a burst of up to `requests` at once. One Valkey key per
limited thing holds its "theoretical arrival time"; one script call checks and
records a request atomically, on Valkey's clock, so replicas and their clocks
agree. Over the limit is RESOURCE_EXHAUSTED (HTTP 429 through Envoy) with
reason RATE_LIMITED, a google.rpc.RetryInfo and a `retry-after` header saying
when the next request would pass.
"""

from __future__ import annotations

import math

import grpc
import redis.asyncio as redis

from .config import RateLimit
from .errors import ApiError

KEY = "ratelimit:{name}:{key}"

# KEYS[1]: the cell; ARGV: interval between requests (µs), burst window (µs), cost (1 to record, 0 to peek).
# Returns 0 when the request passes (recorded unless peeking), else the microseconds until one would.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - window - now
if wait > 0 then return wait end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
end
return 0
"""


class RateLimited(ApiError):
    def __init__(self, what: str, retry_after_s: int):
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            f"too many {what}; try again in {retry_after_s} s",
            metadata={"limit": what},
            retry_after_s=retry_after_s,
        )


class Limiter:
    """One named limit, e.g. `Limiter(rt.redis, "signup_address", config.rate_limits["signup_address"], "sign-ups")`."""

    def __init__(self, cache: redis.Redis, name: str, limit: RateLimit, what: str):
        self.name = name
        self.what = what
        self._interval_us = limit.period_s * 1_000_000 // limit.requests
        self._window_us = limit.period_s * 1_000_000
        self._script = cache.register_script(_GCRA)

    async def hit(self, key: str) -> None:
        """Count one request for `key`; raise RateLimited if it is over the limit (then nothing is counted)."""
        await self._run(key, record=True)

    async def check(self, key: str) -> None:
        """Raise RateLimited if a request for `key` would be over the limit, without counting one."""
        await self._run(key, record=False)

    async def _run(self, key: str, *, record: bool) -> None:
        cell = KEY.format(name=self.name, key=key)
        wait_us = int(await self._script(keys=[cell], args=[self._interval_us, self._window_us, int(record)]))
        if wait_us > 0:
            raise RateLimited(self.what, max(1, math.ceil(wait_us / 1_000_000)))

    async def reset(self, key: str) -> None:
        await self._script.registered_client.delete(KEY.format(name=self.name, key=key))
