"""Settings for the Celery processes the end-to-end tests start: the project's, plus what the tests need
until the project's settings carry it (see the engine report's requests)."""

from taskengine_site.settings import *  # noqa: F403

# Celery closes the Django connection before and after every task unless this is set; reconnecting
# for each of thousands of short tasks dominates their run time.
CELERY_DB_REUSE_MAX = 1000

# Short enough that a test can wait for a killed worker's task to be presumed dead.
TASKENGINE_HEARTBEAT_SECONDS = 1.0
TASKENGINE_HEARTBEAT_STALE_SECONDS = 5.0
