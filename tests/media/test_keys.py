"""Content keys are secrets, not content (DESIGN.md §7): stored encrypted, never written to storage nor
listed in ``files``, given to the owning client only by ``GET /jobs/<id>/keys`` and the signed job
callback, and the same key for every attempt of one job."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import av
import pytest
from django.db import connection
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook

from callbacks import services as callbacks
from callbacks.models import CallbackDelivery
from clients import crypto
from jobs.models import Job, Task
from jobs.states import JobState
from jobs.workflows.registry import PermanentError, get_step, load_steps
from logs.models import LogEntry
from media.models import ContentKey
from media.services import content_key_make
from taskengine_site import webhooks
from tests import factories
from tests.media import streams
from tests.media.conftest import FPS, Recorder, decode, make_ctx, put, run_workflow, with_local_key

KEY_URI = "https://keys.example.com/show/key"
SECONDS = 2
KEY_NAMES = (".key", ".keyinfo", ".clearkey.json")


@pytest.fixture
def owner(api, tmp_path) -> Any:
    """The API client whose job encrypts; ``owner.area`` is its storage area."""
    api.area = tmp_path / "storage" / api.te_client.name
    api.area.mkdir(parents=True)
    return api


def run_vodstream(owner: Any, media_cache: Any, drm: str) -> tuple[Job, dict[str, Any], Recorder]:
    put(owner.area, media_cache(SECONDS, size="320x180"), "in/source.mp4")
    parameters: dict[str, Any] = {
        "content_id": "show",
        "source_folder": "in",
        "output_folder": "vod/show",
        "drm": [drm],
        "segment_duration": 1,
        "video_preset": "ultrafast",
    }
    if drm == "aes":
        parameters["key_uri"] = KEY_URI
    job = factories.job(owner.te_client, workflow="vodstream", parameters=parameters)
    recorder = Recorder()
    results = run_workflow("vodstream", parameters, owner.area, recorder, job_id=job.pk)
    return job, results, recorder


def get_keys(api: Any, job_id: int) -> Any:
    return api.get(f"/jobs/{job_id}/keys")


def assert_nowhere(root: Path, key: bytes, results: dict[str, Any], recorder: Recorder) -> None:
    """Neither the raw key nor its hex in any file under ``root`` (storage and work dirs), in a step's
    result or in the log; no key file written, none listed in ``files``."""
    spellings = (key, key.hex().encode(), key.hex().upper().encode())
    for path in root.rglob("*"):
        assert not path.name.endswith(KEY_NAMES), path
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in spellings if s in data], path
    assert not [name for name in results["publish_outputs"]["files"] if name.endswith(KEY_NAMES)]
    text = json.dumps(results) + "\n".join(recorder.lines)
    assert key.hex() not in text and key.hex().upper() not in text


def assert_stored_encrypted(job: Job, key_hex: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM media_contentkey WHERE job_id = %s", [job.pk])
        ((stored,),) = cursor.fetchall()
    assert crypto.is_token(stored) and key_hex not in stored.lower()
    assert crypto.decrypt(stored) == key_hex


@pytest.mark.django_db
def test_an_aes_128_key_is_given_only_through_the_route_and_decrypts_the_output(owner, media_cache, tmp_path):
    job, results, recorder = run_vodstream(owner, media_cache, "aes")
    answer = get_keys(owner, job.pk)
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    body = answer.json()
    assert list(body) == ["id", "keys"] and body["id"] == job.pk
    (document,) = body["keys"]
    assert set(document) == {"kind", "key_hex", "iv_hex", "key_uri"}
    assert (document["kind"], document["key_uri"]) == ("aes", KEY_URI)
    key = bytes.fromhex(document["key_hex"])
    assert len(key) == 16

    assert_nowhere(tmp_path, key, results, recorder)
    assert_stored_encrypted(job, document["key_hex"])
    assert results["prepare_encryption"] == {"drm": "aes", "key_uri": KEY_URI}
    out = owner.area / "vod/show"
    playlist = (out / "show_video_144p.m3u8").read_text()
    assert f'#EXT-X-KEY:METHOD=AES-128,URI="{KEY_URI}",IV=0x{document["iv_hex"]}' in playlist

    # The key the route gives is the one the output was encrypted with.
    player = with_local_key(out, KEY_URI, key, tmp_path / "player")
    (video,) = decode(player / "show.m3u8", allowed_extensions="ALL")["video"]
    assert video["frames"] == SECONDS * FPS
    with pytest.raises(av.error.InvalidDataError):
        decode(out / "show_video_144p/00002.ts")


@pytest.mark.django_db
def test_a_cenc_key_is_given_only_through_the_route_and_decrypts_the_output(owner, media_cache, tmp_path):
    job, results, recorder = run_vodstream(owner, media_cache, "cenc")
    answer = get_keys(owner, job.pk)
    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    (document,) = answer.json()["keys"]
    assert set(document) == {"kind", "scheme", "systems", "origin", "kid_hex", "key_hex", "clearkey"}
    assert document["kind"] == "cenc" and document["kid_hex"] == results["prepare_encryption"]["kid"]
    assert (document["systems"], document["origin"]) == (["clearkey"], "engine")
    key = bytes.fromhex(document["key_hex"])
    kid = bytes.fromhex(document["kid_hex"])

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    assert document["clearkey"] == {
        "keys": [{"kty": "oct", "kid": b64url(kid), "k": b64url(key)}],
        "type": "temporary",
    }
    assert_nowhere(tmp_path, key, results, recorder)
    assert_stored_encrypted(job, document["key_hex"])
    # The key id is not secret: the init segments carry it, so a player knows which key to ask for.
    out = owner.area / "vod/show"
    assert any(kid in path.read_bytes() for path in out.glob("*/init.mp4"))

    video = streams.joined(out, "show_video_144p.m3u8")
    decoded = decode(video, decryption_key=document["key_hex"])
    assert decoded["video"][0]["frames"] == SECONDS * FPS
    assert streams.digest(video) != streams.digest(video, decryption_key=document["key_hex"])


@pytest.mark.django_db
def test_the_keys_route_answers_the_owner_and_operators_only(api, operator_api, make_client):
    job = factories.job(api.te_client, workflow="vodstream")
    key = content_key_make(job_id=job.pk, kind="cenc")
    mine = get_keys(api, job.pk)
    assert mine.status_code == 200
    assert mine.json() == {"id": job.pk, "keys": [key.document()]}
    assert get_keys(operator_api, job.pk).json() == mine.json()

    # Another client: 404, exactly as for a job that does not exist and as GET /jobs/<id> answers.
    other_client, other_key = make_client()
    other = APIClient()
    other.credentials(HTTP_CLIENT=other_client.name, HTTP_API_KEY=other_key)
    foreign = get_keys(other, job.pk)
    missing = get_keys(other, job.pk + 1000)
    assert (foreign.status_code, missing.status_code) == (404, 404)
    assert foreign.json() == {"error": f"Job {job.pk} not found."}
    assert missing.json() == {"error": f"Job {job.pk + 1000} not found."}
    assert other.get(f"/jobs/{job.pk}").json() == foreign.json()
    assert key.key_hex() not in foreign.content.decode()

    for anonymous in (APIClient(), APIClient(HTTP_CLIENT=api.te_client.name, HTTP_API_KEY="wrong")):
        refused = get_keys(anonymous, job.pk)
        assert refused.status_code == 401 and refused.json() == {"error": "Unauthorised request."}

    clear = factories.job(api.te_client, workflow="vodstream")
    assert get_keys(api, clear.pk).json() == {"id": clear.pk, "keys": []}


@pytest.mark.django_db
def test_a_key_that_cannot_be_decrypted_is_a_clear_error(api, settings):
    job = factories.job(api.te_client, workflow="vodstream")
    # Made under a key the configuration then loses (rotated without keeping it as a fallback).
    settings.TASKENGINE_SECRETS_KEY = "a-key-that-is-gone-afterwards"
    content_key_make(job_id=job.pk, kind="aes", key_uri=KEY_URI)
    settings.TASKENGINE_SECRETS_KEY = ""
    answer = get_keys(api, job.pk)
    assert answer.status_code == 500
    assert answer.json() == {
        "id": job.pk,
        "error": "the job's keys cannot be decrypted with the configured keys",
    }


def prepare(job: Job, area: Path, attempt: int, **parameters: Any) -> dict[str, Any]:
    load_steps()
    ctx = make_ctx("vodstream", {"content_id": "show", **parameters}, area, job_id=job.pk)
    ctx.attempt = attempt
    return get_step("prepare_encryption").fn(ctx)


@pytest.mark.django_db
@pytest.mark.parametrize("drm", ["aes", "cenc"])
def test_a_retried_prepare_encryption_keeps_the_same_key(area, area_job, drm):
    parameters = {"drm": [drm], "key_uri": KEY_URI}
    job = area_job(area, parameters)
    first = prepare(job, area, 1, **parameters)
    made = ContentKey.objects.get(job=job).document()
    second = prepare(job, area, 2, **parameters)
    assert first == second and ContentKey.objects.filter(job=job).count() == 1
    assert ContentKey.objects.get(job=job).document() == made
    assert made["key_hex"] not in json.dumps(first)
    assert not list(area.rglob("*"))  # nothing written to storage

    # Another job (a rerun) gets a key of its own.
    other = area_job(area, parameters)
    prepare(other, area, 1, **parameters)
    assert ContentKey.objects.get(job=other).document()["key_hex"] != made["key_hex"]


@pytest.mark.django_db
def test_one_job_never_gets_keys_of_two_kinds(area, area_job):
    job = area_job(area, {})
    prepare(job, area, 1, drm=["cenc"])
    with pytest.raises(PermanentError, match="already has a cenc key"):
        prepare(job, area, 2, drm=["aes"], key_uri=KEY_URI)
    assert ContentKey.objects.filter(job=job).count() == 1


@pytest.mark.django_db
def test_a_key_uri_with_a_line_break_never_reaches_the_key_info_file(area, area_job):
    job = area_job(area, {})
    with pytest.raises(PermanentError, match="key_uri"):
        prepare(job, area, 1, drm=["aes"], key_uri=f"{KEY_URI}\n/etc/passwd")
    assert not ContentKey.objects.filter(job=job).exists()


@pytest.fixture
def keyed_job(make_client, receiver, allow_loopback):
    """``keyed_job(signed) -> (job, key document, secret)``: a finished vodstream job with a CENC key
    and one callback endpoint on the test receiver."""

    def factory(signed: bool) -> tuple[Job, dict[str, Any], str]:
        secret = webhooks.generate_secret() if signed else ""
        client, _ = make_client(webhook_secret=secret)
        parameters = {"content_id": "show", "rest_endpoints": [receiver.url("/cb")]}
        job = factories.job(
            client,
            workflow="vodstream",
            queue_state=JobState.COMPLETED,
            tasks=["prepare_encryption"],
            parameters=parameters,
        )
        key = content_key_make(job_id=job.pk, kind="cenc")
        return job, key.document(), secret

    return factory


def send_callbacks(job: Job) -> None:
    # The first pending delivery's message sends it and the next ones of its line after it, in order.
    pending = CallbackDelivery.objects.filter(job=job, state=CallbackDelivery.State.PENDING).order_by("id")
    while (first := pending.first()) is not None:
        assert callbacks.callback_deliver(delivery_id=first.pk) == "sent"


@pytest.mark.django_db
def test_the_signed_job_callback_carries_the_keys_and_verifies(keyed_job, receiver):
    job, document, secret = keyed_job(signed=True)
    callbacks.task_event(Task.objects.get(job=job).pk, "start")
    callbacks.job_finished(job.pk)
    send_callbacks(job)
    task_event, job_callback = receiver.received("/cb")
    payload = Webhook(secret).verify(job_callback.body.decode(), job_callback.headers)
    assert payload["keys"] == [document]
    # Task callbacks carry no key; the stored bodies (and so the admin's deliveries list) hold none.
    assert "keys" not in Webhook(secret).verify(task_event.body.decode(), task_event.headers)
    stored = list(CallbackDelivery.objects.filter(job=job).values_list("body", flat=True))
    assert all(document["key_hex"] not in body and '"keys"' not in body for body in stored)
    assert document["key_hex"] not in json.dumps(list(LogEntry.objects.values_list("message", flat=True)))


@pytest.mark.django_db
def test_an_unsigned_job_callback_carries_no_keys(keyed_job, receiver):
    job, document, _ = keyed_job(signed=False)
    callbacks.job_finished(job.pk)
    send_callbacks(job)
    (sent,) = receiver.received("/cb")
    assert "webhook-signature" not in {name.lower() for name in sent.headers}
    assert "keys" not in sent.json() and document["key_hex"] not in sent.body.decode()
    assert sent.body == CallbackDelivery.objects.get(job=job).body.encode()


@pytest.mark.django_db
def test_a_signed_callback_whose_keys_cannot_be_decrypted_is_not_sent(keyed_job, receiver, settings):
    job, document, _ = keyed_job(signed=True)
    # The key re-encrypted under a key the configuration then loses; the webhook secret stays readable.
    settings.TASKENGINE_SECRETS_KEY = "a-key-that-is-gone-afterwards"
    ContentKey.objects.filter(job=job).update(key=document["key_hex"])
    settings.TASKENGINE_SECRETS_KEY = ""
    callbacks.job_finished(job.pk)
    (row,) = CallbackDelivery.objects.filter(job=job)
    assert callbacks.callback_deliver(delivery_id=row.pk) == "failed"
    row.refresh_from_db()
    assert row.last_error == "the job's content keys cannot be decrypted with the configured keys"
    assert receiver.received("/cb") == []
