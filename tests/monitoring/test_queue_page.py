"""The live queue page /queue/ and its JSON /queue/data (issue 7.2)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from jobs.engine.bus import RUN_TASK, RUN_TASKS
from jobs.models import Job
from monitoring import broker as redis_queues
from monitoring import workers
from tests.engine.conftest import Broker


@pytest.fixture
def staff_http(db: None) -> HttpClient:
    user = User.objects.create_user("watcher", password="pw-for-tests-only", is_staff=True)
    http = HttpClient()
    http.force_login(user)
    return http


@pytest.fixture
def worker_heartbeat() -> Iterator[str]:
    """A worker heartbeat in Redis, as a live worker consuming ``work`` publishes it."""
    hostname = "console-test@host"
    workers.publish_worker_heartbeat(hostname, ["work", "controller"], {"work": 1})
    yield hostname
    workers.withdraw_worker(hostname)


def test_only_staff_see_it(db: None, te_client: Any) -> None:
    anonymous = HttpClient()
    for path in ("/queue/", "/queue/data"):
        response = anonymous.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    user = User.objects.create_user("not-staff", password="pw-for-tests-only")
    http = HttpClient()
    http.force_login(user)
    assert http.get("/queue/data")["Location"].startswith("/admin/login/")


def test_lists_slots_and_workers(
    staff_http: HttpClient,
    submit: Callable[..., Job],
    broker: Broker,
    setting: Callable[..., None],
    worker_heartbeat: str,
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    setting(max_jobs=3, priority_slots=1, priority_threshold=3)
    urgent = submit("noop5", priority=1)
    normal = submit("noop5", priority=5)
    # The heartbeat says its worker runs run_tasks: the two starts may be one message.
    broker.drain(skip=lambda message: message.task in (RUN_TASK, RUN_TASKS))
    setting(max_jobs=0)  # what is submitted now waits, in dispatch order
    waiting_late = submit("noop", priority=8)
    waiting_first = submit("noop", priority=2)
    waiting_top = submit("noop", priority=9)
    Job.objects.filter(pk=waiting_top.pk).update(top_of_queue=True)
    later = submit("noop", run_at=timezone.now() + timedelta(hours=2))
    soon = submit("noop", run_at=timezone.now() + timedelta(hours=1))

    data = staff_http.get("/queue/data").json()
    assert [job["id"] for job in data["started"]] == [urgent.pk, normal.pk]
    assert [job["id"] for job in data["queued"]] == [waiting_top.pk, waiting_first.pk, waiting_late.pk]
    assert [job["id"] for job in data["scheduled"]] == [soon.pk, later.pk]
    assert data["queued"][0]["queue_state"] == "queued"
    assert data["slots"] == {"max_jobs": 0, "used": 2, "free": 0, "reserved": 0, "reserved_used": 0}
    setting(max_jobs=3)
    data = staff_http.get("/queue/data").json()
    assert data["slots"] == {"max_jobs": 3, "used": 2, "free": 1, "reserved": 1, "reserved_used": 1}
    assert data["queues"]["work"]["workers"] >= 1
    assert data["queues"]["work"]["working"] >= 1
    assert data["redis"] == "OK"

    page = staff_http.get("/queue/")
    html = page.content.decode()
    assert page.templates[0].name == "console/queue.html"
    for job in (urgent, normal, waiting_top, waiting_first, waiting_late, soon, later):
        assert f'href="/admin/jobs/job/{job.pk}/change/"' in html
    # Dispatch order on the page too.
    assert html.index(f"/admin/jobs/job/{waiting_top.pk}/") < html.index(
        f"/admin/jobs/job/{waiting_late.pk}/"
    )
    assert "Started (<span" in html and "Workers per queue" in html
    assert "setTimeout(refresh" in html  # it refreshes itself
    # Scripts and styles are local (no CDN): every src= and stylesheet href= is a path of this site.
    assert re.findall(r'<script[^>]*\ssrc="(?!/)', html) == []
    assert re.findall(r'<link[^>]*\shref="(?!/)', html) == []


def test_redis_down_is_a_notice_not_an_error(
    staff_http: HttpClient, submit: Callable[..., Job], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit("noop")
    # A real client to a port nothing listens on: connection refused, like a stopped Redis.
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, decode_responses=True)
    with monkeypatch.context() as patch:  # undone before the broker fixture empties the queues
        patch.setattr(redis_queues, "_client", dead)
        data = staff_http.get("/queue/data").json()
        html = staff_http.get("/queue/").content.decode()
    assert data["redis"].startswith("redis: ")
    assert data["queues"] == {}
    assert [item["id"] for item in data["queued"]] == [job.pk]  # Postgres figures still there
    assert "Redis unreachable" in html
    assert 'id="te-redis" class="te-notice" hidden' not in html


@pytest.mark.parametrize("path", ["/queue/", "/queue/data"])
def test_head_answers_as_get_without_a_body_and_other_methods_are_refused(
    staff_http: HttpClient, path: str
) -> None:
    got = staff_http.get(path)
    head = staff_http.head(path)
    assert (head.status_code, head["Content-Type"], head.content) == (200, got["Content-Type"], b"")
    refused = staff_http.post(path)
    assert refused.status_code == 405
    assert refused["Allow"] == "GET, HEAD"
