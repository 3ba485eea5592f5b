#!/usr/bin/env bash
# Creates .venv and installs Octavia with everything the local stack and the
# tests need, all from PyPI wheels. Called by `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Octavia needs Python 3.11 (found $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
.venv/bin/python -m pip install --quiet -e '.[dev,local,marian]'
# The strict SRT/WebVTT validators the subtitle tests run (Node packages).
# Only tests need them, so a machine without npm still gets a working setup;
# the tests that need them then skip and say why.
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/subtitle_validators --no-audit --no-fund --loglevel=error
else
  echo "*** npm not found: the subtitle validators (tests/subtitle_validators) are not installed," >&2
  echo "*** so the subtitle tests that validate SRT/VTT files will be skipped. Install Node.js with npm and rerun scripts/setup.sh." >&2
fi
