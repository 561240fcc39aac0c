from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("lintprobe", "0003_index_not_concurrently")]
    operations = [migrations.RemoveField("thing", "old")]
