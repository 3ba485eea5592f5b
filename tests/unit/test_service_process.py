"""A service process refuses a bad configuration at start, naming the variable."""

import os
import subprocess
import sys

import pytest

from octavia_runtime.config import ROOT


@pytest.mark.parametrize(("variable", "value"), [("OCTAVIA_TRANSCRIBE_PORT", "grpc"), ("OCTAVIA_NATS_URL", "localhost:4222")])
def test_a_service_with_a_bad_variable_exits_naming_it(variable, value):
    env = {**os.environ, variable: value}
    done = subprocess.run(
        [sys.executable, "-m", "services.transcribe"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert variable in done.stderr and "configuration error" in done.stderr
