"""Issue 5 item 10: secrets at rest. Webhook secrets are stored encrypted and read back for signing; the
session-wide audit (secrets_audit.py, registered by this folder's conftest) finds a leaked secret in a
column, a log record or a process log, and ignores the masked form logs are allowed to show."""

from __future__ import annotations

import importlib
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from callbacks.models import CallbackDelivery
from callbacks.services import callback_deliver
from clients import crypto, keys
from clients.models import Client
from jobs.states import JobState
from taskengine_site import webhooks
from tests import factories
from tests.callbacks.support import Receiver
from tests.security.secrets_audit import SecretsAudit, database_conninfo


def stored_secret(client: Client) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM clients_client WHERE id = %s", [client.pk])
        return str(cursor.fetchone()[0])


def test_a_webhook_secret_is_stored_encrypted_and_read_back(make_client: Callable[..., tuple]) -> None:
    secret = webhooks.generate_secret()
    client, _ = make_client(webhook_secret=secret)
    raw = stored_secret(client)
    assert crypto.is_token(raw)
    assert secret not in raw and secret.removeprefix("whsec_") not in raw
    fresh = Client.objects.get(pk=client.pk)
    assert fresh.webhook_secret == secret == fresh.get_webhook_secret()
    # Every write path encrypts, a queryset update too (each encryption differs: random IV).
    Client.objects.filter(pk=client.pk).update(webhook_secret=secret)
    assert stored_secret(client) != raw and crypto.is_token(stored_secret(client))
    assert Client.objects.get(pk=client.pk).webhook_secret == secret


def test_an_unsigned_client_stores_nothing(make_client: Callable[..., tuple]) -> None:
    client, _ = make_client()
    assert stored_secret(client) == ""
    assert Client.objects.get(pk=client.pk).get_webhook_secret() == ""


def test_a_rotated_secret_key_still_decrypts_through_the_fallbacks(
    make_client: Callable[..., tuple], settings: Any
) -> None:
    secret = webhooks.generate_secret()
    settings.SECRET_KEY = "the-old-key-" + "x" * 40
    client, _ = make_client(webhook_secret=secret)
    settings.SECRET_KEY = "the-new-key-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = ["the-old-key-" + "x" * 40]
    assert Client.objects.get(pk=client.pk).webhook_secret == secret
    # Saving re-encrypts under the new key, after which the old one is no longer needed.
    Client.objects.get(pk=client.pk).save()
    settings.SECRET_KEY_FALLBACKS = []
    assert Client.objects.get(pk=client.pk).webhook_secret == secret


def test_a_dedicated_secrets_key_is_used_and_secret_key_still_reads_older_rows(
    make_client: Callable[..., tuple], settings: Any
) -> None:
    older = webhooks.generate_secret()
    old_client, _ = make_client(webhook_secret=older)
    settings.TASKENGINE_SECRETS_KEY = "a-dedicated-key-" + secrets.token_hex(16)
    newer = webhooks.generate_secret()
    new_client, _ = make_client(webhook_secret=newer)
    assert Client.objects.get(pk=old_client.pk).webhook_secret == older
    assert Client.objects.get(pk=new_client.pk).webhook_secret == newer
    # Written under the dedicated key: SECRET_KEY alone cannot read it.
    settings.TASKENGINE_SECRETS_KEY = ""
    assert Client.objects.get(pk=new_client.pk).webhook_secret == crypto.UNREADABLE


def test_an_undecryptable_secret_fails_the_callback_instead_of_sending_it_unsigned(
    make_client: Callable[..., tuple], settings: Any, transactional_db: None
) -> None:
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    client, _ = make_client(webhook_secret=webhooks.generate_secret())
    settings.SECRET_KEY = "rotated-without-fallbacks-" + "z" * 30
    receiver = Receiver()
    try:
        endpoints = [receiver.url("/cb")]
        job = factories.job(client, queue_state=JobState.STARTED, parameters={"rest_endpoints": endpoints})
        row = CallbackDelivery.objects.create(
            job=job,
            task_id=0,
            kind="job",
            event="completed",
            url=receiver.url("/cb"),
            body="{}",
            webhook_id="m",
        )
        with pytest.raises(crypto.SecretUnreadable):
            Client.objects.get(pk=client.pk).get_webhook_secret()
        assert callback_deliver(delivery_id=row.pk) == "failed"
        row.refresh_from_db()
        assert "cannot be decrypted" in row.last_error
        assert receiver.received("/cb") == []
        # Saving the client must not overwrite the stored token with the unreadable marker.
        with pytest.raises(ValueError, match="cannot be decrypted"):
            Client.objects.get(pk=client.pk).save()
    finally:
        receiver.close()


