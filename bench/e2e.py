"""Items 1 and 7 of issue 6: end-to-end overhead against the raw Celery floor, and peers, in one run.

    .venv/bin/python -m bench.e2e [--jobs 1000] [--rounds 1] [--peers durable,rq,procrastinate]
                                  [--submitters 4] [--steps 5|1] [--batch 0|N] [--db te_bench]
                                  [--history 20000] [--starts-per-message N]

Sides, run one after the other in each round (only one side's processes are alive while it is timed):

- ``celery``: 1,000 raw Celery chains of 5 no-op tasks (bench/rawcelery.py), one worker, prefork 2,
  acks_late, prefetch 1, on the same Redis (db 8, own prefix).
- ``engine``: 1,000 jobs of the common ``noop5`` workflow submitted through ``POST /job`` to a real
  gunicorn (2 workers x 4 threads) by 4 threads with keep-alive connections, ``max_jobs`` 1000, no
  callbacks, processed by one engine worker (every queue, prefork 2, the project's Celery settings).
- ``durable``: the durable floor (bench/durablecelery.py): the raw Celery side plus one Postgres row a
  job, inserted before its chain is published, marked started and ended by each task, in its own
  database (``<db>_floor``). What any engine keeping its jobs in Postgres pays at least; the summary
  gives the engine over it and it over raw Celery, each round.
- ``rq`` and ``procrastinate``: bench/peers.py.

``--steps 1`` makes every job one no-op step (the engine's ``noop`` workflow; single raw Celery tasks,
one-step RQ and Procrastinate jobs): the cost of a job rather than of a step. ``--batch N`` submits the
engine's jobs through ``POST /jobs``, N a request, instead of one ``POST /job`` each (the raw Celery side
always publishes from the benchmark's own process, without HTTP).

Each side's clock runs from its first submission to its last completion. Postgres queries per job are
counted in the engine's own processes (bench/counting.py: a Django execute_wrapper on every connection
of the gunicorn and Celery processes, summed in Redis), so they are exact and include the API request.
The step transition of a job is (finished_at of step n+1) - (finished_at of step n), from the task rows:
the whole cycle of a no-op step (recording step n, claiming step n+1, running it), so an upper bound of
the transition. (started_at of step n+1 minus finished_at of step n is 0 by construction now: a worker
claims the next step in the statement that records the one before, with the same timestamp.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common


def _side_pids(groups: dict[int, str], database: bool | str) -> dict[int, str]:
    """The processes of these process groups (a worker and its pool, gunicorn), each with its group's
    name, and, with ``database``, the Postgres backends of the bench database (or of the database it
    names) other than this process's own, named ``postgres``."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                group = os.getpgid(int(entry.name))
            except OSError:
                continue
            if group in groups:
                pids[int(entry.name)] = groups[group]
    if database:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = coalesce(%s, current_database()) AND pid <> pg_backend_pid()",
                [database if isinstance(database, str) else None],
            )
            pids.update((row[0], "postgres") for row in cursor.fetchall())
    return pids


class _CpuMeter:
    """The CPU a side spends between ``start`` and ``stop``: its worker processes (and gunicorn, and the
    Postgres backends of the bench database, for the engine) plus this process (it submits), in all and
    by part (``groups`` names each process group; this process is ``bench``). Redis is left out: its
    server is shared with whatever else runs on the machine. A process that ends before ``stop`` is
    lost (counts low); one that starts during the run counts whole."""

    def __init__(self, groups: dict[int, str], database: bool | str) -> None:
        self.groups, self.database = groups, database
        self.parts: dict[str, float] = {}

    def start(self) -> None:
        self.names = _side_pids(self.groups, self.database)
        self.before = common.cpu_seconds(self.names)
        self.own = time.process_time()

    def stop(self) -> float:
        self.names.update(_side_pids(self.groups, self.database))
        after = common.cpu_seconds(self.names)
        self.parts = {"bench": time.process_time() - self.own}
        for pid, total in after.items():
            part = self.names[pid]
            self.parts[part] = self.parts.get(part, 0.0) + total - self.before.get(pid, 0.0)
        return sum(self.parts.values())

    def per_job_ms(self, n: int) -> dict[str, float]:
        """CPU ms per job of each part, rounded."""
        return {part: round(spent * 1000 / n, 2) for part, spent in sorted(self.parts.items())}


def _wait_counter(client: Any, key: str, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = int(client.get(key) or 0)
        if value >= target:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key}: {value} of {target} after {timeout} s")
        time.sleep(0.02)


