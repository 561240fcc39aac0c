# Deliveries now belong to the callbacks app; the table stays where it is (callbacks.0001 adopts it).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="CallbackDelivery")],
            database_operations=[],
        ),
    ]
