"""The jobs admin goes through the services and validates client definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from clients.models import Client
from jobs.admin import WorkflowDefinitionForm
from jobs.models import Job, WorkflowDefinition
from jobs.states import JobState
from tests.engine.conftest import Broker


@pytest.fixture
def admin_http(db: None) -> HttpClient:
    user = User.objects.create_superuser("root-admin", "admin@example.com", "pw-for-tests-only")
    http = HttpClient()
    http.force_login(user)
    return http


def test_definition_form_refuses_unknown_steps(te_client: Client) -> None:
    form = WorkflowDefinitionForm(
        data={"client": te_client.pk, "name": "mine", "steps": '[{"step": "noop"}, {"step": "nope"}]'}
    )
    assert not form.is_valid()
    assert form.errors["steps"] == ["step 1: unknown step 'nope'"]


def test_definition_form_saves_the_normalised_definition(te_client: Client) -> None:
    form = WorkflowDefinitionForm(data={"client": te_client.pk, "name": "mine", "steps": '["noop", "sleep"]'})
    assert form.is_valid(), form.errors
    form.save()
    assert WorkflowDefinition.objects.get(name="mine").steps == [
        {"step": "noop", "queue": "work", "parameters": {}},
        {"step": "sleep", "queue": "work", "parameters": {}},
    ]


def test_admin_actions_use_the_state_machine(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    queued = submit("noop")
    done = submit("noop")
    Job.objects.filter(pk=done.pk).update(queue_state=JobState.COMPLETED)
    with committed():
        response = admin_http.post(
            "/admin/jobs/job/",
            {"action": "pause", "_selected_action": [queued.pk, done.pk]},
            follow=True,
        )
    notices = [str(m) for m in response.context["messages"]]
    assert notices == [
        f"job {done.pk}: cannot change queue_state from completed to paused",
        "1 job(s) updated.",
    ]
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.PAUSED
    assert Job.objects.get(pk=done.pk).queue_state == JobState.COMPLETED


def test_admin_rerun(admin_http: HttpClient, submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    admin_http.post("/admin/jobs/job/", {"action": "rerun", "_selected_action": [job.pk]})
    assert Job.objects.get(pk=job.pk).queue_state == JobState.BROKEN
    assert Job.objects.get(rerun_of=job).queue_state == JobState.QUEUED


def test_admin_pages_render(admin_http: HttpClient, submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop5")
    broker.drain()
    task = job.tasks.order_by("position").first()
    assert task is not None
    pages = {
        # the job list shows the job; its page its tasks and its log; the task list the tasks
        "/admin/jobs/job/": [f"/admin/jobs/job/{job.pk}/change/", "noop5"],
        f"/admin/jobs/job/{job.pk}/change/": [
            "job has completed successfully",
            "Task &#x27;noop&#x27; started",
        ],
        "/admin/jobs/task/": [f"/admin/jobs/task/{task.pk}/change/"],
        "/admin/jobs/workflowdefinition/add/": ['name="steps"', 'name="client"'],
    }
    for url, expected in pages.items():
        response = admin_http.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        for fragment in expected:
            assert fragment in text, (url, fragment)
