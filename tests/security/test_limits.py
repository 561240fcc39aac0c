"""Issue 5 item 11: oversize bodies, too many rest_endpoints and over-deep JSON answer 413 or 400, never
500; a per-client rate limit answers 429 with Retry-After."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from settings_app.models import Setting
from tests import factories


def body(parameters: Any) -> Any:
    return {"job": {"workflow": "noop"}, "parameters": parameters}


def post_raw(api: Any, path: Any, raw: bytes, method: Any = "post") -> Any:
    return getattr(api, method)(path, data=raw, content_type="application/json")


def test_oversize_body_answers_413_and_creates_nothing(api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    raw = json.dumps(body({"blob": "x" * 5000})).encode()

    response = post_raw(api, "/job", raw)

    assert response.status_code == 413
    assert "too large" in response.json()["error"].lower()
    assert Job.objects.count() == 0


def test_body_just_under_the_limit_is_accepted(api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    raw = json.dumps(body({"blob": "x" * 3900})).encode()
    assert len(raw) < 4096

    assert post_raw(api, "/job", raw).status_code == 200


def test_body_longer_than_its_declared_length_is_cut_at_the_limit(api: Any, settings: Any) -> None:
    # A lying Content-Length cannot smuggle a larger body: reading stops at limit + 1 bytes.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    raw = json.dumps(body({"blob": "x" * 10_000})).encode()

    response = api.generic("POST", "/job", raw, content_type="application/json", CONTENT_LENGTH="100")

    assert response.status_code in (400, 413)
    assert "error" in response.json()
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("put", "/jobs/1"), ("patch", "/jobs/1"), ("post", "/settings"), ("put", "/scheduler")],
)
def test_oversize_body_on_every_writing_endpoint_answers_413(
    operator_api: Any, settings: Any, method: Any, path: Any
) -> None:
    job = factories.job(operator_api.te_client)
    path = path.replace("/1", f"/{job.pk}")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048

    response = post_raw(operator_api, path, json.dumps({"name": "x" * 3000}).encode(), method=method)

    assert response.status_code == 413
    assert Setting.objects.count() == 0


def test_too_many_rest_endpoints_answer_400(api: Any) -> None:
    urls = [f"https://hooks.example.com/{n}" for n in range(11)]

    response = api.post("/job", body({"rest_endpoints": urls}), format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "parameters.rest_endpoints: at most 10 URLs, got 11"
    assert Job.objects.count() == 0
    assert api.post("/job", body({"rest_endpoints": urls[:10]}), format="json").status_code == 200


@pytest.mark.parametrize("depth", [33, 200, 5_000, 200_000])
def test_over_deep_json_answers_400(api: Any, depth: Any) -> None:
    raw = (
        '{"job": {"workflow": "noop"}, "parameters": {"deep": ' + "[" * depth + "]" * depth + "}}"
    ).encode()

    response = post_raw(api, "/job", raw)

    assert response.status_code == 400
    assert "nested deeper than 32 levels" in response.json()["error"]
    assert Job.objects.count() == 0


def test_json_at_the_depth_limit_is_accepted(api: Any) -> None:
    # body (1) > parameters (2) > deep (3) > 29 more lists = 32 levels.
    raw = ('{"job": {"workflow": "noop"}, "parameters": {"deep": ' + "[" * 30 + "]" * 30 + "}}").encode()

    assert post_raw(api, "/job", raw).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b'{"job": {"workflow": "noop"}, "parameters": {"a": "nul\\u0000here"}}',
        b'{"job": {"workflow": "noop"}, "parameters": {"nul\\u0000key": 1}}',
        b'{"job": {"workflow": "noop"}, "parameters": {"n": NaN}}',
        b'{"job": {"workflow": "noop"}, "parameters": {"n": Infinity}}',
        b'{"job": {"workflow": "noop"}, "parameters": {"a": "\xff\xfe"}}',
        b"[1, 2",
        b"",
    ],
)
def test_bodies_postgres_or_json_cannot_hold_answer_400(api: Any, raw: Any) -> None:
    response = post_raw(api, "/job", raw)

    assert response.status_code == 400
    assert "error" in response.json()
    assert Job.objects.count() == 0


def test_too_many_query_parameters_answer_a_json_400(api: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    query = "&".join(f"p{n}=1" for n in range(60))

    response = api.get(f"/jobs?{query}")

    assert response.status_code == 400
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.json()["error"]


def test_unknown_path_answers_a_json_404(api: Any) -> None:
    response = api.get("/no/such/path")

    assert response.status_code == 404
    assert response.json() == {"error": "Path /no/such/path not found."}


@pytest.mark.parametrize(
    "backend", ["taskengine_site.cache.RedisCache", "django.core.cache.backends.redis.RedisCache"]
)
def test_rate_limit_answers_429_with_retry_after_per_client(
    api: Any, make_client: Any, settings: Any, backend: str, one_rate_window: float
) -> None:
    # A prefix of its own: client ids restart with each test database, the Redis counters do not.
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "BACKEND": backend,
            "KEY_PREFIX": f"limits-{uuid.uuid4().hex}",
        }
    }
    # An hour's window, and its clock held (one_rate_window), so the test cannot straddle two windows.
    settings.TASKENGINE_RATE_LIMIT = "3/hour"
    other, key = make_client()
    other_api = APIClient()
    other_api.credentials(HTTP_CLIENT=other.name, HTTP_API_KEY=key)

    statuses = [api.get("/jobs").status_code for _ in range(3)]
    limited = api.get("/jobs")

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {"error": "Too many requests."}
    assert 1 <= int(limited["Retry-After"]) <= 3600
    # The limit is per client: another client is still served.
    assert other_api.get("/jobs").status_code == 200
    assert api.post("/job", body({}), format="json").status_code == 429
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "backend",
    # The project's backend counts in one round trip; any other backend takes the add + incr path.
    ["taskengine_site.cache.RedisCache", "django.core.cache.backends.redis.RedisCache"],
)
def test_rate_limit_lets_requests_through_when_redis_is_down(api: Any, settings: Any, backend: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    settings.TASKENGINE_RATE_LIMIT = "1/hour"
    settings.CACHES = {
        "default": {
            "BACKEND": backend,
            "LOCATION": f"redis://127.0.0.1:{dead_port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    assert [api.get("/jobs").status_code for _ in range(3)] == [200, 200, 200]


def test_creation_log_leaves_cookies_and_authorization_out(api: Any) -> None:
    from logs.models import LogEntry

    response = api.post(
        "/job",
        body({}),
        format="json",
        HTTP_COOKIE="sessionid=s3cr3t-session",
        HTTP_AUTHORIZATION="Bearer s3cr3t-token",
    )

    message = LogEntry.objects.get(job_id=response.json()["id"]).message
    assert "s3cr3t" not in message
    assert "HTTP_COOKIE" not in message and "HTTP_AUTHORIZATION" not in message
