"""Settings, schedules, clients with their keys and workflow definitions in the admin (issue 7.1)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.test import Client as HttpClient
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from clients.models import ApiKey, Client
from clients.services import api_key_issue
from jobs.engine.bus import RUN_TASK
from jobs.models import Job, WorkflowDefinition
from jobs.states import JobState
from scheduling.beat import schedules_sync
from settings_app.models import Setting
from settings_app.registry import SPECS
from tests.engine.conftest import Broker

SETTINGS = "/admin/settings_app/setting/"
KEY_NOTICE = re.compile(r"\(shown only this once\): (\S+)$")


# --- settings ---------------------------------------------------------------------------------------


def test_settings_list_shows_every_documented_setting_with_its_default(admin_http: HttpClient) -> None:
    Setting.objects.create(name="max_jobs", value="7")
    response = admin_http.get(SETTINGS)
    documented = {item["name"]: item for item in response.context["documented"]}
    assert list(documented) == list(SPECS)
    assert (documented["max_jobs"]["value"], documented["max_jobs"]["default"]) == (
        7,
        SPECS["max_jobs"].default,
    )
    assert documented["retry_limit"]["value"] == SPECS["retry_limit"].default  # never set: its default
    page = response.content.decode()
    assert "Documented settings" in page
    assert f"{SETTINGS}add/?name=retry_limit" in page  # one click to set an unset one


def test_add_form_is_prefilled_with_the_default(admin_http: HttpClient) -> None:
    response = admin_http.get(f"{SETTINGS}add/", {"name": "retry_delay"})
    assert response.context["adminform"].form.initial == {"name": "retry_delay", "value": "5"}


def test_a_value_the_api_refuses_is_refused_with_the_same_message(admin_http: HttpClient) -> None:
    response = admin_http.post(f"{SETTINGS}add/", {"name": "max_jobs", "value": "lots"})
    assert response.context["adminform"].form.errors == {
        "value": ["setting: max_jobs must be an integer, got 'lots'"]
    }
    response = admin_http.post(f"{SETTINGS}add/", {"name": "max_jobs", "value": "20000"})
    assert response.context["adminform"].form.errors == {
        "value": ["setting: max_jobs must be between 0 and 10000, got 20000"]
    }
    assert not Setting.objects.filter(name="max_jobs").exists()


def test_saving_goes_through_the_service_and_its_effects(
    admin_http: HttpClient,
    submit: Callable[..., Job],
    broker: Broker,
    setting: Callable[..., None],
    committed: Callable[[], Any],
) -> None:
    setting(max_jobs=0)
    job = submit("noop")
    broker.drain(skip=lambda message: message.task == RUN_TASK)
    assert Job.objects.get(pk=job.pk).queue_state == JobState.QUEUED  # no slot

    row = Setting.objects.get(name="max_jobs")
    with committed():
        response = admin_http.post(f"{SETTINGS}{row.pk}/change/", {"value": " 1 "})
    assert response.status_code == 302
    assert Setting.objects.get(name="max_jobs").value == "1"  # normalised like the API does
    # The service's effect: a new max_jobs dispatches, so the waiting job starts.
    broker.drain(skip=lambda message: message.task == RUN_TASK)
    assert Job.objects.get(pk=job.pk).queue_state == JobState.STARTED


def test_schedule_interval_from_the_admin_reaches_beat(
    admin_http: HttpClient, committed: Callable[[], Any]
) -> None:
    schedules_sync()
    with committed():
        admin_http.post(f"{SETTINGS}add/", {"name": "schedule_interval", "value": "17"})
    task = PeriodicTask.objects.select_related("interval").get(name="queue_scheduled_jobs")
    assert task.interval is not None
    assert task.interval.every == 17


def test_settings_are_not_deleted_and_names_not_changed(admin_http: HttpClient) -> None:
    row = Setting.objects.create(name="retry_limit", value="2")
    assert admin_http.get(f"{SETTINGS}{row.pk}/delete/").status_code == 403
    admin_http.post(f"{SETTINGS}{row.pk}/change/", {"name": "other", "value": "4"})
    row.refresh_from_db()
    assert (row.name, row.value) == ("retry_limit", "4")


def test_free_form_settings_are_kept_as_text(admin_http: HttpClient) -> None:
    admin_http.post(f"{SETTINGS}add/", {"name": "team_channel", "value": "#ops"})
    assert Setting.objects.get(name="team_channel").value == "#ops"


# --- schedules (django-celery-beat's own admin) ------------------------------------------------------


def test_beat_schedules_are_reachable_and_toggle(admin_http: HttpClient) -> None:
    schedules_sync()
    response = admin_http.get("/admin/django_celery_beat/periodictask/")
    assert response.status_code == 200
    names = {task.name for task in response.context["cl"].result_list}
    assert {"queue_scheduled_jobs", "reconcile", "cleanup"} <= names
    cleanup = PeriodicTask.objects.get(name="cleanup")
    admin_http.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "disable_tasks", "_selected_action": [cleanup.pk]},
    )
    assert PeriodicTask.objects.get(name="cleanup").enabled is False


# --- clients and API keys -----------------------------------------------------------------------------


def _key_from(response: Any) -> str:
    for message in response.context["messages"]:
        found = KEY_NOTICE.search(str(message))
        if found:
            return found.group(1)
    raise AssertionError("no key shown")


def _api(name: str, key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_CLIENT=name, HTTP_API_KEY=key)
    return api


def test_client_added_in_the_admin_gets_a_key_shown_once_that_works(admin_http: HttpClient) -> None:
    response = admin_http.post(
        "/admin/clients/client/add/",
        {
            "name": "acme",
            "is_active": "on",
            "webhook_secret": "",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    key = _key_from(response)
    client = Client.objects.get(name="acme")
    assert _api("acme", key).get("/jobs").status_code == 200
    stored = ApiKey.objects.get(client=client)
    assert key not in {stored.key_hash, stored.prefix}  # only a hash is kept
    page = admin_http.get(f"/admin/clients/client/{client.pk}/change/").content.decode()
    assert key not in page  # shown once: never again

    response = admin_http.post(
        "/admin/clients/client/", {"action": "issue_api_key", "_selected_action": [client.pk]}, follow=True
    )
    second = _key_from(response)
    assert second != key
    assert _api("acme", second).get("/jobs").status_code == 200

    first_row = ApiKey.objects.filter(client=client).order_by("id").first()
    assert first_row is not None
    admin_http.post("/admin/clients/apikey/", {"action": "revoke", "_selected_action": [first_row.pk]})
    assert _api("acme", key).get("/jobs").status_code == 401
    assert _api("acme", second).get("/jobs").status_code == 200


# --- workflow definitions -------------------------------------------------------------------------------


def test_workflow_definition_is_validated_and_then_usable(
    admin_http: HttpClient, te_client: Client, make_client: Callable[..., Any]
) -> None:
    url = "/admin/jobs/workflowdefinition/add/"
    response = admin_http.post(url, {"client": te_client.pk, "name": "mine", "steps": '[{"step": "nope"}]'})
    assert response.context["adminform"].form.errors == {"steps": ["step 0: unknown step 'nope'"]}
    assert not WorkflowDefinition.objects.exists()

    response = admin_http.post(url, {"client": te_client.pk, "name": "mine", "steps": '["noop", "noop"]'})
    assert response.status_code == 302
    # That client can now submit the workflow; another client cannot.
    _, own_key = api_key_issue(client=te_client)
    body = {"client": te_client.name, "job": {"workflow": "mine"}, "parameters": {}}
    accepted = _api(te_client.name, own_key).post("/job", body, format="json")
    assert accepted.status_code == 200, accepted.content
    assert Job.objects.get(pk=accepted.json()["id"]).workflow == "mine"
    stranger, stranger_key = make_client()
    refused = _api(stranger.name, stranger_key).post("/job", {**body, "client": stranger.name}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"] == "workflow: unknown workflow 'mine'"
