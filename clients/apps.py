from typing import Any

from django.apps import AppConfig

from clients import keycache


class ClientsConfig(AppConfig):
    name = "clients"
    verbose_name = "Clients and API keys"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from clients.models import ApiKey, Client

        for model in (Client, ApiKey):
            post_save.connect(_saved, sender=model, dispatch_uid=f"keycache-save-{model.__name__}")
            post_delete.connect(_deleted, sender=model, dispatch_uid=f"keycache-delete-{model.__name__}")


def _saved(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    """A saved client or key retires the remembered keys (clients.keycache), unless only the time of
    its last use was written."""
    if update_fields is None or set(update_fields) != {"last_used_at"}:
        keycache.keys_changed()


def _deleted(sender: Any, **kwargs: Any) -> None:
    keycache.keys_changed()
