from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clients.services import client_create
from taskengine_site.errors import DomainError


class Command(BaseCommand):
    help = "Create an API client and print its new API key (shown once) as the last line."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--admin", action="store_true", help="make it an operator client")
        parser.add_argument("--webhook-secret", default="", help="Standard Webhooks secret for callbacks")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            client, key = client_create(
                name=options["name"], is_operator=options["admin"], webhook_secret=options["webhook_secret"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        kind = "operator client" if client.is_operator else "client"
        self.stdout.write(f"Created {kind} {client.name!r}. Its API key, shown only this once:")
        self.stdout.write(key)
