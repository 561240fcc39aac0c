"""The Celery application. Queues, routes and reliability options live in settings (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

app = Celery("taskengine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
