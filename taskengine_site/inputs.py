"""Checks on what clients send that every app shares: control characters, and JSON Postgres can store.

A client's JSON is stored as ``jsonb``, which refuses what Python's parser accepts: numbers beyond a
double (``1e999`` parses to ``inf``, which ``json.dumps`` writes as ``Infinity``), NaN, lone UTF-16
surrogates (``"\\ud800"``) and NUL characters. Refused when the body is parsed, each such value is a
400 naming where it is; reaching the database it would be an error the client could not act on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# Deeper documents are refused before they reach code that walks them recursively; real workflow
# parameters nest a handful of levels.
MAX_JSON_DEPTH = 32

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: none belongs in a path, a URL,
# a file name or a tool's argument, and each has been used to split a line someone else parses.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What jsonb cannot hold in a string or a key.
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL, C1, U+2028, U+2029)."""
    return _CONTROL.search(text) is not None


@dataclass(frozen=True)
class JsonProblem:
    """Why a JSON document cannot be stored, and where: ``parameters.clips[0].source``."""

    path: str
    reason: str
    # Too deep to walk: a property of the whole document rather than of one value.
    too_deep: bool = False

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}"


# A path is built only when there is a problem to report: each node carries (parent, key) links.
_Path = tuple[Any, str | int] | None


def _render(path: _Path, root: str) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _PLAIN_KEY.match(key):
            parts.append(f".{key}")
        else:
            # A key with odd characters is shown escaped: the message itself must be storable and
            # renderable (a lone surrogate cannot even be encoded as UTF-8).
            parts.append(f"[{json.dumps(key)}]")
    text = "".join(reversed(parts))
    if not root:
        return text.removeprefix(".") or "body"
    return root + text


def _char_reason(text: str) -> str | None:
    found = _UNSTORABLE_CHAR.search(text)
    if found is None:
        return None
    return "NUL" if found.group() == "\x00" else "lone surrogate"


def json_problem(value: Any, *, root: str = "", limit: int = MAX_JSON_DEPTH) -> JsonProblem | None:
    """The first value of ``value`` Postgres's ``jsonb`` cannot store, or a depth past ``limit``; else None.

    ``root`` prefixes the reported path (``"parameters"`` when ``value`` is a job's parameters).
    Iterative on purpose: a recursive walk of hostile input is exactly what the depth limit prevents.
    """
    stack: list[tuple[Any, int, _Path]] = [(value, 1, None)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return JsonProblem(_render(path, root), f"nested deeper than {limit} levels", too_deep=True)
            for key, child in item.items():
                key_text = str(key)
                reason = _char_reason(key_text)
                if reason:
                    return JsonProblem(
                        _render((path, key_text), root),
                        f"a key contains a character that cannot be stored ({reason})",
                    )
                stack.append((child, depth + 1, (path, key_text)))
        elif isinstance(item, list | tuple):
            if depth > limit:
                return JsonProblem(_render(path, root), f"nested deeper than {limit} levels", too_deep=True)
            stack.extend((child, depth + 1, (path, index)) for index, child in enumerate(item))
        elif isinstance(item, str):
            reason = _char_reason(item)
            if reason:
                return JsonProblem(
                    _render(path, root), f"contains a character that cannot be stored ({reason})"
                )
        elif isinstance(item, float) and not math.isfinite(item):
            return JsonProblem(_render(path, root), "not a finite number")
    return None
