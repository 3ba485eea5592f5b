"""bench/api: an authenticated read through Envoy, beside a bare echo through the same Envoy.

    python -m bench.api [--seconds 10] [--connections 50] [--rounds 2]

Starts (or reuses) the local stack, then a second Envoy rendered from the
same envoy.yaml with one extra route to a bare grpc.aio echo server (no
interceptor, no I/O). Both calls go browser-style, REST/JSON over HTTP/1.1,
through that Envoy, driven by wrk with 50 connections, alternating rounds:

- GET /v1/auth/me  → AuthService.GetMe: JSON transcoding, the shared
  interceptor (request id, access rule, log line, metrics) and the token and
  session check (sessions are held in Valkey and remembered in process).
- GET /v1/bench/echo → EchoService.Echo: JSON transcoding only.
- GET /v1/jobs → JobService.ListJobs, for information: a service other than
  auth checks each user credential with an internal call to auth, then
  queries its own schema.

Prints req/s, p50 and p99 of each and the ratio. Needs `wrk` (Debian's
package); installed with apt when run as root, else it says so and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from octavia_runtime.config import ROOT, load
from scripts import envoy_config, proto
from scripts import stack as local_stack

HERE = Path(__file__).resolve().parent
TARGET_RATIO, TARGET_P99_MS = 0.75, 50.0
ECHO = "bare echo"
GET_ME = "GetMe (interceptor, token and session check)"
LIST_JOBS = "ListJobs (jobs asks auth, then reads Postgres)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (Debian package) for the load ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit("bench/api needs wrk: `sudo apt-get install wrk` (Debian's package), then run again")
    return found


def build_echo(workdir: Path) -> Path:
    """Echo stubs into workdir, and a descriptor set of the whole API plus the echo."""
    proto.copy_google_protos()
    proto.run_protoc([f"-I{HERE}", f"--python_out={workdir}", f"--grpc_python_out={workdir}", "echo.proto"])
    descriptor = workdir / "bench.pb"
    sources = sorted(str(p.relative_to(proto.PROTOS)) for p in proto.PROTOS.rglob("*.proto"))
    proto.run_protoc(
        [f"-I{HERE}", "--include_imports", f"--descriptor_set_out={descriptor}", *sources, "echo.proto", *proto.ERROR_PROTOS]
    )
    return descriptor


def bench_envoy_config(descriptor: Path, listen: int, admin: int, echo: int) -> str:
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


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(binary: str, url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    args = [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="GetMe vs bare echo through Envoy")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    wrk_bin = ensure_wrk()

    config = load()
    started = not local_stack.is_up(config)
    if started:
        local_stack.up(config)
    workdir = Path(tempfile.mkdtemp(prefix="octavia-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        descriptor = build_echo(workdir)
        echo_port, listen, admin = free_port(), free_port(), free_port()
        (workdir / "envoy.yaml").write_text(bench_envoy_config(descriptor, listen, admin, echo_port))
        logs = open(workdir / "processes.log", "w")  # noqa: SIM115 - closed with the processes
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.api.echo_server", str(echo_port), str(workdir)], cwd=ROOT, stdout=logs, stderr=logs))
        envoy = Path(sys.executable).parent / "envoy"
        procs.append(subprocess.Popen([str(envoy), "-c", str(workdir / "envoy.yaml"), "--disable-hot-restart", "--log-level", "warn"], stdout=logs, stderr=logs))
        wait_http(f"http://127.0.0.1:{admin}/ready")
        base = f"http://127.0.0.1:{listen}"
        wait_http(f"{base}/v1/bench/echo?message=ready")

        email, password = f"bench-{os.getpid()}-{int(time.time())}@example.com", "bench password 1"
        httpx.post(f"{base}/v1/auth/signup", json={"email": email, "password": password}).raise_for_status()
        token = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": password}).json()["tokens"]["accessToken"]
        me = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/auth/me", headers=me).status_code == 200

        # Echo a message as long as GetMe's reply, so both move the same bytes.
        message = "x" * len(httpx.get(f"{base}/v1/auth/me", headers=me).content)
        cases = {
            ECHO: (f"{base}/v1/bench/echo?message={message}", {}),
            GET_ME: (f"{base}/v1/auth/me", me),
            LIST_JOBS: (f"{base}/v1/jobs", me),
        }
        for url, headers in cases.values():  # warm up connections, caches and the JIT-less interpreter alike
            wrk(wrk_bin, url, 2, args.connections, headers)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, (url, headers) in cases.items():
                result = wrk(wrk_bin, url, args.seconds, args.connections, headers)
                if name not in best or result["rps"] > best[name]["rps"]:
                    best[name] = result

        print(f"\nbench/api: {args.connections} connections, {args.seconds} s x {args.rounds} rounds each (best round), through one Envoy\n")
        print(f"| call | req/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|")
        for name, r in best.items():
            print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |")
        real, echo = best[GET_ME], best[ECHO]
        ratio = real["rps"] / echo["rps"]
        print(f"\nGetMe / echo throughput: {ratio:.2f} (target >= {TARGET_RATIO}); GetMe p99 {real['p99_ms']:.1f} ms (target <= {TARGET_P99_MS:.0f} ms)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
        if started:
            local_stack.down(config)


if __name__ == "__main__":
    main()
