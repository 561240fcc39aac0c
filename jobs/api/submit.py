"""``POST /job`` without DRF's request machinery, for the requests most submissions are.

``POST /job`` is the endpoint clients call most. Around the job's insert, DRF's generic machinery (its
request object, content negotiation, authentication, throttle and permission classes instantiated for
each request, the response's rendering) and the Django middleware cost several times the insert in CPU
(bench/README.md, issue 16). :func:`job_submit_view` answers a request itself when it is of the usual
kind: JSON sent and JSON accepted, the client's headers given, a plain body (``plain_submission``). It
runs the same checks through the same functions, in DRF's order where the order shows: authentication
(401), the client's rate limit (429), then the submission (``job_submit``). Every other request goes,
before anything is counted or written, to ``JobViewSet.create`` as it always did, which words its
answer. Answers of this path are rendered as DRF renders them: the same bytes, status and headers;
tests/api/test_submit_view.py sends honest and hostile requests down both paths and compares.

The route's OpenAPI description stays ``JobViewSet.create``'s: this function carries that view's
``cls``, ``initkwargs`` and ``actions``, which is what drf-spectacular reads.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from clients import keycache
from clients.authentication import (
    authenticate_checked,
    authenticate_headers,
    authenticate_remembered,
    remembered_client,
    remembered_in_use,
)
from jobs.api.serializers import plain_submission
from jobs.api.views import JobViewSet, idempotency_key, request_meta, submit_checked
from taskengine_site.api import rate_limit_wait_reading
from taskengine_site.errors import exception_handler
from taskengine_site.inputs import json_problem

_drf_view = JobViewSet.as_view({"post": "create"})
# What DRF's finalize_response adds to every answer of that view (its allowed methods).
ALLOW = "POST, OPTIONS"
# Accept headers DRF answers with plain JSON (no indent or other parameter to honour).
_ACCEPT_JSON = frozenset({None, "*/*", "application/json"})
_JSON_BODY = frozenset({"application/json", "application/json; charset=utf-8"})
_renderer = JSONRenderer()


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def _render(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    """``Response(data, status, headers)`` as the DRF view's finalize_response and JSONRenderer make it."""
    response = HttpResponse(_renderer.render(data), status=status, content_type=_renderer.media_type)
    for name, value in (headers or {}).items():
        response[name] = value
    response["Allow"] = ALLOW
    return response


def _refusal(exc: Exception) -> HttpResponse:
    """What the DRF view answers for ``exc`` raised in it (the project's exception handler), or raise."""
    response = exception_handler(exc, {"view": JobViewSet(), "args": (), "kwargs": {}, "request": None})
    if response is None:
        raise exc
    # The handler's own headers (Retry-After); the content type is the renderer's.
    headers = {name: value for name, value in response.items() if name.lower() != "content-type"}
    return _render(response.data, response.status_code, headers)


def _plain_body(request: HttpRequest) -> Any:
    """The request's JSON body when LimitedJSONParser would take it as it is; else ``_OTHER``."""
    meta = request.META
    if meta.get("CONTENT_TYPE") not in _JSON_BODY:
        return _OTHER
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _OTHER
    if not 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return _OTHER
    raw = request.body  # a failed read is raised, as the parser's read raises it
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except Exception:
        return _OTHER
    if json_problem(data) is not None:
        return _OTHER
    return data


_OTHER = object()


def job_submit_view(request: HttpRequest) -> HttpResponse:
    """POST /job: a usual request answered here, any other by ``JobViewSet.create`` (module docstring)."""
    meta = request.META
    if (
        request.method != "POST"
        or meta.get("QUERY_STRING")  # ?format= and the like are DRF's to read
        or meta.get("HTTP_ACCEPT") not in _ACCEPT_JSON
    ):
        return _drf_view(request)
    # A key this process remembers is confirmed below, by the keys token read with the rate limit's count.
    remembered = authenticate_remembered(meta)
    if remembered is None:
        try:
            found = authenticate_headers(meta)
        except Exception as exc:
            return _refusal(exc)
        if found is None:
            return _drf_view(request)  # no credentials at all
        client = found[0]
    else:
        client = remembered_client(remembered)
    try:
        key = idempotency_key(meta)
    except Exception:
        return _drf_view(request)
    data = _plain_body(request)
    if data is _OTHER:
        return _drf_view(request)
    validated = plain_submission(data, client.name)
    if validated is None:
        return _drf_view(request)
    # Nothing is counted or written before this point: any request handed over above is answered by
    # the DRF view in full, its rate limit included.
    try:
        wait, raw_token = rate_limit_wait_reading(f"client:{client.pk}", keycache.TOKEN_KEY)
        token = keycache.token_from(raw_token)
        if remembered is not None and token == remembered.token:
            client = remembered_in_use(remembered)[0]
        elif remembered is not None:
            # A client or a key changed since this process accepted the key (or Redis holds no token):
            # the database decides, before anything is written.
            client = authenticate_checked(meta, token if token is not None else keycache.current_token())[0]
        if wait is not None:
            raise exceptions.Throttled(math.ceil(wait))
        logged = request_meta("POST", request.path, meta, data)
        job = submit_checked(client, validated, idempotency_key=key, request_meta=logged)
    except Exception as exc:
        return _refusal(exc)
    return _accepted(job.pk)


def _accepted(job_id: int) -> HttpResponse:
    """``_render({"id": job_id, "result": "accepted"})``, its bytes written directly (JSONRenderer's
    compact separators; an integer id has nothing to escape)."""
    response = HttpResponse(b'{"id":%d,"result":"accepted"}' % job_id, content_type=_renderer.media_type)
    response["Allow"] = ALLOW
    return response


# The DRF view's identity (cls, initkwargs, actions, csrf_exempt): the schema generator reads the route
# as that view's, and CSRF checks skip it as they skip every API view.
job_submit_view.__dict__.update(
    {name: value for name, value in _drf_view.__dict__.items() if name != "__wrapped__"}
)
