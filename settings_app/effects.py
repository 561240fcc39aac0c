"""What a setting change sets in motion. Hooks registered by other apps run after the commit."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import transaction

_HOOKS: list[Callable[[str], None]] = []


def register(hook: Callable[[str], None]) -> Callable[[str], None]:
    _HOOKS.append(hook)
    return hook


def on_setting_changed(name: str) -> None:
    for hook in _HOOKS:
        transaction.on_commit(functools.partial(hook, name))