def _timed_floor(
    worker: subprocess.Popen[bytes],
    redis: Any,
    key: str,
    n: int,
    submit: Callable[[int], None],
    *,
    warm: int,
    settle: float = 0.0,
    database: bool | str = False,
) -> dict[str, Any]:
    """A floor's run: ``warm`` jobs first (the worker is consuming once they are done), then ``n`` jobs
    timed from the first submission until ``key`` counts them all, with the worker's CPU (and that of
    ``database``'s backends); the worker is stopped."""
    redis.delete(key)
    submit(warm)
    _wait_counter(redis, key, warm, 60)
    redis.delete(key)
    time.sleep(settle)
    meter = _CpuMeter({worker.pid: "worker"}, database=database)
    meter.start()
    start = time.monotonic()
    submit(n)
    end = _wait_counter(redis, key, n, 600)
    cpu = meter.stop()
    _stop(worker)
    return {"seconds": end - start, "cpu_ms_per_job": cpu * 1000 / n, "cpu_ms_by_part": meter.per_job_ms(n)}


def side_celery(
    procs: common.Processes, env: dict[str, str], n: int, redis: Any, steps: int = 5
) -> dict[str, Any]:
    from bench import rawcelery

    worker = procs.celery_worker("raw-worker", env, app="bench.rawcelery", queues=["raw"])
    return _timed_floor(
        worker, redis, common.PREFIX + "raw:done", n, lambda count: rawcelery.submit(count, steps), warm=1
    )


def side_durable(
    procs: common.Processes, env: dict[str, str], n: int, redis: Any, steps: int, db: str
) -> dict[str, Any]:
    """The durable floor (bench/durablecelery.py): raw Celery plus one row a job in its own database."""
    from bench import durablecelery

    dbname = f"{db}_floor"
    common.ensure_database(dbname)
    durablecelery.DATABASE_URL = common.database_url(dbname)
    env = dict(env, BENCH_DURABLE_DB=durablecelery.DATABASE_URL)
    durablecelery.reset()
    worker = procs.celery_worker("durable-worker", env, app="bench.durablecelery", queues=["durable"])
    # 8 warm-up jobs: both pool processes have connected and prepared their statements.
    result = _timed_floor(
        worker,
        redis,
        common.PREFIX + "durable:done",
        n,
        lambda count: durablecelery.submit(count, steps),
        warm=8,
        settle=0.5,
        database=dbname,
    )
    done = durablecelery.counts().get(2, 0)
    if done != n + 8:
        raise RuntimeError(f"durable floor: {done} jobs done of {n + 8}")
    return result


def _submit_jobs(
    port: int, client: str, key: str, n: int, threads: int, workflow: str = "noop5", batch: int = 0
) -> list[int]:
    ids: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    body = {"job": {"workflow": workflow}, "parameters": {}}

    def run(count: int) -> None:
        api = common.Api(port, client, key)
        if batch:
            for start in range(0, count, batch):
                size = min(batch, count - start)
                status, answer = api.request("POST", "/jobs", {"jobs": [body] * size})
                with lock:
                    if status != 200:
                        errors.append(f"{status} {answer[:200]!r}")
                        continue
                    for outcome in json.loads(answer)["jobs"]:
                        if outcome["result"] == "accepted":
                            ids.append(outcome["id"])
                        else:
                            errors.append(outcome["error"])
            return
        for _ in range(count):
            status, answer = api.request("POST", "/job", body)
            with lock:
                if status == 200:
                    ids.append(json.loads(answer)["id"])
                else:
                    errors.append(f"{status} {answer[:200]!r}")

    workers = [threading.Thread(target=run, args=(c,)) for c in per]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed, first: {errors[0]}")
    return ids


