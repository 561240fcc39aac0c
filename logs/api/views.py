"""GET /logs/<job id>: a job's log, visible entries only unless show_all=1."""

from __future__ import annotations

from django import forms
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from jobs import selectors
from jobs.filters import FlagField
from logs.api.serializers import LogEntrySerializer
from taskengine_site.api import ApiView, requester

SHOW_ALL = OpenApiParameter(
    "show_all",
    {"type": "integer", "enum": [0, 1]},
    OpenApiParameter.QUERY,
    required=False,
    description="1 also returns the entries marked not visible.",
)


class JobLogView(ApiView):
    @extend_schema(
        operation_id="job_logs",
        summary="A job's log entries, ordered by id",
        parameters=[SHOW_ALL],
        responses={200: LogEntrySerializer(many=True)},
        tags=["logs"],
    )
    def get(self, request: Request, pk: int) -> Response:
        try:
            show_all = FlagField(required=False).clean(request.query_params.get("show_all"))
        except forms.ValidationError as exc:
            raise serializers.ValidationError({"show_all": exc.messages}) from None
        entries = selectors.job_log_entries(
            requester=requester(request), job_id=int(pk), show_all=bool(show_all)
        )
        return Response(LogEntrySerializer(entries, many=True).data)
