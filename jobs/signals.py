"""What the job services announce to the apps that react to it, without importing them."""

from __future__ import annotations

from django.dispatch import Signal

# ``job_id``: the job now waits for its ``run_at`` or its semaphore (it was submitted, resumed or changed
# so): the scheduler arms a promotion due before its next sweep, or a semaphore check. Sent inside the
# caller's transaction; receivers publish after its commit.
job_waiting = Signal()
