"""vodcapture: clips from storage paths, MP4 URLs and HLS URLs (through the outbound guard) cut and
stitched into one VOD, by stream copy or frame-accurately."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest

from jobs.workflows.registry import PermanentError, TransientError
from media import hls
from media.ffmpeg import ffmpeg_exe
from media.steps import vod as steps
from tests.media.conftest import FPS, decode, make_ctx, put, run_workflow

SOURCE_SECONDS = 6


def frames_and_span(path, **options):
    (video,) = decode(path, **options)["video"]
    return video["frames"], video["last"] - video["first"] + 1 / FPS


def make_hls(source, folder, *, program_date_time: bool = False, ended: bool = True):
    """An HLS copy of ``source`` in 2-second segments, as a packager or a live origin would serve it."""
    folder.mkdir(parents=True, exist_ok=True)
    flags = ["program_date_time"] if program_date_time else []
    if not ended:
        flags.append("omit_endlist")
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source)]
    command += ["-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0"]
    if flags:
        command += ["-hls_flags", "+".join(flags)]
    subprocess.run(
        [*command, "-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "live.m3u8")], check=True
    )
    return folder / "live.m3u8"


def test_stream_copy_from_storage_paths(area, media_cache):
    put(area, media_cache(SOURCE_SECONDS), "recordings/match.mp4")
    results = run_workflow(
        "vodcapture",
        {
            "content_id": "highlights",
            "output_folder": "vod/highlights",
            "segment_duration": 2,
            "generate_mp4": True,
            # Cut points on keyframes (one a second): stream copy is exact there.
            "clips": [
                {"source": "recordings/match.mp4", "start": 1, "end": 3},
                {"source": "recordings/match.mp4", "start": "00:00:04", "end": "5"},
            ],
        },
        area,
    )
    assert results["capture_clips_accurate"]["skipped"]
    final = results["publish_outputs"]
    assert final["message"] == "vod/highlights/highlights.m3u8"
    assert abs(final["metadata"]["duration"] - 3) <= 1 / FPS
    out = area / "vod/highlights"
    assert sorted(final["files"]) == sorted(p.relative_to(area).as_posix() for p in out.iterdir())
    frames, span = frames_and_span(out / "highlights.m3u8")
    assert frames == 3 * FPS and abs(span - 3) < 1 / FPS
    assert frames_and_span(out / "highlights.mp4")[0] == 3 * FPS


def test_frame_accurate_from_hls_and_mp4_urls(area, media_cache, http_server):
    source = media_cache(SOURCE_SECONDS)
    make_hls(source, http_server.root / "live")
    (http_server.root / "match.mp4").write_bytes(source.read_bytes())
    results = run_workflow(
        "vodcapture",
        {
            "content_id": "cut",
            "output_folder": "vod/cut",
            "frame_accurate": True,
            "video_preset": "ultrafast",
            "clips": [
                # Neither bound is on a keyframe: only a re-encode cuts there.
                {"source": f"{http_server.url}/live/live.m3u8", "start": 2.52, "end": 3.72},
                {"source": f"{http_server.url}/match.mp4", "start": 0.2, "end": "00:00:01"},
            ],
        },
        area,
    )
    assert results["capture_clips"]["skipped"]
    frames, span = frames_and_span(area / "vod/cut/cut.m3u8")
    assert frames == 30 + 20 and abs(span - 2.0) <= 1 / FPS
    assert abs(results["publish_outputs"]["metadata"]["duration"] - 2.0) <= 1 / FPS
    # Only the segment holding the clip was fetched from the HLS stream.
    segments = sorted(path for path in http_server.requests if path.endswith(".ts"))
    assert segments == ["/live/seg001.ts"]


def test_date_time_clips_from_a_live_stream(area, media_cache, http_server):
    playlist = make_hls(media_cache(SOURCE_SECONDS), http_server.root / "live", program_date_time=True)
    first = hls.parse_media(playlist.read_text()).segments[0].program_date_time
    assert first is not None
    clip = {
        "source": f"{http_server.url}/live/live.m3u8",
        "start": (first + timedelta(seconds=4.4)).isoformat(),
        "end": (first + timedelta(seconds=5.4)).isoformat(),
    }
    results = run_workflow(
        "vodcapture",
        {
            "content_id": "live",
            "output_folder": "vod/live",
            "frame_accurate": True,
            "video_preset": "ultrafast",
            "clips": [clip],
        },
        area,
    )
    frames, span = frames_and_span(area / "vod/live/live.m3u8")
    assert frames == FPS and abs(span - 1.0) <= 1 / FPS
    assert results["fetch_clips"]["clips"] == 1

    # A clip ending after what a live stream holds so far is retried later, not cut short.
    live = make_hls(
        media_cache(SOURCE_SECONDS), http_server.root / "now", program_date_time=True, ended=False
    )
    now = hls.parse_media(live.read_text()).segments[0].program_date_time
    assert now is not None
    later = {
        "source": f"{http_server.url}/now/live.m3u8",
        "start": (now + timedelta(seconds=1)).isoformat(),
        "end": (now + timedelta(seconds=SOURCE_SECONDS + 30)).isoformat(),
    }
    ctx = make_ctx("vodcapture", {"content_id": "l", "output_folder": "o", "clips": [later]}, area)
    with pytest.raises(TransientError, match="not reached the clip's end"):
        steps.fetch_clips(ctx)


def test_private_addresses_are_refused_by_the_guard(area, http_server, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    (http_server.root / "a.mp4").write_bytes(b"x")
    ctx = make_ctx(
        "vodcapture",
        {
            "content_id": "c",
            "output_folder": "o",
            "clips": [{"source": f"{http_server.url}/a.mp4", "start": 0, "end": 1}],
        },
        area,
    )
    with pytest.raises(PermanentError, match="url not allowed"):
        steps.fetch_clips(ctx)
    assert http_server.requests == []


def test_fetching_retries_as_many_times_as_asked(area, http_server):
    # Only the start of an MP4 (fetching sniffs it; nothing here decodes it).
    (http_server.root / "a.mp4").write_bytes(b"\x00\x00\x00\x10ftypisom\x00\x00\x02\x00")
    clip = {"source": f"{http_server.url}/a.mp4", "start": 0, "end": 1}
    http_server.failures = 1
    with pytest.raises(TransientError, match="HTTP 503"):
        steps.fetch_clips(
            make_ctx(
                "vodcapture",
                {"content_id": "c", "output_folder": "o", "clips": [clip], "retries": 0},
                area,
            )
        )
    http_server.failures = 1
    result = steps.fetch_clips(
        make_ctx(
            "vodcapture",
            {"content_id": "c", "output_folder": "o", "clips": [clip], "retries": 1},
            area,
        )
    )
    assert result == {"clips": 1, "media_duration": 1.0}
    assert len(http_server.requests) == 3


def test_clip_from_an_hls_playlist_in_storage(area, media_cache):
    make_hls(media_cache(SOURCE_SECONDS), area / "archive/match")
    results = run_workflow(
        "vodcapture",
        {
            "content_id": "replay",
            "output_folder": "vod/replay",
            "segment_duration": 2,
            "clips": [{"source": "archive/match/live.m3u8", "start": 2, "end": 4}],
        },
        area,
    )
    frames, span = frames_and_span(area / "vod/replay/replay.m3u8")
    assert frames == 2 * FPS and abs(span - 2) < 1 / FPS
    assert results["publish_outputs"]["message"] == "vod/replay/replay.m3u8"


@pytest.mark.parametrize(
    "uri", ["/etc/hostname", "../../outside.ts", "file:///etc/hostname", "{url}/seg000.ts"]
)
def test_a_stored_playlist_cannot_point_ffmpeg_elsewhere(area, http_server, uri):
    folder = area / "uploads"
    folder.mkdir()
    (http_server.root / "seg000.ts").write_bytes(b"\x47" * 188)
    (folder / "evil.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n"
        + uri.format(url=http_server.url)
        + "\n#EXT-X-ENDLIST\n"
    )
    ctx = make_ctx(
        "vodcapture",
        {
            "content_id": "e",
            "output_folder": "o",
            "clips": [{"source": "uploads/evil.m3u8", "start": 0, "end": 1}],
        },
        area,
    )
    with pytest.raises(PermanentError, match=r"only relative paths|may not contain"):
        steps.fetch_clips(ctx)
    assert http_server.requests == []
