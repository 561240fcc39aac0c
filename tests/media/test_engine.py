"""vodstream run by the engine itself: submitted with ``job_submit``, its tasks executed from the
messages the engine publishes (the engine tests' in-process broker), its job callback outputs checked."""

from __future__ import annotations

import pytest

from jobs.callbacks import _collect_outputs
from jobs.states import JobState, TaskState
from media.definitions import MEDIA_DEFINITIONS
from media.selectors import job_key_documents
from tests.engine.conftest import json_log
from tests.media.conftest import FPS, decode, put, with_local_key

KEY_URI = "https://keys.example.com/clip"


@pytest.mark.django_db
def test_vodstream_job_completes_with_its_callback_outputs(
    submit, broker, te_client, settings, tmp_path, media_cache
):
    settings.TASKENGINE_STORAGE_ROOT = tmp_path / "storage"
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
        },
    )
    broker.drain()
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
    assert any(m.startswith("HLS encode took") for m in messages)
    (key,) = job_key_documents(job_id=job.pk)
    player = with_local_key(area / "out", KEY_URI, bytes.fromhex(key["key_hex"]), tmp_path / "player")
    (video,) = decode(player / "clip.m3u8", allowed_extensions="ALL")["video"]
    assert video["frames"] == 2 * FPS
