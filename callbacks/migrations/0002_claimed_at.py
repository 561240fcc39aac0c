# An attempt's claim fences its writes; its lease is renewed while it is in flight.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('callbacks', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='callbackdelivery',
            name='claimed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
