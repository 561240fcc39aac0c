"""``taskengine``: submit, watch, tail and list Task Engine jobs over the REST API.

Configuration comes from the environment: ``TASKENGINE_URL`` (default ``http://127.0.0.1:8000``),
``TASKENGINE_CLIENT`` and ``TASKENGINE_API_KEY`` (sent as the ``client`` and ``api-key`` headers).
Only the standard library and ``requests``: the client must install anywhere the API is reachable from.

Exit codes: 0 success (``watch``: the job completed); 1 the watched job failed or was broken; 2 a usage
error or an unreadable file; 3 the engine cannot be reached; 4 not authorised (401/403); 5 not found;
6 the API refused the request (its error text is printed); 7 a server error; 8 ``--timeout`` passed
before the job ended; 130 interrupted.
Results go to standard output, messages and the progress bar to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_UNAUTHORISED, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_SERVER, EXIT_TIMEOUT = 4, 5, 6, 7, 8
EXIT_INTERRUPTED = 130

STATES = {"queued": 0, "started": 1, "completed": 2, "pending": 3, "broken": 4, "scheduled": 5, "paused": 6}
TERMINAL_STATES = frozenset({"completed", "broken"})
# The engine's own log lines about steps (jobs/engine/runner.py); the progress bar counts them.
STEP_STARTED = re.compile(r"^Task '(?P<name>.+)' started$")
STEP_COMPLETED = re.compile(r"^'(?P<name>.+)' completed successfully$")
TIMEOUT = (5.0, 30.0)  # connect, read


class CliError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Api:
    """The engine's REST API, with errors turned into :class:`CliError`."""

    url: str
    client: str
    key: str
    session: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def from_environment(cls) -> Api:
        url = os.environ.get("TASKENGINE_URL", "").strip() or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise CliError(f"TASKENGINE_URL must start with http:// or https://, got {url!r}", EXIT_USAGE)
        return cls(
            url=url.rstrip("/"),
            client=os.environ.get("TASKENGINE_CLIENT", "").strip(),
            key=os.environ.get("TASKENGINE_API_KEY", "").strip(),
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Accept": "application/json"}
        if self.client:
            headers["client"] = self.client
        if self.key:
            headers["api-key"] = self.key
        try:
            response = self.session.request(
                method, self.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False, **kwargs
            )
        except requests.ConnectionError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else "connection failed"
            raise CliError(f"cannot reach Task Engine at {self.url}: {reason}", EXIT_UNREACHABLE) from None
        except requests.Timeout:
            raise CliError(f"Task Engine at {self.url} did not answer in time", EXIT_UNREACHABLE) from None
        except requests.RequestException as exc:
            raise CliError(f"request to {self.url} failed: {exc}", EXIT_UNREACHABLE) from None
        if response.status_code >= 400:
            raise self._error(response, path)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{method} {path}: the answer is not JSON (is {self.url} a Task Engine?)", EXIT_SERVER
            ) from None

    def _error(self, response: requests.Response, path: str) -> CliError:
        try:
            body = response.json()
        except ValueError:
            body = None
        text = body.get("error") if isinstance(body, dict) else None
        status = response.status_code
        if status == 401:
            hint = "" if self.client and self.key else " (set TASKENGINE_CLIENT and TASKENGINE_API_KEY)"
            return CliError(f"not authorised: {text or 'Unauthorised request.'}{hint}", EXIT_UNAUTHORISED)
        if status == 403:
            return CliError(f"forbidden: {text or 'Forbidden.'}", EXIT_UNAUTHORISED)
        if status == 404:
            return CliError(f"not found: {text or path}", EXIT_NOT_FOUND)
        if status >= 500:
            return CliError(f"server error {status}: {text or response.reason}", EXIT_SERVER)
        return CliError(f"refused ({status}): {text or response.text[:500]}", EXIT_REFUSED)


# --- rendering ---------------------------------------------------------------------------------------


def fold_message(message: str) -> str:
    """A log message as a person reads it: a job's creation entry (the request's path, address,
    headers and body, as JSON) shows its body and folds the headers; any other message as it is."""
    if '"job_created"' not in message:
        return message
    try:
        created = json.loads(message)
    except ValueError:
        return message
    if not isinstance(created, dict) or created.get("payload") != "job_created":
        return message
    headers = created.get("headers")
    count = len(headers) if isinstance(headers, dict) else 0
    origin = f" from {created['remote_addr']}" if created.get("remote_addr") else ""
    body = json.dumps(created.get("parameters"), ensure_ascii=False)
    folded = f" [{count} request headers folded; --raw shows them]" if count else ""
    return f"job created by {created.get('path', 'POST /job')}{origin}: {body}{folded}"


