"""The media app's common workflow definitions, registered by ``media.apps`` at start-up.

Every VOD workflow ends with ``publish_outputs``, whose result carries the job callback's ``message``,
``files`` and ``metadata.duration``. The storage workflows act on files already in the client's area
(reference: workflows-and-callbacks.md).
"""

from __future__ import annotations

from typing import Any

STORAGE_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    "drmswitch": [{"step": "get_filenames"}, {"step": "prepare_switch"}, {"step": "rename_manifests"}],
    "voddelete": [{"step": "delete_folder"}],
    "asset_delete": [{"step": "delete_files"}],
}

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
