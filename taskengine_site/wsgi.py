import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

# What django.core.wsgi.get_wsgi_application does, with the project's handler (a shorter middleware
# chain for POST /job: taskengine_site/handler.py).
django.setup(set_prefix=False)

from taskengine_site.handler import Handler  # noqa: E402

application = Handler()

# Import now what the first request would otherwise import (the URLconf and its views, the cache
# backend, the Celery app's publishing side): without it, each gunicorn worker's first requests waited
# up to 0.8 s behind those imports after every start.
from taskengine_site.warmup import warm_up  # noqa: E402

warm_up()
