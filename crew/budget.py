"""Budgets: what a run may spend on model calls, checked before each call is sent.

``Budget`` is a value (a crew's setting). ``Ledger`` is one run's account of it, shared by the
run's subcrews: before a call, ``reserve`` sets aside the call's worst case (its prompt's
tokens, estimated as ``crew.limits.estimate_tokens`` does, plus the model's ``max_tokens`` of
answer, at the model's input and output prices); after, ``settle`` replaces that with what the
call really used, or ``release`` gives it back when no answer came. A reservation that would
take spent plus reserved past the budget raises ``BudgetExceededError`` and sends nothing.

So the run never spends more than its budget by more than the estimate's error on the calls in
flight: a call's real prompt may count more tokens than the estimate (about 4 characters a
token), never a longer answer than ``max_tokens``. A model without a ``max_tokens`` is reserved
``crew.limits.DEFAULT_ANSWER_TOKENS`` of answer, and may answer more. A model without a price
(a local server's) costs 0, so only ``max_tokens`` binds for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from crew import prices, prompts
from crew.chat import ChatModel, ChatRequest, ChatResponse
from crew.errors import BudgetExceededError, ConfigError
from crew.limits import DEFAULT_ANSWER_TOKENS, estimate_tokens
from crew.task import Task


@dataclass(frozen=True)
class Budget:
    """The most a run may spend on model calls, over all its resumes (what earlier attempts at
    the run spent counts). None: no limit of that kind."""

    max_cost_usd: float | None = None
    """US dollars, at litellm's prices (models it has no price for cost 0)."""
    max_tokens: int | None = None
    """Prompt plus answer tokens of every call."""

    def __post_init__(self) -> None:
        problems = []
        cost, tokens = self.max_cost_usd, self.max_tokens
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0
        ):
            problems.append(f"Budget(max_cost_usd=...) must be a number >= 0, got {cost!r}.")
        if tokens is not None and (
            isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0
        ):
            problems.append(f"Budget(max_tokens=...) must be a whole number >= 0, got {tokens!r}.")
        if problems:
            raise ConfigError(problems)

    def describe(self) -> str:
        parts = []
        if self.max_cost_usd is not None:
            parts.append(f"${self.max_cost_usd:g}")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens:,} tokens")
        return " and ".join(parts) or "no limit"


@dataclass(frozen=True)
class Estimate:
    """One call's worst case, reserved before it is sent."""

    tokens: int
    cost_usd: float


def prices_of(model: object) -> tuple[float, float]:
    """(input, output) US dollars a token of a ``crew.llm.LLM`` or anything with a ``chain()``
    of them: the highest of its chain, since a fallback may answer; (0, 0) for other models."""
    chain = getattr(model, "chain", None)
    names = [llm.model for llm in chain()] if callable(chain) else []
    if isinstance(model, str):  # a model string not made an LLM yet
        names = [model]
    infos = [prices.model_info(name) for name in names]
    return (
        max((float(i.get("input_cost_per_token") or 0.0) for i in infos), default=0.0),
        max((float(i.get("output_cost_per_token") or 0.0) for i in infos), default=0.0),
    )


def answer_tokens_of(model: object) -> int:
    """The answer tokens a call of ``model`` is reserved: its ``max_tokens``, else
    ``DEFAULT_ANSWER_TOKENS``."""
    chosen = getattr(model, "max_tokens", None)
    return DEFAULT_ANSWER_TOKENS if not isinstance(chosen, int) else chosen


def call_estimate(prompt_tokens: int, answer_tokens: int, prices: tuple[float, float]) -> Estimate:
    """The worst case of a call of ``prompt_tokens`` and at most ``answer_tokens`` of answer,
    at ``prices`` (input, output US dollars a token)."""
    input_price, output_price = prices
    return Estimate(
        prompt_tokens + answer_tokens, prompt_tokens * input_price + answer_tokens * output_price
    )


class Ledger:
    """One run's spending against its ``Budget`` (thread-safe: a subcrew shares its parent's).

    Args:
        budget: the limits.
        spent_usd, spent_tokens: what the run spent before (an earlier attempt at it).
    """

    def __init__(self, budget: Budget, *, spent_usd: float = 0.0, spent_tokens: int = 0) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.spent_tokens = spent_tokens
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.exceeded: str | None = None
        """Why a reservation failed, once one has: the run then starts no new task."""
        self._lock = threading.Lock()

    def reserve(self, estimate: Estimate, *, what: str) -> Estimate:
        """Set ``estimate`` aside for a call, or raise ``BudgetExceededError`` (``what`` names
        the call in the message) if it would take the run past its budget."""
        budget = self.budget
        with self._lock:
            cost = self.spent_usd + self.reserved_usd + estimate.cost_usd
            tokens = self.spent_tokens + self.reserved_tokens + estimate.tokens
            over = []
            if budget.max_cost_usd is not None and cost > budget.max_cost_usd + 1e-12:
                over.append(
                    f"${cost - estimate.cost_usd:.6g} spent or reserved + ${estimate.cost_usd:.6g}"
                    f" for this call > max_cost_usd ${budget.max_cost_usd:g}"
                )
            if budget.max_tokens is not None and tokens > budget.max_tokens:
                over.append(
                    f"{tokens - estimate.tokens:,} tokens spent or reserved + {estimate.tokens:,}"
                    f" for this call > max_tokens {budget.max_tokens:,}"
                )
            if over:
                message = (
                    f"{what}: the run's budget ({budget.describe()}) would be exceeded: "
                    + "; ".join(over)
                    + ". Nothing was sent; the run starts no new task. Resume it with a higher"
                    " budget (crew resume RUN --max-cost USD, or run(resume=RUN, budget=...))."
                )
                self.exceeded = self.exceeded or message
                raise BudgetExceededError(
                    message,
                    spent_usd=self.spent_usd + self.reserved_usd,
                    spent_tokens=self.spent_tokens + self.reserved_tokens,
                )
            self.reserved_usd += estimate.cost_usd
            self.reserved_tokens += estimate.tokens
            return estimate

    def settle(self, estimate: Estimate, *, cost_usd: float, tokens: int) -> None:
        """The call reserved as ``estimate`` answered: count what it really used instead."""
        with self._lock:
            self._give_back(estimate)
            self.spent_usd += cost_usd
            self.spent_tokens += tokens

    def release(self, estimate: Estimate) -> None:
        """The call reserved as ``estimate`` got no answer: give its reservation back."""
        with self._lock:
            self._give_back(estimate)

    def _give_back(self, estimate: Estimate) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - estimate.cost_usd)
        self.reserved_tokens = max(0, self.reserved_tokens - estimate.tokens)


