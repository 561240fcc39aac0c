from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "media"

    def ready(self) -> None:
        # The workflow registry knows the media workflows only through what is registered here: the
        # job services and the engine never import this app.
        from jobs.workflows.registry import (
            register_job_callback_fields,
            register_job_cleanup,
            register_workflows,
        )
        from media import definitions, selectors, storage, validation
        from media.steps import files, vod  # noqa: F401  (their @step decorators register the steps)

        register_workflows(definitions.STORAGE_DEFINITIONS, validate=validation.validate_storage_job)
        register_workflows(definitions.MEDIA_DEFINITIONS, validate=validation.validate_media_job)
        register_job_cleanup(storage.remove_job_work_dir)
        # A job's content keys reach its client in the signed job callback (and GET /jobs/<id>/keys).
        register_job_callback_fields(selectors.job_callback_keys)

        # Which confinement ffmpeg gets is learnt before the pool forks and said once the worker is up.
        from celery.signals import worker_init, worker_ready

        from media import sandbox

        worker_init.connect(
            sandbox.on_worker_init, weak=False, dispatch_uid="taskengine-ffmpeg-sandbox-check"
        )
        worker_ready.connect(
            sandbox.on_worker_ready, weak=False, dispatch_uid="taskengine-ffmpeg-sandbox-log"
        )
