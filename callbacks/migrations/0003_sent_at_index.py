# /metrics reads the deliveries sent in the last hour: built concurrently, the table may be big.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('callbacks', '0002_claimed_at'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='callbackdelivery',
            index=models.Index(condition=models.Q(('sent_at__isnull', False)), fields=['sent_at'], name='callback_sent_at'),
        ),
    ]
