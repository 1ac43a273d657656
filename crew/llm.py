"""The model layer. ``openai/*`` models (OpenAI, or any OpenAI-compatible server named by
``api_base``) are called directly over HTTP (``crew.openai_http``); every other provider goes
through ``litellm.acompletion``, and so does every model when the client is set to litellm
(``LLM(client="litellm")``, ``CREW_LLM_CLIENT=litellm``, ``[llm] client`` in crew.toml). Both
paths share the retries, fallbacks and error messages here, and the rate limits and circuit
breaker of ``crew.limits``.

litellm is imported on the first call that needs it, not on ``import crew`` (it takes ~2.5 s);
the only other module that touches it is ``crew.local``, the bundled model's litellm provider.

``ChatModel`` (in ``crew.chat``) is the protocol the agent loop talks to; ``LLM`` is its
implementation for providers (a model string plus settings) and ``crew.testing.ScriptedLLM`` an
in-process one for tests.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from types import ModuleType
from typing import Any, Literal

from crew import errors, limits, local, openai_http, prices
from crew.chat import ChatModel as ChatModel
from crew.chat import ChatRequest, ChatResponse, ToolCall
from crew.limits import RateLimiter as RateLimiter
from crew.limits import rate_limiter as rate_limiter
from crew.retry import DEFAULT_CALL_ATTEMPTS, RetryPolicy, retrying
from crew.usage import Usage


@dataclass(frozen=True)
class LLM:
    """A model string (litellm's ``provider/name``) with the settings to call it.

    Switching provider is a change of ``model`` (and ``api_base`` for self-hosted servers):
    ``LLM("openai/gpt-4o-mini")``, ``LLM("anthropic/claude-3-5-haiku-latest")``,
    ``LLM("ollama/llama3.1", api_base="http://127.0.0.1:11434")``.
    """

    model: str
    _: KW_ONLY
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 600.0
    """Per call; a call that takes longer fails with LLMTimeoutError (and is retried). It stays
    as long as a long generation may take (the providers' own clients say 600 s too): until a
    non-streamed answer arrives, it cannot be told from a hang. A hosted provider's load
    balancer ends a silent request in 60-100 s with a 5xx or a dropped connection, retried at
    once; lower it for a self-hosted server that can truly hang."""
    fallbacks: tuple[str | LLM, ...] = ()
    """Tried in order once this model's retries are spent on retryable errors. A string inherits
    every setting of this LLM when it names the same provider, else all but api_base/api_key."""
    retry: RetryPolicy | None = None
    """How this model's calls are retried; None for the crew's ``call_attempts`` (12 tries by
    default, see ``crew.retry``) with the default waits."""
    max_rpm: int | None = None
    """At most this many calls start in any 60 s, counted per (model, api_base) across the whole
    process (every LLM, crew and run); calls over the limit wait their turn."""
    max_tpm: int | None = None
    """At most this many tokens in the calls started in any 60 s, counted like ``max_rpm`` (see
    ``crew.limits.RateLimiter``); a call over the whole limit runs alone."""
    breaker_failures: int = limits.DEFAULT_BREAKER_FAILURES
    """Retryable failures in a row, per (model, api_base) in the process, that open its circuit
    breaker: calls then fail fast with ``ProviderUnavailableError``. 0: no breaker."""
    breaker_cooldown_s: float = limits.DEFAULT_BREAKER_COOLDOWN_S
    """Seconds an open breaker fails calls fast before it lets one probe call through."""
    breaker_window_s: float = limits.DEFAULT_BREAKER_WINDOW_S
    """The failures in a row open the breaker only once they have lasted this long: a blip
    that retries outlast never opens it."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for litellm.acompletion (e.g. top_p, seed, extra_headers); the
    direct path sends them in the request body (headers as headers)."""
    client: Literal["auto", "litellm"] = "auto"
    """How calls are sent. "auto": ``openai/*`` models straight to the OpenAI-compatible API over
    HTTP, the others through litellm (and ``CREW_LLM_CLIENT`` may say "litellm"); "litellm":
    every call through litellm."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise errors.ConfigError(
                "LLM(model=...) needs a litellm model string, e.g. 'openai/gpt-4o-mini'."
            )
        for key in ("max_rpm", "max_tpm"):
            if (value := getattr(self, key)) is not None and value < 1:
                raise errors.ConfigError(f"LLM({key}=...) must be at least 1, got {value}.")
        if min(self.breaker_failures, self.breaker_cooldown_s, self.breaker_window_s) < 0:
            raise errors.ConfigError(
                "LLM(breaker_failures=..., breaker_cooldown_s=..., breaker_window_s=...) must"
                " not be negative"
                " (breaker_failures=0 turns the circuit breaker off)."
            )
        if self.client not in CLIENTS:
            raise errors.ConfigError(
                f"LLM(client={self.client!r}) is not a client: use 'auto' (openai/* models over"
                " HTTP, others through litellm) or 'litellm' (every model through litellm)."
            )
        object.__setattr__(self, "fallbacks", tuple(self.fallbacks))

    @property
    def name(self) -> str:
        return self.model

    @property
    def direct(self) -> bool:
        """Whether calls skip litellm and go straight to the OpenAI-compatible API."""
        return openai_http.handles(self.model) and _client(self.client) == "auto"

    @property
    def enforces_schema(self) -> bool:
        """Whether the provider itself holds answers to a JSON schema (response_format)."""
        return supports_response_schema(self.model)

    def chain(self) -> list[LLM]:
        """This model followed by its fallbacks, as LLMs."""
        chain = [self]
        for fallback in self.fallbacks:
            if isinstance(fallback, LLM):
                chain.append(fallback)
            elif _provider(fallback) == _provider(self.model):
                chain.append(replace(self, model=fallback, fallbacks=()))
            else:
                chain.append(
                    replace(self, model=fallback, fallbacks=(), api_base=None, api_key=None)
                )
        return chain

    async def complete(self, request: ChatRequest) -> ChatResponse:
        chain = self.chain()
        crew_policy = RetryPolicy(attempts=request.call_attempts or DEFAULT_CALL_ATTEMPTS)
        for position, llm in enumerate(chain):
            policy = llm.retry or crew_policy

            def on_retry(
                attempt: int, error: BaseException, delay: float, _m: str = llm.model
            ) -> None:
                if request.on_retry is not None:
                    request.on_retry(_m, attempt, error, delay)

            try:
                cap_s = policy.max_retry_after_s
                call = functools.partial(
                    limits.guarded, llm._call, request, llm, max_retry_after_s=cap_s
                )
                return await retrying(call, policy, on_retry=on_retry)
            except errors.LLMError as exc:
                # An open circuit breaker sent nothing: the next model may well answer.
                moves_on = exc.retryable or isinstance(exc, errors.ProviderUnavailableError)
                if not moves_on or position == len(chain) - 1:
                    exc.retries_spent = True
                    raise
                if request.on_fallback is not None:
                    request.on_fallback(llm.model, chain[position + 1].model, exc)
        raise AssertionError("unreachable: the chain always has this model")

    async def _call(self, request: ChatRequest) -> ChatResponse:
        """One call, once the limits let it start (``crew.limits.guarded``)."""
        if not self.direct:
            return await self._call_litellm(request)
        try:
            return await openai_http.complete(
                request,
                self._options(request),
                model=self.model,
                api_base=self.api_base,
                api_key=self.api_key,
                timeout_s=self.timeout_s,
            )
        except errors.LLMError as exc:
            raise _explained(type(exc), self, exc.status_code, str(exc), exc) from exc

    async def _call_litellm(self, request: ChatRequest) -> ChatResponse:
        litellm = _litellm()
        kwargs = self._kwargs(request)
        started = time.perf_counter()
        try:
            if request.on_token is None:
                response = await litellm.acompletion(**kwargs)
            else:
                response = await _streamed(litellm, kwargs, request.on_token)
        except Exception as exc:
            raise translate_error(exc, self) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return _to_chat_response(response, self.model, latency_ms)

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        """litellm.acompletion's keyword arguments."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "timeout": self.timeout_s,
            "num_retries": 0,  # our tenacity policy is the only one that retries
            **self._options(request),
        }
        for key, value in (("api_base", self.api_base), ("api_key", self.api_key)):
            if value is not None:
                kwargs[key] = value
        if request.tools and _reads_skip_mcp_handler():
            # Our tools are plain functions. litellm's MCP bridge inspects any `tools` and, to
            # do so, imports the optional `mcp` package, failing the call when it is missing.
            kwargs["_skip_mcp_handler"] = True
        return kwargs

    def _options(self, request: ChatRequest) -> dict[str, Any]:
        """What either path sends: the messages, the settings, tools and response format."""
        options: dict[str, Any] = {"messages": request.messages, **self.params}
        for key, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            if value is not None:
                options[key] = value
        if request.tools:
            options["tools"] = request.tools
        if request.output_schema is not None and supports_response_schema(self.model):
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.output_name, "schema": request.output_schema},
            }
        return options


CLIENTS = ("auto", "litellm")
CLIENT_VARIABLE = "CREW_LLM_CLIENT"


def _client(client: str) -> str:
    """The client in effect: ``client``, or for "auto" the ``CREW_LLM_CLIENT`` variable's."""
    if client != "auto":
        return client
    chosen = os.environ.get(CLIENT_VARIABLE, "").strip().lower() or "auto"
    if chosen not in CLIENTS:
        raise errors.ConfigError(
            f"{CLIENT_VARIABLE}={chosen!r} is not a client: set it to 'litellm' (every model"
            " through litellm) or 'auto' (openai/* models over HTTP), or unset it."
        )
    return chosen


def prepared(models: Iterable[object]) -> bool:
    """Whether ``prepare(models)`` would load nothing: what their calls need is loaded already.
    Raises ``ConfigError`` for a wrong ``CREW_LLM_CLIENT``, as ``prepare`` does."""
    chains = [llm for model in models if isinstance(model, LLM) for llm in model.chain()]
    litellm_ready = _litellm.cache_info().currsize > 0 or all(llm.direct for llm in chains)
    return litellm_ready and ("aiohttp" in sys.modules or not any(llm.direct for llm in chains))


def prepare(models: Iterable[object]) -> None:
    """Load now what the calls of ``models`` (and their fallbacks) will need: litellm, only if
    one of them goes through it (its ~2.5 s import must not be charged to the first task and its
    ``timeout_s``), and the direct path's HTTP client. Raises ``ConfigError`` for a wrong
    ``CREW_LLM_CLIENT``, before any model call."""
    chains = [llm for model in models if isinstance(model, LLM) for llm in model.chain()]
    if any(not llm.direct for llm in chains):
        _litellm()
    if any(llm.direct for llm in chains):
        openai_http.prepare()


@functools.cache
def _litellm() -> ModuleType:
    # Its import-time fetch of the price map and its telemetry are off since `import crew`.
    # litellm logs warnings of its own to stderr (e.g. each time crew.run() starts a new event
    # loop); the core never prints, so only errors get through unless the user asks for more.
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True  # an unsupported optional parameter must not fail the call
    if local.available():
        local.register(litellm)
    return litellm


@functools.cache
def _reads_skip_mcp_handler() -> bool:
    """Whether this litellm's completion() pops the private ``_skip_mcp_handler`` flag (else the
    flag would be forwarded to the provider, so it is only sent where it is understood)."""
    completion = _litellm().main.completion
    code = getattr(completion, "__wrapped__", completion).__code__
    return "_skip_mcp_handler" in code.co_consts


@functools.cache
def supports_response_schema(model: str) -> bool:
    if _provider(model) == local.PROVIDER:
        return True  # llama.cpp's grammar holds the output to the schema
    if openai_http.handles(model):
        # What litellm answers for these, read from its price map without importing it.
        return prices.supports(model, "supports_response_schema")
    try:
        return bool(_litellm().supports_response_schema(model=model))
    except Exception:  # litellm raises for models it has never heard of
        return False


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else ""


async def _streamed(
    litellm: ModuleType, kwargs: dict[str, Any], on_token: Callable[[str], None]
) -> Any:
    """Stream the answer, passing text on as it comes; return it whole, as a non-streamed call
    would (litellm rebuilds tool calls, usage and cost from the chunks)."""
    stream = await litellm.acompletion(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    chunks, said = [], False
    async for chunk in stream:
        chunks.append(chunk)
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and delta.content:
            on_token(delta.content)
        said = said or bool(delta and (delta.content is not None or delta.tool_calls))
    if not said:
        return None  # no content (not even "") and no tool call: an empty answer
    return litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])


def _to_chat_response(response: Any, model: str, latency_ms: float) -> ChatResponse:
    choices = getattr(response, "choices", None) or ()
    message = getattr(choices[0], "message", None) if choices else None
    tool_calls = tuple(_tool_call(call) for call in (getattr(message, "tool_calls", None) or ()))
    if message is None or (getattr(message, "content", None) is None and not tool_calls):
        # A 200 with nothing in it is the provider's fault, and another call usually answers.
        what = (
            "an empty stream" if response is None
            else "no choices" if not choices
            else "no message" if message is None
            else "no content"
        )  # fmt: skip
        raise errors.EmptyAnswerError(
            f"Model '{model}': the provider answered with {what} (and no tool calls);"
            " it is retried like a provider error.",
            model=model,
        )
    raw_usage = getattr(response, "usage", None)
    hidden = getattr(response, "_hidden_params", None) or {}
    usage = Usage(
        calls=1,
        prompt_tokens=int(getattr(raw_usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(raw_usage, "completion_tokens", 0) or 0),
        cost_usd=float(hidden.get("response_cost") or 0.0),
    )
    return ChatResponse(
        content=message.content,
        tool_calls=tool_calls,
        usage=usage,
        model=model,
        latency_ms=latency_ms,
    )


def _tool_call(call: Any) -> ToolCall:
    return ToolCall.from_raw(call.id, call.function.name, call.function.arguments)


def translate_error(exc: Exception, llm: LLM) -> Exception:
    """litellm's exception as ours, naming the model, the reason and the fix.

    Exceptions that did not come from litellm (bugs) pass through unchanged.
    """
    kind = _classify(exc, llm)
    if kind is None:
        return exc
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or getattr(exc, "litellm_response_headers", None)
    return _explained(
        kind,
        llm,
        status if isinstance(status, int) else None,
        str(getattr(exc, "message", None) or exc),
        exc,
        retry_after_s=openai_http.retry_after_s(headers),
    )


def _explained(
    kind: type[errors.LLMError],
    llm: LLM,
    status: int | None,
    said: str,
    exc: BaseException,
    *,
    retry_after_s: float | None = None,
) -> errors.LLMError:
    """The error of either path, as the user sees it: the model, the reason and the fix, then
    what the provider said (keys redacted)."""
    if retry_after_s is None:
        retry_after_s = getattr(exc, "retry_after_s", None)
    detail = errors.shorten(errors.redact(said, [llm.api_key]), 300)
    return kind(
        f"Model '{llm.model}': {_reason(kind, llm, status)}. Provider said: {detail}",
        model=llm.model,
        status_code=status,
        retry_after_s=retry_after_s,
    )


def _reason(kind: type[errors.LLMError], llm: LLM, status: int | None) -> str:
    if kind is errors.AuthenticationError:
        return _auth_hint(llm)
    if kind is errors.ContextWindowError:
        return (
            "the prompt is longer than the model's context window;"
            " shorten the task or choose a model with a longer one"
        )
    if kind is errors.RateLimitError:
        return "rate limited (429)"
    if kind is errors.LLMTimeoutError:
        return f"no answer within {llm.timeout_s:g} s"
    if kind is errors.LLMConnectionError:
        where = f" to {llm.api_base}" if llm.api_base else ""
        return f"could not connect{where}; is the server up?"
    if kind is errors.ModelNotFoundError:
        return "the provider does not know this model (404); check the model name and api_base"
    if kind is errors.ProviderError:
        code = f" ({status})" if status is not None else ""
        return f"provider error{code}; it may pass, so it is retried"
    if kind is errors.EmptyAnswerError:
        return "the provider answered with nothing in it; it may pass, so it is retried"
    return f"request rejected ({status})"


def _classify(exc: Exception, llm: LLM) -> type[errors.LLMError] | None:
    litellm = _litellm()
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    status = getattr(exc, "status_code", None)
    # litellm reports a missing key and a refused connection as 500s; look at what caused them.
    if "Missing credentials" in text or "api_key client option must be set" in text:
        return errors.AuthenticationError
    if isinstance(exc, litellm.ContextWindowExceededError):
        return errors.ContextWindowError
    if isinstance(exc, litellm.RateLimitError):
        return errors.RateLimitError
    if isinstance(exc, litellm.Timeout):
        return errors.LLMTimeoutError
    if isinstance(exc, litellm.APIConnectionError) or any(
        isinstance(e, ConnectionError) for e in chain
    ):
        return errors.LLMConnectionError
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError):
        return errors.AuthenticationError
    if isinstance(exc, litellm.NotFoundError):
        return errors.ModelNotFoundError
    if (isinstance(status, int) and status >= 500) or isinstance(
        exc, litellm.InternalServerError | litellm.ServiceUnavailableError | litellm.BadGatewayError
    ):
        return errors.ProviderError
    if isinstance(exc, litellm.exceptions.OpenAIError) or type(exc).__module__.startswith(
        "litellm"
    ):
        return errors.BadRequestError
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _auth_hint(llm: LLM) -> str:
    if llm.api_key is not None:
        return "the api_key given in LLM(api_key=...) was rejected (401)"
    if llm.direct:
        variable = openai_http.KEY_VARIABLE
        if not os.environ.get(variable):
            return f"no API key: crew looked for {variable}; set it (or pass LLM(api_key=...))"
        return f"the API key was rejected (401); crew read it from {variable}: check its value"
    litellm = _litellm()
    try:
        missing = litellm.validate_environment(llm.model).get("missing_keys") or []
    except Exception:
        missing = []
    if missing:
        names = ", ".join(missing)
        return f"no API key: litellm looked for {names}; set it (or pass LLM(api_key=...))"
    variable = f"{_provider(llm.model).upper() or 'OPENAI'}_API_KEY"
    return f"the API key was rejected (401); litellm read it from {variable}: check its value"
