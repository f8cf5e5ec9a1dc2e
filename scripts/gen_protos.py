#!/usr/bin/env python3
"""Regenerate every control-plane stub from proto/ (the one way stubs are made).

The output lands in client_sdk/ and is committed. tests/contract/test_generated_stubs.py
runs this same function into a temporary folder and fails when the committed files
differ, so a proto edit without regeneration cannot land.

Usage: python scripts/gen_protos.py [OUTPUT_DIR]   (default: client_sdk)
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over proto/ and return the files written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit status {code}")
    return sorted(
        p
        for p in out_dir.rglob("*")
        if p.is_file() and (p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")))
    )


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "client_sdk"
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()
