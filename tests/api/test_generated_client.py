"""A client generated from the engine's own /openapi.json by a tool the project did not write
(openapi-python-client) submits, reads and lists jobs against a live server, typed, as the README shows.

The API authenticates with two headers (``client`` and ``api-key``); the generator's
``AuthenticatedClient`` sends one, so the README's way is ``Client(headers=...)``.
"""

from __future__ import annotations

import datetime
import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from settings_app.services import setting_set
from tests.e2e.conftest import empty_queues

PACKAGE = "te_generated_client"


def generate(live_server: Any, folder: Path) -> Any:
    """Generate the client package from the live server's schema into ``folder`` and import it."""
    schema = requests.get(f"{live_server.url}/openapi.json", timeout=30)
    assert schema.status_code == 200
    (folder / "openapi.json").write_bytes(schema.content)
    # No post hooks: formatting the generated code is not what is under test.
    (folder / "config.yml").write_text("post_hooks: []\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(folder / "openapi.json"),
            "--output-path",
            str(folder / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(folder / "config.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output and "Error" not in output, output  # every path and schema generated
    sys.path.insert(0, str(folder))
    return importlib.import_module(PACKAGE)


@pytest.fixture
def generated(live_server: Any, tmp_path: Path) -> Any:
    try:
        yield generate(live_server, tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]
        empty_queues()  # no worker here: drop the dispatch the submission published


def test_the_generated_client_submits_reads_and_lists_a_job(
    live_server: Any, generated: Any, make_client: Callable[..., Any]
) -> None:
    setting_set(name="max_jobs", value=0)  # no worker: the job stays queued
    client_row, key = make_client()
    job_submit = importlib.import_module(f"{PACKAGE}.api.jobs.job_submit")
    job_retrieve = importlib.import_module(f"{PACKAGE}.api.jobs.job_retrieve")
    job_list = importlib.import_module(f"{PACKAGE}.api.jobs.job_list")
    models = importlib.import_module(f"{PACKAGE}.models")

    # As the README shows it: both headers on a plain Client.
    api = generated.Client(base_url=live_server.url, headers={"client": client_row.name, "api-key": key})
    body = models.JobSubmit.from_dict(
        {"job": {"workflow": "noop5", "priority": 3}, "parameters": {"content_id": "generated-1"}}
    )
    accepted = job_submit.sync(client=api, body=body)
    assert isinstance(accepted, models.Accepted)
    assert accepted.result == "accepted" and isinstance(accepted.id, int)

    job = job_retrieve.sync(accepted.id, client=api)
    assert isinstance(job, models.JobDetail)
    assert (job.id, job.client, job.workflow, job.priority) == (accepted.id, client_row.name, "noop5", 3)
    assert job.queue_state == models.QueueStateEnum.QUEUED
    assert job.parameters.to_dict() == {"content_id": "generated-1"}
    assert isinstance(job.created_at, datetime.datetime) and job.run_at == job.created_at

    with_tasks = job_retrieve.sync(accepted.id, client=api, tasks=True)
    assert isinstance(with_tasks, models.JobDetail) and with_tasks.tasks == []  # not started yet

    listed = job_list.sync(client=api, limit=5, search="generated-1")
    assert isinstance(listed, list) and [item.id for item in listed] == [accepted.id]
    assert isinstance(listed[0], models.JobListItem)

    missing = job_retrieve.sync(accepted.id + 1000, client=api)
    assert isinstance(missing, models.Error) and missing.error == f"Job {accepted.id + 1000} not found."


def test_the_generators_authenticated_client_alone_sends_one_header(
    live_server: Any, generated: Any, make_client: Callable[..., Any]
) -> None:
    # Why the README shows Client(headers=...): AuthenticatedClient sends the key only.
    _, key = make_client()
    job_list = importlib.import_module(f"{PACKAGE}.api.jobs.job_list")
    token_only = generated.AuthenticatedClient(
        base_url=live_server.url, token=key, auth_header_name="api-key", prefix=""
    )
    assert job_list.sync_detailed(client=token_only).status_code == 401
