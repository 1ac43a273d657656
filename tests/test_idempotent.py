"""Tools that are not idempotent: each side effect happens once, across crashes, resumes and
retries (crew.tool_calls)."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, cast

import pytest

from crew import Agent, Crew, Task
from crew.errors import BadRequestError, ConfigError, OutputValidationError, StoreError
from crew.store import Store, ToolCallRecord
from crew.store.sqlite import SQLiteStore
from crew.testing import Call, Reply, ScriptedLLM
from crew.tool_calls import resolve_tool_call, unknown_tool_calls
from crew.tools import Tool, idempotency_key, tool

ROOT = Path(__file__).resolve().parent.parent


class Bank:
    """An outside system with a side effect: every charge is kept, by the key it came with."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, int]] = []

    def charge_tool(self, **options: Any) -> Tool:
        def charge(amount: int) -> str:
            """Charge the customer.

            Args:
                amount: in euros.
            """
            self.charges.append((idempotency_key(), amount))
            return f"charged {amount}"

        return tool(charge, idempotent=False, **options)


def crew_of(store: Store, llm: ScriptedLLM, charge: Tool, **task: Any) -> Crew:
    agent = Agent(role="Clerk", goal="Bill", tools=[charge], board_tools=False)
    return Crew([Task(id="bill", description="Bill", agent=agent, **task)], llm=llm, store=store)


def charging(*amounts: int, then: Any = "billed") -> list[Any]:
    """The model asks for one charge per turn, then answers ``then``."""
    return [*(Reply(tool_calls=[("charge", {"amount": a})]) for a in amounts), then]


