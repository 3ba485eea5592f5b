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
import os
import re
import shutil
import subprocess
import sys
import time

import httpx

from octavia_runtime.config import load
from scripts import stack as local_stack

from .edge import echo_edge

TARGET_RATIO, TARGET_P99_MS = 0.75, 50.0
ECHO = "bare echo"
GET_ME = "GetMe (interceptor, token and session check)"
LIST_JOBS = "ListJobs (jobs asks auth, then reads Postgres)"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


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


def wrk(binary: str, url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    args = [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in headers.items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, f"no Requests/sec in wrk's output:\n{out}"
    result = {"rps": float(rps.group(1))}
    for pct in ("50", "99"):
        latency = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert latency, f"no {pct}% latency in wrk's output:\n{out}"
        value, unit = latency.groups()
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
    try:
        with echo_edge() as base:
            best = measure(base, wrk_bin, args)
    finally:
        if started:
            local_stack.down(config)

    print(
        f"\nbench/api: {args.connections} connections, {args.seconds} s x {args.rounds} rounds each (best round), through one Envoy\n"
    )
    print("| call | req/s | p50 ms | p99 ms | non-2xx |\n|---|---:|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |")
    real, echo = best[GET_ME], best[ECHO]
    print(
        f"\nGetMe / echo throughput: {real['rps'] / echo['rps']:.2f} (target >= {TARGET_RATIO}); "
        f"GetMe p99 {real['p99_ms']:.1f} ms (target <= {TARGET_P99_MS:.0f} ms)"
    )


def measure(base: str, wrk_bin: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Each call's best round (by req/s), rounds alternating between the calls."""
    email, password = f"bench-{os.getpid()}-{int(time.time())}@example.com", "bench password 1"
    httpx.post(f"{base}/v1/auth/signup", json={"email": email, "password": password}).raise_for_status()
    token = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": password}).json()["tokens"]["accessToken"]
    me = {"authorization": f"Bearer {token}"}
    # Echo a message as long as GetMe's reply, so both move the same bytes.
    message = "x" * len(httpx.get(f"{base}/v1/auth/me", headers=me).raise_for_status().content)
    cases = {
        ECHO: (f"{base}/v1/bench/echo?message={message}", {}),
        GET_ME: (f"{base}/v1/auth/me", me),
        LIST_JOBS: (f"{base}/v1/jobs", me),
    }
    for url, headers in cases.values():  # warm up connections and caches
        wrk(wrk_bin, url, 2, args.connections, headers)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, (url, headers) in cases.items():
            result = wrk(wrk_bin, url, args.seconds, args.connections, headers)
            if name not in best or result["rps"] > best[name]["rps"]:
                best[name] = result
    return best


if __name__ == "__main__":
    main()
