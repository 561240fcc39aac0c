"""Reads of the callback deliveries, for the job API (``GET /jobs/<id>?callbacks=1``) and the admin."""

from __future__ import annotations

from django.db.models import QuerySet

from callbacks.models import CallbackDelivery
from jobs.models import Job


def job_deliveries(job: Job) -> QuerySet[CallbackDelivery]:
    """A job's deliveries in the order of their events (the job's visibility is checked by the caller)."""
    return CallbackDelivery.objects.filter(job_id=job.pk).defer("body").order_by("id")