def format_entry(entry: dict[str, Any], *, raw: bool = False) -> str:
    """One log entry as a line: time, severity, program, task and message (folded unless ``raw``)."""
    task = f" task {entry['task_id']}" if entry.get("task_id") else ""
    message = str(entry.get("message", ""))
    return (
        f"{entry.get('created_at', '')} {entry.get('severity_description', ''):<5} "
        f"[{entry.get('progname', '')}{task}] {message if raw else fold_message(message)}"
    )


def percent(value: float) -> str:
    """A progress percentage as a person reads it: at most one decimal (``31.4 %``, ``100 %``)."""
    return f"{round(float(value), 1):g} %"


def progress_bar(done: int, total: int | None, width: int = 30) -> str:
    """``[#########.....] 3/5 steps``, or ``3 steps done`` when the step count is unknown."""
    if not total:
        return f"{done} step{'s' if done != 1 else ''} done"
    filled = round(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


# --- following a job ---------------------------------------------------------------------------------


@dataclass
class Follower:
    """Polls a job and its log, printing new entries and the progress until the job ends."""

    api: Api
    job_id: int
    show_all: bool = False
    raw: bool = False
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    interval: float = 1.0
    last_id: int = 0
    completed: set[int] = field(default_factory=set)
    current: str = ""
    total: int | None = None
    done: int = 0
    _shown: str = ""

    def job(self) -> dict[str, Any]:
        # ?tasks=1 adds the job's steps (for N/total); an engine without it ignores the parameter.
        detail: dict[str, Any] = self.api.call("GET", f"/jobs/{self.job_id}", params={"tasks": 1})
        return detail

    def new_entries(self) -> list[dict[str, Any]]:
        params = {"show_all": 1} if self.show_all else {}
        entries: list[dict[str, Any]] = self.api.call("GET", f"/logs/{self.job_id}", params=params)
        fresh = [entry for entry in entries if int(entry.get("id", 0)) > self.last_id]
        if fresh:
            self.last_id = max(int(entry["id"]) for entry in fresh)
        return fresh

    def print_new(self) -> None:
        for entry in self.new_entries():
            message = str(entry.get("message", ""))
            if STEP_COMPLETED.match(message):
                self.completed.add(int(entry.get("task_id") or 0) or len(self.completed) + 1)
            started = STEP_STARTED.match(message)
            if started:
                self.current = started.group("name")
            self._clear_bar()
            print(format_entry(entry, raw=self.raw), file=self.out, flush=True)

    def _clear_bar(self) -> None:
        if self._shown and self.err.isatty():
            self.err.write("\r" + " " * len(self._shown) + "\r")
            self._shown = ""

    def show_progress(self, detail: dict[str, Any]) -> None:
        # Kept once learnt: a job has no task rows before it starts, and an older engine may send none.
        self.total = _step_total(detail) or self.total
        self.done = max(self.done, len(self.completed), _steps_done(detail))
        line = f"job {self.job_id} {detail.get('queue_state')}: {progress_bar(self.done, self.total)}"
        running = _running_step(detail)
        name = (running.get("name") or self.current) if running else self.current
        if name and detail.get("queue_state") == "started":
            progress = running.get("progress") if running else None
            shown = f", {percent(progress)}" if isinstance(progress, int | float) else ""
            line += f" (running '{name}'{shown})"
        if self.err.isatty():
            self.err.write("\r" + line.ljust(len(self._shown)))
            self.err.flush()
            self._shown = line
        elif line != self._shown:  # a log file gets one line per change, not a line per poll
            print(line, file=self.err, flush=True)
            self._shown = line

    def until_terminal(self, *, progress: bool, timeout: float = 0.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout if timeout > 0 else None
        while True:
            detail = self.job()
            self.print_new()
            if progress:
                self.show_progress(detail)
            if detail.get("queue_state") in TERMINAL_STATES:
                self.print_new()  # the lines written between the two reads
                if self._shown and self.err.isatty():
                    self.err.write("\n")
                return detail
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"job {self.job_id} still {detail.get('queue_state')} after {timeout:g} s", EXIT_TIMEOUT
                )
            time.sleep(self.interval)


def _step_total(detail: dict[str, Any]) -> int | None:
    """The workflow's step count when the API tells it (a ``tasks`` list or a ``steps_total`` number)."""
    tasks = detail.get("tasks")
    if isinstance(tasks, list) and tasks:
        return len(tasks)
    total = detail.get("steps_total")
    return total if isinstance(total, int) and total > 0 else None


def _running_step(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The step the ``tasks`` list says is running, if any."""
    tasks = detail.get("tasks")
    if not isinstance(tasks, list):
        return None
    return next((t for t in tasks if isinstance(t, dict) and t.get("state") == "running"), None)


def _steps_done(detail: dict[str, Any]) -> int:
    """Completed steps according to the ``tasks`` list, 0 without one."""
    tasks = detail.get("tasks")
    if not isinstance(tasks, list):
        return 0
    return sum(1 for task in tasks if isinstance(task, dict) and task.get("state") == "completed")


def outcome(detail: dict[str, Any]) -> tuple[str, int]:
    state = detail.get("queue_state")
    if state == "completed" and not detail.get("failed"):
        return f"job {detail.get('id')} completed", EXIT_OK
    if state == "completed":
        return f"job {detail.get('id')} failed", EXIT_JOB_FAILED
    return f"job {detail.get('id')} {state}", EXIT_JOB_FAILED


# --- commands --------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE) from None


# POST /jobs takes at most this many jobs; a longer file is sent in several requests.
BATCH_SIZE = 1000


def _batch_bodies(path: str, text: str) -> list[Any]:
    """A JSON list of POST /job bodies, or JSON Lines (one body a line)."""
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            bodies = json.loads(text)
        else:
            bodies = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise CliError(f"{path}: not a JSON list or JSON Lines of job bodies: {exc}", EXIT_USAGE) from None
    if not bodies:
        raise CliError(f"{path}: holds no job", EXIT_USAGE)
    return list(bodies)


def cmd_submit_batch(api: Api, args: argparse.Namespace) -> int:
    """Submit every job of the file through POST /jobs; print, in order, each id (or why refused)."""
    bodies = _batch_bodies(args.file, _read(args.file))
    refused = 0
    for start in range(0, len(bodies), BATCH_SIZE):
        chunk = bodies[start : start + BATCH_SIZE]
        for body in chunk:
            if isinstance(body, dict) and "client" not in body and api.client:
                body["client"] = api.client
        answer = api.call("POST", "/jobs", json={"jobs": chunk})
        for offset, outcome in enumerate(answer["jobs"]):
            if outcome.get("result") == "accepted":
                print(int(outcome["id"]), flush=True)
            else:
                refused += 1
                print(
                    f"job {start + offset + 1}: refused: {outcome.get('error')}", file=sys.stderr, flush=True
                )
    return EXIT_REFUSED if refused else EXIT_OK


def cmd_submit(api: Api, args: argparse.Namespace) -> int:
    if args.batch:
        if args.watch:
            raise CliError("--watch follows one job: it cannot be used with --batch", EXIT_USAGE)
        return cmd_submit_batch(api, args)
    text = _read(args.file)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{args.file}: not valid JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(body, dict):
        raise CliError(f'{args.file}: must hold a JSON object like {{"job": {{"workflow": …}}}}', EXIT_USAGE)
    if "client" not in body and api.client:
        body["client"] = api.client  # the API wants the body's client to match the header
    answer = api.call("POST", "/job", json=body)
    job_id = int(answer["id"])
    print(job_id, flush=True)
    if args.watch:
        return watch(api, job_id, interval=args.interval, timeout=args.timeout)
    return EXIT_OK


def watch(api: Api, job_id: int, *, interval: float, timeout: float) -> int:
    follower = Follower(api, job_id, interval=interval)
    detail = follower.until_terminal(progress=True, timeout=timeout)
    message, code = outcome(detail)
    print(message, file=sys.stderr, flush=True)
    return code


def cmd_watch(api: Api, args: argparse.Namespace) -> int:
    return watch(api, args.id, interval=args.interval, timeout=args.timeout)


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    follower = Follower(api, args.id, show_all=args.all, interval=args.interval, raw=args.raw)
    # The entries so far (the last N of them with -n); --follow then prints the ones after them.
    entries = follower.new_entries()
    if args.lines:
        entries = entries[-args.lines :]
    for entry in entries:
        print(format_entry(entry, raw=args.raw), flush=True)
    if args.follow:
        follower.until_terminal(progress=False)
    return EXIT_OK


def cmd_jobs(api: Api, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state is not None:
        params["state"] = args.state
    for name in ("client", "search", "order_by"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.failed:
        params["failed"] = 1
    if args.from_:
        params["from"] = args.from_
    if args.to:
        params["to"] = args.to
    if args.asc:
        params["asc"] = 1
    jobs: list[dict[str, Any]] = api.call("GET", "/jobs", params=params)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return EXIT_OK
    rows = [
        [
            str(job.get("id")),
            str(job.get("client")),
            str(job.get("workflow")),
            str(job.get("priority")),
            str(job.get("queue_state")) + (" (failed)" if job.get("failed") else ""),
            str(job.get("run_at")),
            str(job.get("created_at")),
        ]
        for job in jobs
    ]
    print(table(rows, ["ID", "CLIENT", "WORKFLOW", "PRIORITY", "STATE", "RUN_AT", "CREATED_AT"]))
    print(f"{len(jobs)} job(s)", file=sys.stderr)
    return EXIT_OK


def _state(value: str) -> int:
    text = value.strip().lower()
    if text in STATES:
        return STATES[text]
    if text.isdigit() and int(text) in STATES.values():
        return int(text)
    raise argparse.ArgumentTypeError(f"unknown state {value!r}: one of {', '.join(STATES)} or 0..6")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="taskengine",
        description="Command-line client of the Task Engine API. Reads TASKENGINE_URL (default "
        f"{DEFAULT_URL}), TASKENGINE_CLIENT and TASKENGINE_API_KEY from the environment.",
        epilog="Exit codes: 0 ok, 1 job failed or broken, 2 usage, 3 unreachable, 4 unauthorised, "
        "5 not found, 6 refused by the API, 7 server error, 8 watch timed out.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def polling(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
        sub.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds")

    submit = commands.add_parser("submit", help="submit a job (or, with --batch, many) and print its id")
    submit.add_argument("file", metavar="FILE.json", help='the POST /job body ("-" reads standard input)')
    submit.add_argument(
        "--batch",
        action="store_true",
        help="FILE holds many job bodies (a JSON list, or JSON Lines): submit them through POST /jobs, "
        "1,000 a request, and print each id in order (refusals on stderr, exit 6)",
    )
    submit.add_argument("--watch", action="store_true", help="then watch it until it ends")
    polling(submit)
    submit.set_defaults(run=cmd_submit)

    watch_ = commands.add_parser("watch", help="follow a job with a progress bar until it ends")
    watch_.add_argument("id", type=_positive, help="job id")
    polling(watch_)
    watch_.set_defaults(run=cmd_watch)

    logs = commands.add_parser("logs", help="print a job's log")
    logs.add_argument("id", type=_positive, help="job id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--all", action="store_true", help="include the entries marked not visible")
    logs.add_argument("-n", "--lines", type=_positive, help="only the last N entries (then more with -f)")
    logs.add_argument(
        "--raw",
        action="store_true",
        help="messages as stored (the creation entry's request headers unfolded)",
    )
    logs.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow")
    logs.set_defaults(run=cmd_logs)

    jobs = commands.add_parser("jobs", help="list jobs (GET /jobs filters)")
    jobs.add_argument(
        "--state", type=_state, help="queued, started, completed, pending, broken, scheduled, paused"
    )
    jobs.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    jobs.add_argument("--client", help="client name (operators)")
    jobs.add_argument("--search", help="a term inside the parameters, e.g. a content id")
    jobs.add_argument("--failed", action="store_true", help="failed jobs only")
    jobs.add_argument("--from", dest="from_", metavar="WHEN", help="created at or after (ISO 8601)")
    jobs.add_argument("--to", metavar="WHEN", help="created at or before (a bare date: that whole day)")
    jobs.add_argument("--order-by", dest="order_by", help="id, priority, created_at, run_at, … (default id)")
    jobs.add_argument("--asc", action="store_true", help="ascending (default: newest first)")
    jobs.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    jobs.set_defaults(run=cmd_jobs)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (the console script exits with it)."""
    args = parser().parse_args(argv)
    run: Callable[[Api, argparse.Namespace], int] = args.run
    try:
        return run(Api.from_environment(), args)
    except CliError as exc:
        print(f"taskengine: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("taskengine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
