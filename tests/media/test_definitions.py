"""The media workflows' common definitions are valid engine definitions made of registered steps."""

from __future__ import annotations

import pytest

from jobs.workflows.registry import get_step, validate_definition
from media.definitions import MEDIA_DEFINITIONS


@pytest.mark.parametrize("workflow", sorted(MEDIA_DEFINITIONS))
def test_definition_is_valid_and_ends_with_publish_outputs(workflow):
    steps = validate_definition(MEDIA_DEFINITIONS[workflow])
    assert steps[-1]["step"] == "publish_outputs"
    for item in steps:
        assert get_step(item["step"]).description, item["step"]


def test_frame_accurate_capture_runs_on_windows_capture():
    queues = {item["step"]: item["queue"] for item in validate_definition(MEDIA_DEFINITIONS["vodcapture"])}
    assert queues == {
        "fetch_clips": "work",
        "capture_clips": "work",
        "capture_clips_accurate": "windows_capture",
        "publish_outputs": "work",
    }
    assert get_step("capture_clips_accurate").queue == "windows_capture"


def test_documented_workflows_are_all_defined():
    assert set(MEDIA_DEFINITIONS) == {
        "vodstream",
        "vodcapture",
        "createmp4",
        "capture_frame",
        "generate_gif",
        "build_thumbnails",
    }
