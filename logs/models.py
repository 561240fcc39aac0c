"""A job's log, as the original keeps it (reference: workflows-and-callbacks.md)."""

from __future__ import annotations

from django.db import models

from logs import display


class Severity(models.IntegerChoices):
    DEBUG = 0, "DEBUG"
    INFO = 1, "INFO"
    WARN = 2, "WARN"
    ERROR = 3, "ERROR"
    FATAL = 4, "FATAL"
    UNKNOWN = 5, "UNKNOWN"


class LogEntry(models.Model):
    # No index of its own: ``log_job_id`` (job, id) serves every lookup by job, and each index is one
    # more write per entry (about ten entries per job).
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="log_entries", db_index=False)
    task_id = models.BigIntegerField(default=0, help_text="0 for job-level entries")
    severity = models.PositiveSmallIntegerField(choices=Severity.choices, default=Severity.INFO)
    progname = models.CharField(max_length=20)
    message = models.TextField()
    visible = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "id"], name="log_job_id")]
        verbose_name_plural = "log entries"

    def __str__(self) -> str:
        return f"[{self.progname}] {self.message[:60]}"

    @property
    def folded(self) -> display.Folded | None:
        """The message as the consoles show it when it is a job's creation entry (``logs.display``)."""
        return display.fold(self.message)
