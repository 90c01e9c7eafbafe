"""Structural rules: roles apart, engine free of transport and import loops, generated protobuf code current."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import google.protobuf
import pytest

ROOT = Path(__file__).resolve().parents[1]


#: The parties of the protocol, one package each. A role imports shared layers only, never another role.
ROLES = ("coordinator", "site_agent", "key_holder", "audit", "witness")
#: Shared layers every role may use: computation (no transport) and the protocol layer.
SHARED = ("engine", "protos")
#: The tool (command dispatch, the local development harness) joins roles; no role or layer imports it.
TOOL = "fedgwas"
TRANSPORT = ("grpc", "grpc_health", "protos")


def _imports(path: Path, *, full: bool = False) -> set[str]:
    """Modules imported anywhere in ``path`` (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name if full else alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if full:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
                names.add(node.module)
            else:
                names.add(node.module.split(".")[0])
    return names


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "_pb2" not in p.name)


def test_engine_imports_no_transport_and_no_role() -> None:
    forbidden = set(TRANSPORT) | set(ROLES) | {TOOL}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in _sources("engine")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_protocol_layer_imports_no_role() -> None:
    forbidden = set(ROLES) | {TOOL}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in _sources("protos")}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("role", ROLES)
def test_roles_import_shared_layers_never_each_other(role: str) -> None:
    forbidden = (set(ROLES) - {role}) | {TOOL}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in _sources(role)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_engine_has_no_import_cycles() -> None:
    """Module-level and function-level imports together form a DAG (no loops patched by late imports)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in _sources("engine")}
    graph = {name: {m for m in _imports(path, full=True) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_sensitive_libraries_are_imported_by_one_module_each() -> None:
    users: dict[str, list[str]] = {"tenseal": [], "opendp": []}
    for package in (*SHARED, *ROLES, TOOL):
        if not (ROOT / package).is_dir():
            continue
        for path in _sources(package):
            for lib in users:
                if lib in _imports(path):
                    users[lib].append(str(path.relative_to(ROOT)))
    assert all(len(v) <= 1 for v in users.values()), users


PROTOS = tuple(sorted(p.stem for p in (ROOT / "protos").glob("*.proto")))


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


#: Hand-written modules stay small enough to read in one sitting (generated protobuf code excepted).
MAX_MODULE_LINES = 500


def test_no_hand_written_module_is_over_the_size_limit() -> None:
    packages = (*SHARED, *ROLES, TOOL)
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for package in packages if (ROOT / package).is_dir() for p in _sources(package)}
    assert {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES} == {}
