"""POST /settings (reference: task-engine-api.md, SETTINGS ENDPOINTS) and GET /settings.

Both are for operator clients: settings steer the whole engine, and free-form settings may hold values
no single client should read.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from settings_app.api.selectors import settings_overview
from settings_app.services import setting_set
from taskengine_site.api import ApiView, IsOperator, StrictCharField, StrictKeysMixin, TimestampField

_VALUE = {"oneOf": [{"type": "integer"}, {"type": "string"}]}


class SettingChangeSerializer(StrictKeysMixin):
    """POST /settings: one setting at a time."""

    name = StrictCharField(max_length=100, help_text="A documented setting name, or a new free-form one.")
    setting = serializers.JSONField(
        help_text="The value. Documented settings take an integer (or a string holding one) within their "
        "bounds; free-form settings a string, number or boolean."
    )

    def validate_setting(self, value: Any) -> Any:
        if value is None:
            raise serializers.ValidationError("This field may not be null.")
        return value


class SettingItemSerializer(serializers.Serializer):
    value = serializers.JSONField(
        help_text="Current value: an integer for documented settings, else a string."
    )
    default = serializers.JSONField(
        allow_null=True, help_text="The default, or null for a free-form setting."
    )
    documented = serializers.BooleanField(help_text="False for a free-form setting.")
    description = serializers.CharField(allow_blank=True)
    minimum = serializers.IntegerField(allow_null=True)
    maximum = serializers.IntegerField(allow_null=True)
    updated_at = TimestampField(allow_null=True, help_text="null while a documented setting has its default.")


SettingsListSerializer = inline_serializer(
    "Settings",
    fields={
        "result": serializers.CharField(help_text='"ok"'),
        "settings": serializers.DictField(child=SettingItemSerializer(), help_text="Every setting, by name."),
    },
)

SettingChangedSerializer = inline_serializer(
    "SettingChanged",
    fields={
        "result": serializers.CharField(help_text='"ok"'),
        "message": serializers.CharField(help_text="<name> setting created|updated"),
    },
)


class SettingsView(ApiView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="settings_list",
        summary="Every setting with its value and default (operator clients only)",
        responses={200: SettingsListSerializer},
        tags=["settings"],
    )
    def get(self, request: Request) -> Response:
        items = settings_overview()
        rendered = {name: SettingItemSerializer(item).data for name, item in items.items()}
        return Response({"result": "ok", "settings": rendered})

    @extend_schema(
        operation_id="settings_set",
        summary="Create or update one setting (operator clients only)",
        request=SettingChangeSerializer,
        responses={200: SettingChangedSerializer},
        tags=["settings"],
    )
    def post(self, request: Request) -> Response:
        data = SettingChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row, created = setting_set(name=data.validated_data["name"], value=data.validated_data["setting"])
        verb = "created" if created else "updated"
        return Response({"result": "ok", "message": f"{row.name} setting {verb}"})
