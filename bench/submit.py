"""Item 2 of issue 6: POST /job under load on loopback, beside GET / (the same gunicorn's floor).

    .venv/bin/python -m bench.submit [--rate 50] [--seconds 20] [--wrk-seconds 10] [--wrk-rounds 1]
                                     [--connections 8] [--batch 500] [--batch-seconds 10]
                                     [--database te_bench_submit]

1. Paced load (open loop): a Python generator sends ``--rate`` requests/s for ``--seconds`` from 16
   threads with keep-alive connections; latency runs from each request's *scheduled* time (so a stall
   is not hidden by coordinated omission). p50/p99 of POST /job and of GET / at the same rate.
2. Highest sustained rate: Debian's ``wrk`` (C, so the generator costs little CPU) with a Lua script
   POSTing a ``noop`` job over ``--connections`` keep-alive connections for ``--wrk-seconds``; the rate
   counts only when every response was 2xx. Same for GET /. With ``--wrk-rounds N`` the two alternate N
   times (POST, GET, POST, GET, …): on a machine shared with other work, whose load moves within
   seconds, both sides then see the same moments; the rates are the means and each round's ratio is
   printed too. Beside each rate, the CPU gunicorn and the Postgres backends spent per request during
   the wrk runs (from /proc): what a request costs the server, steadier than a rate on a busy machine.

3. Beside the paced POSTs, a commit probe: one connection of the benchmark's own INSERTs a row into a
   scratch table and commits, 10 times a second, and its latency is reported beside POST's. Every
   POST /job commits too, so a stall of the database's WAL flush (``fdatasync`` of this machine's disk)
   shows in both, and the probe tells what the disk, rather than the code, made of a tail.

4. Batch submission: 2 threads with keep-alive connections send ``POST /jobs`` with ``--batch`` noop
   jobs each, back to back, for ``--batch-seconds``; the rate counts only jobs answered accepted.

gunicorn runs as the Procfile runs it (2 workers x 4 threads, sync worker class). No engine worker runs:
the API alone is measured (the dispatch requests wait in Redis and are deleted at the end). The
per-client rate limit (TASKENGINE_RATE_LIMIT, default 1200/minute, answering 429 beyond) is lifted
for this benchmark's gunicorn.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import common

BODY = {"job": {"workflow": "noop"}, "parameters": {"content_id": "bench"}}


def paced(
    port: int, client: str, key: str, method: str, path: str, rate: float, seconds: float
) -> dict[str, Any]:
    total = int(rate * seconds)
    start = time.monotonic() + 0.2
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_index = [0]

    def run() -> None:
        api = common.Api(port, client, key)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= total:
                return
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                status, body = api.request(method, path, BODY if method == "POST" else None)
            except Exception as exc:
                status, body = 0, str(exc).encode()
            elapsed = (time.monotonic() - due) * 1000
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    errors.append(f"{status} {body[:100]!r}")

    threads = [threading.Thread(target=run) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests": total,
        "errors": len(errors),
        "p50_ms": round(common.pct(latencies, 50), 1),
        "p99_ms": round(common.pct(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "achieved_rps": round(total / (time.monotonic() - start), 1),
    }


def batch_rate(
    port: int, client: str, key: str, batch: int, seconds: float, threads: int = 2
) -> dict[str, Any]:
    """Jobs accepted per second through ``POST /jobs`` with ``batch`` jobs a request."""
    payload = {"jobs": [BODY] * batch}
    accepted = [0] * threads
    errors: list[str] = []
    requests = [0] * threads
    deadline = time.monotonic() + seconds

    def run(index: int) -> None:
        api = common.Api(port, client, key)
        while time.monotonic() < deadline:
            status, body = api.request("POST", "/jobs", payload)
            requests[index] += 1
            if status != 200:
                errors.append(f"{status} {body[:100]!r}")
                continue
            accepted[index] += sum(1 for job in json.loads(body)["jobs"] if job["result"] == "accepted")

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    return {
        "batch": batch,
        "requests": sum(requests),
        "errors": len(errors),
        "jobs_accepted": sum(accepted),
        "jobs_per_second": round(sum(accepted) / elapsed, 1),
    }


def commit_probe(dbname: str, stop: threading.Event, rate: float = 10) -> dict[str, Any]:
    """INSERT + COMMIT of one row, ``rate`` times a second until ``stop``: the latency of a bare commit."""
    import psycopg

    latencies: list[float] = []
    with psycopg.connect(common.database_url(dbname), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, at timestamptz)"
        )
        while not stop.wait(1 / rate):
            began = time.monotonic()
            conn.execute("INSERT INTO bench_commit_probe (at) VALUES (now())")
            latencies.append((time.monotonic() - began) * 1000)
        conn.execute("DROP TABLE bench_commit_probe")
    return {
        "commits": len(latencies),
        "p50_ms": round(common.pct(latencies, 50), 1),
        "p99_ms": round(common.pct(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
    }


LUA = """
wrk.method = "{method}"
wrk.headers["client"] = "{client}"
wrk.headers["api-key"] = "{key}"
wrk.headers["Content-Type"] = "application/json"
{body}
"""


def wrk(
    port: int,
    client: str,
    key: str,
    method: str,
    path: str,
    seconds: int,
    connections: int,
    server: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """wrk's rate, non-2xx answers, socket errors and p99; with ``server`` (gunicorn's process group,
    the database), also the CPU gunicorn and the Postgres backends spent per request meanwhile."""
    from bench.scale import _cpu_ms, server_pids

    before = _cpu_ms(server_pids(*server)) if server is not None else {}
    body = f"wrk.body = '{json.dumps(BODY)}'" if method == "POST" else ""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(LUA.format(method=method, client=client, key=key, body=body))
    out = subprocess.run(
        [
            "wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    script.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = None
    if p99:
        value, unit = float(p99.group(1)), p99.group(2)
        p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    result: dict[str, Any] = {
        "rps": rps,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "p99_ms": p99_ms,
    }
    if server is not None:
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        # A backend that started during the run counts whole; one that ended is lost (counts low).
        after = _cpu_ms(server_pids(*server) + list(before))
        spent = sum(total - before.get(pid, 0.0) for pid, total in after.items())
        result["server_cpu_ms"] = round(spent / max(1, requests), 3)
    return result


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several wrk runs of equal length as one: the mean rate, every non-2xx answer, the worst p99."""
    p99s = [run["p99_ms"] for run in runs if run["p99_ms"] is not None]
    cpus = [run["server_cpu_ms"] for run in runs if "server_cpu_ms" in run]
    return {
        "rps": round(sum(run["rps"] for run in runs) / len(runs), 2),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "socket_errors": "; ".join(run["socket_errors"] for run in runs if run["socket_errors"]),
        "p99_ms": max(p99s) if p99s else None,
        "server_cpu_ms": round(sum(cpus) / len(cpus), 3) if cpus else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--wrk-rounds", type=int, default=1, help="alternate the POST and GET wrk runs this many times"
    )
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="jobs per POST /jobs request (0: skip)")
    parser.add_argument("--batch-seconds", type=float, default=10)
    parser.add_argument("--database", default="te_bench_submit", help="emptied at the start of the run")
    args = parser.parse_args(argv)

    # Its own database: bench.e2e/schedule/memory empty te_bench at their start, which would truncate
    # this run's jobs if they ran beside it.
    env = common.setup_django(args.database)
    # The per-client rate limit (default 1200/minute) is policy, not capacity: lifted to measure capacity.
    env["TASKENGINE_RATE_LIMIT"] = "10000000/minute"
    common.reset_jobs()
    client, key = common.bench_client()
    procs = common.Processes()
    port = common.free_port()
    load_before = common.machine()
    try:
        web = procs.gunicorn(env, port, workers=args.web_workers, threads=args.web_threads)
        paced(port, client, key, "POST", "/job", args.rate, 2)  # warm-up (imports, connections)
        stop = threading.Event()
        probe: dict[str, Any] = {}
        prober = threading.Thread(target=lambda: probe.update(commit_probe(args.database, stop)))
        prober.start()
        try:
            post_paced = paced(port, client, key, "POST", "/job", args.rate, args.seconds)
        finally:
            stop.set()
            prober.join()
        result: dict[str, Any] = {
            "post_paced": post_paced,
            "commit_probe": probe,
            "root_paced": paced(port, client, key, "GET", "/", args.rate, args.seconds),
        }
        if args.batch:
            result["batch"] = batch_rate(port, client, key, args.batch, args.batch_seconds)
        if shutil.which("wrk"):
            posts: list[dict[str, Any]] = []
            roots: list[dict[str, Any]] = []
            server = (web.pid, args.database)  # gunicorn leads its own process group
            for _ in range(args.wrk_rounds):
                for side, method, path in ((posts, "POST", "/job"), (roots, "GET", "/")):
                    side.append(
                        wrk(port, client, key, method, path, args.wrk_seconds, args.connections, server)
                    )
            result["post_max"], result["root_max"] = combined(posts), combined(roots)
            result["round_ratios"] = [
                round(p["rps"] / r["rps"], 3) for p, r in zip(posts, roots, strict=True)
            ]
    finally:
        procs.stop_all()
        common.redis_cleanup()
    from jobs.models import Job

    summary = {
        "rate": args.rate,
        "post_p50_ms": result["post_paced"]["p50_ms"],
        "post_p99_ms": result["post_paced"]["p99_ms"],
        "post_errors": result["post_paced"]["errors"],
        "commit_probe_p99_ms": result["commit_probe"]["p99_ms"],
        "commit_probe_max_ms": result["commit_probe"]["max_ms"],
        "root_p50_ms": result["root_paced"]["p50_ms"],
        "root_p99_ms": result["root_paced"]["p99_ms"],
        "post_max_rps": result.get("post_max", {}).get("rps"),
        "post_max_non_2xx": result.get("post_max", {}).get("non_2xx"),
        "post_max_p99_ms": result.get("post_max", {}).get("p99_ms"),
        "root_max_rps": result.get("root_max", {}).get("rps"),
        "post_server_cpu_ms": result.get("post_max", {}).get("server_cpu_ms"),
        "root_server_cpu_ms": result.get("root_max", {}).get("server_cpu_ms"),
        "post_over_root": (
            round(result["post_max"]["rps"] / result["root_max"]["rps"], 3) if "root_max" in result else None
        ),
        "round_ratios": result.get("round_ratios"),
        "batch_jobs_per_second": result.get("batch", {}).get("jobs_per_second"),
        "batch_errors": result.get("batch", {}).get("errors"),
        "jobs_created": Job.objects.count(),
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("submit " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
