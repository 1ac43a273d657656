"""What models cost and can do, from the price map litellm ships, read as data.

The map is the JSON file inside the installed litellm package, found with
``importlib.util.find_spec`` (which imports nothing) and parsed once per process, so the direct
path prices a call as litellm would without paying litellm's import. A model the map does not
list (a local server's) costs 0, as it does through litellm.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

_MAP_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def price_map() -> dict[str, dict[str, Any]]:
    """litellm's bundled price map: model name -> prices and capabilities (empty without it)."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            data = json.loads((Path(folder) / _MAP_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def model_info(model: str) -> dict[str, Any]:
    """The map's entry for a ``provider/name`` model string, or {}.

    The map lists most models by their bare name with the provider as a field
    (``gpt-4o-mini``: ``litellm_provider = "openai"``), some by the full string.
    """
    prices = price_map()
    entry = prices.get(model)
    if entry is None and "/" in model:
        provider, _, name = model.partition("/")
        entry = prices.get(name)
        if entry is not None and entry.get("litellm_provider") != provider:
            entry = None
    return entry if isinstance(entry, dict) else {}


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
