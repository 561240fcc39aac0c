"""Reads for GET /settings."""

from __future__ import annotations

from typing import Any

from settings_app.models import Setting
from settings_app.registry import SPECS


def settings_overview() -> dict[str, dict[str, Any]]:
    """Every setting by name: the documented ones first (value or default), then free-form ones."""
    stored = {row.name: row for row in Setting.objects.all()}
    items: dict[str, dict[str, Any]] = {}
    for name, spec in SPECS.items():
        row = stored.pop(name, None)
        value: Any = spec.default
        if row is not None:
            try:
                value = int(row.value)
            except ValueError:
                value = spec.default
        items[name] = {
            "value": value,
            "default": spec.default,
            "documented": True,
            "description": spec.description,
            "minimum": spec.minimum,
            "maximum": spec.maximum,
            "updated_at": row.updated_at if row is not None else None,
        }
    for name, row in sorted(stored.items()):
        items[name] = {
            "value": row.value,
            "default": None,
            "documented": False,
            "description": "",
            "minimum": None,
            "maximum": None,
            "updated_at": row.updated_at,
        }
    return items
