"""Fixtures shared by every test: no network but loopback, no provider keys, a fake server."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crew import LLM, RetryPolicy, limits, local
from crew.store import Store, open_store
from crew.store.memory import MemoryStore
from crew.testserver import FakeOpenAIServer, ServerReply

# A shell without job control starts a command put in the background (`bash .ci/run &`) with
# SIGINT ignored, and an ignored signal stays ignored in every process it starts: the tests
# that stop a run with Ctrl-C (SIGINT) would wait for it in vain. A handled signal is reset to
# its default in a new program, so the processes the tests start get Python's own handling.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_PROVIDER_VARIABLE = re.compile(r"(_API_KEY|_API_BASE|_BASE_URL|_API_TOKEN)$|^CREW_")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo

# Fast waits so retry tests take milliseconds; jitter off so counts are exact.
FAST_RETRY = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05, jitter_s=0.0)


class NetworkBlocked(AssertionError):
    """A test tried to reach an address that is not loopback."""


def _is_loopback(host: object) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(sock: socket.socket, address: object) -> None:
    _check(sock, address)
    return _real_connect(sock, address)


def _guarded_connect_ex(sock: socket.socket, address: object) -> int:
    _check(sock, address)
    return _real_connect_ex(sock, address)


def _check(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) else address
        if not _is_loopback(host):
            raise NetworkBlocked(f"test tried to connect to {address!r}; only loopback is allowed")


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if not _is_loopback(host.decode() if isinstance(host, bytes) else host):
        raise NetworkBlocked(f"test tried to resolve {host!r}; only loopback is allowed")
    return _real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection or DNS lookup that is not loopback; clear provider keys and CREW_*."""
    for name in list(os.environ):
        if _PROVIDER_VARIABLE.search(name):
            monkeypatch.delenv(name)
    # Runs are checkpointed; in-process tests keep theirs in memory, not in ./.crew/crew.db.
    monkeypatch.setenv("CREW_STORE", "memory")
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    """Each test starts with no rate-limit window, Retry-After pause or open circuit breaker
    left by another: they are process-wide, and most tests call the same fake model."""
    limits.reset()
    yield
    limits.reset()


@pytest.fixture(autouse=True)
def _no_local_default(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside test_local, behave as if the bundled local model were not installed, so that a
    crew without a model fails the same way whether or not the extra is present."""
    if request.module.__name__ not in ("tests.test_local", "tests.test_readme"):
        monkeypatch.setattr(local, "available", lambda: False)


@pytest.fixture(scope="session")
def _server_session() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(_server_session: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI-compatible server on 127.0.0.1, with no rules and an empty call log."""
    _server_session.reset()
    _server_session.default = ServerReply(text="ok")
    yield _server_session
    _server_session.reset()


@pytest.fixture
def fake_llm(server: FakeOpenAIServer) -> LLM:
    """An LLM that reaches the fake server through litellm's real HTTP path."""
    return LLM("openai/fake", api_base=server.url, api_key="sk-test", retry=FAST_RETRY)


# Read at import: the autouse fixture above clears CREW_* variables before each test. Without the
# variable, the local server is tried over TCP, then over its unix socket (the only way to it from
# a network namespace that has only loopback, where .ci/run runs the tests).
POSTGRES_URLS = (
    [os.environ["CREW_TEST_POSTGRES_URL"]]
    if os.environ.get("CREW_TEST_POSTGRES_URL")
    else [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://postgres@/test?host=/var/run/postgresql",
    ]
)
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[tuple[Any, str]]:
    """An admin connection to the test server and its URL, or a skip (a failure in CI) saying
    why not."""
    reasons = []
    for url in POSTGRES_URLS:
        try:
            import psycopg

            conn = psycopg.connect(url, autocommit=True, connect_timeout=3)
        except Exception as exc:  # ImportError or any connection error: report it, whatever it is
            reasons.append(f"PostgreSQL not reachable at {url}: {exc}".strip())
            continue
        with conn:
            yield conn, url
        return
    reason = "; ".join(reasons)
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the PostgreSQL store must be tested)")
    pytest.skip(reason)


@pytest.fixture
def _postgres(_postgres_server: tuple[Any, str]) -> Any:
    """An admin connection to the test server."""
    return _postgres_server[0]


def _with_options(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(_postgres_server: tuple[Any, str]) -> Iterator[str]:
    """The test server's URL, confined to a fresh schema, dropped afterwards."""
    admin, url = _postgres_server
    schema = f"crew_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    yield _with_options(url, schema)
    admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store a run can be checkpointed in, the real databases included."""
    if request.param == "memory":
        yield MemoryStore()
        return
    store = open_test_store(request, tmp_path)
    yield store
    store.close()


def open_test_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The real database ``request.param`` names: "sqlite" (a file in ``tmp_path``) or
    "postgres" (the ``postgres_url`` fixture's, which skips when none can be had)."""
    if request.param == "sqlite":
        return open_store(str(tmp_path / "crew.db"))
    return open_store(request.getfixturevalue("postgres_url"))
