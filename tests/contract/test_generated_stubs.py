"""The committed stubs are exactly what scripts/gen_protos.py makes from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    generated = _load_generator().generate(tmp_path)
    assert generated, "the generator produced nothing"
    committed_root = ROOT / "client_sdk"
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in generated}
    committed = {
        p.relative_to(committed_root): p.read_bytes()
        for p in (committed_root / "pacsd" / "admin").rglob("*")
        if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))
    }
    assert sorted(fresh) == sorted(committed), (
        "stub files added or removed: run scripts/gen_protos.py"
    )
    stale = [str(name) for name, data in fresh.items() if committed[name] != data]
    assert not stale, f"stale generated stubs {stale}: run python scripts/gen_protos.py"


def test_every_proto_has_stubs() -> None:
    protos = {p.stem for p in (ROOT / "proto").rglob("*.proto")}
    stubs = {p.name.removesuffix("_pb2.py") for p in (ROOT / "client_sdk").rglob("*_pb2.py")}
    assert protos <= stubs
