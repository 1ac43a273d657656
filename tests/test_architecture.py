"""The shape of the package: layers import downwards only, and each third-party library enters
through one module. Parsed with ast, so a violation fails here before it is a circular import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "crew"

# A module may import (at run time) only modules of a lower layer.
LAYERS = {
    "errors": 0, "usage": 0,
    "board": 1, "retry": 1, "tools": 1, "prompts": 1, "events": 1, "yamlfile": 1, "local": 1,
    "schema": 1,
    "llm": 2, "templates": 2,
    "agent": 3, "config": 3,
    "task": 4,
    "plan": 5,
    "scheduler": 6,
    "crew": 7,
    "testing": 8, "testserver": 8, "spec": 8,
    "crewai": 9, "console": 9,
    "cli": 10,
    "__init__": 11,
}  # fmt: skip

# Each third-party library is imported by these modules only (an empty set: by none yet).
# local.py is a litellm custom provider, so it is litellm's second door, by nature.
GATEWAYS: dict[str, set[str]] = {
    "litellm": {"llm", "local"},
    "llama_cpp": {"local"},
    "tenacity": {"retry"},
    "networkx": {"plan"},
    "yaml": {"yamlfile"},
    "rich": {"console", "cli"},
    "psycopg": set(),
}


def runtime_imports(path: Path) -> set[str]:
    """Top-level names imported outside ``if TYPE_CHECKING:`` blocks, anywhere in the module."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "crew":
                names.update(f"crew.{alias.name}" for alias in node.names)
    return names


def modules() -> dict[str, set[str]]:
    return {path.stem: runtime_imports(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert set(modules()) - set(LAYERS) == set()


def test_layers_import_downwards_only():
    wrong = []
    for module, imports in modules().items():
        for name in imports:
            parts = name.split(".")
            if parts[0] != "crew" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if LAYERS[parts[1]] >= LAYERS[module] and module != "__init__":
                wrong.append(f"crew/{module}.py imports crew.{parts[1]}")
    assert wrong == []


def test_each_third_party_library_enters_through_one_module():
    wrong = []
    for module, imports in modules().items():
        for name in imports:
            root = name.split(".")[0]
            if root in GATEWAYS and module not in GATEWAYS[root]:
                wrong.append(f"crew/{module}.py imports {root}")
    assert wrong == []


def test_runtime_imports_sees_function_level_imports():
    # The checks above would be empty promises if lazy imports went unseen.
    assert "litellm" in modules()["llm"]
    assert "networkx" in modules()["plan"]


def test_the_network_guard_is_on_and_refuses_non_loopback_addresses():
    import socket

    from tests import conftest

    assert socket.socket.connect is conftest._guarded_connect
    assert socket.getaddrinfo is conftest._guarded_getaddrinfo
    with socket.socket() as sock:
        # The decision alone, so that a broken guard would still send nothing anywhere.
        conftest._check(sock, ("127.0.0.1", 80))
        try:
            conftest._check(sock, ("192.0.2.1", 80))
        except conftest.NetworkBlocked as blocked:
            assert "only loopback is allowed" in str(blocked)
        else:
            raise AssertionError("a non-loopback address passed the guard")
