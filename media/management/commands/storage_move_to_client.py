from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clients.models import Client
from media.services import storage_move_to_client
from taskengine_site.errors import DomainError


class Command(BaseCommand):
    help = (
        "Move a shared storage layout (from before storage areas existed) into one client's area: every "
        "entry at the top of the storage that is not a client's area moves under <client>/."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("client", help="the client that owns the existing files")
        parser.add_argument("--storage", choices=("local", "s3"), default="local")
        parser.add_argument("--dry-run", action="store_true", help="print what would move, move nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        client = Client.objects.filter(name=options["client"]).first()
        if client is None:
            raise CommandError(f"no client named {options['client']!r}")
        try:
            outcome = storage_move_to_client(
                client=client, kind=options["storage"], dry_run=options["dry_run"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        verb = "would move" if options["dry_run"] else "moved"
        for old, new in outcome.moved:
            self.stdout.write(f"{verb} {old} -> {new}")
        for name in outcome.conflicts:
            self.stderr.write(f"left {name}: {client.name}/{name} already exists")
        self.stdout.write(f"{len(outcome.moved)} {verb}, {len(outcome.conflicts)} left in place")
        if outcome.conflicts:
            raise CommandError("some entries were left in place (their target exists)")