def side_engine(
    procs: common.Processes,
    env: dict[str, str],
    n: int,
    redis: Any,
    port: int,
    client: str,
    key: str,
    threads: int,
    workflow: str = "noop5",
    batch: int = 0,
    web_group: int = 0,
    control: int = 0,
) -> dict[str, Any]:
    from jobs.models import Job, Task
    from jobs.states import JobState

    if control:
        # As the Procfile runs the engine: the steps' worker, and the control process (dispatch,
        # callbacks, the scheduler) on threads.
        worker = procs.celery_worker(
            "engine-worker", env, app="bench.counting", queues=["work", "windows_capture"]
        )
        controller = procs.celery_worker(
            "engine-control",
            env,
            app="bench.counting",
            queues=["controller", "callback", "scheduler"],
            pool="threads",
            concurrency=control,
        )
        common.wait_worker_ready(common.PREFIX, count=2)
        groups = {worker.pid: "worker", controller.pid: "control", web_group: "web"}
    else:
        worker = procs.celery_worker("engine-worker", env, app="bench.counting")
        controller = None
        common.wait_worker_ready(common.PREFIX)
        groups = {worker.pid: "worker", web_group: "web"}
    # Warm-up through the path and the connections measured, so that every gunicorn worker and every
    # pool process has run its code once (imports, statements prepared) before the clock starts: two
    # jobs on one connection left the other gunicorn worker cold, and its first requests cost the first
    # round twice the web CPU of the second.
    warm = _submit_jobs(port, client, key, 8 * threads, threads, workflow, min(batch, 4))
    common.wait_until(
        lambda: Job.objects.filter(pk__in=warm, queue_state=JobState.COMPLETED).count() == len(warm),
        timeout=60,
        what="warm-up jobs",
    )
    time.sleep(0.5)
    qkey = common.PREFIX + "bench:queries"
    redis.delete(qkey)
    commits_before = _commits()
    first_id = max(warm) + 1
    meter = _CpuMeter(groups, database=True)
    meter.start()
    start = time.monotonic()
    ids = _submit_jobs(port, client, key, n, threads, workflow, batch)
    submitted = time.monotonic()
    jobs = Job.objects.filter(pk__in=ids)

    polls = [0]
    from django.db import connection

    low, high = min(ids), max(ids)

    def done() -> bool:
        # Whether a job of the run is still unfinished: a range read of the primary key that stops at the
        # first such job, in SQL written once. Counting the finished jobs among ``ids`` cost the
        # benchmark's process and Postgres a millisecond or more a poll (the ORM compiling an IN list of
        # every id, the server planning it), every 20 ms, taken from the machine the engine runs on;
        # the Celery side polls one Redis key. Once none is left, the exact count below confirms.
        polls[0] += 1
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs_job WHERE id BETWEEN %s AND %s AND queue_state <> %s)",
                [low, high, int(JobState.COMPLETED)],
            )
            if cursor.fetchone()[0]:
                return False
        return jobs.filter(queue_state=JobState.COMPLETED).count() == n

    # As often as the Celery side looks for its last task (_wait_counter): the clock stops alike.
    common.wait_until(done, timeout=900, interval=0.02, what="engine jobs")
    end = time.monotonic()
    cpu = meter.stop()
    time.sleep(1.5)  # the last processes flush their query counts after their task ends
    queries = int(redis.get(qkey) or 0)
    commits = _commits() - commits_before - polls[0] - 2  # minus this process's own reads
    # Transition latency without queueing: 20 jobs, one at a time, on the idle engine.
    alone: list[int] = []
    for _ in range(20):
        one = _submit_jobs(port, client, key, 1, 1, workflow)
        common.wait_until(
            lambda one=one: Job.objects.filter(pk__in=one, queue_state=JobState.COMPLETED).exists(),  # type: ignore[misc]
            timeout=60,
            interval=0.01,
            what="a lone job",
        )
        alone += one
    _stop(worker)
    if controller is not None:
        _stop(controller)
    failed = jobs.filter(failed=True).count()
    transitions: list[float] = []
    rows = (
        Task.objects.filter(job_id__gte=first_id, job_id__in=ids)
        .order_by("job_id", "position")
        .values_list("job_id", "finished_at")
    )
    previous: tuple[int, Any] | None = None
    for job_id, finished_at in rows:
        if previous is not None and previous[0] == job_id:
            transitions.append((finished_at - previous[1]).total_seconds() * 1000)
        previous = (job_id, finished_at)
    lone: list[float] = []
    previous = None
    lone_rows = Task.objects.filter(job_id__in=alone).order_by("job_id", "position")
    for job_id, finished_at in lone_rows.values_list("job_id", "finished_at"):
        if previous is not None and previous[0] == job_id and finished_at and previous[1]:
            lone.append((finished_at - previous[1]).total_seconds() * 1000)
        previous = (job_id, finished_at)
    return {
        "seconds": end - start,
        "submit_seconds": submitted - start,
        "failed": failed,
        "queries_per_job": queries / n,
        "commits_per_job": commits / n,
        "transition_ms_median": common.median(transitions),
        "transition_ms_p90": common.pct(transitions, 90),
        "lone_transition_ms_median": common.median(lone),
        "lone_transition_ms_p90": common.pct(lone, 90),
        "steps_per_second": n * (5 if workflow == "noop5" else 1) / (end - start),
        "cpu_ms_per_job": cpu * 1000 / n,
        "cpu_ms_by_part": meter.per_job_ms(n),
    }


