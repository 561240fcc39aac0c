"""Engine settings in the admin, with the API's validation and effects (POST /settings).

Saving goes through ``settings_app.services.setting_set``, so a new ``max_jobs`` dispatches and a new
``schedule_interval`` reaches beat exactly as through the API. The list shows every documented setting
with its current value, default and bounds, also those never set (they have no row yet).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from settings_app.api.selectors import settings_overview
from settings_app.models import Setting
from settings_app.registry import SPECS
from settings_app.services import setting_set, setting_validate
from taskengine_site.errors import DomainError


class SettingForm(forms.ModelForm[Setting]):
    class Meta:
        model = Setting
        fields = ("name", "value")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        name = data.get("name") or (self.instance.name if self.instance.pk else None)
        if name is not None and "value" in data:
            try:
                # The service's own check, so a value the API refuses is refused here with its message.
                data["value"] = setting_validate(name, data["value"])
            except DomainError as exc:
                self.add_error("value", exc.message)
        return data


@admin.register(Setting)
class SettingAdmin(admin.ModelAdmin[Setting]):
    form = SettingForm
    list_display = ("name", "value", "default", "updated_at")
    search_fields = ("name",)
    change_list_template = "admin/settings_app/setting/change_list.html"

    @admin.display(description="default")
    def default(self, obj: Setting) -> str:
        spec = SPECS.get(obj.name)
        return "—" if spec is None else str(spec.default)

    def get_readonly_fields(self, request: HttpRequest, obj: Setting | None = None) -> tuple[str, ...]:
        return ("name",) if obj is not None else ()  # a rename would be a delete plus an add

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting bypasses the service and its effects; setting the default value is the way back.
        return False

    def save_model(self, request: HttpRequest, obj: Setting, form: Any, change: bool) -> None:
        row, _created = setting_set(name=obj.name, value=obj.value)
        obj.pk, obj.created_at, obj.updated_at = row.pk, row.created_at, row.updated_at

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = dict(super().get_changeform_initial_data(request))
        spec = SPECS.get(str(initial.get("name", "")))
        if spec is not None and "value" not in initial:
            initial["value"] = str(spec.default)
        return initial

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        overview = settings_overview()
        documented = [
            {"name": name, **item, "row_id": _row_id(name)}
            for name, item in overview.items()
            if item["documented"]
        ]
        return super().changelist_view(request, {**(extra_context or {}), "documented": documented})


def _row_id(name: str) -> int | None:
    return Setting.objects.filter(name=name).values_list("pk", flat=True).first()