class ResultLost:
    """A store whose write of a tool call's result fails, as if the process died between the
    call and the record of its result."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_tool_call(self, record: ToolCallRecord) -> None:
        if record.status == "done":
            raise StoreError("the disk went away")
        self.store.put_tool_call(record)


def cut_off(store: Store, bank: Bank, charge: Tool) -> str:
    """A run whose charge happened but whose result was never recorded; its run id."""
    llm = ScriptedLLM({"bill": charging(5)})
    first = crew_of(cast(Store, ResultLost(store)), llm, charge).run()
    assert first.status == "failed" and len(bank.charges) == 1
    return first.run_id


def events_of(store: Store, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.events(run_id) if e.type == kind]


def test_a_recorded_result_is_reused_on_resume_not_made_again(durable_store: Store):
    bank = Bank()
    broken = ScriptedLLM({"bill": charging(5, then=BadRequestError("refused", model="m"))})
    first = crew_of(durable_store, broken, bank.charge_tool()).run()
    assert first.status == "failed" and bank.charges[0][1] == 5

    fixed = ScriptedLLM({"bill": charging(5)})
    second = crew_of(durable_store, fixed, bank.charge_tool()).run(resume=first.run_id)

    assert second.status == "succeeded"
    assert [amount for _, amount in bank.charges] == [5]  # once, across the resume
    assert fixed.calls_for("bill")[1].tool_results == ["charged 5"]  # the model read the result
    (reused,) = events_of(durable_store, first.run_id, "ToolResultReused")
    assert reused["how"] == "recorded" and reused["key"] == bank.charges[0][0]
    (record,) = durable_store.tool_calls(first.run_id)
    assert (record.status, record.result, record.key) == ("done", "charged 5", bank.charges[0][0])
    assert record.key == f"{first.run_id}/bill/0/1/0"


def test_identical_calls_are_each_repeated_once_and_a_new_one_is_made(durable_store: Store):
    bank = Bank()
    twice = Reply(tool_calls=[("charge", {"amount": 5}), ("charge", {"amount": 5})])
    broken = ScriptedLLM({"bill": [twice, BadRequestError("refused", model="m")]})
    first = crew_of(durable_store, broken, bank.charge_tool()).run()
    assert len(bank.charges) == 2

    thrice = Reply(tool_calls=[("charge", {"amount": 5})] * 3)
    fixed = ScriptedLLM({"bill": [thrice, "billed"]})
    second = crew_of(durable_store, fixed, bank.charge_tool()).run(resume=first.run_id)

    assert second.status == "succeeded"
    assert len(bank.charges) == 3  # two reused, the third is new
    assert len({key for key, _ in bank.charges}) == 3
    assert len(events_of(durable_store, first.run_id, "ToolResultReused")) == 2
    attempts = [r.attempt for r in durable_store.tool_calls(first.run_id)]
    assert attempts == [1, 1, 2]


def test_a_task_retried_in_the_same_run_does_not_charge_again(durable_store: Store):
    bank = Bank()
    retried = OutputValidationError("the answer did not parse")  # retryable: a second attempt
    llm = ScriptedLLM({"bill": [*charging(7, then=retried), *charging(7)]})
    result = crew_of(durable_store, llm, bank.charge_tool(), retries=1).run()

    assert result.status == "succeeded" and result.tasks["bill"].attempts == 2
    assert len(bank.charges) == 1
    assert llm.calls_for("bill")[3].tool_results == ["charged 7"]
    assert len(events_of(durable_store, result.run_id, "ToolResultReused")) == 1


def test_arguments_the_schema_refuses_write_no_intent(durable_store: Store):
    bank = Bank()
    llm = ScriptedLLM({"bill": charging("lots", then="gave up")})  # type: ignore[arg-type]
    result = crew_of(durable_store, llm, bank.charge_tool()).run()
    assert result.status == "succeeded" and bank.charges == []
    assert "ValidationError" in llm.calls_for("bill")[1].tool_results[0]
    assert durable_store.tool_calls(result.run_id) == []


def test_an_idempotent_tool_is_not_recorded(durable_store: Store):
    calls: list[int] = []

    @tool
    def charge(amount: int) -> str:
        """Charge."""
        calls.append(amount)
        return "ok"

    result = crew_of(durable_store, ScriptedLLM({"bill": charging(1)}), charge).run()
    assert result.status == "succeeded" and calls == [1]
    assert durable_store.tool_calls(result.run_id) == []


def test_an_unknown_outcome_fails_the_task_until_a_person_says_it_happened(durable_store: Store):
    bank = Bank()
    run_id = cut_off(durable_store, bank, bank.charge_tool())
    (unknown,) = unknown_tool_calls(durable_store, run_id)

    llm = ScriptedLLM({"bill": charging(5)})
    second = crew_of(durable_store, llm, bank.charge_tool()).run(resume=run_id)

    assert second.status == "failed"
    failed = second.tasks["bill"]
    assert failed.error_type == "ToolOutcomeUnknownError" and failed.attempts == 2
    assert failed.error is not None and unknown.key in failed.error
    assert (
        "resolve_tool_call" in failed.error and "cannot tell whether it took effect" in failed.error
    )
    assert len(llm.calls_for("bill")) == 1  # not retried: another try cannot tell either
    assert len(bank.charges) == 1
    (event,) = events_of(durable_store, run_id, "ToolOutcomeUnknown")
    assert event["key"] == unknown.key and event["arguments"] == {"amount": 5}

    resolve_tool_call(durable_store, run_id, unknown.key, done=True, result="charged 5 (by hand)")
    fixed = ScriptedLLM({"bill": charging(5)})
    third = crew_of(durable_store, fixed, bank.charge_tool()).run(resume=run_id)
    assert third.status == "succeeded" and len(bank.charges) == 1
    assert fixed.calls_for("bill")[1].tool_results == ["charged 5 (by hand)"]


def test_a_call_a_person_says_did_not_happen_is_made_again_under_its_key(durable_store: Store):
    bank = Bank()
    run_id = cut_off(durable_store, bank, bank.charge_tool())
    (unknown,) = unknown_tool_calls(durable_store, run_id)
    resolve_tool_call(durable_store, run_id, unknown.key, done=False)
    with pytest.raises(ConfigError, match=r"no tool call .* whose outcome is unknown"):
        resolve_tool_call(durable_store, run_id, unknown.key, done=False)

    result = crew_of(durable_store, ScriptedLLM({"bill": charging(5)}), bank.charge_tool()).run(
        resume=run_id
    )
    assert result.status == "succeeded"
    assert [key for key, _ in bank.charges] == [unknown.key, unknown.key]  # the same key again
    assert [r.status for r in durable_store.tool_calls(run_id)] == ["done"]


def test_reconcile_finds_a_call_that_took_effect(durable_store: Store):
    bank = Bank()

    def reconcile(key: str) -> str | None:
        return next((f"charged {a} (found)" for k, a in bank.charges if k == key), None)

    charge = bank.charge_tool(reconcile=reconcile)
    run_id = cut_off(durable_store, bank, charge)
    llm = ScriptedLLM({"bill": charging(5)})
    result = crew_of(durable_store, llm, charge).run(resume=run_id)

    assert result.status == "succeeded" and len(bank.charges) == 1
    assert llm.calls_for("bill")[1].tool_results == ["charged 5 (found)"]
    (reused,) = events_of(durable_store, run_id, "ToolResultReused")
    assert reused["how"] == "reconciled"


def test_reconcile_saying_not_done_makes_the_call_again(durable_store: Store):
    bank = Bank()
    asked: list[str] = []

    async def reconcile(key: str) -> None:
        asked.append(key)

    charge = bank.charge_tool(reconcile=reconcile)
    run_id = cut_off(durable_store, bank, charge)
    result = crew_of(durable_store, ScriptedLLM({"bill": charging(5)}), charge).run(resume=run_id)

    assert result.status == "succeeded"
    assert asked == [bank.charges[0][0]] and len(bank.charges) == 2
    assert events_of(durable_store, run_id, "ToolResultReused") == []


def test_reconcile_is_only_for_tools_that_are_not_idempotent():
    with pytest.raises(ConfigError, match="reconcile= is for a tool that is not idempotent"):
        tool(lambda amount: amount, reconcile=lambda key: None)


def test_a_tool_call_record_comes_back_exactly_and_goes_with_its_run(durable_store: Store):
    odd = "nul\x00 lone\ud800 🦜"
    durable_store.create_run("r1", crew="c", inputs={}, task_ids=["t"])
    intent = ToolCallRecord(
        run_id="r1", key="r1/t/0/1/0", task_id="t", attempt=1, call_index=0, tool="pay",
        arguments={"note": odd, "amount": 5}, arguments_hash="h", status="pending",
        created_at=1.0,
    )  # fmt: skip
    durable_store.put_tool_call(intent)
    assert durable_store.tool_calls("r1") == [intent]
    done = ToolCallRecord(**{**_fields(intent), "status": "done", "result": odd})
    durable_store.put_tool_call(done)  # the same key: replaced, not added
    assert durable_store.tool_calls("r1", "t") == [done]
    assert durable_store.tool_calls("r1", "other") == []
    with pytest.raises(StoreError):
        durable_store.put_tool_call(ToolCallRecord(**{**_fields(intent), "run_id": "nope"}))
    assert durable_store.delete_runs(keep=0) == 1
    assert durable_store.tool_calls("r1") == []


def _fields(record: ToolCallRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ToolCallRecord.__dataclass_fields__}


# --- a real crash: SIGKILL at random moments, then resume -------------------------------------

CRASH_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from crew import Agent, Crew, Task, events
    from crew.store.sqlite import SQLiteStore
    from tests.test_idempotent import crash_crew

    crew = crash_crew(SQLiteStore(os.environ["DB"]), os.environ["EFFECTS"],
                      reconcile=os.environ["RECONCILE"] == "1", hold_s=float(os.environ["HOLD"]))

    def started(event):
        if isinstance(event, events.RunStarted):
            print("started", flush=True)

    resume = os.environ.get("RESUME") or None
    crew.run(on_event=started, resume=resume, run_id=None if resume else os.environ["RUN_ID"])
    print("finished", flush=True)
""")

