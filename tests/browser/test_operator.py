"""An operator in a real browser (headless Chromium): logs in, pauses a started job from the admin, sees
it paused, then watches the queue page (issue 7.5)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from jobs.engine.dispatcher import dispatch
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState
from settings_app.services import setting_set
from tests.e2e.conftest import empty_queues

PASSWORD = "operator-pw-for-tests"  # a throwaway account of the test database


@pytest.fixture
def jobs(transactional_db: None, make_client: Callable[..., Any]) -> Iterator[dict[str, Job]]:
    """A started job (really dispatched), one queued behind it and one scheduled for later."""
    client, _key = make_client("broadcaster")
    setting_set(name="max_jobs", value=1)
    started, _ = job_submit(client=client, workflow="noop5", parameters={"content_id": "live-1"})
    assert dispatch() == [started.pk]
    queued, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "next-2"}, priority=2)
    scheduled, _ = job_submit(
        client=client, workflow="noop", parameters={}, run_at=timezone.now() + timedelta(hours=3)
    )
    yield {"started": started, "queued": queued, "scheduled": scheduled}
    empty_queues()  # no worker ran here: drop what dispatch published


def test_operator_pauses_a_started_job_then_watches_the_queue(
    live_server: Any, browser: Any, jobs: dict[str, Job]
) -> None:
    User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    started = jobs["started"]
    wait = WebDriverWait(browser, 20)

    browser.get(f"{live_server.url}/admin/login/?next=/admin/jobs/job/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "changelist")))
    # The admin's own stylesheet was served (from the static files), not a bare page.
    assert (
        browser.execute_script("return getComputedStyle(document.getElementById('header')).display")
        != "inline"
    )

    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{started.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("pause")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    message = wait.until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li"))
    )
    assert message.text == "1 job(s) updated."
    row = browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{started.pk}']")
    cells = row.find_element(By.XPATH, "ancestor::tr").find_elements(By.TAG_NAME, "td")
    assert "paused" in [cell.text for cell in cells]
    assert Job.objects.get(pk=started.pk).queue_state == JobState.PAUSED

    browser.get(f"{live_server.url}/queue/")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "te-queued")))

    def ids(section: str) -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, f"#{section} tbody tr td:first-child")
        return [cell.text for cell in rows]

    assert ids("te-started") == ["none"]  # the paused job left its slot
    assert ids("te-queued") == [str(jobs["queued"].pk)]
    assert ids("te-scheduled") == [str(jobs["scheduled"].pk)]
    assert browser.find_element(By.ID, "te-used").text == "0"
    assert browser.find_element(By.ID, "te-max").text == "1"
    # The page refreshes itself from /queue/data: the update time replaces "now".
    wait.until(lambda driver: driver.find_element(By.ID, "te-updated").text not in ("now", ""))
    assert not browser.find_element(By.ID, "te-updated").text.startswith("failed")
    assert ids("te-queued") == [str(jobs["queued"].pk)]

    shot = Path(os.environ.get("TASKENGINE_SCREENSHOT_DIR", tempfile.gettempdir())) / "taskengine-queue.png"
    browser.set_window_size(1280, 1000)
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
