from typing import Any

from django.apps import AppConfig


def _task_event(*, task_id: int, event: str, message: str, **_: Any) -> None:
    from callbacks import services

    services.task_event(task_id, event, message)


def _job_finished(*, job_id: int, **_: Any) -> None:
    from callbacks import services

    services.job_finished(job_id)


class CallbacksConfig(AppConfig):
    name = "callbacks"

    def ready(self) -> None:
        # The engine announces task events and job ends; it never imports this app. Receivers import
        # the services when called: models cannot be imported while the apps are still loading.
        from jobs.engine import signals

        signals.task_event.connect(_task_event, dispatch_uid="callbacks.task_event")
        signals.job_finished.connect(_job_finished, dispatch_uid="callbacks.job_finished")

        # GET /jobs/<id>?callbacks=1 lists the job's deliveries: the job API asks this room for them.
        from callbacks.selectors import job_deliveries
        from jobs.selectors import register_job_detail_part

        register_job_detail_part("callbacks", job_deliveries)
