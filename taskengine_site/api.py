"""Pieces every API view shares: timestamp rendering, access rules, limits, throttling and the schema.

Views inherit :class:`ApiView` / :class:`ApiViewSet`, which fix the parser (size and depth limits), the
throttle and the schema generator in one place instead of in settings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import exceptions, parsers, permissions, serializers, status, throttling, viewsets
from rest_framework.request import Request
from rest_framework.views import APIView

from clients.models import Client
from taskengine_site.cache import stored_bytes
from taskengine_site.env import parse_rate
from taskengine_site.errors import DomainError
from taskengine_site.inputs import MAX_JSON_DEPTH, json_problem

# --- Timestamps ---------------------------------------------------------------------------------------


def format_timestamp(value: datetime) -> str:
    """``2019-11-29T10:47:50.431Z``: UTC, milliseconds, ``Z`` (the original's rendering)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@extend_schema_field({"type": "string", "format": "date-time", "example": "2019-11-29T10:47:50.431Z"})
class TimestampField(serializers.Field):  # type: ignore[type-arg]
    """Read-only timestamp rendered by :func:`format_timestamp`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value: datetime) -> str:
        return format_timestamp(value)


# --- Access -------------------------------------------------------------------------------------------


class IsOperator(permissions.BasePermission):
    """Authenticated as an operator client (settings, schedules)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if user is None or not getattr(user, "is_authenticated", False):
            raise exceptions.NotAuthenticated()
        return bool(getattr(user, "is_operator", False))


def requester(request: Request) -> Client:
    """The authenticated client of a request (``request.user``, typed as what it is here)."""
    user = request.user
    if not isinstance(user, Client):
        raise exceptions.NotAuthenticated()
    return user


def optional_requester(request: Request) -> Client | None:
    """The client, or None for an anonymous request an open endpoint lets through."""
    user = request.user
    return user if isinstance(user, Client) else None


# --- Limits ---------------------------------------------------------------------------------------------


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


class LimitedJSONParser(parsers.JSONParser):
    """JSON bodies of at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes and ``MAX_JSON_DEPTH`` levels, holding
    only values Postgres can store.

    DRF reads the request stream itself unless something read the body first, and the stream skips
    Django's own size check, so the limit is applied here: 413 for size, 400 for depth (the stdlib parser
    would otherwise raise RecursionError → 500). Every endpoint parses with this class, so a value
    ``jsonb`` would refuse (``1e999``, a lone surrogate, NUL) is a 400 naming it for all of them, before
    any of them writes.
    """

    # Whether a value Postgres cannot store refuses the whole body (a batch checks its items one by one).
    refuse_unstorable = True

    def limit(self) -> int:
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        limit = self.limit()
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise RequestTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit} bytes.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        try:
            text = raw.decode((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise exceptions.ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        problem = json_problem(data)
        if problem is not None and problem.too_deep:
            raise exceptions.ParseError(f"JSON {problem.reason}")
        if problem is not None and self.refuse_unstorable:
            # Named like a field refused by a serializer: the body is JSON, one value in it is not storable.
            raise DomainError(problem.message)
        return data


class BatchJSONParser(LimitedJSONParser):
    """A batch of job bodies: up to ``TASKENGINE_MAX_BATCH_BODY_BYTES``; an item holding a value Postgres
    cannot store is refused on its own (the view checks each), not the whole batch."""

    refuse_unstorable = False

    def limit(self) -> int:
        return int(settings.TASKENGINE_MAX_BATCH_BODY_BYTES)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# --- Throttling ---------------------------------------------------------------------------------------


def rate_limit_wait(ident: str) -> float | None:
    """Count one request of ``ident`` (``client:<pk>``, or ``ip:<address>``) in its current window of
    ``TASKENGINE_RATE_LIMIT``; None if it is within the limit, else the seconds until the window ends.

    A counter per window (one INCR per request) instead of DRF's timestamp list, which grows with the
    rate; with the project's cache backend (taskengine_site.cache) creating and counting it is one round
    trip, with any other backend it is ``add`` + ``incr``. If Redis is unreachable the request is let
    through: the limit protects the engine, it must not take the API down with the cache.
    """
    return _count_request(ident, None)[0]


def rate_limit_wait_reading(ident: str, read: str) -> tuple[float | None, Any]:
    """:func:`rate_limit_wait`, and the value of the cache key ``read`` read in the same round trip (the
    API keys token of ``clients.keycache``; its stored bytes with the project's cache backend). The value
    is None when it is missing or Redis could not be reached; it is read also when there is no limit."""
    return _count_request(ident, read)


def _count_request(ident: str, read: str | None) -> tuple[float | None, Any]:
    limit, window = parse_rate(settings.TASKENGINE_RATE_LIMIT)  # 0 requests: no limit
    now = time.time()
    start = int(now // window) * window
    key = f"throttle:{ident}:{start}"
    value = None
    try:
        if limit <= 0:
            return None, (None if read is None else stored_bytes(cache, read))
        incr_window = getattr(cache, "incr_window", None)
        incr_window_reading = getattr(cache, "incr_window_reading", None)
        if read is not None and incr_window_reading is not None:  # taskengine_site.cache.RedisCache
            count, value = incr_window_reading(key, window + 1, read)
        elif incr_window is not None:  # one round trip
            count = incr_window(key, window + 1)
        else:
            cache.add(key, 0, timeout=window + 1)
            count = cache.incr(key)
            value = None if read is None else cache.get(read)
    except Exception:  # cache down or key evicted between add and incr: fail open
        return None, None
    if count > limit:
        return max(1.0, start + window - now), value
    return None, value


class ClientRateThrottle(throttling.BaseThrottle):
    """Per-client fixed-window request limit kept in the Redis cache (``TASKENGINE_RATE_LIMIT``):
    :func:`rate_limit_wait` for each request."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        user = request.user
        ident = (
            f"client:{user.pk}" if getattr(user, "pk", None) is not None else f"ip:{self.get_ident(request)}"
        )
        self._wait = rate_limit_wait(ident)
        return self._wait is None

    def wait(self) -> float | None:
        return math.ceil(self._wait) if self._wait is not None else None


# --- Schema -----------------------------------------------------------------------------------------------

ERROR_SCHEMA = inline_serializer(
    "Error",
    fields={
        "id": serializers.IntegerField(
            required=False, help_text="The job the error is about, when there is one."
        ),
        "error": serializers.CharField(),
    },
)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Both headers are required together (an AND in the security requirement)."""

    target_class = "clients.authentication.ApiKeyAuthentication"
    name: ClassVar[list[str]] = ["client", "apiKey"]  # type: ignore[misc]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, str]]:
        return [
            {"type": "apiKey", "in": "header", "name": "client", "description": "The client's name."},
            {
                "type": "apiKey",
                "in": "header",
                "name": "api-key",
                "description": "One of the client's API keys.",
            },
        ]


class TaskEngineSchema(AutoSchema):
    """Documents the errors every endpoint can answer, so the schema covers each real response."""

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)  # type: ignore[no-untyped-call]
        if isinstance(serializer, StrictKeysMixin):
            schema["additionalProperties"] = False
        return schema

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        codes: dict[str, str] = {
            "400": "Malformed input; the message names the field and why.",
            "503": "A database is unavailable.",
        }
        if self.get_auth() and {} not in self.get_auth():
            codes["401"] = "Missing or wrong client / api-key headers."
            codes["429"] = "Too many requests from this client; see Retry-After."
        if any(isinstance(p, IsOperator) for p in self.view.get_permissions()):
            codes["403"] = "Only operator clients may do this."
        if "{" in self.path:
            codes["404"] = "No such job, or not one of this client's."
        if self.method in ("POST", "PUT", "PATCH"):
            codes["413"] = "Request body too large."
        for code, description in codes.items():
            if code not in responses:
                response = self._get_response_for_code(  # type: ignore[no-untyped-call]
                    ERROR_SCHEMA, code, direction=direction
                )
                response["description"] = description
                if code in ("429", "503"):
                    response["headers"] = {
                        "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
                    }
                responses[code] = response
        return responses


class StrictKeysMixin(serializers.Serializer):  # type: ignore[type-arg]
    """Refuses keys the serializer does not declare, so a misspelt field is an error, not a no-op."""

    unknown_key_message = "unknown field"

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [key for key in data if key not in self.fields]
            if unknown:
                raise serializers.ValidationError({key: [self.unknown_key_message] for key in unknown})
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string; DRF's CharField would turn ``5`` or ``true`` into text silently."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(f"must be a string, got {type(data).__name__}")
        return str(super().to_internal_value(data))


class ApiView(APIView):
    parser_classes = [LimitedJSONParser]
    throttle_classes = [ClientRateThrottle]
    schema = TaskEngineSchema()


class ApiViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    parser_classes = [LimitedJSONParser]
    throttle_classes = [ClientRateThrottle]
    schema = TaskEngineSchema()
