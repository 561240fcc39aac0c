"""Celery tasks of the callbacks: thin adapters around one service each, taking primary keys only.

Their names are what messages already in Redis carry (a rolling deploy runs old and new workers side by
side): they do not change with the module that holds them.
"""

from __future__ import annotations

from celery import shared_task

from callbacks import services


@shared_task(name="callbacks.deliver")
def callback_deliver(delivery_id: int) -> None:
    services.callback_deliver(delivery_id=delivery_id)


@shared_task(name="scheduling.redeliver_callbacks")
def redeliver_callbacks() -> None:
    services.callbacks_redeliver()
