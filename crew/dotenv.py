"""``.env`` files: the provider keys and ``CREW_*`` settings in a project's ``.env``.

Only names that configure a model are read (``PROVIDER_NAMES``); lines are ``NAME=VALUE``, with
``export``, quotes and comments as shells and python-dotenv write them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROVIDER_NAMES = re.compile(
    r"(_API_KEY|_API_BASE|_BASE_URL|_API_TOKEN|_API_VERSION)$|^(AWS_|AZURE_|CREW_|VERTEX)|^MODEL$"
)

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: Path, problems: list[str], shown: str = ".env") -> dict[str, str]:
    """Provider keys and ``CREW_*`` from ``KEY=VALUE`` lines (``export``, quotes, comments);
    ``shown`` names the file in problems."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown}: cannot read it: {exc}.")
        return {}
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            problems.append(f"{shown}:{number}: expected NAME=VALUE, got {line[:40]!r}.")
            continue
        name, value = match.groups()
        if PROVIDER_NAMES.search(name):
            found[name] = _value(value)
    return found


def _value(raw: str) -> str:
    quoted = re.fullmatch(r"""(['"])(.*?)\1\s*(?:#.*)?""", raw.strip())
    if quoted is None:
        return re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    quote, inner = quoted.groups()
    return inner.replace('\\"', '"').replace("\\n", "\n") if quote == '"' else inner


def export(values: Mapping[str, str], environ: MutableMapping[str, str]) -> None:
    for name, value in values.items():
        environ.setdefault(name, value)
