"""End to end, with real worker and beat processes and a real HTTP receiver: a drmswitch job from
submission to completed (files renamed on disk, its log, its callbacks in order and signed), a failing
job's fail and failed callbacks, and a dead receiver that neither fails nor delays its job."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from callbacks.models import CallbackDelivery
from jobs.models import Job, Task
from jobs.services import job_submit
from jobs.states import JobState
from logs.models import LogEntry, Severity
from settings_app.services import setting_set
from taskengine_site import webhooks
from tests.callbacks import support

pytestmark = pytest.mark.e2e

receiver = support.receiver


def wait_terminal(job_id: int, timeout: float = 30.0) -> Job:
    support.wait_until(
        lambda: Job.objects.filter(pk=job_id, queue_state=JobState.COMPLETED).exists(), timeout=timeout
    )
    return Job.objects.get(pk=job_id)


def events(received: list[support.Received]) -> list[tuple[str, str]]:
    out = []
    for request in received:
        body = request.json()
        out.append((body.get("task_name", "job"), body.get("event") or body["status"]))
    return out


def log_of(job_id: int, *prognames: str) -> list[tuple[str, str]]:
    return list(
        LogEntry.objects.filter(job_id=job_id, progname__in=prognames)
        .order_by("id")
        .values_list("progname", "message")
    )


def test_a_drmswitch_job_from_submission_to_completed(engine_processes, make_client, receiver):
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    secret = webhooks.generate_secret()
    client, _ = make_client(webhook_secret=secret)
    folder = engine_processes.storage / client.name / "vod" / "c-42"
    folder.mkdir(parents=True)
    for ext in ("m3u8", "mpd"):
        (folder / f"index.{ext}").write_text(f"clear {ext}")
        (folder / f"index.drm.{ext}").write_text(f"drm {ext}")
    job, _ = job_submit(
        client=client,
        workflow="drmswitch",
        parameters={
            "content_id": "c-42",
            "folder": "vod/c-42",
            "drm": ["widevine", "playready"],
            "custom_data": {"ticket": 7},
            "rest_endpoints": [receiver.url("/cb")],
        },
        request_meta={"REMOTE_ADDR": "127.0.0.1"},
    )
    job = wait_terminal(job.pk)
    assert not job.failed

    # On disk: the DRM manifests are published, the clear ones parked.
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        "index.m3u8": "drm m3u8",
        "index.mpd": "drm mpd",
        "index.clear.m3u8": "clear m3u8",
        "index.clear.mpd": "clear mpd",
    }

    # Callbacks: each task's start before its complete, the job callback last, all signed.
    received = receiver.wait_for(7, "/cb", timeout=20)
    assert events(received) == [
        ("get_filenames", "start"),
        ("get_filenames", "complete"),
        ("prepare_switch", "start"),
        ("prepare_switch", "complete"),
        ("rename_manifests", "start"),
        ("rename_manifests", "complete"),
        ("job", "completed"),
    ]
    task_ids = list(Task.objects.filter(job=job).order_by("position").values_list("pk", flat=True))
    assert [r.json()["task_id"] for r in received[:6]] == [t for t in task_ids for _ in range(2)]
    for request in received:
        assert request.headers["Workflow-Id"] == str(job.workflow_uuid)
        Webhook(secret).verify(request.body.decode(), request.headers)
    final = received[-1].json()
    assert final == final | {
        "job_id": job.pk,
        "status": "completed",
        "workflow": "drmswitch",
        "content_id": "c-42",
        "custom_data": {"ticket": 7},
        "files": ["vod/c-42/index.m3u8", "vod/c-42/index.mpd"],
        "client": client.name,
    }

    # The log, in the reference's order and words.
    lines = log_of(job.pk, "api", "worker", "controller")
    assert lines[0][0] == "api"
    assert json.loads(lines[0][1])["payload"] == "job_created"
    expected: list[tuple[str, str]] = []
    for name in ("get_filenames", "prepare_switch", "rename_manifests"):
        expected += [
            ("worker", "No client definitions. Using common definitions."),
            ("worker", f"Task '{name}' started"),
            ("worker", f"'{name}' completed successfully"),
        ]
    expected.append(("controller", "job has completed successfully"))
    framing = [line for line in lines[1:] if line in expected]
    assert framing == expected
    assert ("worker", "2 manifests switched to drm") in lines
    support.wait_until(lambda: len(log_of(job.pk, "callback")) == 8, timeout=10)
    callback_lines = [message for _, message in log_of(job.pk, "callback")]
    assert callback_lines[0] == "No client definitions. Using common definitions."
    assert all(" sent to " in message for message in callback_lines[1:])


def test_a_failing_step_produces_a_fail_callback_and_a_failed_job_callback(
    engine_processes, make_client, receiver
):
    setting_set(name="retry_limit", value=2)
    setting_set(name="retry_delay", value=1)
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    client, _ = make_client()
    job, _ = job_submit(
        client=client,
        workflow="fail",
        parameters={"message": "always broken", "rest_endpoints": [receiver.url("/cb")]},
    )
    job = wait_terminal(job.pk)
    assert job.failed
    assert Task.objects.get(job=job).attempts == 3
    received = receiver.wait_for(3, "/cb", timeout=20)
    assert events(received) == [("fail", "start"), ("fail", "fail"), ("job", "failed")]
    assert received[1].json()["message"] == "always broken"
    assert received[2].json()["status"] == "failed"


def test_a_dead_receiver_neither_fails_nor_delays_the_job(engine_processes, make_client, receiver):
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/cb"
    client, _ = make_client()
    submitted = time.monotonic()
    job, _ = job_submit(
        client=client, workflow="noop5", parameters={"rest_endpoints": [dead, receiver.url("/live")]}
    )
    job = wait_terminal(job.pk, timeout=15)
    took = time.monotonic() - submitted
    assert not job.failed
    assert took < 5, took
    assert events(receiver.wait_for(11, "/live", timeout=10))[-1] == ("job", "completed")
    support.wait_until(
        lambda: CallbackDelivery.objects.filter(url=dead, attempts__gte=1).count() >= 1, timeout=10
    )
    first_dead = CallbackDelivery.objects.filter(url=dead).order_by("id").first()
    assert first_dead is not None
    assert (first_dead.state, first_dead.last_error) == (CallbackDelivery.State.PENDING, "connection refused")
    warnings: list[Any] = list(
        LogEntry.objects.filter(job=job, progname="callback", severity=Severity.WARN).values_list(
            "message", flat=True
        )
    )
    assert any("connection refused (attempt 1 of 8); retrying in 5s" in m for m in warnings)
