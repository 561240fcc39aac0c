"""API clients and their keys. Only a hash of a key is stored; the key itself is shown once."""

from __future__ import annotations

from typing import Any, cast

from django.db import models

from clients import crypto, keycache
from clients.fields import EncryptedTextField


class KeysQuerySet(models.QuerySet[Any]):
    """Clients' and keys' queryset: a bulk update (a revocation, a client turned off) retires the keys
    this process and the others remember (``clients.keycache``), as a save or a delete does (their
    signals, ``ClientsConfig.ready``). ``last_used_at`` alone changes nothing a request checks."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        if rows and set(kwargs) != {"last_used_at"}:
            keycache.keys_changed()
        return rows


class Client(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_operator = models.BooleanField(
        default=False,
        help_text="Operators see every client's jobs and alone may change settings and schedules.",
    )
    is_active = models.BooleanField(default=True)
    # Encrypted at rest (clients.crypto); reads as the plaintext the callback sender signs with.
    webhook_secret = EncryptedTextField(
        blank=True,
        default="",
        help_text="Standard Webhooks secret (whsec_…) used to sign callbacks; empty means unsigned. "
        "Stored encrypted.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = KeysQuerySet.as_manager()

    # A Client is ``request.user`` for the API (see clients.authentication).
    is_authenticated = True
    is_anonymous = False

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_webhook_secret(self) -> str:
        """The plaintext webhook secret ("" when unsigned); raises SecretUnreadable when no configured
        key decrypts it (SECRET_KEY rotated without SECRET_KEY_FALLBACKS)."""
        if self.webhook_secret == crypto.UNREADABLE:
            raise crypto.SecretUnreadable(f"the webhook secret of client {self.name!r} cannot be decrypted")
        return str(self.webhook_secret)

    @classmethod
    def stored_webhook_secret(cls, name: str, stored: str | None) -> str:
        """``get_webhook_secret`` of a client whose ``webhook_secret`` column was read by raw SQL (the
        stored token, not yet decrypted): the callback sender's claim reads it with the delivery."""
        field = cast(EncryptedTextField, cls._meta.get_field("webhook_secret"))
        value = field.from_db_value(stored, None, None)
        return cls(name=name, webhook_secret=value).get_webhook_secret() if value else ""


class ApiKey(models.Model):
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, help_text="Public lookup part of the key.")
    key_hash = models.CharField(max_length=64, help_text="SHA-256 of the whole key, hex.")
    last_four = models.CharField(max_length=4)
    label = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = KeysQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.client.name}: {self.prefix}…{self.last_four}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
