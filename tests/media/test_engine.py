"""vodstream run by the engine itself: submitted with ``job_submit``, its tasks executed from the
messages the engine publishes (the engine tests' in-process broker), its job callback outputs checked,
and the signed job callback that carries the content key sent to a real receiver."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from callbacks import services as callbacks
from callbacks.models import CallbackDelivery
from callbacks.services import _collect_outputs
from clients.models import Client
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from media.definitions import MEDIA_DEFINITIONS
from taskengine_site import webhooks
from tests.engine.conftest import json_log
from tests.media.conftest import FPS, decode, put, with_local_key

KEY_URI = "https://keys.example.com/clip"


@pytest.mark.django_db
def test_vodstream_job_completes_with_its_callback_outputs(
    submit, broker, te_client, settings, tmp_path, media_cache, receiver
):
    settings.TASKENGINE_STORAGE_ROOT = tmp_path / "storage"
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True  # the receiver listens on 127.0.0.1
    secret = webhooks.generate_secret()
    Client.objects.filter(pk=te_client.pk).update(webhook_secret=secret)
    area = settings.TASKENGINE_STORAGE_ROOT / te_client.name
    put(area, media_cache(2, size="320x180"), "in/clip.mp4")
    job = submit(
        "vodstream",
        parameters={
            "content_id": "clip",
            "source_folder": "in",
            "output_folder": "out",
            "segment_duration": 1,
            "video_preset": "ultrafast",
            "drm": ["aes"],
            "key_uri": KEY_URI,
            "rest_endpoints": [receiver.url("/cb")],
        },
    )
    # The callbacks are sent below, by hand, like a callback worker would.
    broker.drain(skip=lambda message: message.queue == "callback")
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    tasks = list(job.tasks.order_by("position"))
    assert [t.name for t in tasks] == [s["step"] for s in MEDIA_DEFINITIONS["vodstream"]]
    assert {t.state for t in tasks} == {TaskState.COMPLETED}
    final = tasks[-1].result
    assert final["message"] == "out/clip.m3u8"

    # The job callback's files are the final step's list, each once, and none of them a key; its
    # duration is the VOD's, and its message names the manifest made.
    files, metadata, made = _collect_outputs(job)
    assert made == "out/clip.m3u8"
    assert files == final["files"] and len(set(files)) == len(files)
    assert not [name for name in files if name.endswith((".key", ".keyinfo", ".json"))]
    assert abs(metadata["duration"] - 2) < 1 / FPS
    messages = [entry[2] for entry in json_log(job.pk)]
    assert any(m.startswith("Encode took") for m in messages)

    # The first pending delivery's message sends it and the next ones of its line after it, in order.
    pending = CallbackDelivery.objects.filter(job=job, state=CallbackDelivery.State.PENDING).order_by("id")
    while (first := pending.first()) is not None:
        assert callbacks.callback_deliver(delivery_id=first.pk) == "sent"
    (sent,) = [r for r in receiver.received("/cb") if r.json().get("status") == "completed"]
    payload = Webhook(secret).verify(sent.body.decode(), sent.headers)
    (key,) = payload["keys"]
    assert (key["kind"], key["key_uri"]) == ("aes", KEY_URI)
    # Nothing at rest holds the key in plaintext: not the stored callback bodies, not the log, not the
    # task results; and no other callback (the task events) carries it.
    assert key["key_hex"] not in json.dumps(list(CallbackDelivery.objects.values_list("body", flat=True)))
    assert key["key_hex"] not in json.dumps(list(LogEntry.objects.values_list("message", flat=True)))
    assert key["key_hex"] not in json.dumps([t.result for t in tasks])
    assert all("keys" not in r.json() for r in receiver.received("/cb") if r is not sent)

    player = with_local_key(area / "out", KEY_URI, bytes.fromhex(key["key_hex"]), tmp_path / "player")
    (video,) = decode(player / "clip.m3u8", allowed_extensions="ALL")["video"]
    assert video["frames"] == 2 * FPS
