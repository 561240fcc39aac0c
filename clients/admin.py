from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from clients import crypto
from clients.models import ApiKey, Client
from clients.services import api_key_issue, api_key_revoke, client_create, webhook_secret_validate
from taskengine_site.errors import DomainError


class ApiKeyInline(admin.TabularInline[ApiKey, Client]):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "last_four", "label", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ClientForm(forms.ModelForm[Client]):
    # Write-only: the page never shows a stored secret (it is encrypted at rest and only the callback
    # sender reads it); an empty field keeps the current one.
    webhook_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Standard Webhooks secret (whsec_…) used to sign callbacks. Leave empty to keep the "
        "current one.",
    )
    clear_webhook_secret = forms.BooleanField(
        required=False, help_text="Remove the webhook secret: callbacks are then sent unsigned."
    )

    class Meta:
        model = Client
        fields = ("name", "is_operator", "is_active", "webhook_secret")

    def clean_webhook_secret(self) -> str:
        try:
            return webhook_secret_validate(self.cleaned_data.get("webhook_secret") or "")
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("clear_webhook_secret"):
            data["webhook_secret"] = ""
        elif not data.get("webhook_secret") and self.instance.pk:
            current = self.instance.webhook_secret
            if current == crypto.UNREADABLE:
                self.add_error(
                    "webhook_secret",
                    "The stored secret cannot be decrypted with the configured keys: set a new one or "
                    "clear it.",
                )
            else:
                data["webhook_secret"] = current
        return data


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin[Client]):
    form = ClientForm
    list_display = ("name", "is_operator", "is_active", "created_at")
    list_filter = ("is_operator", "is_active")
    search_fields = ("name",)
    inlines = [ApiKeyInline]
    actions = ["issue_api_key"]

    def save_model(self, request: HttpRequest, obj: Client, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        client, key = client_create(
            name=obj.name, is_operator=obj.is_operator, webhook_secret=obj.webhook_secret
        )
        obj.pk = client.pk
        obj.created_at = client.created_at
        messages.warning(request, f"API key for {client.name} (shown only this once): {key}")

    @admin.action(description="Issue a new API key (shown once)")
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        for client in queryset:
            _, key = api_key_issue(client=client, label="admin")
            messages.warning(request, f"New API key for {client.name} (shown only this once): {key}")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("client", "prefix", "last_four", "label", "created_at", "last_used_at", "revoked_at")
    list_filter = ("client",)
    readonly_fields = (
        "client",
        "prefix",
        "key_hash",
        "last_four",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued from the client page, where the key can be shown once

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(api_key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")
