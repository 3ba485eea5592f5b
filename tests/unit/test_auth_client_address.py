"""The client address that per-address rate limits count: Envoy's own X-Forwarded-For entry, else the peer."""

from __future__ import annotations

import contextvars

import pytest

from octavia_runtime.auth import client_address, set_client


class _Context:
    def __init__(self, peer: str):
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def _address(forwarded_for: str, peer: str) -> str:
    def within_a_call() -> str:
        set_client(forwarded_for, _Context(peer))
        return client_address()

    return contextvars.copy_context().run(within_a_call)


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        # Earlier entries come from the client and can say anything: only Envoy's last one counts.
        ("1.2.3.4, 198.51.100.23", "198.51.100.23"),
        ("spoofed,2001:db8::7", "2001:db8::7"),
    ],
)
def test_through_envoy_the_last_forwarded_for_entry_is_the_client(forwarded_for, expected):
    assert _address(forwarded_for, "ipv4:127.0.0.1:40000") == expected


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:192.0.2.10:51234", "192.0.2.10"),
        ("ipv6:[2001:db8::1]:51234", "2001:db8::1"),
        ("ipv6:[::1]:8080", "::1"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_a_direct_grpc_caller_is_its_connection_peer_without_the_port(peer, expected):
    assert _address("", peer) == expected
