"""What the engine announces to whoever watches it, without knowing who does (the monitoring room)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per worker message, after it ends, with ``processed`` (step attempts finished) and
# ``failed`` (how many of them failed). Receivers must never raise.
steps_finished = Signal()

# A task's ``start``, ``complete`` or ``fail`` (``task_id``, ``event``, ``message``) and a job's end
# (``job_id``), sent inside the transaction that records them, only for jobs that may name callback URLs
# (``jobs.engine.notify``). The callbacks app records its deliveries in that same transaction.
task_event = Signal()
job_finished = Signal()
