"""CrewAI projects, run unchanged: ``crew run DIR`` on a folder made by ``crewai create crew``
(or ``crewai create flow``).

Two layouts are read: ``DIR/config/{agents,tasks}.yaml`` with an optional ``crew.py``, and
``DIR/src/<package>/``. The ``@CrewBase`` class may sit in any module of the project (a flow's
``crews/content_crew/content_crew.py``); its config paths are relative to its module, as in
CrewAI. With several classes, the one main.py kicks off runs, or the one ``crew_class``
(``--crew``) names. The project's Python is read with ``ast``: none of its code is ever
imported or run. CrewAI's semantics are kept:

- Task order is that of the ``@task`` methods of the class (or the ``tasks=[self.a(), ...]``
  of its ``@crew`` method); without a class, that of tasks.yaml, whose entries no ``@task``
  method of any class uses are ignored (with a warning).
- A task without ``context`` depends on every earlier task, as CrewAI hands it all earlier
  outputs; an ``async_execution`` task without ``context`` depends on none (and gets no
  context, as in a CrewAI kickoff). ``context`` lists a task's only dependencies, so tasks
  with disjoint contexts run in parallel.
- A value set in Python (``Task(agent=self.researcher(), output_file=...)``) overrides YAML.
- Every ``{placeholder}`` is a required input of type ``text``: any JSON value, filled in with
  ``str()`` as CrewAI does. Literal values of main.py's ``inputs = {...}`` (or
  ``kickoff(inputs={...})``) are defaults; computed ones such as ``str(datetime.now().year)``
  are skipped, so those inputs must be given.
- ``output_pydantic``/``output_json`` classes of the package are rebuilt from their annotations
  with ``pydantic.create_model`` when their field types are simple. An answer that still does
  not match after the repair turn is kept as text (``OutputKeptAsText``), as CrewAI does.

What cannot run here (tools, callbacks, custom LLM objects, a hierarchical process, memory,
planning, knowledge sources) gives one warning each, never a failure; a tool gives one warning
naming its class and why it cannot run. Mistakes in the project raise one ConfigError listing
every problem with its file, line and field.

``python`` reads the modules and main.py, ``models`` rebuilds the output models, and ``loader``
turns what was read into a crew.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from crew.crewai.loader import CrewAIProject, Loader
from crew.crewai.python import declares_crew, modules_of
from crew.errors import ConfigError
from crew.llm import LLM

__all__ = ["CrewAIProject", "is_crewai_project", "load_crewai_project"]


def is_crewai_project(path: Path) -> bool:
    """Whether ``path`` is a CrewAI project folder, in either layout."""
    return _package_dir(Path(path)) is not None


def load_crewai_project(
    path: Path,
    *,
    resolve_llm: Callable[[str], Any] | None = None,
    crew_class: str | None = None,
) -> CrewAIProject:
    """Read the CrewAI project in ``path`` as a crew, without running any of its code.

    Args:
        path: the project folder.
        resolve_llm: turns an agent's ``llm:`` string into a model; by default ``LLM(value)``.
        crew_class: the ``@CrewBase`` class to run (``--crew``); by default the only one, or
            the one main.py kicks off.

    Raises:
        ConfigError: listing every problem, each with its file, line and field.
    """
    path = Path(path)
    package = _package_dir(path)
    if package is None:
        raise ConfigError(
            f"{path}: not a CrewAI project: expected config/agents.yaml and config/tasks.yaml"
            " in it or in src/<package>/."
        )
    return Loader(path, package, resolve_llm or LLM, crew_class).load()


def _package_dir(path: Path) -> Path | None:
    """The folder holding the project's ``config/`` or ``@CrewBase`` modules: ``path`` (the
    flat layout), or ``path/src/<package>``, where a crew may sit in any module (a flow's
    ``crews/<name>/<name>_crew.py``)."""
    if not path.is_dir():
        return None
    src = path / "src"
    for folder in [path, *sorted(p for p in src.glob("*") if p.is_dir())]:
        if any((folder / "config" / name).is_file() for name in ("agents.yaml", "tasks.yaml")):
            return folder
        modules = sorted(folder.glob("*.py")) if folder == path else modules_of(folder)
        if any(declares_crew(module) for module in modules):
            return folder
    return None
