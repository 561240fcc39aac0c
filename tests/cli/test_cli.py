"""The ``taskengine`` command-line client against the real API (issue 7.4)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from clients.models import Client
from jobs.models import Job
from jobs.services import job_update
from logs.services import job_log
from settings_app.services import setting_set
from tests import factories
from tests.cli.conftest import Cli


def job_file(tmp_path: Path, workflow: str, **parameters: Any) -> Path:
    path = tmp_path / f"{workflow}.json"
    path.write_text(json.dumps({"job": {"workflow": workflow, "priority": 3}, "parameters": parameters}))
    return path


def test_console_script_is_installed_and_documents_itself() -> None:
    script = Path(sys.executable).parent / "taskengine"
    found = str(script) if script.exists() else shutil.which("taskengine")
    assert found, "the taskengine console script is not installed (pyproject [project.scripts])"
    result = subprocess.run([found, "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0
    for command in ("submit", "watch", "logs", "jobs", "TASKENGINE_URL", "TASKENGINE_API_KEY"):
        assert command in result.stdout


def test_submit_prints_the_id_and_jobs_lists_it(cli: Cli, tmp_path: Path) -> None:
    setting_set(name="max_jobs", value=0)  # no worker here: jobs stay queued
    result = cli("submit", str(job_file(tmp_path, "noop5", content_id="ep-42")))
    assert result.returncode == 0, result.stderr
    job = Job.objects.get(pk=int(result.stdout.strip()))
    assert (job.client.name, job.workflow, job.priority) == (cli.client_name, "noop5", 3)
    assert job.parameters == {"content_id": "ep-42"}
    other = cli(
        "submit", "-", input=json.dumps({"job": {"workflow": "noop"}, "parameters": {"content_id": "x"}})
    )
    other_id = int(other.stdout)

    listing = cli("jobs")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["ID", "CLIENT", "WORKFLOW", "PRIORITY", "STATE", "RUN_AT", "CREATED_AT"]
    assert [line.split()[0] for line in lines[1:]] == [str(other_id), str(job.pk)]  # newest first
    assert lines[2].split()[1:5] == [cli.client_name, "noop5", "3", "queued"]

    found = cli("jobs", "--search", "ep-42", "--state", "queued", "--json")
    assert [item["id"] for item in json.loads(found.stdout)] == [job.pk]
    ascending = cli("jobs", "--order-by", "id", "--asc", "--limit", "1")
    assert ascending.stdout.splitlines()[1].split()[0] == str(job.pk)
    assert cli("jobs", "--failed").stdout.splitlines()[1:] == []
    assert cli("jobs", "--from", "2000-01-01", "--to", "2000-01-02").stdout.splitlines()[1:] == []


def test_logs_prints_tails_and_shows_hidden_entries_on_request(
    cli: Cli, make_client: Any, tmp_path: Path
) -> None:
    setting_set(name="max_jobs", value=0)
    job_id = int(cli("submit", str(job_file(tmp_path, "noop"))).stdout)
    job_log(job_id, "first line", progname="test")
    job_log(job_id, "secret detail", progname="test", visible=False)
    job_log(job_id, "last line", progname="test", task_id=77)

    result = cli("logs", str(job_id))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # the creation entry and the two visible lines
    assert lines[1].endswith("INFO  [test] first line")
    assert lines[2].endswith("INFO  [test task 77] last line")
    assert "secret detail" in cli("logs", str(job_id), "--all").stdout
    assert cli("logs", str(job_id), "-n", "1").stdout.splitlines() == [lines[2]]


def test_the_creation_entry_shows_its_body_with_the_request_headers_folded(cli: Cli, tmp_path: Path) -> None:
    setting_set(name="max_jobs", value=0)
    job_id = int(cli("submit", str(job_file(tmp_path, "noop", content_id="ep-7"))).stdout)

    first = cli("logs", str(job_id)).stdout.splitlines()[0]
    assert "[api] job created by POST /job from 127.0.0.1: " in first
    assert '"parameters": {"content_id": "ep-7"}' in first
    assert first.endswith("request headers folded; --raw shows them]")
    assert "HTTP_" not in first and "*" not in first

    raw = cli("logs", str(job_id), "--raw").stdout.splitlines()[0]
    stored = json.loads(raw.split("[api] ", 1)[1])  # the message as the API stores it, whole
    assert stored["payload"] == "job_created"
    assert stored["headers"]["HTTP_API_KEY"].endswith(cli.key[-4:]) and cli.key not in raw


def test_logs_follow_prints_only_the_last_n_entries_so_far(cli: Cli, tmp_path: Path) -> None:
    setting_set(name="max_jobs", value=0)
    job_id = int(cli("submit", str(job_file(tmp_path, "noop"))).stdout)
    for number in range(1, 6):
        job_log(job_id, f"line {number}", progname="test")
    job_update(job=Job.objects.get(pk=job_id), changes={"queue_state": "broken"})  # ends the follow

    followed = cli("logs", str(job_id), "--follow", "-n", "3", "--interval", "0.2")
    assert followed.returncode == 0, followed.stderr
    assert [line.split("] ", 1)[1] for line in followed.stdout.splitlines()] == ["line 3", "line 4", "line 5"]


def test_errors_are_one_line_with_distinct_exit_codes(cli: Cli, tmp_path: Path, make_client: Any) -> None:
    unreachable = cli("jobs", env={"TASKENGINE_URL": "http://127.0.0.1:9"})
    assert (unreachable.returncode, unreachable.stderr.strip()) == (
        3,
        "taskengine: cannot reach Task Engine at http://127.0.0.1:9: connection refused",
    )
    wrong_key = cli("jobs", env={"TASKENGINE_API_KEY": "not-the-key"})
    assert (wrong_key.returncode, wrong_key.stderr.strip()) == (
        4,
        "taskengine: not authorised: Unauthorised request.",
    )
    no_key = cli("jobs", env={"TASKENGINE_API_KEY": ""})
    assert no_key.returncode == 4
    assert "set TASKENGINE_CLIENT and TASKENGINE_API_KEY" in no_key.stderr

    missing = cli("watch", "999999")
    assert (missing.returncode, missing.stderr.strip()) == (5, "taskengine: not found: Job 999999 not found.")
    # Another client's job is as unknown as a missing one.
    stranger, _ = make_client()
    foreign = factories.job(stranger, run_at="2030-01-01T00:00:00Z")
    assert cli("logs", str(foreign.pk)).returncode == 5

    refused = cli("submit", str(job_file(tmp_path, "no_such_workflow")))
    assert (refused.returncode, refused.stderr.strip()) == (
        6,
        "taskengine: refused (400): workflow: unknown workflow 'no_such_workflow'",
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    invalid = cli("submit", str(bad))
    assert invalid.returncode == 2
    assert invalid.stderr.startswith(f"taskengine: {bad}: not valid JSON:")
    assert cli("submit", str(tmp_path / "absent.json")).returncode == 2
    assert cli("jobs", "--state", "finished").returncode == 2  # argparse names the bad value
    assert Job.objects.filter(client__name=cli.client_name).count() == 0


def test_watch_a_broken_job_exits_1(cli: Cli, tmp_path: Path) -> None:
    setting_set(name="max_jobs", value=0)
    job_id = int(cli("submit", str(job_file(tmp_path, "noop"))).stdout)
    job_update(job=Job.objects.get(pk=job_id), changes={"queue_state": "broken"})
    result = cli("watch", str(job_id), "--interval", "0.2")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"job {job_id} broken"


def test_submit_and_watch_until_the_workers_finish(cli: Cli, tmp_path: Path, engine_processes: Any) -> None:
    setting_set(name="retry_limit", value=0)
    engine_processes.start_worker()

    done = cli("submit", str(job_file(tmp_path, "noop5")), "--watch", "--interval", "0.2", "--timeout", "60")
    assert done.returncode == 0, done.stderr + engine_processes.log(engine_processes.processes[0])[-2000:]
    out = done.stdout.splitlines()
    job_id = int(out[0])
    assert sum("Task 'noop' started" in line for line in out) == 5
    assert sum("'noop' completed successfully" in line for line in out) == 5
    assert out[-1].endswith("job has completed successfully")
    progress = done.stderr.splitlines()
    assert progress[-2] == f"job {job_id} completed: [{'#' * 30}] 5/5 steps"
    assert all(line.endswith(("/5 steps", " done", "')")) for line in progress[:-1]), progress
    assert progress[-1] == f"job {job_id} completed"
    assert Job.objects.get(pk=job_id).queue_state == 2

    failed = cli("submit", str(job_file(tmp_path, "fail")), "--watch", "--interval", "0.2", "--timeout", "60")
    assert failed.returncode == 1
    failed_id = int(failed.stdout.splitlines()[0])
    assert "job has failed" in failed.stdout
    assert failed.stderr.splitlines()[-1] == f"job {failed_id} failed"

    # Following a finished job's log prints it all and returns.
    follow = cli("logs", str(job_id), "--follow", "--interval", "0.2")
    assert follow.returncode == 0
    assert follow.stdout.splitlines() == out[1:]
    assert Client.objects.get(name=cli.client_name).jobs.count() == 2


def test_watch_shows_steps_done_of_the_total_from_the_api(cli: Cli, tmp_path: Path, settings: Any) -> None:
    """N/total comes from GET /jobs/<id>?tasks=1; before the job starts there are no tasks to count."""
    from jobs.engine import controller, runner

    settings.TASKENGINE_CHAIN_SECONDS = 0  # one step per run_task: the test stops after two
    from jobs.engine.dispatcher import dispatch
    from jobs.models import Task

    setting_set(name="max_jobs", value=0)
    job_id = int(cli("submit", str(job_file(tmp_path, "noop5"))).stdout)
    queued = cli("watch", str(job_id), "--interval", "0.2", "--timeout", "0.5")
    assert queued.returncode == 8
    assert queued.stderr.splitlines()[0] == f"job {job_id} queued: 0 steps done"

    # No worker here: the engine is driven by hand, its messages are never consumed.
    setting_set(name="max_jobs", value=5)
    assert job_id in dispatch()
    tasks = list(Task.objects.filter(job_id=job_id).order_by("position"))
    assert len(tasks) == 5
    for task in tasks[:2]:
        runner.run_task(task.pk)
        controller.advance(job_id)  # queues the next step

    started = cli("watch", str(job_id), "--interval", "0.2", "--timeout", "0.5")
    assert started.returncode == 8
    bar = "#" * 12 + "." * 18
    assert started.stderr.splitlines()[0] == f"job {job_id} started: [{bar}] 2/5 steps (running 'noop')"
    assert started.stderr.splitlines()[-1] == f"taskengine: job {job_id} still started after 0.5 s"


def test_submit_batch_sends_a_file_of_jobs_and_prints_each_id_in_order(cli: Cli, tmp_path: Path) -> None:
    setting_set(name="max_jobs", value=0)  # no worker here: jobs stay queued
    bodies = [{"job": {"workflow": "noop"}, "parameters": {"content_id": f"b{i}"}} for i in range(1203)]
    bodies[5] = {"job": {"workflow": "nope"}, "parameters": {}}
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("\n".join(json.dumps(body) for body in bodies) + "\n")
    result = cli("submit", "--batch", str(lines))
    # 1,203 jobs are two requests (1,000 + 203); the refused one is named on stderr, the others printed.
    assert result.returncode == 6
    assert result.stderr.strip() == "job 6: refused: workflow: unknown workflow 'nope'"
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == 1202 and ids == sorted(ids)
    made = dict(Job.objects.filter(pk__in=ids).values_list("pk", "parameters"))
    assert [made[job_id]["content_id"] for job_id in ids[:6]] == ["b0", "b1", "b2", "b3", "b4", "b6"]

    listed = tmp_path / "jobs.json"
    listed.write_text(json.dumps(bodies[:3]))
    again = cli("submit", "--batch", str(listed))
    assert again.returncode == 0 and len(again.stdout.split()) == 3
    assert cli("submit", "--batch", "--watch", str(listed)).returncode == 2
    (tmp_path / "bad.json").write_text("{not json")
    bad = cli("submit", "--batch", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "not a JSON list or JSON Lines" in bad.stderr
