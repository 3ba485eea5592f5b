"""Render the root envoy.yaml for a place to run it.

    python scripts/envoy_config.py                  # local: ports from OCTAVIA_* variables
    python scripts/envoy_config.py --target k8s > deploy/k8s/gateway/envoy.yaml
    python scripts/envoy_config.py --sync-services  # rewrite envoy.yaml's service list

envoy.yaml holds config.py's default ports. `render()` loads it and sets what
differs per target:

- local: listener/admin ports, each cluster's host:port and the CORS origins
  from `octavia_runtime.config.load()`, the absolute descriptor path;
- k8s: STRICT_DNS clusters on the Kubernetes Services (`<svc>:50051`), the
  descriptor at /etc/envoy/octavia.pb, listener 0.0.0.0:8080, admin 0.0.0.0:9901.

Besides one cluster per service, `blobs` is the media service's HTTP blob
server (signed upload and download URLs, route `/blobs/`): the media host on
`config.blob_port` locally, `media:50058` on Kubernetes.

In both, the transcoder's service list is every `octavia.*` service of the
descriptor set (build/gen/octavia.pb from `make proto`) when it exists, so a
new service proto cannot be forgotten; without it, envoy.yaml's list is kept.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from octavia_runtime.config import DEFAULT_BLOB_PORT, SERVICES, Config, load  # noqa: E402

TEMPLATE = ROOT / "envoy.yaml"
DESCRIPTOR_SET = ROOT / "build" / "gen" / "octavia.pb"

K8S_GRPC_PORT = 50051  # every Kubernetes Service exposes its gRPC port here, named grpc
K8S_BLOB_PORT = DEFAULT_BLOB_PORT  # the media Service's blob port, named http-blobs
BLOB_CLUSTER = "blobs"  # the media service's HTTP blob server
BLOB_SERVICE = "media"
K8S_DESCRIPTOR = "/etc/envoy/octavia.pb"
K8S_LISTEN = ("0.0.0.0", 8080)
K8S_ADMIN = ("0.0.0.0", 9901)

HCM = "envoy.filters.network.http_connection_manager"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
CORS = "envoy.filters.http.cors"
TARGETS = ("local", "k8s")


class TemplateError(ValueError):
    """envoy.yaml no longer has the shape this script edits."""


def descriptor_services(path: Path = DESCRIPTOR_SET) -> list[str]:
    """Fully-qualified names of the `octavia.*` services in a descriptor set,
    in config.SERVICES order (then by name)."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    names = {f"{f.package}.{s.name}" for f in files if f.package.startswith("octavia.") for s in f.service}

    def order(name: str) -> tuple[int, str]:
        svc = name.split(".")[1]
        return (SERVICES.index(svc) if svc in SERVICES else len(SERVICES), name)

    return sorted(names, key=order)