def test_the_migration_encrypts_plaintext_rows_and_its_reverse_restores_them(
    make_client: Callable[..., tuple],
) -> None:
    from django.apps import apps

    migration = importlib.import_module("clients.migrations.0002_webhook_secret_encrypted")
    secret = webhooks.generate_secret()
    client, _ = make_client()
    with connection.cursor() as cursor:  # as the release before encryption left it
        cursor.execute("UPDATE clients_client SET webhook_secret = %s WHERE id = %s", [secret, client.pk])
    assert Client.objects.get(pk=client.pk).webhook_secret == secret  # a legacy value is still read

    class Editor:
        connection = connection

    migration.encrypt_existing(apps, Editor())
    assert crypto.is_token(stored_secret(client))
    assert Client.objects.get(pk=client.pk).webhook_secret == secret
    migration.decrypt_existing(apps, Editor())
    assert stored_secret(client) == secret


def test_the_session_audit_records_every_issued_key_and_webhook_secret(
    make_client: Callable[..., tuple], secrets_audit: SecretsAudit
) -> None:
    secret = webhooks.generate_secret()
    _, key = make_client(webhook_secret=secret)
    assert key in secrets_audit.secrets
    assert secret in secrets_audit.secrets and secret.removeprefix("whsec_") in secrets_audit.secrets


def test_the_audit_finds_a_leak_in_a_column_a_log_record_and_a_process_log(
    transactional_db: None, tmp_path: Path, make_client: Callable[..., tuple]
) -> None:
    # Look-alike secrets that were never issued, so the session's own audit does not see them.
    key = f"{keys.KEY_PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    webhook = "whsec_" + secrets.token_urlsafe(32)
    local = SecretsAudit()
    local.remember(key)
    local.remember(webhook)
    client, _ = make_client()
    job = factories.job(client, parameters={"k": webhook})
    factories.log_entry(job, f"called with api-key {key}")
    factories.log_entry(job, f"masked {keys.mask(key)}")
    lines = [f"request with {keys.mask(key)}", f"oops: secret={webhook.removeprefix('whsec_')}"]
    (tmp_path / "worker.log").write_text(f"INFO signing with {webhook}\n")
    (tmp_path / "demo.key").write_text(key)  # a key file is where a key belongs: not a log

    conninfo = database_conninfo()
    assert conninfo is not None
    found = {
        *(str(leak).split(" in ")[1] for leak in local.scan_database(conninfo, local.secrets)),
        *(leak.where.split(":")[0] for leak in local.scan_lines(lines, "application log", local.secrets)),
        *(str(leak).split(" in ")[1] for leak in local.scan_files(tmp_path, local.secrets)),
    }
    assert found == {
        "column logs_logentry.message",
        "column jobs_job.parameters",
        "column jobs_job_search.text",  # the parameters' copy that GET /jobs?search= reads
        "application log",
        "file worker.log",
    }


def test_captured_log_records_are_scanned(secrets_audit: SecretsAudit) -> None:
    fake = f"{keys.KEY_PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    before = len(secrets_audit.log_lines)
    logging.getLogger("taskengine.test").warning("client presented %s", keys.mask(fake))
    captured = secrets_audit.log_lines[before:]
    assert any(keys.mask(fake) in line for line in captured)
    assert list(secrets_audit.scan_lines(captured, "application log", {fake})) == []


def test_the_admin_form_never_shows_a_secret_and_keeps_it_unless_told(
    make_client: Callable[..., tuple], admin_client: Any
) -> None:
    from clients.admin import ClientForm

    secret = webhooks.generate_secret()
    client, _ = make_client(webhook_secret=secret)
    page = admin_client.get(f"/admin/clients/client/{client.pk}/change/")
    assert page.status_code == 200
    assert secret.removeprefix("whsec_") not in page.content.decode()

    base = {"name": client.name, "is_operator": "", "is_active": "on"}
    form = ClientForm(data={**base, "webhook_secret": ""}, instance=Client.objects.get(pk=client.pk))
    assert form.is_valid(), form.errors
    form.save()
    assert Client.objects.get(pk=client.pk).webhook_secret == secret  # empty field: kept

    newer = webhooks.generate_secret()
    form = ClientForm(data={**base, "webhook_secret": newer}, instance=Client.objects.get(pk=client.pk))
    assert form.is_valid(), form.errors
    form.save()
    assert Client.objects.get(pk=client.pk).webhook_secret == newer

    form = ClientForm(
        data={**base, "webhook_secret": "", "clear_webhook_secret": "on"},
        instance=Client.objects.get(pk=client.pk),
    )
    assert form.is_valid(), form.errors
    form.save()
    assert stored_secret(client) == ""
