"""Where settings come from: the shape of crew.toml (one pydantic model per section) and one
layer per place (the user's config.toml, ./crew.toml, the project's crew.toml for ``crew run
DIR``, ``CREW_*`` variables and ``.env``, command-line flags), each checked against that shape,
then merged in rising priority.
``crew.config.Settings`` is what they make.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crew.errors import SECRET_NAMES, did_you_mean
from crew.retry import DEFAULT_CALL_ATTEMPTS, DEFAULT_TASK_RETRIES

DEFAULT = "default"
_ENV = {
    "CREW_MODEL": "llm.model",
    "MODEL": "llm.model",  # CrewAI's name for it, in the environment or .env
    "CREW_API_BASE": "llm.api_base",
    "CREW_API_KEY": "llm.api_key",
    "CREW_TEMPERATURE": "llm.temperature",
    "CREW_LLM_CLIENT": "llm.client",
    "CREW_MAX_CONCURRENCY": "run.max_concurrency",
    "CREW_ON_FAILURE": "run.on_failure",
    "CREW_REVIEW_HOOK": "run.review_hook",
    "CREW_CALL_ATTEMPTS": "run.call_attempts",
    "CREW_TASK_RETRIES": "run.task_retries",
    "CREW_TRACING": "tracing.enabled",
    "CREW_TRACING_CAPTURE_CONTENT": "tracing.capture_content",
    "CREW_LLM": "llm_override",
}
_FLAGS = {
    "llm": "llm_override",
    "model": "llm.model",
    "api_base": "llm.api_base",
    "api_key": "llm.api_key",
    "temperature": "llm.temperature",
    "max_tokens": "llm.max_tokens",
    "timeout_s": "llm.timeout_s",
    "max_rpm": "llm.max_rpm",
    "max_tpm": "llm.max_tpm",
    "fallbacks": "llm.fallbacks",
    "max_concurrency": "run.max_concurrency",
    "on_failure": "run.on_failure",
    "call_attempts": "run.call_attempts",
    "task_retries": "run.task_retries",
    "trace": "tracing.enabled",
}


class ModelSettings(BaseModel):
    """One model and how to call it: ``[llm]`` and each ``[llm.profiles.NAME]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1)
    """A litellm model string, ``provider/name``."""
    api_base: str | None = None
    """The server, for self-hosted models; else the provider's own."""
    api_key: str | None = None
    """Usually left out: litellm reads the provider's variable (``OPENAI_API_KEY``, ...)."""
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    fallbacks: tuple[str, ...] = ()
    """Models tried in order when this one keeps failing."""
    max_rpm: int | None = Field(default=None, ge=1)
    """Calls started per minute, at most, counted per model and server across the process."""
    max_tpm: int | None = Field(default=None, ge=1)
    """Tokens of the calls started per minute, at most, counted like ``max_rpm``."""
    breaker_failures: int | None = Field(default=None, ge=0)
    """Failures in a row that open the model's circuit breaker (default 12; 0: no breaker)."""
    breaker_cooldown_s: float | None = Field(default=None, ge=0)
    """Seconds an open breaker fails calls fast before one probe call (default 30)."""
    breaker_window_s: float | None = Field(default=None, ge=0)
    """How long the failures in a row must last before they open the breaker (default 10)."""
    client: Literal["auto", "litellm"] | None = None
    """How calls are sent: "auto" (``openai/*`` models over HTTP, the others through litellm) or
    "litellm" (every model through litellm)."""


class LLMSection(ModelSettings):
    """``[llm]``: the default model, and the named profiles."""

    profiles: dict[str, ModelSettings] = {}


