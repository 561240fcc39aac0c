from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Registers the dispatcher's settings hook (a max_jobs change starts waiting jobs) in every
        # process, whether or not the admin is loaded.
        from jobs.engine import dispatcher  # noqa: F401
        from jobs.workflows.steps import basic, http  # noqa: F401  (their @step decorators register them)
