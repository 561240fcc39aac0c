"""Content keys of encrypted media output, one per job, the key encrypted at rest (clients.crypto)."""

import clients.fields
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('jobs', '0006_drop_redundant_fk_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='ContentKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('aes', 'HLS AES-128'), ('cenc', 'CENC clear key')], max_length=8)),
                ('key', clients.fields.EncryptedTextField()),
                ('iv', models.CharField(blank=True, default='', max_length=32)),
                ('key_id', models.CharField(blank=True, default='', max_length=32)),
                ('key_uri', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('job', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='content_keys', to='jobs.job')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('job',), name='media_contentkey_one_per_job')],
            },
        ),
    ]
