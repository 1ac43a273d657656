"""Loading the user's Python: a crew defined in a Python file (``crew run crew.py``), and the
``module:name`` references of a crew file (tools, output models), imported with the file's
folder on ``sys.path``."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from crew.crew import Crew
from crew.errors import ConfigError
from crew.inputs import declared_inputs, placeholder_inputs, resolve_inputs
from crew.spec.models import CrewFile


def load_python_crew(path: str | Path, inputs: Mapping[str, Any]) -> CrewFile:
    """Run the Python file ``path`` and take its crew: ``build_crew(inputs)`` if it defines one,
    else a module-level ``crew``. Its inputs are ``INPUTS`` (name -> ``{description, type,
    default}``) if defined, else one required string per placeholder of the crew."""
    path = Path(path)
    module = run_module(path)
    declared = getattr(module, "INPUTS", None)
    specs = None if declared is None else declared_inputs(declared, path)
    build = getattr(module, "build_crew", None)
    if callable(build):
        given = dict(inputs) if specs is None else resolve_inputs(specs, inputs, path)
        try:
            crew = build(given)
        except ConfigError:
            raise
        except Exception as exc:  # the user's code: say where it failed, keep the traceback
            raise ConfigError(
                f"{path}{line_in(exc, path)}: build_crew(inputs) raised {type(exc).__name__}: {exc}"
            ) from exc
        found = "build_crew(inputs) returned"
    elif hasattr(module, "crew"):
        crew, found = module.crew, "`crew` is"
    else:
        raise ConfigError(
            f"{path}: no crew found. Define a module-level `crew = Crew(...)` or a function"
            " `build_crew(inputs)` that returns a Crew."
        )
    if not isinstance(crew, Crew):
        raise ConfigError(f"{path}: {found} a {type(crew).__name__}, not a crew.Crew.")
    doc = (module.__doc__ or "").strip()
    return CrewFile(
        crew=crew,
        source=path,
        inputs=placeholder_inputs(crew) if specs is None else specs,
        description=doc.splitlines()[0] if doc else "",
    )


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)


def import_module(name: str, folder: Path) -> ModuleType:
    importlib.invalidate_caches()  # modules written since the last import are found
    _forget_if_shadowed(name.split(".")[0], folder)
    try:
        with _on_sys_path(folder):
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigError(f"no module '{name}' in {folder} or on sys.path.") from exc
        raise ConfigError(f"importing '{name}' failed: {exc}.") from exc
    except Exception as exc:  # the user's module: report it as a setup problem
        raise ConfigError(f"importing '{name}' raised {type(exc).__name__}: {exc}.") from exc


def _forget_if_shadowed(top: str, folder: Path) -> None:
    """Two crew files may each have their own ``tools.py``: the one next to this file wins over
    one of the same name imported earlier from elsewhere."""
    local = [folder / f"{top}.py", folder / top / "__init__.py"]
    cached = getattr(sys.modules.get(top), "__file__", None)
    here = [path.resolve() for path in local if path.is_file()]
    if cached and here and Path(cached).resolve() not in here:
        for module in [m for m in sys.modules if m == top or m.startswith(f"{top}.")]:
            del sys.modules[module]


def run_module(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file.")
    name = "_crew_file_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up by name
    try:
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        if isinstance(exc, ConfigError):
            raise
        # The user's code: say where it failed, and keep the traceback.
        raise ConfigError(
            f"{path}{line_in(exc, path)}: running the file raised {type(exc).__name__}: {exc}"
        ) from exc
    return module


def line_in(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f":{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() == path.resolve()
    ]
    return f":{frames[-1].lineno}" if frames else ""
