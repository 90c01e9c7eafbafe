"""Structural rules: engine/ is free of transport code; generated protobuf code matches the .proto."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import google.protobuf
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_engine_imports_neither_grpc_nor_protos() -> None:
    offenders = {p.name: sorted(_imports(p) & {"grpc", "grpc_health", "protos", "site_agent", "coordinator"})
                 for p in (ROOT / "engine").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_sensitive_libraries_are_imported_by_one_module_each() -> None:
    users: dict[str, list[str]] = {"tenseal": [], "opendp": []}
    for path in ROOT.glob("*/*.py"):
        if path.parts[-2] in ("tests", "benchmarks"):
            continue
        for lib in users:
            if lib in _imports(path):
                users[lib].append(str(path.relative_to(ROOT)))
    assert all(len(v) <= 1 for v in users.values()), users


PROTOS = ("site_agent", "key_holder", "witness")


@pytest.mark.parametrize("proto", PROTOS)
def test_generated_protobuf_code_is_up_to_date(proto: str, tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    for source in (ROOT / "protos").glob("*.proto"):  # every .proto: one may import another
        (tmp_path / "protos" / source.name).write_text(source.read_text())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--grpc_python_out=.",
                    "--pyi_out=.", f"protos/{proto}.proto"], cwd=tmp_path, check=True)
    for name in (f"{proto}_pb2.py", f"{proto}_pb2_grpc.py", f"{proto}_pb2.pyi"):
        assert (tmp_path / "protos" / name).read_text() == (ROOT / "protos" / name).read_text(), (
            f"protos/{name} is stale: regenerate with the command at the top of protos/{proto}.proto"
        )


@pytest.mark.parametrize("proto", PROTOS)
def test_protobuf_runtime_floor_covers_generated_code(proto: str) -> None:
    stamped = re.search(r"Protobuf Python Version: ([\d.]+)", (ROOT / "protos" / f"{proto}_pb2.py").read_text())
    floor = re.search(r'"protobuf>=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert stamped and floor
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(floor.group(1)) >= as_tuple(stamped.group(1))
    assert as_tuple(google.protobuf.__version__) >= as_tuple(stamped.group(1))


def test_engine_is_mypy_clean() -> None:
    completed = subprocess.run([sys.executable, "-m", "mypy", "engine"], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:]
