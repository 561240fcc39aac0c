"""A text column that is encrypted at rest (clients.crypto) and plaintext in Python."""

from __future__ import annotations

import logging
from typing import Any

from django.db import models

from clients import crypto

logger = logging.getLogger(__name__)


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """Stores a Fernet token; reading gives the plaintext back.

    Lookups by value cannot match (every encryption differs): filter on other columns. A value that
    is not a token is a row written before encryption existed (migration 0002 encrypts those) and is
    read as it is.
    """

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
