"""The common workflow definitions shipped with the engine (DESIGN.md §4).

Each is an ordered list of steps; a client's own definition of the same name overrides it.
"""

from __future__ import annotations

from typing import Any

from jobs.workflows.media_definitions import MEDIA_DEFINITIONS

COMMON_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    # Used by tests and benchmarks.
    "noop": [{"step": "noop"}],
    "noop5": [{"step": "noop"} for _ in range(5)],
    "sleep": [{"step": "sleep"}],
    "sleep3": [{"step": "sleep"} for _ in range(3)],
    "fail": [{"step": "fail"}],
    "http_request": [{"step": "http_request"}],
    # Documented workflows (reference: workflows-and-callbacks.md).
    "drmswitch": [{"step": "get_filenames"}, {"step": "prepare_switch"}, {"step": "rename_manifests"}],
    "voddelete": [{"step": "delete_folder"}],
    "asset_delete": [{"step": "delete_files"}],
}
# vodstream, vodcapture, createmp4, capture_frame, generate_gif, build_thumbnails (jobs/media).
COMMON_DEFINITIONS.update(MEDIA_DEFINITIONS)
