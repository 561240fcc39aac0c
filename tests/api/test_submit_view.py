"""POST /job's own view (jobs.api.submit) against the DRF view it stands in front of.

Every request below is sent twice, on the same client: through the project's routes (where the usual
requests are answered by ``job_submit_view``) and through routes where ``/job`` is ``JobViewSet.create``
alone, as it was. Status, headers, body bytes, the jobs written and their log entries must be the same.
The requests are the usual ones and every kind the view must hand over: other methods, content types,
Accept headers, query strings, missing or wrong credentials, malformed, oversize, unstorable or
unusual bodies, bad Idempotency-Keys, the rate limit.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
from django.db import OperationalError
from django.test import override_settings
from django.urls import path
from rest_framework.test import APIClient

from jobs.api import submit, views
from jobs.api.submit import job_submit_view
from jobs.api.views import JobViewSet
from jobs.models import Job
from logs.models import LogEntry
from taskengine_site import urls as site_urls
from tests.api.test_plain_submission import NAME, OTHERS, PLAIN

# The site's routes with /job answered by the DRF view alone.
urlpatterns = [
    path("job", JobViewSet.as_view({"post": "create"}), name="job-submit")
    if getattr(pattern, "name", None) == "job-submit"
    else pattern
    for pattern in site_urls.urlpatterns
]
handler400 = site_urls.handler400
handler403 = site_urls.handler403
handler404 = site_urls.handler404
handler500 = site_urls.handler500
DRF_ONLY = __name__

pytestmark = pytest.mark.django_db

Request = dict[str, Any]


def _send(api: APIClient, request: Request) -> Any:
    body = request.get("body", b"")
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    extra = dict(request.get("headers", {}))
    if "content_type" in request and request["content_type"] is None:
        return api.generic(
            request.get("method", "POST"), request.get("path", "/job"), cast(str, body), **extra
        )
    content_type = request.get("content_type", "application/json")
    return api.generic(
        request.get("method", "POST"),
        request.get("path", "/job"),
        cast(str, body),  # bytes, sent as they are
        content_type=content_type,
        **extra,
    )


def _rows() -> list[dict[str, Any]]:
    rows = []
    for job in Job.objects.order_by("id"):
        row = {
            name: getattr(job, name)
            for name in (
                "workflow", "priority", "parameters", "queue_state", "persist", "semaphore_url",
                "idempotency_key", "failed", "position", "top_of_queue", "client_id",
            )
        }  # fmt: skip
        row["run_at"] = "created_at" if job.run_at == job.created_at else job.run_at
        row["log"] = [json.loads(e.message) for e in LogEntry.objects.filter(job_id=job.pk).order_by("id")]
        rows.append(row)
    return rows


def _outcome(api: APIClient, requests: list[Request]) -> list[Any]:
    """What a sequence of requests gets: each answer (ids replaced by their order), then the rows."""
    answers: list[Any] = []
    ids: dict[int, str] = {}
    api.raise_request_exception = False  # a 500 is an answer to compare too
    for request in requests:
        response = _send(api, request)
        content, headers = response.content, dict(response.headers)
        try:
            job_id = json.loads(content).get("id")
        except (ValueError, AttributeError):
            job_id = None
        if isinstance(job_id, int) and response.status_code == 200:
            label = ids.setdefault(job_id, f"job{len(ids)}")
            content = re.sub(rb'"id": ?\d+', f'"id":"{label}"'.encode(), content)
            # The length follows the id's digits: right for its own body, then left out.
            assert headers.pop("Content-Length") == str(len(response.content))
        if response.status_code == 429:
            # The seconds left in the window: the two runs are moments apart.
            assert 1 <= int(headers["Retry-After"]) <= 3600
            headers["Retry-After"] = "seconds left"
        answers.append((response.status_code, headers, content))
    rows = _rows()
    Job.objects.all().delete()
    return [answers, rows]


def _both(api: APIClient, requests: list[Request], settings: Any = None) -> tuple[Any, Any]:
    """The outcome through the site's routes, then through the DRF view alone (a fresh rate-limit
    window for each)."""
    outcomes = []
    for urlconf in ("taskengine_site.urls", DRF_ONLY):
        if settings is not None:
            settings.CACHES = {
                "default": {**settings.CACHES["default"], "KEY_PREFIX": f"submit-view-{uuid.uuid4().hex}"}
            }
        with override_settings(ROOT_URLCONF=urlconf):
            outcomes.append(_outcome(api, requests))
    return outcomes[0], outcomes[1]


@pytest.fixture
def api(make_client: Any) -> APIClient:
    client, key = make_client(NAME)
    api = APIClient()
    api.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
    api.te_key = key  # type: ignore[attr-defined]
    return api


def _ids(value: Any) -> str:
    return json.dumps(value, default=repr)[:70]


@pytest.mark.parametrize("body", PLAIN + OTHERS, ids=_ids)
def test_each_body_gets_the_drf_views_answer(api: APIClient, body: Any) -> None:
    fast, drf = _both(api, [{"body": body}])
    assert fast == drf


GOOD = {"job": {"workflow": "noop", "priority": 3}, "parameters": {"content_id": "c"}}

REQUESTS: list[Request] = [
    {"body": GOOD},
    {"body": GOOD, "content_type": "application/json; charset=utf-8"},
    {"body": GOOD, "content_type": "application/json; charset=latin-1"},
    {"body": GOOD, "content_type": "text/plain"},
    {"body": GOOD, "content_type": "application/x-www-form-urlencoded"},
    {"body": b"job=noop", "content_type": "application/x-www-form-urlencoded"},
    {"body": GOOD, "content_type": None},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": "*/*"}},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": "application/json"}},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": "application/json; indent=4"}},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": "text/html"}},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": "application/json, text/plain, */*"}},
    {"body": GOOD, "headers": {"HTTP_ACCEPT": ""}},
    {"body": GOOD, "path": "/job?format=json"},
    {"body": GOOD, "path": "/job?x=1"},
    {"body": GOOD, "method": "PUT"},
    {"body": GOOD, "method": "PATCH"},
    {"body": b"", "method": "GET"},
    {"body": b"", "method": "DELETE"},
    {"body": b"", "method": "OPTIONS"},
    {"body": b"", "method": "HEAD"},
    {"body": b""},
    {"body": b"{"},
    {"body": b'{"job": {"workflow": "noop"}} trailing'},
    {"body": b'{"job": {"workflow": "noop", "priority": NaN}}'},
    {"body": b'{"job": {"workflow": "noop"}, "parameters": {"x": 1e999}}'},
    {"body": b'{"job": {"workflow": "noop"}, "parameters": {"x": "a\\u0000b"}}'},
    {"body": b'{"job": {"workflow": "noop"}, "parameters": {"x": "\\ud800"}}'},
    {"body": b'{"job": {"workflow": "noop"}, "parameters": {"x": "\\ud83d\\ude00"}}'},
    {"body": b'{"job": {"workflow": "noop"}, "parameters": {"\\u0000": 1}}'},
    {"body": '{"job": {"workflow": "noop"}, "parameters": {"x": "\u00e9"}}'.encode("latin-1")},
    {"body": '{"job": {"workflow": "noop"}}'.encode("utf-16")},
    {"body": b"\xef\xbb\xbf" + json.dumps(GOOD).encode()},
    {"body": b"[" * 5000 + b"]" * 5000},
    {"body": ("{" + '"a":{' * 200 + "}" * 200 + "}").encode()},
    {
        "body": {
            "job": {"workflow": "noop"},
            "parameters": {"deep": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]},
        }
    },
    {"body": {"job": {"workflow": "noop"}, "parameters": {"text": "\u2028\u2029</script>"}}},
    {"body": {"job": {"workflow": "noop\u2028"}}},
    {"body": GOOD, "headers": {"HTTP_IDEMPOTENCY_KEY": ""}},
    {"body": GOOD, "headers": {"HTTP_IDEMPOTENCY_KEY": "k" * 201}},
    {"body": GOOD, "headers": {"HTTP_IDEMPOTENCY_KEY": "caf\u00e9"}},
    {"body": GOOD, "headers": {"HTTP_IDEMPOTENCY_KEY": "tab\there"}},
    {"body": {"job": {"workflow": "nope"}}, "headers": {"HTTP_IDEMPOTENCY_KEY": "k1"}},
    {
        "body": GOOD,
        "headers": {"HTTP_COOKIE": "sessionid=abc; csrftoken=x", "HTTP_AUTHORIZATION": "Bearer t"},
    },
    {"body": GOOD, "headers": {"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_USER_AGENT": "\u00fcber"}},
    {"body": GOOD, "headers": {"HTTP_X_SECRET_TOKEN": "s3cr3t-value"}},
]


@pytest.mark.parametrize("request_", REQUESTS, ids=_ids)
def test_each_request_gets_the_drf_views_answer(api: APIClient, request_: Request) -> None:
    fast, drf = _both(api, [request_])
    assert fast == drf


def _credentials(api: APIClient, make_client: Any) -> list[Request]:
    key = api.te_key  # type: ignore[attr-defined]
    _, other_key = make_client()
    return [
        {"body": GOOD, "headers": {"HTTP_CLIENT": "", "HTTP_API_KEY": ""}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": ""}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": "", "HTTP_API_KEY": key}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": key + "x"}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": "not-a-key"}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": other_key}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME.upper(), "HTTP_API_KEY": key}},
        {"body": GOOD, "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": "", "HTTP_X_API_KEY": key}},
        {
            "body": {"job": {"workflow": "x"}, "client": "x"},
            "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": "te_"},
        },
        {"body": b"{", "headers": {"HTTP_CLIENT": NAME, "HTTP_API_KEY": key + "x"}},
    ]


def test_missing_and_wrong_credentials_get_the_drf_views_answer(api: APIClient, make_client: Any) -> None:
    for request in _credentials(api, make_client):
        fast, drf = _both(api, [request])
        assert fast == drf, request
    anonymous = APIClient()
    fast, drf = _both(anonymous, [{"body": GOOD}, {"body": b"{"}])
    assert fast == drf
    assert {answer[0] for answer in fast[0]} == {401}


def test_an_inactive_client_gets_the_drf_views_answer(api: APIClient) -> None:
    from clients.models import Client

    Client.objects.filter(name=NAME).update(is_active=False)
    fast, drf = _both(api, [{"body": GOOD}])
    assert fast == drf
    assert fast[0][0][0] == 401


def test_a_retried_submission_with_its_idempotency_key_answers_the_first_job(api: APIClient) -> None:
    first: Request = {"body": GOOD, "headers": {"HTTP_IDEMPOTENCY_KEY": "order-17"}}
    other: Request = {"body": {"job": {"workflow": "noop"}}, "headers": {"HTTP_IDEMPOTENCY_KEY": "order-18"}}
    fast, drf = _both(api, [first, first, other, first])
    assert fast == drf
    labels = [json.loads(answer[2])["id"] for answer in fast[0]]
    assert labels == ["job0", "job0", "job1", "job0"]
    assert len(fast[1]) == 2


@pytest.mark.parametrize("limit", ["2/hour", "0/minute"])
def test_the_rate_limit_answers_as_the_drf_view_and_counts_each_request_once(
    api: APIClient, settings: Any, limit: str, one_rate_window: float
) -> None:
    settings.TASKENGINE_RATE_LIMIT = limit
    plain: Request = {"body": GOOD}
    unusual: Request = {"body": {"job": {"workflow": "noop", "persist": "true"}}}  # the DRF view's to answer
    refused: Request = {"body": {"job": {"workflow": "noop", "priority": 0}}}
    sequence: list[Request]
    for sequence in ([plain, plain, plain, unusual], [unusual, plain, refused], [unusual, unusual, plain]):
        fast, drf = _both(api, sequence, settings)
        assert fast == drf, sequence
        statuses = [answer[0] for answer in fast[0]]
        if limit == "2/hour":
            # Whichever view answers, a request is counted once: the third of the window is the first refused.
            assert statuses[:2] == [200, 200] and statuses[2:] == [429] * (len(sequence) - 2), statuses
            assert fast[0][2][1]["Retry-After"] == "seconds left"
        else:
            assert 429 not in statuses


def test_a_database_failure_gets_the_drf_views_answer(api: APIClient, monkeypatch: Any) -> None:
    def unavailable(**_: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly\nhost=db.internal")

    monkeypatch.setattr(views, "job_submit", unavailable)  # both paths submit through views.submit_checked
    fast, drf = _both(api, [{"body": GOOD}])
    assert fast == drf
    status, headers, content = fast[0][0]
    assert (status, headers["Retry-After"]) == (503, "5")
    assert b"db.internal" not in content


def test_an_unexpected_error_is_raised_by_both(api: APIClient, monkeypatch: Any) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "job_submit", broken)  # both paths submit through views.submit_checked
    for urlconf in ("taskengine_site.urls", DRF_ONLY):
        with override_settings(ROOT_URLCONF=urlconf), pytest.raises(RuntimeError, match="a bug"):
            _send(api, {"body": GOOD})


def test_an_oversize_body_gets_the_drf_views_answer(api: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    big = {"job": {"workflow": "noop"}, "parameters": {"blob": "x" * 3000}}
    near = {"job": {"workflow": "noop"}, "parameters": {"blob": "x" * 1900}}
    for request in ({"body": big}, {"body": near}):
        fast, drf = _both(api, [request])
        assert fast == drf
    lying = {"body": json.dumps(big).encode(), "headers": {"CONTENT_LENGTH": "100"}}
    fast, drf = _both(api, [lying])
    assert fast == drf


def test_the_view_is_csrf_exempt_like_every_api_view(api: APIClient) -> None:
    strict = APIClient(enforce_csrf_checks=True)
    strict.credentials(**api._credentials)  # type: ignore[attr-defined]
    strict.cookies["csrftoken"] = "x" * 32
    fast, drf = _both(strict, [{"body": GOOD}])
    assert fast == drf
    assert fast[0][0][0] == 200


def test_usual_requests_are_answered_by_the_view_itself(api: APIClient, monkeypatch: Any) -> None:
    # Otherwise every comparison above would compare the DRF view with itself.
    handed_over: list[str] = []
    drf_view: Callable[..., Any] = submit._drf_view

    def counting(request: Any) -> Any:
        handed_over.append(request.path)
        return drf_view(request)

    monkeypatch.setattr(submit, "_drf_view", counting)
    for request in [{"body": body} for body in PLAIN] + REQUESTS[:3] + REQUESTS[7:9]:
        _send(api, request)
    assert handed_over == ["/job"]  # only the charset=latin-1 one
    _send(api, {"body": {"job": {"workflow": "noop", "persist": "true"}}})
    assert len(handed_over) == 2


def test_the_route_is_described_as_the_drf_view() -> None:
    drf_view = JobViewSet.as_view({"post": "create"})
    assert job_submit_view.cls is JobViewSet  # type: ignore[attr-defined]
    assert job_submit_view.actions == drf_view.actions == {"post": "create"}  # type: ignore[attr-defined]
    assert job_submit_view.csrf_exempt is True  # type: ignore[attr-defined]
    assert not hasattr(job_submit_view, "__wrapped__")


@pytest.mark.parametrize("job_id", [1, 42, 2**31, 2**63 - 1])
def test_the_accepted_answer_is_the_renderers_bytes_and_headers(job_id: int) -> None:
    fast, rendered = submit._accepted(job_id), submit._render({"id": job_id, "result": "accepted"})
    assert (
        fast.content
        == rendered.content
        == json.dumps({"id": job_id, "result": "accepted"}, separators=(",", ":")).encode()
    )
    assert fast.status_code == rendered.status_code == 200
    assert list(fast.items()) == list(rendered.items())
