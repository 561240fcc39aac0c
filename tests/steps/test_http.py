"""The http_request step: one guarded HTTP call, its status checked; refusals are permanent, server
trouble is retried."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.workflows.registry import PermanentError, StepContext, TransientError, get_step


@pytest.fixture
def logged():
    """The lines the step wrote to its job log."""
    return []


@pytest.fixture
def call(tmp_path, logged):
    def run(**parameters: Any) -> Any:
        ctx = StepContext(
            job_id=1,
            task_id=1,
            client_name="acme",
            workflow="http_request",
            job_parameters={"content_id": "c1"},
            step_parameters=parameters,
            results={},
            log=lambda message, severity=1: logged.append(message),
            heartbeat=lambda progress=None: None,
            storage_root=Path(tmp_path),
        )
        return get_step("http_request").fn(ctx)

    return run


def test_a_get_that_answers_200_succeeds(call, logged, receiver, allow_loopback):
    receiver.answer("/status", 200, body=b'{"ok": true}')
    result = call(url=receiver.url("/status?token=abc"))
    assert result == {"status": 200, "body": '{"ok": true}', "truncated": False}
    (request,) = receiver.received("/status")
    assert request.method == "GET"
    assert logged == [f"GET {receiver.url('/status')} answered HTTP 200"]


def test_a_post_sends_its_json_body_and_headers(call, receiver, allow_loopback):
    receiver.answer("/hook", 201)
    result = call(
        url=receiver.url("/hook"),
        method="post",
        body={"content_id": "c1", "n": [1, 2]},
        headers={"X-Req": "yes"},
        expected_status=201,
    )
    assert result["status"] == 201
    (request,) = receiver.received("/hook")
    assert (request.method, json.loads(request.body), request.headers["X-Req"]) == (
        "POST",
        {"content_id": "c1", "n": [1, 2]},
        "yes",
    )


def test_a_string_body_is_sent_as_is(call, receiver, allow_loopback):
    call(url=receiver.url("/raw"), method="PUT", body="plain text")
    assert receiver.received("/raw")[0].body == b"plain text"


def test_expected_status_may_be_a_list(call, receiver, allow_loopback):
    receiver.answer("/gone", 404)
    assert call(url=receiver.url("/gone"), expected_status=[200, 404])["status"] == 404


def test_an_unexpected_client_error_fails_for_good(call, receiver, allow_loopback):
    receiver.answer("/missing", 404)
    with pytest.raises(PermanentError) as excinfo:
        call(url=receiver.url("/missing"))
    assert str(excinfo.value) == f"GET {receiver.url('/missing')} answered HTTP 404, expected 2xx"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_trouble_is_retried(call, receiver, allow_loopback, status):
    receiver.answer("/busy", status)
    with pytest.raises(TransientError):
        call(url=receiver.url("/busy"), expected_status=200)


def test_a_redirect_is_not_followed(call, receiver, allow_loopback):
    receiver.answer("/moved", 302, headers={"Location": receiver.url("/there")})
    assert call(url=receiver.url("/moved"), expected_status=302)["status"] == 302
    assert [r.path for r in receiver.received()] == ["/moved"]


def test_a_timeout_is_retried(call, receiver, allow_loopback):
    receiver.answer("/slow", 200, delay=2)
    with pytest.raises(TransientError) as excinfo:
        call(url=receiver.url("/slow"), timeout=0.5)
    assert "timed out" in str(excinfo.value)


def test_a_refused_url_fails_for_good_without_a_request(call, receiver, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    with pytest.raises(PermanentError) as excinfo:
        call(url=receiver.url("/x"))
    assert "url not allowed: 127.0.0.1 is a loopback address" in str(excinfo.value)
    with pytest.raises(PermanentError):
        call(url="http://169.254.169.254/latest/meta-data/")
    assert receiver.received() == []


def test_a_large_answer_is_kept_short(call, receiver, allow_loopback):
    receiver.answer("/big", 200, body=b"y" * 100_000)
    result = call(url=receiver.url("/big"))
    assert len(result["body"]) == 4096
    assert result["truncated"]


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"url": 5},
        {"url": "http://example.com/", "method": "BREW"},
        {"url": "http://example.com/", "expected_status": "ok"},
        {"url": "http://example.com/", "expected_status": 999},
        {"url": "http://example.com/", "headers": ["x"]},
        {"url": "http://example.com/", "timeout": "soon"},
    ],
)
def test_bad_parameters_fail_for_good(call, parameters):
    with pytest.raises(PermanentError):
        call(**parameters)
