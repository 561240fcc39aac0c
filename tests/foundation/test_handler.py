"""The web process's handler (taskengine_site.handler): POST /job through a shorter middleware chain
(shorter still without cookies) answers exactly what the whole chain answers; every other path goes
through the whole chain."""

from __future__ import annotations

import inspect
import io
import json
import re
import sys
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler

from taskengine_site.handler import COOKIE_ONLY, SKIPPED, Handler, cookieless_middleware, lean_middleware

pytestmark = pytest.mark.django_db(transaction=True)


def _environ(method: str, path: str, body: bytes = b"", **headers: Any) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }  # fmt: skip
    if body:
        environ.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
    environ.update(headers)
    return environ


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=headers)

    response = app(environ, start_response)
    try:
        content = b"".join(response)
    finally:
        response.close()
    # A job's id differs from one answer to the next (and with it the length).
    content = re.sub(rb'"id":\d+', b'"id":0', content)
    headers = [(k, "n" if k == "Content-Length" else _unique(v)) for k, v in seen["headers"]]
    return seen["status"], sorted(headers), content


def _unique(value: str) -> str:
    """A header without what differs between two answers: a fresh CSRF token, a cookie's expiry."""
    value = re.sub(r"csrftoken=\w+", "csrftoken=<new>", value)
    return re.sub(r"expires=[^;]+", "expires=<date>", value)


def _requests(key: str, name: str) -> list[dict[str, Any]]:
    good = json.dumps({"job": {"workflow": "noop"}, "parameters": {"content_id": "c"}}).encode()
    creds = {"HTTP_CLIENT": name, "HTTP_API_KEY": key}
    return [
        _environ("POST", "/job", good, **creds),
        _environ("POST", "/job", good, **creds, HTTP_COOKIE="sessionid=abc; csrftoken=" + "x" * 32),
        _environ("POST", "/job", good, **creds, HTTP_COOKIE="csrftoken=malformed!"),
        _environ("POST", "/job", good, **creds, HTTP_COOKIE="messages=abc:def; sessionid="),
        _environ("POST", "/job", good, **creds, HTTP_ACCEPT="text/html"),
        _environ(
            "POST", "/job", json.dumps({"job": {"workflow": "noop", "persist": "yes"}}).encode(), **creds
        ),
        _environ("POST", "/job", b"{", **creds),
        _environ("POST", "/job", good),
        _environ("POST", "/job", good, HTTP_CLIENT=name, HTTP_API_KEY=key + "x"),
        _environ("POST", "/job", good, **{**creds, "HTTP_HOST": "evil.example.com"}),
        _environ("GET", "/job", b"", **creds),
        _environ("OPTIONS", "/job", b"", **creds),
        _environ("POST", "/job/", good, **creds),
        _environ("POST", "/job", good, **creds, HTTP_IDEMPOTENCY_KEY="same-key"),
        _environ("POST", "/job", good, **creds, HTTP_IDEMPOTENCY_KEY="same-key"),
        _environ("POST", "/job", good, **creds, HTTP_X_CSRFTOKEN="x" * 32, HTTP_REFERER="http://evil/"),
        _environ("POST", "/job", good, **creds, HTTP_USER_AGENT="curl/8.0", HTTP_ORIGIN="http://evil"),
        _environ("POST", "/job", good, **creds, HTTP_COOKIE=""),
        _environ("POST", "/job", good, **creds, **{"wsgi.url_scheme": "https"}),
        _environ("POST", "/job", json.dumps({"job": {"workflow": "nope"}}).encode(), **creds),
        _environ("PUT", "/job", good, **creds),
    ]


def test_post_job_through_the_short_chain_answers_what_the_whole_chain_answers(make_client: Any) -> None:
    client, key = make_client()
    short, whole = Handler(), WSGIHandler()
    for environ in _requests(key, client.name):
        again = {**environ, "wsgi.input": io.BytesIO(environ["wsgi.input"].getvalue())}
        assert _call(short, environ) == _call(whole, again), environ["PATH_INFO"]


