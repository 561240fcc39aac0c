"""The query string of GET /jobs (reference: task-engine-api.md) as a django-filter FilterSet.

Every parameter is validated by a form field, so a malformed value answers 400 naming the parameter
(through DjangoFilterBackend's ValidationError) before any query runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import django_filters
from django import forms
from django.db.models import (
    BigIntegerField,
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    Func,
    Max,
    Min,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models import F as Field
from django.db.models.functions import Coalesce
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field

from clients.models import Client
from jobs.models import Job, JobSearchText
from jobs.states import JobState

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_JOB_IDS = 1000
BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)
# A search term shorter than a trigram cannot use the trigram index.
TRIGRAM = 3
# search: how many of the newest (oldest with asc) jobs are tried in id order before asking the trigram
# index, and the share of matches among them above which the id walk is left to find the rest.
# (500: a rare term costs that much walking, ≈ 1-2 ms; one match among them counts as frequent.)
SEARCH_PROBE_IDS = 500
SEARCH_FREQUENT = 0.002
# order_by=client merges the heads of each client's jobs up to this many clients (one index walk each).
MERGE_MAX_CLIENTS = 50

F = TypeVar("F", bound=django_filters.Filter)

# Public name → model field. Only these may be ordered by, so order_by cannot reach into relations.
ORDER_FIELDS: dict[str, str] = {
    "id": "id",
    "client": "client__name",
    "workflow": "workflow",
    "priority": "priority",
    "position": "position",
    "top_of_queue": "top_of_queue",
    "queue_state": "queue_state",
    "failed": "failed",
    "persist": "persist",
    "run_at": "run_at",
    "created_at": "created_at",
    "updated_at": "updated_at",
}


# Messages keep the offending value in ``params``: django-filter formats ``message % params``, so user
# text inside the message itself ("%s") would break the formatting.


class CreatedSkew(Func):  # type: ignore[misc,unused-ignore]
    """S of jobs/migrations/0004_listing_bounds.py: how far created_at can run against id (NULL: unknown)."""

    function = "jobs_job_created_skew"
    template = "%(function)s()"
    output_field = DurationField()


def created_after(moment: datetime) -> Subquery:
    """The id of a job created after ``moment`` + S: every job created at or before ``moment`` has a
    smaller id (jobs/migrations/0004_listing_bounds.py). Empty when S is unknown."""
    after = ExpressionWrapper(Value(moment) + CreatedSkew(), output_field=DateTimeField())
    ids = Job.objects.filter(created_at__gt=after).order_by("created_at").values("id")[:1]
    return Subquery(ids, output_field=BigIntegerField())


def created_before(moment: datetime) -> Subquery:
    """The id of a job created before ``moment`` - S: every job created at or after ``moment`` has a
    larger id. Empty when S is unknown."""
    before = ExpressionWrapper(Value(moment) - CreatedSkew(), output_field=DateTimeField())
    ids = Job.objects.filter(created_at__lt=before).order_by("-created_at").values("id")[:1]
    return Subquery(ids, output_field=BigIntegerField())


def several_statements(params: Any) -> bool:
    """Whether the listing these query parameters ask for may take more than one statement (a search
    ordered by id, order_by=client), so the view gives them one snapshot (jobs.selectors.listing_snapshot).
    A guess on the raw parameters is enough: a single statement is one snapshot anyway."""
    return (params.get("order_by") or "id") == "client" or searched_by_heads(params)


def searched_by_heads(params: Any) -> bool:
    """Whether a listing with these parameters (raw or cleaned) searches through ``search_heads``: ordered
    by id, with a term of a trigram or more; otherwise ``JobFilter.filter_search`` searches."""
    return (params.get("order_by") or "id") == "id" and len(params.get("search") or "") >= TRIGRAM


def search_matches(term: str) -> QuerySet[JobSearchText, Any]:
    """The ids of the jobs whose parameters' JSON text holds ``term`` (case-insensitive), so a term matches
    any value (content_id, folder, …) at any depth: read from JobSearchText, whose trigram index a job's
    changes of state never write again (jobs/migrations/0010)."""
    return JobSearchText.objects.filter(text__icontains=term).values("job_id")


def search_heads(queryset: QuerySet[Job], *, term: str, ascending: bool, limit: int) -> QuerySet[Job]:
    """``queryset`` (not yet searched) narrowed to the ids of its first ``limit`` jobs that match ``term``,
    found the cheap way, for a search ordered by id.

    Postgres cannot estimate how many jobs a ``%term%`` matches, so it walks the primary key from the
    newest job, which reads most of the table for a rare term (state=2&search=c4242). Here the newest
    SEARCH_PROBE_IDS ids are tried first, their search text read by its primary key over that range; if
    they hold the whole page, done. Otherwise a rare term's remaining matches come from the trigram index
    (ordered by ``id + 0`` so the planner cannot pick the primary key walk), while a frequent one is left
    to the walk. Same rows, same order: the ids of the near part are all beyond those of the far part.
    """
    searched = queryset.filter(id__in=search_matches(term))
    edge = Job.objects.aggregate(edge=Min("id") if ascending else Max("id"))["edge"]
    if edge is None:
        return searched
    bound = edge + SEARCH_PROBE_IDS if ascending else edge - SEARCH_PROBE_IDS
    if ascending:
        near, far = Q(id__lte=bound), Q(id__gt=bound)
        near_matches = search_matches(term).filter(job_id__lte=bound)
    else:
        near, far = Q(id__gte=bound), Q(id__lt=bound)
        near_matches = search_matches(term).filter(job_id__gte=bound)
    order = "id" if ascending else "-id"
    first = list(
        queryset.filter(near, id__in=near_matches).order_by(order).values_list("id", flat=True)[:limit]
    )
    if len(first) == limit:
        return queryset.filter(id__in=first)
    if len(first) >= SEARCH_FREQUENT * SEARCH_PROBE_IDS:
        return searched
    rest = (
        searched.filter(far)
        .alias(unindexed_id=Field("id") + 0)
        .order_by("unindexed_id" if ascending else "-unindexed_id")
        .values_list("id", flat=True)[: limit - len(first)]
    )
    return queryset.filter(id__in=[*first, *rest])


def per_client_heads(queryset: QuerySet[Job], *, ascending: bool, limit: int) -> QuerySet[Job]:
    """Narrow ``queryset`` to the first ``limit`` ids of each client, when there are few clients.

    Ordered by client name then id, the first ``limit`` jobs are among those (a client's jobs come in id
    order), so the ordered, limited result is the same; Postgres no longer sorts every job by a name
    from another table, it walks the (client, id) index ``limit`` rows per client.
    """
    clients = list(Client.objects.order_by("id").values_list("id", flat=True)[: MERGE_MAX_CLIENTS + 1])
    if len(clients) > MERGE_MAX_CLIENTS:
        return queryset
    if not clients:
        return queryset.none()
    order = "id" if ascending else "-id"
    heads = [queryset.filter(client_id=client).order_by(order).values("id")[:limit] for client in clients]
    return queryset.filter(id__in=heads[0].union(*heads[1:], all=True))


class FlagField(forms.Field):
    """``1``/``0`` (also ``true``/``false``), as the reference's boolean parameters are written."""

    TRUE = frozenset({"1", "true"})
    FALSE = frozenset({"0", "false"})

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise forms.ValidationError("must be 1 or 0, got %(value)r", params={"value": value})


