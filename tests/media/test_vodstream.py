"""vodstream end to end through its steps: a real ffmpeg encode of a synthetic source, checked by
decoding every rendition through the master playlist, clear and encrypted."""

from __future__ import annotations

import json

import av
import pytest

from media.params import validate_parameters
from media.selectors import job_key_documents
from taskengine_site.errors import DomainError
from tests.media.conftest import FPS, Recorder, decode, put, run_workflow, with_local_key

SECONDS = 4
FRAMES = SECONDS * FPS


def vodstream(area, media_cache, drm: str, job_id=None, **extra):
    put(area, media_cache(SECONDS), "incoming/show/source.mp4")
    parameters = {
        "content_id": "show",
        "source_folder": "incoming/show",
        "output_folder": "vod/show",
        "drm": [drm],
        "segment_duration": 1,
        "video_preset": "ultrafast",
        **extra,
    }
    validate_parameters("vodstream", parameters)
    recorder = Recorder()
    results = run_workflow("vodstream", parameters, area, recorder, job_id=job_id)
    return results, recorder, area / "vod/show"


def assert_every_rendition_plays(decoded, heights=(360, 240, 144)):
    assert [entry["size"][1] for entry in decoded["video"]] == list(heights)
    for entry in decoded["video"]:
        # Every frame of every rendition, start to end: the duration is exact to the frame.
        assert entry["frames"] == FRAMES
        assert abs((entry["last"] - entry["first"] + 1 / FPS) - SECONDS) < 1 / FPS
    assert decoded["audio"] and all(abs(seconds - SECONDS) < 0.1 for seconds in decoded["audio"])


def test_clear_ladder_thumbnail_and_mp4(area, media_cache):
    results, recorder, out = vodstream(area, media_cache, "clear", thumbnail_time=1.5, generate_mp4=True)
    final = results["publish_outputs"]
    assert final["message"] == "vod/show/show.m3u8"
    assert abs(final["metadata"]["duration"] - SECONDS) < 1 / FPS
    # ``files`` lists every file written, and only those.
    on_disk = sorted(p.relative_to(area).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(final["files"]) == on_disk
    assert {"vod/show/show.jpg", "vod/show/show.mp4", "vod/show/show_360p.m3u8"} <= set(final["files"])
    # No intermediate step claims callback keys: the job callback would count their files twice.
    for name, result in results.items():
        if name != "publish_outputs":
            assert not {"files", "metadata", "duration"} & set(result), name

    master = (out / "show.m3u8").read_text()
    assert master.count("#EXT-X-STREAM-INF") == 3 and "RESOLUTION=640x360" in master
    for variant in ("show_360p.m3u8", "show_240p.m3u8", "show_144p.m3u8"):
        playlist = (out / variant).read_text()
        assert playlist.count("#EXTINF:1.000000,") == SECONDS and "#EXT-X-ENDLIST" in playlist
    assert_every_rendition_plays(decode(out / "show.m3u8"))

    thumbnail = decode(out / "show.jpg")["video"][0]
    assert thumbnail["size"] == (640, 360) and thumbnail["frames"] == 1
    mp4 = decode(out / "show.mp4")
    assert mp4["video"][0]["frames"] == FRAMES
    assert any(
        line.startswith("Encoding 4.0 s into 3 rendition(s): 360p, 240p, 144p") for line in recorder.lines
    )
    assert recorder.progress and max(recorder.progress) == 100.0


def test_renditions_are_capped_at_the_source_height(area, media_cache):
    put(area, media_cache(2, size="320x180", audio=False), "small/a.mp4")
    results = run_workflow(
        "vodstream",
        {"content_id": "small", "source_folder": "small", "segment_duration": 1, "video_preset": "ultrafast"},
        area,
    )
    assert results["transcode_hls"]["renditions"] == ["144p"]
    # output_folder defaults to the source folder; the thumbnail and MP4 were not asked for.
    decoded = decode(area / "small/small.m3u8")
    assert [entry["size"] for entry in decoded["video"]] == [(256, 144)] and decoded["audio"] == []
    assert results["create_thumbnail"]["skipped"] and results["create_mp4"]["skipped"]


KEY_URI = "https://keys.example.com/show/key"


@pytest.mark.django_db
def test_aes_128_needs_its_key(area, media_cache, area_job, tmp_path):
    job = area_job(area, {"content_id": "show"})
    results, recorder, out = vodstream(area, media_cache, "aes", job_id=job.pk, key_uri=KEY_URI)
    (document,) = job_key_documents(job_id=job.pk)
    key = bytes.fromhex(document["key_hex"])
    # The key is a secret: nowhere in the published folder, its files, the steps' results or the log.
    assert not [p for p in out.rglob("*") if p.suffix in (".key", ".keyinfo") or "clearkey" in p.name]
    assert all(key not in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert not [f for f in results["publish_outputs"]["files"] if f.endswith((".key", ".keyinfo"))]
    assert document["key_hex"] not in json.dumps(results) + "\n".join(recorder.lines)
    variant = (out / "show_240p.m3u8").read_text()
    assert f'#EXT-X-KEY:METHOD=AES-128,URI="{KEY_URI}",IV=0x{document["iv_hex"]}' in variant

    # A player given the key by the client's key server plays every rendition.
    player = with_local_key(out, KEY_URI, key, tmp_path / "player")
    assert_every_rendition_plays(decode(player / "show.m3u8", allowed_extensions="ALL"))
    with pytest.raises(av.error.InvalidDataError):
        decode(out / "show_360p_00001.ts")
    (player / "local.key").write_bytes(bytes(b ^ 1 for b in key))
    with pytest.raises(av.error.FFmpegError):
        decode(player / "show.m3u8", allowed_extensions="ALL")


@pytest.mark.django_db
def test_cenc_needs_its_key(area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    results, _, out = vodstream(area, media_cache, "cenc", job_id=job.pk)
    (document,) = job_key_documents(job_id=job.pk)
    assert document["kid_hex"] == results["prepare_encryption"]["kid"]
    assert document["clearkey"]["keys"][0]["kty"] == "oct"
    assert not [p for p in out.rglob("*") if "clearkey" in p.name or p.suffix == ".key"]
    master = (out / "show.m3u8").read_text()
    assert "#EXT-X-MEDIA:TYPE=AUDIO" in master and 'AUDIO="audio"' in master
    assert "#EXT-X-MAP:URI=" in (out / "show_360p.m3u8").read_text()

    key = document["key_hex"]
    assert key not in json.dumps(results)
    assert_every_rendition_plays(decode(out / "show.m3u8", seg_format_options=f"decryption_key={key}"))
    with pytest.raises(av.error.InvalidDataError):
        decode(out / "show.m3u8")
    wrong = f"{(int(key, 16) ^ 1):032x}"
    with pytest.raises(av.error.InvalidDataError):
        decode(out / "show.m3u8", seg_format_options=f"decryption_key={wrong}")


def test_unsupported_drm_is_refused_at_submission():
    with pytest.raises(DomainError) as refused:
        validate_parameters("vodstream", {"content_id": "x", "source_folder": "in", "drm": ["widevine"]})
    assert refused.value.message == "parameters.drm: 'widevine' is not supported"
