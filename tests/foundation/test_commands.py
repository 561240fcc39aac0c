"""The management commands that create clients and keys."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from clients.authentication import ApiKeyAuthentication
from clients.models import ApiKey, Client

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def authenticates(name: str, key: str) -> bool:
    """Whether the real authentication class accepts the pair (independent of the API's routes)."""
    request = Request(APIRequestFactory().get("/", HTTP_CLIENT=name, HTTP_API_KEY=key))
    try:
        result = ApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return result is not None and result[0].name == name


def test_create_client_prints_a_working_key_last():
    lines = run("create_client", "acme")
    key = lines[-1]
    client = Client.objects.get(name="acme")
    assert client.is_operator is False and client.is_active is True
    assert key.startswith("te_") and authenticates("acme", key)
    assert APIClient().get("/").json() == {"result": "alive"}


def test_create_client_admin_flag_makes_an_operator():
    run("create_client", "ops", "--admin")
    assert Client.objects.get(name="ops").is_operator is True


def test_create_client_refuses_a_duplicate_name():
    run("create_client", "acme")
    with pytest.raises(CommandError, match="already exists"):
        run("create_client", "acme")
    assert Client.objects.filter(name="acme").count() == 1


def test_create_api_key_issues_another_working_key():
    first = run("create_client", "acme")[-1]
    second = run("create_api_key", "acme")[-1]
    assert first != second
    assert authenticates("acme", first) and authenticates("acme", second)
    assert ApiKey.objects.filter(client__name="acme").count() == 2


def test_create_api_key_for_unknown_client_fails_clearly():
    with pytest.raises(CommandError, match="no client named 'ghost'"):
        run("create_api_key", "ghost")


def test_ensure_demo_client_creates_once_and_keeps_the_key(tmp_path):
    key_file = tmp_path / "demo.key"
    first = run("ensure_demo_client", "--key-file", str(key_file))
    key = first[-1]
    assert key_file.read_text().strip() == key
    assert Client.objects.get(name="demo-client").is_operator is True
    again = run("ensure_demo_client", "--key-file", str(key_file))
    assert again[-1] == key
    assert ApiKey.objects.filter(client__name="demo-client").count() == 1
    key_file.unlink()
    third = run("ensure_demo_client", "--key-file", str(key_file))
    assert third[-1] != key and authenticates("demo-client", third[-1])


def test_webhook_secret_must_be_a_standard_webhooks_secret():
    with pytest.raises(CommandError, match="webhook_secret: expected whsec_<base64>"):
        run("create_client", "acme", "--webhook-secret", "hunter2")
    with pytest.raises(CommandError, match="not valid base64"):
        run("create_client", "acme", "--webhook-secret", "whsec_***")
    with pytest.raises(CommandError, match="24 to 64 bytes"):
        run("create_client", "acme", "--webhook-secret", "whsec_c2hvcnQ=")
    assert not Client.objects.filter(name="acme").exists()
    run("create_client", "acme", "--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert Client.objects.get(name="acme").webhook_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_ensure_demo_client_replaces_a_key_this_database_does_not_accept(tmp_path):
    key_file = tmp_path / "demo.key"
    key = run("ensure_demo_client", "--key-file", str(key_file))[-1]
    # Another database's key (DATABASE_URL changed), then a revoked one: neither is printed as valid.
    key_file.write_text("te_0123456789ab_not-this-database\n")
    replaced = run("ensure_demo_client", "--key-file", str(key_file))
    assert "does not accept" in replaced[-2] and replaced[-1] != key
    assert authenticates("demo-client", replaced[-1]) and key_file.read_text().strip() == replaced[-1]
    ApiKey.objects.filter(client__name="demo-client").update(revoked_at=timezone.now())
    again = run("ensure_demo_client", "--key-file", str(key_file))[-1]
    assert again != replaced[-1] and authenticates("demo-client", again)
