"""gunicorn's settings for the web process: ``gunicorn -c python:taskengine_site.gunicorn_config`` (Procfile).

The address, workers and threads stay on the Procfile's command line (``$PORT``, ``WEB_CONCURRENCY``,
``WEB_THREADS``); what is here is what a restart needs.
"""

from __future__ import annotations

import os

from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

# SIGTERM: gunicorn stops accepting, lets the requests in flight finish for this long, then kills its
# workers; the same grace as a stopping Celery worker's, under the platform's SIGKILL.
graceful_timeout = settings.TASKENGINE_SHUTDOWN_GRACE_SECONDS

# gunicorn opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl) unless told
# otherwise: a second instance on the same host (old and new side by side during a deploy, parallel
# tests) takes it over from the first. The engine does not use it. (The Procfile also says
# --no-control-socket; this covers gunicorn started with this file alone, as the chaos harness does.)
control_socket_disable = True
