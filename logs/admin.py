"""Job logs in the admin, read-only: ``logs.services.job_log`` is their only writer.

The job page shows the tail of its log inline; this list is the full log of one job
(``?job__id__exact=<id>``), in the order it was written.
"""

from __future__ import annotations

from django.contrib import admin

from logs.display import fold
from logs.models import LogEntry
from taskengine_site.readonly import ReadOnlyAdminMixin


@admin.register(LogEntry)
class LogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[LogEntry]):
    list_display = ("id", "job", "task_id", "severity", "progname", "short_message", "visible", "created_at")
    list_filter = ("severity", "progname", "visible")
    search_fields = ("=job__id",)
    search_help_text = "A job id."
    ordering = ("id",)
    list_per_page = 200
    list_select_related = ("job",)
    # The log table is the largest in the database: no full count, no date hierarchy.
    show_full_result_count = False
    readonly_fields = [field.name for field in LogEntry._meta.fields]

    @admin.display(description="message")
    def short_message(self, obj: LogEntry) -> str:
        folded = fold(obj.message)  # a creation entry: its body, not the request's headers
        text = folded.summary if folded else obj.message
        return text if len(text) <= 200 else text[:199] + "…"
