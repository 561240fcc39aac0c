"""Callback latency at a steady rate of job ends, and what one hanging receiver costs the others.

    .venv/bin/python -m bench.callbacks [--rate 50] [--seconds 30] [--receiver-ms 100] [--threads 32]

Five clients, each with its own callback receiver (a real HTTP server in this process, one port each)
that answers 200 after ``--receiver-ms``. Jobs of the one-step ``noop`` workflow are submitted in-process
(``jobs_submit``, one batch per client every 100 ms) at ``--rate`` jobs a second in all, one fifth per
client; each job sends three callbacks (the step's ``start`` and ``complete``, then the job's end), in
that order. The processes are the Procfile's: one ``worker`` (step queues, prefork 2) and one
``control`` (controller, callback and scheduler queues, ``--threads`` threads).

Two phases of ``--seconds`` each, on the same processes:

1. every receiver answers in ``--receiver-ms``;
2. the fifth client's receiver hangs: it reads each request and answers nothing for 30 s, so every
   attempt to it runs into the callback's read timeout (10 s) and is retried with back-off.

Latency = the receiver's arrival time of a job's end callback minus the job's ``finished_at`` (same
machine clock), for the four clients whose receivers answer; p50 and p99 of each phase, with ``nproc``
and the load average beside them; and the control process's CPU time in the phase over the delivery
attempts made in it (its dispatches and deferrals included). Goal: phase 2's figures no worse than phase 1's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import common

DB = "te_bench_callbacks"
CLIENTS = 5


class Receiver:
    """Records when each job's end callback arrived; answers after ``delay`` seconds, or hangs."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.hang = False
        self.lock = threading.Lock()
        self.job_ends: dict[int, float] = {}
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time()
                if receiver.hang:
                    time.sleep(30)
                    return
                payload = json.loads(body)
                with receiver.lock:
                    receiver.requests += 1
                    if payload.get("status"):
                        receiver.job_ends.setdefault(int(payload["job_id"]), arrived)
                time.sleep(receiver.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def submit_for(seconds: float, rate: float, clients: list[Any], receivers: list[Receiver]) -> list[int]:
    """Submit ``rate`` noop jobs a second for ``seconds``, spread over the clients; return their ids."""
    from jobs.services import SubmitRequest, jobs_submit

    per_tick = rate / 10 / len(clients)
    owed = [0.0] * len(clients)
    ids: list[int] = []
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for index, (client, receiver) in enumerate(zip(clients, receivers, strict=True)):
            owed[index] += per_tick
            count = int(owed[index])
            owed[index] -= count
            if not count:
                continue
            parameters = {"rest_endpoints": [receiver.url]}
            outcomes = jobs_submit(
                client=client, requests=[SubmitRequest("noop", parameters) for _ in range(count)]
            )
            ids += [o.job_id for o in outcomes if o.job_id is not None]
        tick += 1
        time.sleep(max(0.0, start + tick * 0.1 - time.monotonic()))
    return ids


def latencies(ids: list[int], receivers: list[Receiver], timeout: float) -> tuple[list[float], int]:
    """Job end -> end callback arrival for ``ids`` of the given receivers' clients; and how many of them
    had not arrived within ``timeout`` seconds of the wait's start."""
    from jobs.models import Job

    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        arrived: dict[int, float] = {}
        for receiver in receivers:
            with receiver.lock:
                arrived.update({job: t for job, t in receiver.job_ends.items() if job in wanted})
        if len(arrived) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ends = dict(
        Job.objects.filter(pk__in=list(arrived), finished_at__isnull=False).values_list("pk", "finished_at")
    )
    values = [arrived[job] - end.timestamp() for job in arrived if (end := ends.get(job)) is not None]
    return values, len(wanted) - len(arrived)


def attempts_made() -> int:
    """Every delivery attempt recorded so far (sent, failed or to be retried), deferrals not counted."""
    from django.db.models import Sum

    from callbacks.models import CallbackDelivery

    return int(CallbackDelivery.objects.aggregate(n=Sum("attempts"))["n"] or 0)


def owners(ids: list[int]) -> dict[int, int]:
    from jobs.models import Job

    return dict(Job.objects.filter(pk__in=ids).values_list("pk", "client_id"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.callbacks")
    parser.add_argument("--rate", type=float, default=50.0, help="job ends a second, all clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--receiver-ms", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=32, help="the control process's threads")
    args = parser.parse_args(argv)

    env = common.setup_django(DB)
    common.reset_jobs()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE scheduling_callbackdelivery RESTART IDENTITY")
    common.set_setting("max_jobs", 1000)
    from clients.models import Client

    names = [common.bench_client(f"cb-bench-{i}", operator=False)[0] for i in range(CLIENTS)]
    clients = [Client.objects.get(name=name) for name in names]
    receivers = [Receiver(args.receiver_ms / 1000) for _ in clients]
    procs = common.Processes()
    try:
        procs.celery_worker("worker", env, queues=["work", "windows_capture"], concurrency=2)
        control = procs.spawn(
            "control",
            [
                sys.executable, "-m", "celery", "-A", "taskengine_site", "worker",
                "-Q", "controller,callback,scheduler", "--pool", "threads",
                "--concurrency", str(args.threads), "-n", f"control-{common.PREFIX}@bench", "-l", "warning",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            env,
        )  # fmt: skip
        common.wait_worker_ready(common.PREFIX, count=2, timeout=60)

        def control_cpu() -> float:
            return common.cpu_seconds([control.pid])[control.pid]

        submit_for(3, args.rate, clients, receivers)  # warm-up, not counted
        time.sleep(3)

        results = []
        for phase, hang in (("all answer", False), ("one hangs", True)):
            receivers[-1].hang = hang
            load_before = common.machine()
            cpu_before, attempts_before = control_cpu(), attempts_made()
            ids = submit_for(args.seconds, args.rate, clients, receivers)
            by_client = owners(ids)
            others = [job for job in ids if by_client.get(job) != clients[-1].pk]
            values, missing = latencies(others, receivers[:-1], timeout=60)
            cpu = (control_cpu() - cpu_before) / max(1, attempts_made() - attempts_before)
            after = common.machine()
            results.append((phase, len(ids), len(others), values, missing, load_before, after, cpu))
        hung = receivers[-1]
    finally:
        procs.stop_all()
        common.redis_cleanup()
    print(
        f"bench.callbacks: rate={args.rate:g}/s seconds={args.seconds:g} receiver={args.receiver_ms:g}ms "
        f"control_threads={args.threads}"
    )
    for phase, submitted, counted, values, missing, before, after, cpu in results:
        print(
            f"  {phase}: jobs={submitted} measured={counted} (the four answering clients) "
            f"p50={common.pct(values, 50):.3f}s p99={common.pct(values, 99):.3f}s "
            f"max={max(values, default=float('nan')):.3f}s missing={missing} "
            f"control_cpu_per_attempt={cpu * 1000:.2f}ms "
            f"| before {before} | after {after}"
        )
    print(f"  hanging receiver: {hung.requests} answered before it hung (its callbacks retry with back-off)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