class Budgeted:
    """A ``ChatModel`` whose calls reserve their worst case in ``ledger`` before they are sent.

    One reservation covers a call with its retries and fallbacks (``LLM.complete``): a failed
    try that got no answer costs nothing, and the reservation is at the dearest model of the
    chain. ``on_exceeded(request, model name, estimate)`` is told of a refused call.
    """

    def __init__(
        self,
        model: ChatModel,
        ledger: Ledger,
        on_exceeded: Callable[[ChatRequest, str, Estimate], None],
    ) -> None:
        self.model = model
        self.ledger = ledger
        self.on_exceeded = on_exceeded
        self._prices = prices_of(model)
        self._answer_tokens = answer_tokens_of(model)

    @property
    def name(self) -> str:
        return self.model.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = estimate_tokens(request.messages, request.tools, 0)
        estimate = call_estimate(prompt, self._answer_tokens, self._prices)
        where = f"Task '{request.task_id}' (agent '{request.agent}'), model '{self.name}'"
        try:
            self.ledger.reserve(estimate, what=where)
        except BudgetExceededError:
            self.on_exceeded(request, self.name, estimate)
            raise
        try:
            response = await self.model.complete(request)
        except BaseException:
            self.ledger.release(estimate)
            raise
        usage = response.usage
        self.ledger.settle(estimate, cost_usd=usage.cost_usd, tokens=usage.total_tokens)
        return response


@dataclass(frozen=True)
class TaskEstimate:
    """A task's worst case before a run (``crew plan --estimate``)."""

    task_id: str
    model: str
    per_call: Estimate
    """One call: the task's prompt (without its dependencies' outputs) plus, for each
    dependency, as many tokens as its model may answer; plus this model's answer tokens."""
    calls: int
    """Calls at most: the tool loop's (``max_iterations`` and a final answer, for an agent with
    tools) times the task's attempts (``retries`` + 1) times a loop's ``max_rounds``."""
    priced: bool
    """Whether litellm's map has a price for the model (else its cost shows as 0)."""
    note: str = ""
    """What the figures leave out: "per item" for a map, a subcrew not estimated."""

    @property
    def worst(self) -> Estimate:
        return Estimate(self.per_call.tokens * self.calls, self.per_call.cost_usd * self.calls)


class Planned(Protocol):
    """What the estimate reads of a plan (``crew.plan.Plan``)."""

    @property
    def all_tasks(self) -> dict[str, Task]: ...


def worst_cases(
    plan: Planned, *, default: object, task_retries: int, inputs: Mapping[str, Any]
) -> list[TaskEstimate]:
    """Each task's worst case, in plan order, with ``default`` the model of agents that name
    none and ``task_retries`` the retries of tasks that set none. A tool's results, delegated
    work and a reviewer's feedback add prompt tokens these figures do not count."""
    tasks = plan.all_tasks
    rounds = {b.id: t.max_rounds or 1 for t in tasks.values() for b in t.body}
    estimates = []
    for task in tasks.values():
        if task.kind == "loop":
            continue  # its body's tasks are counted, round by round
        if task.kind == "crew":
            note = "a subcrew: estimate its own crew file"
            estimates.append(TaskEstimate(task.id, "", Estimate(0, 0.0), 0, True, note))
            continue
        agent = task.agent
        assert agent is not None  # the planner checked
        model = agent.llm if agent.llm is not None else default
        context = sum(_answer_tokens(tasks.get(d), default) for d in task.dependency_ids)
        messages = [
            {"role": "system", "content": prompts.system_prompt(agent, inputs)},
            {"role": "user", "content": prompts.task_prompt(task, inputs, (), None)},
        ]
        tools = [t.schema() for t in agent.tool_map.values()] or None
        prompt = estimate_tokens(messages, tools, 0) + context
        per_call = call_estimate(prompt, answer_tokens_of(model), prices_of(model))
        has_tools = bool(agent.tools) or agent.board_tools or agent.allow_delegation
        attempts = (task_retries if task.retries is None else task.retries) + 1
        calls = (agent.max_iterations + 1 if has_tools else 1) * attempts * rounds.get(task.id, 1)
        name = getattr(model, "name", str(model))
        priced = bool(prices.model_info(name).get("output_cost_per_token"))
        note = "per item" if task.kind == "map" else ""
        estimates.append(TaskEstimate(task.id, name, per_call, calls, priced, note))
    return estimates


def _answer_tokens(task: Task | None, default: object) -> int:
    """The tokens a dependency may put on the board: its model's answer at most."""
    agent = task.agent if task is not None else None
    model = agent.llm if agent is not None and agent.llm is not None else default
    return answer_tokens_of(model)
