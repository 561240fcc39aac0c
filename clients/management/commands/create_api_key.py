from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clients.models import Client
from clients.services import api_key_issue


class Command(BaseCommand):
    help = "Issue another API key for an existing client and print it (shown once) as the last line."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--label", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        client = Client.objects.filter(name=options["name"]).first()
        if client is None:
            raise CommandError(f"no client named {options['name']!r}")
        _, key = api_key_issue(client=client, label=options["label"])
        self.stdout.write(f"New API key for {client.name!r}, shown only this once:")
        self.stdout.write(key)
