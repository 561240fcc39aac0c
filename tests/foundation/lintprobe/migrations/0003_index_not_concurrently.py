from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("lintprobe", "0002_not_null_without_default")]
    operations = [migrations.AddIndex("thing", models.Index(fields=["size"], name="thing_size"))]
