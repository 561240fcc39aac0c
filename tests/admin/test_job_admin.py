"""Job surgery in the admin: filters, search, actions through the services, the job page (issue 7.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient

from clients.models import Client
from jobs.admin import LOG_INLINE_LIMIT
from jobs.engine.bus import RUN_TASK
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from logs.services import job_log
from tests.engine.conftest import Broker

CHANGELIST = "/admin/jobs/job/"


def started_job(submit: Callable[..., Job], broker: Broker, workflow: str = "noop5") -> Job:
    """A job the dispatcher really started, whose first task is published but not run."""
    job = submit(workflow)
    broker.drain(skip=lambda message: message.task == RUN_TASK)
    job.refresh_from_db()
    assert job.queue_state == JobState.STARTED
    return job


def listed_ids(response: Any) -> list[int]:
    return [job.pk for job in response.context["cl"].result_list]


def act(http: HttpClient, action: str, jobs: list[Job], **extra: Any) -> Any:
    return http.post(
        CHANGELIST, {"action": action, "_selected_action": [job.pk for job in jobs], **extra}, follow=True
    )


# --- list -------------------------------------------------------------------------------------------


def test_filters_narrow_the_list(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker, make_client: Callable[..., Any]
) -> None:
    other_client, _ = make_client()
    a = submit("noop", priority=2)
    b = submit("noop5", persist=True)
    c = submit("noop", client=other_client)
    Job.objects.filter(pk=b.pk).update(queue_state=JobState.COMPLETED, failed=True)

    response = admin_http.get(CHANGELIST)
    filters = [spec.title for spec in response.context["cl"].filter_specs]
    assert filters == ["queue state", "failed", "client", "workflow", "priority", "persist"]

    assert listed_ids(admin_http.get(CHANGELIST, {"queue_state__exact": JobState.COMPLETED})) == [b.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"failed__exact": 1})) == [b.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"client__id__exact": other_client.pk})) == [c.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"workflow": "noop5"})) == [b.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"priority": 2})) == [a.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"persist__exact": 1})) == [b.pk]


def test_search_matches_an_id_or_a_content_id_exactly(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker
) -> None:
    wanted = submit("noop", parameters={"content_id": "ep-0042", "folder": "x"})
    numeric = submit("noop", parameters={"content_id": 777})
    submit("noop", parameters={"content_id": "ep-00421"})

    assert listed_ids(admin_http.get(CHANGELIST, {"q": "ep-0042"})) == [wanted.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"q": str(wanted.pk)})) == [wanted.pk]
    assert listed_ids(admin_http.get(CHANGELIST, {"q": "777"})) == [numeric.pk]
    # Exact matches only: a fragment is not a content id (and would need a full scan).
    assert listed_ids(admin_http.get(CHANGELIST, {"q": "ep-004"})) == []
    assert listed_ids(admin_http.get(CHANGELIST, {"q": "x"})) == []


# --- actions ----------------------------------------------------------------------------------------


def test_pause_a_started_job_frees_its_slot_and_resume_queues_it(
    admin_http: HttpClient,
    submit: Callable[..., Job],
    broker: Broker,
    committed: Callable[[], Any],
    notices: Callable[[Any], list[str]],
) -> None:
    job = started_job(submit, broker)
    with committed():
        response = act(admin_http, "pause", [job])
    assert notices(response) == ["1 job(s) updated."]
    job.refresh_from_db()
    assert job.queue_state == JobState.PAUSED
    assert not Job.objects.filter(queue_state=JobState.STARTED).exists()

    with committed():
        response = act(admin_http, "resume", [job])
    assert notices(response) == ["1 job(s) updated."]
    broker.drain(skip=lambda message: message.task == RUN_TASK)
    job.refresh_from_db()
    assert job.queue_state == JobState.STARTED  # resumed, and the dispatcher started it again


def test_refusals_are_messages_naming_the_job_not_errors(
    admin_http: HttpClient,
    submit: Callable[..., Job],
    broker: Broker,
    notices: Callable[[Any], list[str]],
) -> None:
    queued = submit("noop")
    done = submit("noop")
    Job.objects.filter(pk=done.pk).update(queue_state=JobState.COMPLETED)

    response = act(admin_http, "resume", [queued])
    assert response.status_code == 200
    assert notices(response) == [
        f"job {queued.pk}: cannot change queue_state from queued to queued: it is queued already"
    ]
    response = act(admin_http, "break_jobs", [done])
    assert notices(response) == [
        f"job {done.pk}: cannot change queue_state from completed to broken: rerun the job instead"
    ]
    response = act(admin_http, "move_to_top", [done])
    assert notices(response) == [f"job {done.pk}: cannot change top_of_queue of a completed job"]
    assert Job.objects.get(pk=done.pk).queue_state == JobState.COMPLETED
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.QUEUED


def test_break_cancels_the_waiting_tasks(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    job = started_job(submit, broker)
    with committed():
        act(admin_http, "break_jobs", [job])
    job.refresh_from_db()
    assert job.queue_state == JobState.BROKEN
    assert job.finished_at is not None
    assert set(Task.objects.filter(job=job).values_list("state", flat=True)) == {TaskState.CANCELLED}


def test_rerun_breaks_the_original_and_queues_a_copy(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker
) -> None:
    job = submit("noop", priority=3, parameters={"content_id": "c1"})
    act(admin_http, "rerun", [job])
    assert Job.objects.get(pk=job.pk).queue_state == JobState.BROKEN
    copy = Job.objects.get(rerun_of=job)
    assert (copy.queue_state, copy.priority, copy.parameters) == (JobState.QUEUED, 3, {"content_id": "c1"})


def test_move_to_the_top_changes_the_dispatch_order(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker, setting: Callable[..., None]
) -> None:
    setting(max_jobs=0)  # nothing starts: the order of the queue is what is tested
    first = submit("noop", priority=1)
    last = submit("noop", priority=9)
    act(admin_http, "move_to_top", [last])
    assert Job.objects.get(pk=last.pk).top_of_queue is True

    setting(max_jobs=1)
    broker.drain(skip=lambda message: message.task == RUN_TASK)
    assert Job.objects.get(pk=last.pk).queue_state == JobState.STARTED
    assert Job.objects.get(pk=first.pk).queue_state == JobState.QUEUED


def test_set_priority_asks_for_the_value_then_applies_it(
    admin_http: HttpClient,
    submit: Callable[..., Job],
    broker: Broker,
    notices: Callable[[Any], list[str]],
) -> None:
    a = submit("noop", priority=5)
    b = submit("noop", priority=6)
    done = submit("noop", priority=5)
    Job.objects.filter(pk=done.pk).update(queue_state=JobState.COMPLETED)
    selected = [a, b, done]

    page = act(admin_http, "set_priority", selected)
    assert page.templates[0].name == "admin/jobs/job/set_priority.html"
    assert "Set the priority" in page.content.decode()
    assert [job.priority for job in Job.objects.filter(pk__in=[a.pk, b.pk])] == [6, 5]  # nothing yet

    wrong = act(admin_http, "set_priority", selected, apply="1", priority="11")
    assert wrong.context["form"].errors == {"priority": ["Ensure this value is less than or equal to 10."]}
    assert Job.objects.get(pk=a.pk).priority == 5

    response = act(admin_http, "set_priority", selected, apply="1", priority="2")
    assert notices(response) == [
        f"job {done.pk}: cannot change priority of a completed job",
        "2 job(s) updated.",
    ]
    assert Job.objects.get(pk=a.pk).priority == 2
    assert Job.objects.get(pk=b.pk).priority == 2
    assert Job.objects.get(pk=done.pk).priority == 5


def test_persist_and_unpersist(admin_http: HttpClient, submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    act(admin_http, "persist", [job])
    assert Job.objects.get(pk=job.pk).persist is True
    act(admin_http, "unpersist", [job])
    assert Job.objects.get(pk=job.pk).persist is False


def test_jobs_cannot_be_added_edited_around_the_services_or_deleted(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker
) -> None:
    job = submit("noop", priority=5)
    assert admin_http.get("/admin/jobs/job/add/").status_code == 403
    assert admin_http.get(f"/admin/jobs/job/{job.pk}/delete/").status_code == 403
    # Every field is read-only on the page: a crafted POST changes nothing.
    admin_http.post(f"/admin/jobs/job/{job.pk}/change/", {"priority": "1", "queue_state": "2"})
    job.refresh_from_db()
    assert (job.priority, job.queue_state) == (5, JobState.QUEUED)


# --- the job page ------------------------------------------------------------------------------------


def test_job_page_shows_tasks_and_the_tail_of_the_log(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker
) -> None:
    job = started_job(submit, broker)
    for number in range(LOG_INLINE_LIMIT + 20):
        job_log(job.pk, f"progress line {number}", progname="test")
    total = LogEntry.objects.filter(job=job).count()

    response = admin_http.get(f"/admin/jobs/job/{job.pk}/change/")
    page = response.content.decode()
    task_ids = list(Task.objects.filter(job=job).order_by("position").values_list("pk", flat=True))
    assert len(task_ids) == 5
    task_formset, log_formset = (formset.formset for formset in response.context["inline_admin_formsets"])
    assert [form.instance.pk for form in task_formset.forms] == task_ids
    shown = [form.instance.message for form in log_formset.forms]
    assert len(shown) == LOG_INLINE_LIMIT
    assert shown[-1] == f"progress line {LOG_INLINE_LIMIT + 19}"  # the newest, last: in log order
    assert "progress line 0" not in shown
    assert f"?job__id__exact={job.pk}" in page
    assert f"The full log ({total} entries)" in page
    assert 'name="logentry_set-0-message"' not in page  # read-only: no inputs
    assert 'name="tasks-0-name"' not in page


def test_full_log_lists_every_entry_of_one_job_read_only(
    admin_http: HttpClient, submit: Callable[..., Job], broker: Broker
) -> None:
    job = submit("noop")
    other = submit("noop")
    for number in range(3):
        job_log(job.pk, f"line {number}", progname="test")
    response = admin_http.get("/admin/logs/logentry/", {"job__id__exact": job.pk})
    entries = list(response.context["cl"].result_list)
    assert [entry.job_id for entry in entries] == [job.pk] * 4  # the creation entry and three lines
    assert [entry.message for entry in entries[1:]] == ["line 0", "line 1", "line 2"]
    assert other.pk not in {entry.job_id for entry in entries}
    entry = entries[0]
    assert admin_http.get("/admin/logs/logentry/add/").status_code == 403
    admin_http.post(f"/admin/logs/logentry/{entry.pk}/change/", {"message": "rewritten"})
    assert LogEntry.objects.get(pk=entry.pk).message != "rewritten"
    assert admin_http.get(f"/admin/logs/logentry/{entry.pk}/delete/").status_code == 403


@pytest.mark.parametrize("path", ["/admin/jobs/task/", "/admin/logs/logentry/", "/admin/jobs/job/"])
def test_lists_render(admin_http: HttpClient, te_client: Client, path: str) -> None:
    response = admin_http.get(path)
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
