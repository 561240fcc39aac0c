from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        # The engine announces what it did (jobs.engine.signals) and never imports this room; the
        # worker's own heartbeat starts from Celery's signals in every process that runs a worker.
        from jobs.engine.signals import steps_finished
        from monitoring import workers

        steps_finished.connect(workers.count_processed, dispatch_uid="taskengine-step-counters")
        workers.install_worker_heartbeat()
