"""Load, when a web process starts, what Django and Celery would otherwise load on the first request.

Django imports the URLconf (and through it every view, serializer and the schema generator) when it
resolves the first request, the cache backend when a request first touches the cache, and Celery
finalizes its app on the first publish. Each gunicorn worker paid that, 0.3 to 0.8 s, on whichever request
came first after a start, while the requests behind it queued. Nothing here opens a connection: those
are per thread and made when first used.

Then ``taskengine_site.heap.freeze_heap`` takes what is loaded out of the garbage collector's sight:
about 120,000 objects (modules, classes, settings) that live as long as the process. Every full
collection walked all of them, 45 to 80 ms on the 2-core machine of bench/README.md, during which every
thread of the process stood still: a web worker's four requests in flight, or a Celery pool process's
step. Objects made later are collected as before.
"""

from __future__ import annotations

from django.core.cache import caches
from django.urls import get_resolver

from taskengine_site.celery import app
from taskengine_site.heap import freeze_heap


def warm_up() -> None:
    """Load the URLconf, the cache backend and Celery's publishing side, then freeze the heap."""
    get_resolver().url_patterns  # noqa: B018 (the property imports the URLconf)
    caches["default"]  # creating the backend imports it; its connections are made on use
    app.finalize(auto=True)
    app.amqp  # noqa: B018 (the publishing side: kombu's producer, the task message protocol)
    freeze_heap()