CALLS_PER_TASK = 3


def crash_crew(store: Store, effects: str, *, reconcile: bool, hold_s: float) -> Crew:
    """Three tasks, each making three charges, one per turn: each real charge is a line
    ``key task n`` in ``effects``."""

    def charge(task: str, n: int) -> str:
        """Charge.

        Args:
            task: which task charges.
            n: which of its charges.
        """
        with open(effects, "a") as file:
            file.write(f"{idempotency_key() or '-'} {task} {n}\n")
            file.flush()
            os.fsync(file.fileno())
        time.sleep(hold_s)  # the charge is done, its result not yet recorded
        return f"charged {task} {n}"

    def found(key: str) -> str | None:
        with open(effects) as file:
            lines = [line.split() for line in file]
        return next((f"charged {t} {n}" for k, t, n in lines if k == key), None)

    def script(call: Call) -> Any:
        done = len(call.tool_results)
        if done < CALLS_PER_TASK:
            return Reply(tool_calls=[("charge", {"task": call.task_id, "n": done})], delay_s=0.05)
        return "billed"

    options: dict[str, Any] = {"reconcile": found} if reconcile else {}
    agent = Agent(
        role="Clerk", goal="Bill", tools=[tool(charge, idempotent=False, **options)],
        board_tools=False,
    )  # fmt: skip
    tasks = [Task(id=t, description=f"Bill {t}", agent=agent) for t in ("a", "b", "c")]
    return Crew(tasks, llm=ScriptedLLM(script), store=store)


