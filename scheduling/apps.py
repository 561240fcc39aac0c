from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _sync_after_migrate(**kwargs: Any) -> None:
    from django.db import connections
    from django_celery_beat.models import PeriodicTask

    from scheduling.beat import schedules_sync

    # A partial migrate (one app, or back to zero) may leave beat's tables absent.
    connection = connections[kwargs.get("using") or "default"]
    if PeriodicTask._meta.db_table not in connection.introspection.table_names():
        return
    schedules_sync()


def _arm_promotion(*, job_id: int, **_: Any) -> None:
    from scheduling.services import job_promotion_arm

    job_promotion_arm(job_id=job_id)


class SchedulingConfig(AppConfig):
    name = "scheduling"

    def ready(self) -> None:
        # Imported here, not at module top: beat imports django_celery_beat's models.
        from jobs.signals import job_waiting
        from scheduling import beat
        from settings_app import effects

        # Sent once per migrate for beat's own app, after every app's migrations: its tables exist then.
        post_migrate.connect(
            _sync_after_migrate,
            sender=apps.get_app_config("django_celery_beat"),
            dispatch_uid="scheduling.schedules_sync",
        )
        effects.register(beat.on_setting_changed)
        # Job services announce jobs that start waiting for their time or semaphore; they never import
        # the scheduler.
        job_waiting.connect(_arm_promotion, dispatch_uid="scheduling.arm_promotion")
