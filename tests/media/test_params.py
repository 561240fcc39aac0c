"""The media workflows' parameters: defaults, templates and refusal at submission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from media.params import latest_future_clip_end, resolve_parameters, validate_parameters
from taskengine_site.errors import DomainError


def refused(workflow: str, parameters: dict) -> str:
    with pytest.raises(DomainError) as error:
        validate_parameters(workflow, parameters)
    return error.value.message


def test_documented_defaults_and_templates():
    values = resolve_parameters({"content_id": "ep1", "source_folder": "in/ep1"})
    assert values["output_folder"] == "in/ep1"
    assert values["mp4_filename"] == "ep1.mp4"
    assert values["drm"] == "clear" and values["source_storage"] == "local"
    chained = resolve_parameters(
        {"content_id": "ep1", "source_folder": "in/{content_id}", "output_folder": "vod/{source_folder}/hls"}
    )
    assert chained["output_folder"] == "vod/in/ep1/hls"
    assert resolve_parameters({"content_id": "x", "source_storage": "S3"})["source_storage"] == "s3"


def test_templates_that_cannot_resolve_are_refused():
    assert refused("createmp4", {"content_id": "a", "source_folder": "{nope}"}) == (
        "parameters.source_folder: {nope} names a parameter that is not set"
    )
    assert "refers back to itself" in refused(
        "createmp4", {"content_id": "{source_folder}", "source_folder": "{content_id}"}
    )


@pytest.mark.parametrize(
    ("workflow", "parameters", "message"),
    [
        ("vodstream", {"content_id": "a"}, "parameters.source_folder: is required"),
        (
            "vodstream",
            {"content_id": "a", "source_folder": "s", "drm": "playready"},
            "'playready' is not supported",
        ),
        ("vodstream", {"content_id": "a", "source_folder": "s", "drm": ["aes", "cenc"]}, "choose one of"),
        (
            "vodstream",
            {"content_id": "a", "source_folder": "s", "source_storage": "azure_blob"},
            "not supported",
        ),
        ("vodstream", {"content_id": "a", "source_folder": "s", "renditions": 9}, "at most 5"),
        ("vodstream", {"content_id": "a", "source_folder": "../etc"}, "may not contain '..'"),
        ("createmp4", {"content_id": "a", "source_folder": "s", "drm": "aes"}, "makes clear output only"),
        ("capture_frame", {"content_id": "a", "source_folder": "s"}, "parameters.frame_time: is required"),
        (
            "generate_gif",
            {"content_id": "a", "source_folder": "s", "fps": "fast"},
            "parameters.fps: must be a number",
        ),
        ("generate_gif", {"content_id": "a", "source_folder": "s", "playback_speed": 10}, "at most 4"),
        ("vodcapture", {"content_id": "a", "output_folder": "o", "clips": []}, "non-empty list"),
        (
            "vodcapture",
            {"content_id": "a", "output_folder": "o", "clips": [{"source": "x.mp4", "start": 5, "end": 2}]},
            "parameters.clips[0]: end must be after start",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [{"source": "ftp://h/x", "start": 0, "end": 1}],
            },
            "must be an http(s) URL or a storage path",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [{"source": "http://10.0.0.1/live.m3u8", "start": 0, "end": 1}],
            },
            "parameters.clips[0].source: url not allowed",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [
                    {"source": "a.mp4", "start": "2030-01-01T00:00:00Z", "end": "2030-01-01T00:01:00Z"}
                ],
            },
            "date-time bounds need an HLS URL source",
        ),
    ],
)
def test_bad_input_is_refused_with_the_parameter_named(workflow, parameters, message, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    assert message in refused(workflow, parameters)


def test_drm_message_is_the_documented_one():
    assert refused("vodstream", {"content_id": "a", "source_folder": "s", "drm": ["clear", "fairplay"]}) == (
        "parameters.drm: 'fairplay' is not supported"
    )


def test_clip_bounds_accept_seconds_clock_time_and_date_times():
    values = validate_parameters(
        "vodcapture",
        {
            "content_id": "a",
            "output_folder": "o",
            "clips": [
                {"source": "in/a.mp4", "start": 1.5, "end": "00:00:03.25"},
                {
                    "source": "https://example.com/live.m3u8",
                    "start": "2030-01-01T10:00:00Z",
                    "end": "2030-01-01T10:00:30",
                },
            ],
        },
    )
    assert values["clips"][0]["end"] == "00:00:03.25"  # passed through for the steps


def test_latest_future_clip_end():
    now = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    clips = [
        {"source": "https://e.com/a.m3u8", "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z"},
        {
            "source": "https://e.com/a.m3u8",
            "start": "2030-01-01T10:00:00Z",
            "end": "2030-01-01T10:45:00+00:00",
        },
        {
            "source": "https://e.com/a.m3u8",
            "start": "2030-01-01T10:00:00Z",
            "end": "2030-01-01T11:15:00+01:00",
        },
        {"source": "in/a.mp4", "start": 0, "end": 30},
        {"source": "broken", "end": "soon"},
    ]
    assert latest_future_clip_end({"clips": clips}, now=now) == now + timedelta(minutes=45)
    assert latest_future_clip_end({"clips": clips[:1]}, now=now) is None
    assert latest_future_clip_end({"content_id": "x"}) is None
    assert latest_future_clip_end(None) is None


def test_other_workflows_are_not_checked():
    assert validate_parameters("drmswitch", {"drm": ["widevine"]}) == {"drm": ["widevine"]}
