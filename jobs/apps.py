from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        # Imported here, not at module top: the engine imports models, which need the app registry.
        from jobs.engine import dispatcher
        from jobs.workflows.steps import basic, http  # noqa: F401  (their @step decorators register them)
        from settings_app import effects

        # In every process, whether or not the admin is loaded: a max_jobs change starts waiting jobs.
        effects.register(dispatcher.on_setting_changed)
