from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from clients import keys
from clients.models import Client
from clients.services import api_key_issue, client_create


class Command(BaseCommand):
    help = (
        "Make sure the operator client 'demo-client' exists (used by `make run`). Its key is printed when "
        "it is made and kept in a git-ignored file so it can be found again."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--name", default="demo-client")
        parser.add_argument("--key-file", default=str(Path(settings.BASE_DIR) / ".data" / "demo-client.key"))

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        key_file = Path(options["key_file"])
        client = Client.objects.filter(name=name).first()
        if client is None:
            client, key = client_create(name=name, is_operator=True)
            self._keep(key_file, key)
            self.stdout.write(f"Created operator client {name!r}; its API key is kept in {key_file}:")
            self.stdout.write(key)
            return
        kept = key_file.read_text().strip() if key_file.exists() else ""
        if kept and self._valid(client, kept):
            self.stdout.write(f"Client {name!r} exists; its API key is in {key_file}:")
            self.stdout.write(kept)
            return
        # The key file is missing, or holds a key of another database (DATABASE_URL changed) or a revoked
        # one: only a hash is stored, so issue a new key.
        _, key = api_key_issue(client=client, label="make run")
        self._keep(key_file, key)
        reason = "was missing" if not kept else "held a key this database does not accept"
        self.stdout.write(f"Client {name!r} exists but {key_file} {reason}; issued a new API key:")
        self.stdout.write(key)

    @staticmethod
    def _valid(client: Client, key: str) -> bool:
        prefix = keys.prefix_of(key)
        row = client.api_keys.filter(prefix=prefix, revoked_at__isnull=True).first() if prefix else None
        return row is not None and keys.matches(key, row.key_hash)

    @staticmethod
    def _keep(path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
