"""The ``client`` + ``api-key`` (or ``x-api-key``) header authentication of the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clients import keys
from clients.models import ApiKey, Client

# Writing last_used_at on every request would add a write to every read; a minute is precise enough.
LAST_USED_GRANULARITY = timedelta(seconds=60)
UNAUTHORISED = "Unauthorised request."


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request as a :class:`Client`; ``request.user`` is the client."""

    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        meta: dict[str, Any] = request.META
        name = meta.get("HTTP_CLIENT")
        key = meta.get("HTTP_API_KEY") or meta.get("HTTP_X_API_KEY")
        if not name and not key:
            return None  # no credentials: permission classes decide (401 where a key is needed)
        if not name or not key:
            raise exceptions.AuthenticationFailed(UNAUTHORISED)
        prefix = keys.prefix_of(key)
        row = None
        if prefix is not None:
            row = ApiKey.objects.select_related("client").filter(prefix=prefix).first()
        # Hash even when no row matched, so a wrong prefix costs the same time as a wrong secret.
        stored = row.key_hash if row is not None else "0" * 64
        valid = keys.matches(key, stored)
        if (
            row is None
            or not valid
            or row.revoked_at is not None
            or not row.client.is_active
            or row.client.name != name
        ):
            raise exceptions.AuthenticationFailed(UNAUTHORISED)
        now = timezone.now()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
            ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        return row.client, row

    def authenticate_header(self, request: Request) -> str:
        return "api-key"
