"""Every authentication case of the client + api-key headers, through a real view and the real handler."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from clients.models import ApiKey, Client
from clients.services import api_key_issue, api_key_revoke
from tests.sessions import backend_pid, close_kept_connection_on_the_server, health_check_pending

UNAUTHORISED = {"error": "Unauthorised request."}


class WhoAmI(APIView):
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, Client) and isinstance(request.auth, ApiKey)
        return Response({"client": request.user.name, "key": request.auth.prefix})


urlpatterns = [path("whoami", WhoAmI.as_view())]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def call(headers: dict[str, str]):
    return APIClient().get("/whoami", headers=headers)


def test_valid_client_and_key(make_client):
    client, key = make_client("acme")
    response = call({"client": "acme", "api-key": key})
    assert response.status_code == 200
    assert response.json() == {"client": "acme", "key": ApiKey.objects.get(client=client).prefix}


def test_x_api_key_is_accepted_too(make_client):
    _, key = make_client("acme")
    response = call({"client": "acme", "x-api-key": key})
    assert response.status_code == 200
    assert response.json()["client"] == "acme"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"client": "acme"},
        {"api-key": "KEY"},
        {"client": "acme", "api-key": "te_000000000000_wrong"},
        {"client": "acme", "api-key": "not-even-a-key"},
        {"client": "acme", "api-key": "KEY-but-longer"},
        {"client": "ACME", "api-key": "KEY"},
        {"client": "nobody", "api-key": "KEY"},
    ],
    ids=[
        "none",
        "no-key",
        "no-client",
        "wrong-key",
        "malformed-key",
        "tampered",
        "name-case",
        "unknown-client",
    ],
)
def test_missing_or_wrong_credentials_answer_401(make_client, headers):
    _, key = make_client("acme")
    headers = {name: value.replace("KEY", key) for name, value in headers.items()}
    response = call(headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORISED


def test_another_clients_key_is_refused(make_client):
    make_client("acme")
    _, other_key = make_client("globex")
    response = call({"client": "acme", "api-key": other_key})
    assert response.status_code == 401
    assert response.json() == UNAUTHORISED


def test_revoked_key_is_refused_and_other_keys_still_work(make_client):
    client, first = make_client("acme")
    row, second = api_key_issue(client=client)
    api_key_revoke(api_key=ApiKey.objects.get(client=client, prefix=first[3:15]))
    assert call({"client": "acme", "api-key": first}).json() == UNAUTHORISED
    assert call({"client": "acme", "api-key": second}).json()["key"] == row.prefix


def test_inactive_client_is_refused(make_client):
    client, key = make_client("acme")
    client.is_active = False
    client.save()
    assert call({"client": "acme", "api-key": key}).status_code == 401


def test_last_used_is_recorded(make_client):
    client, key = make_client("acme")
    assert ApiKey.objects.get(client=client).last_used_at is None
    call({"client": "acme", "api-key": key})
    assert ApiKey.objects.get(client=client).last_used_at is not None


def test_only_a_hash_of_the_key_is_stored(make_client):
    client, key = make_client("acme")
    row = ApiKey.objects.get(client=client)
    stored = " ".join(str(value) for value in ApiKey.objects.filter(pk=row.pk).values().first().values())
    assert key not in stored
    assert key[15:] not in stored  # the secret part, not even without its prefix
    assert row.last_four == key[-4:]


def test_the_key_and_client_read_are_the_orms_rows_with_the_secret_decrypted(make_client):
    import base64

    from clients.authentication import _key_from, _key_values

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    client, key = make_client("acme", operator=True, webhook_secret=secret)
    row = _key_from(_key_values(key[3:15]))
    expected = ApiKey.objects.select_related("client").get(client=client)

    assert row is not None
    for field in ApiKey._meta.concrete_fields:
        assert getattr(row, field.attname) == getattr(expected, field.attname), field.name
    for field in Client._meta.concrete_fields:
        assert getattr(row.client, field.attname) == getattr(expected.client, field.attname), field.name
    assert row.client.get_webhook_secret() == secret
    assert row.client.is_operator is True
    assert _key_values("000000000000") is None


def test_a_revoked_key_is_refused_at_once_after_being_used(make_client):
    # The key is remembered after its first use (clients.keycache): the request after a revocation is refused.
    client, key = make_client("acme")
    assert call({"client": "acme", "api-key": key}).status_code == 200
    api_key_revoke(api_key=ApiKey.objects.get(client=client))
    assert call({"client": "acme", "api-key": key}).json() == UNAUTHORISED


@pytest.mark.django_db(transaction=True)
def test_the_key_lookup_checks_a_kept_connection_without_a_select_1(make_client, monkeypatch):
    _, key = make_client("acme")
    checks: list[bool] = []
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(True) or True)
    health_check_pending()
    assert call({"client": "acme", "api-key": key}).status_code == 200
    assert checks == []  # the lookup ran on the kept connection, no SELECT 1 before it
    assert getattr(connection, "health_check_done")  # noqa: B009 (not in Django's type stubs)


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_answered(make_client):
    _, key = make_client("acme")
    before = close_kept_connection_on_the_server()

    response = call({"client": "acme", "api-key": key})

    assert response.status_code == 200
    assert backend_pid() != before


@pytest.mark.django_db(transaction=True)
def test_a_lookup_failing_on_a_working_connection_is_raised_not_run_again(make_client, monkeypatch):
    from clients import authentication

    _, key = make_client("acme")
    calls: list[str] = []

    def failing(prefix: str) -> None:
        calls.append(prefix)
        raise OperationalError("canceling statement due to statement timeout")

    monkeypatch.setattr(authentication, "_key_values", failing)
    health_check_pending()
    request = Request(RequestFactory().get("/whoami", HTTP_CLIENT="acme", HTTP_API_KEY=key))
    with pytest.raises(OperationalError):
        authentication.ApiKeyAuthentication().authenticate(request)
    assert len(calls) == 1


def _secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(b"s" * 32).decode()


def test_authenticating_decrypts_no_secret_and_reading_it_decrypts_once(make_client, monkeypatch):
    from clients import crypto
    from clients.authentication import authenticate_headers

    secret = _secret()
    _, key = make_client("acme", webhook_secret=secret)
    calls: list[str] = []
    decrypt = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: calls.append(token) or decrypt(token))

    found = authenticate_headers({"HTTP_CLIENT": "acme", "HTTP_API_KEY": key})
    assert found is not None
    client = found[0]
    assert calls == []
    assert client.webhook_secret == secret and client.get_webhook_secret() == secret
    assert len(calls) == 1  # decrypted once, then kept as the plaintext
    assert client.get_deferred_fields() == set()


def test_a_client_read_by_the_key_lookup_saves_pickles_and_compares_as_the_orms(make_client):
    import pickle

    from clients import crypto
    from clients.authentication import _key_from, _key_values
    from clients.fields import StillEncrypted

    secret = _secret()
    client, key = make_client("acme", webhook_secret=secret)
    row = _key_from(_key_values(key[3:15]))
    assert row is not None
    assert type(row.client.__dict__["webhook_secret"]) is StillEncrypted
    copy = pickle.loads(pickle.dumps(row.client))
    assert copy.webhook_secret == secret
    # Saved without reading the secret first: the secret stays what it was, encrypted at rest.
    row.client.is_operator = True
    row.client.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM clients_client WHERE id = %s", [client.pk])
        (stored,) = cursor.fetchone()
    assert stored != secret and crypto.is_token(stored)
    reloaded = Client.objects.get(pk=client.pk)
    assert reloaded.is_operator is True and reloaded.webhook_secret == secret
    # Set like any attribute: the value set is what is read and saved.
    row.client.webhook_secret = ""
    row.client.save()
    assert Client.objects.get(pk=client.pk).webhook_secret == ""


def test_a_secret_no_key_decrypts_reads_as_unreadable_when_read(make_client, settings, caplog):
    from clients import crypto
    from clients.authentication import _key_from, _key_values

    _, key = make_client("acme", webhook_secret=_secret())
    settings.SECRET_KEY = "another-key-than-the-one-it-was-encrypted-with"
    settings.TASKENGINE_SECRETS_KEY = ""
    settings.SECRET_KEY_FALLBACKS = []
    row = _key_from(_key_values(key[3:15]))
    assert row is not None  # the lookup itself needs no key
    assert row.client.webhook_secret == crypto.UNREADABLE
    with pytest.raises(crypto.SecretUnreadable):
        row.client.get_webhook_secret()
    assert "cannot be decrypted" in caplog.text
