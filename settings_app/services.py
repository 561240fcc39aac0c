"""Reading and writing engine settings. Values are validated against registry.SPECS."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from django.db import transaction

from settings_app.models import Setting
from settings_app.registry import SPECS
from taskengine_site.errors import DomainError


def setting_get_int(name: str) -> int:
    """The current value of a documented integer setting (its default when never set)."""
    spec = SPECS[name]
    row = Setting.objects.filter(name=name).values_list("value", flat=True).first()
    if row is None:
        return spec.default
    try:
        return int(row)
    except ValueError:
        return spec.default


def settings_get_ints(*names: str) -> dict[str, int]:
    """Several documented settings in one query."""
    return settings_ints_from(
        dict(Setting.objects.filter(name__in=names).values_list("name", "value")), names
    )


def settings_ints_from(stored: Mapping[str, str], names: Iterable[str]) -> dict[str, int]:
    """Documented settings as integers, from their stored texts (``stored``, name to value, as read by
    the caller's own statement): a name not stored, or not an integer, has its default."""
    values = {name: SPECS[name].default for name in names}
    for name in values:
        if name in stored:
            with contextlib.suppress(ValueError):
                values[name] = int(stored[name])
    return values


def setting_validate(name: str, value: object) -> str:
    """The value to store for ``name``, or a ``DomainError`` saying why ``value`` is refused."""
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise DomainError("name: must be a non-empty string of at most 100 characters")
    spec = SPECS.get(name)
    if spec is None:
        if isinstance(value, dict | list):
            raise DomainError("setting: a free-form setting must be a string, number or boolean")
        return str(value)
    if isinstance(value, bool):
        raise DomainError(f"setting: {name} must be an integer")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise DomainError(f"setting: {name} must be an integer, got {value!r}") from None
    if not spec.minimum <= number <= spec.maximum:
        raise DomainError(f"setting: {name} must be between {spec.minimum} and {spec.maximum}, got {number}")
    return str(number)


def setting_set(*, name: str, value: object) -> tuple[Setting, bool]:
    """Create or update one setting; returns (row, created). Effects (dispatch, beat) follow on commit."""
    stored = setting_validate(name, value)
    with transaction.atomic():
        row, created = Setting.objects.update_or_create(name=name, defaults={"value": stored})
        from settings_app import effects

        effects.on_setting_changed(name)
    return row, created
