"""bench/billing: CreateJob with its credit hold through Envoy, beside GetJob, at 20 clients.

    python -m bench.billing [--clients 20] [--requests 30] [--rounds 2]

Every client is its own user (so the per-user creation limit is not what is
measured) with an uploaded clip. Each round, alternately, every client sends
`--requests` CreateJob calls back to back (REST/JSON, HTTP/1.1 through Envoy:
validation, the asset's probe from media beside the hold's reservation row,
billing's ReserveCredits, and the job's insert with its first task), then
as many GetJob calls. Meanwhile the media workers' consumers are paused
(JetStream consumer pause), so the jobs wait queued instead of loading the 2
cores the calls are measured on; at the end they are cancelled and the
consumers resumed. Printed: throughput and p50/p99 of each, and the
hold's own p50/p99 from the jobs service's `octavia_jobs_credit_hold_seconds`
histogram over the CreateJob phases (what the hold adds to CreateJob).
Target: hold p50 <= 10 ms.

Needs the stack (`make up`; started here if it is not running).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats

from octavia_runtime import bus
from octavia_runtime.config import Config, load
from scripts import sample_media
from scripts import stack as local_stack
from tests.integration.jobs_flow import uploaded_asset

from ..users import sign_in

TARGET_HOLD_P50_MS = 10.0
HOLD_METRIC = "octavia_jobs_credit_hold_seconds"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def hold_buckets(metrics_url: str) -> dict[float, float]:
    """The cumulative bucket counts of the hold histogram: {upper bound in s: count}."""
    buckets = {}
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith(f"{HOLD_METRIC}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile (in ms) of cumulative histogram buckets, interpolated within its bucket."""
    counts = sorted(buckets.items())
    total = counts[-1][1]
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower * 1000
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, cumulative
    return lower * 1000


async def phase(api: str, clients: list[tuple[dict, str]], requests: int, call) -> tuple[list[float], float]:
    """Every client makes `requests` calls back to back; the latencies (ms) and the wall time."""
    latencies: list[float] = []

    async def client(headers: dict, target: str) -> None:
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
            for _ in range(requests):
                started = time.perf_counter()
                reply = await call(http, target)
                latencies.append((time.perf_counter() - started) * 1000)
                if reply.status_code != 200:
                    raise SystemExit(f"{reply.request.method} {reply.request.url.path}: {reply.status_code} {reply.text}")

    started = time.perf_counter()
    await asyncio.gather(*(client(headers, target) for headers, target in clients))
    return latencies, time.perf_counter() - started


async def create(http: httpx.AsyncClient, asset: str) -> httpx.Response:
    job = {
        "kind": "JOB_KIND_TRANSCRIPTION",
        "inputAsset": asset,
        "priority": "PRIORITY_LOW",
        "transcriptionOptions": {"model": "tiny.en"},
    }
    return await http.post("/v1/jobs", json={"job": job})


async def get(http: httpx.AsyncClient, job: str) -> httpx.Response:
    return await http.get(f"/v1/{job}")


async def pause_media(config: Config, paused: bool) -> None:
    """Pause (for at most 10 minutes, should this process die) or resume the media workers' consumers."""
    until = datetime.now(UTC) + timedelta(minutes=10) if paused else datetime(1970, 1, 1, tzinfo=UTC)
    nc = await nats.connect(config.nats_url)
    try:
        for consumer in bus.stage_workers("media"):
            await nc.jetstream().pause_consumer(consumer.stream, consumer.durable, until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    finally:
        await nc.close()


def cancel_all(api: httpx.Client, headers: dict) -> None:
    while listed := api.get("/v1/jobs?pageSize=100&state=STATE_QUEUED", headers=headers).json().get("jobs", []):
        for job in listed:
            api.post(f"/v1/{job['name']}:cancel", headers=headers, json={})


def report(name: str, latencies: list[float], wall: float) -> None:
    print(
        f"{name:<34} {len(latencies) / wall:8.1f} req/s   p50 {statistics.median(latencies):6.1f} ms"
        f"   p99 {percentile(latencies, 99):6.1f} ms   ({len(latencies)} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="CreateJob with holds vs GetJob through Envoy")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=30, help="calls per client per phase")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    config = load()
    if not local_stack.is_up(config):
        local_stack.up(config)
    base = f"http://127.0.0.1:{config.envoy_port}"
    metrics_url = f"http://127.0.0.1:{config.endpoint('jobs').metrics_port}/metrics"
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=base, timeout=60) as api:
        clip = sample_media.sample_video(Path(tmp) / "talk.mp4")
        clients = []
        for _ in range(args.clients):
            headers = sign_in(api, config, credits=100_000)
            clients.append((headers, uploaded_asset(api, headers, clip)))
        asyncio.run(pause_media(config, True))
        try:
            measure(base, metrics_url, clients, args)
        finally:
            for headers, _ in clients:  # the jobs were only there to be created
                cancel_all(api, headers)
            asyncio.run(pause_media(config, False))


def measure(base: str, metrics_url: str, clients: list[tuple[dict, str]], args: argparse.Namespace) -> None:
    with httpx.Client(base_url=base, timeout=60) as api:
        # A first job per client: its GetJob target, and warm connections and caches.
        targets = []
        for headers, asset in clients:
            job = api.post("/v1/jobs", headers=headers, json={"job": {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset}})
            targets.append((headers, job.raise_for_status().json()["job"]["name"]))

        created, fetched, create_wall, get_wall = [], [], 0.0, 0.0
        holds: dict[float, float] = {}  # the hold histogram's counts during the CreateJob phases only
        for _ in range(args.rounds):
            before = hold_buckets(metrics_url)
            latencies, wall = asyncio.run(phase(base, clients, args.requests, create))
            for bound, count in hold_buckets(metrics_url).items():
                holds[bound] = holds.get(bound, 0.0) + count - before.get(bound, 0.0)
            created += latencies
            create_wall += wall
            latencies, wall = asyncio.run(phase(base, targets, args.requests, get))
            fetched += latencies
            get_wall += wall

        print(f"bench/billing: {args.clients} clients, {args.requests} calls each per phase, {args.rounds} rounds, through Envoy")
        report("CreateJob (with its credit hold)", created, create_wall)
        report("GetJob", fetched, get_wall)
        p50, p99 = (histogram_quantile(holds, q) for q in (0.5, 0.99))
        verdict = "met" if p50 <= TARGET_HOLD_P50_MS else "NOT met"
        print(
            f"{'the hold inside CreateJob':<34} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   (target p50 <= {TARGET_HOLD_P50_MS:.0f} ms: {verdict})"
        )


if __name__ == "__main__":
    main()
