"""The job counts of GET /health: folding the delta rows the triggers of jobs/migrations/0003 append.

Every job insert, delete and state change appends a row to ``jobs_job_state_count``, and
``jobs.selectors.job_counts`` sums them all, so the reading stays fast only while they are few. The
periodic paths fold them: the reconciler on each run (every 15 s), the clean-up after each batch it
deletes. Measured: summing costs about 0.1 ms per thousand rows; at the engine's peak rates (about 500
submissions and 100 steps a second) a reconcile interval adds some thousands.
"""

from __future__ import annotations

from django.db import connection

_COMPACT_COUNTS = """
WITH gone AS (DELETE FROM jobs_job_state_count RETURNING queue_state, failed, n)
INSERT INTO jobs_job_state_count
SELECT queue_state, failed, sum(n) FROM gone GROUP BY queue_state, failed HAVING sum(n) <> 0
"""


# Only the largest note of each kind is ever read (jobs/migrations/0004): the others can go. One that a
# concurrent insert appends meanwhile is kept, being larger than what it is compared with here or absent
# from this statement's snapshot.
_COMPACT_CREATED_SKEW = """
DELETE FROM jobs_job_created_skew AS s
WHERE s.kind <> 'unbounded'
  AND s.seconds < (SELECT max(m.seconds) FROM jobs_job_created_skew AS m WHERE m.kind = s.kind)
"""


def created_skew_compact() -> None:
    """Keep only the largest listing-bound note of each kind (the one the bounds are made of)."""
    with connection.cursor() as cursor:
        cursor.execute(_COMPACT_CREATED_SKEW)


def job_counts_compact() -> None:
    """Fold the delta rows of ``jobs_job_state_count`` into one row per (state, failed).

    One statement: a concurrent fold waits for this one's row locks and then folds only what is left,
    and readers see either every delta or their sum, never half of them.
    """
    with connection.cursor() as cursor:
        cursor.execute(_COMPACT_COUNTS)