def test_only_post_job_takes_the_short_chains_and_only_without_cookies_the_shortest(
    make_client: Any,
) -> None:
    handler = Handler()
    taken: list[tuple[str, str, bool]] = []

    def counting(name: str, chain: Any) -> Any:
        def call(environ: dict[str, Any], start_response: Any) -> Any:
            taken.append((name, environ["PATH_INFO"], "HTTP_COOKIE" in environ))
            return chain(environ, start_response)

        return call

    handler.lean = counting("lean", handler.lean)
    handler.cookieless = counting("cookieless", handler.cookieless)
    client, key = make_client()
    requests = _requests(key, client.name)
    for environ in [*requests, _environ("GET", "/"), _environ("GET", "/jobs")]:
        _call(handler, environ)
    assert {path for _, path, _ in taken} == {"/job"}
    assert len(taken) == len(requests) - 1  # all but /job/
    assert {(name, cookie) for name, _, cookie in taken} == {("lean", True), ("cookieless", False)}
    assert sum(cookie for _, _, cookie in taken) == 4


def test_the_cookieless_chain_leaves_out_only_the_session_and_csrf_middleware_as_well(
    settings: Any,
) -> None:
    handler = Handler()
    names = [type(m).__module__ + "." + type(m).__name__ for m in _chain(handler.cookieless)]
    assert names == [name for name in lean_middleware() if name not in COOKIE_ONLY]
    assert names == cookieless_middleware()
    assert set(settings.MIDDLEWARE) >= COOKIE_ONLY and not COOKIE_ONLY & SKIPPED
    assert [type(m).__module__ + "." + type(m).__name__ for m in _chain(handler)] == settings.MIDDLEWARE


def test_the_short_chain_leaves_out_only_the_three(settings: Any) -> None:
    handler = Handler()
    names = [type(m).__module__ + "." + type(m).__name__ for m in _chain(handler.lean)]
    assert names == [name for name in settings.MIDDLEWARE if name not in SKIPPED]
    assert len(names) == len(settings.MIDDLEWARE) - len(SKIPPED)
    # The whole chain is the settings' list, untouched by building the short one.
    assert [type(m).__module__ + "." + type(m).__name__ for m in _chain(handler)] == settings.MIDDLEWARE
    # A middleware added later stays in both.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "example.Added"]
    assert lean_middleware()[-1] == "example.Added"


def _chain(handler: Any) -> list[Any]:
    """The middleware instances of a handler's chain, outermost first (Django wraps each instance in a
    function that converts exceptions; the innermost link is the handler's own _get_response)."""
    found: list[Any] = []
    link = handler._middleware_chain
    while True:
        inner = inspect.unwrap(link)
        if inspect.ismethod(inner) or not hasattr(inner, "get_response"):
            return found
        found.append(inner)
        link = inner.get_response


def test_the_short_chains_keep_the_route_of_job_for_the_urlconf_in_use(
    make_client: Any, settings: Any
) -> None:
    from django.urls import get_resolver

    client, key = make_client()
    handler = Handler()
    good = json.dumps({"job": {"workflow": "noop"}, "parameters": {"content_id": "c"}}).encode()
    creds = {"HTTP_CLIENT": client.name, "HTTP_API_KEY": key}
    for _ in range(2):
        assert _call(handler, _environ("POST", "/job", good, **creds))[0] == "200 OK"
    (kept_key, kept), *others = handler.cookieless.matches.items()
    assert others == [] and kept_key == (get_resolver(), "/job")
    fresh = get_resolver().resolve("/job")
    assert (kept.func, kept.args, kept.kwargs, kept.url_name, kept.route) == (
        fresh.func, fresh.args, fresh.kwargs, fresh.url_name, fresh.route
    )  # fmt: skip
    # Another URLconf (here one without /job) is resolved as Django resolves it.
    settings.ROOT_URLCONF = "tests.foundation.test_handler"
    assert _call(handler, _environ("POST", "/job", good, **creds))[0].startswith("404")


urlpatterns: list[Any] = []
