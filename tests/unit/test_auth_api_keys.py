"""API key rules that need no servers: the secret's shape, who may manage keys, what a bad key costs."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import grpc
import pytest
import redis.asyncio as redis

from octavia_runtime.auth import Principal
from octavia_runtime.errors import ApiError
from services.auth.apikeys import ApiKeys
from services.auth.store import ApiKeyRow

USER = Principal(kind="user", user_id=str(uuid.uuid4()), session=str(uuid.uuid4()))
KEY = Principal(kind="api_key", user_id=USER.user_id, session=f"apiKeys/{uuid.uuid4()}")


class _Store:
    """Keeps what create_api_key is given; any lookup fails the test."""

    def __init__(self):
        self.created = []

    async def create_api_key(self, user_id, display_name, prefix, secret_hash):
        self.created.append((user_id, display_name, prefix, secret_hash))
        return ApiKeyRow(uuid.uuid4(), display_name, prefix, datetime.now(UTC), None)

    async def use_api_key(self, secret_hash, touch_every_s):
        pytest.fail("a malformed key must be refused without a database lookup")


def _keys(store=None) -> ApiKeys:
    return ApiKeys(store or _Store(), redis.Redis())  # never connected: these rules need no Valkey


async def test_a_new_key_is_shown_once_with_its_prefix_and_only_its_hash_is_kept():
    store = _Store()
    row, secret = await _keys(store).create(USER, "  CI deploys ")
    scheme, prefix, random_part = secret.split("_", 2)
    assert scheme == "oct" and len(prefix) == 8 and len(random_part) == 43  # 256 random bits
    assert row.display_name == "CI deploys" and row.prefix == f"oct_{prefix}"
    ((user_id, _, _, secret_hash),) = store.created
    assert user_id == uuid.UUID(USER.user_id)
    assert secret_hash == hashlib.sha256(secret.encode()).digest()
    assert secret.encode() not in secret_hash
    assert (await _keys().create(USER, "another"))[1] != secret


@pytest.mark.parametrize(("name", "problem"), [("   ", "is required"), ("x" * 101, "at most 100")])
async def test_a_key_needs_a_short_label(name, problem):
    with pytest.raises(ApiError) as caught:
        await _keys().create(USER, name)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and problem in caught.value.fields["display_name"]


async def test_a_key_cannot_create_or_delete_keys():
    for attempt in (_keys().create(KEY, "successor"), _keys().delete(KEY, uuid.uuid4(), "apiKeys/x")):
        with pytest.raises(ApiError) as caught:
            await attempt
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.reason == "ACCESS_TOKEN_REQUIRED"


@pytest.mark.parametrize(
    "secret",
    ["", "garbage", "oct_", "oct_1234567_" + "a" * 43, "oct_1234567g_" + "a" * 43, "oct_12345678_" + "a" * 42, "x" * 200],
)
async def test_a_malformed_key_is_refused_without_a_lookup(secret):
    with pytest.raises(ApiError) as caught:
        await _keys().authenticate(secret)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED and caught.value.reason == "INVALID_API_KEY"
