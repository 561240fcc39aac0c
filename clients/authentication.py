"""The ``client`` + ``api-key`` (or ``x-api-key``) header authentication of the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clients import keys
from clients.fields import EncryptedTextField, StillEncrypted
from clients.models import ApiKey, Client
from taskengine_site import prepared
from taskengine_site.connections import first_statement

# Writing last_used_at on every request would add a write to every read; a minute is precise enough.
LAST_USED_GRANULARITY = timedelta(seconds=60)
UNAUTHORISED = "Unauthorised request."


class _RowReader:
    """Reads ``model`` instances from a slice of a raw row, with the conversions the ORM would apply."""

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        self.fields: list[Field[Any, Any]] = list(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        self.columns = ", ".join(f'{alias}."{field.column}"' for field in self.fields)
        # Encrypted columns (the client's webhook secret) are left encrypted: a request rarely reads
        # them, and the field decrypts one when it is first read (clients.fields.StillEncrypted).
        self.encrypted = [i for i, field in enumerate(self.fields) if isinstance(field, EncryptedTextField)]
        # (position, converters) of the other fields that convert what the driver returns.
        self.converters = [
            (i, field.get_db_converters(connection), field.get_col(alias))
            for i, field in enumerate(self.fields)
            if field.get_db_converters(connection) and i not in self.encrypted
        ]

    def read(self, values: tuple[Any, ...]) -> Any:
        converted = list(values)
        for i, converters, col in self.converters:
            for convert in converters:
                converted[i] = convert(converted[i], col, connection)
        for i in self.encrypted:
            if converted[i]:
                converted[i] = StillEncrypted(converted[i])
        return self.model.from_db(connection.alias, self.attnames, converted)


_lookup: tuple[str, _RowReader, _RowReader] | None = None


def _key_with_client(prefix: str) -> ApiKey | None:
    """``ApiKey.objects.select_related("client").filter(prefix=prefix).first()`` with its SQL built once.

    Every API request authenticates, and compiling that queryset cost more CPU (≈ 1.5 ms) than running it;
    the SQL is built once from the models' fields, so the instances are the ORM's (same fields, same
    conversions; the client's webhook secret is decrypted when first read, not here). ``prefix`` is
    unique: no ordering is needed.
    """
    global _lookup
    if _lookup is None:
        keys_reader, clients_reader = _RowReader(ApiKey, "k"), _RowReader(Client, "c")
        # Only the models' own table and column names go into the text; the prefix is a parameter.
        sql = (
            f"SELECT {keys_reader.columns}, {clients_reader.columns} "  # noqa: S608 (model names only) # nosec B608
            f'FROM "{ApiKey._meta.db_table}" k JOIN "{Client._meta.db_table}" c '
            f'ON c."{Client._meta.pk.column}" = k."{ApiKey._meta.get_field("client").column}" '
            f'WHERE k."{ApiKey._meta.get_field("prefix").column}" = %s'
        )
        _lookup = (sql, keys_reader, clients_reader)
    sql, keys_reader, clients_reader = _lookup
    with prepared.cursor() as cursor:
        cursor.execute(sql, [prefix])
        values = cursor.fetchone()
    if values is None:
        return None
    split = len(keys_reader.fields)
    row: ApiKey = keys_reader.read(values[:split])
    row.client = clients_reader.read(values[split:])
    return row


def authenticate_headers(meta: dict[str, Any]) -> tuple[Client, ApiKey] | None:
    """The client and key a request's headers (``request.META``) name; None when it gives neither.

    Raises ``AuthenticationFailed`` when one is missing or they do not match an active client's key.
    """
    name = meta.get("HTTP_CLIENT")
    key = meta.get("HTTP_API_KEY") or meta.get("HTTP_X_API_KEY")
    if not name and not key:
        return None  # no credentials: permission classes decide (401 where a key is needed)
    if not name or not key:
        raise exceptions.AuthenticationFailed(UNAUTHORISED)
    prefix = keys.prefix_of(key)
    # Usually the request's first statement: it checks the kept connection too (taskengine_site.connections).
    row = first_statement(lambda: _key_with_client(prefix)) if prefix is not None else None
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


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request as a :class:`Client`; ``request.user`` is the client."""

    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        return authenticate_headers(request.META)

    def authenticate_header(self, request: Request) -> str:
        return "api-key"
