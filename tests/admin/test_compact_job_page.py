"""The job page as an operator reads it: tasks first, progress with at most one decimal, times to the
second, the creation entry's headers folded (here and in the full log), every field still on the page;
the admin's names and icon. The page's height is measured in a real browser (tests/browser)."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape

from django.test import Client as HttpClient

from jobs.admin import JobAdmin
from jobs.models import Job
from logs.display import fold
from tests import factories

from .test_job_admin import started_job


def page_of(http: HttpClient, job: Job) -> str:
    response = http.get(f"/admin/jobs/job/{job.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_tasks_come_first_with_their_progress_rounded_and_times_to_the_second(
    admin_http: HttpClient, submit: Callable[..., Job], broker
) -> None:
    job = started_job(submit, broker)
    first = job.tasks.order_by("position").first()
    assert first is not None
    first.progress = 31.370715999999277
    first.save(update_fields=["progress"])

    page = page_of(admin_http, job)

    assert page.index('id="te-tasks"') < page.index('class="module aligned') < page.index('id="te-log"')
    tasks = page[page.index('id="te-tasks"') : page.index('class="module aligned')]
    assert "31.4 %" in tasks and "31.37" not in tasks
    times = re.findall(r'<time datetime="[^"]+" title="([^"]+)">([^<]+)</time>', page)
    assert times
    for title, shown in times:
        assert re.fullmatch(r"\d\d:\d\d:\d\d", shown)
        assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d {shown}\.\d{{3}} UTC", title)


def test_the_task_admin_shows_progress_rounded(admin_http: HttpClient, submit: Callable[..., Job]) -> None:
    job = submit("noop")
    task = factories.task(job, progress=99.96)

    page = admin_http.get(f"/admin/jobs/task/{task.pk}/change/").content.decode()

    assert "100 %" in page and "99.96" not in page


def test_the_creation_entry_is_folded_on_the_job_page_and_in_the_full_log(
    admin_http: HttpClient, submit: Callable[..., Job]
) -> None:
    job = submit(
        "noop", request_meta={"headers": {"HTTP_USER_AGENT": "curl/7.88.1", "HTTP_API_KEY": "x" * 40}}
    )
    entry = job.log_entries.get()
    folded = fold(entry.message)
    assert folded is not None and folded.summary.startswith("job created by POST /job")
    assert folded.summary.endswith("(2 request headers)") and "curl" not in folded.summary

    page = page_of(admin_http, job)
    log = unescape(page[page.index('id="te-log"') :])
    assert f"<details><summary>{folded.summary}</summary><pre>" in log
    assert '"HTTP_USER_AGENT": "curl/7.88.1"' in log  # behind the summary, pretty-printed

    full_log = unescape(admin_http.get("/admin/logs/logentry/", {"job__id__exact": job.pk}).content.decode())
    assert folded.summary in full_log and "HTTP_USER_AGENT" not in full_log


def test_every_job_field_is_on_the_page(admin_http: HttpClient, submit: Callable[..., Job]) -> None:
    shown = {
        name
        for _, options in JobAdmin.fieldsets
        for line in options["fields"]
        for name in (line if isinstance(line, tuple) else (line,))
    }
    assert {field.name for field in Job._meta.fields} <= shown


def test_the_page_saves_as_rendered(admin_http: HttpClient, submit: Callable[..., Job], broker) -> None:
    # The compact tables keep their formsets' management forms: "Save" on the page works.
    job = started_job(submit, broker)
    page = page_of(admin_http, job)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    assert "tasks-TOTAL_FORMS" in hidden and "log_entries-TOTAL_FORMS" in hidden

    response = admin_http.post(f"/admin/jobs/job/{job.pk}/change/", {**hidden, "_save": "Save"})

    assert response.status_code == 302, response.content.decode()[:2000]


def test_the_admin_has_the_engines_names_and_icon(admin_http: HttpClient) -> None:
    index = admin_http.get("/admin/").content.decode()
    assert '<div id="site-name"><a href="/admin/">Task Engine</a></div>' in index
    assert "<title>Operations | Task Engine admin</title>" in index
    assert '<link rel="icon" href="/favicon.ico" sizes="32x32">' in index
    for path, kind in (("/favicon.ico", "image/"), ("/favicon.svg", "image/svg+xml")):
        response = admin_http.get(path)
        assert response.status_code == 200 and response["Content-Type"].startswith(kind)
        body = response.getvalue()
        assert body.startswith(b"\x00\x00\x01\x00" if path.endswith(".ico") else b"<svg")
