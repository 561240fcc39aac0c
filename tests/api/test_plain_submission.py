"""POST /job's plain path (jobs.api.serializers.plain_submission) against JobSubmitSerializer.

The plain path builds what the serializer validates to for the common bodies and hands every other body
to the serializer. Over a corpus of honest and hostile bodies: where it answers, it answers exactly the
serializer's ``validated_data``; and through the API, each body gets the same status, the same answer
and the same job row with the plain path as with the serializer alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.api import views
from jobs.api.serializers import JobSubmitSerializer, plain_submission
from jobs.models import Job
from logs.models import LogEntry

NAME = "plain-client"

# Bodies the plain path takes itself (it must: a test below checks it answers for each).
PLAIN: list[Any] = [
    {"job": {"workflow": "noop"}},
    {"job": {"workflow": "noop"}, "parameters": {}},
    {"job": {"workflow": "noop"}, "parameters": {"content_id": "c1", "folder": "f", "n": [1, {"a": None}]}},
    {"client": NAME, "job": {"workflow": "noop"}, "parameters": {"content_id": "x"}},
    {"job": {"workflow": "noop", "priority": 1}},
    {"job": {"workflow": "noop", "priority": 10}},
    {"job": {"workflow": "noop", "priority": "3"}},
    {"job": {"workflow": "noop", "priority": " 7 "}},
    {"job": {"workflow": "noop", "priority": "+5"}},
    {"job": {"workflow": "noop", "priority": "\u0663"}},  # int() reads an Arabic-Indic 3 as 3
    {"job": {"workflow": "noop", "persist": True}},
    {"job": {"workflow": "noop", "persist": False}},
    {"job": {"workflow": "noop", "run_at": None}},
    {"job": {"workflow": "noop", "run_at": "2040-06-06T10:00:00.000"}},
    {"job": {"workflow": "noop", "run_at": "2040-06-06T10:00:00Z"}},
    {"job": {"workflow": "noop", "run_at": "2040-06-06T12:00:00.5+02:00"}},
    {"job": {"workflow": "noop", "run_at": "2001-01-01T00:00:00.000"}},
    {"job": {"workflow": "noop", "semaphore_url": "https://example.com/open?x=1"}},
    {"job": {"workflow": "noop", "sempahore_url": "http://example.com/s"}},
    {"job": {"workflow": "noop", "semphore_url": None}},
    {"job": {"workflow": "noop", "semaphore_url": None}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["https://example.com/cb"]}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": []}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": None}},
    {"job": {"workflow": "unknown-workflow"}},  # syntax is fine; the service refuses it
    {"job": {"workflow": "n\u00f6op"}},
    {"job": {"workflow": "noop", "priority": 2, "persist": True, "run_at": "2040-01-01T00:00:00.000"}},
]

# Bodies the serializer must decide: malformed, hostile, or merely unusual.
OTHERS: list[Any] = [
    [],
    "noop",
    5,
    None,
    {},
    {"job": None},
    {"job": []},
    {"job": "noop"},
    {"job": {}},
    {"job": {"workflow": "noop", "extra": 1}},
    {"job": {"workflow": "noop"}, "extra": 1},
    {"job": {"workflow": ""}},
    {"job": {"workflow": "   "}},
    {"job": {"workflow": " noop"}},
    {"job": {"workflow": "noop\t"}},
    {"job": {"workflow": 5}},
    {"job": {"workflow": None}},
    {"job": {"workflow": ["noop"]}},
    {"job": {"workflow": "w" * 101}},
    {"job": {"workflow": "noop", "priority": 0}},
    {"job": {"workflow": "noop", "priority": 11}},
    {"job": {"workflow": "noop", "priority": -1}},
    {"job": {"workflow": "noop", "priority": True}},
    {"job": {"workflow": "noop", "priority": None}},
    {"job": {"workflow": "noop", "priority": 5.0}},
    {"job": {"workflow": "noop", "priority": "abc"}},
    {"job": {"workflow": "noop", "priority": ""}},
    {"job": {"workflow": "noop", "priority": [5]}},
    {"job": {"workflow": "noop", "priority": 10**30}},
    {"job": {"workflow": "noop", "run_at": ""}},
    {"job": {"workflow": "noop", "run_at": 5}},
    {"job": {"workflow": "noop", "run_at": "2040-13-01T00:00:00"}},
    {"job": {"workflow": "noop", "run_at": "2040-06-06"}},
    {"job": {"workflow": "noop", "run_at": "9999-12-31T23:59:59.999-15:00"}},
    {"job": {"workflow": "noop", "semaphore_url": ""}},
    {"job": {"workflow": "noop", "semaphore_url": 5}},
    {"job": {"workflow": "noop", "semaphore_url": "ftp://example.com/x"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://169.254.169.254/latest/meta-data"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://user:pw@example.com/"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://example.com/\u0085x"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://" + "a" * 2000 + ".com/"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://e.com/a", "sempahore_url": "http://e.com/a"}},
    {"job": {"workflow": "noop", "semaphore_url": "http://e.com/a", "semphore_url": "http://e.com/b"}},
    {"job": {"workflow": "noop", "persist": "true"}},
    {"job": {"workflow": "noop", "persist": 1}},
    {"job": {"workflow": "noop", "persist": None}},
    {"job": {"workflow": "noop", "persist": "yes"}},
    {"client": "someone-else", "job": {"workflow": "noop"}},
    {"client": f" {NAME} ", "job": {"workflow": "noop"}},
    {"client": "", "job": {"workflow": "noop"}},
    {"client": 5, "job": {"workflow": "noop"}},
    {"client": None, "job": {"workflow": "noop"}},
    {"job": {"workflow": "noop"}, "parameters": None},
    {"job": {"workflow": "noop"}, "parameters": []},
    {"job": {"workflow": "noop"}, "parameters": "x"},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": "https://example.com/cb"}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["http://10.0.0.1/cb"]}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["https://e.com/x"] * 11}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": [5]}},
    {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["javascript:alert(1)"]}},
]


def _plain(value: Any) -> Any:
    """A validated_data (OrderedDicts, ReturnDicts) as plain dicts and lists, for comparison."""
    return json.loads(json.dumps(value, default=str))


@pytest.fixture
def requester(make_client: Any) -> Any:
    client, _key = make_client(NAME)
    return client


def _serializer(body: Any, client: Any) -> JobSubmitSerializer:
    request = type("R", (), {"user": client})()
    return JobSubmitSerializer(data=body, context={"request": request})


@pytest.mark.django_db
@pytest.mark.parametrize("body", PLAIN + OTHERS, ids=lambda body: json.dumps(body)[:60])
def test_where_the_plain_path_answers_it_answers_what_the_serializer_validates(
    body: Any, requester: Any
) -> None:
    plain = plain_submission(body, requester.name)
    checked = _serializer(body, requester)
    if plain is None:
        assert body in OTHERS, "a plain body was handed to the serializer"
        return
    assert body in PLAIN, "the plain path took a body the serializer must decide"
    assert checked.is_valid(), checked.errors
    assert _plain(plain) == _plain(checked.validated_data)


@pytest.mark.django_db
def test_the_plain_paths_parameters_are_a_copy_as_the_serializers_are(requester: Any) -> None:
    parameters = {"content_id": "c"}
    plain = plain_submission({"job": {"workflow": "noop"}, "parameters": parameters}, requester.name)
    assert plain is not None and plain["parameters"] == parameters and plain["parameters"] is not parameters


def _answer(api: APIClient, body: Any) -> tuple[int, Any, dict[str, Any] | None]:
    response = api.post("/job", body, format="json")
    answer = response.json()
    row = None
    if response.status_code == 200:
        job = Job.objects.get(pk=answer.pop("id"))
        row = {
            name: getattr(job, name)
            for name in (
                "workflow", "priority", "parameters", "queue_state", "persist", "semaphore_url",
                "idempotency_key", "failed", "position", "top_of_queue",
            )
        }  # fmt: skip
        row["run_at_is_created_at"] = job.run_at == job.created_at
        row["run_at"] = None if row["run_at_is_created_at"] else job.run_at
        log = json.loads(LogEntry.objects.get(job_id=job.pk).message)
        row["log"] = {key: value for key, value in log.items()}
    return response.status_code, answer, row


@pytest.mark.django_db
@pytest.mark.parametrize("body", PLAIN + OTHERS, ids=lambda body: json.dumps(body)[:60])
def test_the_api_answers_each_body_as_the_serializer_alone_does(
    body: Any, make_client: Any, monkeypatch: Any
) -> None:
    client, key = make_client(NAME)
    api = APIClient()
    api.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)

    with_plain_path = _answer(api, body)
    monkeypatch.setattr(views, "plain_submission", lambda data, name: None)
    serializer_only = _answer(api, body)

    assert with_plain_path == serializer_only
