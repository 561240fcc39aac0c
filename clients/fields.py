"""A text column that is encrypted at rest (clients.crypto) and plaintext in Python."""

from __future__ import annotations

import logging
from typing import Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from clients import crypto

logger = logging.getLogger(__name__)


class StillEncrypted:
    """A stored token read from the database and not decrypted yet (see ``EncryptedTextField``)."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __reduce__(self) -> tuple[Any, ...]:
        return (StillEncrypted, (self.token,))


class _DecryptOnRead(DeferredAttribute):
    """The field's attribute: a value set as :class:`StillEncrypted` is decrypted when first read.

    A data descriptor (it has ``__set__``), so it sees every read, also of a value in the instance's
    dict; deferred loading stays Django's.
    """

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        name = self.field.attname
        value = instance.__dict__.get(name, _ABSENT)
        if value is _ABSENT:
            return super().__get__(instance, cls)
        if type(value) is StillEncrypted:
            field: Any = self.field
            value = instance.__dict__[name] = field.from_db_value(value.token, None, None)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


_ABSENT = object()


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """Stores a Fernet token; reading gives the plaintext back.

    Lookups by value cannot match (every encryption differs): filter on other columns. A value that
    is not a token is a row written before encryption existed (migration 0002 encrypts those) and is
    read as it is.

    A reader of raw rows that may not need the plaintext (the API key lookup, on every request) sets
    the stored text wrapped in :class:`StillEncrypted`: it is decrypted when the attribute is first read,
    with the same result and the same log line as ``from_db_value`` at load time.
    """

    descriptor_class = _DecryptOnRead

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if not value or not crypto.is_token(value):
            return value
        try:
            return crypto.decrypt(value)
        except crypto.SecretUnreadable:
            logger.error("a stored %s cannot be decrypted with the configured keys", self.name)
            return crypto.UNREADABLE

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if not value:
            return value
        if value == crypto.UNREADABLE:
            # Writing the marker back would destroy the stored token for good; a secret that cannot
            # be read is replaced by setting a new one (or cleared).
            raise ValueError(f"{self.name} cannot be decrypted: set a new one or clear it")
        return crypto.encrypt(value)