def _one(items: list[dict], what: str, **match: Any) -> dict:
    found = [i for i in items if all(i.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise TemplateError(f"envoy.yaml: expected one {what} with {match}, found {len(found)}")
    return found[0]


def parts(doc: dict) -> dict[str, Any]:
    """The pieces of the config that rendering (and the tests) look at."""
    static = doc["static_resources"]
    listener = static["listeners"][0]
    hcm = _one(listener["filter_chains"][0]["filters"], "network filter", name=HCM)["typed_config"]
    filters = hcm["http_filters"]
    vhost = hcm["route_config"]["virtual_hosts"][0]
    return {
        "admin": doc["admin"]["address"]["socket_address"],
        "listener": listener["address"]["socket_address"],
        "transcoder": _one(filters, "http filter", name=TRANSCODER)["typed_config"],
        "cors": vhost["typed_per_filter_config"][CORS],
        "routes": vhost["routes"],
        "clusters": {c["name"]: c for c in static["clusters"]},
        "http_filters": [f["name"] for f in filters],
    }


def _origin_matchers(origins: tuple[str, ...]) -> list[dict]:
    if "*" in origins:
        return [{"safe_regex": {"regex": ".*"}}]
    return [{"exact": o} for o in origins]


def _cluster_address(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def _on_kubernetes_service(cluster: dict, service: str, port: int) -> None:
    """Point a cluster at a Kubernetes Service's DNS name; Envoy re-resolves it as pods come and go."""
    cluster["type"] = "STRICT_DNS"
    _cluster_address(cluster).update(address=service, port_value=port)
    keys = list(cluster)
    keys.insert(keys.index("type") + 1, "dns_lookup_family")
    cluster["dns_lookup_family"] = "V4_PREFERRED"
    reordered = {k: cluster[k] for k in keys}
    cluster.clear()
    cluster.update(reordered)


def render(config: Config | None = None, target: str = "local", descriptor: Path | None = None) -> str:
    """envoy.yaml with `config`'s values for `target` ("local" or "k8s"), as YAML text."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    config = config or load()
    descriptor = DESCRIPTOR_SET if descriptor is None else Path(descriptor)
    doc = yaml.safe_load(TEMPLATE.read_text())
    p = parts(doc)

    if descriptor.exists():
        services = descriptor_services(descriptor)
        if not services:
            raise TemplateError(f"{descriptor} holds no octavia.* service")
        p["transcoder"]["services"] = services
    p["cors"]["allow_origin_string_match"] = _origin_matchers(config.cors_origins)

    missing = [s for s in (*SERVICES, BLOB_CLUSTER) if s not in p["clusters"]]
    if missing:
        raise TemplateError(f"envoy.yaml has no cluster for {', '.join(missing)}")

    if target == "local":
        p["admin"].update(address="127.0.0.1", port_value=config.envoy_admin_port)
        p["listener"]["port_value"] = config.envoy_port
        p["transcoder"]["proto_descriptor"] = str(descriptor.resolve())
        for name in SERVICES:
            ep = config.endpoint(name)
            _cluster_address(p["clusters"][name]).update(address=ep.host, port_value=ep.port)
        blob_host = config.endpoint(BLOB_SERVICE).host
        _cluster_address(p["clusters"][BLOB_CLUSTER]).update(address=blob_host, port_value=config.blob_port)
    else:
        p["admin"].update(address=K8S_ADMIN[0], port_value=K8S_ADMIN[1])
        p["listener"].update(address=K8S_LISTEN[0], port_value=K8S_LISTEN[1])
        p["transcoder"]["proto_descriptor"] = K8S_DESCRIPTOR
        for name in SERVICES:
            _on_kubernetes_service(p["clusters"][name], name, K8S_GRPC_PORT)
        _on_kubernetes_service(p["clusters"][BLOB_CLUSTER], BLOB_SERVICE, K8S_BLOB_PORT)

    header = f"# Rendered by scripts/envoy_config.py (target={target}) from envoy.yaml.\n# Edit envoy.yaml, not this file.\n"

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


_BLOCK = re.compile(
    r"(?P<head>^(?P<indent>[ \t]*)# BEGIN services.*?\n)(?P<body>.*?)(?P<tail>^[ \t]*# END services)", re.M | re.S
)


def sync_services(descriptor: Path = DESCRIPTOR_SET, template: Path = TEMPLATE) -> bool:
    """Rewrite the service list between envoy.yaml's BEGIN/END markers from the
    descriptor set, keeping the file's comments. True if the file changed."""
    text = template.read_text()
    m = _BLOCK.search(text)
    if not m:
        raise TemplateError(f"{template}: no '# BEGIN services' ... '# END services' block")
    body = "".join(f"{m['indent']}- {name}\n" for name in descriptor_services(descriptor))
    new = text[: m.start("body")] + body + text[m.end("body") :]
    if new != text:
        template.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGETS, default="local")
    ap.add_argument("--descriptor", type=Path, default=DESCRIPTOR_SET, help="descriptor set (default: %(default)s)")
    ap.add_argument(
        "--sync-services", action="store_true", help="rewrite envoy.yaml's transcoder service list from the descriptor set"
    )
    args = ap.parse_args(argv)
    try:
        if args.sync_services:
            changed = sync_services(args.descriptor)
            print(f"envoy.yaml: services {'updated' if changed else 'already up to date'}", file=sys.stderr)
            return 0
        sys.stdout.write(render(target=args.target, descriptor=args.descriptor))
    except (TemplateError, OSError) as e:
        print(f"envoy_config: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
