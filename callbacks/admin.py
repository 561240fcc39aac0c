"""Callback deliveries in the admin, read-only: operators see what was sent, retried or given up."""

from __future__ import annotations

from django.contrib import admin

from callbacks.models import CallbackDelivery
from taskengine_site.readonly import ReadOnlyAdminMixin


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[CallbackDelivery]):
    list_display = ("id", "job", "kind", "event", "state", "attempts", "last_status", "created_at", "sent_at")
    list_filter = ("state", "kind", "event")
    search_fields = ("=job__id", "webhook_id")
    readonly_fields = [field.name for field in CallbackDelivery._meta.fields]
