"""GET /logs/<job id> entries in the original's field order (task-engine-api.md, LOG ENDPOINTS)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from logs.models import LogEntry, Severity
from taskengine_site.api import TimestampField


@extend_schema_field({"type": "string", "enum": [severity.label for severity in Severity]})
class SeverityDescriptionField(serializers.Field):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["read_only"] = True
        kwargs["source"] = "severity"
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        return Severity(value).label


class LogEntrySerializer(serializers.ModelSerializer):
    severity = serializers.IntegerField(
        read_only=True, help_text="0 DEBUG, 1 INFO, 2 WARN, 3 ERROR, 4 FATAL, 5 UNKNOWN."
    )
    severity_description = SeverityDescriptionField()
    created_at = TimestampField()
    updated_at = TimestampField()
    task_id = serializers.IntegerField(read_only=True, help_text="0 for job-level entries.")

    class Meta:
        model = LogEntry
        fields = [
            "id",
            "job_id",
            "severity",
            "severity_description",
            "progname",
            "message",
            "created_at",
            "updated_at",
            "task_id",
            "visible",
        ]
        read_only_fields = fields
