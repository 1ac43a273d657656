"""Settings: the default model, named model profiles and run limits, from files and environment.

In rising priority: defaults, ``~/.config/crew/config.toml`` (``$XDG_CONFIG_HOME/crew/...``),
``./crew.toml``, ``CREW_*`` environment variables (a ``.env`` file in the working directory
fills in those not set), and command-line flags::

    [llm]                          # the model of agents that name none
    model = "openai/gpt-4o-mini"   # one line to switch: "anthropic/...", "ollama/llama3.1", ...
    api_base = "..."               # for self-hosted servers (Ollama, vLLM, llama.cpp)
    temperature = 0.2
    fallbacks = ["openai/gpt-4o"]
    timeout_s = 120
    max_rpm = 60                   # calls started per minute, at most
    [llm.profiles.fast]            # a named model: Agent(llm="fast"), crew run --llm fast
    model = "groq/llama-3.1-8b-instant"
    [run]
    max_concurrency = 8
    on_failure = "fail_fast"
    review_hook = "https://hooks.example.com/..."  # or a shell command: see crew.hooks

A layer that sets ``model`` also drops the ``api_base`` and ``api_key`` of lower layers: they
belong to the model they were set with (``CREW_MODEL=openai/...`` must not reach a local Ollama
server named in crew.toml). A profile is replaced whole by a profile of the same name above it.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crew import llm, local
from crew.errors import SECRET_NAMES, ConfigError, did_you_mean
from crew.llm import LLM

_DEFAULT = "default"
_ENV = {
    "CREW_MODEL": "llm.model",
    "MODEL": "llm.model",  # CrewAI's name for it, in the environment or .env
    "CREW_API_BASE": "llm.api_base",
    "CREW_API_KEY": "llm.api_key",
    "CREW_TEMPERATURE": "llm.temperature",
    "CREW_MAX_CONCURRENCY": "run.max_concurrency",
    "CREW_ON_FAILURE": "run.on_failure",
    "CREW_REVIEW_HOOK": "run.review_hook",
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
    "fallbacks": "llm.fallbacks",
    "max_concurrency": "run.max_concurrency",
    "on_failure": "run.on_failure",
}
_DOTENV_NAMES = re.compile(
    r"(_API_KEY|_API_BASE|_BASE_URL|_API_TOKEN|_API_VERSION)$|^(AWS_|AZURE_|CREW_|VERTEX)|^MODEL$"
)

_SECRET_NAMES = SECRET_NAMES
_DOTENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


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


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: LLMSection = LLMSection()
    run: RunSection = RunSection()


# The fields known at each place in the file, for "did you mean" on unknown keys.
_KNOWN: dict[str, type[BaseModel]] = {
    "": _File,
    "llm": LLMSection,
    "llm.profiles.*": ModelSettings,
    "run": RunSection,
}


@dataclass(frozen=True)
class _Layer:
    """Settings from one place: dotted key -> value, and where each came from."""

    values: dict[str, Any]
    sources: dict[str, str]


@dataclass(frozen=True)
class Settings:
    """The effective settings, and where each one came from (``crew config`` shows them)."""

    llm: LLMSection = LLMSection()
    run: RunSection = RunSection()
    llm_override: str | None = None
    """``--llm`` or ``CREW_LLM``: a profile name or a model string that every agent uses."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Dotted key (``llm.model``, ``llm.profiles.fast``) -> where its value came from."""
    provider_keys: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Provider variables in effect (``OPENAI_API_KEY``, ...): name -> (value, "env" or ".env")."""

    @classmethod
    def load(
        cls,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        read_dotenv: bool = True,
    ) -> Settings:
        """Read every layer and check them all, raising one ``ConfigError`` for every problem.

        Args:
            cwd: where ``crew.toml`` and ``.env`` are looked for (default: the working directory).
            env: the environment (default: ``os.environ``). With the real environment, the
                ``.env`` file's provider keys that are not set there are exported to it, for
                litellm to read; an explicit ``env`` is never changed.
            overrides: command-line flags by name (``llm``, ``max_concurrency``, ``on_failure``,
                ``model``, ...) or dotted key (``llm.temperature``); None values are ignored.
            read_dotenv: whether to read ``.env``.
        """
        cwd = Path.cwd() if cwd is None else cwd
        environ: Mapping[str, str] = os.environ if env is None else env
        problems: list[str] = []
        dotenv = _read_dotenv(cwd / ".env", problems) if read_dotenv else {}
        dotenv = {k: v for k, v in dotenv.items() if k not in environ}
        if env is None:
            _export(dotenv, os.environ)
        layers = [
            _file_layer(_user_config(environ), _show(_user_config(environ), environ), problems),
            _file_layer(cwd / "crew.toml", "./crew.toml", problems),
            _env_layer(environ, dotenv, problems),
            _override_layer(overrides or {}, problems),
        ]
        values, sources = _merge(layers)
        file = _validate(_nest(values), lambda key: f"{_lookup(sources, key)}: {key}", problems)
        override = values.get("llm_override")
        if override is not None and file is not None:
            problems += _check_name(override, file.llm.profiles, f"{sources['llm_override']}: ")
        if problems or file is None:
            raise ConfigError(problems)
        keys = {k: (v, "env") for k, v in environ.items() if _DOTENV_NAMES.search(k)}
        keys |= {k: (v, ".env") for k, v in dotenv.items()}
        return cls(
            llm=file.llm,
            run=file.run,
            llm_override=override,
            sources=sources,
            provider_keys={k: keys[k] for k in sorted(keys) if not k.startswith("CREW_")},
        )

    @property
    def max_concurrency(self) -> int:
        return self.run.max_concurrency

    @property
    def on_failure(self) -> Literal["fail_fast", "continue"]:
        return self.run.on_failure

    @property
    def review_hook(self) -> str | None:
        return self.run.review_hook

    def default_llm(self) -> LLM | None:
        """The model of agents that name none: ``--llm``/``CREW_LLM``, else ``[llm] model``
        (``CREW_MODEL``, or CrewAI's ``MODEL``), else the everyday model of the one provider
        whose key is set (``llm.KEY_DEFAULTS``), else the bundled local model when installed, else
        None. ``default_notice`` says which when the user did not choose."""
        if self.llm_override:
            return self.resolve_llm(self.llm_override)
        if self.llm.model:
            return _to_llm(self.llm)
        if model := self._model_for_key():
            return _to_llm(self.llm.model_copy(update={"model": model}))
        if local.available():
            local.announce()
            return _to_llm(self.llm.model_copy(update={"model": local.MODEL}), connection=False)
        return None

    def default_notice(self) -> str | None:
        """One line saying which model ``default_llm`` picked when nobody named one."""
        if self.llm_override or self.llm.model:
            return None
        if model := self._model_for_key():
            key = next(k for k, m in llm.KEY_DEFAULTS.items() if m == model)
            return f"no model configured: using {model}, as {key} is set (choose with CREW_MODEL)"
        return local.NOTICE if local.available() else None

    def _model_for_key(self) -> str | None:
        return llm.model_for_keys(self.provider_keys)

    def resolve_llm(self, name_or_model: str) -> LLM:
        """A profile by name, else a litellm model string (which has a ``provider/`` prefix).

        A profile or model string takes ``temperature``, ``max_tokens`` and ``timeout_s`` from
        ``[llm]`` where it sets none; its server, key and fallbacks are its own.
        """
        name = name_or_model.strip()
        problems = _check_name(name, self.llm.profiles)
        if problems:
            raise ConfigError(problems)
        profile = self.llm.profiles.get(name) or ModelSettings(model=name)
        inherited = {
            key: getattr(self.llm, key)
            for key in ("temperature", "max_tokens", "timeout_s")
            if getattr(profile, key) is None
        }
        return _to_llm(profile.model_copy(update=inherited))

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, value with secrets masked, source) for each setting, for ``crew config``."""
        rows = [("llm", _shown(self.llm_override), self._source("llm_override"))]
        for key in ModelSettings.model_fields:
            value = getattr(self.llm, key)
            if key == "model" and value is None and local.available():
                rows.append(("llm.model", f"{local.MODEL} (bundled)", _DEFAULT))
            else:
                rows.append((f"llm.{key}", _shown(value, key), self._source(f"llm.{key}")))
        for name, profile in self.llm.profiles.items():
            source = self._source(f"llm.profiles.{name}")
            for key, value in profile.model_dump(exclude_defaults=True).items():
                rows.append((f"llm.profiles.{name}.{key}", _shown(value, key), source))
        for key in RunSection.model_fields:
            value = _shown(getattr(self.run, key), key)
            rows.append((f"run.{key}", value, self._source(f"run.{key}")))
        for name, (value, source) in self.provider_keys.items():
            rows.append((name, _shown(value, name), source))
        return rows

    def _source(self, key: str) -> str:
        return self.sources.get(key, _DEFAULT)


def _mask(value: str) -> str:
    """A secret as ``sk-...abcd``: enough to tell keys apart, not to use one."""
    if len(value) < 12:
        return "***"
    return f"{value[:3]}...{value[-4:]}"


def _to_llm(settings: ModelSettings, *, connection: bool = True) -> LLM:
    assert settings.model is not None
    options: dict[str, Any] = {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "max_rpm": settings.max_rpm,
    }
    if connection:
        options |= {
            "api_base": settings.api_base,
            "api_key": settings.api_key,
            "fallbacks": settings.fallbacks,
        }
    if settings.timeout_s is not None:
        options["timeout_s"] = settings.timeout_s
    return LLM(settings.model, **options)


def _check_name(name: str, profiles: Mapping[str, ModelSettings], where: str = "") -> list[str]:
    """A problem unless ``name`` is a profile or looks like a model string (``provider/x``)."""
    if name in profiles or "/" in name:
        return []
    known = ", ".join(sorted(profiles)) or "none are defined"
    hint = did_you_mean(name, profiles, sentence=True)
    return [
        f"{where}'{name}' is not a model profile (profiles: {known}), nor a model string."
        f"{hint} Write a model as provider/name, e.g. 'openai/gpt-4o-mini', or define"
        f" [llm.profiles.{name}] in crew.toml."
    ]


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
    return _DEFAULT


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


def _validate(data: Any, where: Callable[[str], str], problems: list[str]) -> _File | None:
    """``data`` as settings, or None with a problem per error; ``where(dotted key)`` names it."""
    try:
        return _File.model_validate(data)
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
    shown = _mask(str(value)) if _SECRET_NAMES.search(parts[-1]) else repr(value)
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


def _shown(value: Any, key: str = "") -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value)) or "(none)"
    text = str(value)
    if _SECRET_NAMES.search(key):
        return _mask(text)
    if key.endswith(("api_base", "_BASE_URL", "_API_BASE")):
        return _without_password(text)
    if key == "review_hook" and urllib.parse.urlsplit(text).scheme in ("http", "https"):
        return _without_path(text)  # a webhook's path often holds its token
    return text


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _without_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/..." if parts.path.strip("/") or parts.query else url


def _read_dotenv(path: Path, problems: list[str]) -> dict[str, str]:
    """Provider keys and ``CREW_*`` from ``KEY=VALUE`` lines (``export``, quotes, comments)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f".env: cannot read it: {exc}.")
        return {}
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            problems.append(f".env:{number}: expected NAME=VALUE, got {line[:40]!r}.")
            continue
        name, value = match.groups()
        if _DOTENV_NAMES.search(name):
            found[name] = _dotenv_value(value)
    return found


def _dotenv_value(raw: str) -> str:
    quoted = re.fullmatch(r"""(['"])(.*?)\1\s*(?:#.*)?""", raw.strip())
    if quoted is None:
        return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    quote, inner = quoted.groups()
    return inner.replace('\\"', '"').replace("\\n", "\n") if quote == '"' else inner


def _export(values: Mapping[str, str], environ: MutableMapping[str, str]) -> None:
    for name, value in values.items():
        environ.setdefault(name, value)