class TimestampFormField(forms.Field):
    """An ISO 8601 date or date-time; naive values are UTC.

    ``end_of_day`` makes a bare date mean the end of that day, so ``to=2020-09-24`` includes the 24th.
    """

    def __init__(self, *args: Any, end_of_day: bool = False, **kwargs: Any) -> None:
        self.end_of_day = end_of_day
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> datetime | None:
        if value in (None, ""):
            return None
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
            if timezone.is_naive(parsed):
                parsed = parsed.replace(tzinfo=UTC)
            if self.end_of_day and len(text) == 10:
                parsed = parsed + timedelta(days=1) - timedelta(microseconds=1)
            # In UTC: Postgres refuses offsets beyond ±15:59, and far-off dates with an offset can
            # leave datetime's range, which is caught here as a malformed value.
            parsed = parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            raise forms.ValidationError(
                "must be an ISO 8601 date or date-time such as 2020-09-24T11:55:33.755Z, got %(value)r",
                params={"value": text},
            ) from None
        return parsed


class IdListField(forms.CharField):
    def to_python(self, value: Any) -> list[int] | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        ids: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part.isdigit() or not part.isascii():
                raise forms.ValidationError(
                    "must be comma-separated job ids, got %(value)r", params={"value": part}
                )
            number = int(part)
            if not 1 <= number <= BIGINT_MAX:
                raise forms.ValidationError("job id %(value)s is out of range", params={"value": part})
            ids.append(number)
        if len(ids) > MAX_JOB_IDS:
            raise forms.ValidationError("at most %(count)s ids", params={"count": MAX_JOB_IDS})
        return ids


