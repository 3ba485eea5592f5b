"""One more process of a service, beside the stack's, with settings of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from octavia_runtime.config import ROOT, Config, to_environ
from tests.ports import free_ports


@dataclass
class Replica:
    process: subprocess.Popen
    channel: grpc.Channel
    log: Path


@contextmanager
def replica(stack: Config, service: str, log_dir: Path, **settings: str) -> Iterator[Replica]:
    """Start `python -m services.<service>` on free ports with the stack's config plus `settings`
    (OCTAVIA_* variables); yield it once it reports SERVING; stop it (SIGKILL if still running) after."""
    port, metrics_port = free_ports(2)
    upper = service.upper()
    env = {
        **os.environ, **to_environ(stack), **settings,
        f"OCTAVIA_{upper}_PORT": str(port), f"OCTAVIA_{upper}_METRICS_PORT": str(metrics_port),
    }  # fmt: skip
    log = log_dir / f"{service}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env, stdout=out, stderr=out)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        _wait_serving(channel, log)
        yield Replica(process, channel, log)
    finally:
        channel.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)


def _wait_serving(channel: grpc.Channel, log: Path, timeout_s: float = 60) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
