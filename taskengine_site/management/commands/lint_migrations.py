"""``manage.py lint_migrations`` (part of ``make check``): refuse a migration that is unsafe while the
previous release still runs.

During a deploy the release phase migrates while the previous release's web and worker processes keep
serving on the same database, and after it old and new processes run side by side. A migration must
therefore leave a schema the previous code still works with, and take no lock that stalls it. The
checks are django-migration-linter's (a maintained linter of the Django ecosystem, reading the SQL each
migration really runs through ``sqlmigrate``, so it needs a database connection):

* errors: a column or table dropped or renamed, a column's type changed, a NOT NULL column added
  without a database default (use ``db_default``), a unique constraint added to an existing table;
* refused here too (the linter calls them warnings): an index created or dropped without
  ``CONCURRENTLY`` on an existing table, every one of which may be big (``AddIndexConcurrently`` /
  ``RemoveIndexConcurrently`` in a migration with ``atomic = False``).

A migration that does one of these and was reviewed as safe (a table known to be small, a column no
released code reads any more) is listed, with why, in ``pyproject.toml`` under
``[tool.taskengine.reviewed-migrations]``. Only the project's own apps are linted: a dependency's
migrations are read when the dependency is upgraded.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

BASE_DIR = Path(__file__).resolve().parents[3]
PROJECT_APPS = ("clients", "jobs", "callbacks", "media", "logs", "monitoring", "scheduling", "settings_app")
# The linter's warnings that a running release cannot afford.
REFUSED_WARNINGS = ("CREATE_INDEX", "CREATE_INDEX_EXCLUSIVE", "DROP_INDEX", "REINDEX")


def reviewed_migrations(pyproject: Path = BASE_DIR / "pyproject.toml") -> dict[str, str]:
    """``{"app.migration_name": "why it is safe"}`` from ``[tool.taskengine.reviewed-migrations]``."""
    with pyproject.open("rb") as handle:
        table = tomllib.load(handle).get("tool", {}).get("taskengine", {}).get("reviewed-migrations", {})
    empty = [name for name, why in table.items() if not str(why).strip()]
    if empty:
        raise CommandError(f"reviewed migrations without a reason: {', '.join(empty)}")
    return {str(name): str(why) for name, why in table.items()}


class Command(BaseCommand):
    help = "Refuse migrations unsafe while the previous release runs (django-migration-linter)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("app_label", nargs="?", help="lint this app's migrations only")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from django_migration_linter import MigrationLinter
        except ImportError:
            raise CommandError(
                "django-migration-linter is a development dependency: run `make venv`"
            ) from None

        # The linter says at INFO level which migration it is reading, one line each.
        logging.getLogger("django_migration_linter").setLevel(logging.WARNING)
        reviewed = reviewed_migrations()
        labels = [options["app_label"]] if options["app_label"] else list(PROJECT_APPS)
        known = {f"{app_label}.{name}" for app_label, name in _migrations(labels)}
        stale = sorted(name for name in reviewed if name.split(".", 1)[0] in labels and name not in known)
        if stale:
            raise CommandError(f"reviewed migrations that do not exist: {', '.join(stale)}")

        class Linter(MigrationLinter):
            def should_ignore_migration(
                self, app_label: str, migration_name: str, operations: Any = (), is_initial: bool = False
            ) -> bool:
                return f"{app_label}.{migration_name}" in reviewed or bool(
                    super().should_ignore_migration(app_label, migration_name, operations, is_initial)
                )

        linter = Linter(
            path=str(BASE_DIR),
            no_cache=True,
            include_apps=labels,
            warnings_as_errors_tests=list(REFUSED_WARNINGS),
            quiet=["ok", "ignore"],
            no_output=options["verbosity"] == 0,
        )
        linter.lint_all_migrations()
        linter.print_summary()
        if linter.has_errors:
            raise CommandError(
                "a migration above is unsafe while the previous release runs: split it (add, deploy, then "
                "drop), give the column a db_default, build the index CONCURRENTLY, or, once reviewed, "
                "list it with why under [tool.taskengine.reviewed-migrations] in pyproject.toml"
            )


def _migrations(labels: list[str]) -> list[tuple[str, str]]:
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    return [key for key in loader.disk_migrations if key[0] in labels]