# django-filter ships no type information: its classes are Any to mypy, hence the ignores below.
class FlagFilter(django_filters.Filter):  # type: ignore[misc,unused-ignore]
    field_class = FlagField


class TimestampFilter(django_filters.Filter):  # type: ignore[misc,unused-ignore]
    field_class = TimestampFormField


class IdListFilter(django_filters.Filter):  # type: ignore[misc,unused-ignore]
    field_class = IdListField


class LimitFilter(django_filters.NumberFilter):  # type: ignore[misc,unused-ignore]
    field_class = forms.IntegerField


class StateFilter(django_filters.TypedChoiceFilter):  # type: ignore[misc,unused-ignore]
    pass


FLAG = {"type": "integer", "enum": [0, 1]}
TIMESTAMP = {"type": "string", "format": "date-time"}


def documented(schema: dict[str, Any], description: str, filter_: F) -> F:
    """Attach the exact OpenAPI schema of one filter (django-filter's own types are too loose)."""
    return extend_schema_field({**schema, "description": description})(filter_)  # type: ignore[no-any-return,unused-ignore]


def _keep(queryset: QuerySet[Job], name: str, value: Any) -> QuerySet[Job]:
    return queryset


class JobFilter(django_filters.FilterSet):  # type: ignore[misc,unused-ignore]
    limit = documented(
        {"type": "integer", "minimum": 1},
        f"Maximum number of jobs to return (default {DEFAULT_LIMIT}; more than {MAX_LIMIT} is capped).",
        LimitFilter(method=_keep, min_value=1),
    )
    order_by = documented(
        {"type": "string", "enum": list(ORDER_FIELDS)},
        "Job property to order by (default id).",
        django_filters.ChoiceFilter(method=_keep, choices=[(name, name) for name in ORDER_FIELDS]),
    )
    asc = documented(
        FLAG, "1 for ascending order, 0 (default) for descending (newest first).", FlagFilter(method=_keep)
    )
    state = documented(
        {"type": "integer", "enum": [state.value for state in JobState]},
        "Job state id: " + ", ".join(f"{state.value} {state.label}" for state in JobState) + ".",
        StateFilter(
            field_name="queue_state",
            choices=[(str(state.value), state.label) for state in JobState],
            coerce=int,
        ),
    )
    from_ = documented(
        TIMESTAMP,
        "Jobs created at or after this time (ISO 8601; UTC when no offset is given).",
        TimestampFilter(field_name="created_at", lookup_expr="gte"),
    )
    to = documented(
        TIMESTAMP,
        "Jobs created at or before this time (a bare date includes that whole day).",
        TimestampFilter(field_name="created_at", lookup_expr="lte", end_of_day=True),
    )
    failed = documented(
        FLAG,
        "1: failed jobs only (they are completed, so combined with a state only state 2 returns any); "
        "0: jobs that did not fail.",
        FlagFilter(method="filter_failed"),
    )
    search = documented(
        {"type": "string", "maxLength": 200},
        "A term inside the job's parameters, e.g. a content id (case-insensitive).",
        django_filters.CharFilter(method="filter_search", max_length=200),
    )
    job_ids = documented(
        {"type": "string", "pattern": r"^[0-9]{1,18}(,[0-9]{1,18})*$"},
        f"Comma-separated job ids (at most {MAX_JOB_IDS}).",
        IdListFilter(field_name="id", lookup_expr="in"),
    )
    client = documented(
        {"type": "string", "maxLength": 100},
        "Client name.",
        django_filters.CharFilter(method="filter_client", max_length=100),
    )
    persist = documented(FLAG, "1: jobs set to persist; 0: the others.", FlagFilter(field_name="persist"))

    class Meta:
        model = Job
        fields: list[str] = []

    def filter_failed(self, queryset: QuerySet[Job], name: str, value: bool) -> QuerySet[Job]:
        if value:
            return queryset.filter(failed=True, queue_state=JobState.COMPLETED)
        return queryset.filter(failed=False)

    def filter_client(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        # The client's id as a subquery (one row: names are unique), not a join condition on its name:
        # Postgres then walks the (client, id) indexes in id order instead of the whole primary key.
        client_id = Client.objects.filter(name=value).values("id")[:1]
        return queryset.filter(client_id=Subquery(client_id))

    def filter_search(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        if searched_by_heads(self.form.cleaned_data):
            return queryset  # filter_queryset searches, through search_heads
        return queryset.filter(id__in=search_matches(value))

    def filter_queryset(self, queryset: QuerySet[Job]) -> QuerySet[Job]:
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        field = ORDER_FIELDS[data.get("order_by") or "id"]
        ascending = bool(data.get("asc"))
        prefix = "" if ascending else "-"
        ordering = [f"{prefix}{field}"] if field == "id" else [f"{prefix}{field}", f"{prefix}id"]
        limit = min(data.get("limit") or DEFAULT_LIMIT, MAX_LIMIT)
        if field == "id":
            queryset = self.bound_ids(queryset, ascending=ascending)
            if searched_by_heads(data):
                queryset = search_heads(queryset, term=data["search"], ascending=ascending, limit=limit)
        elif field == "client__name":
            queryset = per_client_heads(queryset, ascending=ascending, limit=limit)
        return queryset.order_by(*ordering)[:limit]

    def bound_ids(self, queryset: QuerySet[Job], *, ascending: bool) -> QuerySet[Job]:
        """Add the id bound a created_at window implies on the side the id order starts from.

        Postgres cannot know that ids follow created_at, so for ``ORDER BY id DESC LIMIT n`` and an old
        ``to`` it walks the primary key down from the newest job through everything created since; with
        the bound it starts at the window. The created_at filters stay, so the rows are the same. Only
        the starting side is bounded: a bound on the far side made the planner prefer that walk over a
        better index (failed=1&client=…&from=…).
        """
        data = self.form.cleaned_data
        # An unknown S (or no job beyond the window) leaves the whole bigint range.
        if not ascending and data.get("to") is not None:
            return queryset.filter(id__lte=Coalesce(created_after(data["to"]), Value(BIGINT_MAX)))
        if ascending and data.get("from") is not None:
            return queryset.filter(id__gte=Coalesce(created_before(data["from"]), Value(BIGINT_MIN)))
        return queryset


# ``from`` is a Python keyword, so the filter is declared as ``from_`` and published under its real name.
JobFilter.base_filters = {
    ("from" if name == "from_" else name): value for name, value in JobFilter.base_filters.items()
}
