"""The media workflows' common definitions (issue 8), to be merged into ``COMMON_DEFINITIONS``.

Every one ends with ``publish_outputs``, whose result carries the job callback's ``message``, ``files``
and ``metadata.duration``.
"""

from __future__ import annotations

from typing import Any

MEDIA_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    "vodstream": [
        {"step": "fetch_sources"},
        {"step": "prepare_encryption"},
        {"step": "transcode_hls"},
        {"step": "write_master"},
        {"step": "create_thumbnail"},
        {"step": "create_mp4"},
        {"step": "publish_outputs"},
    ],
    "vodcapture": [
        {"step": "fetch_clips"},
        {"step": "capture_clips"},
        {"step": "capture_clips_accurate", "queue": "windows_capture"},
        {"step": "publish_outputs"},
    ],
    "createmp4": [
        {"step": "fetch_sources", "parameters": {"generate_mp4": True}},
        {"step": "create_mp4", "parameters": {"generate_mp4": True}},
        {"step": "publish_outputs"},
    ],
    "capture_frame": [
        {"step": "fetch_sources"},
        {"step": "capture_frame"},
        {"step": "publish_outputs"},
    ],
    "generate_gif": [
        {"step": "fetch_sources"},
        {"step": "generate_gif"},
        {"step": "publish_outputs"},
    ],
    "build_thumbnails": [
        {"step": "fetch_sources"},
        {"step": "build_thumbnails"},
        {"step": "publish_outputs"},
    ],
}
