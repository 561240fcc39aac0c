"""GET /schedules and PUT /scheduler (reference: task-engine-api.md, SCHEDULER ENDPOINTS)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from scheduling.services import schedule_set_active, schedules_list
from taskengine_site.api import ApiView, IsOperator, StrictCharField, StrictKeysMixin

ScheduleSerializer = inline_serializer(
    "Schedule",
    fields={
        "class": serializers.CharField(help_text="The job class the schedule runs, e.g. QueueJobs."),
        "every": serializers.ListField(
            child=serializers.JSONField(),
            help_text='[seconds, {"first_in": seconds}]',
        ),
        "queue": serializers.CharField(),
        "description": serializers.CharField(),
    },
)

SchedulesSerializer = inline_serializer(
    "Schedules",
    fields={
        "result": serializers.CharField(help_text='"ok"'),
        "schedules": serializers.DictField(
            child=ScheduleSerializer, help_text="The enabled schedules, by name."
        ),
    },
)

SchedulerChangedSerializer = inline_serializer(
    "SchedulerChanged",
    fields={
        "result": serializers.CharField(help_text='"ok"'),
        "schedules": serializers.ListField(child=serializers.CharField(), help_text="The enabled schedules."),
    },
)


class StrictBooleanField(serializers.BooleanField):
    """Only JSON true or false: ``"yes"`` or ``1`` for ``active`` is more likely a mistake than intent."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError(f"must be true or false, got {data!r}")
        return data


class SchedulerChangeSerializer(StrictKeysMixin):
    """PUT /scheduler."""

    schedule = StrictCharField(max_length=200, help_text="Name of the schedule, as GET /schedules lists.")
    active = StrictBooleanField(help_text="true to enable the schedule, false to disable it.")


class SchedulesView(ApiView):
    @extend_schema(operation_id="schedules", responses={200: SchedulesSerializer}, tags=["scheduler"])
    def get(self, request: Request) -> Response:
        return Response(schedules_list())


class SchedulerView(ApiView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="scheduler_update",
        summary="Enable or disable a schedule (operator clients only)",
        request=SchedulerChangeSerializer,
        responses={200: SchedulerChangedSerializer},
        tags=["scheduler"],
    )
    def put(self, request: Request) -> Response:
        data = SchedulerChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        enabled = schedule_set_active(
            name=data.validated_data["schedule"], active=data.validated_data["active"]
        )
        return Response({"result": "ok", "schedules": enabled})
