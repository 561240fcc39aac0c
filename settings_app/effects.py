"""What a setting change sets in motion. Hooks run after the commit.

Each app registers its hook in its ``AppConfig.ready``, so every process (web, worker, beat, a shell)
has them all once the apps are loaded, whichever modules it imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import transaction

_HOOKS: list[Callable[[str], None]] = []


def register(hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` after the commit of every setting change; registering it again changes nothing."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)


def on_setting_changed(name: str) -> None:
    for hook in _HOOKS:
        transaction.on_commit(functools.partial(hook, name))
