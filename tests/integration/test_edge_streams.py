"""Envoy serves a gRPC server stream to a browser as Server-Sent Events.

No Octavia RPC streams yet (WatchJob comes with the job pipeline), so this
uses the edge the benchmark builds: the stack's own envoy.yaml, rendered for
a second Envoy with one more route, to a bare echo service that streams.
"""

from __future__ import annotations

import json

import httpx
import pytest

from bench.api.edge import echo_edge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(stack):
    with echo_edge() as base:
        yield base


def test_a_server_stream_reaches_a_browser_as_server_sent_events(edge):
    with httpx.stream("GET", f"{edge}/v1/bench/echo:stream", params={"message": "hello", "count": 3}, timeout=10) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in reply.iter_lines() if line.startswith("data: ")]
    assert [json.loads(event)["message"] for event in events] == ["hello 0", "hello 1", "hello 2"]


def test_the_same_edge_still_routes_to_the_stacks_services(edge):
    reply = httpx.get(f"{edge}/v1/auth/me", timeout=10)
    assert reply.status_code == 401, "the rendered config keeps every route of envoy.yaml"
