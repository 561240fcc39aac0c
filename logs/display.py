"""How the consoles show a log message: a job's creation entry folded (the admin's job page and log list).

The creation entry keeps what the original keeps (reference: GET /logs): the request's path, address,
headers and body as one JSON text. People want its body; the headers are a click away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

CREATED = "job_created"


@dataclass(frozen=True)
class Folded:
    summary: str  # one line: who created the job, and with what body
    full: str  # the whole stored message, pretty-printed


def fold(message: str) -> Folded | None:
    """``message`` folded when it is a job's creation entry; None for any other message."""
    if CREATED not in message:
        return None
    try:
        created = json.loads(message)
    except ValueError:
        return None
    if not isinstance(created, dict) or created.get("payload") != CREATED:
        return None
    headers = created.get("headers")
    count = len(headers) if isinstance(headers, dict) else 0
    origin = f" from {created['remote_addr']}" if created.get("remote_addr") else ""
    body = json.dumps(created.get("parameters"), ensure_ascii=False)
    summary = f"job created by {created.get('path', 'POST /job')}{origin}: {body}"
    if count:
        summary += f" ({count} request headers)"
    return Folded(summary=summary, full=json.dumps(created, indent=2, ensure_ascii=False))
