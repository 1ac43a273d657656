"""The README example: two research tasks run in parallel, then a writer returns a typed Article.

    python examples/quickstart.py              # no provider set: crew's local fake server answers
    CREW_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=sk-... python examples/quickstart.py
    crew run examples/quickstart.py --input topic=Porto   # the same crew, from the command line

Any litellm model string works in CREW_MODEL (anthropic/..., ollama/... with CREW_API_BASE).
"""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel

from crew import LLM, Agent, Crew, Task, tool


class Article(BaseModel):
    title: str
    body: str


@tool
def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


INPUTS = {"topic": {"description": "What to write about", "type": "string", "default": "Lisbon"}}


def build_crew(inputs: dict[str, object] | None = None, *, llm: LLM | None = None) -> Crew:
    """The crew; ``crew run`` calls it with the inputs, ``main`` with the offline model too."""
    researcher = Agent(
        role="Researcher",
        goal="Find facts about {topic}",
        backstory="A meticulous analyst.",
        tools=[word_count],
    )
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="A clear, vivid writer.")
    facts = Task(
        id="facts",
        description="List facts about {topic}",
        expected_output="5 bullets",
        agent=researcher,
    )
    history = Task(
        id="history",
        description="Summarise the history of {topic}",
        expected_output="One paragraph",
        agent=researcher,
    )
    article = Task(
        id="article",
        description="Write a short article about {topic}",
        expected_output="A title and a body",
        agent=writer,
        depends_on=[facts, history],
        output_model=Article,
    )
    return Crew(tasks=[facts, history, article], max_concurrency=8, llm=llm)


def offline_server():  # type: ignore[no-untyped-def]
    """Canned answers from crew's fake OpenAI-compatible server on 127.0.0.1."""
    from crew.testserver import FakeOpenAIServer, ServerReply

    server = FakeOpenAIServer(latency_ms=300).start()
    server.script(
        "facts",
        ServerReply(
            text="- Capital of Portugal\n- On the Tagus\n- Seven hills\n"
            "- Trams since 1873\n- Home of pastel de nata"
        ),
    )
    server.script(
        "history",
        ServerReply(
            text="Rebuilt after the 1755 earthquake, Lisbon grew from a "
            "Phoenician port into the capital of a sea-faring empire."
        ),
    )
    server.script(
        "article",
        ServerReply(
            json={
                "title": "Lisbon, City of Seven Hills",
                "body": "On the Tagus, trams climb the seven hills of a city rebuilt after 1755...",
            }
        ),
    )
    return server


def main() -> int:
    server = None
    llm = None
    if not os.environ.get("CREW_MODEL"):
        server = offline_server()
        llm = LLM("openai/crew-demo", api_base=server.url, api_key="offline")
        print(f"No CREW_MODEL set: answering from crew's local fake server at {server.url}.\n")
    try:
        result = build_crew(llm=llm).run(inputs={"topic": "Lisbon"})
    finally:
        if server is not None:
            server.stop()
    for task_id, task in result.tasks.items():
        print(f"{task_id:<8} {task.status:<10} {task.duration_s or 0:5.2f} s  {task.error or ''}")
    article = result.outputs.get("article")
    if article is not None:
        print(f"\n# {article.data.title}\n\n{article.data.body}\n")
    total = result.usage.total
    print(
        f"run {result.run_id}: {result.status} in {result.duration_s:.2f} s, "
        f"{total.calls} calls, {total.total_tokens} tokens, ${total.cost_usd:.4f}"
    )
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
