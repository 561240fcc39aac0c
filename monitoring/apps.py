from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        # The engine announces what it did (jobs.engine.signals) and never imports this room; the
        # worker's own heartbeat starts from Celery's signals in every process that runs a worker.
        from jobs.engine.signals import steps_finished
        from monitoring import workers

        steps_finished.connect(workers.count_processed, dispatch_uid="taskengine-step-counters")
        # Several starts to a message only where every worker of the queue can run such messages.
        from jobs.engine import bus

        bus.register_group_gate(workers.every_worker_runs_task_groups)
        workers.install_worker_heartbeat()
