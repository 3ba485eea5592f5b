"""A second Envoy, rendered from the stack's envoy.yaml, with a bare echo service behind it.

    with echo_edge() as base:  # base = "http://127.0.0.1:<port>"
        httpx.get(f"{base}/v1/bench/echo?message=hi")       # the bare echo
        httpx.get(f"{base}/v1/auth/me", headers=...)        # the stack's services, same Envoy

The benchmark compares a real RPC with the echo through it; the tests use
it to prove what the edge config does with a server stream (SSE). Needs the
local stack up, since every other route goes to its services.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from octavia_runtime.config import ROOT, load
from scripts import envoy_config, proto

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_echo(workdir: Path) -> Path:
    """Echo stubs into workdir, and a descriptor set of the whole API plus the echo."""
    proto.copy_google_protos()
    proto.run_protoc([f"-I{HERE}", f"--python_out={workdir}", f"--grpc_python_out={workdir}", "echo.proto"])
    descriptor = workdir / "edge.pb"
    sources = sorted(str(p.relative_to(proto.PROTOS)) for p in proto.PROTOS.rglob("*.proto"))
    proto.run_protoc(
        [f"-I{HERE}", "--include_imports", f"--descriptor_set_out={descriptor}", *sources, "echo.proto", *proto.ERROR_PROTOS]
    )
    return descriptor


def edge_config(descriptor: Path, listen: int, admin: int, echo: int) -> str:
    """The stack's Envoy config on other ports, plus a route and cluster for the echo."""
    doc = yaml.safe_load(envoy_config.render(load(), descriptor=descriptor))
    parts = envoy_config.parts(doc)
    parts["listener"]["port_value"] = listen
    parts["admin"]["port_value"] = admin
    parts["routes"].insert(0, {"match": {"prefix": "/octavia.bench.v1.EchoService/"}, "route": {"cluster": "bench_echo"}})
    echo_cluster = json.loads(json.dumps(parts["clusters"]["auth"]))
    echo_cluster["name"] = "bench_echo"
    envoy_config._cluster_address(echo_cluster).update(address="127.0.0.1", port_value=echo)
    doc["static_resources"]["clusters"].append(echo_cluster)
    return yaml.safe_dump(doc, sort_keys=False)


def wait_http(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@contextlib.contextmanager
def echo_edge() -> Iterator[str]:
    """Start the echo server and its Envoy; yield Envoy's base URL; stop both."""
    workdir = Path(tempfile.mkdtemp(prefix="octavia-edge-"))
    procs: list[subprocess.Popen] = []
    logs = open(workdir / "processes.log", "w")  # noqa: SIM115 - closed below, after the processes
    try:
        descriptor = build_echo(workdir)
        echo_port, listen, admin = free_port(), free_port(), free_port()
        (workdir / "envoy.yaml").write_text(edge_config(descriptor, listen, admin, echo_port))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.api.echo_server", str(echo_port), str(workdir)], cwd=ROOT, stdout=logs, stderr=logs
            )
        )
        envoy = Path(sys.executable).parent / "envoy"
        procs.append(
            subprocess.Popen(
                [str(envoy), "-c", str(workdir / "envoy.yaml"), "--disable-hot-restart", "--log-level", "warn"],
                stdout=logs,
                stderr=logs,
            )
        )
        wait_http(f"http://127.0.0.1:{admin}/ready")
        base = f"http://127.0.0.1:{listen}"
        wait_http(f"{base}/v1/bench/echo?message=ready")
        yield base
    finally:
        for process in procs:
            process.terminate()
        for process in procs:
            process.wait(timeout=10)
        logs.close()
        shutil.rmtree(workdir, ignore_errors=True)
