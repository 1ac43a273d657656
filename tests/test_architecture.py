"""The shape of the package: layers import downwards only, and each third-party library enters
through one module. Parsed with ast, so a violation fails here before it is a circular import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "crew"

# A module may import (at run time) only modules of a lower layer. Modules of a subpackage are
# named "package.module", its __init__ "package"; a package may load its own backends (open_store).
LAYERS = {
    "errors": 0, "usage": 0, "local_worker": 0,
    "board": 1, "retry": 1, "tools": 1, "prompts": 1, "events": 1, "yamlfile": 1, "local": 1,
    "schema": 1, "store": 1,
    "llm": 2, "templates": 2, "expr": 2, "store.memory": 2, "store.sql": 2,
    "agent": 3, "config": 3, "store.sqlite": 3, "store.postgres": 3, "hooks": 3, "replay": 3,
    "task": 4,
    "plan": 5,
    "scheduler": 6, "checkpoint": 6, "process": 6,
    "run": 7,
    "crew": 8,
    "testing": 9, "testserver": 9, "spec": 9,
    "crewai": 10, "console": 10,
    "cli": 11,
    "__init__": 12,
}  # fmt: skip

# Each third-party library is imported by these modules only (an empty set: by none yet).
# local.py is a litellm custom provider, so it is litellm's second door, by nature.
GATEWAYS: dict[str, set[str]] = {
    "litellm": {"llm", "local"},
    "llama_cpp": {"local_worker"},
    "tenacity": {"retry"},
    "networkx": {"plan"},
    "yaml": {"yamlfile"},
    "rich": {"console", "cli"},
    "psycopg": {"store.postgres"},
    "sqlite3": {"store.sqlite"},
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
            if node.module == "crew" or node.module.startswith("crew."):
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    """crew/board.py -> "board"; crew/store/__init__.py -> "store"; crew/store/sqlite.py ->
    "store.sqlite"."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) > 1 and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, set[str]]:
    paths = sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("store/*.py")])
    return {module_name(path): runtime_imports(path) for path in paths}


def layer_of(name: str) -> str | None:
    """The module of LAYERS an import names: crew.store.sqlite -> "store.sqlite", crew.store.X
    (a name imported from the package) -> "store"."""
    parts = name.split(".")[1:] if name.startswith("crew.") else []
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    return None


def test_every_module_has_a_layer():
    assert set(modules()) - set(LAYERS) == set()


def test_layers_import_downwards_only():
    wrong = []
    for module, imports in modules().items():
        for name in imports:
            target = layer_of(name)
            if target is None or target == module or target.startswith(f"{module}."):
                continue
            if LAYERS[target] >= LAYERS[module] and module != "__init__":
                wrong.append(f"crew.{module} imports crew.{target}")
    assert wrong == []


def test_each_third_party_library_enters_through_one_module():
    wrong = []
    for module, imports in modules().items():
        for name in imports:
            root = name.split(".")[0]
            if root in GATEWAYS and module not in GATEWAYS[root]:
                wrong.append(f"crew.{module} imports {root}")
    assert wrong == []


def test_runtime_imports_sees_function_level_imports():
    # The checks above would be empty promises if lazy imports went unseen.
    assert "litellm" in modules()["llm"]
    assert "networkx" in modules()["plan"]
    assert "psycopg" in modules()["store.postgres"]


def test_the_store_backends_are_checked_too():
    assert {"store", "store.memory", "store.sqlite", "store.postgres"} <= set(modules())
    assert layer_of("crew.store.sqlite") == "store.sqlite"
    assert layer_of("crew.store.RunRecord") == "store"
    assert layer_of("crew.board") == "board"


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
