"""Settings: the default model, named model profiles and run limits, from files and environment.

In rising priority: defaults, ``~/.config/crew/config.toml`` (``$XDG_CONFIG_HOME/crew/...``),
``./crew.toml``, the project's ``crew.toml`` (``crew run DIR``: ``DIR/crew.toml``), ``CREW_*``
environment variables (``DIR/.env``, then ``./.env``, fill in those not set), and command-line
flags::

    [llm]                          # the model of agents that name none
    model = "openai/gpt-4o-mini"   # one line to switch: "anthropic/...", "ollama/llama3.1", ...
    api_base = "..."               # for self-hosted servers (Ollama, vLLM, llama.cpp)
    temperature = 0.2
    fallbacks = ["openai/gpt-4o"]
    timeout_s = 120
    max_rpm = 60                   # calls started per minute, at most
    max_tpm = 200000               # tokens of the calls started per minute, at most
    breaker_failures = 12          # failures in a row that make calls fail fast (0: never)
    breaker_cooldown_s = 30        # for this long, then one probe call
    breaker_window_s = 10          # the failures in a row must last this long to open it
    client = "litellm"             # every model through litellm (default "auto": openai/* direct)
    [llm.profiles.fast]            # a named model: Agent(llm="fast"), crew run --llm fast
    model = "groq/llama-3.1-8b-instant"
    [run]
    max_concurrency = 8
    on_failure = "fail_fast"
    review_hook = "https://hooks.example.com/..."  # or a shell command: see crew.hooks
    call_attempts = 12             # tries per model call, for models without their own retry
    task_retries = 2               # further attempts at a failed task without its own retries
    [tracing]                      # OpenTelemetry spans (the otel extra; see crew.tracing)
    enabled = true                 # CREW_TRACING=1, crew run --trace
    capture_content = false        # prompts and answers on the spans too

A layer that sets ``model`` also drops the ``api_base`` and ``api_key`` of lower layers: they
belong to the model they were set with (``CREW_MODEL=openai/...`` must not reach a local Ollama
server named in crew.toml). A profile is replaced whole by a profile of the same name above it.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crew import local, model_choice
from crew.config_layers import (
    DEFAULT,
    SECRET_NAMES,
    LLMSection,
    ModelSettings,
    RunSection,
    TracingSection,
    mask,
    project_folders,
    read_layers,
)
from crew.dotenv import PROVIDER_NAMES, export, read_env_file
from crew.errors import ConfigError, did_you_mean
from crew.llm import LLM

__all__ = ["LLMSection", "ModelSettings", "RunSection", "Settings", "TracingSection"]


@dataclass(frozen=True)
class Settings:
    """The effective settings, and where each one came from (``crew config`` shows them)."""

    llm: LLMSection = LLMSection()
    run: RunSection = RunSection()
    tracing: TracingSection = TracingSection()
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
        project: Path | None = None,
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
            project: the folder ``crew run DIR`` names: its ``crew.toml`` ranks above
                ``./crew.toml``, and its ``.env`` above ``./.env``.
        """
        cwd = Path.cwd() if cwd is None else cwd
        environ: Mapping[str, str] = os.environ if env is None else env
        problems: list[str] = []
        dotenv: dict[str, str] = {}
        for folder in project_folders(cwd, project) if read_dotenv else []:
            shown = ".env" if folder == cwd else str(folder / ".env")
            for name, value in read_env_file(folder / ".env", problems, shown).items():
                dotenv.setdefault(name, value)  # the project's first
        dotenv = {k: v for k, v in dotenv.items() if k not in environ}
        if env is None:
            export(dotenv, os.environ)
        file, values, sources = read_layers(
            cwd, environ, dotenv, overrides or {}, problems, project=project
        )
        override = values.get("llm_override")
        if override is not None and file is not None:
            problems += _check_name(override, file.llm.profiles, f"{sources['llm_override']}: ")
        if problems or file is None:
            raise ConfigError(problems)
        keys = {k: (v, "env") for k, v in environ.items() if PROVIDER_NAMES.search(k)}
        keys |= {k: (v, ".env") for k, v in dotenv.items()}
        return cls(
            llm=file.llm,
            run=file.run,
            tracing=file.tracing,
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
        whose key is set (``model_choice.KEY_DEFAULTS``), else the bundled local model when
        installed, else None. ``default_notice`` says which when the user did not choose."""
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
            key = next(k for k, m in model_choice.KEY_DEFAULTS.items() if m == model)
            return f"no model configured: using {model}, as {key} is set (choose with CREW_MODEL)"
        return local.NOTICE if local.available() else None

    def _model_for_key(self) -> str | None:
        return model_choice.model_for_keys(self.provider_keys)

    def resolve_llm(self, name_or_model: str) -> LLM:
        """A profile by name, else a litellm model string (which has a ``provider/`` prefix).

        A profile or model string takes ``temperature``, ``max_tokens``, ``timeout_s`` and
        ``client`` from ``[llm]`` where it sets none; its server, key and fallbacks are its own.
        """
        name = name_or_model.strip()
        problems = _check_name(name, self.llm.profiles)
        if problems:
            raise ConfigError(problems)
        profile = self.llm.profiles.get(name) or ModelSettings(model=name)
        inherited = {
            key: getattr(self.llm, key)
            for key in ("temperature", "max_tokens", "timeout_s", "client")
            if getattr(profile, key) is None
        }
        return _to_llm(profile.model_copy(update=inherited))

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, value with secrets masked, source) for each setting, for ``crew config``."""
        rows = [("llm", _shown(self.llm_override), self._source("llm_override"))]
        for key in ModelSettings.model_fields:
            value = getattr(self.llm, key)
            if key == "model" and value is None and local.available():
                rows.append(("llm.model", f"{local.MODEL} (bundled)", DEFAULT))
            else:
                rows.append((f"llm.{key}", _shown(value, key), self._source(f"llm.{key}")))
        for name, profile in self.llm.profiles.items():
            source = self._source(f"llm.profiles.{name}")
            for key, value in profile.model_dump(exclude_defaults=True).items():
                rows.append((f"llm.profiles.{name}.{key}", _shown(value, key), source))
        for key in RunSection.model_fields:
            value = _shown(getattr(self.run, key), key)
            rows.append((f"run.{key}", value, self._source(f"run.{key}")))
        for key in TracingSection.model_fields:
            value = _shown(getattr(self.tracing, key), key)
            rows.append((f"tracing.{key}", value, self._source(f"tracing.{key}")))
        for name, (value, source) in self.provider_keys.items():
            rows.append((name, _shown(value, name), source))
        return rows

    def _source(self, key: str) -> str:
        return self.sources.get(key, DEFAULT)


def _to_llm(settings: ModelSettings, *, connection: bool = True) -> LLM:
    assert settings.model is not None
    options: dict[str, Any] = {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "max_rpm": settings.max_rpm,
        "max_tpm": settings.max_tpm,
    }
    for key in ("breaker_failures", "breaker_cooldown_s", "breaker_window_s"):
        if (value := getattr(settings, key)) is not None:
            options[key] = value
    if connection:
        options |= {
            "api_base": settings.api_base,
            "api_key": settings.api_key,
            "fallbacks": settings.fallbacks,
        }
    if settings.timeout_s is not None:
        options["timeout_s"] = settings.timeout_s
    if settings.client is not None:
        options["client"] = settings.client
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


def _shown(value: Any, key: str = "") -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value)) or "(none)"
    text = str(value)
    if SECRET_NAMES.search(key):
        return mask(text)
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
