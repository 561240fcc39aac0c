"""Callback deliveries in the admin, read-only: operators see what was sent, retried or given up."""

from __future__ import annotations

from django.contrib import admin

from callbacks.models import CallbackDelivery
from taskengine_site import outbound
from taskengine_site.readonly import ReadOnlyAdminMixin


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[CallbackDelivery]):
    list_display = (
        "id",
        "job",
        "kind",
        "event",
        "endpoint",
        "state",
        "attempts",
        "last_status",
        "next_attempt_at",
        "created_at",
        "sent_at",
    )
    list_filter = ("state", "kind", "event")
    search_fields = ("=job__id", "webhook_id")
    # The URL is shown without its query string (a client may put a token there), never in full.
    readonly_fields = tuple(
        "endpoint" if field.name == "url" else field.name
        for field in CallbackDelivery._meta.fields
        if field.name != "id"
    )
    fields = readonly_fields

    @admin.display(description="URL")
    def endpoint(self, row: CallbackDelivery) -> str:
        return outbound.redact(row.url)
