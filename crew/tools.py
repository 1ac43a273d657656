"""Tools agents can call: ``@tool`` turns a typed, documented function into one.

The JSON schema the model sees comes from the type hints (through pydantic) and the docstring; the
arguments the model sends are validated against it before the function runs.

A tool with side effects that must not happen twice (a payment, an e-mail) says
``@tool(idempotent=False)``: the run then records each call's intent before it and its result
after it, and never calls it again for the same intent (see ``crew.tool_calls``). Its function
can read the call's key with :func:`idempotency_key` (to hand it on, to a payment API say), and
``reconcile=`` names a function that, given a key, says whether a call cut off by a crash took
effect.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from crew.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crew.board import Board

_KEY: contextvars.ContextVar[str] = contextvars.ContextVar("crew_idempotency_key", default="")

_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


class Tool:
    """A function an agent may call, with the schema the model sees.

    Args:
        fn: a sync or async function; sync ones run in a worker thread so that several tool
            calls of one turn run concurrently.
        name: defaults to the function's name.
        description: defaults to the first paragraph of the docstring.
        idempotent: False for a tool whose side effect must not happen twice: each call's
            intent and result are recorded, and a call an earlier attempt made is not made
            again (its result is reused).
        reconcile: for a tool that is not idempotent, ``reconcile(key)`` (sync or async) says
            what became of a call cut off before its result was recorded: its result if it
            took effect, None if it did not (it is then made again). Without it, such a call
            fails its task (``ToolOutcomeUnknownError``) until a person says.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        idempotent: bool = True,
        reconcile: Callable[[str], Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"@tool needs a function, got {type(fn).__name__}.")
        label = name or fn.__name__
        if reconcile is not None and (idempotent or not callable(reconcile)):
            raise ConfigError(
                f"Tool '{label}': reconcile= is for a tool that is not idempotent and must be a"
                " function of the call's key. Pass @tool(idempotent=False, reconcile=fn), or drop"
                " reconcile."
            )
        doc = inspect.getdoc(fn) or ""
        self.fn = fn
        self.name = label
        self.idempotent = idempotent
        self.reconcile = reconcile
        self.description = description or _first_paragraph(doc) or self.name.replace("_", " ")
        self._arg_docs = _arg_docs(doc)
        self._args_model: type[BaseModel] | None = None
        self._schema: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def args_model(self) -> type[BaseModel]:
        """The pydantic model of the arguments, built on first use (keeps ``import`` cheap)."""
        if self._args_model is None:
            self._args_model = _build_args_model(self.fn, self.name, self._arg_docs)
        return self._args_model

    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling description of this tool (built once)."""
        if self._schema is None:
            parameters = self.args_model.model_json_schema()
            parameters.pop("title", None)
            for prop in parameters.get("properties", {}).values():
                prop.pop("title", None)
            function = {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            }
            self._schema = {"type": "function", "function": function}
        return self._schema

    def with_fn(self, fn: Callable[..., Any]) -> Tool:
        """The same tool (name, schema) calling ``fn``, which must take the same arguments."""
        bound = Tool(
            fn, name=self.name, description=self.description, idempotent=self.idempotent,
            reconcile=self.reconcile,
        )  # fmt: skip
        bound._args_model, bound._schema = self.args_model, self.schema()
        return bound

    async def invoke(self, arguments: dict[str, Any]) -> str:
        """Validate ``arguments``, run the function and return its result as text.

        Raises whatever the function raises; the agent loop turns that into the tool's answer.
        """
        return await self.call(self.validate(arguments))

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The function's keyword arguments from the model's; raises pydantic's ValidationError."""
        values = self.args_model.model_validate(arguments)
        fields = type(values).model_fields
        return {info.alias or name: getattr(values, name) for name, info in fields.items()}

    async def call(self, kwargs: dict[str, Any], *, key: str = "") -> str:
        """Run the function on validated ``kwargs`` (``key``: what ``idempotency_key()`` reads
        meanwhile); its result as text."""
        token = _KEY.set(key)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(**kwargs)
            else:  # to_thread copies the context: the key goes along
                result = await asyncio.to_thread(self.fn, **kwargs)
        finally:
            _KEY.reset(token)
        return _as_text(result)