def _start(script: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    return child


def _effects(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_no_charge_happens_twice_across_kills_and_resumes(tmp_path: Path):
    rng = random.Random(20261203)
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(root=str(ROOT)))
    cut_between = mid_run = 0
    for round_ in range(4):
        db, effects, run_id = tmp_path / f"{round_}.db", tmp_path / f"{round_}.txt", f"r{round_}"
        env = {**os.environ, "DB": str(db), "EFFECTS": str(effects), "RUN_ID": run_id,
               "RECONCILE": "1", "HOLD": "0.1"}  # fmt: skip
        for kill in range(3):  # killed three times, each time resumed where it was
            child = _start(script, {**env, "RESUME": run_id if kill else ""})
            time.sleep(rng.uniform(0.05, 0.5))
            child.send_signal(signal.SIGKILL)
            child.wait()
            with SQLiteStore(db) as store:
                cut_between += bool(unknown_tool_calls(store, run_id))
                mid_run += store.get_run(run_id).status != "succeeded"  # type: ignore[union-attr]
        with SQLiteStore(db) as store:
            result = crash_crew(store, str(effects), reconcile=True, hold_s=0.0).run(resume=run_id)
            assert result.status == "succeeded", (round_, result.tasks)
            records = store.tool_calls(run_id)
        made = _effects(effects)
        charged = collections.Counter((task, int(n)) for _, task, n in made)
        wanted = {(t, n) for t in "abc" for n in range(CALLS_PER_TASK)}
        assert set(charged) == wanted and set(charged.values()) == {1}, (round_, charged)
        assert len({key for key, _, _ in made}) == len(made), made  # no key charged twice
        assert all(r.status == "done" for r in records)
    assert mid_run >= 6  # most kills landed while the run was charging, not after it
    assert cut_between >= 1  # some landed between a charge and the record of its result


def test_a_kill_between_a_charge_and_its_result_is_reported_unknown(tmp_path: Path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(root=str(ROOT)))
    db, effects = tmp_path / "crew.db", tmp_path / "effects.txt"
    env = {**os.environ, "DB": str(db), "EFFECTS": str(effects), "RUN_ID": "r1",
           "RECONCILE": "0", "HOLD": "60"}  # fmt: skip
    child = _start(script, env)
    deadline = time.monotonic() + 60
    while not _effects(effects) and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)  # inside the charge: done, its result not recorded
    child.wait()
    assert len(_effects(effects)) >= 1

    with SQLiteStore(db) as store:
        result = crash_crew(store, str(effects), reconcile=False, hold_s=0.0).run(resume="r1")
        unknown = unknown_tool_calls(store, "r1")
        failed = [t for t in result.tasks.values() if t.status == "failed"]
        assert result.status == "failed" and failed
        assert {t.error_type for t in failed} == {"ToolOutcomeUnknownError"}
        # every charge made is an intent without a result (and one may not have begun yet)
        assert {key for key, _, _ in _effects(effects)} <= {r.key for r in unknown}
        assert len({key for key, _, _ in _effects(effects)}) == len(_effects(effects))

    env = {**os.environ, "CREW_STORE": str(db), "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    shown = subprocess.run(
        [sys.executable, "-m", "crew.cli", "show", "r1"], capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "cannot tell whether it took effect" in " ".join(shown.stdout.split()), shown.stdout
    logs = subprocess.run(
        [sys.executable, "-m", "crew.cli", "logs", "r1"], capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert "ToolOutcomeUnknown" in logs.stdout and unknown[0].key in logs.stdout

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crew.cli", *args], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120,
        )  # fmt: skip

    listed = cli("resolve", "r1")
    assert listed.returncode == 0 and {r.key for r in unknown} <= set(listed.stdout.split())
    vague = cli("resolve", "r1", unknown[0].key)
    assert vague.returncode == 2 and "--done" in vague.stderr and "Traceback" not in vague.stderr
    for record in unknown:  # a person checked: every charge begun went through
        done = cli("resolve", "r1", record.key, "--done", "charged")
        assert done.returncode == 0 and "crew resume r1" in done.stdout, done.stderr
    with SQLiteStore(db) as store:
        resumed = crash_crew(store, str(effects), reconcile=False, hold_s=0.0).run(resume="r1")
        assert resumed.status == "succeeded", resumed.tasks
    made = _effects(effects)
    assert len({key for key, _, _ in made}) == len(made)  # no intent charged twice


def test_a_crew_file_references_a_tool_that_is_not_idempotent(tmp_path: Path):
    from crew.spec.loader import load_crew_yaml

    (tmp_path / "idem_refs.py").write_text(
        textwrap.dedent("""
            from crew import tool

            @tool(idempotent=False, reconcile=lambda key: None)
            def pay(amount: int) -> str:
                \"\"\"Pay.\"\"\"
                return "paid"
        """)
    )
    (tmp_path / "crew.yaml").write_text(
        textwrap.dedent("""\
            agents:
              a: {role: A, tools: ["idem_refs:pay"]}
            tasks:
              t: {description: T, agent: a}
        """)
    )
    agent = load_crew_yaml(tmp_path / "crew.yaml").crew.tasks[0].agent
    assert agent is not None
    pay = agent.tool_map["pay"]
    assert pay.idempotent is False and pay.reconcile is not None
