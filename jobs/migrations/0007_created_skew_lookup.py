"""The listing bounds' notes (0004) are appended whenever a record is beaten, so they grow, and every job
insert looked up the largest of its kind twice by reading them all: at a thousand notes that was most of
a submission's database time. An index makes the lookup a descent; the reconciler folds the notes
(jobs.engine.counts.created_skew_compact) so they stay few."""

from django.db import migrations

SQL = "CREATE INDEX IF NOT EXISTS jobs_job_created_skew_kind ON jobs_job_created_skew (kind, seconds)"
REVERSE = "DROP INDEX IF EXISTS jobs_job_created_skew_kind"


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0006_drop_redundant_fk_indexes"),
    ]

    # The table holds a handful of rows: building the index takes no time and locks nothing anyone waits on.
    operations = [migrations.RunSQL(SQL, REVERSE)]
