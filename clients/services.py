"""Writes to clients and keys. The management commands and the admin call these."""

from __future__ import annotations

import base64
import binascii
import re

from django.db import transaction
from django.utils import timezone

from clients import keys
from clients.models import ApiKey, Client
from taskengine_site.errors import DomainError

# A client's name is a header value and the name of its storage area (one path component, or one
# segment of an S3 key): letters, digits, '.', '_' and '-', starting with a letter or a digit.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def webhook_secret_validate(secret: str) -> str:
    """Check a Standard Webhooks secret (``whsec_`` + base64 of 24..64 bytes); empty means unsigned."""
    secret = secret.strip()
    if not secret:
        return ""
    if not secret.startswith("whsec_"):
        raise DomainError("webhook_secret: expected whsec_<base64>")
    try:
        raw = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise DomainError("webhook_secret: the part after whsec_ is not valid base64") from None
    if not 24 <= len(raw) <= 64:
        raise DomainError("webhook_secret: the key must be 24 to 64 bytes")
    return secret


def client_create(*, name: str, is_operator: bool = False, webhook_secret: str = "") -> tuple[Client, str]:
    """Create a client with one API key; return the client and the key (shown once, never stored)."""
    name = name.strip()
    if not CLIENT_NAME.fullmatch(name):
        raise DomainError(
            "client name must be 1..100 letters, digits, '.', '_' or '-', starting with a letter or a digit"
        )
    webhook_secret = webhook_secret_validate(webhook_secret)
    with transaction.atomic():
        if Client.objects.filter(name=name).exists():
            raise DomainError(f"client {name!r} already exists")
        client = Client.objects.create(name=name, is_operator=is_operator, webhook_secret=webhook_secret)
        _, key = api_key_issue(client=client)
    return client, key


def api_key_issue(*, client: Client, label: str = "") -> tuple[ApiKey, str]:
    """Issue a new key for ``client``; return the row and the key, which is not stored anywhere."""
    key, prefix = keys.generate()
    row = ApiKey.objects.create(
        client=client, prefix=prefix, key_hash=keys.hash_key(key), last_four=key[-4:], label=label
    )
    return row, key


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke a key; requests presenting it answer 401 from now on."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
