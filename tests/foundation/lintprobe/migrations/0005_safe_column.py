from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("lintprobe", "0004_drop_column")]
    operations = [migrations.AddField("thing", "colour", models.CharField(max_length=20, db_default="red"))]
