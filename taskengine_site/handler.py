"""The web process's WSGI handler: Django's, with a shorter middleware chain for ``POST /job``.

Every request runs the whole ``MIDDLEWARE`` list, and three of them do nothing for an API request:
WhiteNoise looks for a static file, the authentication and messages middleware attach lazy objects
nothing reads, on the engine's most called endpoint (bench/README.md, issue 16). Requests to
``LEAN_PATHS`` go through a second Django handler built from the same list without those three; the
others stay, also those that can change an API answer (the session middleware deletes a stale
session cookie, CSRF replaces a malformed token cookie, security headers, the host check, and any
added later). A request to ``LEAN_PATHS`` that carries no cookie goes through a third handler
without the session and CSRF middleware as well: on the way in they read only cookies, and on the
way out they act only on a session or CSRF token that the request read or that something set during
it, which nothing answering those routes does. tests/foundation/test_handler.py compares the answers
of the three chains.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest
from django.urls import ResolverMatch, get_resolver

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


# Left out as well for a request to LEAN_PATHS without a Cookie header (module docstring).
COOKIE_ONLY = frozenset(
    {
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    }
)


def lean_middleware() -> list[str]:
    return [name for name in settings.MIDDLEWARE if name not in SKIPPED]


def cookieless_middleware() -> list[str]:
    return [name for name in lean_middleware() if name not in COOKIE_ONLY]


class Handler(WSGIHandler):
    """Django's WSGI handler; requests to ``LEAN_PATHS`` go through a short chain (shorter still
    without cookies)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean = _handler_with(lean_middleware())
        self.cookieless = _handler_with(cookieless_middleware())

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") in LEAN_PATHS:
            if "HTTP_COOKIE" in environ:
                return self.lean(environ, start_response)
            return self.cookieless(environ, start_response)
        return super().__call__(environ, start_response)


class _ShortChainHandler(WSGIHandler):
    """Django's WSGI handler for ``LEAN_PATHS``, which keeps the route each of those paths resolves to
    (the URL resolver tries the site's patterns in turn on every request) for the resolver in use: a
    changed URLconf, or a request's own, resolves as Django does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.matches: dict[tuple[Any, str], ResolverMatch] = {}

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        if hasattr(request, "urlconf"):
            return super().resolve_request(request)
        key = (get_resolver(), request.path_info)
        match = self.matches.get(key)
        if match is None:
            match = self.matches[key] = super().resolve_request(request)
        request.resolver_match = match
        return match


def _handler_with(middleware: list[str]) -> _ShortChainHandler:
    # Django builds a handler's chain from settings.MIDDLEWARE once, when it is made: the other
    # handlers are made with their lists in place, at start, before any request.
    full = settings.MIDDLEWARE
    settings.MIDDLEWARE = middleware
    try:
        return _ShortChainHandler()
    finally:
        settings.MIDDLEWARE = full
