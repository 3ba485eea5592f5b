"""The API passes buf's STANDARD lint with no exceptions, and is formatted."""

import subprocess
import sys
from pathlib import Path

import pytest

from octavia_runtime.config import ROOT

BUF = Path(sys.executable).parent / "buf"


@pytest.fixture(scope="module", autouse=True)
def proto_deps():
    if not (ROOT / "build" / "proto-deps" / "google" / "api" / "annotations.proto").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "proto.py")], cwd=ROOT, check=True)


def test_buf_lint_standard_passes():
    done = subprocess.run([str(BUF), "lint", "protos"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_format_is_clean():
    done = subprocess.run([str(BUF), "format", "-d", "--exit-code", "protos"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"run `.venv/bin/buf format -w protos`:\n{done.stdout}"


def test_buf_config_has_no_lint_exceptions():
    config = (ROOT / "buf.yaml").read_text()
    assert "except:" not in config and "ignore:" not in config and "ignore_only:" not in config
