"""The API keys a process remembers (clients.keycache): accepted without a statement while the keys token
in Redis is the one they were accepted under, refused at once after any change the ORM makes to a client
or a key, and after KNOWN_SECONDS whatever the change; the database decides whenever Redis cannot.

Each case is sent both ways a request authenticates: ``GET /jobs`` (DRF's authentication class) and
``POST /job`` (its own view, which reads the token with the rate limit's count).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache, caches
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from clients import keycache
from clients.models import ApiKey, Client
from clients.services import api_key_revoke
from jobs.models import Job

pytestmark = pytest.mark.django_db

UNAUTHORISED = {"error": "Unauthorised request."}
BODY = {"job": {"workflow": "noop"}, "parameters": {}}


def _get(name: str, key: str) -> Any:
    return APIClient().get("/jobs", headers={"client": name, "api-key": key})


def _post(name: str, key: str) -> Any:
    return APIClient().generic(
        "POST",
        "/job",
        json.dumps(BODY),
        content_type="application/json",
        headers={"client": name, "api-key": key},
    )


SEND = {"GET /jobs": _get, "POST /job": _post}


def _ok(response: Any, how: str) -> None:
    assert response.status_code == 200, response.content
    body = response.json()
    if how == "POST /job":
        assert body["result"] == "accepted" and Job.objects.filter(pk=body["id"]).exists()
    else:
        assert "jobs" in body or isinstance(body, (list, dict))


def _key_reads(queries: CaptureQueriesContext) -> list[str]:
    """The key lookups among the statements (not the write of a key's last use)."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if "clients_apikey" in q["sql"] and q["sql"].lstrip().upper().startswith("SELECT")
    ]


def _remembered(make_client: Any, how: str) -> tuple[Client, str]:
    """A client whose key this process has just accepted from the database (and remembers)."""
    client, key = make_client("acme")
    with CaptureQueriesContext(connection) as first:
        _ok(SEND[how](client.name, key), how)
    assert len(_key_reads(first)) == 1  # the database decided the first time
    return client, key


@pytest.mark.parametrize("how", SEND)
def test_a_remembered_key_is_accepted_without_reading_the_database(make_client, how):
    client, key = _remembered(make_client, how)
    for _ in range(3):
        with CaptureQueriesContext(connection) as later:
            _ok(SEND[how](client.name, key), how)
        assert _key_reads(later) == []


@pytest.mark.parametrize("how", SEND)
def test_a_revoked_remembered_key_is_refused_at_once(make_client, how):
    client, key = _remembered(make_client, how)
    api_key_revoke(api_key=ApiKey.objects.get(client=client))  # a queryset update
    response = SEND[how](client.name, key)
    assert response.status_code == 401 and response.json() == UNAUTHORISED
    assert Job.objects.filter(client=client).count() == (1 if how == "POST /job" else 0)


def _turned_off_and_saved(client: Client) -> None:
    client.is_active = False
    client.save()


@pytest.mark.parametrize("how", SEND)
@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: Client.objects.filter(pk=c.pk).update(is_active=False), id="client-update"),
        pytest.param(lambda c: _turned_off_and_saved(c), id="client-save"),
        pytest.param(lambda c: ApiKey.objects.filter(client=c).delete(), id="key-delete"),
        pytest.param(lambda c: Client.objects.filter(pk=c.pk).update(name="renamed"), id="client-renamed"),
    ],
)
def test_any_change_to_the_client_or_key_retires_the_memory(make_client, how, change):
    client, key = _remembered(make_client, how)
    change(client)
    response = SEND[how]("acme", key)
    assert response.status_code == 401 and response.json() == UNAUTHORISED


@pytest.mark.parametrize("how", SEND)
def test_writing_the_last_use_alone_keeps_the_memory(make_client, how):
    client, key = _remembered(make_client, how)
    token = keycache.current_token()
    ApiKey.objects.filter(client=client).update(last_used_at=None)
    assert keycache.current_token() == token
    with CaptureQueriesContext(connection) as later:
        _ok(SEND[how](client.name, key), how)
    assert _key_reads(later) == []