class RunSection(BaseModel):
    """``[run]``: how a crew runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrency: int = Field(default=8, ge=1)
    """Tasks (and so model calls) in flight at most."""
    on_failure: Literal["fail_fast", "continue"] = "fail_fast"
    review_hook: str | None = Field(default=None, min_length=1)
    """Told when an output waits for a review: a webhook URL (a JSON POST) or a shell command."""
    call_attempts: int = Field(default=DEFAULT_CALL_ATTEMPTS, ge=1)
    """Tries in all per model call, for models that set no retry policy (``LLM(retry=...)``)."""
    task_retries: int = Field(default=DEFAULT_TASK_RETRIES, ge=0)
    """Further attempts at a failed task, for tasks that set no ``retries:``."""


class TracingSection(BaseModel):
    """``[tracing]``: OpenTelemetry spans of each run (the ``otel`` extra; see crew.tracing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Spans go to the tracer provider the application configured; crew sets up none."""
    capture_content: bool = False
    """Prompts, answers, tool arguments and results, inputs and outputs on the spans too."""


class SettingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: LLMSection = LLMSection()
    run: RunSection = RunSection()
    tracing: TracingSection = TracingSection()


# The fields known at each place in the file, for "did you mean" on unknown keys.
_KNOWN: dict[str, type[BaseModel]] = {
    "": SettingsFile,
    "llm": LLMSection,
    "llm.profiles.*": ModelSettings,
    "run": RunSection,
    "tracing": TracingSection,
}


@dataclass(frozen=True)
class _Layer:
    """Settings from one place: dotted key -> value, and where each came from."""

    values: dict[str, Any]
    sources: dict[str, str]


def mask(value: str) -> str:
    """A secret as ``sk-...abcd``: enough to tell keys apart, not to use one."""
    if len(value) < 12:
        return "***"
    return f"{value[:3]}...{value[-4:]}"


def read_layers(
    cwd: Path,
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
    overrides: Mapping[str, Any],
    problems: list[str],
    *,
    project: Path | None = None,
) -> tuple[SettingsFile | None, dict[str, Any], dict[str, str]]:
    """Every layer, merged in rising priority and checked: the settings (None after a problem),
    the merged values by dotted key, and where each came from. ``project`` is the folder
    ``crew run DIR`` names: its crew.toml ranks above ./crew.toml."""
    here = project_folders(cwd, project)
    layers = [
        _file_layer(_user_config(environ), _show(_user_config(environ), environ), problems),
        *(_file_layer(f / "crew.toml", _shown_in(f, cwd), problems) for f in reversed(here)),
        _env_layer(environ, dotenv, problems),
        _override_layer(overrides, problems),
    ]
    values, sources = _merge(layers)
    file = _validate(_nest(values), lambda key: f"{_lookup(sources, key)}: {key}", problems)
    return file, values, sources


def project_folders(cwd: Path, project: Path | None) -> list[Path]:
    """Where crew.toml and .env are read, nearest the crew first: the project folder (when it
    is not the working directory), then the working directory."""
    if project is None or project.resolve() == cwd.resolve():
        return [cwd]
    return [project, cwd]


def _shown_in(folder: Path, cwd: Path) -> str:
    """``./crew.toml`` for the working directory, ``mycrew/crew.toml`` for a project."""
    return "./crew.toml" if folder == cwd else str(folder / "crew.toml")


def _user_config(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(_home(environ) / ".config")
    return Path(base) / "crew" / "config.toml"


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def _show(path: Path, environ: Mapping[str, str]) -> str:
    """A path as a person would write it: ``~/.config/crew/config.toml``."""
    home = _home(environ)
    if path.is_relative_to(home):
        return f"~/{path.relative_to(home).as_posix()}"
    return str(path)


def _file_layer(path: Path, shown: str, problems: list[str]) -> _Layer:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _Layer({}, {})
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown}: cannot read it: {exc}.")
        return _Layer({}, {})
    except tomllib.TOMLDecodeError as exc:
        problems.append(_toml_problem(shown, exc))
        return _Layer({}, {})
    name = shown.removeprefix("./")
    file = _validate(data, lambda key: f"{name}: {key}", problems)
    if file is None:
        return _Layer({}, {})
    values = _flatten(file.model_dump(exclude_unset=True))
    return _Layer(values, dict.fromkeys(values, shown))


def _toml_problem(shown: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if found is None:
        return f"{shown.removeprefix('./')}: invalid TOML: {message}."
    reason = message[: found.start()].strip()
    line, column = found.groups()
    return f"{shown.removeprefix('./')}:{line}: invalid TOML: {reason} (column {column})."


def _env_layer(
    environ: Mapping[str, str], dotenv: Mapping[str, str], problems: list[str]
) -> _Layer:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, key in _ENV.items():
        if key in values:  # CREW_MODEL before MODEL
            continue
        for origin, where in ((dotenv, ".env"), (environ, "env")):  # dotenv: only what env lacks
            value = origin.get(name, "").strip()
            if value:
                values[key] = value
                sources[key] = f"{where} {name}"
                break
    return _checked_layer(values, sources, problems)


def _override_layer(overrides: Mapping[str, Any], problems: list[str]) -> _Layer:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        key = _FLAGS.get(name, name)
        if key not in _FLAGS.values():
            hint = did_you_mean(name, _FLAGS, sentence=True)
            problems.append(f"Unknown setting override '{name}'.{hint}")
            continue
        values[key] = value
        flag = next((f for f, k in _FLAGS.items() if k == key), name)
        sources[key] = f"--{flag.replace('_', '-')}"
    return _checked_layer(values, sources, problems)


def _checked_layer(values: dict[str, Any], sources: dict[str, str], problems: list[str]) -> _Layer:
    """A layer of variables or flags, checked so that a problem names the one it came from."""
    if _validate(_nest(values), lambda key: _lookup(sources, key), problems) is None:
        return _Layer({}, {})
    if "llm_override" in values:
        values["llm_override"] = str(values["llm_override"]).strip()
    return _Layer(values, sources)


def _lookup(sources: Mapping[str, str], key: str) -> str:
    """Where ``key`` (or the setting it is part of, e.g. a profile) came from."""
    parts = key.split(".")
    while parts:
        if (found := sources.get(".".join(parts))) is not None:
            return found
        parts.pop()
    return DEFAULT


def _merge(layers: list[_Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        if "llm.model" in layer.values:
            for key in ("llm.api_base", "llm.api_key"):
                values.pop(key, None)
                sources.pop(key, None)
        values |= layer.values
        sources |= layer.sources
    return values, sources


def _validate(data: Any, where: Callable[[str], str], problems: list[str]) -> SettingsFile | None:
    """``data`` as settings, or None with a problem per error; ``where(dotted key)`` names it."""
    try:
        return SettingsFile.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where(key)}: {_describe(error, key)}")
        return None


def _describe(error: Any, key: str) -> str:
    parts = key.split(".")
    if error["type"] == "extra_forbidden":
        place = ".".join(parts[:-1])
        if re.fullmatch(r"llm\.profiles\.[^.]+", place):
            place = "llm.profiles.*"
        known = list(_KNOWN[place].model_fields) if place in _KNOWN else []
        if hint := did_you_mean(parts[-1], known):
            return f"unknown key{hint}"
        return f"unknown key (known keys: {', '.join(known)})"
    value = error.get("input")
    shown = mask(str(value)) if SECRET_NAMES.search(parts[-1]) else repr(value)
    return f"{error['msg']} (got {shown})"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys; a profile stays whole (``llm.profiles.fast``), as it is replaced whole."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not dotted.startswith("llm.profiles."):
            flat |= _flatten(value, f"{dotted}.")
        else:
            flat[dotted] = value
    return flat


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key == "llm_override":
            continue
        *parents, last = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested
