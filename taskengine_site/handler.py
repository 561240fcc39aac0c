"""The web process's WSGI handler: Django's, with a shorter middleware chain for ``POST /job``.

Every request runs the whole ``MIDDLEWARE`` list, and three of them do nothing for an API request:
WhiteNoise looks for a static file, the authentication and messages middleware attach lazy objects
nothing reads, on the engine's most called endpoint (bench/README.md, issue 16). Requests to
``LEAN_PATHS`` go through a second Django handler built from the same list without those three; the
others stay, also those that can change an API answer (the session middleware deletes a stale
session cookie, CSRF replaces a malformed token cookie, security headers, the host check, and any
added later). tests/foundation/test_handler.py compares the answers of both chains.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

# The routes answered through the short chain: each answers JSON to API clients, is no static file,
# and never reads Django's request.user or its messages.
LEAN_PATHS = frozenset({"/job"})
# The middleware the short chain leaves out (everything else in MIDDLEWARE stays, in its order).
SKIPPED = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    }
)


def lean_middleware() -> list[str]:
    return [name for name in settings.MIDDLEWARE if name not in SKIPPED]


class Handler(WSGIHandler):
    """Django's WSGI handler; requests to ``LEAN_PATHS`` go through the short chain."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Django builds a handler's chain from settings.MIDDLEWARE once, when it is made: the second
        # handler is made with the short list in place, at start, before any request.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = lean_middleware()
        try:
            self.lean = WSGIHandler()
        finally:
            settings.MIDDLEWARE = full

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") in LEAN_PATHS:
            return self.lean(environ, start_response)
        return super().__call__(environ, start_response)