@pytest.mark.parametrize("how", SEND)
def test_a_change_the_orm_does_not_see_is_seen_after_known_seconds(make_client, how, monkeypatch):
    client, key = _remembered(make_client, how)
    with connection.cursor() as cursor:  # as SQL typed into psql: no token is set
        cursor.execute("UPDATE clients_apikey SET revoked_at = now() WHERE client_id = %s", [client.pk])
    _ok(SEND[how](client.name, key), how)  # still remembered
    now = keycache.time.monotonic()
    monkeypatch.setattr(keycache.time, "monotonic", lambda: now + keycache.KNOWN_SECONDS + 0.1)
    response = SEND[how](client.name, key)
    assert response.status_code == 401 and response.json() == UNAUTHORISED


@pytest.mark.parametrize("how", SEND)
def test_another_process_changing_the_token_sends_the_next_request_to_the_database(make_client, how):
    client, key = _remembered(make_client, how)
    cache.set(keycache.TOKEN_KEY, 12345, timeout=None)  # as another process's keys_changed leaves it
    with CaptureQueriesContext(connection) as later:
        _ok(SEND[how](client.name, key), how)
    assert len(_key_reads(later)) == 1
    with CaptureQueriesContext(connection) as again:
        _ok(SEND[how](client.name, key), how)
    assert _key_reads(again) == []  # remembered again, under the new token


@pytest.mark.parametrize("how", SEND)
def test_without_a_token_in_redis_the_database_decides(make_client, how):
    client, key = _remembered(make_client, how)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clients_apikey SET revoked_at = now() WHERE client_id = %s", [client.pk])
    cache.delete(keycache.TOKEN_KEY)  # a flushed or evicted Redis
    response = SEND[how](client.name, key)
    assert response.status_code == 401 and response.json() == UNAUTHORISED
    assert keycache.current_token() is not None  # a new one was set


@pytest.mark.parametrize("how", SEND)
def test_with_redis_unreachable_every_request_reads_the_database(make_client, how, monkeypatch):
    client, key = make_client("acme")

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(keycache, "_get_raw", unreachable)
    monkeypatch.setattr(type(caches["default"]), "incr_window_reading", unreachable)
    for _ in range(2):
        with CaptureQueriesContext(connection) as each:
            _ok(SEND[how](client.name, key), how)
        assert len(_key_reads(each)) == 1
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clients_apikey SET revoked_at = now() WHERE client_id = %s", [client.pk])
    assert SEND[how](client.name, key).status_code == 401


@pytest.mark.parametrize("how", SEND)
def test_a_wrong_key_for_a_remembered_client_is_refused(make_client, how):
    client, key = _remembered(make_client, how)
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    response = SEND[how](client.name, wrong)
    assert response.status_code == 401 and response.json() == UNAUTHORISED
    _ok(SEND[how](client.name, key), how)


def test_a_remembered_key_over_its_rate_limit_answers_429(make_client, settings, one_rate_window):
    settings.TASKENGINE_RATE_LIMIT = "2/minute"
    client, key = _remembered(make_client, "POST /job")
    assert _post(client.name, key).status_code == 200
    response = _post(client.name, key)
    assert response.status_code == 429
    assert Job.objects.filter(client=client).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_change_sets_a_new_token_at_once_and_again_at_its_commit(make_client):
    client, _ = make_client("acme")
    before = keycache.current_token()
    with transaction.atomic():
        Client.objects.filter(pk=client.pk).update(is_operator=True)
        during = keycache.current_token()
        assert during != before
    after = keycache.current_token()
    assert after not in (before, during)


@pytest.mark.parametrize("how", SEND)
def test_a_refused_remembered_key_has_no_use_written(make_client, how):
    from datetime import timedelta

    from django.utils import timezone

    client, key = _remembered(make_client, how)
    long_ago = timezone.now() - timedelta(hours=1)
    ApiKey.objects.filter(client=client).update(last_used_at=long_ago)  # keeps the memory
    for known in keycache._known.values():
        known.last_used_at = long_ago  # a use older than the granularity: the next one would be written
    with connection.cursor() as cursor:
        cursor.execute("UPDATE clients_apikey SET revoked_at = now() WHERE client_id = %s", [client.pk])
    cache.set(keycache.TOKEN_KEY, 54321, timeout=None)  # as another process's change leaves it
    response = SEND[how](client.name, key)
    assert response.status_code == 401 and response.json() == UNAUTHORISED
    assert ApiKey.objects.get(client=client).last_used_at == long_ago
