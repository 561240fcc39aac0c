"""The ``http_request`` step: one HTTP call through the outbound URL guard (taskengine_site.outbound).

Parameters: ``url`` (required), ``method`` (GET), ``expected_status`` (an integer or a list; by default
any 2xx), ``body`` (an object or list is sent as JSON, a string as is), ``headers`` (an object),
``timeout`` (seconds, at most 60). A URL the guard refuses, or an unexpected 4xx, fails the job at once;
a network error, a timeout, a 5xx or a 429 is retried.
"""

from __future__ import annotations

from typing import Any

from jobs.workflows.registry import PermanentError, StepContext, TransientError, step
from taskengine_site import outbound

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_BODY_KEPT = 4096
MAX_TIMEOUT = 60.0


def _expected(value: Any) -> set[int] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    try:
        codes = {int(item) for item in items}
    except (TypeError, ValueError):
        raise PermanentError(f"expected_status: integers expected, got {value!r}") from None
    if not codes or not all(100 <= code <= 599 for code in codes):
        raise PermanentError(f"expected_status: HTTP status codes expected, got {value!r}")
    return codes


@step("http_request")
def http_request(ctx: StepContext) -> dict[str, Any]:
    """Call ``url`` with ``method`` and check the answer's status against ``expected_status``."""
    url = ctx.param("url")
    if not isinstance(url, str) or not url:
        raise PermanentError("url: required")
    method = str(ctx.param("method") or "GET").upper()
    if method not in METHODS:
        raise PermanentError(f"method: one of {', '.join(METHODS)}")
    expected = _expected(ctx.param("expected_status"))
    headers = ctx.param("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise PermanentError("headers: an object of strings expected")
    try:
        timeout = min(float(ctx.param("timeout") or 10.0), MAX_TIMEOUT)
    except (TypeError, ValueError):
        raise PermanentError("timeout: seconds expected") from None
    body = ctx.param("body")
    json_body = body if isinstance(body, dict | list) else None
    data = body.encode() if isinstance(body, str) else None

    shown = outbound.redact(url)
    ctx.heartbeat()
    try:
        response = outbound.request(
            method,
            url,
            json=json_body,
            data=data,
            headers=headers,
            timeout=(min(timeout, 5.0), timeout),
            max_bytes=1_048_576,
        )
    except outbound.UrlRefused as exc:
        raise PermanentError(exc.message) from exc
    except outbound.OutboundError as exc:
        raise TransientError(f"{method} {shown} failed: {exc}") from exc
    status = response.status_code
    ok = status in expected if expected is not None else response.ok
    ctx.log(f"{method} {shown} answered HTTP {status}")
    if not ok:
        wanted = ", ".join(str(code) for code in sorted(expected)) if expected else "2xx"
        message = f"{method} {shown} answered HTTP {status}, expected {wanted}"
        if status >= 500 or status in (408, 429):
            raise TransientError(message)
        raise PermanentError(message)
    return {
        "status": status,
        "body": response.text[:MAX_BODY_KEPT],
        "truncated": response.truncated or len(response.content) > MAX_BODY_KEPT,
    }
