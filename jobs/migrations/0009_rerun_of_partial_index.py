"""``jobs_job.rerun_of_id`` is indexed only where it is set.

Nearly every job is no rerun, and a B-tree indexes NULLs too: every job row and every new version of it
(each state change writes every index again) wrote an entry nobody reads, 65 bytes of WAL at the insert
and 150 at a one-step job's two state changes (``python -m bench.row_cost``, bench/README.md). The
partial index answers what the full one answered: a job's reruns (``rerun_of_id = x``) and the foreign
key's check when a job is deleted.

Built ``CONCURRENTLY`` before the old index is dropped (``CONCURRENTLY`` too), so no write waits and a
query always has one of them. Django's own AlterField would drop and re-add the foreign key constraint,
validating it over every row under a lock that blocks writes: only the index changes in the database.
"""

import django.db.models.deletion
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("clients", "0002_webhook_secret_encrypted"),
        ("jobs", "0008_created_skew_row_skips_nonpositive"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="job",
            index=models.Index(
                condition=models.Q(("rerun_of__isnull", False)), fields=["rerun_of"], name="job_rerun_of_id"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="rerun_of",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="reruns",
                        to="jobs.job",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS jobs_job_rerun_of_id_37d7a209",
                    'CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_job_rerun_of_id_37d7a209 ON jobs_job ("rerun_of_id")',
                ),
            ],
        ),
    ]