def idempotency_key() -> str:
    """The key of the tool call running now ("" outside a call of a tool that is not
    idempotent): the same on every attempt that repeats the call, so an API that takes an
    idempotency key can be handed it."""
    return _KEY.get()


@overload
def tool(
    fn: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = True,
    reconcile: Callable[[str], Any] | None = None,
) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = True,
    reconcile: Callable[[str], Any] | None = None,
) -> Callable[..., Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    idempotent: bool = True,
    reconcile: Callable[[str], Any] | None = None,
) -> Tool | Callable[..., Tool]:
    """Make a function a tool: ``@tool`` or ``@tool(name=..., description=..., idempotent=False,
    reconcile=...)`` (see :class:`Tool`)."""
    options: dict[str, Any] = {
        "name": name, "description": description, "idempotent": idempotent, "reconcile": reconcile
    }  # fmt: skip
    if fn is not None:
        return Tool(fn, **options)
    return lambda f: Tool(f, **options)


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    return obj if isinstance(obj, Tool) else Tool(obj)


def _read_board(key: str) -> str:
    """Read the latest entry of the shared board under a key (a task id or a note key)."""
    raise NotImplementedError  # a signature for the schema; board_tools binds the real one


def _post_note(key: str, text: str) -> str:
    """Post a note on the shared board for other agents to read; returns its version."""
    raise NotImplementedError  # a signature for the schema; board_tools binds the real one


@functools.cache
def _board_tool_specs() -> tuple[Tool, Tool]:
    return Tool(_read_board, name="read_board"), Tool(_post_note, name="post_note")


def board_tools(board: Board, *, author: str, reserved: frozenset[str]) -> list[Tool]:
    """The two tools every agent gets: read any board entry, post a note.

    Args:
        reserved: keys a note may not use (task outputs are written only by their tasks).
    """

    async def read_board(key: str) -> str:
        entry = board.get(key)
        if entry is None:
            keys = ", ".join(board.keys()) or "none yet"
            return f"No board entry '{key}'. Keys on the board: {keys}."
        return f"[{entry.key} v{entry.version} by {entry.author}]\n{entry.render()}"

    async def post_note(key: str, text: str) -> str:
        if key in reserved:
            return f"'{key}' is a task's output and cannot be written by a note; use another key."
        entry = board.post(key, text, author=author, kind="note")
        return f"Posted '{key}' version {entry.version}."

    read_spec, post_spec = _board_tool_specs()
    return [read_spec.with_fn(read_board), post_spec.with_fn(post_note)]


def _build_args_model(fn: Callable[..., Any], name: str, docs: dict[str, str]) -> type[BaseModel]:
    from pydantic import BaseModel, Field, create_model

    fields: dict[str, Any] = {}
    hints = _type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        info = Field(default, description=docs.get(param.name), alias=param.name)
        # A parameter named like a BaseModel attribute (schema, json, model_config) is stored
        # under another field name; the alias keeps its name in the schema and in validation.
        field_name = f"arg_{param.name}" if hasattr(BaseModel, param.name) else param.name
        fields[field_name] = (annotation, info)
    return create_model(f"{name}_arguments", **fields)


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(
            f"Tool '{getattr(fn, '__name__', fn)}' has type hints that cannot be resolved: {exc}."
            " Import the types it names at module level."
        ) from exc


def _first_paragraph(doc: str) -> str:
    head = _ARGS_SECTION.split(doc, maxsplit=1)[0]
    return " ".join(head.strip().split("\n\n")[0].split())


def _arg_docs(doc: str) -> dict[str, str]:
    parts = _ARGS_SECTION.split(doc, maxsplit=1)
    if len(parts) < 3:
        return {}
    docs: dict[str, str] = {}
    indent, current = None, None
    for line in parts[2].splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            break  # the next section (Returns:, Raises:) starts flush left
        width = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (indent is None or width <= indent):
            indent, current = width, match.group(1)
            docs[current] = match.group(2).strip()
        elif current is not None and line.strip() and indent is not None and width > indent:
            docs[current] += " " + line.strip()  # a description wrapped onto the next line
    return docs


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if hasattr(result, "model_dump_json"):
        return str(result.model_dump_json())
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
