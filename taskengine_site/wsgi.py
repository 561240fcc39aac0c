import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

application = get_wsgi_application()

# Import now what the first request would otherwise import (the URLconf and its views, the cache
# backend, the Celery app's publishing side): without it, each gunicorn worker's first requests waited
# up to 0.8 s behind those imports after every start.
from taskengine_site.warmup import warm_up  # noqa: E402

warm_up()
