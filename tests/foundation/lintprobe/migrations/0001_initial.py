from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=50)),
                ("old", models.CharField(max_length=50, null=True)),
            ],
            options={"indexes": [models.Index(fields=["name"], name="thing_name")]},
        ),
    ]
