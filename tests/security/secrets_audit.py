"""Issue 5 item 10: after the whole run, no issued API key or webhook secret appears in full anywhere.

:class:`SecretsAudit` is registered for the whole session by tests/security/conftest.py. From then on it
records every API key ``clients.keys.generate`` makes and every webhook secret ``clients.crypto``
encrypts for storage (every path that stores one goes through it: the services, the admin, a test
writing the row directly), and every application log record. When the last test of the process ends,
before the test database is dropped, it scans:

* every text, varchar, json and jsonb column of every table of this process's test database (under
  xdist each worker has its own database and scans it),
* every captured application log record (message and arguments, formatted),
* every text file under this run's pytest temporary folder (the logs of the celery and gunicorn
  processes the e2e tests started),

for each recorded secret in full (a webhook secret also by its key part, without ``whsec_``). A hit is
reported as an error of the last test, naming the secret by its last four characters and where it was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")
MAX_FILE_BYTES = 20_000_000


@dataclass(frozen=True)
class Leak:
    secret: str
    where: str

    def __str__(self) -> str:
        return f"…{self.secret[-4:]} ({len(self.secret)} chars) in {self.where}"


def _capturing_factory(
    previous: Callable[..., logging.LogRecord], sink: list[str]
) -> Callable[..., logging.LogRecord]:
    """A log record factory that keeps the text of every record made.

    A factory rather than a root handler: Django (and tests that reload settings) re-apply the LOGGING
    dict, which replaces the root logger's handlers, but leaves the record factory alone. Records are
    only made for enabled levels, so this sees what the application actually logs.
    """

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        sink.append(text)
        return record

    return factory


def _wrap(module: Any, name: str, record: Callable[[Any], None]) -> Callable[[], None]:
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        record((args, kwargs, result))
        return result

    setattr(module, name, wrapper)
    return lambda: setattr(module, name, original)


@dataclass(eq=False)  # a pytest plugin must be hashable
class SecretsAudit:
    secrets: set[str] = field(default_factory=set)
    log_lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    undo: list[Callable[[], None]] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)

    # -- recording --

    def remember(self, secret: str) -> None:
        if not secret:
            return
        with self.lock:
            self.secrets.add(secret)
            if secret.startswith("whsec_"):
                self.secrets.add(secret[len("whsec_") :])

    def install(self) -> None:
        from clients import crypto, keys

        self.undo.append(_wrap(keys, "generate", lambda call: self.remember(call[2][0])))
        self.undo.append(_wrap(crypto, "encrypt", lambda call: self.remember(str(call[0][0]))))
        previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_capturing_factory(previous, self.log_lines))
        self.undo.append(lambda: logging.setLogRecordFactory(previous))

    def uninstall(self) -> None:
        while self.undo:
            self.undo.pop()()

    # -- scanning --

    def scan_database(self, conninfo: dict[str, Any], secrets: Iterable[str]) -> Iterator[Leak]:
        import psycopg

        wanted = sorted(set(secrets))
        if not wanted:
            return
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            columns = conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = ANY(%s) ORDER BY 1, 2",
                [list(TEXT_TYPES)],
            ).fetchall()
            for table, column in columns:
                # strpos, not LIKE: keys hold "_", which LIKE would read as a wildcard.
                query = (
                    f'SELECT DISTINCT s FROM "{table}" t, unnest(%s::text[]) s '
                    f'WHERE strpos(t."{column}"::text, s) > 0'
                )
                for (secret,) in conn.execute(query, [wanted]).fetchall():
                    yield Leak(secret, f"column {table}.{column}")

    def scan_lines(self, lines: Iterable[str], where: str, secrets: Iterable[str]) -> Iterator[Leak]:
        wanted = set(secrets)
        for line in lines:
            for secret in wanted:
                if secret in line:
                    # The report must not leak what it found: the secret shows masked.
                    shown = line.replace(secret, "*" * (len(secret) - 4) + secret[-4:])
                    yield Leak(secret, f"{where}: {shown[:120]!r}")

    def scan_files(self, root: Path, secrets: Iterable[str]) -> Iterator[Leak]:
        wanted = set(secrets)
        for path in root.rglob("*.log"):
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
                continue
            try:
                text = path.read_bytes().decode("utf-8", errors="replace")
            except OSError:
                continue
            for secret in wanted:
                if secret in text:
                    yield Leak(secret, f"file {path.relative_to(root)}")

    def audit(self, config: pytest.Config) -> list[Leak]:
        """Everything this process can reach, against every secret recorded so far."""
        with self.lock:
            secrets = set(self.secrets)
            lines = list(self.log_lines)
        leaks = list(self.scan_lines(lines, "application log", secrets))
        conninfo = database_conninfo()
        if conninfo is not None:
            leaks += self.scan_database(conninfo, secrets)
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is not None:
            try:
                basetemp = factory.getbasetemp()
            except (OSError, ValueError):
                basetemp = None
            if basetemp is not None:
                leaks += self.scan_files(basetemp, secrets)
        return leaks

    # -- pytest hooks --

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        if nextitem is not None:
            return (yield)
        # The last test of this process: scan now, while its session fixtures (the test database)
        # still exist, then let them be torn down, then report.
        self.leaks = self.audit(item.config)
        result = yield
        if self.leaks:
            listed = "\n  ".join(str(leak) for leak in self.leaks[:50])
            raise AssertionError(
                f"{len(self.leaks)} secret leak(s) after the run "
                f"({len(self.secrets)} secrets issued were checked):\n  {listed}"
            )
        return result


def database_conninfo() -> dict[str, Any] | None:
    """Connection keywords of this process's test database, or None if no test needed one."""
    from django.db import connection

    settings = connection.settings_dict
    name = str(settings.get("NAME") or "")
    if not name.startswith("test_"):
        return None
    # Django's own connection keywords, so a unix-socket server (host in OPTIONS) is reached too.
    info: dict[str, Any] = dict(connection.get_connection_params())
    for unused in ("cursor_factory", "context", "client_encoding"):
        info.pop(unused, None)
    info["dbname"] = name
    info["connect_timeout"] = 5
    return info
