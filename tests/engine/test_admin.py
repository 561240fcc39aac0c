"""The jobs admin goes through the services and validates client definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from clients.models import Client
from jobs import admin as jobs_admin
from jobs import services
from jobs.admin import WorkflowDefinitionForm
from jobs.models import Job, WorkflowDefinition
from jobs.states import JobState
from taskengine_site.errors import DomainError
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


def test_the_definition_admin_saves_the_normalised_definition_through_the_service(
    admin_http: HttpClient, te_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[str] = []

    def spy(**kwargs: Any) -> WorkflowDefinition:
        saved.append(kwargs["name"])
        return services.workflow_definition_save(**kwargs)

    monkeypatch.setattr(jobs_admin, "workflow_definition_save", spy)
    add = "/admin/jobs/workflowdefinition/add/"
    response = admin_http.post(add, {"client": te_client.pk, "name": "mine", "steps": '["noop", "sleep"]'})
    assert response.status_code == 302
    row = WorkflowDefinition.objects.get(name="mine")
    assert row.steps == [
        {"step": "noop", "queue": "work", "parameters": {}},
        {"step": "sleep", "queue": "work", "parameters": {}},
    ]
    change = f"/admin/jobs/workflowdefinition/{row.pk}/change/"
    response = admin_http.post(change, {"client": te_client.pk, "name": "mine", "steps": '["noop"]'})
    assert response.status_code == 302
    assert WorkflowDefinition.objects.get(pk=row.pk).steps == [
        {"step": "noop", "queue": "work", "parameters": {}}
    ]
    assert saved == ["mine", "mine"]


def test_the_definition_service_refuses_what_cannot_run_or_be_stored(te_client: Client) -> None:
    save = services.workflow_definition_save
    with pytest.raises(DomainError, match=r"^step 1: unknown step 'nope'$"):
        save(client=te_client, name="mine", steps=["noop", "nope"])
    with pytest.raises(DomainError, match=r"^a workflow definition is a non-empty list of steps$"):
        save(client=te_client, name="mine", steps=[])
    with pytest.raises(DomainError, match=r"^steps\[0\]\.parameters\.x: "):
        save(client=te_client, name="mine", steps=[{"step": "noop", "parameters": {"x": "\x00"}}])
    save(client=te_client, name="mine", steps=["noop"])
    with pytest.raises(
        DomainError, match=f"^name: client {te_client.name} already has a workflow named 'mine'$"
    ):
        save(client=te_client, name="mine", steps=["noop"])
    assert WorkflowDefinition.objects.filter(client=te_client).count() == 1


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
