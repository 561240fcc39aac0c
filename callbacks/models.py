"""Callback deliveries: each callback's body, computed once when its event happened (DESIGN.md §6).

A row per (event, endpoint URL). Retries send the same body with the same ``webhook-id``; deliveries to
one URL for one job go out in the order their events happened, so a receiver sees a task's ``start``
before its ``complete`` and the job callback last.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class CallbackDelivery(models.Model):
    class State(models.IntegerChoices):
        PENDING = 0, "pending"
        SENT = 1, "sent"
        FAILED = 2, "failed"  # gave up: retries exhausted, or the URL is not allowed

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="callback_deliveries")
    task_id = models.BigIntegerField(default=0, help_text="The task the event is about (log lines use it).")
    kind = models.CharField(max_length=10, help_text="task or job")
    event = models.CharField(max_length=20, help_text="start, complete, fail; or completed, failed")
    url = models.TextField()
    body = models.TextField(help_text="The exact JSON sent, identical on every attempt.")
    webhook_id = models.CharField(max_length=64)
    state = models.PositiveSmallIntegerField(choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while an attempt is in flight, so a duplicate message does not send the callback twice; renewed
    # by the sender every few seconds (callbacks.leases): run out, it means the sender is gone.
    lease_until = models.DateTimeField(null=True, blank=True)
    # When the attempt in flight was claimed: it fences that attempt's writes, so an attempt whose lease
    # ran out (and was sent again) cannot record over the one that replaced it.
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_status = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table keeps the name it had when deliveries belonged to the scheduling app: renaming it
        # would only cost a lock and break the previous release's workers during a rolling deploy.
        db_table = "scheduling_callbackdelivery"
        ordering = ["id"]
        verbose_name_plural = "callback deliveries"
        indexes = [
            models.Index(fields=["job", "url", "id"], name="callback_job_url_id"),
            models.Index(fields=["next_attempt_at", "id"], name="callback_pending", condition=Q(state=0)),
            # /metrics: the delivery latency of the deliveries sent in the last hour.
            models.Index(fields=["sent_at"], name="callback_sent_at", condition=Q(sent_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.event} callback of job {self.job_id} ({self.get_state_display()})"
