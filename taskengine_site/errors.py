"""The one place where domain errors become HTTP answers (DESIGN.md §8).

Every error body is ``{"error": "<message>"}``; errors about one job also carry ``"id"``. Every 404
names what was not found: ``{"error": "Job 999 not found."}``, ``{"error": "Path /no/such not found."}``.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = "Database unavailable; retry later."
UNSTORABLE_VALUE = "A value in the request cannot be stored."


class DomainError(Exception):
    """A refusal the client can act on: answered 400 with its message."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, job_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND


def not_found_message(kind: str, ref: object) -> str:
    """The text of every 404: what kind of thing was looked for, and by which id or name."""
    return f"{kind} {ref} not found."


# A job's routes take a numeric id; any other id is a job that cannot exist, and is named as one.
_JOB_ROUTE = re.compile(r"^/(?:jobs|logs)/(?P<ref>[^/]+)(?:/(?:rerun|keys))?$")
_SHOWN_PATH = 200


def path_not_found(path: str) -> dict[str, str]:
    """The 404 body of a request no route answers (``/jobs/abc``: ``Job abc not found.``)."""
    match = _JOB_ROUTE.match(path)
    if match and not match.group("ref").isdigit():
        return {"error": not_found_message("Job", match.group("ref")[:_SHOWN_PATH])}
    shown = path if len(path) <= _SHOWN_PATH else path[:_SHOWN_PATH] + "…"
    return {"error": not_found_message("Path", shown)}


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested ``ValidationError.detail`` into ``field: message`` lines."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            lines.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name))
        return lines
    if isinstance(detail, list):
        lines = []
        for item in detail:
            lines.extend(_flatten(item, prefix))
        return lines
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def error_message(detail: Any) -> str:
    return "; ".join(_flatten(detail))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    body: dict[str, Any]
    if isinstance(exc, DomainError):
        body = {"error": exc.message}
        if exc.job_id is not None:
            body = {"id": exc.job_id, "error": exc.message}
        return Response(body, status=exc.status_code)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return Response({"error": "Unauthorised request."}, status=status.HTTP_401_UNAUTHORIZED)
    if isinstance(exc, Http404 | exceptions.NotFound):
        request = context.get("request")
        return Response(path_not_found(request.path if request else ""), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PermissionDenied | exceptions.PermissionDenied):
        return Response(
            {"error": "Forbidden: this needs an operator client."}, status=status.HTTP_403_FORBIDDEN
        )
    if isinstance(exc, exceptions.Throttled):
        headers = {"Retry-After": str(max(1, math.ceil(getattr(exc, "wait", None) or 1)))}
        return Response(
            {"error": "Too many requests."}, status=status.HTTP_429_TOO_MANY_REQUESTS, headers=headers
        )
    if isinstance(exc, exceptions.ParseError):
        return Response(
            {"error": f"Malformed request body: {exc.detail}"}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, exceptions.ValidationError):
        body = {"error": error_message(exc.detail)}
        job_id = context.get("kwargs", {}).get("pk")
        if job_id is not None:
            body = {"id": _as_id(job_id), "error": body["error"]}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        return Response({"error": error_message(exc.detail)}, status=exc.status_code)
    if isinstance(exc, DataError):
        # The database refused a value (one the parser's checks did not foresee): the same request
        # would be refused again, so it is the client's 400, never the 503 that invites a retry.
        view = context.get("view")
        logger.warning("value refused by the database in %s: %s", type(view).__name__, first_line(exc))
        return Response({"error": UNSTORABLE_VALUE}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError | InterfaceError | DatabaseError):
        # The driver's text names hosts, sockets and users: it goes to the operators' log, not to the
        # client, who learns only that a retry later will do.
        view = context.get("view")
        logger.warning("database unavailable in %s: %s", type(view).__name__, first_line(exc))
        return Response(
            {"error": DATABASE_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (driver errors carry multi-line details), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_id(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
