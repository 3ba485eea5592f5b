"""`make proto`: generate the API's Python package and Envoy's descriptor set.

- build/proto-deps/: google/api and google/rpc protos copied from the
  googleapis-common-protos wheel, so buf and protoc work offline.
- build/gen/python/: stubs (`*_pb2.py`, `*_pb2_grpc.py`, `.pyi`) for every
  proto under protos/, packaged as `octavia-api` and pip-installed into the
  environment. Nothing generated is committed or copied into a service.
- build/gen/octavia.pb: the descriptor set Envoy's JSON transcoder loads,
  with google/rpc/status.proto and error_details.proto so error bodies render.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DEPS = ROOT / "build" / "proto-deps"
GEN = ROOT / "build" / "gen"
PYTHON_OUT = GEN / "python"
DESCRIPTOR_SET = GEN / "octavia.pb"

GOOGLE_PROTOS = ("google/api", "google/rpc")
ERROR_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")

PACKAGE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "octavia-api"
version = "0.0.0"
description = "Generated from protos/ by `make proto`. Do not edit."

[tool.setuptools.packages.find]
include = ["octavia*"]

[tool.setuptools.package-data]
"*" = ["*.pyi", "py.typed"]
"""


def copy_google_protos() -> None:
    """googleapis-common-protos ships the .proto sources next to its modules."""
    site = Path(annotations_pb2.__file__).resolve().parent.parent.parent
    shutil.rmtree(DEPS, ignore_errors=True)
    for folder in GOOGLE_PROTOS:
        for src in (site / folder).glob("*.proto"):
            dst = DEPS / folder / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def run_protoc(args: list[str]) -> None:
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    argv = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{DEPS}", f"-I{well_known}", *args]
    if protoc.main(argv) != 0:
        sys.exit(f"protoc failed: {' '.join(args[:3])} ...")


def main() -> None:
    copy_google_protos()
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    shutil.rmtree(GEN, ignore_errors=True)
    PYTHON_OUT.mkdir(parents=True)

    run_protoc([f"--python_out={PYTHON_OUT}", f"--pyi_out={PYTHON_OUT}", f"--grpc_python_out={PYTHON_OUT}", *sources])
    for folder in [PYTHON_OUT / "octavia", *(p for p in (PYTHON_OUT / "octavia").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (PYTHON_OUT / "octavia" / "py.typed").touch()
    (PYTHON_OUT / "pyproject.toml").write_text(PACKAGE_PYPROJECT)

    run_protoc(
        [
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={DESCRIPTOR_SET}",
            *sources,
            *ERROR_PROTOS,
        ]
    )

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--force-reinstall",
            str(PYTHON_OUT),
        ],
        check=True,
    )
    # pip leaves a build/ folder inside the source tree; keep the output clean.
    shutil.rmtree(PYTHON_OUT / "build", ignore_errors=True)
    print(f"generated {len(sources)} protos: package octavia-api installed, descriptor set {DESCRIPTOR_SET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