def _commits() -> int:
    """Transactions committed in the bench database so far (pg_stat_database, every connection)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def side_rq(
    procs: common.Processes, env: dict[str, str], n: int, redis: Any, steps: int = 5
) -> dict[str, Any]:
    from bench import peers

    queue = f"bench-{common.PREFIX.strip(':')}"
    env = dict(env, BENCH_RQ_QUEUE=queue, PYTHONPATH=str(common.BASE_DIR))
    peers.RQ_QUEUE = queue
    rq_bin = str(common.BASE_DIR / ".venv" / "bin" / "rq")
    workers = [
        procs.spawn(
            f"rq-{i}",
            [rq_bin, "worker", "-u", common.REDIS_URL, "-q", "-w", "rq.worker.SimpleWorker", queue],
            env,
        )
        for i in (1, 2)
    ]
    key = common.PREFIX + "peer:rq:done"
    redis.delete(key)
    peers.rq_submit(1, steps)
    _wait_counter(redis, key, 1, 60)
    redis.delete(key)
    start = time.monotonic()
    peers.rq_submit(n, steps)
    end = _wait_counter(redis, key, n, 900)
    for w in workers:
        _stop(w)
    for k in redis.scan_iter(match=f"rq:*{queue}*", count=1000):
        redis.delete(k)
    redis.srem("rq:queues", f"rq:queue:{queue}")
    if not redis.scard("rq:queues"):
        redis.delete("rq:queues", "rq:clean_groups")
    return {"seconds": end - start}


def side_procrastinate(
    procs: common.Processes, env: dict[str, str], n: int, redis: Any, steps: int = 5, db: str = "te_bench"
) -> dict[str, Any]:
    import psycopg

    from bench import peers

    created = common.ensure_database(f"{db}_procrastinate")
    conninfo = common.database_url(f"{db}_procrastinate")
    env = dict(env, BENCH_PROCRASTINATE_DB=conninfo, PYTHONPATH=str(common.BASE_DIR))
    proc_bin = str(common.BASE_DIR / ".venv" / "bin" / "procrastinate")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        has = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if created or not has or has[0] is None:
            subprocess.run(
                [proc_bin, "--app", "bench.peers.proc_app", "schema", "--apply"],
                env=env, cwd=common.BASE_DIR, check=True, capture_output=True,
            )  # fmt: skip
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    args = [
        proc_bin,
        "--app",
        "bench.peers.proc_app",
        "worker",
        "-q",
        "bench",
        "-c",
        "1",
        "--delete-jobs",
        "never",
    ]
    workers = [procs.spawn(f"procrastinate-{i}", args, env) for i in (1, 2)]
    key = common.PREFIX + "peer:procrastinate:done"
    redis.delete(key)
    asyncio.run(peers.proc_submit(1, steps))
    _wait_counter(redis, key, 1, 60)
    redis.delete(key)
    start = time.monotonic()
    asyncio.run(peers.proc_submit(n, steps))
    end = _wait_counter(redis, key, n, 900)
    for w in workers:
        _stop(w)
    return {"seconds": end - start}


def _stop(popen: subprocess.Popen[bytes]) -> None:
    import signal

    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--peers",
        default="durable,rq,procrastinate",
        help="comma-separated: durable (the durable floor, bench/durablecelery.py), rq, procrastinate, or ''",
    )
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--steps", type=int, choices=(1, 5), default=5, help="no-op steps a job")
    parser.add_argument("--batch", type=int, default=0, help="engine jobs per POST /jobs (0: POST /job)")
    parser.add_argument(
        "--db", default="te_bench", help="the engine's database (Procrastinate's is <db>_procrastinate)"
    )
    parser.add_argument(
        "--control",
        type=int,
        default=0,
        help="run the engine as the Procfile does: a worker for the steps and a control process with "
        "this many threads for dispatch (0: one worker for every queue)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=20_000,
        help="finished five-step jobs put in the tables first, as a running engine has (0: empty tables)",
    )
    parser.add_argument(
        "--starts-per-message",
        type=int,
        default=0,
        help="the engine's TASKENGINE_STARTS_PER_MESSAGE (0: as the environment or the default has it)",
    )
    args = parser.parse_args(argv)
    workflow = "noop5" if args.steps == 5 else "noop"
    # Read by bench.peers when it is first imported (this process submits Procrastinate's jobs too).
    os.environ["BENCH_PROCRASTINATE_DB"] = common.database_url(f"{args.db}_procrastinate")

    env = common.setup_django(args.db)
    if args.starts_per_message:
        env["TASKENGINE_STARTS_PER_MESSAGE"] = str(args.starts_per_message)
    from django.conf import settings

    starts_per_message = int(
        env.get("TASKENGINE_STARTS_PER_MESSAGE") or settings.TASKENGINE_STARTS_PER_MESSAGE
    )
    import redis as redislib

    redis = redislib.Redis.from_url(common.REDIS_URL)
    common.reset_jobs(history=args.history)
    common.set_setting("max_jobs", 1000)
    client, key = common.bench_client()
    procs = common.Processes()
    port = common.free_port()
    results: dict[str, list[dict[str, Any]]] = {}
    load_before = common.machine()
    try:
        web = procs.gunicorn(env, port, app="bench.counting:application")
        peers = [p for p in args.peers.split(",") if p]
        for r in range(args.rounds):
            order = ["celery", "engine", *peers]
            if r % 2:
                order.reverse()
            for side in order:
                if side == "celery":
                    res = side_celery(procs, env, args.jobs, redis, args.steps)
                elif side == "engine":
                    res = side_engine(
                        procs,
                        env,
                        args.jobs,
                        redis,
                        port,
                        client,
                        key,
                        args.submitters,
                        workflow,
                        args.batch,
                        web.pid,
                        args.control,
                    )
                elif side == "durable":
                    res = side_durable(procs, env, args.jobs, redis, args.steps, args.db)
                elif side == "rq":
                    res = side_rq(procs, env, args.jobs, redis, args.steps)
                else:
                    res = side_procrastinate(procs, env, args.jobs, redis, args.steps, args.db)
                print(f"  round {r + 1} {side}: {json.dumps(res)}", flush=True)
                results.setdefault(side, []).append(res)
    finally:
        procs.stop_all()
        common.redis_cleanup()
    best = {side: min(runs, key=lambda x: x["seconds"]) for side, runs in results.items()}
    celery_s = best["celery"]["seconds"]
    engine = best["engine"]
    summary = {
        "jobs": args.jobs,
        "steps": args.steps,
        "batch": args.batch,
        "starts_per_message": starts_per_message,
        "celery_s": round(celery_s, 2),
        "engine_s": round(engine["seconds"], 2),
        "ratio": round(engine["seconds"] / celery_s, 2),
        "engine_submit_s": round(engine["submit_seconds"], 2),
        "ratios_per_round": [
            round(e["seconds"] / c["seconds"], 2)
            for e, c in zip(results["engine"], results["celery"], strict=True)
        ],
        # CPU of the side's own processes per job (bench/README.md, "How things are measured"): what the
        # machine's other load moves far less than wall time.
        "cpu_ms_per_job": {
            side: [round(r["cpu_ms_per_job"], 2) for r in runs]
            for side, runs in results.items()
            if side in ("celery", "engine", "durable")
        },
        "cpu_ratios_per_round": [
            round(e["cpu_ms_per_job"] / c["cpu_ms_per_job"], 2)
            for e, c in zip(results["engine"], results["celery"], strict=True)
        ],
        **(
            {
                # The engine against the durable floor, each round: what is the engine's own.
                "durable_ratios_per_round": [
                    round(e["seconds"] / d["seconds"], 2)
                    for e, d in zip(results["engine"], results["durable"], strict=True)
                ],
                "durable_over_celery_per_round": [
                    round(d["seconds"] / c["seconds"], 2)
                    for d, c in zip(results["durable"], results["celery"], strict=True)
                ],
            }
            if "durable" in results
            else {}
        ),
        "transition_ms_median_loaded": round(engine["transition_ms_median"], 1),
        "transition_ms_median_alone": round(engine["lone_transition_ms_median"], 1),
        "steps_per_second": round(engine["steps_per_second"], 1),
        "queries_per_job": round(engine["queries_per_job"], 1),
        "commits_per_job": round(engine["commits_per_job"], 1),
        "failed": engine["failed"],
        **{f"{p}_s": round(best[p]["seconds"], 2) for p in results if p not in ("celery", "engine")},
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("e2e " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
