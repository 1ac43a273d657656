"""crew.testing: the scripted model, standing in for one model or for every model of a crew."""

from __future__ import annotations

import asyncio
import os

import pytest

from crew import LLM, Agent, Crew, Task, events
from crew.errors import BadRequestError, ConfigError, RateLimitError
from crew.store.memory import MemoryStore
from crew.task import loop
from crew.testing import Reply, ScriptedLLM
from tests.conftest import FAST_RETRY

PRIMARY = LLM("openai/primary", retry=FAST_RETRY, fallbacks=["openai/backup"])


def crew_of(*tasks: Task, **kwargs: object) -> Crew:
    return Crew(tasks, store=MemoryStore(), **kwargs)  # type: ignore[arg-type]


def test_everywhere_answers_each_agents_own_model_and_the_default():
    researcher = Agent(role="Researcher", llm="openai/gpt-4o-mini")
    writer = Agent(role="Writer")  # no model, none configured: the script is the default
    crew = crew_of(
        Task(id="facts", description="Find facts", agent=researcher),
        Task(id="article", description="Write", agent=writer, depends_on=["facts"]),
    )
    llm = ScriptedLLM({"facts": "- a fact", "article": "An article."})

    with llm.everywhere(crew):
        result = crew.run()

    assert result.status == "succeeded"
    assert result.outputs["article"].text == "An article."
    assert [(c.task_id, c.model) for c in llm.calls] == [
        ("facts", "openai/gpt-4o-mini"),
        ("article", "scripted"),
    ]
    assert "- a fact" in llm.calls[1].prompt  # the board carried the output between agents


def test_everywhere_restores_the_provider_call_and_the_default_model():
    provider_call = LLM._call
    with ScriptedLLM().everywhere():
        assert LLM._call is not provider_call
        assert os.environ["CREW_MODEL"] == "scripted"
    assert LLM._call is provider_call
    assert "CREW_MODEL" not in os.environ


def test_a_configured_default_model_is_kept_and_answered_by_the_script(monkeypatch):
    monkeypatch.setenv("CREW_MODEL", "openai/house-model")
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="Writer")))
    llm = ScriptedLLM({"t": "done"})

    with llm.everywhere(crew):
        result = crew.run()

    assert result.outputs["t"].text == "done"
    assert [c.model for c in llm.calls] == ["openai/house-model"]
    assert os.environ["CREW_MODEL"] == "openai/house-model"


def test_the_innermost_stand_in_answers():
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W", llm="openai/m")))
    outer, inner = ScriptedLLM({"t": "outer"}), ScriptedLLM({"t": "inner"})

    with outer.everywhere(), inner.everywhere():
        assert crew.run().outputs["t"].text == "inner"
    with outer.everywhere():
        assert crew.run().outputs["t"].text == "outer"
    assert len(inner.calls) == len(outer.calls) == 1


def test_everywhere_reaches_the_models_of_subcrews_and_coworkers():
    inner = Crew([Task(id="deep", description="d", agent=Agent(role="Deep", llm="anthropic/m"))])
    editor = Agent(role="Editor", llm="openai/editor", allow_delegation=True)
    checker = Agent(role="Checker", llm="ollama/checker")
    crew = crew_of(
        Task(id="sub", description="d", crew=inner),
        Task(id="edit", description="d", agent=editor, depends_on=["sub"]),
        agents=[checker],
    )
    ask = {"coworker": "Checker", "question": "Is it true?"}
    llm = ScriptedLLM({"deep": "deep", "edit": [Reply(tool_calls=[("ask_question", ask)]), "done"]})

    with llm.everywhere(crew):
        result = crew.run()

    assert result.status == "succeeded"
    assert [(c.task_id.split("/")[0], c.model) for c in llm.calls] == [
        ("deep", "anthropic/m"),
        ("edit", "openai/editor"),
        ("edit", "ollama/checker"),  # the coworker's answer, on its own model
        ("edit", "openai/editor"),
    ]


def test_an_injected_rate_limit_is_retried_by_the_models_own_policy():
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W", llm=PRIMARY)))
    llm = ScriptedLLM({"t": [RateLimitError("slow down", model="openai/primary"), "at last"]})
    seen: list[events.Event] = []

    with llm.everywhere(crew):
        result = asyncio.run(crew.arun(on_event=seen.append))

    assert result.outputs["t"].text == "at last"
    assert [c.model for c in llm.calls] == ["openai/primary", "openai/primary"]
    retries = [e for e in seen if isinstance(e, events.LLMRetrying)]
    assert [(e.model, e.attempt) for e in retries] == [("openai/primary", 1)]
    assert result.tasks["t"].attempts == 1  # retried below the task, not as a new attempt


