"""createmp4, capture_frame, generate_gif and build_thumbnails through their steps."""

from __future__ import annotations

import subprocess

import av
import pytest

from jobs.workflows.registry import PermanentError
from media.ffmpeg import ffmpeg_exe
from media.steps import vod as steps
from tests.media.conftest import FPS, decode, make_ctx, put, run_workflow

SECONDS = 4


def gray(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> tuple[bytes, int, int]:
    """A frame's luma samples (optionally scaled), without the row padding; and its size."""
    frame = frame.reformat(width=width or frame.width, height=height or frame.height, format="gray")
    plane = frame.planes[0]
    data = bytes(plane)
    rows = b"".join(
        data[r * plane.line_size : r * plane.line_size + frame.width] for r in range(frame.height)
    )
    return rows, frame.width, frame.height


def difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two equal-sized luma images (0 = identical, 255 = opposite)."""
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def frame_at(path, seconds: float, width: int | None = None, height: int | None = None) -> bytes:
    """The luma of the source frame shown at ``seconds``, to compare with what a step wrote."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time >= seconds - 1e-6:
                return gray(frame, width, height)[0]
    raise AssertionError("no such frame")


def image(path) -> tuple[bytes, int, int]:
    with av.open(str(path)) as container:
        return gray(next(container.decode(video=0)))


def test_createmp4_from_an_hls_folder(area, media_cache):
    folder = area / "vod/ep"
    folder.mkdir(parents=True)
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(media_cache(SECONDS)),
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            str(folder / "ep.m3u8"),
        ],
        check=True,
    )
    results = run_workflow(
        "createmp4", {"content_id": "ep", "source_folder": "vod/ep", "output_folder": "mp4"}, area
    )
    final = results["publish_outputs"]
    assert final["message"] == "mp4/ep.mp4" and final["files"] == ["mp4/ep.mp4"]
    decoded = decode(area / "mp4/ep.mp4")
    assert decoded["video"][0]["frames"] == SECONDS * FPS and abs(decoded["audio"][0] - SECONDS) < 0.1
    assert abs(final["metadata"]["duration"] - SECONDS) < 1 / FPS


def test_createmp4_joins_several_sources_in_name_order(area, media_cache):
    put(area, media_cache(SECONDS), "parts/b.mp4")
    put(area, media_cache(SECONDS), "parts/a.mp4")
    results = run_workflow(
        "createmp4",
        {"content_id": "whole", "source_folder": "parts", "mp4_filename": "{content_id}-full.mp4"},
        area,
    )
    assert results["fetch_sources"]["sources"] == ["a.mp4", "b.mp4"]
    assert decode(area / "parts/whole-full.mp4")["video"][0]["frames"] == 2 * SECONDS * FPS
    # The MP4 written into the source folder is not taken for a source when the job runs again.
    again = run_workflow(
        "createmp4",
        {"content_id": "whole", "source_folder": "parts", "mp4_filename": "{content_id}-full.mp4"},
        area,
    )
    assert again["fetch_sources"]["sources"] == ["a.mp4", "b.mp4"]


def test_capture_frame_writes_the_frame_asked_for(area, media_cache):
    source = put(area, media_cache(SECONDS), "in/a.mp4")
    results = run_workflow(
        "capture_frame", {"content_id": "a", "source_folder": "in", "frame_time": 2.52}, area
    )
    assert results["publish_outputs"]["message"] == "in/a_frame.jpg"
    jpeg, width, height = image(area / "in/a_frame.jpg")
    assert (width, height) == (640, 360)
    # testsrc2 changes every frame: the JPEG matches the frame at 2.52 s, not its neighbours.
    errors = {t: difference(jpeg, frame_at(source, t)) for t in (2.48, 2.52, 2.56)}
    assert min(errors, key=errors.get) == 2.52 and errors[2.52] < 3


def test_capture_frame_past_the_end_fails_permanently(area, media_cache):
    put(area, media_cache(SECONDS), "in/a.mp4")
    ctx = make_ctx("capture_frame", {"content_id": "a", "source_folder": "in", "frame_time": 9}, area)
    with pytest.raises(PermanentError, match="past the end"):
        steps.capture_frame(ctx)


def test_generate_gif(area, media_cache):
    put(area, media_cache(SECONDS), "in/a.mp4")
    results = run_workflow(
        "generate_gif",
        {
            "content_id": "a",
            "source_folder": "in",
            "output_folder": "gifs",
            "start_at": 1,
            "duration": 2,
            "fps": 10,
            "width": 160,
            "playback_speed": 2,
        },
        area,
    )
    assert results["publish_outputs"]["message"] == "gifs/a.gif"
    (video,) = decode(area / "gifs/a.gif")["video"]
    # 2 s of source played twice as fast at 10 frames a second: 10 frames, 1 s long.
    assert video["frames"] == 10 and video["size"] == (160, 90)
    assert results["publish_outputs"]["metadata"]["duration"] == 1.0


def test_build_thumbnails_and_their_webvtt_index(area, media_cache):
    source = put(area, media_cache(SECONDS + 0.5), "in/a.mp4")
    results = run_workflow(
        "build_thumbnails",
        {
            "content_id": "a",
            "source_folder": "in",
            "output_folder": "thumbs",
            "preview_thumbnails_interval": 1,
            "thumbnail_width": 128,
        },
        area,
    )
    names = [f"a_thumb_{i:05d}.jpg" for i in range(1, 6)]
    final = results["publish_outputs"]
    assert final["message"] == "thumbs/a_thumbnails.vtt"
    assert sorted(final["files"]) == sorted([*(f"thumbs/{n}" for n in names), "thumbs/a_thumbnails.vtt"])
    vtt = (area / "thumbs/a_thumbnails.vtt").read_text()
    expected = ["WEBVTT", ""]
    for i, name in enumerate(names):
        expected += [f"00:00:{i:02d}.000 --> 00:00:{i + 1:02d}.000", name, ""]
    lines = vtt.split("\n")
    # The last cue ends with the media (4.5 s, as the container reports it: within a frame).
    last_end = lines[-3].rpartition(" --> ")[2]
    assert last_end.startswith("00:00:04.") and abs(float(last_end[6:]) - 4.5) <= 1 / FPS
    assert lines[:-3] == expected[:-3] and lines[-2:] == expected[-2:]
    for i, name in enumerate(names):
        thumb, width, height = image(area / "thumbs" / name)
        assert (width, height) == (128, 72)
        # Each thumbnail shows its cue's first frame, not the next second's.
        here, after = frame_at(source, i, 128, 72), frame_at(source, i + 0.4, 128, 72)
        assert difference(thumb, here) < 3 < difference(thumb, after)
