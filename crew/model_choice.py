"""Which model runs an agent: a model string made an ``LLM``, and for agents that name none,
the default: ``CREW_MODEL``, else the everyday model of the one provider whose key is set, else
the bundled local model."""

from __future__ import annotations

import os
from collections.abc import Collection

from crew import errors, local
from crew.chat import ChatModel
from crew.llm import LLM

KEY_DEFAULTS = {
    "OPENAI_API_KEY": "openai/gpt-4.1-mini",
    "ANTHROPIC_API_KEY": "anthropic/claude-haiku-4-5",
}
"""With no model configured, the key of one provider alone picks that provider's everyday model."""


def model_for_keys(keys: Collection[str]) -> str | None:
    """The ``KEY_DEFAULTS`` model of the one provider whose key is in ``keys``, if just one is."""
    models = [model for key, model in KEY_DEFAULTS.items() if key in keys]
    return models[0] if len(models) == 1 else None


def default_llm() -> LLM | None:
    """The model used by agents that name none: ``CREW_MODEL`` (and ``CREW_API_BASE``), or
    CrewAI's ``MODEL``; else the everyday model of the one provider whose key is set
    (``KEY_DEFAULTS``); else the bundled local model when its extra is installed."""
    model = os.environ.get("CREW_MODEL", "").strip() or os.environ.get("MODEL", "").strip()
    if model:
        return LLM(model, api_base=os.environ.get("CREW_API_BASE") or None)
    if keyed := model_for_keys({k for k, v in os.environ.items() if v.strip()}):
        return LLM(keyed)
    if local.available():
        local.announce()
        return LLM(local.MODEL)
    return None


def as_chat_model(value: str | ChatModel) -> ChatModel:
    if isinstance(value, str):
        return LLM(value)
    if isinstance(value, ChatModel):
        return value
    raise errors.ConfigError(
        "llm must be a litellm model string, an LLM(...) or a ChatModel,"
        f" got {type(value).__name__}."
    )
