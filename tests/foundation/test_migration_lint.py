"""The migration check of ``make check`` (``manage.py lint_migrations``): it refuses what a running
previous release cannot live with, accepts the safe ways to do the same, and lets a reviewed exception
through only with a reason.

``tests/foundation/lintprobe`` is an app of test migrations, installed for these tests only: a NOT NULL
column without a database default (0002), an index built without CONCURRENTLY on an existing table
(0003), a dropped column (0004), and their safe counterparts (0005 ``db_default``, 0006
``AddIndexConcurrently``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from taskengine_site.management.commands import lint_migrations

PROBE = "tests.foundation.lintprobe"


@pytest.fixture
def probe_installed(settings: Any, transactional_db: None) -> None:
    # Not inside the test's transaction: sqlmigrate refuses a CONCURRENTLY operation in one.
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, PROBE]


def lint(capsys: pytest.CaptureFixture[str]) -> tuple[str, str | None]:
    try:
        call_command("lint_migrations", "lintprobe")
    except CommandError as exc:
        return capsys.readouterr().out, str(exc)
    return capsys.readouterr().out, None


def verdicts(out: str) -> dict[str, str]:
    lines = [line for line in out.splitlines() if line.startswith("(lintprobe, ")]
    return {line.split(", ")[1].split(")")[0]: line.rsplit("... ", 1)[1] for line in lines}


def test_unsafe_migrations_are_refused_and_their_safe_forms_accepted(probe_installed, capsys):
    out, error = lint(capsys)
    assert error is not None and "[tool.taskengine.reviewed-migrations]" in error
    assert verdicts(out) == {
        "0002_not_null_without_default": "ERR",
        "0003_index_not_concurrently": "ERR",
        "0004_drop_column": "ERR",
    }, out  # 0001 (a new table and its index), 0005 and 0006 pass: "ok" lines are not printed
    assert "NOT NULL constraint on columns" in out
    assert "CREATE INDEX locks table" in out
    assert "DROPPING columns (table: lintprobe_thing, column: old)" in out


def test_a_reviewed_migration_passes_and_a_review_needs_a_reason(
    probe_installed, capsys, monkeypatch, tmp_path
):
    reviewed = {
        "lintprobe.0002_not_null_without_default": "no release inserts into this table",
        "lintprobe.0003_index_not_concurrently": "a table of ten rows",
        "lintprobe.0004_drop_column": "no released code reads it since the release before",
    }
    real = lint_migrations.reviewed_migrations
    monkeypatch.setattr(lint_migrations, "reviewed_migrations", lambda: reviewed)
    out, error = lint(capsys)
    assert error is None, out
    assert verdicts(out) == {}

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.taskengine.reviewed-migrations]\n"lintprobe.0004_drop_column" = " "\n')
    with pytest.raises(CommandError, match=r"without a reason: lintprobe\.0004_drop_column"):
        real(pyproject)


def test_a_review_of_a_migration_that_does_not_exist_is_refused(probe_installed, capsys, monkeypatch):
    monkeypatch.setattr(lint_migrations, "reviewed_migrations", lambda: {"lintprobe.0009_gone": "renamed"})
    with pytest.raises(CommandError, match=r"do not exist: lintprobe\.0009_gone"):
        call_command("lint_migrations", "lintprobe")


def test_the_project_migrations_pass_as_reviewed(transactional_db, capsys):
    # Outside a test transaction: sqlmigrate cannot render AddIndexConcurrently inside one.
    call_command("lint_migrations")
    assert "Erroneous migrations: 0/" in capsys.readouterr().out


def test_the_reviewed_list_reads_from_pyproject():
    reviewed = lint_migrations.reviewed_migrations(Path(lint_migrations.BASE_DIR) / "pyproject.toml")
    assert all(why.strip() for why in reviewed.values())