def test_spent_retries_fall_back_to_the_next_model_of_the_chain():
    def script(call):
        if call.model == "openai/primary":
            return RateLimitError("slow down", model=call.model)
        return "from the backup"

    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W", llm=PRIMARY), retries=2))
    llm = ScriptedLLM(script)
    seen: list[events.Event] = []

    with llm.everywhere(crew):
        result = asyncio.run(crew.arun(on_event=seen.append))

    assert result.status == "succeeded"
    assert result.outputs["t"].text == "from the backup"
    assert [c.model for c in llm.calls] == ["openai/primary"] * 3 + ["openai/backup"]
    [fallback] = [e for e in seen if isinstance(e, events.LLMFallback)]
    assert (fallback.failed_model, fallback.next_model) == ("openai/primary", "openai/backup")


def test_a_chain_that_is_spent_fails_the_task_without_task_retries_on_top():
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W", llm=PRIMARY), retries=2))
    llm = ScriptedLLM({"t": RateLimitError("down", model="m")})

    with llm.everywhere(crew):
        result = crew.run()

    assert result.tasks["t"].status == "failed"
    assert isinstance(result.tasks["t"].exception, RateLimitError)
    assert len(llm.calls) == 6  # 3 attempts on each of the two models, and no task retry


def test_an_error_that_wont_pass_is_neither_retried_nor_falls_back():
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W", llm=PRIMARY)))
    llm = ScriptedLLM({"t": BadRequestError("bad request", model="openai/primary")})

    with llm.everywhere(crew):
        result = crew.run()

    assert result.tasks["t"].status == "failed"
    assert [c.model for c in llm.calls] == ["openai/primary"]


def test_a_misspelt_key_is_refused_before_any_call_with_the_closest_task():
    crew = crew_of(
        Task(id="facts", description="d", agent=Agent(role="W", llm="openai/m")),
        Task(id="article", description="d", agent=Agent(role="W", llm="openai/m")),
    )
    llm = ScriptedLLM({"facts": "x", "artcle": {"title": "T"}})

    with pytest.raises(ConfigError) as raised, llm.everywhere(crew):
        crew.run()

    message = str(raised.value)
    assert "'artcle'" in message and "Did you mean 'article'?" in message
    assert "strict=False" in message
    assert llm.calls == []


def test_a_misspelt_key_is_refused_by_check_for_a_crew_that_uses_the_script_directly():
    llm = ScriptedLLM({"artcle": "text"})
    crew = crew_of(Task(id="article", description="d", agent=Agent(role="W")), llm=llm)

    with pytest.raises(ConfigError, match="Did you mean 'article'"):
        llm.check(crew)


def test_strict_false_lets_unknown_keys_pass_and_answers_with_the_default():
    llm = ScriptedLLM({"artcle": "text"}, strict=False)
    crew = crew_of(Task(id="article", description="d", agent=Agent(role="W")), llm=llm)

    with llm.everywhere(crew):
        result = crew.run()

    assert result.outputs["article"].text == "ok"


def test_keys_of_loop_bodies_subcrews_and_delegations_are_known():
    worker = Agent(role="W", llm="openai/m")
    inner = Crew([Task(id="deep", description="d", agent=worker)])
    crew = crew_of(
        Task(id="sub", description="d", crew=inner),
        loop("polish", [Task(id="draft", description="d", agent=worker)], max_rounds=1),
    )
    llm = ScriptedLLM({"deep": "x", "draft": "y", "draft/question-1": "z", "polish": "w"})

    llm.check(crew)  # no error

    with pytest.raises(ConfigError, match="'drafts'"):
        ScriptedLLM({"drafts": "y"}).check(crew)


def test_used_directly_the_script_is_the_model():
    llm = ScriptedLLM({"t": [Reply(tool_calls=[("post_note", {"key": "k", "text": "n"})]), "done"]})
    crew = crew_of(Task(id="t", description="d", agent=Agent(role="W")), llm=llm)

    result = crew.run()

    assert result.outputs["t"].text == "done"
    assert [c.model for c in llm.calls] == ["scripted", "scripted"]
    assert [c.index for c in llm.calls] == [0, 1]
    assert llm.calls[1].tool_results  # the tool's answer went back to the model
