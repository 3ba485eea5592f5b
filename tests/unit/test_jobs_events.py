"""Which failures to apply a stage event are tried again, and which fail the job at once."""

from __future__ import annotations

import asyncpg
import grpc
import nats.errors
import pytest
import redis.exceptions

from services.jobs.runner import _describe, _retryable


class PeerError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "peer said no"):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    "error",
    [
        PeerError(grpc.StatusCode.UNAVAILABLE),
        PeerError(grpc.StatusCode.DEADLINE_EXCEEDED),
        ConnectionRefusedError(),
        asyncpg.PostgresConnectionError("connection lost"),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.SerializationError("could not serialize"),
        redis.exceptions.ConnectionError(),
        TimeoutError(),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        nats.errors.NoRespondersError(),
    ],
)
def test_a_server_away_for_a_moment_is_tried_again(error):
    assert _retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        PeerError(grpc.StatusCode.INVALID_ARGUMENT),
        PeerError(grpc.StatusCode.FAILED_PRECONDITION),
        PeerError(grpc.StatusCode.NOT_FOUND),
        KeyError("priority"),
        ValueError("bad value"),
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
    ],
)
def test_an_event_that_cannot_be_applied_is_not_retried(error):
    assert not _retryable(error)


def test_the_reason_given_is_short_and_names_what_failed():
    assert _describe(PeerError(grpc.StatusCode.INVALID_ARGUMENT, "filename: " + "x" * 5000)).startswith(
        "INVALID_ARGUMENT: filename: xxx"
    )
    assert len(_describe(ValueError("y" * 5000))) <= 300
    assert _describe(KeyError()) == "KeyError"
