"""The admin's job page in a real browser (headless Chromium): a 7-step job, submitted through the API
and run by the engine, fits a compact page; the tasks come first, times show seconds (milliseconds on
hover), the request's headers are folded. The branding and the favicon are the engine's."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from jobs.engine import runner
from jobs.engine.dispatcher import dispatch
from jobs.models import Job, Task
from jobs.states import JobState
from jobs.workflows import registry
from tests.e2e.conftest import empty_queues

PASSWORD = "operator-pw-for-tests"  # a throwaway account of the test database
SEVEN_STEPS = [{"step": "sleep", "parameters": {"seconds": 0.05}} for _ in range(7)]
MAX_PAGE_HEIGHT = 2000


@pytest.fixture
def seven_step_job(
    transactional_db: None, live_server: Any, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Job]:
    """A job of a 7-step common workflow, submitted with curl's headers and run to its end in-process."""
    monkeypatch.setitem(registry.COMMON_DEFINITIONS, "seven", SEVEN_STEPS)
    client, key = make_client("broadcaster")
    answer = requests.post(
        f"{live_server.url}/job",
        headers={"client": client.name, "api-key": key, "User-Agent": "curl/7.88.1", "Accept": "*/*"},
        json={"job": {"workflow": "seven"}, "parameters": {"content_id": "ep-7"}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    job = Job.objects.get(pk=answer.json()["id"])
    assert dispatch() == [job.pk]
    first = Task.objects.filter(job=job).order_by("position").first()
    assert first is not None
    runner.run_task(first.pk)  # the worker chains the seven steps itself
    job.refresh_from_db()
    assert (job.queue_state, job.failed, job.tasks.count()) == (JobState.COMPLETED, False, 7)
    yield job
    empty_queues()  # no worker ran here: drop what the engine published


def _login(browser: Any, live_server: Any, target: str) -> None:
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    browser.get(f"{live_server.url}/admin/login/?next={target}")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def test_the_job_page_of_a_seven_step_job_is_compact(
    live_server: Any, browser: Any, seven_step_job: Job
) -> None:
    job = seven_step_job
    wait = WebDriverWait(browser, 20)
    _login(browser, live_server, f"/admin/jobs/job/{job.pk}/change/")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "te-log")))
    browser.set_window_size(1280, 1000)

    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = Path(os.environ.get("TASKENGINE_SCREENSHOT_DIR", tempfile.gettempdir())) / "taskengine-job.png"
    browser.set_window_size(1280, max(1000, height))
    browser.save_screenshot(str(shot))
    assert height < MAX_PAGE_HEIGHT, f"the job page is {height} px tall (screenshot: {shot})"

    tasks = browser.find_element(By.ID, "te-tasks")
    log = browser.find_element(By.ID, "te-log")
    fields = browser.find_element(By.CSS_SELECTOR, "fieldset.module.aligned")  # the job's own fields
    assert tasks.location["y"] < fields.location["y"] < log.location["y"]  # tasks first
    task_rows = tasks.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(task_rows) == 7
    log_rows = log.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(log_rows) == job.log_entries.count()
    # Every message once: no caption row repeating it above its cells.
    assert sum("'sleep' completed successfully" in row.text for row in log_rows) == 7
    assert browser.page_source.count("&#x27;sleep&#x27; completed successfully") <= 7 + 1

    # Times to the second, the milliseconds on hover.
    first_time = log_rows[0].find_element(By.TAG_NAME, "time")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", first_time.text)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", first_time.get_attribute("title"))

    # The creation entry: its body is shown, its request headers are folded until asked for.
    created = log_rows[0]
    assert "job created by POST /job" in created.text and '"content_id": "ep-7"' in created.text
    details = created.find_element(By.TAG_NAME, "details")
    assert details.get_attribute("open") is None
    assert "HTTP_USER_AGENT" not in created.text
    details.find_element(By.TAG_NAME, "summary").click()
    assert "HTTP_USER_AGENT" in created.text and "curl/7.88.1" in created.text


def test_the_admin_is_branded_with_a_favicon(live_server: Any, browser: Any, transactional_db: None) -> None:
    wait = WebDriverWait(browser, 20)
    _login(browser, live_server, "/admin/")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "site-name")))
    assert browser.find_element(By.ID, "site-name").text == "Task Engine"
    assert browser.title.endswith("| Task Engine admin")
    icons = browser.find_elements(By.CSS_SELECTOR, "link[rel=icon]")
    assert icons, "no favicon link"
    for icon in icons:
        answer = requests.get(icon.get_attribute("href"), timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/")
    # What a browser asks for by itself, on any page.
    ico = requests.get(f"{live_server.url}/favicon.ico", timeout=10)
    assert ico.status_code == 200
    assert ico.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's header
