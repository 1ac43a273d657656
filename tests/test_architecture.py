"""The shape of the package: layers import downwards only, and each third-party library enters
through one module. Parsed with ast, so a violation fails here before it is a circular import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "crew"

# The package, bottom up. A module may import (at run time or for type checking alike) only
# modules of an earlier row. Modules of a subpackage are named "package.module", its __init__
# "package"; a package may load its own backends (open_store).
ROWS: tuple[tuple[str, ...], ...] = (
    # Values: definitions and results, plain data that runs nothing.
    ("errors", "usage"),
    ("board", "chat", "yamlfile", "input_types"),
    ("results", "tools", "expr", "schema"),
    ("agent", "events"),
    ("task",),
    ("prompts",),
    ("plan_checks",),
    # The model layer: models (OpenAI-compatible over HTTP, litellm, the bundled one, replay) and
    # stores.
    ("retry", "prices", "limits", "slots", "local.worker", "store.records"),
    ("local.client", "openai_http", "budget", "store.protocol", "store.sqldb"),
    ("local",),
    ("llm", "store.memory", "store.sql", "store.writer"),
    ("store.sqlite", "store.postgres"),
    ("store",),
    ("replay", "tool_calls", "model_choice", "restore"),
    # The runtime: planning a crew and running it.
    ("plan", "attempt", "hooks", "tracing"),
    ("instances",),
    ("maps", "loops", "fork", "outbox"),
    ("scheduler", "checkpoint", "process"),
    ("run",),
    ("batch", "sync"),
    ("batch_dask",),
    ("batch_local",),
    ("crew",),
    # Spec: crews from files (YAML, CrewAI projects, Python), settings, fakes for tests.
    ("dotenv", "config_layers"),
    ("templates", "config", "testing", "testserver"),
    ("inputs",),
    ("spec.models",),
    ("spec.python", "spec.checks"),
    ("spec.loader",),
    ("spec",),
    ("crewai.python",),
    ("crewai.models",),
    ("crewai.loader",),
    ("crewai",),
    # Face: what a person sees (terminal views) and types (the CLI); then the public names.
    ("console.text",),
    ("console.live", "console.reports", "console.plan", "console.history", "console.batch"),
    ("console",),
    ("cli.target",),
    ("cli.running",),
    ("cli.history", "cli.project", "cli.batch"),
    ("cli",),
    ("cli.__main__", "__init__"),
)
LAYERS = {module: rank for rank, row in enumerate(ROWS) for module in row}

# Each third-party library is imported by these modules only (an empty set: by none yet).
# local/ is a litellm custom provider (its errors are litellm's), so it is litellm's second door.
GATEWAYS: dict[str, set[str]] = {
    "litellm": {"llm", "local", "local.client"},
    "aiohttp": {"openai_http"},  # the direct path to OpenAI-compatible servers
    "httpx": set(),
    "llama_cpp": {"local.worker"},  # the worker process is the only one that loads llama.cpp
    "tenacity": {"retry"},
    "networkx": {"plan"},
    "yaml": {"yamlfile"},
    "rich": {
        "console.live",
        "console.reports",
        "console.plan",
        "console.history",
        "console.batch",
        "cli.target",
        "cli.running",
        "cli.batch",
        "cli.history",
        "cli.project",
    },
    "psycopg": {"store.postgres"},
    "opentelemetry": {"tracing"},  # only for a traced run (the otel extra)
    "sqlite3": {"store.sqlite"},
    "dask": {"batch_dask"},  # the dask executor of crew batch (the dask extra)
    "distributed": {"batch_dask"},
    "cloudpickle": {"batch_dask"},  # how the crew goes to the workers (a dask dependency)
}


def imports(path: Path) -> set[str]:
    """Top-level names imported anywhere in the module: in functions and in ``if TYPE_CHECKING:``
    blocks too, since a type-only import is a dependency all the same."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
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
    paths = sorted(PACKAGE.rglob("*.py"))
    return {module_name(path): imports(path) for path in paths}


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


def test_every_module_of_the_layers_exists():
    assert set(LAYERS) - set(modules()) == set()


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


def test_imports_sees_function_level_and_type_checking_imports():
    # The checks above would be empty promises if lazy or type-only imports went unseen.
    assert "litellm" in modules()["llm"]
    assert "networkx" in modules()["plan"]
    assert "psycopg" in modules()["store.postgres"]
    assert "crew.results" in modules()["events"]  # under TYPE_CHECKING


def test_no_import_cycles_at_all():
    """No module reaches itself through imports, type-only and lazy ones included (a package
    loading its own backends is an import too)."""
    graph: dict[str, set[str]] = {}
    for module, names in modules().items():
        targets = {layer_of(name) for name in names}
        graph[module] = {t for t in targets if t is not None and t not in (module, "__init__")}
    cycles = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


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
