"""The ``client`` + ``api-key`` (or ``x-api-key``) header authentication of the API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from clients import keycache, keys
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


def _plan() -> tuple[str, _RowReader, _RowReader]:
    """The key lookup's SQL and the readers of its two halves, built once from the models."""
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
    return _lookup


def _key_values(prefix: str) -> tuple[Any, ...] | None:
    """The raw row of ``ApiKey.objects.select_related("client").filter(prefix=prefix).first()``, its SQL
    built once.

    Every API request authenticates, and compiling that queryset cost more CPU (≈ 1.5 ms) than running it;
    the SQL is built once from the models' fields, and :func:`_key_from` makes the ORM's instances of it
    (same fields, same conversions; the client's webhook secret is decrypted when first read, not here).
    ``prefix`` is unique: no ordering is needed.
    """
    sql = _plan()[0]
    with prepared.cursor() as cursor:
        cursor.execute(sql, [prefix])
        values = cursor.fetchone()
    return None if values is None else tuple(values)


def _key_from(values: tuple[Any, ...]) -> ApiKey:
    """The key and its client (``row.client``) of a raw row of :func:`_key_values`."""
    _, keys_reader, clients_reader = _plan()
    split = len(keys_reader.fields)
    row: ApiKey = keys_reader.read(values[:split])
    row.client = clients_reader.read(values[split:])
    return row


def _headers(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """The client name and the key a request's headers give, as given."""
    return meta.get("HTTP_CLIENT"), meta.get("HTTP_API_KEY") or meta.get("HTTP_X_API_KEY")


def _credentials(meta: dict[str, Any]) -> tuple[str, str] | None:
    """The client name and key a request's headers give; None when they give neither; raises
    ``AuthenticationFailed`` when one is missing."""
    name, key = _headers(meta)
    if not name and not key:
        return None  # no credentials: permission classes decide (401 where a key is needed)
    if not name or not key:
        raise exceptions.AuthenticationFailed(UNAUTHORISED)
    return name, key


def authenticate_headers(meta: dict[str, Any]) -> tuple[Client, ApiKey] | None:
    """The client and key a request's headers (``request.META``) name; None when it gives neither.

    Raises ``AuthenticationFailed`` when one is missing or they do not match an active client's key. A
    key this process remembers is accepted without a statement while the keys token in Redis is still
    the one read before the database accepted it (``clients.keycache``); otherwise the database decides.
    """
    credentials = _credentials(meta)
    if credentials is None:
        return None
    name, key = credentials
    key_hash = keys.hash_key(key)
    token = keycache.current_token()  # before the database read: a change after it retires this token
    known = keycache.recall(name, key_hash)
    if known is not None and token is not None and known.token == token:
        return remembered_in_use(known)
    return _checked(name, key, key_hash, token)


def authenticate_remembered(meta: dict[str, Any]) -> keycache.Known | None:
    """What this process remembers of the key a request names (its ``token`` is the keys token it was
    accepted under); None when it remembers nothing of it (or the headers lack either).

    The caller accepts it only if Redis still holds that token, which it reads itself (``POST /job``
    reads it with the rate limit's count, in the same round trip), and then takes the client and key
    from :func:`remembered_in_use`; otherwise it calls :func:`authenticate_checked`.
    """
    name, key = _headers(meta)
    if not name or not key:
        return None
    return keycache.recall(name, keys.hash_key(key))


def remembered_client(known: keycache.Known) -> Client:
    """The client of a remembered key, before its token is confirmed (to count the rate limit and check
    a body against it): nothing is written."""
    _, keys_reader, clients_reader = _plan()
    client: Client = clients_reader.read(known.values[len(keys_reader.fields) :])
    return client


def remembered_in_use(known: keycache.Known) -> tuple[Client, ApiKey]:
    """The client and key of a remembered key whose token the caller confirmed; its last use is noted."""
    row = _key_from(known.values)
    _note_use(row, known)
    return row.client, row


def authenticate_checked(meta: dict[str, Any], token: int | None) -> tuple[Client, ApiKey]:
    """:func:`authenticate_headers` by the database for a request that names a client and a key,
    ``token`` being the keys token the caller read before (None if it could not): the key is remembered
    under it if accepted."""
    credentials = _credentials(meta)
    if credentials is None:
        raise exceptions.AuthenticationFailed(UNAUTHORISED)
    name, key = credentials
    return _checked(name, key, keys.hash_key(key), token)


def _checked(name: str, key: str, key_hash: str, token: int | None) -> tuple[Client, ApiKey]:
    """The database's answer for these credentials; remembered under ``token`` when accepted."""
    prefix = keys.prefix_of(key)
    # Usually the request's first statement: it checks the kept connection too (taskengine_site.connections).
    values = first_statement(lambda: _key_values(prefix)) if prefix is not None else None
    row = _key_from(values) if values is not None else None
    # Hash even when no row matched, so a wrong prefix costs the same time as a wrong secret.
    stored = row.key_hash if row is not None else "0" * 64
    valid = keys.hash_matches(key_hash, stored)
    if (
        values is None
        or row is None
        or not valid
        or row.revoked_at is not None
        or not row.client.is_active
        or row.client.name != name
    ):
        keycache.forget(name, key_hash)
        raise exceptions.AuthenticationFailed(UNAUTHORISED)
    known = keycache.Known(values, token, row.last_used_at) if token is not None else None
    _note_use(row, known)
    if known is not None:
        keycache.remember(name, key_hash, known)
    return row.client, row


def _note_use(row: ApiKey, known: keycache.Known | None) -> None:
    """Write the key's ``last_used_at`` when the last one written is older than the granularity."""
    last = known.last_used_at if known is not None else row.last_used_at
    now = timezone.now()
    if last is None or now - last > LAST_USED_GRANULARITY:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        last = now
        if known is not None:
            known.last_used_at = now
    row.last_used_at = last


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request as a :class:`Client`; ``request.user`` is the client."""

    def authenticate(self, request: Request) -> tuple[Client, ApiKey] | None:
        return authenticate_headers(request.META)

    def authenticate_header(self, request: Request) -> str:
        return "api-key"
