"""OPTIONS (and HEAD) on every route of the API, as DRF answers them.

The routes are read from the URL resolver: every view DRF serves (its ``as_view`` leaves ``cls`` on the
callback, as ``jobs.api.submit.job_submit_view`` carries ``JobViewSet``'s), so a route added to the
URLconf is tested here without being listed. Its expected ``Allow`` header is not derived from the view
(that would test DRF against itself): a new route fails until its line is added to ``ALLOW``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

# The methods each route serves, in the order DRF lists them.
ALLOW = {
    "": "GET, HEAD, OPTIONS",
    "health": "GET, HEAD, OPTIONS",
    "dashboard": "GET, HEAD, OPTIONS",
    "job": "POST, OPTIONS",
    "jobs": "GET, POST, HEAD, OPTIONS",
    "jobs/<int:pk>": "GET, PUT, PATCH, HEAD, OPTIONS",
    "jobs/<int:pk>/rerun": "POST, OPTIONS",
    "jobs/<int:pk>/keys": "GET, HEAD, OPTIONS",
    "logs/<int:pk>": "GET, HEAD, OPTIONS",
    "schedules": "GET, HEAD, OPTIONS",
    "scheduler": "PUT, OPTIONS",
    "settings": "GET, POST, HEAD, OPTIONS",
    "openapi.json": "GET, HEAD, OPTIONS",
    "docs": "GET, HEAD, OPTIONS",
}
# What each route renders, when not JSON alone.
RENDERS = {"openapi.json": ["application/vnd.oai.openapi+json", "application/json"], "docs": ["text/html"]}
# Routes that answer without a key (GET / by the reference; the schema and its page); of them, GET /
# does not even look at a key given.
OPEN = {"", "openapi.json", "docs"}
NO_AUTHENTICATION = {""}
OPERATOR_ONLY = {"scheduler", "settings"}
# DRF's SimpleMetadata body. Its "actions" (a form of the POST/PUT body built from a view's
# serializer_class) is left out: the bodies are described by the OpenAPI schema.
METADATA_KEYS = ["name", "description", "renders", "parses"]
UNAUTHORISED = {"error": "Unauthorised request."}


def drf_routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """The route of every URL pattern, included ones too, whose view is a DRF view."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from drf_routes(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            cls = getattr(entry.callback, "cls", None)
            if isinstance(cls, type) and issubclass(cls, APIView):
                yield prefix + str(entry.pattern)


ROUTES = sorted(drf_routes())


def test_the_routes_found_are_the_api() -> None:
    # The resolver walk finds the API and nothing else (the admin, the queue page and /metrics are
    # Django views of their own).
    assert set(ROUTES) == set(ALLOW)


def url(route: str, job_id: int) -> str:
    return "/" + re.sub(r"<(?:\w+:)?\w+>", str(job_id), route)


def expected_allow(route: str) -> str:
    if route not in ALLOW:
        pytest.fail(f"new API route {route!r}: add the methods it serves to ALLOW")
    return ALLOW[route]


@pytest.fixture
def own_job(operator_api: Any, job_row: Any) -> Any:
    return job_row(operator_api.te_client)


@pytest.mark.parametrize("route", ROUTES)
def test_options_describes_the_route(route: str, operator_api: Any, own_job: Any) -> None:
    response = operator_api.options(url(route, own_job.pk))

    assert response.status_code == 200, response.content
    assert response["Allow"] == expected_allow(route)
    body = response.json()
    assert list(body) == METADATA_KEYS
    assert isinstance(body["name"], str) and body["name"]
    assert isinstance(body["description"], str)
    assert body["renders"] == RENDERS.get(route, ["application/json"])
    assert body["parses"] == ["application/json"]


@pytest.mark.parametrize("who", ["anonymous", "wrong key", "non-operator"])
@pytest.mark.parametrize("route", ROUTES)
def test_options_authenticates_as_the_route_does(
    route: str, who: str, make_client: Any, own_job: Any
) -> None:
    # DRF authenticates and checks permissions before any handler, OPTIONS included: a route that
    # needs a key (or an operator's) needs it to be described.
    from rest_framework.test import APIClient

    client, key = make_client()
    caller = APIClient()
    if who == "wrong key":
        caller.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key[:-1] + ("1" if key[-1] == "0" else "0"))
    elif who == "non-operator":
        caller.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)

    response = caller.options(url(route, own_job.pk))

    assert response["Allow"] == expected_allow(route)
    refused = {
        "anonymous": route not in OPEN,
        "wrong key": route not in NO_AUTHENTICATION,
        "non-operator": route in OPERATOR_ONLY,
    }[who]
    if not refused:
        assert response.status_code == 200
        assert list(response.json()) == METADATA_KEYS
    elif who == "non-operator":
        assert response.status_code == 403
        assert response.json() == {"error": "Forbidden: this needs an operator client."}
    else:
        assert response.status_code == 401
        assert response.json() == UNAUTHORISED


@pytest.mark.parametrize("route", [r for r in ROUTES if ALLOW.get(r, "").startswith("GET")])
def test_head_answers_as_get(route: str, operator_api: Any, own_job: Any) -> None:
    path = url(route, own_job.pk)

    got, head = operator_api.get(path), operator_api.head(path)

    assert head.status_code == got.status_code != 500
    assert head["Content-Type"] == got["Content-Type"]
    assert head["Allow"] == expected_allow(route)
    assert head.content == b""
