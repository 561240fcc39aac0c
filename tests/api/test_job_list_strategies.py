"""GET /jobs finds a search's page in two steps and merges each client's head for order_by=client
(jobs.filters.search_heads, per_client_heads): the jobs and their order must be those of the plain query."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from jobs import filters
from jobs.models import Job
from jobs.states import JobState
from tests import factories


@pytest.fixture
def spread(operator_api: Any, make_client: Any) -> list[Job]:
    """80 jobs of four clients (names not in id order), with rare terms among the oldest jobs."""
    generator = random.Random(7)
    clients = [make_client(name)[0] for name in ("delta", "alpha", "charlie", "bravo")]
    jobs = []
    for index in range(80):
        words = ["common"] + (["rare-term"] if index in (2, 9, 41) else []) + (["half"] if index % 2 else [])
        jobs.append(
            factories.job(
                generator.choice(clients),
                run_at="2030-01-01T00:00:00Z",
                queue_state=generator.choice([JobState.QUEUED, JobState.COMPLETED, JobState.PAUSED]),
                parameters={"content_id": f"c{index}", "words": words},
            )
        )
    return jobs


def plain(search: str | None, state: int | None, order: list[str], limit: int) -> list[int]:
    queryset: QuerySet[Job] = Job.objects.all()
    if search is not None:
        queryset = queryset.annotate(text=Cast("parameters", TextField())).filter(text__icontains=search)
    if state is not None:
        queryset = queryset.filter(queue_state=state)
    return list(queryset.order_by(*order).values_list("id", flat=True)[:limit])


def listed(api: Any, query: str) -> list[int]:
    response = api.get(f"/jobs?{query}")
    assert response.status_code == 200, response.content
    return [job["id"] for job in response.json()]


@pytest.mark.parametrize("probe", [3, 10, 2000])
def test_search_pages_are_the_plain_querys(
    operator_api: Any, spread: list[Job], monkeypatch: Any, probe: int
) -> None:
    monkeypatch.setattr(filters, "SEARCH_PROBE_IDS", probe)
    for term, state, asc, limit in itertools.product(
        ("rare-term", "RARE", "common", "half", "c7", "nothing-like-it", "c"),
        (None, JobState.COMPLETED),
        (False, True),
        (1, 2, 5, 100),
    ):
        query = f"search={term}&asc={int(asc)}&limit={limit}" + ("" if state is None else f"&state={state}")
        assert listed(operator_api, query) == plain(term, state, ["id" if asc else "-id"], limit), query


def test_a_frequent_term_is_left_to_the_id_walk_and_a_rare_one_to_the_trigram_index(
    operator_api: Any, spread: list[Job], monkeypatch: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(filters, "SEARCH_PROBE_IDS", 10)
    monkeypatch.setattr(filters, "SEARCH_FREQUENT", 0.2)
    for term, forced in (("rare-term", True), ("half", False)):
        with CaptureQueriesContext(connection) as captured:
            ids = listed(operator_api, f"search={term}&limit=50")
        assert ids == plain(term, None, ["-id"], 50)
        assert any('"id" + 0' in query["sql"] for query in captured.captured_queries) is forced, term


@pytest.mark.parametrize("merge_max", [2, 50])
def test_order_by_client_is_the_plain_querys(
    operator_api: Any, spread: list[Job], monkeypatch: Any, merge_max: int
) -> None:
    monkeypatch.setattr(filters, "MERGE_MAX_CLIENTS", merge_max)  # 2: more clients than that, no merge
    for asc, limit, state, search in itertools.product(
        (False, True), (1, 7, 30, 1000), (None, JobState.QUEUED), (None, "half", "rare-term")
    ):
        query = f"order_by=client&asc={int(asc)}&limit={limit}"
        query += "" if state is None else f"&state={state}"
        query += "" if search is None else f"&search={search}"
        order = ["client__name", "id"] if asc else ["-client__name", "-id"]
        assert listed(operator_api, query) == plain(search, state, order, limit), query


def test_order_by_client_for_a_client_sees_only_its_own(api: Any, spread: list[Job], job_row: Any) -> None:
    own = [job_row(api.te_client) for _ in range(3)]
    assert listed(api, "order_by=client&limit=100") == [job.pk for job in reversed(own)]
    assert listed(api, "order_by=client&asc=1&limit=2") == [job.pk for job in own[:2]]


def test_client_filter_by_name(operator_api: Any, spread: list[Job]) -> None:
    for name in ("alpha", "delta", "nobody"):
        expected = list(
            Job.objects.filter(client__name=name).order_by("-id").values_list("id", flat=True)[:100]
        )
        assert listed(operator_api, f"client={name}&limit=100") == expected
    assert listed(operator_api, "client=nobody") == []


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_statements_share_one_read_only_snapshot(make_client: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    operator, key = make_client(operator=True)
    api = APIClient()
    api.credentials(HTTP_CLIENT=operator.name, HTTP_API_KEY=key)
    made = [factories.job(operator, run_at="2030-01-01T00:00:00Z") for _ in range(3)]
    with CaptureQueriesContext(connection) as captured:
        assert listed(api, "search=noop-not-there&order_by=id") == []
        assert listed(api, "order_by=client&limit=2") == [made[2].pk, made[1].pk]
        assert listed(api, "state=0&search=no") == []  # one statement: no transaction
        assert listed(api, "order_by=priority&search=noop") == []
    statements = [query["sql"] for query in captured.captured_queries]
    assert statements.count("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") == 2
    assert not connection.in_atomic_block
