"""What models cost and can do, from the price map litellm ships, read as data.

The map is the JSON file inside the installed litellm package, found with
``importlib.util.find_spec`` (which imports nothing), so the direct path prices a call as litellm
would without paying litellm's import. A model the map does not list (a local server's) costs 0,
as it does through litellm.

The file is 3.5 MB and parsing it whole takes ~0.1 s of CPU; a run needs a few of its ~5,000
entries, so the text is read once (~20 ms) and each entry is found in it and parsed alone
(~3 ms), once.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

_MAP_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def _map_text() -> str:
    """litellm's bundled price map as text ("" without litellm)."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            return (Path(folder) / _MAP_FILE).read_text(encoding="utf-8")
        except OSError:
            continue
    return ""


@functools.cache
def _entry(name: str) -> dict[str, Any] | None:
    """The map's entry for the key ``name``, or None: the value after the last ``"name":`` in
    the text that is a model's entry (json.loads too keeps the last of repeated keys)."""
    text = _map_text()
    key = re.compile(re.escape(json.dumps(name)) + r"\s*:\s*")
    decoder = json.JSONDecoder()
    for found in reversed(list(key.finditer(text))):
        try:
            value, _ = decoder.raw_decode(text, found.end())
        except ValueError:
            continue
        if isinstance(value, dict) and "litellm_provider" in value:
            return value
    return None


def model_info(model: str) -> dict[str, Any]:
    """The map's entry for a ``provider/name`` model string, or {}.

    The map lists most models by their bare name with the provider as a field
    (``gpt-4o-mini``: ``litellm_provider = "openai"``), some by the full string.
    """
    entry = _entry(model)
    if entry is None and "/" in model:
        provider, _, name = model.partition("/")
        entry = _entry(name)
        if entry is not None and entry.get("litellm_provider") != provider:
            entry = None
    return entry or {}


def cost_usd(
    model: str, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> float:
    """The cost of one call, as litellm prices it: prompt tokens read from the provider's cache
    at the cache price where the map has one, the others at the input price."""
    info = model_info(model)
    input_price = float(info.get("input_cost_per_token") or 0.0)
    output_price = float(info.get("output_cost_per_token") or 0.0)
    cache_price = float(info.get("cache_read_input_token_cost", input_price) or 0.0)
    cached = max(0, min(cached_tokens, prompt_tokens))
    return (
        (prompt_tokens - cached) * input_price
        + cached * cache_price
        + completion_tokens * output_price
    )


def supports(model: str, capability: str) -> bool:
    """Whether the map says ``model`` has ``capability`` (``supports_response_schema``, ...)."""
    return model_info(model).get(capability) is True
