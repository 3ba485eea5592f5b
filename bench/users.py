"""Bench users: signed up through Envoy, with credits granted the way an operator grants them."""

from __future__ import annotations

import uuid

import httpx

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.config import Config


def sign_in(api: httpx.Client, config: Config, credits: int = 0) -> dict:
    """A new user's auth headers; with `credits`, that many are granted on top of the welcome credits."""
    email, password = f"bench-{uuid.uuid4().hex[:10]}@example.com", "bench password 1"
    api.post("/v1/auth/signup", json={"email": email, "password": password}).raise_for_status()
    tokens = api.post("/v1/auth/login", json={"email": email, "password": password}).json()["tokens"]
    headers = {"authorization": f"Bearer {tokens['accessToken']}"}
    if credits:
        user = api.get("/v1/auth/me", headers=headers).json()["user"]["name"]
        operator = {SERVICE_TOKEN_HEADER: ServiceCredentials("bench", config.service_secret).token()}
        grant = {"user": user, "credits": str(credits), "description": "benchmark credits", "requestId": uuid.uuid4().hex}
        api.post("/v1/admin/credits", headers=operator, json=grant).raise_for_status()
    return headers
