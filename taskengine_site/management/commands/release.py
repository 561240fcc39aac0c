"""``manage.py release``: the Procfile's release phase, run once per deploy before new processes start.

It migrates with a lock timeout, then collects the static files. While it runs, the previous release's
processes serve on the same database: a migration that must lock a table the API or the workers are
using waits for them, and every statement queued behind that migration waits with it, so the API would
stall for as long as the busiest transaction lasts. With ``lock_timeout`` a statement that cannot have
its lock within ``TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS`` fails instead: that migration's transaction
rolls back, the ones before it stay applied, the release fails (the platform keeps the old release
running), and running it again later goes on from there.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.backends.signals import connection_created

LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock timeout


class Command(BaseCommand):
    help = (
        "Migrate with a lock timeout (TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS), then collectstatic: "
        "the release phase of a deploy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=None,
            help="seconds a statement may wait for a lock (default: TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS)",
        )
        parser.add_argument("--no-static", action="store_true", help="migrate only")

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["lock_timeout"]
        if seconds is None:
            seconds = float(settings.TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS)
        milliseconds = max(1, round(seconds * 1000))

        def limit(sender: Any, connection: Any, **_: Any) -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{milliseconds}ms"])

        connection = connections[DEFAULT_DB_ALIAS]
        connection.close()  # the next one, which migrate opens, gets the limit
        connection_created.connect(limit, weak=False, dispatch_uid="taskengine-release-lock-timeout")
        try:
            call_command("migrate", interactive=False, verbosity=options["verbosity"])
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            raise CommandError(
                f"a migration waited more than {seconds:g} s for a lock on a table in use ({exc}). "
                "It was rolled back and nothing after it ran; the migrations before it are applied. "
                "The running release is untouched: run the release again when the table is quieter, "
                "or with a longer --lock-timeout."
            ) from exc
        finally:
            connection_created.disconnect(dispatch_uid="taskengine-release-lock-timeout")
            connection.close()
        if not options["no_static"]:
            call_command("collectstatic", interactive=False, verbosity=0)
