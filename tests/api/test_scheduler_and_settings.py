"""GET /schedules, PUT /scheduler, POST and GET /settings."""

from __future__ import annotations

from typing import Any

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from settings_app.models import Setting
from settings_app.registry import SPECS
from settings_app.services import setting_get_int
from tests.api.conftest import parse_timestamp

REFERENCE_SCHEDULE = {
    "class": "QueueJobs",
    "every": [60, {"first_in": 5}],
    "queue": "scheduler",
    "description": "Enqueues scheduled jobs that have a run_at time in the past.",
}


# --- /schedules and /scheduler ----------------------------------------------------------------------------


def test_schedules_in_the_reference_shape(api: Any) -> None:
    response = api.get("/schedules")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["result", "schedules"] and body["result"] == "ok"
    assert body["schedules"]["queue_scheduled_jobs"] == REFERENCE_SCHEDULE
    for schedule in body["schedules"].values():
        assert list(schedule) == ["class", "every", "queue", "description"]


def test_schedules_need_a_key(db: Any) -> None:
    assert APIClient().get("/schedules").status_code == 401


def test_operator_disables_and_enables_a_schedule(operator_api: Any) -> None:
    off = operator_api.put("/scheduler", {"schedule": "queue_scheduled_jobs", "active": False}, format="json")

    assert off.status_code == 200
    assert off.json()["result"] == "ok"
    assert "queue_scheduled_jobs" not in off.json()["schedules"]
    assert PeriodicTask.objects.get(name="queue_scheduled_jobs").enabled is False
    assert "queue_scheduled_jobs" not in operator_api.get("/schedules").json()["schedules"]

    on = operator_api.put("/scheduler", {"schedule": "queue_scheduled_jobs", "active": True}, format="json")

    assert "queue_scheduled_jobs" in on.json()["schedules"]
    assert on.json()["schedules"] == sorted(operator_api.get("/schedules").json()["schedules"])
    assert PeriodicTask.objects.get(name="queue_scheduled_jobs").enabled is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"schedule": "no_such_schedule", "active": True}, "no_such_schedule"),
        ({"schedule": "queue_scheduled_jobs", "active": "yes"}, "active"),
        ({"schedule": "queue_scheduled_jobs", "active": 1}, "active"),
        ({"schedule": "queue_scheduled_jobs"}, "active"),
        ({"active": True}, "schedule"),
        ({"schedule": 5, "active": True}, "schedule"),
        ({"schedule": "queue_scheduled_jobs", "active": False, "when": "now"}, "when"),
    ],
)
def test_scheduler_refusals_answer_400(operator_api: Any, payload: Any, field: Any) -> None:
    response = operator_api.put("/scheduler", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]
    assert PeriodicTask.objects.get(name="queue_scheduled_jobs").enabled is True


def test_scheduler_is_for_operators_only(api: Any) -> None:
    response = api.put("/scheduler", {"schedule": "queue_scheduled_jobs", "active": False}, format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "Forbidden: this needs an operator client."}
    assert PeriodicTask.objects.get(name="queue_scheduled_jobs").enabled is True
    assert APIClient().put("/scheduler", {}, format="json").status_code == 401


# --- /settings ----------------------------------------------------------------------------------------------


def test_post_settings_creates_then_updates(operator_api: Any) -> None:
    created = operator_api.post("/settings", {"name": "max_jobs", "setting": "4"}, format="json")
    updated = operator_api.post("/settings", {"name": "max_jobs", "setting": 6}, format="json")

    assert created.status_code == updated.status_code == 200
    assert created.json() == {"result": "ok", "message": "max_jobs setting created"}
    assert updated.json() == {"result": "ok", "message": "max_jobs setting updated"}
    assert setting_get_int("max_jobs") == 6


def test_free_form_setting(operator_api: Any) -> None:
    response = operator_api.post("/settings", {"name": "banner", "setting": "hello"}, format="json")

    assert response.json() == {"result": "ok", "message": "banner setting created"}
    assert Setting.objects.get(name="banner").value == "hello"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "max_jobs", "setting": "many"}, "max_jobs"),
        ({"name": "max_jobs", "setting": -1}, "max_jobs"),
        ({"name": "priority_threshold", "setting": 11}, "priority_threshold"),
        ({"name": "max_jobs", "setting": True}, "max_jobs"),
        ({"name": "max_jobs"}, "setting"),
        ({"name": "max_jobs", "setting": None}, "setting"),
        ({"setting": 3}, "name"),
        ({"name": 3, "setting": 3}, "name"),
        ({"name": "", "setting": 3}, "name"),
        ({"name": "free", "setting": {"a": 1}}, "setting"),
        ({"name": "max_jobs", "setting": 3, "scope": "all"}, "scope"),
    ],
)
def test_settings_refusals_answer_400_and_store_nothing(operator_api: Any, payload: Any, field: Any) -> None:
    response = operator_api.post("/settings", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]
    assert Setting.objects.count() == 0


def test_settings_are_for_operators_only(api: Any) -> None:
    response = api.post("/settings", {"name": "max_jobs", "setting": 9}, format="json")

    assert response.status_code == 403
    assert api.get("/settings").status_code == 403
    assert APIClient().get("/settings").status_code == 401
    assert Setting.objects.count() == 0


def test_get_settings_lists_every_setting_with_value_and_default(operator_api: Any) -> None:
    operator_api.post("/settings", {"name": "max_jobs", "setting": 7}, format="json")
    operator_api.post("/settings", {"name": "banner", "setting": "hi"}, format="json")

    response = operator_api.get("/settings")

    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "ok"
    assert list(body["settings"]) == [*SPECS, "banner"]
    max_jobs = body["settings"]["max_jobs"]
    assert list(max_jobs) == [
        "value",
        "default",
        "documented",
        "description",
        "minimum",
        "maximum",
        "updated_at",
    ]
    assert (max_jobs["value"], max_jobs["default"], max_jobs["documented"]) == (7, 2, True)
    parse_timestamp(max_jobs["updated_at"])
    untouched = body["settings"]["retry_limit"]
    assert (untouched["value"], untouched["default"], untouched["updated_at"]) == (3, 3, None)
    banner = body["settings"]["banner"]
    assert (banner["value"], banner["default"], banner["documented"]) == ("hi", None, False)
