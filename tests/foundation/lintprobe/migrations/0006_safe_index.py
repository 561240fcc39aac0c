from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lintprobe", "0005_safe_column")]
    operations = [AddIndexConcurrently("thing", models.Index(fields=["colour"], name="thing_colour"))]
