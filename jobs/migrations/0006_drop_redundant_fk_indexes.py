"""The FK indexes on jobs_job.client_id and jobs_task.job_id duplicate the leading column of (client, id)
and of the unique (job, position): dropped, one index fewer to write on every insert and state change.

Only the indexes go. Django's own AlterField would also drop and re-add both foreign key constraints,
re-validating them over every row while holding a lock that blocks writes.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0002_webhook_secret_encrypted"),
        ("jobs", "0005_dispatch_order_index_descending"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="client",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="jobs",
                        to="clients.client",
                    ),
                ),
                migrations.AlterField(
                    model_name="task",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="tasks",
                        to="jobs.job",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS jobs_job_client_id_8aaadee3",
                    'CREATE INDEX IF NOT EXISTS jobs_job_client_id_8aaadee3 ON jobs_job ("client_id")',
                ),
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS jobs_task_job_id_6fefee23",
                    'CREATE INDEX IF NOT EXISTS jobs_task_job_id_6fefee23 ON jobs_task ("job_id")',
                ),
            ],
        ),
    ]
