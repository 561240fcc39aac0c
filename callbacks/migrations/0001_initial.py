# The delivery model moves here from the scheduling app with its table as it is: state only.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('jobs', '0006_drop_redundant_fk_indexes'),
        ('scheduling', '0002_callbackdelivery_moves_to_callbacks'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='CallbackDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('task_id', models.BigIntegerField(default=0, help_text='The task the event is about (log lines use it).')),
                        ('kind', models.CharField(help_text='task or job', max_length=10)),
                        ('event', models.CharField(help_text='start, complete, fail; or completed, failed', max_length=20)),
                        ('url', models.TextField()),
                        ('body', models.TextField(help_text='The exact JSON sent, identical on every attempt.')),
                        ('webhook_id', models.CharField(max_length=64)),
                        ('state', models.PositiveSmallIntegerField(choices=[(0, 'pending'), (1, 'sent'), (2, 'failed')], default=0)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('lease_until', models.DateTimeField(blank=True, null=True)),
                        ('last_status', models.IntegerField(blank=True, null=True)),
                        ('last_error', models.TextField(blank=True, default='')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='callback_deliveries', to='jobs.job')),
                    ],
                    options={
                        'db_table': 'scheduling_callbackdelivery',
                        'verbose_name_plural': 'callback deliveries',
                        'ordering': ['id'],
                        'indexes': [models.Index(fields=['job', 'url', 'id'], name='callback_job_url_id'), models.Index(condition=models.Q(('state', 0)), fields=['next_attempt_at', 'id'], name='callback_pending')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
