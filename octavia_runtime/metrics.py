"""Prometheus metrics of every service, served on its own HTTP port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_REQUESTS = Counter("octavia_rpc_requests", "RPCs handled, by method and status code", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "octavia_rpc_duration_seconds",
    "Time to handle an RPC, by method",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def serve(port: int) -> None:
    """Start the /metrics endpoint on 0.0.0.0:port in a background thread."""
    start_http_server(port)


STAGE_SECONDS = Histogram(
    "octavia_stage_duration_seconds",
    "Time a stage task took in a worker, by stage and outcome",
    ["stage", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
