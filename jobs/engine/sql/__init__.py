"""The engine's hot statements, by name, read once from the ``.sql`` files beside this module.

Each file holds statements in blocks (the layout of procrastinate's ``queries.sql``)::

    -- claim_task --
    -- One line that says what the statement does.
    UPDATE …

Inside a statement, ``<JobState.STARTED>``, ``<TaskState.RUNNING>`` and ``<Severity.INFO>`` stand for
those ids, taken here (and nowhere else) from ``jobs/states.py`` and ``logs/models.py``; ``<<name>>``
stands for the text of another statement of the same files (a claim reused as a CTE). Parameters are
psycopg's ``%(name)s``. Nothing a client sends is ever formatted into a statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from jobs.states import JobState, TaskState
from logs.models import Severity

_BLOCK = re.compile(r"^-- ([a-z0-9_]+) --\n-- (.+)\n", re.MULTILINE)
_CONSTANT = re.compile(r"<(JobState|TaskState|Severity)\.([A-Z_]+)>")
_INCLUDE = re.compile(r"<<([a-z0-9_]+)>>")
_ENUMS: dict[str, type[IntEnum]] = {"JobState": JobState, "TaskState": TaskState, "Severity": Severity}


@dataclass(frozen=True)
class Statement:
    name: str
    description: str
    text: str
    file: str


def parse(text: str, file: str) -> list[Statement]:
    """The statements of one file, in order; their text as written (constants not yet replaced)."""
    parts = _BLOCK.split(text)
    statements = []
    # parts: [header, name, description, body, name, description, body, …]
    for index in range(1, len(parts), 3):
        name, description, body = parts[index], parts[index + 1].strip(), parts[index + 2].strip()
        statements.append(Statement(name, description, body, file))
    return statements


def _constant(match: re.Match[str]) -> str:
    enum, member = match.groups()
    return str(int(_ENUMS[enum][member]))


def load(folder: Path = Path(__file__).parent) -> dict[str, Statement]:
    """Every statement of the folder's ``.sql`` files by name, constants and includes resolved."""
    raw: dict[str, Statement] = {}
    for path in sorted(folder.glob("*.sql")):
        for statement in parse(path.read_text(encoding="utf-8"), path.name):
            if statement.name in raw:
                raise ValueError(f"statement {statement.name!r} is named twice ({path.name})")
            raw[statement.name] = statement

    def resolve(text: str, seen: tuple[str, ...]) -> str:
        def include(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in seen:
                raise ValueError(f"statement {name!r} includes itself")
            return resolve(raw[name].text, (*seen, name))

        return _CONSTANT.sub(_constant, _INCLUDE.sub(include, text))

    return {name: Statement(name, s.description, resolve(s.text, (name,)), s.file) for name, s in raw.items()}


STATEMENTS = load()


def sql(name: str) -> str:
    """The text of the statement ``name``, ready to execute."""
    return STATEMENTS[name].text
