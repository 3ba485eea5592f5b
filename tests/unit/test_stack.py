"""scripts/stack.py pieces that need no servers: config hand-off, port checks, early-death reports."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from octavia_runtime.config import load, to_environ

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import stack  # noqa: E402


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {
            "OCTAVIA_ENVIRONMENT": "test",
            "OCTAVIA_VAR_DIR": "/tmp/octavia-test-var",
            "OCTAVIA_AUTH_PORT": "51051",
            "OCTAVIA_TTS_METRICS_PORT": "19999",
            "OCTAVIA_POSTGRES_PORT": "45432",
            "OCTAVIA_CORS_ORIGINS": "https://a.example,https://b.example",
            "OCTAVIA_JWT_SECRET": "x" * 40,
            "OCTAVIA_SHUTDOWN_GRACE_S": "3",
        },
    ],
)
def test_services_get_exactly_the_stack_config(environ):
    config = load(environ)
    assert load(to_environ(config)) == config


def test_a_taken_port_is_named_with_its_variable_and_holder(tmp_path):
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = load({"OCTAVIA_VAR_DIR": str(tmp_path / "var"), "OCTAVIA_VALKEY_PORT": str(port)})
        with pytest.raises(stack.StackError) as err:
            stack.up(config, timeout=5)
    message = str(err.value)
    assert f"port {port} (valkey, set by OCTAVIA_VALKEY_PORT) is in use by pid" in message
    assert not list((tmp_path / "var" / "run").glob("*.pid")), "nothing may start when a port is taken"


def test_a_port_set_twice_is_refused(tmp_path):
    config = load({"OCTAVIA_VAR_DIR": str(tmp_path / "var"), "OCTAVIA_TTS_PORT": "50051"})
    with pytest.raises(stack.StackError, match="port 50051 is set twice: by OCTAVIA_AUTH_PORT and by OCTAVIA_TTS_PORT"):
        stack.up(config)


def test_a_process_that_dies_is_reported_at_once_with_its_log(tmp_path, capsys):
    paths = stack.Paths(tmp_path)
    paths.run.mkdir()
    paths.log.mkdir()
    comp = stack.Component(
        name="auth",
        port=1,
        argv=[sys.executable, "-c", "import sys; print('cannot connect to the database'); sys.exit(3)"],
        marker="-c",
        ready=lambda: False,
        ports=[],
    )
    stack._spawn(paths, comp)
    t0 = time.monotonic()
    failed = stack._wait(paths, [comp], deadline=t0 + 60, t0=t0)
    assert failed == ["auth"]
    assert time.monotonic() - t0 < 10, "an early exit must not wait for the timeout"
    out = capsys.readouterr().out
    assert "auth: exited with code 3" in out and "cannot connect to the database" in out
    assert str(paths.logfile("auth")) in out or "auth.log" in out


def test_a_process_that_never_gets_ready_times_out(tmp_path, capsys):
    paths = stack.Paths(tmp_path)
    paths.run.mkdir()
    paths.log.mkdir()
    comp = stack.Component(
        name="jobs",
        port=1,
        argv=[sys.executable, "-c", "import time; time.sleep(30)"],
        marker="-c",
        ready=lambda: False,
        ports=[],
    )
    stack._spawn(paths, comp)
    try:
        t0 = time.monotonic()
        assert stack._wait(paths, [comp], deadline=t0 + 1, t0=t0) == ["jobs"]
        assert "jobs: not ready after 1 s" in capsys.readouterr().out
        assert stack._read_pid(paths, comp) == comp.popen.pid
    finally:
        stack._stop(paths, [comp], grace=5)
    assert comp.popen.poll() is not None or not stack._alive(comp.popen.pid)
    assert not paths.pidfile("jobs").exists()


def test_a_stale_pid_file_is_not_taken_for_a_running_process(tmp_path):
    paths = stack.Paths(tmp_path)
    paths.run.mkdir()
    comp = stack.components(load({"OCTAVIA_VAR_DIR": str(tmp_path)}))[0]
    paths.pidfile(comp.name).write_text("1\n")  # pid 1 is alive but is not PostgreSQL
    assert stack._read_pid(paths, comp) is None


@pytest.mark.parametrize(("host", "runs"), [("127.0.0.1", True), ("localhost", True), ("::1", True), ("smtp.example.com", False)])
def test_the_mail_sink_runs_only_when_mail_goes_to_this_machine(tmp_path, host, runs):
    config = load({"OCTAVIA_VAR_DIR": str(tmp_path), "OCTAVIA_SMTP_HOST": host, "OCTAVIA_SMTP_PORT": "45025"})
    mail = [c for c in stack.components(config) if c.name == "mail"]
    assert bool(mail) == runs
    if runs:
        assert mail[0].ports == [(45025, "OCTAVIA_SMTP_PORT")] and not mail[0].is_service
