"""Review hooks: tell a person, the moment it happens, that an output waits for their review.

A hook is one of:

- a webhook URL (``http://`` or ``https://``): the notice is POSTed to it as JSON;
- a shell command: it runs with the notice as JSON on stdin, and ``CREW_RUN_ID``,
  ``CREW_TASK_ID`` and ``CREW_REVIEW_PREVIEW`` in its environment;
- from Python, a function of the :class:`ReviewNotice` (called in a worker thread).

Set it with ``Crew(review_hook=...)``, ``[run] review_hook`` in crew.toml, or
``CREW_REVIEW_HOOK``. The hook runs in the run's process, in a worker thread so that the tasks
running meanwhile go on, for at most ``HOOK_TIMEOUT_S``; the run ends only once its notices are
out (a run that only waits for reviews ends right after them). A hook that fails does not fail
the run: the run emits ``ReviewHookFailed`` (kept in its event log: ``crew logs RUN``) and the
review is pending all the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from crew import events
from crew.errors import HookError

if TYPE_CHECKING:
    from crew.results import TaskOutput

HOOK_TIMEOUT_S = 10.0
PREVIEW_CHARS = 500

ReviewHook = str | Callable[["ReviewNotice"], object]
"""A webhook URL, a shell command, or a function of the notice."""


@dataclass(frozen=True, kw_only=True)
class ReviewNotice:
    """What a review hook is told."""

    run_id: str
    crew: str
    task_id: str
    agent: str
    """The role of the agent whose output waits."""
    preview: str
    """The output's first ``PREVIEW_CHARS`` characters."""
    commands: dict[str, str]
    """approve, reject, edit and resume: the commands that answer the review and go on."""

    @property
    def text(self) -> str:
        """One line for a person (and for chat webhooks, which show a ``text`` field)."""
        return (
            f"Run {self.run_id} of crew '{self.crew}': task '{self.task_id}' waits for a review."
            f" Answer with: {self.commands['approve']}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"event": "review_pending", "text": self.text, **asdict(self)}


def review_notice(run_id: str, crew: str, output: TaskOutput) -> ReviewNotice:
    """The notice of ``output``'s pending review."""
    run, task = shlex.quote(run_id), shlex.quote(output.task_id)
    return ReviewNotice(
        run_id=run_id,
        crew=crew,
        task_id=output.task_id,
        agent=output.agent,
        preview=output.text[:PREVIEW_CHARS],
        commands={
            "approve": f"crew approve {run} {task} --resume-now",
            "reject": f'crew reject {run} {task} --feedback "..." --resume-now',
            "edit": f"crew edit {run} {task} --file EDITED.txt --resume-now",
            "resume": f"crew resume {run}",
        },
    )


async def announce_review(
    hook: ReviewHook | None,
    emit: events.Emitter,
    *,
    crew: str,
    output: TaskOutput,
    timeout_s: float = HOOK_TIMEOUT_S,
) -> None:
    """Run the review hook (``hook``, else ``CREW_REVIEW_HOOK``, else none) for ``output``, in a
    worker thread: a webhook or a command may take seconds, and every task of the run shares
    this event loop.

    A failure is emitted as ``ReviewHookFailed`` (from the loop, like every event), never
    raised: the run goes on.
    """
    if hook is None:
        hook = os.environ.get("CREW_REVIEW_HOOK", "").strip() or None
    if hook is None:
        return
    notice = review_notice(emit.run_id, crew, output)
    try:
        await asyncio.to_thread(run_hook, hook, notice, timeout_s=timeout_s)
    except HookError as exc:
        emit(events.ReviewHookFailed, task_id=output.task_id, hook=describe(hook), error=str(exc))


def run_hook(hook: ReviewHook, notice: ReviewNotice, *, timeout_s: float = HOOK_TIMEOUT_S) -> None:
    """Deliver ``notice`` to ``hook``.

    Raises:
        HookError: the webhook answered with an error or not at all, the command failed or
            timed out, or the function raised; the message says which and how to fix it.
    """
    if callable(hook):
        try:
            hook(notice)
        except Exception as exc:  # the user's function: whatever it raises is the hook's failure
            raise HookError(f"The review hook {describe(hook)} raised {exc!r}.") from exc
    elif urllib.parse.urlsplit(hook).scheme in ("http", "https"):
        _post(hook, notice, timeout_s)
    else:
        _command(hook, notice, timeout_s)


def describe(hook: ReviewHook) -> str:
    """The hook for messages, without secrets: a webhook's path and query often hold a token."""
    if callable(hook):
        return f"function {getattr(hook, '__qualname__', type(hook).__name__)}"
    parts = urllib.parse.urlsplit(hook)
    if parts.scheme in ("http", "https"):
        host = parts.netloc.rpartition("@")[2]  # no user or password
        return f"webhook {parts.scheme}://{host}/..."
    words = hook.split()
    return f"command '{words[0] if words else hook}'"


def _post(url: str, notice: ReviewNotice, timeout_s: float) -> None:
    import urllib.error  # with http.client: loaded only when a webhook is posted to
    import urllib.request

    body = json.dumps(notice.to_dict(), ensure_ascii=False).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    where = describe(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise HookError(
            f"The review hook {where} answered HTTP {exc.code} {exc.reason}. Check the URL in"
            " review_hook (crew.toml [run], CREW_REVIEW_HOOK) and that it accepts a JSON POST."
        ) from exc
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, malformed URL
        raise HookError(
            f"The review hook {where} could not be reached: {exc}. Check the URL in review_hook"
            " (crew.toml [run], CREW_REVIEW_HOOK) and that the server is up."
        ) from exc


def _command(command: str, notice: ReviewNotice, timeout_s: float) -> None:
    where = describe(command)
    env = {
        **os.environ,
        "CREW_RUN_ID": notice.run_id,
        "CREW_TASK_ID": notice.task_id,
        "CREW_REVIEW_PREVIEW": notice.preview,
    }
    try:
        done = subprocess.run(
            command, shell=True, input=json.dumps(notice.to_dict(), ensure_ascii=False),
            capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise HookError(
            f"The review hook {where} ran past {timeout_s:g} s and was stopped. Make it finish"
            " quickly (start slow work in the background)."
        ) from exc
    except OSError as exc:
        raise HookError(f"The review hook {where} could not start: {exc}.") from exc
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise HookError(
            f"The review hook {where} exited with status {done.returncode}: {said[0]}. Try it in"
            " a shell: it reads the notice as JSON on stdin."
        )
