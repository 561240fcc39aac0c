"""The common workflow definitions shipped with the engine (DESIGN.md §4).

Each is an ordered list of steps; a client's own definition of the same name overrides it. Apps add
their own workflows here at start-up (``jobs.workflows.registry.register_workflows``): the media app
adds the storage and VOD workflows (``media/definitions.py``).
"""

from __future__ import annotations

from typing import Any

COMMON_DEFINITIONS: dict[str, list[dict[str, Any]]] = {
    # Used by tests and benchmarks.
    "noop": [{"step": "noop"}],
    "noop5": [{"step": "noop"} for _ in range(5)],
    "sleep": [{"step": "sleep"}],
    "sleep3": [{"step": "sleep"} for _ in range(3)],
    "fail": [{"step": "fail"}],
    "http_request": [{"step": "http_request"}],
}
