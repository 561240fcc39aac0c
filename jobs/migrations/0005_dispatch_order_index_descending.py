"""job_dispatch_order in DISPATCH_ORDER exactly: top_of_queue descending, the rest ascending.

Read backwards, the old index gave top_of_queue descending but everything else descending too, so the
dispatcher's candidates and the dashboard's queued list sorted every queued job (5,000 at the benchmark's
scale) to take the first ones.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0004_listing_bounds")]

    operations = [
        migrations.RemoveIndex(model_name="job", name="job_dispatch_order"),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("queue_state", 0)),
                fields=["-top_of_queue", "priority", "position", "created_at", "id"],
                name="job_dispatch_order",
            ),
        ),
    ]
